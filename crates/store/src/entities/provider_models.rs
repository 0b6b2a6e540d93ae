//! A model a provider offers, as last seen by a sync.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "provider_models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub provider_id: String,
    pub model_id: String,
    pub model_name: String,
    pub size: Option<i64>,
    pub description: Option<String>,
    pub is_vision: bool,
    /// The admin's choice: 1 enabled, 0 disabled.
    pub status: i32,
    /// Listed by the provider at the last sync; vanished models stay (configs point at them).
    pub available: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
