//! `provider_models.available`: whether the provider listed the model at the last sync.
//!
//! Kept apart from `status` (the admin's choice) so that a model vanishing and re-appearing
//! upstream never overrides an admin who disabled it, and a re-enabled model stays disabled while
//! the provider no longer offers it (R-PROV-3: "mark vanished models unavailable, keep user
//! choices").
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000002_provider_model_availability"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("provider_models"))
                .add_column(boolean(Alias::new("available")).default(true))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(Alias::new("provider_models")).drop_column(Alias::new("available")).to_owned(),
        )
        .await
    }
}
