//! `/api/providers/*`: provider CRUD, test connection, model-list sync and the model list.
//! Everything but the two list routes needs `AdminUser`.
use std::time::Instant;

use axum::{Json, extract::State, http::StatusCode};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AdminUser, AuthUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery},
    providers::{self, ProviderModelView, ProviderView, STATUS_ENABLED, SyncReport},
    local_models, runtime_settings,
    state::AppState,
    validation::Checks,
};
use store::entities::{model_configs, model_providers, provider_models};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    /// `[a-z0-9_-]{1,100}`; made from the name when absent.
    pub id: Option<String>,
    pub name: String,
    /// `openai`, `anthropic` or `ollama` (`local` is reserved for the built-in engine).
    pub kind: String,
    pub api_url: String,
    pub api_key: Option<String>,
    pub description: Option<String>,
    pub icon_url: Option<String>,
    /// 1 (default) or 0.
    pub status: Option<i32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProviderRequest {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub api_url: Option<String>,
    /// A new key; `""` removes the stored key; absent keeps it.
    pub api_key: Option<String>,
    /// `""` clears it.
    pub description: Option<String>,
    /// `""` clears it.
    pub icon_url: Option<String>,
    pub status: Option<i32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelRequest {
    /// 1 enabled, 0 disabled.
    pub status: i32,
}

#[derive(Serialize, ToSchema)]
pub struct TestReport {
    pub ok: bool,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_seen: Option<usize>,
    /// The provider's own error text (HTTP status and message), when `ok` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/api/providers", tag = "providers", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ProviderView>, description = "users see enabled providers, without the masked key; admins all")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Page<ProviderView>>> {
    let (page, page_size) = query.checked()?;
    let is_admin = user.role == crate::auth::tokens::ROLE_ADMIN;
    let mut select = model_providers::Entity::find();
    if !is_admin {
        select = select.filter(model_providers::Column::Status.eq(STATUS_ENABLED));
    }
    let paginator = select.order_by_asc(model_providers::Column::Id).paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator
        .fetch_page(page - 1)
        .await?
        .into_iter()
        .map(|p| {
            let mut view = ProviderView::from(p);
            // Even the masked key is the admins' business.
            if !is_admin {
                view.api_key_masked = None;
            }
            view
        })
        .collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/providers", tag = "providers", security(("bearer" = [])), request_body = CreateProviderRequest,
    responses((status = 201, body = ProviderView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "names each bad field; `api_url` says why an address is refused")))]
pub async fn create(
    State(state): State<AppState>,
    _admin: AdminUser,
    JsonBody(req): JsonBody<CreateProviderRequest>,
) -> ApiResult<(StatusCode, Json<ProviderView>)> {
    let mut checks = Checks::default();
    let explicit_id = req.id.as_deref().map(|id| checks.check("id", providers::parse_id(id.trim())));
    let name = checks.check("name", providers::parse_name(&req.name));
    let kind = checks.check("kind", providers::parse_kind(&req.kind));
    let url = checks.check("api_url", providers::parse_api_url(&req.api_url));
    let api_key = checks.check("api_key", providers::parse_api_key(req.api_key.as_deref().unwrap_or("")));
    let description = checks.check("description", providers::parse_description(req.description.as_deref()));
    let icon_url = checks.check("icon_url", providers::parse_icon_url(req.icon_url.as_deref()));
    let status = checks.check("status", providers::parse_status(req.status.unwrap_or(STATUS_ENABLED)));
    if let Some(url) = &url {
        let allow_private = runtime_settings::load(&state).await?.allow_private_provider_urls;
        checks.check("api_url", providers::check_url_policy(url, allow_private).await);
    }
    checks.finish()?;
    let name = name.expect("checked");

    let id = match explicit_id.flatten() {
        Some(id) => {
            if model_providers::Entity::find_by_id(id.clone()).one(&state.db).await?.is_some() {
                return Err(provider_exists(&id));
            }
            id
        }
        None => free_id(&state, &providers::slugify(&name)).await?,
    };
    let (api_key_encrypted, api_key_hint) = match api_key.flatten() {
        Some(key) => {
            let (sealed, hint) = providers::seal_key(&state.cipher, &id, &key);
            (Some(sealed), Some(hint))
        }
        None => (None, None),
    };
    let provider = model_providers::ActiveModel {
        id: Set(id.clone()),
        name: Set(name),
        kind: Set(kind.expect("checked").as_str().to_owned()),
        api_url: Set(providers::normalise_api_url(&req.api_url)),
        api_key_encrypted: Set(api_key_encrypted),
        api_key_hint: Set(api_key_hint),
        description: Set(description.flatten()),
        icon_url: Set(icon_url.flatten()),
        status: Set(status.expect("checked")),
        created_at: Set(state.clock.now()),
        updated_at: Set(None),
    }
    .insert(&state.db)
    .await
    .map_err(|e| if store::is_unique_violation(&e) { provider_exists(&id) } else { e.into() })?;
    Ok((StatusCode::CREATED, Json(provider.into())))
}

