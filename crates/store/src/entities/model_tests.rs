//! A comparison of several model configs on one input; outputs kept as JSON.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_tests")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub user_id: i32,
    pub test_name: String,
    pub models_tested: Option<String>,
    pub input_data: String,
    pub results: Option<String>,
    pub is_streaming: bool,
    pub system_prompt: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
