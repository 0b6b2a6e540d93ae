//! `/api/datasets/*`: a user's training datasets (R-TRAIN-1). Another user's dataset is a 404.
//!
//! An upload is streamed to a temporary file, checked record by record, and only then kept
//! under a generated name with its normalized training copy; a file that fails leaves no row
//! and no file behind.
use axum::{
    Json,
    body::Body,
    extract::{Multipart, State, multipart::MultipartRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use engine::{DatasetFormat, TrainingExample, dataset::format_name};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use crate::{
    chat::{self, ROLE_ASSISTANT, ROLE_USER},
    datasets::{
        self, FileGuard, REFERENCE_MODEL_FILE,
        parse::{FileKind, Parsed, Problems},
        stats::{self, BasicStats, CachedStats, TokenStats},
    },
    error::{ApiError, ApiResult, ErrorBody, FieldErrors},
    extract::{AuthUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery, contains_ci},
    state::AppState,
    validation::{self, Checks},
};
use store::entities::{chat_sessions, datasets as dataset_entity, model_tests, models, training_tasks};

/// Task states that hold on to their dataset.
pub const ACTIVE_TASK_STATES: [&str; 2] = ["pending", "running"];
/// Room for the multipart framing and the text fields around the file.
const FORM_OVERHEAD: u64 = 64 * 1024;
const MAX_PREVIEW: usize = 100;

#[derive(Serialize, ToSchema, Debug)]
pub struct DatasetView {
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
    /// `alpaca`, `sharegpt` or `messages`: the records' format as uploaded.
    pub format: Option<String>,
    /// `json`, `jsonl` or `csv`: how the stored file is laid out.
    pub file_type: Option<String>,
    pub file_size: Option<i64>,
    pub record_count: Option<i32>,
    /// The name the file had on the client.
    pub original_filename: Option<String>,
    /// A pending or running training task uses it (it cannot be deleted).
    pub in_use: bool,
    pub uploaded_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl DatasetView {
    fn new(d: dataset_entity::Model, in_use: bool) -> Self {
        let file_type = std::path::Path::new(&d.file_path)
            .extension()
            .and_then(|e| e.to_str())
            .and_then(FileKind::from_extension)
            .map(|k| k.extension().to_owned());
        Self {
            id: d.id,
            name: d.name,
            description: d.description,
            format: d.format_type,
            file_type,
            file_size: d.file_size,
            record_count: d.record_count,
            original_filename: d.original_filename,
            in_use,
            uploaded_by: d.uploaded_by,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// The upload form (`multipart/form-data`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DatasetUpload {
    /// JSON (an array of records), JSON Lines or CSV, UTF-8 (a BOM is fine), up to the configured
    /// `datasets.max_upload_bytes`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    name: String,
    description: Option<String>,
    /// `alpaca`, `sharegpt`, `messages` or `auto` (the default: from the first record).
    format: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct DatasetListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Case-insensitive search in names and descriptions.
    pub q: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetPatch {
    pub name: Option<String>,
    /// `""` clears it.
    pub description: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct PreviewQuery {
    /// Records to skip, default 0.
    pub offset: Option<usize>,
    /// 1–100, default 20.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetPreview {
    /// Normalized records: `{"messages": [{"role", "content"}, ...]}`, what the trainer reads.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<TrainingExample>,
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Deserialize, IntoParams)]
pub struct StatsQuery {
    /// A base model of the registry whose tokenizer counts tokens; default the first base
    /// model, else the reference model file when present.
    pub model_id: Option<i32>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetStats {
    pub basic: BasicStats,
    /// Null when no base model is available to count with (see `tokens_unavailable`).
    pub tokens: Option<TokenStats>,
    /// Why `tokens` is null.
    pub tokens_unavailable: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetImport {
    /// `session` (a playground session) or `comparison`.
    pub source: String,
    /// The session's or comparison's id; it must be the caller's own.
    pub id: i32,
    /// Defaults to the session title or comparison name.
    pub name: Option<String>,
    pub description: Option<String>,
    /// For a comparison: keep only this model's answer (default: every successful answer,
    /// one record each).
    pub model_config_id: Option<String>,
}

fn parse_name(raw: &str) -> Result<String, String> {
    validation::required_text(raw, 255)
}

fn parse_description(raw: &str) -> Result<Option<String>, String> {
    validation::optional_text(raw, validation::DESCRIPTION_MAX)
}

fn parse_format(raw: &str) -> Result<Option<DatasetFormat>, String> {
    match raw.trim() {
        "" | "auto" => Ok(None),
        f => engine::dataset::parse_format_name(f)
            .map(Some)
            .ok_or_else(|| "must be alpaca, sharegpt, messages or auto".to_owned()),
    }
}

async fn find_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<dataset_entity::Model> {
    dataset_entity::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|d| d.uploaded_by == Some(user_id))
        .ok_or(ApiError::NotFound)
}

/// Which of `ids` a pending or running training task uses.
async fn in_use(state: &AppState, ids: Vec<i32>) -> ApiResult<Vec<i32>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(training_tasks::Entity::find()
        .filter(training_tasks::Column::DatasetId.is_in(ids))
        .filter(training_tasks::Column::Status.is_in(ACTIVE_TASK_STATES))
        .all(&state.db)
        .await?
        .into_iter()
        .filter_map(|t| t.dataset_id)
        .collect())
}

async fn view(state: &AppState, d: dataset_entity::Model) -> ApiResult<DatasetView> {
    let used = !in_use(state, vec![d.id]).await?.is_empty();
    Ok(DatasetView::new(d, used))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge {
        code: "dataset_too_large",
        message: format!("the dataset file is larger than the limit of {}", human_bytes(limit)),
    }
}

fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn problems_error(problems: Problems) -> ApiError {
    let mut fields = FieldErrors::new();
    for p in &problems.shown {
        fields.insert(p.key(), p.reason.clone());
    }
    if problems.total > problems.shown.len() {
        fields.insert("more".into(), format!("and {} more problems", problems.total - problems.shown.len()));
    }
    ApiError::Validation(fields)
}

/// What the form said, once all of it is read.
#[derive(Default)]
struct UploadForm {
    file: Option<(FileGuard, u64, Option<String>)>,
    name: Option<String>,
    description: Option<String>,
    format: Option<String>,
}

async fn read_form(state: &AppState, mut multipart: Multipart) -> ApiResult<UploadForm> {
    let limit = state.settings.datasets.max_upload_bytes;
    let dir = datasets::dir(&state.settings.data_dir);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| anyhow::Error::new(e).context("creating the datasets directory"))?;
    let form_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let mut form = UploadForm::default();
    while let Some(mut field) = multipart.next_field().await.map_err(form_error)? {
        let part = field.name().unwrap_or_default().to_owned();
        match part.as_str() {
            "file" => {
                if form.file.is_some() {
                    return Err(ApiError::field("file", "send one file per upload"));
                }
                let client_name = field.file_name().map(str::to_owned);
                let guard = FileGuard::new(dir.join(format!(".upload-{}.part", uuid::Uuid::new_v4().simple())));
                let mut out = tokio::fs::File::create(guard.path())
                    .await
                    .map_err(|e| anyhow::Error::new(e).context("creating an upload file"))?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(too_large(limit));
                    }
                    out.write_all(&chunk).await.map_err(|e| anyhow::Error::new(e).context("writing an upload"))?;
                }
                out.flush().await.map_err(|e| anyhow::Error::new(e).context("writing an upload"))?;
                form.file = Some((guard, size, client_name));
            }
            "name" => form.name = Some(field.text().await.map_err(form_error)?),
            "description" => form.description = Some(field.text().await.map_err(form_error)?),
            "format" => form.format = Some(field.text().await.map_err(form_error)?),
            // Unknown parts are read and dropped, as browsers may add their own.
            _ => {
                while field.chunk().await.map_err(form_error)?.is_some() {}
            }
        }
    }
    Ok(form)
}

/// Keeps a checked dataset: the file under its final name, the training copy beside it, and the
/// row. On any failure the files go again.
#[allow(clippy::too_many_arguments)]
async fn store(
    state: &AppState,
    owner: i32,
    name: String,
    description: Option<String>,
    original_filename: Option<String>,
    source: SourceFile,
    kind: FileKind,
    parsed: Parsed,
) -> ApiResult<dataset_entity::Model> {
    let final_path = datasets::new_file_path(&state.settings.data_dir, kind.extension());
    let train_path = datasets::train_file(&final_path);
    let basic = stats::basic(&parsed.examples);
    let format = format_name(parsed.format);
    let record_count = parsed.examples.len();
    let (file_guard, train_guard, size) = {
        let final_path = final_path.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            if let Some(dir) = final_path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file_guard = match source {
                SourceFile::Upload(temp) => {
                    std::fs::rename(temp.path(), &final_path)?;
                    temp.keep();
                    FileGuard::new(final_path.clone())
                }
                SourceFile::Contents(bytes) => {
                    let guard = FileGuard::new(final_path.clone());
                    std::fs::write(&final_path, bytes)?;
                    guard
                }
            };
            let train_guard = FileGuard::new(train_path.clone());
            datasets::write_train_file(&train_path, &parsed.examples)?;
            let size = std::fs::metadata(&final_path)?.len();
            Ok((file_guard, train_guard, size))
        })
        .await?
        .map_err(|e| e.context("storing a dataset"))?
    };
    let cached = CachedStats { basic: Some(basic), ..Default::default() };
    let row = dataset_entity::ActiveModel {
        name: Set(name),
        description: Set(description),
        file_path: Set(final_path.to_string_lossy().into_owned()),
        file_size: Set(Some(size as i64)),
        format_type: Set(Some(format.to_owned())),
        uploaded_by: Set(Some(owner)),
        created_at: Set(state.clock.now()),
        record_count: Set(Some(i32::try_from(record_count).unwrap_or(i32::MAX))),
        original_filename: Set(original_filename),
        stats: Set(Some(cached.to_column())),
        updated_at: Set(None),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    file_guard.keep();
    train_guard.keep();
    Ok(row)
}

enum SourceFile {
    /// A checked upload in its temporary file.
    Upload(FileGuard),
    /// Contents built on the server (imports).
    Contents(Vec<u8>),
}

#[utoipa::path(get, path = "/api/datasets", tag = "datasets", security(("bearer" = [])), params(DatasetListQuery),
    responses((status = 200, body = Page<DatasetView>, description = "the caller's own datasets, newest first")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<DatasetListQuery>,
) -> ApiResult<Json<Page<DatasetView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = dataset_entity::Entity::find().filter(dataset_entity::Column::UploadedBy.eq(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(
            Condition::any()
                .add(contains_ci(dataset_entity::Column::Name, q))
                .add(contains_ci(dataset_entity::Column::Description, q)),
        );
    }
    let paginator = select
        .order_by_desc(dataset_entity::Column::CreatedAt)
        .order_by_desc(dataset_entity::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let rows = paginator.fetch_page(page - 1).await?;
    let used = in_use(&state, rows.iter().map(|d| d.id).collect()).await?;
    let items = rows.into_iter().map(|d| {
        let u = used.contains(&d.id);
        DatasetView::new(d, u)
    });
    Ok(Json(Page { items: items.collect(), total, page, page_size }))
}

#[utoipa::path(post, path = "/api/datasets", tag = "datasets", security(("bearer" = [])),
    request_body(content = DatasetUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = DatasetView),
        (status = 413, body = ErrorBody, description = "`dataset_too_large`: over `datasets.max_upload_bytes`"),
        (status = 422, body = ErrorBody, description = "`fields` names each problem: `name`, `format`, `file`, or a record and field such as `line 57: output`, `row 3`, `index 4: messages[1].role`; nothing is stored")))]
