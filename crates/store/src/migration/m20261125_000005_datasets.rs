//! Dataset details known once an upload is validated: the number of records, the client's file
//! name (shown and offered on download, never used in a path), statistics cached as JSON (token
//! counts are slow to recompute on every page view) and when the name or description changed.
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000005_datasets"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds a single column at a time.
        m.alter_table(Table::alter().table(a("datasets")).add_column(integer_null(a("record_count"))).to_owned()).await?;
        m.alter_table(
            Table::alter().table(a("datasets")).add_column(string_len_null(a("original_filename"), 255)).to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table(a("datasets")).add_column(text_null(a("stats"))).to_owned()).await?;
        m.alter_table(
            Table::alter().table(a("datasets")).add_column(timestamp_with_time_zone_null(a("updated_at"))).to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["updated_at", "stats", "original_filename", "record_count"] {
            m.alter_table(Table::alter().table(a("datasets")).drop_column(a(column)).to_owned()).await?;
        }
        Ok(())
    }
}
