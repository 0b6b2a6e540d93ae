//! One message of a session, with the answer's reasoning, finish reason and metrics.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub session_id: i32,
    pub role: String,
    pub content: String,
    pub thinking: Option<String>,
    pub model_name: Option<String>,
    pub model_config_id: Option<String>,
    pub is_streaming: bool,
    pub finish_reason: Option<String>,
    pub metrics: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
