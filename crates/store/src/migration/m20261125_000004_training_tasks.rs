//! What the training queue needs on `training_tasks`: live progress (step, total, ETA), the
//! worker that holds a task and its heartbeat (so a dead worker's task is found and failed), a
//! cancel flag any process can raise, the failure reason, the base model and the registered
//! adapter, and the final report.
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_training_tasks"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// One column per ALTER: SQLite cannot add several in one statement.
fn columns() -> Vec<ColumnDef> {
    vec![
        integer_null(a("current_step")),
        integer_null(a("total_steps")),
        big_integer_null(a("eta_seconds")),
        text_null(a("error_message")),
        string_len_null(a("worker_id"), 255),
        timestamp_with_time_zone_null(a("heartbeat_at")),
        integer_null(a("model_id")),
        integer_null(a("adapter_model_id")),
        text_null(a("report")),
        boolean(a("cancel_requested")).default(false).to_owned(),
    ]
}

const NAMES: [&str; 10] = [
    "current_step",
    "total_steps",
    "eta_seconds",
    "error_message",
    "worker_id",
    "heartbeat_at",
    "model_id",
    "adapter_model_id",
    "report",
    "cancel_requested",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for mut column in columns() {
            m.alter_table(Table::alter().table(a("training_tasks")).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in NAMES.iter().rev() {
            m.alter_table(Table::alter().table(a("training_tasks")).drop_column(a(name)).to_owned()).await?;
        }
        Ok(())
    }
}
