//! A user's parameters for calling one provider model.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_configs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: i32,
    pub provider_id: String,
    pub provider_name: String,
    pub endpoint: String,
    pub api_key: Option<String>,
    pub model_id: String,
    pub model_name: String,
    #[sea_orm(column_name = "type")]
    pub r#type: String,
    pub temperature: f64,
    pub max_tokens: i32,
    pub top_p: f64,
    pub top_k: f64,
    pub status: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
