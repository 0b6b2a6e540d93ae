//! One LoRA training run and its progress.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "training_tasks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    /// The base model's registry name, kept even if the model row is deleted later.
    pub model_name: String,
    pub dataset_id: Option<i32>,
    pub config_id: Option<i32>,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// 0–100.
    pub progress: f64,
    pub log_file: Option<String>,
    pub output_dir: Option<String>,
    pub swanlab_url: Option<String>,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub created_by: Option<i32>,
    pub created_at: DateTimeUtc,
    pub current_step: Option<i32>,
    pub total_steps: Option<i32>,
    pub eta_seconds: Option<i64>,
    pub error_message: Option<String>,
    /// `host:pid:token` of the worker holding a running task.
    pub worker_id: Option<String>,
    /// Refreshed by the worker every few seconds; a stale one means the worker died.
    pub heartbeat_at: Option<DateTimeUtc>,
    /// The base model (`models.id`).
    pub model_id: Option<i32>,
    /// The adapter registered in `models` when the task completed.
    pub adapter_model_id: Option<i32>,
    /// JSON: duration, final/min loss, tokens seen, adapter path and size.
    pub report: Option<String>,
    /// Raised by a cancel request; the worker holding the task kills the trainer.
    pub cancel_requested: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
