//! The local models registry (R-MODEL-1) and the built-in `local` provider that serves it.
//!
//! A registry row is a base GGUF file or a LoRA adapter directory on top of a registered base.
//! Base models are shared by everyone; an adapter is its creator's (and visible to admins), like
//! the dataset it was trained on. The `local` provider row and its `provider_models` mirror the
//! registry so model configs, chat and comparison treat local models like any remote one.
use std::path::{Path, PathBuf};

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::{auth::tokens::ROLE_ADMIN, error::ApiError, providers, state::AppState};
use store::entities::{model_providers, models, users};

pub const PROVIDER_ID: &str = "local";
/// What the built-in provider row shows as its URL; there is no endpoint behind it.
pub const PROVIDER_URL: &str = "local://engine";
pub const TYPE_BASE: &str = "base";
pub const TYPE_LORA: &str = "lora";
/// The files are where the row says.
pub const STATUS_READY: &str = "ready";
/// The files were gone at the last scan or start; the row stays so nothing that names it breaks.
pub const STATUS_MISSING: &str = "missing";

/// Where `scan` looks and where an admin is expected to put GGUF files.
pub fn models_dir(state: &AppState) -> PathBuf {
    state.settings.data_dir.join("models")
}

pub fn is_visible(model: &models::Model, user: &users::Model) -> bool {
    model.model_type.as_deref() != Some(TYPE_LORA) || model.created_by == Some(user.id) || user.role == ROLE_ADMIN
}

/// The parameters JSON of a row (an object; `{}` when absent or unreadable).
pub fn parameters(model: &models::Model) -> Value {
    model
        .parameters
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

pub fn base_model_id(model: &models::Model) -> Option<i32> {
    parameters(model).get("base_model_id").and_then(Value::as_i64).map(|id| id as i32)
}

/// A registry name doubles as the `model_id` of model configs: short and URL-safe.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let ok = (1..=100).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(raw.to_owned()) } else { Err("must be 1 to 100 characters of a-z, A-Z, 0-9, '.', '-' and '_'".into()) }
}

/// Reads a GGUF header: the description stored in `parameters`.
pub async fn describe_gguf(path: &Path) -> Result<Value, String> {
    let path = path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || engine::ModelConfig::read(&path))
        .await
        .map_err(|e| format!("reading the file failed: {e}"))?
        .map_err(|e| e.to_string())?;
    Ok(json!({
        "architecture": config.architecture,
        "model_name": config.name,
        "context_length": config.context_length,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "vocab_size": config.vocab_size,
    }))
}

/// Reads a PEFT adapter's `adapter_config.json` and checks its weights file is there.
pub fn describe_adapter(dir: &Path) -> Result<Value, String> {
    if !dir.join("adapter_model.safetensors").is_file() {
        return Err("not a PEFT adapter directory: adapter_model.safetensors is missing".into());
    }
    let config = engine::lora::read_adapter_config(dir).map_err(|e| e.to_string())?;
    Ok(json!({
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
        "base_model_name_or_path": config.base_model_name_or_path,
    }))
}

pub use local::size_on_disk;

fn files_present(model: &models::Model) -> bool {
    let path = Path::new(&model.model_path);
    match model.model_type.as_deref() {
        Some(TYPE_LORA) => path.join("adapter_config.json").is_file() && path.join("adapter_model.safetensors").is_file(),
        _ => path.is_file(),
    }
}

/// A row to insert. Paths are stored absolute: the server may be started from anywhere.
pub struct NewModel {
    pub name: String,
    pub display_name: String,
    pub model_path: PathBuf,
    pub model_type: &'static str,
    pub description: Option<String>,
    pub parameters: Value,
    pub created_by: Option<i32>,
}

