//! `/api/models/*`: the local models registry (R-MODEL-1).
//!
//! Everyone sees base models; an adapter is seen by its creator and admins (anyone else: 404).
//! Admins register files and scan the models folder; owners and admins rename, enable/disable and
//! remove rows. Removing a row never deletes files: they may be the only copy of a training run.
use std::path::PathBuf;

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::tokens::ROLE_ADMIN,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{AdminUser, AuthUser, JsonBody, Path, Query},
    local_models::{self, NewModel, ScanReport, TYPE_BASE, TYPE_LORA},
    pagination::Page,
    routes::model_configs::{self, CreateModelConfigRequest, ModelConfigView},
    state::AppState,
    validation::{self, Checks, DESCRIPTION_MAX},
};
use store::entities::{model_configs as configs, models, training_tasks, users};

#[derive(serde::Serialize, ToSchema)]
pub struct ModelView {
    pub id: i32,
    /// Unique; the `model_id` of model configs on the `local` provider.
    pub name: String,
    pub display_name: String,
    pub model_path: String,
    /// `base` (a GGUF file) or `lora` (a PEFT adapter folder on a base).
    pub model_type: String,
    /// `ready`, or `missing` when the files were gone at the last check.
    pub status: String,
    /// Enabled for chat by its owner or an admin.
    pub is_available: bool,
    pub description: Option<String>,
    /// GGUF hyper-parameters for a base; r, alpha, target modules and `base_model_id` for an adapter.
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub base_model_id: Option<i32>,
    pub size_bytes: Option<i64>,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<models::Model> for ModelView {
    fn from(m: models::Model) -> Self {
        Self {
            parameters: local_models::parameters(&m),
            base_model_id: local_models::base_model_id(&m),
            size_bytes: local_models::size_on_disk(std::path::Path::new(&m.model_path)),
            id: m.id,
            name: m.name,
            display_name: m.display_name,
            model_path: m.model_path,
            model_type: m.model_type.unwrap_or_else(|| TYPE_BASE.to_owned()),
            status: m.status,
            is_available: m.is_available,
            description: m.description,
            created_by: m.created_by,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct ModelListQuery {
    pub page: Option<u64>,
    pub page_size: Option<u64>,
    /// `base` or `lora`.
    pub model_type: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    pub name: String,
    pub display_name: Option<String>,
    /// A GGUF file (`base`) or a PEFT adapter folder (`lora`) on the server.
    pub model_path: String,
    pub model_type: String,
    /// Required for `lora`: the registered base it was trained on.
    pub base_model_id: Option<i32>,
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchModelRequest {
    pub display_name: Option<String>,
    /// `""` clears it.
    pub description: Option<String>,
    pub is_available: Option<bool>,
}

fn is_admin(user: &users::Model) -> bool {
    user.role == ROLE_ADMIN
}

async fn find_visible(state: &AppState, user: &users::Model, id: i32) -> ApiResult<models::Model> {
    models::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|m| local_models::is_visible(m, user))
        .ok_or(ApiError::NotFound)
}

/// Owners and admins change a row; others who can see it (a base model) get 403.
async fn find_own(state: &AppState, user: &users::Model, id: i32) -> ApiResult<models::Model> {
    let model = find_visible(state, user, id).await?;
    if is_admin(user) || model.created_by == Some(user.id) { Ok(model) } else { Err(ApiError::Forbidden) }
}

#[utoipa::path(get, path = "/api/models", tag = "models", security(("bearer" = [])), params(ModelListQuery),
    responses((status = 200, body = Page<ModelView>, description = "base models and the caller's adapters (all adapters for admins), newest first")))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Query(query): Query<ModelListQuery>,
) -> ApiResult<Json<Page<ModelView>>> {
    let (page, page_size) = crate::pagination::PageQuery { page: query.page, page_size: query.page_size }.checked()?;
    let mut select = models::Entity::find();
    if let Some(kind) = query.model_type.as_deref() {
        if ![TYPE_BASE, TYPE_LORA].contains(&kind) {
            return Err(ApiError::field("model_type", "must be \"base\" or \"lora\""));
        }
        select = select.filter(models::Column::ModelType.eq(kind));
    }
    if !is_admin(&user) {
        select = select.filter(
            sea_orm::Condition::any()
                .add(models::Column::ModelType.ne(TYPE_LORA))
                .add(models::Column::ModelType.is_null())
                .add(models::Column::CreatedBy.eq(user.id)),
        );
    }
    let paginator = select
        .order_by_desc(models::Column::CreatedAt)
        .order_by_desc(models::Column::Id)
        .paginate(&state.db, page_size);
    let total = paginator.num_items().await?;
    let items = paginator.fetch_page(page - 1).await?.into_iter().map(ModelView::from).collect();
    Ok(Json(Page { items, total, page, page_size }))
}

#[utoipa::path(get, path = "/api/models/{id}", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<Json<ModelView>> {
    Ok(Json(find_visible(&state, &user, id).await?.into()))
}

#[utoipa::path(post, path = "/api/models", tag = "models", security(("bearer" = [])), request_body = CreateModelRequest,
    responses((status = 201, body = ModelView), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`model_exists`: the name is taken"),
        (status = 422, body = ErrorBody, description = "names every bad field: unreadable GGUF, not an adapter folder, unknown base")))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    JsonBody(req): JsonBody<CreateModelRequest>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let mut checks = Checks::default();
    let name = checks.check("name", local_models::parse_name(req.name.trim()));
    let display_name = match req.display_name.as_deref() {
        Some(d) => checks.check("display_name", validation::required_text(d, 255)),
        None => name.clone(),
    };
    let description = checks.check("description", validation::optional_text(req.description.as_deref().unwrap_or(""), DESCRIPTION_MAX)).flatten();
    let path = PathBuf::from(req.model_path.trim());
    let kind = checks.check(
        "model_type",
        match req.model_type.as_str() {
            "base" => Ok(TYPE_BASE),
            "lora" => Ok(TYPE_LORA),
            _ => Err("must be \"base\" or \"lora\"".to_owned()),
        },
    );
    let mut parameters = match kind {
        Some(TYPE_BASE) if !path.is_file() => checks.check::<Value>("model_path", Err("no such file on the server".into())),
        Some(TYPE_BASE) => checks.check("model_path", local_models::describe_gguf(&path).await),
        Some(_) if !path.is_dir() => checks.check::<Value>("model_path", Err("no such folder on the server".into())),
        Some(_) => checks.check("model_path", local_models::describe_adapter(&path)),
        None => None,
    };
    if kind == Some(TYPE_LORA) {
        let base = match req.base_model_id {
            None => Err("required for a LoRA adapter".to_owned()),
            Some(id) => match models::Entity::find_by_id(id).one(&state.db).await? {
                Some(b) if b.model_type.as_deref() == Some(TYPE_BASE) => Ok(b.id),
                Some(_) => Err("is not a base model".to_owned()),
                None => Err("no such model".to_owned()),
            },
        };
        if let (Some(base), Some(p)) = (checks.check("base_model_id", base), parameters.as_mut()) {
            p["base_model_id"] = base.into();
        }
    }
    checks.finish()?;
    let new = NewModel {
        name: name.expect("checked"),
        display_name: display_name.expect("checked"),
        model_path: path,
        model_type: kind.expect("checked"),
        description,
        parameters: parameters.expect("checked"),
        created_by: Some(admin.id),
    };
    let name = new.name.clone();
    let model = local_models::insert(&state.db, new).await.map_err(|e| {
        if store::is_unique_violation(&e) {
            ApiError::conflict("model_exists", format!("a model named {name:?} is already registered"))
        } else {
            e.into()
        }
    })?;
    local_models::sync_provider(&state).await?;
    Ok((StatusCode::CREATED, Json(model.into())))
}

