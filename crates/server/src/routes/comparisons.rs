//! `/api/comparisons/*`: one input to 2–8 of the caller's model configs, streamed side by side
//! and saved in `model_tests` (R-CHAT-6). Another user's comparison is a 404.
use std::collections::HashSet;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use llm::{ChatMessage, Role};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    chat::{self, comparison::ComparisonResult},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, StreamingUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery, contains_ci},
    routes::prompts,
    state::AppState,
    validation::Checks,
};
use store::entities::{model_playground_chats, model_tests, users};

pub const MIN_MODELS: usize = 2;
pub const MAX_MODELS: usize = 8;
const MAX_INPUT_CHARS: usize = 200_000;

#[derive(Serialize, ToSchema)]
pub struct ComparisonView {
    pub id: i32,
    pub test_name: String,
    pub input: String,
    /// The same as `input` (the column's name).
    pub input_data: String,
    pub model_config_ids: Vec<String>,
    pub models_tested: Vec<String>,
    pub system_prompt: Option<String>,
    /// One per model, in the order asked; empty while the first run streams.
    pub results: Vec<ComparisonResult>,
    /// True while a run is streaming.
    pub is_streaming: bool,
    pub created_at: DateTime<Utc>,
}

impl From<model_tests::Model> for ComparisonView {
    fn from(t: model_tests::Model) -> Self {
        let ids: Vec<String> = t.models_tested.as_deref().and_then(|raw| serde_json::from_str(raw).ok()).unwrap_or_default();
        Self {
            id: t.id,
            test_name: t.test_name,
            input: t.input_data.clone(),
            input_data: t.input_data,
            model_config_ids: ids.clone(),
            models_tested: ids,
            system_prompt: t.system_prompt,
            results: t.results.as_deref().and_then(|raw| serde_json::from_str(raw).ok()).unwrap_or_default(),
            is_streaming: t.is_streaming,
            created_at: t.created_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComparisonRequest {
    /// The question; may be empty when `test_prompt_id` is given (its content is used).
    #[serde(default)]
    pub input: String,
    /// 2 to 8 distinct configs of the caller's.
    pub model_config_ids: Vec<String>,
    /// Defaults to the test prompt's title or the start of the input.
    pub test_name: Option<String>,
    pub test_prompt_id: Option<i32>,
    pub system_prompt: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ComparisonListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Case-insensitive search in test names.
    pub q: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ComparisonExportQuery {
    /// `json` (default), `csv` or `md`.
    pub format: Option<String>,
}

async fn find_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<model_tests::Model> {
    model_tests::Entity::find_by_id(id).one(&state.db).await?.filter(|t| t.user_id == user_id).ok_or(ApiError::NotFound)
}

/// Resolves every config, naming each bad one (`model_config_ids[i]`) in one 422.
async fn resolve_models(state: &AppState, user: &users::Model, ids: &[String]) -> ApiResult<Vec<chat::ResolvedModel>> {
    let mut checks = Checks::default();
    if !(MIN_MODELS..=MAX_MODELS).contains(&ids.len()) {
        checks.check::<()>("model_config_ids", Err(format!("must name {MIN_MODELS} to {MAX_MODELS} model configs")));
    } else if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        checks.check::<()>("model_config_ids", Err("must not repeat a model config".into()));
    }
    checks.finish()?;
    let mut models = Vec::with_capacity(ids.len());
    let mut fields = crate::error::FieldErrors::new();
    for (i, id) in ids.iter().enumerate() {
        let field = format!("model_config_ids[{i}]");
        match chat::resolve_model(state, user, &field, id).await {
            Ok(m) => models.push(m),
            Err(ApiError::Validation(f)) => fields.extend(f),
            Err(other) => return Err(other),
        }
    }
    if fields.is_empty() { Ok(models) } else { Err(ApiError::Validation(fields)) }
}

fn conversation(system_prompt: Option<&str>, input: &str) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    if let Some(system) = system_prompt {
        messages.push(ChatMessage::new(Role::System, system));
    }
    messages.push(ChatMessage::new(Role::User, input));
    messages
}

#[utoipa::path(post, path = "/api/comparisons", tag = "comparisons", security(("bearer" = [])), request_body = ComparisonRequest,
    responses((status = 200, content_type = "text/event-stream",
        description = "`meta` {test_id, model_config_ids} once, a `meta` {model_config_id, model} per model, then `reasoning`, `content`, `usage`, `error`, `done` events each carrying `model_config_id`"),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    StreamingUser(user): StreamingUser,
    JsonBody(req): JsonBody<ComparisonRequest>,
) -> ApiResult<Response> {
    let test_prompt = match req.test_prompt_id {
        None => None,
        Some(id) => Some(
            prompts::find_test_prompt(&state, user.id, id).await?.ok_or_else(|| ApiError::field("test_prompt_id", "no such test prompt"))?,
        ),
    };
    let input = match (req.input.trim(), &test_prompt) {
        ("", Some(p)) => p.content.clone(),
        ("", None) => return Err(ApiError::field("input", "must not be empty")),
        (_, _) if req.input.chars().count() > MAX_INPUT_CHARS => {
            return Err(ApiError::field("input", format!("must be at most {MAX_INPUT_CHARS} characters")));
        }
        (_, _) => req.input.clone(),
    };
    let test_name = match req.test_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) if n.chars().count() > 255 => return Err(ApiError::field("test_name", "must be at most 255 characters")),
        Some(n) => n.to_owned(),
        None => test_prompt.map(|p| p.title).unwrap_or_else(|| input.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(50).collect()),
    };
    let models = resolve_models(&state, &user, &req.model_config_ids).await?;
    let system_prompt = req.system_prompt.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);

    let test = model_tests::ActiveModel {
        user_id: Set(user.id),
        test_name: Set(test_name),
        models_tested: Set(Some(serde_json::to_string(&req.model_config_ids).expect("ids serialise"))),
        input_data: Set(input.clone()),
        results: Set(None),
        is_streaming: Set(true),
        system_prompt: Set(system_prompt.clone()),
        created_at: Set(state.clock.now()),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    let messages = conversation(system_prompt.as_deref(), &input);
    Ok(chat::comparison::stream(state, test, models, messages))
}

