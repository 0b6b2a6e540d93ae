//! `/api/training-configs/*`: a user's named LoRA hyper-parameters (R-TRAIN-2), checked field
//! by field, with presets to start from. Another user's config is a 404.
use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AuthUser, JsonBody, Path, Query},
    pagination::{Page, PageQuery, contains_ci},
    routes::datasets::ACTIVE_TASK_STATES,
    state::AppState,
    training::params::{Preset, TrainingParams, TrainingParamsInput, presets},
};
use store::entities::{training_configs, training_tasks};

#[derive(Serialize, ToSchema, Debug)]
pub struct TrainingConfigView {
    pub id: i32,
    pub name: String,
    /// Complete parameters, defaults filled in.
    pub params: TrainingParams,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl TrainingConfigView {
    fn new(c: training_configs::Model) -> ApiResult<Self> {
        let params = TrainingParams::from_stored(&c.config_data)
            .map_err(|e| anyhow::anyhow!("training config {} holds invalid parameters: {e:?}", c.id))?;
        Ok(Self { id: c.id, name: c.name, params, created_by: c.created_by, created_at: c.created_at, updated_at: c.updated_at })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfigInput {
    pub name: String,
    /// Start from this preset (`quick_test`, `balanced`, `quality`) instead of the defaults.
    pub preset: Option<String>,
    /// Parameters that differ from the starting point.
    pub params: Option<TrainingParamsInput>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfigPatch {
    pub name: Option<String>,
    /// Only the parameters given change.
    pub params: Option<TrainingParamsInput>,
}

#[derive(Deserialize, IntoParams)]
pub struct TrainingConfigListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// Case-insensitive search in names.
    pub q: Option<String>,
}

fn parse_name(raw: &str) -> Result<String, String> {
    crate::validation::required_text(raw, 255)
}

async fn find_own(state: &AppState, user_id: i32, id: i32) -> ApiResult<training_configs::Model> {
    training_configs::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|c| c.created_by == Some(user_id))
        .ok_or(ApiError::NotFound)
}

#[utoipa::path(get, path = "/api/training-configs/presets", tag = "training", security(("bearer" = [])),
    responses((status = 200, body = Vec<Preset>)))]
pub async fn list_presets(_user: AuthUser) -> Json<Vec<Preset>> {
    Json(presets())
}

#[utoipa::path(get, path = "/api/training-configs", tag = "training", security(("bearer" = [])), params(TrainingConfigListQuery),
    responses((status = 200, body = Page<TrainingConfigView>, description = "the caller's own configs, newest first")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<TrainingConfigListQuery>,
) -> ApiResult<Json<Page<TrainingConfigView>>> {
    let (page, page_size) = PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = training_configs::Entity::find().filter(training_configs::Column::CreatedBy.eq(user.id));
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        select = select.filter(Condition::all().add(contains_ci(training_configs::Column::Name, q)));
    }
    let paginator = select
        .order_by_desc(training_configs::Column::CreatedAt)
        .order_by_desc(training_configs::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(TrainingConfigView::new).collect::<ApiResult<_>>()?;
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(post, path = "/api/training-configs", tag = "training", security(("bearer" = [])), request_body = TrainingConfigInput,
    responses((status = 201, body = TrainingConfigView),
        (status = 422, body = ErrorBody, description = "names every bad field (`name`, `preset`, `params.lora_r`, …) with its allowed range")))]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<TrainingConfigInput>,
) -> ApiResult<(StatusCode, Json<TrainingConfigView>)> {
    let mut fields = crate::error::FieldErrors::new();
    let name = parse_name(&req.name).map_err(|why| fields.insert("name".into(), why)).ok();
    let base = match req.preset.as_deref() {
        None => Some(TrainingParams::default()),
        Some(id) => match presets().into_iter().find(|p| p.id == id) {
            Some(p) => Some(p.params),
            None => {
                let ids: Vec<&str> = presets().iter().map(|p| p.id).collect();
                fields.insert("preset".into(), format!("must be one of {}", ids.join(", ")));
                None
            }
        },
    };
    let params = base.and_then(|base| {
        base.apply(&req.params.unwrap_or_default(), "params.").map_err(|errors| fields.extend(errors)).ok()
    });
    if !fields.is_empty() {
        return Err(ApiError::Validation(fields));
    }
    let now = state.clock.now();
    let config = training_configs::ActiveModel {
        name: Set(name.expect("checked")),
        config_data: Set(serde_json::to_value(params.expect("checked")).expect("params serialise")),
        created_by: Set(Some(user.id)),
        created_at: Set(now),
        updated_at: Set(None),
        ..Default::default()
    }
    .insert(&state.db)
    .await?;
    Ok((StatusCode::CREATED, Json(TrainingConfigView::new(config)?)))
}

#[utoipa::path(get, path = "/api/training-configs/{id}", tag = "training", security(("bearer" = [])),
    responses((status = 200, body = TrainingConfigView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
) -> ApiResult<Json<TrainingConfigView>> {
    Ok(Json(TrainingConfigView::new(find_own(&state, user.id, id).await?)?))
}

#[utoipa::path(patch, path = "/api/training-configs/{id}", tag = "training", security(("bearer" = [])), request_body = TrainingConfigPatch,
    responses((status = 200, body = TrainingConfigView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<TrainingConfigPatch>,
) -> ApiResult<Json<TrainingConfigView>> {
    // A 404 for someone else's config comes before a 422 about the body.
    let config = find_own(&state, user.id, id).await?;
    let current = TrainingConfigView::new(config.clone())?.params;
    let mut fields = crate::error::FieldErrors::new();
    let name = req.name.as_deref().and_then(|n| parse_name(n).map_err(|why| fields.insert("name".into(), why)).ok());
    let params = match &req.params {
        Some(input) => current.apply(input, "params.").map_err(|errors| fields.extend(errors)).ok(),
        None => None,
    };
    if !fields.is_empty() {
        return Err(ApiError::Validation(fields));
    }
    let mut active = config.into_active_model();
    if let Some(name) = name {
        active.name = Set(name);
    }
    if let Some(params) = params {
        active.config_data = Set(serde_json::to_value(params).expect("params serialise"));
    }
    active.updated_at = Set(Some(state.clock.now()));
    let config = active.update(&state.db).await?;
    Ok(Json(TrainingConfigView::new(config)?))
}

#[utoipa::path(delete, path = "/api/training-configs/{id}", tag = "training", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`config_in_use`: a pending or running training task uses it")))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let config = find_own(&state, user.id, id).await?;
    let used = training_tasks::Entity::find()
        .filter(training_tasks::Column::ConfigId.eq(config.id))
        .filter(training_tasks::Column::Status.is_in(ACTIVE_TASK_STATES))
        .count(&state.db)
        .await?;
    if used > 0 {
        return Err(ApiError::conflict(
            "config_in_use",
            "a pending or running training task uses this config; cancel it or wait until it ends",
        ));
    }
    training_configs::Entity::delete_by_id(config.id).exec(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}