#[utoipa::path(patch, path = "/api/models/{id}", tag = "models", security(("bearer" = [])), request_body = PatchModelRequest,
    responses((status = 200, body = ModelView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
    JsonBody(req): JsonBody<PatchModelRequest>,
) -> ApiResult<Json<ModelView>> {
    let model = find_own(&state, &user, id).await?;
    let mut checks = Checks::default();
    let display_name = req.display_name.as_deref().map(|d| checks.check("display_name", validation::required_text(d, 255)));
    let description = req.description.as_deref().map(|d| checks.check("description", validation::optional_text(d, DESCRIPTION_MAX)));
    checks.finish()?;
    let mut active = model.into_active_model();
    if let Some(Some(d)) = display_name {
        active.display_name = Set(d);
    }
    if let Some(Some(d)) = description {
        active.description = Set(d);
    }
    if let Some(available) = req.is_available {
        active.is_available = Set(available);
    }
    active.updated_at = Set(Some(Utc::now()));
    let model = active.update(&state.db).await?;
    local_models::sync_provider(&state).await?;
    Ok(Json(model.into()))
}

#[utoipa::path(delete, path = "/api/models/{id}", tag = "models", security(("bearer" = [])),
    responses((status = 204, description = "the row is gone; files are kept"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`model_in_use`: adapters are registered on this base, or a training task uses it")))]
pub async fn delete(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<i32>) -> ApiResult<StatusCode> {
    let model = find_own(&state, &user, id).await?;
    let adapters = models::Entity::find()
        .filter(models::Column::ModelType.eq(TYPE_LORA))
        .all(&state.db)
        .await?
        .into_iter()
        .filter(|a| local_models::base_model_id(a) == Some(model.id))
        .count();
    if adapters > 0 {
        return Err(ApiError::conflict(
            "model_in_use",
            format!("{adapters} adapter(s) are registered on this base model; remove them first"),
        ));
    }
    let tasks = training_tasks::Entity::find()
        .filter(training_tasks::Column::ModelName.eq(model.name.clone()))
        .filter(training_tasks::Column::Status.is_in(["pending", "running"]))
        .count(&state.db)
        .await?;
    if tasks > 0 {
        return Err(ApiError::conflict("model_in_use", "a pending or running training task uses this model"));
    }
    models::Entity::delete_by_id(model.id).exec(&state.db).await?;
    local_models::sync_provider(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/models/scan", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ScanReport, description = "registers new GGUF files and adapter folders of the models folder; marks vanished files `missing`"),
        (status = 403, body = ErrorBody)))]
pub async fn scan(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Json<ScanReport>> {
    Ok(Json(local_models::scan(&state).await?))
}

#[utoipa::path(post, path = "/api/models/{id}/model-config", tag = "models", security(("bearer" = [])),
    responses((status = 200, body = ModelConfigView, description = "the caller's existing config for this model"),
        (status = 201, body = ModelConfigView, description = "a new config for this model"),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the model is missing, disabled or its base is not usable")))]
/// "Chat with this model" in one click: the caller's model config for a registry model.
pub async fn model_config(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<i32>,
) -> ApiResult<(StatusCode, Json<ModelConfigView>)> {
    let model = find_visible(&state, &user, id).await?;
    let existing = configs::Entity::find()
        .filter(configs::Column::UserId.eq(user.id))
        .filter(configs::Column::ProviderId.eq(local_models::PROVIDER_ID))
        .filter(configs::Column::ModelId.eq(model.name.clone()))
        .order_by_asc(configs::Column::CreatedAt)
        .all(&state.db)
        .await?;
    for config in existing {
        if let Some(found) = model_configs::find_own_in_use(&state, user.id, &config.id).await?
            && found.usable
        {
            return Ok((StatusCode::OK, Json(model_configs::view_of(&state.db, found.config).await?)));
        }
    }
    let req = CreateModelConfigRequest {
        provider_id: local_models::PROVIDER_ID.to_owned(),
        model_id: model.name.clone(),
        model_name: Some(model.display_name.clone()),
        r#type: None,
        temperature: None,
        // A small model on a CPU: an 8k-token default answer would run for minutes.
        max_tokens: Some(state.settings.engine.default_max_tokens as f64),
        top_p: None,
        top_k: None,
        status: None,
    };
    model_configs::create(State(state), AuthUser(user), JsonBody(req)).await.map_err(|e| match e {
        ApiError::Validation(_) => ApiError::field(
            "id",
            "this model cannot be chatted with now: it is missing, disabled, or its base model is not usable",
        ),
        other => other,
    })
}
