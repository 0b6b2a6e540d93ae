//! `/api/model-configs/*`: a user's own parameters for calling one provider model (R-PROV-4).
//! Another user's config is a 404, never a 403: its existence is not disclosed.
use std::collections::{HashMap, HashSet};

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, JsonBody, Path, Query},
    local_models,
    pagination::{Page, PageQuery},
    providers::{STATUS_ENABLED, parse_status},
    state::AppState,
    validation::{self, Checks},
};
use store::entities::{model_configs, model_providers, provider_models};

pub const DEFAULT_TEMPERATURE: f64 = 0.7;
pub const DEFAULT_MAX_TOKENS: i32 = 8192;
pub const DEFAULT_TOP_P: f64 = 0.9;
pub const DEFAULT_TOP_K: f64 = 0.0;

#[derive(Serialize, ToSchema, Debug)]
pub struct ModelConfigView {
    pub id: String,
    pub provider_id: String,
    pub provider_name: String,
    pub endpoint: String,
    pub model_id: String,
    pub model_name: String,
    /// `text` or `vision`.
    #[serde(rename = "type")]
    pub r#type: String,
    pub temperature: f64,
    pub max_tokens: i32,
    pub top_p: f64,
    pub top_k: f64,
    pub status: i32,
    /// False when the config, its provider or its model is disabled, or the provider no longer
    /// lists the model: such a config cannot be used to chat.
    pub usable: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl ModelConfigView {
    fn new(c: model_configs::Model, usable: bool) -> Self {
        Self {
            usable: usable && c.status == STATUS_ENABLED,
            id: c.id,
            provider_id: c.provider_id,
            provider_name: c.provider_name,
            endpoint: c.endpoint,
            model_id: c.model_id,
            model_name: c.model_name,
            r#type: c.r#type,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            top_p: c.top_p,
            top_k: c.top_k,
            status: c.status,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelConfigRequest {
    pub provider_id: String,
    pub model_id: String,
    /// Defaults to the provider's name for the model.
    pub model_name: Option<String>,
    /// `text` or `vision`; defaults from the model's vision flag.
    #[serde(rename = "type")]
    pub r#type: Option<String>,
    /// 0–2, default 0.7.
    pub temperature: Option<f64>,
    /// ≥ 1, default 8192.
    pub max_tokens: Option<f64>,
    /// 0–1, default 0.9.
    pub top_p: Option<f64>,
    /// ≥ 0 (0 = off), default 0.
    pub top_k: Option<f64>,
    pub status: Option<i32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModelConfigRequest {
    pub model_name: Option<String>,
    #[serde(rename = "type")]
    pub r#type: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub status: Option<i32>,
}

/// Sampling parameters checked together, so one answer names every bad field.
struct Params {
    model_name: Option<String>,
    r#type: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i32>,
    top_p: Option<f64>,
    top_k: Option<f64>,
    status: Option<i32>,
}

impl Params {
    #[allow(clippy::too_many_arguments)]
    fn check(
        checks: &mut Checks,
        model_name: Option<&str>,
        r#type: Option<&str>,
        temperature: Option<f64>,
        max_tokens: Option<f64>,
        top_p: Option<f64>,
        top_k: Option<f64>,
        status: Option<i32>,
    ) -> Self {
        Self {
            model_name: model_name.and_then(|n| checks.check("model_name", parse_model_name(n))),
            r#type: r#type.and_then(|t| checks.check("type", parse_type(t))),
            temperature: temperature.and_then(|t| checks.check("temperature", in_range(t, 0.0, 2.0))),
            max_tokens: max_tokens.and_then(|m| checks.check("max_tokens", parse_max_tokens(m))),
            top_p: top_p.and_then(|p| checks.check("top_p", in_range(p, 0.0, 1.0))),
            top_k: top_k.and_then(|k| checks.check("top_k", parse_top_k(k))),
            status: status.and_then(|s| checks.check("status", parse_status(s))),
        }
    }
}

fn parse_model_name(raw: &str) -> Result<String, String> {
    validation::required_text(raw, 200)
}

fn parse_type(raw: &str) -> Result<String, String> {
    match raw {
        "text" | "vision" => Ok(raw.to_owned()),
        _ => Err("must be \"text\" or \"vision\"".into()),
    }
}

fn in_range(value: f64, min: f64, max: f64) -> Result<f64, String> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(format!("must be between {min} and {max}")) }
}

fn parse_max_tokens(value: f64) -> Result<i32, String> {
    if value.fract() == 0.0 && value >= 1.0 && value <= f64::from(i32::MAX) {
        Ok(value as i32)
    } else {
        Err(format!("must be a whole number from 1 to {}", i32::MAX))
    }
}

fn parse_top_k(value: f64) -> Result<f64, String> {
    if value.fract() == 0.0 && (0.0..=1_000_000.0).contains(&value) {
        Ok(value)
    } else {
        Err("must be a whole number, 0 or more (0 turns it off)".into())
    }
}

/// Whether a config on this provider and provider model can be used to chat now: provider
/// enabled, model enabled and still listed by the provider.
fn usable(provider: &model_providers::Model, model: &provider_models::Model) -> bool {
    provider.status == STATUS_ENABLED && model.status == STATUS_ENABLED && model.available
}

/// The `provider_models` row id of a provider's model.
fn provider_model_id(provider_id: &str, model_id: &str) -> String {
    format!("{provider_id}:{model_id}")
}

/// The (provider, model) pairs of `configs` that can be used now.
async fn usability(
    db: &impl ConnectionTrait,
    configs: &[model_configs::Model],
) -> Result<HashSet<(String, String)>, ApiError> {
    let provider_ids: Vec<String> =
        configs.iter().map(|c| c.provider_id.clone()).collect::<HashSet<_>>().into_iter().collect();
    if provider_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let providers: HashMap<String, model_providers::Model> = model_providers::Entity::find()
        .filter(model_providers::Column::Id.is_in(provider_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let model_row_ids: Vec<String> = configs
        .iter()
        .filter(|c| providers.contains_key(&c.provider_id))
        .map(|c| provider_model_id(&c.provider_id, &c.model_id))
        .collect();
    if model_row_ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(provider_models::Entity::find()
        .filter(provider_models::Column::Id.is_in(model_row_ids))
        .all(db)
        .await?
        .into_iter()
        .filter(|m| providers.get(&m.provider_id).is_some_and(|p| usable(p, m)))
        .map(|m| (m.provider_id, m.model_id))
        .collect())
}

async fn views(db: &impl ConnectionTrait, configs: Vec<model_configs::Model>) -> Result<Vec<ModelConfigView>, ApiError> {
    let usable = usability(db, &configs).await?;
    Ok(configs
        .into_iter()
        .map(|c| {
            let ok = usable.contains(&(c.provider_id.clone(), c.model_id.clone()));
            ModelConfigView::new(c, ok)
        })
        .collect())
}

pub(crate) async fn view_of(db: &impl ConnectionTrait, config: model_configs::Model) -> Result<ModelConfigView, ApiError> {
    view(db, config).await
}

async fn view(db: &impl ConnectionTrait, config: model_configs::Model) -> Result<ModelConfigView, ApiError> {
    Ok(views(db, vec![config]).await?.pop().expect("one config in, one view out"))
}

/// One of the caller's configs with its provider, as a chat needs them.
#[derive(Clone)]
pub struct ConfigInUse {
    pub config: model_configs::Model,
    /// `None` once the provider is deleted.
    pub provider: Option<model_providers::Model>,
    /// Whether it can be used to chat now.
    pub usable: bool,
}

/// The caller's own config with its provider and whether it can be used to chat now; `None` for
/// an unknown id or someone else's config. Two round trips: this runs before every answer.
pub(crate) async fn find_own_in_use(state: &AppState, user_id: i32, id: &str) -> ApiResult<Option<ConfigInUse>> {
    let Some(config) = model_configs::Entity::find_by_id(id.to_owned()).one(&state.db).await?.filter(|c| c.user_id == user_id)
    else {
        return Ok(None);
    };
    let (provider, model) = tokio::try_join!(
        model_providers::Entity::find_by_id(config.provider_id.clone()).one(&state.db),
        provider_models::Entity::find_by_id(provider_model_id(&config.provider_id, &config.model_id)).one(&state.db),
    )?;
    let usable = config.status == STATUS_ENABLED && matches!((&provider, &model), (Some(p), Some(m)) if usable(p, m));
    Ok(Some(ConfigInUse { config, provider, usable }))
}

/// How long a chat trusts its copy of a resolved config (see [`InUseCache`]).
const IN_USE_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Configs as chats last resolved them, by (user id, config id): three reads fewer before every
/// first token. Every write to a config, a provider or a provider's models in this process
/// clears it ([`forget_in_use`]); another instance's writes are seen within [`IN_USE_CACHE_FOR`].
pub type InUseCache = crate::recent::Recent<(i32, String), ConfigInUse>;

pub fn in_use_cache() -> InUseCache {
    InUseCache::new(IN_USE_CACHE_FOR, 4096)
}

/// Drops every cached resolution: called after any write to configs, providers or their models.
/// Clearing all of it is cheap and cannot miss a config that a provider change affects.
pub fn forget_in_use(state: &AppState) {
    state.configs_in_use.clear();
}

/// The caller's own config; anyone else's is a 404.
async fn find_own(state: &AppState, user_id: i32, id: &str) -> ApiResult<model_configs::Model> {
    model_configs::Entity::find_by_id(id.to_owned())
        .one(&state.db)
        .await?
        .filter(|c| c.user_id == user_id)
        .ok_or(ApiError::NotFound)
}

#[utoipa::path(get, path = "/api/model-configs", tag = "model-configs", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ModelConfigView>, description = "the caller's own configs, newest first")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<Page<ModelConfigView>>> {
    let (page, page_size) = query.checked()?;
    let paginator = model_configs::Entity::find()
        .filter(model_configs::Column::UserId.eq(user.id))
        .order_by_desc(model_configs::Column::CreatedAt)
        .order_by_asc(model_configs::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = views(&state.db, paginator.fetch_page(page - 1).await?).await?;
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/model-configs", tag = "model-configs", security(("bearer" = [])), request_body = CreateModelConfigRequest,
    responses((status = 201, body = ModelConfigView),
        (status = 422, body = ErrorBody, description = "names every bad field; `provider_id`/`model_id` when disabled or unknown")))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<CreateModelConfigRequest>,
) -> ApiResult<(StatusCode, Json<ModelConfigView>)> {
    let mut checks = Checks::default();
    let params = Params::check(
        &mut checks,
        req.model_name.as_deref(),
        req.r#type.as_deref(),
        req.temperature,
        req.max_tokens,
        req.top_p,
        req.top_k,
        req.status,
    );
    let provider = model_providers::Entity::find_by_id(req.provider_id.clone()).one(&state.db).await?;
    let provider = checks.check(
        "provider_id",
        match provider {
            None => Err("no such provider".to_owned()),
            Some(p) if p.status != STATUS_ENABLED => Err("this provider is disabled".to_owned()),
            Some(p) => Ok(p),
        },
    );
    let model = match &provider {
        None => None,
        Some(p) => {
            let model = provider_models::Entity::find()
                .filter(provider_models::Column::ProviderId.eq(p.id.clone()))
                .filter(provider_models::Column::ModelId.eq(req.model_id.clone()))
                .one(&state.db)
                .await?;
            checks.check(
                "model_id",
                match model {
                    None => Err("the provider has no such model (sync its model list first)".to_owned()),
                    Some(m) if m.status != STATUS_ENABLED => Err("this model is disabled".to_owned()),
                    Some(m) if !m.available => Err("the provider no longer offers this model".to_owned()),
                    Some(m) => Ok(m),
                },
            )
        }
    };
    if let (Some(p), Some(m)) = (&provider, &model)
        && p.id == local_models::PROVIDER_ID
        && !local_models::catalog(&state.db, Some(&user)).await?.iter().any(|c| c.name == m.model_id)
    {
        // Someone else's adapter is listed in the shared provider model list but not theirs to use.
        checks.check::<()>("model_id", Err("no such local model".to_owned()));
    }
    checks.finish()?;
    let (provider, model) = (provider.expect("checked"), model.expect("checked"));

    let config = model_configs::ActiveModel {
        id: Set(uuid::Uuid::new_v4().to_string()),
        user_id: Set(user.id),
        provider_id: Set(provider.id),
        provider_name: Set(provider.name),
        endpoint: Set(provider.api_url),
        api_key: Set(None),
        model_id: Set(model.model_id),
        model_name: Set(params.model_name.unwrap_or(model.model_name)),
        r#type: Set(params.r#type.unwrap_or_else(|| if model.is_vision { "vision" } else { "text" }.to_owned())),
        temperature: Set(params.temperature.unwrap_or(DEFAULT_TEMPERATURE)),
        max_tokens: Set(params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        top_p: Set(params.top_p.unwrap_or(DEFAULT_TOP_P)),
        top_k: Set(params.top_k.unwrap_or(DEFAULT_TOP_K)),
        status: Set(params.status.unwrap_or(STATUS_ENABLED)),
        created_at: Set(state.clock.now()),
        updated_at: Set(None),
    }
    .insert(&state.db)
    .await?;
    Ok((StatusCode::CREATED, Json(view(&state.db, config).await?)))
}

#[utoipa::path(get, path = "/api/model-configs/{id}", tag = "model-configs", security(("bearer" = [])),
    responses((status = 200, body = ModelConfigView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelConfigView>> {
    let config = find_own(&state, user.id, &id).await?;
    Ok(Json(view(&state.db, config).await?))
}

#[utoipa::path(patch, path = "/api/model-configs/{id}", tag = "model-configs", security(("bearer" = [])), request_body = UpdateModelConfigRequest,
    responses((status = 200, body = ModelConfigView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateModelConfigRequest>,
) -> ApiResult<Json<ModelConfigView>> {
    let mut checks = Checks::default();
    let params = Params::check(
        &mut checks,
        req.model_name.as_deref(),
        req.r#type.as_deref(),
        req.temperature,
        req.max_tokens,
        req.top_p,
        req.top_k,
        req.status,
    );
    // A 404 for someone else's config comes before a 422 about the body.
    let config = find_own(&state, user.id, &id).await?;
    checks.finish()?;
    let mut active = config.into_active_model();
    if let Some(v) = params.model_name {
        active.model_name = Set(v);
    }
    if let Some(v) = params.r#type {
        active.r#type = Set(v);
    }
    if let Some(v) = params.temperature {
        active.temperature = Set(v);
    }
    if let Some(v) = params.max_tokens {
        active.max_tokens = Set(v);
    }
    if let Some(v) = params.top_p {
        active.top_p = Set(v);
    }
    if let Some(v) = params.top_k {
        active.top_k = Set(v);
    }
    if let Some(v) = params.status {
        active.status = Set(v);
    }
    active.updated_at = Set(Some(state.clock.now()));
    let config = active.update(&state.db).await?;
    forget_in_use(&state);
    Ok(Json(view(&state.db, config).await?))
}

#[utoipa::path(delete, path = "/api/model-configs/{id}", tag = "model-configs", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let config = find_own(&state, user.id, &id).await?;
    model_configs::Entity::delete_by_id(config.id).exec(&state.db).await?;
    forget_in_use(&state);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named_at_once() {
        let mut checks = Checks::default();
        Params::check(&mut checks, Some(""), Some("audio"), Some(2.5), Some(0.0), Some(1.5), Some(-1.0), Some(3));
        let Err(ApiError::Validation(fields)) = checks.finish() else { panic!("expected validation error") };
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["max_tokens", "model_name", "status", "temperature", "top_k", "top_p", "type"]
        );
    }

    #[test]
    fn range_edges_are_accepted() {
        let mut checks = Checks::default();
        let p = Params::check(&mut checks, None, Some("vision"), Some(0.0), Some(1.0), Some(1.0), Some(0.0), Some(0));
        assert!(checks.finish().is_ok());
        assert_eq!((p.temperature, p.max_tokens, p.top_p, p.top_k), (Some(0.0), Some(1), Some(1.0), Some(0.0)));
        let mut checks = Checks::default();
        Params::check(&mut checks, None, None, Some(2.0), Some(8.5), None, Some(40.5), None);
        let Err(ApiError::Validation(fields)) = checks.finish() else { panic!("expected validation error") };
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["max_tokens", "top_k"]);
    }
}