pub async fn upload(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<DatasetView>)> {
    let limit = state.settings.datasets.max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large(limit));
    }
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request("expected_multipart", format!("send the dataset as multipart/form-data: {}", e.body_text()))
    })?;
    let form = read_form(&state, multipart).await?;

    let mut checks = Checks::default();
    let name = match form.name.as_deref() {
        Some(n) => checks.check("name", parse_name(n)),
        None => checks.check("name", Err("is required".into())),
    };
    let description = checks.check("description", parse_description(form.description.as_deref().unwrap_or("")));
    let format = checks.check("format", parse_format(form.format.as_deref().unwrap_or("")));
    let file = checks.check("file", form.file.ok_or_else(|| "is required".to_owned()));
    checks.finish()?;
    let (name, description, format) = (name.expect("checked"), description.expect("checked"), format.expect("checked"));
    let (temp, _, client_name) = file.expect("checked");

    let hint = client_name.as_deref().and_then(FileKind::from_file_name);
    let temp_path = temp.path().to_path_buf();
    let (kind, parsed) = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&temp_path).map_err(|e| anyhow::Error::new(e).context("reading an upload"))?;
        Ok::<_, ApiError>(datasets::parse::parse(&bytes, hint, format).map_err(problems_error))
    })
    .await???;
    let original = client_name.map(|n| n.chars().take(255).collect());
    let row = store(&state, user.id, name, description, original, SourceFile::Upload(temp), kind, parsed).await?;
    Ok((StatusCode::CREATED, Json(DatasetView::new(row, false))))
}

