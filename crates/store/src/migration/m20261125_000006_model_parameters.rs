//! `models.parameters` becomes text: the design's String(100) cannot hold the JSON a registry row
//! carries (a GGUF's hyper-parameters, or an adapter's r, alpha, target modules and base).
//!
//! SQLite does not enforce declared lengths and cannot alter a column type, so it is left as is.
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000006_model_parameters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        m.alter_table(
            Table::alter().table(Alias::new("models")).modify_column(text_null(Alias::new("parameters"))).to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        m.alter_table(
            Table::alter()
                .table(Alias::new("models"))
                .modify_column(string_len_null(Alias::new("parameters"), 100))
                .to_owned(),
        )
        .await
    }
}
