//! A reusable system prompt; `is_system` ones are read-only for non-admins.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "system_prompts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    pub content: String,
    pub description: Option<String>,
    pub format_type: String,
    pub category: String,
    pub is_default: bool,
    pub is_system: bool,
    pub created_by: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