#[utoipa::path(post, path = "/api/datasets/import", tag = "datasets", security(("bearer" = [])), request_body = DatasetImport,
    responses((status = 201, body = DatasetView, description = "a `messages` dataset in JSON Lines"),
        (status = 404, body = ErrorBody, description = "no such session or comparison of the caller's"),
        (status = 422, body = ErrorBody, description = "bad `source`, or nothing answered to learn from")))]
pub async fn import(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<DatasetImport>,
) -> ApiResult<(StatusCode, Json<DatasetView>)> {
    let mut checks = Checks::default();
    let name = req.name.as_deref().and_then(|n| checks.check("name", parse_name(n)));
    let description = checks.check("description", parse_description(req.description.as_deref().unwrap_or("")));
    let source = checks.check(
        "source",
        match req.source.as_str() {
            s @ ("session" | "comparison") => Ok(s),
            _ => Err("must be \"session\" or \"comparison\"".to_owned()),
        },
    );
    checks.finish()?;
    let (default_name, records) = match source.expect("checked") {
        "session" => {
            if req.model_config_id.is_some() {
                return Err(ApiError::field("model_config_id", "only applies to a comparison"));
            }
            session_records(&state, user.id, req.id).await?
        }
        _ => comparison_records(&state, user.id, req.id, req.model_config_id.as_deref()).await?,
    };
    let mut contents = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut contents, &engine::dataset::normalized_record(r)).map_err(anyhow::Error::new)?;
        contents.push(b'\n');
    }
    let name = name.unwrap_or_else(|| parse_name(&default_name).unwrap_or_else(|_| format!("{} {}", req.source, req.id)));
    let parsed = Parsed { format: DatasetFormat::Messages, examples: records };
    let row = store(
        &state,
        user.id,
        name,
        description.expect("checked"),
        None,
        SourceFile::Contents(contents),
        FileKind::JsonLines,
        parsed,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(DatasetView::new(row, false))))
}