pub async fn insert(db: &impl ConnectionTrait, new: NewModel) -> Result<models::Model, sea_orm::DbErr> {
    let path = std::path::absolute(&new.model_path).unwrap_or(new.model_path);
    models::ActiveModel {
        name: Set(new.name),
        display_name: Set(new.display_name),
        model_path: Set(path.to_string_lossy().into_owned()),
        model_type: Set(Some(new.model_type.to_owned())),
        status: Set(STATUS_READY.to_owned()),
        is_available: Set(true),
        description: Set(new.description),
        parameters: Set(Some(new.parameters.to_string())),
        created_by: Set(new.created_by),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// A free registry name derived from `stem` (`stem`, `stem-2`, …).
pub async fn free_name(db: &impl ConnectionTrait, stem: &str) -> Result<String, sea_orm::DbErr> {
    let stem: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(90)
        .collect();
    let stem = if stem.is_empty() { "model".to_owned() } else { stem };
    let taken: Vec<String> = models::Entity::find()
        .filter(models::Column::Name.starts_with(&stem))
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut candidate = stem.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{stem}-{n}");
        n += 1;
    }
    Ok(candidate)
}

#[derive(Serialize, ToSchema, Debug, Default)]
pub struct ScanReport {
    /// Names registered by this scan.
    pub added: Vec<String>,
    /// Names whose files are gone (now `missing`).
    pub missing: Vec<String>,
    /// Names whose files are back (now `ready`).
    pub restored: Vec<String>,
    /// Files or folders not registered, with the reason.
    pub skipped: Vec<String>,
}

/// Registers every GGUF file and adapter folder in the models folder that is not registered yet,
/// and updates the status of every registered row from its files.
pub async fn scan(state: &AppState) -> Result<ScanReport, ApiError> {
    let mut report = refresh_status(&state.db).await?;
    let dir = models_dir(state);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(report);
    };
    let registered: Vec<models::Model> = models::Entity::find().all(&state.db).await?;
    let known: std::collections::HashSet<PathBuf> =
        registered.iter().map(|m| PathBuf::from(&m.model_path)).collect();
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let (files, dirs): (Vec<_>, Vec<_>) = paths.into_iter().partition(|p| p.is_file());
    // Bases first: an adapter folder needs its base registered to be usable.
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        if known.contains(&path) {
            continue;
        }
        match describe_gguf(&path).await {
            Ok(parameters) => {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let name = free_name(&state.db, &stem).await?;
                insert(
                    &state.db,
                    NewModel {
                        name: name.clone(),
                        display_name: stem,
                        model_path: path,
                        model_type: TYPE_BASE,
                        description: None,
                        parameters,
                        created_by: None,
                    },
                )
                .await?;
                report.added.push(name);
            }
            Err(why) => report.skipped.push(format!("{}: {why}", path.display())),
        }
    }
    for dir in dirs.iter().filter(|d| d.join("adapter_config.json").is_file()) {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
        if known.contains(&dir) {
            continue;
        }
        match scanned_adapter(state, &dir).await? {
            Ok(name) => report.added.push(name),
            Err(why) => report.skipped.push(format!("{}: {why}", dir.display())),
        }
    }
    sync_provider(state).await?;
    Ok(report)
}

