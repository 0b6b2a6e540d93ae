//! `/api/chat/sessions/*`: a user's playground sessions and the streamed answers in them
//! (R-CHAT-1..5, R-CHAT-8). Another user's session is a 404. The streaming itself lives in
//! [`crate::chat`].
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::{
    chat::{self, Answer, Metrics, ROLE_ASSISTANT, ROLE_USER},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, StreamingUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery, contains_ci},
    state::AppState,
    validation::{self, Checks},
};
use store::entities::{chat_messages, chat_sessions};

/// The title a session has until its first message names it (the column's default).
pub const DEFAULT_TITLE: &str = "新对话";
const TITLE_FROM_MESSAGE_CHARS: usize = 50;
const MAX_TITLE_CHARS: usize = 255;
const MAX_CONTENT_CHARS: usize = 200_000;

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: i32,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<chat_sessions::Model> for SessionView {
    fn from(s: chat_sessions::Model) -> Self {
        Self { id: s.id, title: s.title, created_at: s.created_at, updated_at: s.updated_at }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: i32,
    pub session_id: i32,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The answer's reasoning, if any.
    pub thinking: Option<String>,
    pub model_name: Option<String>,
    pub model_config_id: Option<String>,
    /// True while the answer is still streaming; its text so far is saved at most a second late.
    pub is_streaming: bool,
    /// `stop`, `length`, `stopped` or `error` for answers; `interrupted` when the server stopped
    /// while it streamed (the text is that of the last save); null while streaming.
    pub finish_reason: Option<String>,
    /// As in the `done` event, plus `error: {code, message}` when the answer failed.
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    pub created_at: DateTime<Utc>,
}

impl From<chat_messages::Model> for MessageView {
    fn from(m: chat_messages::Model) -> Self {
        Self {
            id: m.id,
            session_id: m.session_id,
            role: m.role,
            content: m.content,
            thinking: m.thinking,
            model_name: m.model_name,
            model_config_id: m.model_config_id,
            is_streaming: m.is_streaming,
            finish_reason: m.finish_reason,
            metrics: m.metrics.and_then(|raw| serde_json::from_str(&raw).ok()),
            created_at: m.created_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct SessionListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Case-insensitive search in titles.
    pub q: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    pub title: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSessionRequest {
    pub title: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub content: String,
    pub model_config_id: String,
    pub system_prompt_id: Option<i32>,
    /// Typed system prompt; wins over `system_prompt_id`.
    pub system_prompt: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    /// Defaults to the config of the answer being replaced.
    pub model_config_id: Option<String>,
    pub system_prompt_id: Option<i32>,
    pub system_prompt: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageRequest {
    pub content: String,
    pub model_config_id: String,
    pub system_prompt_id: Option<i32>,
    pub system_prompt: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ExportQuery {
    /// `md` (default) or `json`.
    pub format: Option<String>,
}

/// The `meta` event's data.
#[derive(Serialize, ToSchema)]
pub struct MetaEvent {
    pub session_id: i32,
    pub user_message_id: i32,
    pub assistant_message_id: i32,
    /// The model config's display name.
    pub model: String,
    pub model_config_id: String,
}

/// The `done` event's data.
#[derive(Serialize, ToSchema)]
pub struct DoneEvent {
    /// `stop`, `length`, `stopped` or `error`.
    pub finish_reason: String,
    pub metrics: Metrics,
}

fn parse_title(raw: &str) -> Result<String, String> {
    validation::required_text(raw, MAX_TITLE_CHARS)
}

fn parse_content(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        Err("must not be empty".into())
    } else if raw.chars().count() > MAX_CONTENT_CHARS {
        Err(format!("must be at most {MAX_CONTENT_CHARS} characters"))
    } else {
        Ok(raw.to_owned())
    }
}

/// The first words of a message, on one line, as a session title.
fn title_from(content: &str) -> String {
    let line = content.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut title: String = line.chars().take(TITLE_FROM_MESSAGE_CHARS).collect();
    if line.chars().count() > TITLE_FROM_MESSAGE_CHARS {
        title.push('…');
    }
    title
}

async fn find_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<chat_sessions::Model> {
    let session = chat_sessions::Entity::find_by_id(id).one(&state.db).await?.ok_or(ApiError::NotFound)?;
    state.session_owners.put(session.id, session.user_id);
    Some(session).filter(|s| s.user_id == user_id).ok_or(ApiError::NotFound)
}

/// The id of the caller's session `id`, without reading its row when this process knows the
/// session's owner ([`AppState::session_owners`]).
async fn own_session_id(state: &AppState, user_id: i32, id: i32) -> ApiResult<i32> {
    match state.session_owners.get(&id) {
        Some(owner) if owner == user_id => Ok(id),
        Some(_) => Err(ApiError::NotFound),
        None => Ok(find_own(state, user_id, id).await?.id),
    }
}

/// Claims the caller's session for a new answer, so that no second answer streams into it.
fn claim(state: &AppState, session_id: i32) -> ApiResult<chat::Claim> {
    state.answers.claim(session_id).ok_or_else(|| {
        ApiError::conflict("answer_in_progress", "an answer is still streaming in this session; stop it first")
    })
}

/// The session for a new answer, claimed.
async fn claim_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<(chat_sessions::Model, chat::Claim)> {
    let session = find_own(state, user_id, id).await?;
    let claim = claim(state, session.id)?;
    Ok((session, claim))
}

#[utoipa::path(get, path = "/api/chat/sessions", tag = "chat", security(("bearer" = [])), params(SessionListQuery),
    responses((status = 200, body = Page<SessionView>, description = "the caller's sessions, newest first")))]
pub async fn list_sessions(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<SessionListQuery>,
) -> ApiResult<Json<Page<SessionView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = chat_sessions::Entity::find().filter(chat_sessions::Column::UserId.eq(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(contains_ci(chat_sessions::Column::Title, q));
    }
    let paginator = select
        .order_by_desc(chat_sessions::Column::CreatedAt)
        .order_by_desc(chat_sessions::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(SessionView::from).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/chat/sessions", tag = "chat", security(("bearer" = [])), request_body = CreateSessionRequest,
    responses((status = 201, body = SessionView), (status = 422, body = ErrorBody)))]
pub async fn create_session(
    State(state): State<AppState>,
    // As recent as for streaming: a new session is usually the first step of a chat.
    StreamingUser(user): StreamingUser,
    JsonBody(req): JsonBody<CreateSessionRequest>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let title = match req.title.as_deref() {
        None => DEFAULT_TITLE.to_owned(),
        Some(t) => parse_title(t).map_err(|why| ApiError::field("title", why))?,
    };
    let session = state.chat_rows.create_session(user.id, title, state.clock.now()).await?;
    state.session_owners.put(session.id, user.id);
    Ok((StatusCode::CREATED, Json(session.into())))
}

#[utoipa::path(get, path = "/api/chat/sessions/{id}", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
pub async fn get_session(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<SessionView>> {
    Ok(Json(find_own(&state, user.id, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/chat/sessions/{id}", tag = "chat", security(("bearer" = [])), request_body = UpdateSessionRequest,
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_session(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<UpdateSessionRequest>,
) -> ApiResult<Json<SessionView>> {
    let session = find_own(&state, user.id, id).await?;
    let title = parse_title(&req.title).map_err(|why| ApiError::field("title", why))?;
    let mut active = session.into_active_model();
    active.title = Set(title);
    active.updated_at = Set(Some(state.clock.now()));
    Ok(Json(active.update(&state.db).await?.into()))
}

#[utoipa::path(delete, path = "/api/chat/sessions/{id}", tag = "chat", security(("bearer" = [])),
    responses((status = 204, description = "the session and its messages are gone; a streaming answer is stopped first"),
        (status = 404, body = ErrorBody)))]
pub async fn delete_session(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let session = find_own(&state, user.id, id).await?;
    state.answers.stop(session.id).await;
    // Messages go by the foreign key's cascade.
    chat_sessions::Entity::delete_by_id(session.id).exec(&state.db).await?;
    state.session_owners.forget(&session.id);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/chat/sessions/{id}/messages", tag = "chat", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<MessageView>, description = "the session's messages, oldest first"), (status = 404, body = ErrorBody)))]
pub async fn list_messages(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Page<MessageView>>> {
    let (page, page_size) = query.checked()?;
    let session = find_own(&state, user.id, id).await?;
    let paginator = chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session.id))
        .order_by_asc(chat_messages::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(MessageView::from).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/chat/sessions/{id}/messages", tag = "chat", security(("bearer" = [])), request_body = SendMessageRequest,
    responses((status = 200, content_type = "text/event-stream", description = "`meta`, `reasoning`, `content`, `usage`, `done`, `error` events"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "an answer is already streaming in this session"),
        (status = 422, body = ErrorBody)))]
pub async fn send_message(
    State(state): State<AppState>,
    StreamingUser(user): StreamingUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<SendMessageRequest>,
) -> ApiResult<Response> {
    // Independent lookups, in one round trip: this path runs before every first token.
    let (session, model, system) = tokio::join!(
        own_session_id(&state, user.id, id),
        chat::resolve_model(&state, &user, "model_config_id", &req.model_config_id),
        chat::resolve_system_prompt(&state, user.id, req.system_prompt_id, req.system_prompt.as_deref()),
    );
    let session = session?;
    let mut checks = Checks::default();
    let content = checks.check("content", parse_content(&req.content));
    checks.finish()?;
    let (model, system) = (model?, system?);
    let claim = claim(&state, session)?;
    let content = content.expect("checked");

    // The question is saved before anything goes upstream, with the answer's row, in one write
    // that also reads the history (the session is claimed: nothing else changes it). The title
    // is only a proposal: the answer's save names the session only while it still has the
    // default title (`ChatRows::finish`), so the row need not be read for it here.
    let title = Some(title_from(&content));
    let turn = state.chat_rows.start_turn(session, content, &model.config, state.clock.now()).await?;
    let Some(chat::Turn { mut history, question, answer: row }) = turn else {
        // The session was deleted after its owner was looked up (through another instance, or
        // just now): a 404 like any session that does not exist.
        state.session_owners.forget(&session);
        return Err(ApiError::NotFound);
    };
    history.push(question);
    let answer = Answer { row: Some(row), title, ..Answer::to(&history, system.as_deref(), model, claim) };
    Ok(chat::stream(state, answer))
}

#[utoipa::path(post, path = "/api/chat/sessions/{id}/regenerate", tag = "chat", security(("bearer" = [])), request_body = RegenerateRequest,
    responses((status = 200, content_type = "text/event-stream", description = "as for sending a message; the last answer is replaced"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn regenerate(
    State(state): State<AppState>,
    StreamingUser(user): StreamingUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<RegenerateRequest>,
) -> ApiResult<Response> {
    let (session, claim) = claim_own(&state, user.id, id).await?;
    let history = chat::messages(&state.db, session.id).await?;
    let Some(question_at) = history.iter().rposition(|m| m.role == ROLE_USER) else {
        return Err(ApiError::conflict("nothing_to_regenerate", "this session has no message to answer yet"));
    };
    let previous = history[question_at + 1..].iter().find(|m| m.role == ROLE_ASSISTANT);
    let config_id = match (req.model_config_id, previous.and_then(|m| m.model_config_id.clone())) {
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Err(ApiError::field("model_config_id", "required: the last answer names no model config")),
    };
    let model = chat::resolve_model(&state, &user, "model_config_id", &config_id).await?;
    let system = chat::resolve_system_prompt(&state, user.id, req.system_prompt_id, req.system_prompt.as_deref()).await?;
    let question_id = history[question_at].id;
    delete_after(&state, session.id, question_id).await?;
    Ok(chat::stream(state, Answer::to(&history[..=question_at], system.as_deref(), model, claim)))
}

#[utoipa::path(put, path = "/api/chat/sessions/{id}/messages/{message_id}", tag = "chat", security(("bearer" = [])), request_body = EditMessageRequest,
    responses((status = 200, content_type = "text/event-stream", description = "as for sending a message; every later message is replaced"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn edit_message(
    State(state): State<AppState>,
    StreamingUser(user): StreamingUser,
    Path((id, message_id)): Path<(i32, i32)>,
    JsonBody(req): JsonBody<EditMessageRequest>,
) -> ApiResult<Response> {
    let (session, claim) = claim_own(&state, user.id, id).await?;
    let message = chat_messages::Entity::find_by_id(message_id)
        .one(&state.db)
        .await?
        .filter(|m| m.session_id == session.id)
        .ok_or(ApiError::NotFound)?;
    let mut checks = Checks::default();
    let content = checks.check("content", parse_content(&req.content));
    if message.role != ROLE_USER {
        checks.check::<()>("message_id", Err("only the user's own messages can be edited".into()));
    }
    checks.finish()?;
    let model = chat::resolve_model(&state, &user, "model_config_id", &req.model_config_id).await?;
    let system = chat::resolve_system_prompt(&state, user.id, req.system_prompt_id, req.system_prompt.as_deref()).await?;

    let mut active = message.into_active_model();
    active.content = Set(content.expect("checked"));
    let message = active.update(&state.db).await?;
    delete_after(&state, session.id, message.id).await?;
    let history = chat::messages(&state.db, session.id).await?;
    Ok(chat::stream(state, Answer::to(&history, system.as_deref(), model, claim)))
}

/// Deletes the session's messages that came after `message_id`.
async fn delete_after(state: &AppState, session_id: i32, message_id: i32) -> ApiResult<()> {
    chat_messages::Entity::delete_many()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .filter(chat_messages::Column::Id.gt(message_id))
        .exec(&state.db)
        .await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/chat/sessions/{id}/stop", tag = "chat", security(("bearer" = [])),
    responses((status = 204, description = "no answer is streaming any more; a stopped one has been saved with finish reason `stopped`"),
        (status = 404, body = ErrorBody)))]
pub async fn stop(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let session = find_own(&state, user.id, id).await?;
    state.answers.stop(session.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/chat/sessions/{id}/export", tag = "chat", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, description = "an attachment: Markdown or JSON"), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    Query(query): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format = match query.format.as_deref().unwrap_or("md") {
        f @ ("md" | "json") => f,
        _ => return Err(ApiError::field("format", "must be \"md\" or \"json\"")),
    };
    let session = find_own(&state, user.id, id).await?;
    let messages = chat::messages(&state.db, session.id).await?;
    let (body, content_type) = if format == "json" {
        let messages: Vec<MessageView> = messages.into_iter().map(MessageView::from).collect();
        let doc = json!({"session": SessionView::from(session.clone()), "messages": messages});
        (serde_json::to_string_pretty(&doc).expect("export serialises"), "application/json")
    } else {
        (markdown(&session, &messages), "text/markdown; charset=utf-8")
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"session-{}.{format}\"", session.id)).expect("ASCII header"),
    );
    Ok(response)
}

fn markdown(session: &chat_sessions::Model, messages: &[chat_messages::Model]) -> String {
    let mut out = format!("# {}\n\n", session.title);
    for m in messages {
        match m.role.as_str() {
            ROLE_USER => out.push_str("## User\n\n"),
            _ => {
                let model = m.model_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
                out.push_str(&format!("## Assistant{model}\n\n"));
                if let Some(thinking) = m.thinking.as_deref().filter(|t| !t.is_empty()) {
                    out.push_str("<details><summary>Reasoning</summary>\n\n");
                    out.push_str(thinking.trim_end());
                    out.push_str("\n\n</details>\n\n");
                }
            }
        }
        out.push_str(m.content.trim_end());
        out.push_str("\n\n");
        if let Some(reason) = m.finish_reason.as_deref().filter(|r| *r == "stopped" || *r == "error") {
            out.push_str(&format!("_({reason})_\n\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_words() {
        assert_eq!(title_from("  Hello\n\nworld  "), "Hello world");
        let long = "word ".repeat(30);
        let title = title_from(&long);
        assert_eq!(title.chars().count(), TITLE_FROM_MESSAGE_CHARS + 1);
        assert!(title.ends_with('…'));
        assert_eq!(title_from(&"字".repeat(60)).chars().count(), 51);
    }
}