/// A playground session as one conversation: its questions and non-empty answers.
async fn session_records(state: &AppState, user_id: i32, id: i32) -> ApiResult<(String, Vec<TrainingExample>)> {
    let session = chat_sessions::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|s| s.user_id == user_id)
        .ok_or(ApiError::NotFound)?;
    let mut messages: Vec<_> = chat::messages(&state.db, session.id)
        .await?
        .into_iter()
        .filter(|m| (m.role == ROLE_USER || m.role == ROLE_ASSISTANT) && !m.content.trim().is_empty())
        .map(|m| engine::ChatMessage::new(m.role, m.content))
        .collect();
    // A question left unanswered at the end teaches nothing.
    while messages.last().is_some_and(|m| m.role != ROLE_ASSISTANT) {
        messages.pop();
    }
    let record = serde_json::json!({ "messages": messages });
    match engine::check_record(&record, Some(DatasetFormat::Messages)) {
        Ok((_, example)) => Ok((session.title, vec![example])),
        Err(_) => Err(ApiError::field("id", "the session has no answered question to learn from")),
    }
}

/// A comparison as one record per successful answer: (system prompt,) input, answer.
async fn comparison_records(
    state: &AppState,
    user_id: i32,
    id: i32,
    model_config_id: Option<&str>,
) -> ApiResult<(String, Vec<TrainingExample>)> {
    let test = model_tests::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|t| t.user_id == user_id)
        .ok_or(ApiError::NotFound)?;
    // Read loosely: only the answer, its model and whether it failed matter here.
    let results: Vec<Value> = test.results.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
    let config_of = |r: &Value| r["model_config_id"].as_str().map(str::to_owned);
    if let Some(wanted) = model_config_id
        && !results.iter().any(|r| config_of(r).as_deref() == Some(wanted))
    {
        return Err(ApiError::field("model_config_id", "this model is not part of the comparison"));
    }
    let mut records = Vec::new();
    for r in results.iter().filter(|r| model_config_id.is_none_or(|w| config_of(r).as_deref() == Some(w))) {
        let content = r["content"].as_str().unwrap_or_default();
        if !r["error"].is_null() || content.trim().is_empty() {
            continue;
        }
        let mut messages = Vec::new();
        if let Some(system) = test.system_prompt.as_deref().filter(|s| !s.trim().is_empty()) {
            messages.push(engine::ChatMessage::new("system", system));
        }
        messages.push(engine::ChatMessage::new("user", test.input_data.clone()));
        messages.push(engine::ChatMessage::new("assistant", content));
        let record = serde_json::json!({ "messages": messages });
        if let Ok((_, example)) = engine::check_record(&record, Some(DatasetFormat::Messages)) {
            records.push(example);
        }
    }
    if records.is_empty() {
        return Err(ApiError::field("id", "the comparison has no successful answer to learn from"));
    }
    Ok((test.test_name, records))
}