/// `slug`, or `slug-2`, `slug-3`… when taken: a generated id never collides with a saved one.
async fn free_id(state: &AppState, slug: &str) -> ApiResult<String> {
    let taken: std::collections::HashSet<String> = model_providers::Entity::find()
        .filter(model_providers::Column::Id.starts_with(slug))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let id = std::iter::once(slug.to_owned())
        .chain((2..).map(|n| format!("{slug}-{n}")))
        .find(|candidate| !taken.contains(candidate))
        .expect("an unbounded sequence has a free id");
    Ok(id)
}

fn provider_exists(id: &str) -> ApiError {
    ApiError::conflict("provider_exists", format!("a provider with id {id:?} already exists"))
}

async fn find_provider(state: &AppState, id: &str) -> ApiResult<model_providers::Model> {
    model_providers::Entity::find_by_id(id.to_owned()).one(&state.db).await?.ok_or(ApiError::NotFound)
}

#[utoipa::path(get, path = "/api/providers/{id}", tag = "providers", security(("bearer" = [])),
    responses((status = 200, body = ProviderView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<String>) -> ApiResult<Json<ProviderView>> {
    Ok(Json(find_provider(&state, &id).await?.into()))
}

#[utoipa::path(patch, path = "/api/providers/{id}", tag = "providers", security(("bearer" = [])), request_body = UpdateProviderRequest,
    responses((status = 200, body = ProviderView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateProviderRequest>,
) -> ApiResult<Json<ProviderView>> {
    let mut checks = Checks::default();
    let is_local = id == local_models::PROVIDER_ID;
    let name = req.name.as_deref().map(|n| checks.check("name", providers::parse_name(n)));
    // The built-in provider's kind, URL and key are not parsed: they cannot change (below).
    let kind = req.kind.as_deref().filter(|_| !is_local).map(|k| checks.check("kind", providers::parse_kind(k)));
    let url = req.api_url.as_deref().filter(|_| !is_local).map(|u| checks.check("api_url", providers::parse_api_url(u)));
    let api_key = req.api_key.as_deref().filter(|_| !is_local).map(|k| checks.check("api_key", providers::parse_api_key(k)));
    let description = req.description.as_deref().map(|d| checks.check("description", providers::parse_description(Some(d))));
    let icon_url = req.icon_url.as_deref().map(|u| checks.check("icon_url", providers::parse_icon_url(Some(u))));
    let status = req.status.map(|s| checks.check("status", providers::parse_status(s)));
    if is_local {
        // The engine is in-process: there is nothing to point elsewhere or authenticate.
        // Forms send every field back: only a different value is refused.
        let changes = [
            ("kind", req.kind.as_deref().is_some_and(|k| k != local_models::PROVIDER_ID)),
            ("api_url", req.api_url.as_deref().is_some_and(|u| u.trim() != local_models::PROVIDER_URL)),
            ("api_key", req.api_key.as_deref().is_some_and(|k| !k.is_empty())),
        ];
        for (field, given) in changes {
            if given {
                checks.check::<()>(field, Err("the built-in local provider cannot change this".into()));
            }
        }
    }
    if let Some(Some(url)) = &url {
        let allow_private = runtime_settings::load(&state).await?.allow_private_provider_urls;
        checks.check("api_url", providers::check_url_policy(url, allow_private).await);
    }
    checks.finish()?;

    let txn = state.db.begin().await?;
    let provider = model_providers::Entity::find_by_id(id.clone()).one(&txn).await?.ok_or(ApiError::NotFound)?;
    let mut active = provider.into_active_model();
    if let Some(name) = name.flatten() {
        active.name = Set(name);
    }
    if let Some(kind) = kind.flatten() {
        active.kind = Set(kind.as_str().to_owned());
    }
    if let Some(api_url) = req.api_url.as_deref().filter(|_| !is_local) {
        active.api_url = Set(providers::normalise_api_url(api_url));
    }
    match api_key.flatten() {
        None => {}
        Some(None) => {
            active.api_key_encrypted = Set(None);
            active.api_key_hint = Set(None);
        }
        Some(Some(key)) => {
            let (sealed, hint) = providers::seal_key(&state.cipher, &id, &key);
            active.api_key_encrypted = Set(Some(sealed));
            active.api_key_hint = Set(Some(hint));
        }
    }
    if let Some(description) = description {
        active.description = Set(description.flatten());
    }
    if let Some(icon_url) = icon_url {
        active.icon_url = Set(icon_url.flatten());
    }
    if let Some(status) = status.flatten() {
        active.status = Set(status);
    }
    active.updated_at = Set(Some(state.clock.now()));
    let provider = active.update(&txn).await?;
    // Configs carry copies of the provider's name and URL; keep them in step.
    model_configs::Entity::update_many()
        .col_expr(model_configs::Column::ProviderName, Expr::value(provider.name.clone()))
        .col_expr(model_configs::Column::Endpoint, Expr::value(provider.api_url.clone()))
        .filter(model_configs::Column::ProviderId.eq(provider.id.clone()))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    crate::routes::model_configs::forget_in_use(&state);
    Ok(Json(provider.into()))
}

#[utoipa::path(delete, path = "/api/providers/{id}", tag = "providers", security(("bearer" = [])),
    responses((status = 204, description = "the provider, its models and the model configs using it are gone"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if id == local_models::PROVIDER_ID {
        return Err(ApiError::conflict("built_in_provider", "the built-in local provider cannot be deleted; disable it instead"));
    }
    let txn = state.db.begin().await?;
    model_providers::Entity::find_by_id(id.clone()).one(&txn).await?.ok_or(ApiError::NotFound)?;
    // Explicit rather than relying on ON DELETE CASCADE, which SQLite applies only on
    // connections that enabled foreign keys.
    model_configs::Entity::delete_many().filter(model_configs::Column::ProviderId.eq(id.clone())).exec(&txn).await?;
    provider_models::Entity::delete_many().filter(provider_models::Column::ProviderId.eq(id.clone())).exec(&txn).await?;
    model_providers::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    crate::routes::model_configs::forget_in_use(&state);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/providers/{id}/test", tag = "providers", security(("bearer" = [])),
    responses((status = 200, body = TestReport, description = "`ok: false` with the provider's error text when the call failed"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn test(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<String>) -> ApiResult<Json<TestReport>> {
    let provider = find_provider(&state, &id).await?;
    let client = client_for(&state, &provider).await?;
    let started = Instant::now();
    let report = match client.ping().await {
        Ok(ping) => TestReport { ok: true, latency_ms: ping.latency_ms, models_seen: Some(ping.models_seen), error: None },
        Err(err) => TestReport {
            ok: false,
            latency_ms: started.elapsed().as_millis() as u64,
            models_seen: None,
            error: Some(err.to_string()),
        },
    };
    Ok(Json(report))
}

async fn client_for(state: &AppState, provider: &model_providers::Model) -> ApiResult<std::sync::Arc<dyn llm::ChatProvider>> {
    providers::client(state, provider, None).await
}

#[utoipa::path(post, path = "/api/providers/{id}/sync", tag = "providers", security(("bearer" = [])),
    responses((status = 200, body = SyncReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "`upstream_error` with the provider's message; nothing changed")))]
pub async fn sync(State(state): State<AppState>, _admin: AdminUser, Path(id): Path<String>) -> ApiResult<Json<SyncReport>> {
    let provider = find_provider(&state, &id).await?;
    let client = client_for(&state, &provider).await?;
    let remote = client.list_models().await.map_err(|e| ApiError::Upstream(e.to_string()))?;
    Ok(Json(providers::apply_model_list(&state, &provider.id, remote).await?))
}

#[utoipa::path(get, path = "/api/providers/{id}/models", tag = "providers", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ProviderModelView>, description = "users see enabled, available models of enabled providers; admins all"),
        (status = 404, body = ErrorBody)))]
pub async fn list_models(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Page<ProviderModelView>>> {
    let (page, page_size) = query.checked()?;
    let is_admin = user.role == crate::auth::tokens::ROLE_ADMIN;
    let provider = find_provider(&state, &id).await?;
    if !is_admin && provider.status != STATUS_ENABLED {
        return Err(ApiError::NotFound);
    }
    let mut select = provider_models::Entity::find().filter(provider_models::Column::ProviderId.eq(id));
    if !is_admin {
        select = select
            .filter(provider_models::Column::Status.eq(STATUS_ENABLED))
            .filter(provider_models::Column::Available.eq(true));
    }
    let paginator = select.order_by_asc(provider_models::Column::ModelId).paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(ProviderModelView::from).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

/// The model id may contain `/` and `:` (`meta-llama/Llama-3:8b`): the route takes the rest of
/// the path, percent-encoded or not.
#[utoipa::path(patch, path = "/api/providers/{id}/models/{model_id}", tag = "providers", security(("bearer" = [])),
    request_body = UpdateModelRequest,
    responses((status = 200, body = ProviderModelView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_model(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((id, model_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateModelRequest>,
) -> ApiResult<Json<ProviderModelView>> {
    let status = providers::parse_status(req.status).map_err(|why| ApiError::field("status", why))?;
    let model = provider_models::Entity::find()
        .filter(provider_models::Column::ProviderId.eq(id))
        .filter(provider_models::Column::ModelId.eq(model_id))
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut active = model.into_active_model();
    active.status = Set(status);
    active.updated_at = Set(Some(state.clock.now()));
    let model = active.update(&state.db).await?;
    crate::routes::model_configs::forget_in_use(&state);
    Ok(Json(model.into()))
}
