//! Schema migrations; the same code path creates the schema on SQLite, PostgreSQL and MariaDB.
use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000002_provider_model_availability;
mod m20261125_000003_chat_library;
mod m20261125_000004_training_tasks;
mod m20261125_000005_datasets;
mod m20261125_000006_model_parameters;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_provider_model_availability::Migration),
            Box::new(m20261125_000003_chat_library::Migration),
            Box::new(m20261125_000004_training_tasks::Migration),
            Box::new(m20261125_000005_datasets::Migration),
            Box::new(m20261125_000006_model_parameters::Migration),
        ]
    }
}