#[utoipa::path(get, path = "/api/datasets/{id}", tag = "datasets", security(("bearer" = [])),
    responses((status = 200, body = DatasetView), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<DatasetView>> {
    let d = find_own(&state, user.id, id).await?;
    Ok(Json(view(&state, d).await?))
}

#[utoipa::path(patch, path = "/api/datasets/{id}", tag = "datasets", security(("bearer" = [])), request_body = DatasetPatch,
    responses((status = 200, body = DatasetView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<DatasetPatch>,
) -> ApiResult<Json<DatasetView>> {
    let mut checks = Checks::default();
    let name = req.name.as_deref().and_then(|n| checks.check("name", parse_name(n)));
    let description = req.description.as_deref().and_then(|d| checks.check("description", parse_description(d)));
    let d = find_own(&state, user.id, id).await?;
    checks.finish()?;
    let mut active = d.into_active_model();
    if let Some(name) = name {
        active.name = Set(name);
    }
    if let Some(description) = description {
        active.description = Set(description);
    }
    active.updated_at = Set(Some(state.clock.now()));
    let d = active.update(&state.db).await?;
    Ok(Json(view(&state, d).await?))
}

#[utoipa::path(delete, path = "/api/datasets/{id}", tag = "datasets", security(("bearer" = [])),
    responses((status = 204, description = "the row and both files are gone"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`dataset_in_use`: a pending or running training task uses it")))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let d = find_own(&state, user.id, id).await?;
    if !in_use(&state, vec![d.id]).await?.is_empty() {
        return Err(ApiError::conflict(
            "dataset_in_use",
            "a pending or running training task uses this dataset; cancel it or wait until it ends",
        ));
    }
    dataset_entity::Entity::delete_by_id(d.id).exec(&state.db).await?;
    let path = std::path::PathBuf::from(&d.file_path);
    if let Err(e) = tokio::task::spawn_blocking(move || datasets::remove_files(&path)).await? {
        tracing::error!(error = %e, dataset = d.id, "removing dataset files failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/datasets/{id}/preview", tag = "datasets", security(("bearer" = [])), params(PreviewQuery),
    responses((status = 200, body = DatasetPreview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<PreviewQuery>,
) -> ApiResult<Json<DatasetPreview>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PREVIEW).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_PREVIEW}")));
    }
    let offset = query.offset.unwrap_or(0);
    let d = find_own(&state, user.id, id).await?;
    let path = datasets::train_file(&d.file_path);
    let items = tokio::task::spawn_blocking(move || datasets::read_train_file(&path, offset, Some(limit)))
        .await?
        .map_err(|e| e.context("reading a training file"))?;
    Ok(Json(DatasetPreview { items, total: d.record_count.unwrap_or(0).max(0) as u64, offset, limit }))
}

/// The model file whose tokenizer counts, with the name to show; `None` when there is none.
async fn counting_model(state: &AppState, model_id: Option<i32>) -> ApiResult<Option<(std::path::PathBuf, String)>> {
    if let Some(id) = model_id {
        let model = models::Entity::find_by_id(id).one(&state.db).await?.ok_or_else(|| ApiError::field("model_id", "no such model"))?;
        if model.model_type.as_deref() == Some("lora") {
            return Err(ApiError::field("model_id", "a LoRA adapter has no tokenizer of its own; choose its base model"));
        }
        let path = std::path::PathBuf::from(&model.model_path);
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            return Err(ApiError::field("model_id", "the model's file is missing"));
        }
        return Ok(Some((path, model.display_name)));
    }
    let bases = models::Entity::find()
        .filter(Condition::any().add(models::Column::ModelType.is_null()).add(models::Column::ModelType.ne("lora")))
        .order_by_asc(models::Column::Id)
        .all(&state.db)
        .await?;
    for model in bases {
        let path = std::path::PathBuf::from(&model.model_path);
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            return Ok(Some((path, model.display_name)));
        }
    }
    let reference = state.settings.data_dir.join("models").join(REFERENCE_MODEL_FILE);
    if tokio::fs::metadata(&reference).await.is_ok_and(|m| m.is_file()) {
        return Ok(Some((reference, REFERENCE_MODEL_FILE.trim_end_matches(".gguf").to_owned())));
    }
    Ok(None)
}

#[utoipa::path(get, path = "/api/datasets/{id}/stats", tag = "datasets", security(("bearer" = [])), params(StatsQuery),
    responses((status = 200, body = DatasetStats, description = "token counts are computed once per model and cached"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "`model_id`: unknown, an adapter, or its file is missing")))]