#[utoipa::path(post, path = "/api/comparisons/{id}/rerun", tag = "comparisons", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "as for a new comparison; the saved results are replaced"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody, description = "a config is gone or unusable")))]
pub async fn rerun(State(state): State<AppState>, StreamingUser(user): StreamingUser, Path(id): Path<i32>) -> ApiResult<Response> {
    let test = find_own(&state, user.id, id).await?;
    let ids = ComparisonView::from(test.clone()).model_config_ids;
    let models = resolve_models(&state, &user, &ids).await?;
    let messages = conversation(test.system_prompt.as_deref(), &test.input_data);
    let mut active = test.into_active_model();
    active.is_streaming = Set(true);
    let test = active.update(&state.db).await?;
    Ok(chat::comparison::stream(state, test, models, messages))
}

#[utoipa::path(get, path = "/api/comparisons", tag = "comparisons", security(("bearer" = [])), params(ComparisonListQuery),
    responses((status = 200, body = Page<ComparisonView>, description = "the caller's comparisons, newest first")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<ComparisonListQuery>,
) -> ApiResult<Json<Page<ComparisonView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = model_tests::Entity::find().filter(model_tests::Column::UserId.eq(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(contains_ci(model_tests::Column::TestName, q));
    }
    let paginator = select
        .order_by_desc(model_tests::Column::CreatedAt)
        .order_by_desc(model_tests::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(Into::into).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(get, path = "/api/comparisons/{id}", tag = "comparisons", security(("bearer" = [])),
    responses((status = 200, body = ComparisonView), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<ComparisonView>> {
    Ok(Json(find_own(&state, user.id, id).await?.into()))
}

#[utoipa::path(delete, path = "/api/comparisons/{id}", tag = "comparisons", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let test = find_own(&state, user.id, id).await?;
    // The transcript is keyed by a string, not a foreign key: it goes explicitly.
    model_playground_chats::Entity::delete_many()
        .filter(model_playground_chats::Column::SessionId.eq(chat::comparison::transcript_key(test.id)))
        .exec(&state.db)
        .await?;
    model_tests::Entity::delete_by_id(test.id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/comparisons/{id}/export", tag = "comparisons", security(("bearer" = [])), params(ComparisonExportQuery),
    responses((status = 200, description = "an attachment: JSON, CSV (one row per model) or Markdown"), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<ComparisonExportQuery>,
) -> ApiResult<Response> {
    let format = match query.format.as_deref().unwrap_or("json") {
        f @ ("json" | "csv" | "md") => f,
        _ => return Err(ApiError::field("format", "must be \"json\", \"csv\" or \"md\"")),
    };
    let view = ComparisonView::from(find_own(&state, user.id, id).await?);
    let (body, content_type) = match format {
        "json" => (serde_json::to_string_pretty(&view).expect("export serialises"), "application/json"),
        "csv" => (csv(&view), "text/csv; charset=utf-8"),
        _ => (markdown(&view), "text/markdown; charset=utf-8"),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"comparison-{}.{format}\"", view.id)).expect("ASCII header"),
    );
    Ok(response)
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value.to_owned() }
}

fn number(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn csv(view: &ComparisonView) -> String {
    let mut out = String::from(
        "model_config_id,model_name,finish_reason,ttft_ms,ttfa_ms,reasoning_tokens,answer_tokens,answer_tokens_per_s,total_ms,error,content,reasoning\r\n",
    );
    for r in &view.results {
        let m = &r.metrics;
        let row = [
            csv_field(&r.model_config_id),
            csv_field(&r.model_name),
            csv_field(&r.finish_reason),
            number(m.ttft_ms),
            number(m.ttfa_ms),
            m.reasoning_tokens.to_string(),
            m.answer_tokens.to_string(),
            number(m.answer_tokens_per_s),
            m.total_ms.to_string(),
            csv_field(r.error.as_deref().unwrap_or("")),
            csv_field(&r.content),
            csv_field(r.reasoning.as_deref().unwrap_or("")),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

fn markdown(view: &ComparisonView) -> String {
    let mut out = format!("# {}\n\n", view.test_name);
    if let Some(system) = &view.system_prompt {
        out.push_str(&format!("**System prompt:** {system}\n\n"));
    }
    out.push_str(&format!("**Input:**\n\n{}\n\n", view.input.trim_end()));
    out.push_str("| model | finish | TTFT ms | answer tokens | tokens/s | total ms |\n|---|---|---|---|---|---|\n");
    for r in &view.results {
        let m = &r.metrics;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.model_name.replace('|', "\\|"),
            r.finish_reason,
            number(m.ttft_ms),
            m.answer_tokens,
            number(m.answer_tokens_per_s),
            m.total_ms
        ));
    }
    out.push('\n');
    for r in &view.results {
        out.push_str(&format!("## {}\n\n", r.model_name));
        if let Some(reasoning) = r.reasoning.as_deref() {
            out.push_str(&format!("<details><summary>Reasoning</summary>\n\n{}\n\n</details>\n\n", reasoning.trim_end()));
        }
        if let Some(error) = &r.error {
            out.push_str(&format!("> Error: {error}\n\n"));
        }
        out.push_str(r.content.trim_end());
        out.push_str("\n\n");
    }
    out
}
