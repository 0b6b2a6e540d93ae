//! An uploaded training data file.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "datasets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
    pub file_path: String,
    pub file_size: Option<i64>,
    pub format_type: Option<String>,
    pub uploaded_by: Option<i32>,
    pub created_at: DateTimeUtc,
    pub record_count: Option<i32>,
    /// The client's file name, for display and downloads only.
    pub original_filename: Option<String>,
    /// Cached statistics (JSON), see the server's dataset module.
    pub stats: Option<String>,
    pub updated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