/// An adapter found on disk names its base only loosely (`base_model_name_or_path`); it is
/// registered when exactly one registered base fits.
async fn scanned_adapter(state: &AppState, dir: &Path) -> Result<Result<String, String>, ApiError> {
    let mut parameters = match describe_adapter(dir) {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    let bases: Vec<models::Model> = models::Entity::find()
        .filter(models::Column::ModelType.eq(TYPE_BASE))
        .all(&state.db)
        .await?;
    let hint = parameters["base_model_name_or_path"].as_str().unwrap_or_default().to_ascii_lowercase();
    let hint = hint.rsplit('/').next().unwrap_or_default().to_owned();
    let fits: Vec<&models::Model> = if bases.len() == 1 {
        bases.iter().collect()
    } else {
        bases.iter().filter(|b| !hint.is_empty() && b.name.to_ascii_lowercase().contains(&hint)).collect()
    };
    let [base] = fits[..] else {
        return Ok(Err(format!("cannot tell which base model it belongs to ({} candidates); register it by hand", fits.len())));
    };
    parameters["base_model_id"] = json!(base.id);
    let stem = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = free_name(&state.db, &stem).await?;
    insert(
        &state.db,
        NewModel {
            name: name.clone(),
            display_name: stem,
            model_path: dir.to_path_buf(),
            model_type: TYPE_LORA,
            description: None,
            parameters,
            created_by: None,
        },
    )
    .await?;
    Ok(Ok(name))
}

/// Sets `ready`/`missing` on every row from its files.
pub async fn refresh_status(db: &impl ConnectionTrait) -> Result<ScanReport, ApiError> {
    let mut report = ScanReport::default();
    for model in models::Entity::find().order_by_asc(models::Column::Id).all(db).await? {
        let present = files_present(&model);
        let status = if present { STATUS_READY } else { STATUS_MISSING };
        if model.status == status {
            continue;
        }
        if present { report.restored.push(model.name.clone()) } else { report.missing.push(model.name.clone()) }
        let mut active = model.into_active_model();
        active.status = Set(status.to_owned());
        active.updated_at = Set(Some(Utc::now()));
        active.update(db).await?;
    }
    Ok(report)
}

/// Startup: the built-in provider exists; on the very first start the models folder is scanned
/// (which registers the reference model when it was fetched); later starts only refresh status,
/// so a model an admin removed from the registry does not come back.
pub async fn on_start(state: &AppState) -> Result<(), ApiError> {
    ensure_provider(&state.db).await?;
    let empty = models::Entity::find().one(&state.db).await?.is_none();
    if empty {
        let report = scan(state).await?;
        if !report.added.is_empty() {
            tracing::info!(models = ?report.added, "registered local models");
        }
    } else {
        refresh_status(&state.db).await?;
    }
    sync_provider(state).await
}

async fn ensure_provider(db: &impl ConnectionTrait) -> Result<(), sea_orm::DbErr> {
    if model_providers::Entity::find_by_id(PROVIDER_ID).one(db).await?.is_some() {
        return Ok(());
    }
    model_providers::ActiveModel {
        id: Set(PROVIDER_ID.to_owned()),
        name: Set("Local models".to_owned()),
        kind: Set(PROVIDER_ID.to_owned()),
        api_url: Set(PROVIDER_URL.to_owned()),
        description: Set(Some("Models in the local registry, served by the built-in engine".to_owned())),
        status: Set(providers::STATUS_ENABLED),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .map(|_| ())
}

/// Mirrors the registry into the `local` provider's model list, so model configs can name
/// registry models and lose their `usable` flag when a model goes.
pub async fn sync_provider(state: &AppState) -> Result<(), ApiError> {
    sync_provider_at(&state.db, state.clock.now()).await?;
    crate::routes::model_configs::forget_in_use(state);
    Ok(())
}

/// [`sync_provider`] for callers without the app state (training workers).
pub async fn sync_provider_at(db: &sea_orm::DatabaseConnection, now: chrono::DateTime<Utc>) -> Result<(), ApiError> {
    let remote = local::remote_models(&catalog(db, None).await?);
    providers::apply_model_list_at(db, now, PROVIDER_ID, remote).await.map(|_| ())
}

/// The models `user` may chat with (every usable one when `None`): ready, enabled, and for an
/// adapter, with a usable base.
pub async fn catalog(db: &impl ConnectionTrait, user: Option<&users::Model>) -> Result<Vec<local::LocalModel>, ApiError> {
    let rows = models::Entity::find()
        .filter(models::Column::Status.eq(STATUS_READY))
        .filter(models::Column::IsAvailable.eq(true))
        .order_by_asc(models::Column::Id)
        .all(db)
        .await?;
    let base_path = |id: i32| {
        rows.iter()
            .find(|b| b.id == id && b.model_type.as_deref() == Some(TYPE_BASE))
            .map(|b| PathBuf::from(&b.model_path))
    };
    Ok(rows
        .iter()
        .filter(|m| user.is_none_or(|u| is_visible(m, u)))
        .filter_map(|m| {
            let (base, adapter) = match m.model_type.as_deref() {
                Some(TYPE_LORA) => (base_path(base_model_id(m)?)?, Some(PathBuf::from(&m.model_path))),
                _ => (PathBuf::from(&m.model_path), None),
            };
            Some(local::LocalModel {
                name: m.name.clone(),
                display_name: m.display_name.clone(),
                base_path: base,
                adapter_path: adapter,
            })
        })
        .collect())
}

/// The `local` provider for one caller (`None`: every usable model, for admin list/test).
pub async fn provider_for(
    state: &AppState,
    user: Option<&users::Model>,
) -> Result<std::sync::Arc<dyn llm::ChatProvider>, ApiError> {
    let catalog = catalog(&state.db, user).await?;
    Ok(std::sync::Arc::new(local::LocalProvider::new(state.engines.clone(), catalog)))
}
