//! `/api/training-tasks/*` (R-TRAIN-3, R-TRAIN-4). A task belongs to the user who created it;
//! anyone else gets a 404. Workers (crate::training) do the running; these handlers queue,
//! cancel, delete and show.
use std::path::Path as FsPath;

use axum::{Json, extract::State, http::StatusCode, response::Response};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    chat::sse_response,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery},
    state::AppState,
    training::{self, CANCELLED, PENDING, RUNNING, events, worker::dataset_training_file},
    validation::{self, Checks},
};
use store::entities::{datasets, models, training_configs, training_tasks};

#[derive(Serialize, ToSchema)]
pub struct TrainingTaskView {
    pub id: i32,
    pub name: String,
    /// The base model's registry name.
    pub model_name: String,
    /// The base model (`/api/models/{id}`).
    pub model_id: Option<i32>,
    pub dataset_id: Option<i32>,
    pub config_id: Option<i32>,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// 0–100.
    pub progress: f64,
    pub current_step: Option<i32>,
    pub total_steps: Option<i32>,
    pub eta_seconds: Option<i64>,
    /// Why the task failed.
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub log_file: Option<String>,
    /// The adapter directory.
    pub output_dir: Option<String>,
    /// The SwanLab run URL (online) or run directory (offline).
    pub swanlab_url: Option<String>,
    /// The registered adapter (`/api/models/{id}`), once completed.
    pub adapter_model_id: Option<i32>,
    /// Once completed: `{duration_s, steps, epochs, first_loss, final_loss, min_loss, tokens_seen,
    /// tokens_per_s, adapter_path, adapter_size_bytes}`.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    pub worker_id: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl From<training_tasks::Model> for TrainingTaskView {
    fn from(t: training_tasks::Model) -> Self {
        Self {
            id: t.id,
            name: t.name,
            model_name: t.model_name,
            model_id: t.model_id,
            dataset_id: t.dataset_id,
            config_id: t.config_id,
            status: t.status,
            progress: t.progress,
            current_step: t.current_step,
            total_steps: t.total_steps,
            eta_seconds: t.eta_seconds,
            error_message: t.error_message,
            cancel_requested: t.cancel_requested,
            log_file: t.log_file,
            output_dir: t.output_dir,
            swanlab_url: t.swanlab_url,
            adapter_model_id: t.adapter_model_id,
            report: t.report.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            worker_id: t.worker_id,
            heartbeat_at: t.heartbeat_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            created_by: t.created_by,
            created_at: t.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrainingTask {
    pub name: String,
    /// The base model by registry name…
    pub model_name: Option<String>,
    /// …or by id.
    pub model_id: Option<i32>,
    pub dataset_id: i32,
    pub config_id: i32,
}

#[derive(Deserialize, IntoParams)]
pub struct TaskListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Only tasks in this status.
    pub status: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct LogQuery {
    /// Last N lines, 1–10000 (default 200).
    pub tail: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskLog {
    pub lines: Vec<String>,
    /// Lines in the whole log.
    pub total_lines: usize,
}

const STATUSES: [&str; 5] = [PENDING, RUNNING, training::COMPLETED, training::FAILED, CANCELLED];

async fn find_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<training_tasks::Model> {
    training_tasks::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|t| t.created_by == Some(user_id))
        .ok_or(ApiError::NotFound)
}

fn parse_name(raw: &str) -> Result<String, String> {
    validation::required_text(raw, 255)
}

/// The base model named by id or name: registered, a base model (not an adapter), usable.
async fn resolve_base_model(state: &AppState, req: &CreateTrainingTask) -> Result<models::Model, (&'static str, String)> {
    let (field, found) = match (req.model_id, req.model_name.as_deref().map(str::trim)) {
        (Some(id), _) => ("model_id", models::Entity::find_by_id(id).one(&state.db).await),
        (None, Some(name)) if !name.is_empty() => {
            ("model_name", models::Entity::find().filter(models::Column::Name.eq(name)).one(&state.db).await)
        }
        _ => return Err(("model_name", "give the base model as model_name or model_id".into())),
    };
    let model = found.map_err(|_| (field, "could not be looked up".to_owned()))?.ok_or((field, "no such model".to_owned()))?;
    if model.model_type.as_deref() == Some("lora") {
        return Err((field, "is a LoRA adapter; choose a base model".into()));
    }
    if !model.is_available {
        return Err((field, "is not available".into()));
    }
    if !FsPath::new(&model.model_path).is_file() {
        return Err((field, "its model file is missing".into()));
    }
    Ok(model)
}

#[utoipa::path(post, path = "/api/training-tasks", tag = "training", security(("bearer" = [])), request_body = CreateTrainingTask,
    responses((status = 201, body = TrainingTaskView, description = "queued as `pending`"),
        (status = 422, body = ErrorBody, description = "unknown model, dataset or config, or a bad name")))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<CreateTrainingTask>,
) -> ApiResult<(StatusCode, Json<TrainingTaskView>)> {
    let mut checks = Checks::default();
    let name = checks.check("name", parse_name(&req.name));
    let model = match resolve_base_model(&state, &req).await {
        Ok(model) => Some(model),
        Err((field, why)) => checks.check::<models::Model>(field, Err(why)),
    };
    let dataset = datasets::Entity::find_by_id(req.dataset_id).one(&state.db).await?.filter(|d| d.uploaded_by == Some(user.id));
    match &dataset {
        None => {
            checks.check::<()>("dataset_id", Err("no such dataset".into()));
        }
        Some(d) if !dataset_training_file(d).is_file() => {
            checks.check::<()>("dataset_id", Err("the dataset has no training file; upload it again".into()));
        }
        Some(_) => {}
    }
    // The caller's own configs and shared presets (no owner).
    let config = training_configs::Entity::find_by_id(req.config_id)
        .one(&state.db)
        .await?
        .filter(|c| c.created_by.is_none() || c.created_by == Some(user.id));
    if config.is_none() {
        checks.check::<()>("config_id", Err("no such training config".into()));
    }
    checks.finish()?;
    let model = model.expect("checked");
    let task = training_tasks::ActiveModel {
        name: Set(name.expect("checked")),
        model_name: Set(model.name.clone()),
        model_id: Set(Some(model.id)),
        dataset_id: Set(Some(req.dataset_id)),
        config_id: Set(Some(req.config_id)),
        status: Set(PENDING.into()),
        progress: Set(0.0),
        cancel_requested: Set(false),
        created_by: Set(Some(user.id)),
        created_at: Set(state.clock.now()),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    state.training.task_queued();
    Ok((StatusCode::CREATED, Json(task.into())))
}

#[utoipa::path(get, path = "/api/training-tasks", tag = "training", security(("bearer" = [])), params(TaskListQuery),
    responses((status = 200, body = Page<TrainingTaskView>, description = "the caller's own, newest first"), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<TaskListQuery>,
) -> ApiResult<Json<Page<TrainingTaskView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = training_tasks::Entity::find().filter(training_tasks::Column::CreatedBy.eq(user.id));
    if let Some(status) = query.status.as_deref().filter(|s| !s.is_empty()) {
        if !STATUSES.contains(&status) {
            return Err(ApiError::field("status", "must be pending, running, completed, failed or cancelled"));
        }
        select = select.filter(training_tasks::Column::Status.eq(status));
    }
    let paginator = select
        .order_by_desc(training_tasks::Column::CreatedAt)
        .order_by_desc(training_tasks::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(Into::into).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(get, path = "/api/training-tasks/{id}", tag = "training", security(("bearer" = [])),
    responses((status = 200, body = TrainingTaskView), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<TrainingTaskView>> {
    Ok(Json(find_own(&state, user.id, id).await?.into()))
}

#[utoipa::path(post, path = "/api/training-tasks/{id}/cancel", tag = "training", security(("bearer" = [])),
    responses((status = 200, body = TrainingTaskView, description = "a pending task is `cancelled` at once; a running one has `cancel_requested` and turns `cancelled` when its trainer is stopped"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the task already ended")))]
pub async fn cancel(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<TrainingTaskView>> {
    let task = find_own(&state, user.id, id).await?;
    let now = state.clock.now();
    let pending = training_tasks::Entity::update_many()
        .col_expr(training_tasks::Column::Status, Expr::value(CANCELLED))
        .col_expr(training_tasks::Column::CancelRequested, Expr::value(true))
        .col_expr(training_tasks::Column::CompletedAt, Expr::value(now))
        .filter(training_tasks::Column::Id.eq(task.id))
        .filter(training_tasks::Column::Status.eq(PENDING))
        .exec(&state.db)
        .await?;
    if pending.rows_affected == 0 {
        // Running (or just claimed): the worker holding it sees the flag and stops the trainer.
        let running = training_tasks::Entity::update_many()
            .col_expr(training_tasks::Column::CancelRequested, Expr::value(true))
            .filter(training_tasks::Column::Id.eq(task.id))
            .filter(training_tasks::Column::Status.eq(RUNNING))
            .exec(&state.db)
            .await?;
        if running.rows_affected == 0 {
            return Err(ApiError::conflict("task_finished", "the task has already ended"));
        }
    }
    state.training.cancel_requested(task.id);
    Ok(Json(find_own(&state, user.id, id).await?.into()))
}

#[utoipa::path(delete, path = "/api/training-tasks/{id}", tag = "training", security(("bearer" = [])),
    responses((status = 204, description = "deleted with its log; a registered adapter stays"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the task is running: cancel it first")))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let task = find_own(&state, user.id, id).await?;
    let deleted = training_tasks::Entity::delete_many()
        .filter(training_tasks::Column::Id.eq(task.id))
        .filter(training_tasks::Column::Status.ne(RUNNING))
        .exec(&state.db)
        .await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::conflict("task_running", "the task is running; cancel it first"));
    }
    let dir = state.training_dir(task.id);
    let adapter_kept = match task.adapter_model_id {
        Some(model) => models::Entity::find_by_id(model).one(&state.db).await?.is_some(),
        None => false,
    };
    // The registered adapter is a model of its own now; only the task's records go.
    let removal = if adapter_kept {
        let mut result = Ok(());
        for path in [training::log_path(&dir), training::metrics_path(&dir), dir.join("swanlab")] {
            let r = if path.is_dir() { tokio::fs::remove_dir_all(&path).await } else { tokio::fs::remove_file(&path).await };
            if let Err(e) = r.filter_not_found() {
                result = Err(e);
            }
        }
        result
    } else {
        tokio::fs::remove_dir_all(&dir).await.filter_not_found()
    };
    if let Err(e) = removal {
        tracing::warn!(task = task.id, error = %e, "removing a deleted task's files");
    }
    Ok(StatusCode::NO_CONTENT)
}

trait NotFoundIsFine {
    fn filter_not_found(self) -> std::io::Result<()>;
}

impl NotFoundIsFine for std::io::Result<()> {
    fn filter_not_found(self) -> std::io::Result<()> {
        match self {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[utoipa::path(get, path = "/api/training-tasks/{id}/log", tag = "training", security(("bearer" = [])), params(LogQuery),
    responses((status = 200, body = TaskLog), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn log(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Json<TaskLog>> {
    let tail = query.tail.unwrap_or(200);
    if !(1..=10_000).contains(&tail) {
        return Err(ApiError::field("tail", "must be between 1 and 10000"));
    }
    let task = find_own(&state, user.id, id).await?;
    let (lines, total_lines) = events::tail(&training::log_path(&state.training_dir(task.id)), tail).await;
    Ok(Json(TaskLog { lines, total_lines }))
}

#[utoipa::path(get, path = "/api/training-tasks/{id}/events", tag = "training", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream",
        description = "first `status`, every `metrics` so far and the log tail, then live `log` {line}, `metrics` {step, total_steps, epoch, loss, lr, grad_norm, tokens_per_s, elapsed, eta} and `status` {status, progress, current_step, total_steps, eta_seconds, swanlab_url, error?}; ends after the task ended"),
        (status = 404, body = ErrorBody)))]
pub async fn events(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Response> {
    let task = find_own(&state, user.id, id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let dir = state.training_dir(task.id);
    tokio::spawn(events::stream(state.db.clone(), state.training.clone(), task, dir, tx));
    Ok(sse_response(rx))
}

/// Tasks that use a dataset and have not ended (a dataset in use cannot be deleted).
pub fn active_with_dataset(dataset_id: i32) -> Condition {
    Condition::all()
        .add(training_tasks::Column::DatasetId.eq(dataset_id))
        .add(training_tasks::Column::Status.is_in([PENDING, RUNNING]))
}