pub async fn stats(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<StatsQuery>,
) -> ApiResult<Json<DatasetStats>> {
    let d = find_own(&state, user.id, id).await?;
    let mut cached = CachedStats::from_column(d.stats.as_deref());
    let model = counting_model(&state, query.model_id).await?;
    let key = model.as_ref().map(|(path, _)| path.to_string_lossy().into_owned());
    let have_tokens = key.as_ref().is_none_or(|k| cached.tokens.contains_key(k));
    let mut tokens_unavailable = None;
    if cached.basic.is_none() || !have_tokens {
        let train = datasets::train_file(&d.file_path);
        let cache = state.tokenizers.clone();
        let want_basic = cached.basic.is_none();
        let counting = model.clone().filter(|_| !have_tokens);
        let (basic, tokens) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let examples = datasets::read_train_file(&train, 0, None)?;
            let basic = want_basic.then(|| stats::basic(&examples));
            let tokens = counting.map(|(path, name)| {
                cache.load(&path).and_then(|counter| stats::tokens(&counter, &name, &examples))
            });
            Ok((basic, tokens))
        })
        .await?
        .map_err(|e| e.context("computing dataset statistics"))?;
        if let Some(basic) = basic {
            cached.basic = Some(basic);
        }
        match tokens {
            Some(Ok(t)) => cached.insert_tokens(key.clone().expect("a model counted"), t),
            Some(Err(e)) => {
                tracing::error!(error = %e, dataset = d.id, "counting tokens failed");
                tokens_unavailable = Some("the model's tokenizer could not be used to count tokens".to_owned());
            }
            None => {}
        }
        let mut active = d.clone().into_active_model();
        active.stats = Set(Some(cached.to_column()));
        active.update(&state.db).await?;
    }
    let tokens = key.as_ref().and_then(|k| cached.tokens.get(k).cloned());
    if model.is_none() {
        tokens_unavailable =
            Some("no base model to count tokens with: register one under Models or fetch the reference model".to_owned());
    }
    Ok(Json(DatasetStats { basic: cached.basic.expect("computed above"), tokens, tokens_unavailable }))
}

#[utoipa::path(get, path = "/api/datasets/{id}/download", tag = "datasets", security(("bearer" = [])),
    responses((status = 200, description = "the file as uploaded, named after the dataset", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn download(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Response> {
    let d = find_own(&state, user.id, id).await?;
    let path = std::path::PathBuf::from(&d.file_path);
    let file = tokio::fs::File::open(&path).await.map_err(|e| anyhow::Error::new(e).context("opening a dataset file"))?;
    let size = file.metadata().await.map_err(anyhow::Error::new)?.len();
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("txt").to_owned();
    let content_type = match extension.as_str() {
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "csv" => "text/csv; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let disposition = datasets::content_disposition(&d.name, &extension);
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(anyhow::Error::new)?);
    Ok(response)
}
