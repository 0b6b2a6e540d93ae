//! `/api/system-prompts/*` and `/api/test-prompts/*` (R-CHAT-7).
//!
//! A user sees their own prompts and the built-in (`is_system`) system prompts; anyone else's
//! prompt is a 404. Built-in prompts are read-only for non-admins (403) and managed by admins.
use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
    Set, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::tokens::ROLE_ADMIN,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery, contains_ci},
    state::AppState,
    validation::{self, Checks},
};
use store::entities::{system_prompts, test_prompts, users};

const FORMAT_TYPES: [&str; 3] = ["openai", "ollama", "custom"];
const DEFAULT_CATEGORY: &str = "general";

#[derive(Serialize, ToSchema)]
pub struct SystemPromptView {
    pub id: i32,
    pub name: String,
    pub content: String,
    pub description: Option<String>,
    /// `openai`, `ollama` or `custom`.
    pub format_type: String,
    pub category: String,
    pub is_default: bool,
    /// Built in: visible to everyone, changed only by admins.
    pub is_system: bool,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<system_prompts::Model> for SystemPromptView {
    fn from(p: system_prompts::Model) -> Self {
        Self {
            id: p.id,
            name: p.name,
            content: p.content,
            description: p.description,
            format_type: p.format_type,
            category: p.category,
            is_default: p.is_default,
            is_system: p.is_system,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestPromptView {
    pub id: i32,
    pub title: String,
    pub content: String,
    pub category: Option<String>,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<test_prompts::Model> for TestPromptView {
    fn from(p: test_prompts::Model) -> Self {
        Self {
            id: p.id,
            title: p.title,
            content: p.content,
            category: p.category,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct PromptListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Case-insensitive search in names (titles) and descriptions.
    pub q: Option<String>,
    /// Exact category.
    pub category: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPromptInput {
    pub name: String,
    pub content: String,
    pub description: Option<String>,
    /// `openai` (default), `ollama` or `custom`.
    pub format_type: Option<String>,
    /// Default `general`.
    pub category: Option<String>,
    pub is_default: Option<bool>,
    /// Admins only.
    pub is_system: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPromptPatch {
    pub name: Option<String>,
    pub content: Option<String>,
    pub description: Option<String>,
    pub format_type: Option<String>,
    pub category: Option<String>,
    pub is_default: Option<bool>,
    /// Admins only.
    pub is_system: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPromptInput {
    pub title: String,
    pub content: String,
    pub category: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestPromptPatch {
    pub title: Option<String>,
    pub content: Option<String>,
    /// `""` clears it.
    pub category: Option<String>,
}

fn text(raw: &str, max: usize) -> Result<String, String> {
    validation::required_text(raw, max)
}

fn parse_name(raw: &str) -> Result<String, String> {
    text(raw, 255)
}

fn parse_content(raw: &str) -> Result<String, String> {
    text(raw, 100_000)
}

fn parse_category(raw: &str) -> Result<String, String> {
    text(raw, 50)
}

fn parse_format_type(raw: &str) -> Result<String, String> {
    if FORMAT_TYPES.contains(&raw) { Ok(raw.to_owned()) } else { Err("must be \"openai\", \"ollama\" or \"custom\"".into()) }
}

fn parse_description(raw: &str) -> Result<Option<String>, String> {
    validation::optional_text(raw, validation::DESCRIPTION_MAX)
}

fn is_admin(user: &users::Model) -> bool {
    user.role == ROLE_ADMIN
}

fn admin_only() -> ApiError {
    ApiError::Denied { code: "built_in_prompt", message: "built-in system prompts can only be changed by an admin".into() }
}

/// Own prompts and built-in ones.
fn visible_system(user_id: i32) -> Condition {
    Condition::any().add(system_prompts::Column::IsSystem.eq(true)).add(system_prompts::Column::CreatedBy.eq(user_id))
}

async fn find_visible_system(state: &AppState, user_id: i32, id: i32) -> ApiResult<system_prompts::Model> {
    system_prompts::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|p| p.is_system || p.created_by == Some(user_id))
        .ok_or(ApiError::NotFound)
}

/// Making a prompt the default clears the flag on the others of its kind (the user's own, or
/// the built-in ones).
async fn clear_other_defaults(state: &AppState, prompt: &system_prompts::Model) -> ApiResult<()> {
    let scope = if prompt.is_system {
        Condition::all().add(system_prompts::Column::IsSystem.eq(true))
    } else {
        Condition::all().add(system_prompts::Column::IsSystem.eq(false)).add(system_prompts::Column::CreatedBy.eq(prompt.created_by))
    };
    system_prompts::Entity::update_many()
        .col_expr(system_prompts::Column::IsDefault, Expr::value(false))
        .filter(scope)
        .filter(system_prompts::Column::Id.ne(prompt.id))
        .exec(&state.db)
        .await?;
    Ok(())
}

#[utoipa::path(get, path = "/api/system-prompts", tag = "prompts", security(("bearer" = [])), params(PromptListQuery),
    responses((status = 200, body = Page<SystemPromptView>, description = "built-in prompts first, then the caller's own, newest first")))]
pub async fn list_system(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<PromptListQuery>,
) -> ApiResult<Json<Page<SystemPromptView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = system_prompts::Entity::find().filter(visible_system(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(
            Condition::any()
                .add(contains_ci(system_prompts::Column::Name, q))
                .add(contains_ci(system_prompts::Column::Description, q)),
        );
    }
    if let Some(category) = query.category.as_deref().filter(|c| !c.is_empty()) {
        select = select.filter(system_prompts::Column::Category.eq(category));
    }
    let paginator = select
        .order_by_desc(system_prompts::Column::IsSystem)
        .order_by_desc(system_prompts::Column::CreatedAt)
        .order_by_desc(system_prompts::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(Into::into).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/system-prompts", tag = "prompts", security(("bearer" = [])), request_body = SystemPromptInput,
    responses((status = 201, body = SystemPromptView), (status = 403, body = ErrorBody, description = "`is_system` by a non-admin"),
        (status = 422, body = ErrorBody)))]
pub async fn create_system(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<SystemPromptInput>,
) -> ApiResult<(StatusCode, Json<SystemPromptView>)> {
    let is_system = req.is_system.unwrap_or(false);
    if is_system && !is_admin(&user) {
        return Err(admin_only());
    }
    let mut checks = Checks::default();
    let name = checks.check("name", parse_name(&req.name));
    let content = checks.check("content", parse_content(&req.content));
    let description = checks.check("description", parse_description(req.description.as_deref().unwrap_or("")));
    let format_type = checks.check("format_type", parse_format_type(req.format_type.as_deref().unwrap_or("openai")));
    let category = checks.check("category", parse_category(req.category.as_deref().unwrap_or(DEFAULT_CATEGORY)));
    checks.finish()?;
    let prompt = system_prompts::ActiveModel {
        name: Set(name.expect("checked")),
        content: Set(content.expect("checked")),
        description: Set(description.expect("checked")),
        format_type: Set(format_type.expect("checked")),
        category: Set(category.expect("checked")),
        is_default: Set(req.is_default.unwrap_or(false)),
        is_system: Set(is_system),
        created_by: Set(Some(user.id)),
        created_at: Set(state.clock.now()),
        updated_at: Set(None),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    if prompt.is_default {
        clear_other_defaults(&state, &prompt).await?;
    }
    Ok((StatusCode::CREATED, Json(prompt.into())))
}

#[utoipa::path(get, path = "/api/system-prompts/{id}", tag = "prompts", security(("bearer" = [])),
    responses((status = 200, body = SystemPromptView), (status = 404, body = ErrorBody)))]
pub async fn get_system(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<SystemPromptView>> {
    Ok(Json(find_visible_system(&state, user.id, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/system-prompts/{id}", tag = "prompts", security(("bearer" = [])), request_body = SystemPromptPatch,
    responses((status = 200, body = SystemPromptView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn update_system(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<SystemPromptPatch>,
) -> ApiResult<Json<SystemPromptView>> {
    let prompt = find_visible_system(&state, user.id, id).await?;
    if (prompt.is_system || req.is_system == Some(true)) && !is_admin(&user) {
        return Err(admin_only());
    }
    let mut checks = Checks::default();
    let name = req.name.as_deref().and_then(|v| checks.check("name", parse_name(v)));
    let content = req.content.as_deref().and_then(|v| checks.check("content", parse_content(v)));
    let description = req.description.as_deref().and_then(|v| checks.check("description", parse_description(v)));
    let format_type = req.format_type.as_deref().and_then(|v| checks.check("format_type", parse_format_type(v)));
    let category = req.category.as_deref().and_then(|v| checks.check("category", parse_category(v)));
    checks.finish()?;
    let mut active = prompt.into_active_model();
    if let Some(v) = name {
        active.name = Set(v);
    }
    if let Some(v) = content {
        active.content = Set(v);
    }
    if let Some(v) = description {
        active.description = Set(v);
    }
    if let Some(v) = format_type {
        active.format_type = Set(v);
    }
    if let Some(v) = category {
        active.category = Set(v);
    }
    if let Some(v) = req.is_default {
        active.is_default = Set(v);
    }
    if let Some(v) = req.is_system {
        active.is_system = Set(v);
    }
    active.updated_at = Set(Some(state.clock.now()));
    let prompt = active.update(&state.db).await?;
    if req.is_default == Some(true) {
        clear_other_defaults(&state, &prompt).await?;
    }
    Ok(Json(prompt.into()))
}

#[utoipa::path(delete, path = "/api/system-prompts/{id}", tag = "prompts", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_system(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let prompt = find_visible_system(&state, user.id, id).await?;
    if prompt.is_system && !is_admin(&user) {
        return Err(admin_only());
    }
    system_prompts::Entity::delete_by_id(prompt.id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn find_own_test(state: &AppState, user_id: i32, id: i32) -> ApiResult<test_prompts::Model> {
    test_prompts::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|p| p.created_by == Some(user_id))
        .ok_or(ApiError::NotFound)
}

/// A test prompt the caller may use (their own), for comparisons.
pub async fn find_test_prompt(state: &AppState, user_id: i32, id: i32) -> ApiResult<Option<test_prompts::Model>> {
    Ok(test_prompts::Entity::find_by_id(id).one(&state.db).await?.filter(|p| p.created_by == Some(user_id)))
}

#[utoipa::path(get, path = "/api/test-prompts", tag = "prompts", security(("bearer" = [])), params(PromptListQuery),
    responses((status = 200, body = Page<TestPromptView>, description = "the caller's own, newest first")))]
pub async fn list_test(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<PromptListQuery>,
) -> ApiResult<Json<Page<TestPromptView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = test_prompts::Entity::find().filter(test_prompts::Column::CreatedBy.eq(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(
            Condition::any().add(contains_ci(test_prompts::Column::Title, q)).add(contains_ci(test_prompts::Column::Content, q)),
        );
    }
    if let Some(category) = query.category.as_deref().filter(|c| !c.is_empty()) {
        select = select.filter(test_prompts::Column::Category.eq(category));
    }
    let paginator = select
        .order_by_desc(test_prompts::Column::CreatedAt)
        .order_by_desc(test_prompts::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(Into::into).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/test-prompts", tag = "prompts", security(("bearer" = [])), request_body = TestPromptInput,
    responses((status = 201, body = TestPromptView), (status = 422, body = ErrorBody)))]
pub async fn create_test(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<TestPromptInput>,
) -> ApiResult<(StatusCode, Json<TestPromptView>)> {
    let mut checks = Checks::default();
    let title = checks.check("title", parse_name(&req.title));
    let content = checks.check("content", parse_content(&req.content));
    let category = match req.category.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) => checks.check("category", parse_category(c)),
    };
    checks.finish()?;
    let prompt = test_prompts::ActiveModel {
        title: Set(title.expect("checked")),
        content: Set(content.expect("checked")),
        category: Set(category),
        created_by: Set(Some(user.id)),
        created_at: Set(state.clock.now()),
        updated_at: Set(None),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    Ok((StatusCode::CREATED, Json(prompt.into())))
}

#[utoipa::path(get, path = "/api/test-prompts/{id}", tag = "prompts", security(("bearer" = [])),
    responses((status = 200, body = TestPromptView), (status = 404, body = ErrorBody)))]
pub async fn get_test(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<TestPromptView>> {
    Ok(Json(find_own_test(&state, user.id, id).await?.into()))
}

#[utoipa::path(patch, path = "/api/test-prompts/{id}", tag = "prompts", security(("bearer" = [])), request_body = TestPromptPatch,
    responses((status = 200, body = TestPromptView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_test(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<TestPromptPatch>,
) -> ApiResult<Json<TestPromptView>> {
    let prompt = find_own_test(&state, user.id, id).await?;
    let mut checks = Checks::default();
    let title = req.title.as_deref().and_then(|v| checks.check("title", parse_name(v)));
    let content = req.content.as_deref().and_then(|v| checks.check("content", parse_content(v)));
    let category = match req.category.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(c) => checks.check("category", parse_category(c)).map(Some),
    };
    checks.finish()?;
    let mut active = prompt.into_active_model();
    if let Some(v) = title {
        active.title = Set(v);
    }
    if let Some(v) = content {
        active.content = Set(v);
    }
    if let Some(v) = category {
        active.category = Set(v);
    }
    active.updated_at = Set(Some(state.clock.now()));
    Ok(Json(active.update(&state.db).await?.into()))
}

#[utoipa::path(delete, path = "/api/test-prompts/{id}", tag = "prompts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_test(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let prompt = find_own_test(&state, user.id, id).await?;
    test_prompts::Entity::delete_by_id(prompt.id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}
