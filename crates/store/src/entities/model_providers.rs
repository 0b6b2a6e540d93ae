//! An upstream LLM service; the API key is only ever stored encrypted.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_providers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub kind: String,
    pub api_url: String,
    pub api_key_encrypted: Option<String>,
    pub api_key_hint: Option<String>,
    pub description: Option<String>,
    pub icon_url: Option<String>,
    pub status: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
