//! Settings an admin changes while the platform runs, stored in `app_settings` as one JSON
//! document; the config file only gives their initial values.
use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{crypto, error::ApiError, state::AppState};
use store::entities::app_settings;

/// The `app_settings` row holding these settings.
pub(crate) const RUNTIME_KEY: &str = "runtime";
/// Associated data binding the encrypted SwanLab key to this settings row.
pub(crate) const SWANLAB_KEY_AAD: &str = "app_settings:runtime:swanlab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeSettings {
    pub registration_open: bool,
    pub allow_private_provider_urls: bool,
    #[serde(default)]
    pub swanlab: SwanlabStored,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SwanlabStored {
    pub mode: SwanlabMode,
    pub project: Option<String>,
    pub workspace: Option<String>,
    pub api_key_encrypted: Option<String>,
    pub api_key_hint: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SwanlabMode {
    #[default]
    Disabled,
    Offline,
    Online,
}

/// The settings as the API shows them.
#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    pub registration_open: bool,
    pub allow_private_provider_urls: bool,
    pub swanlab: SwanlabView,
}

#[derive(Serialize, ToSchema)]
pub struct SwanlabView {
    pub mode: SwanlabMode,
    pub project: Option<String>,
    pub workspace: Option<String>,
    /// Masked form of the stored key, e.g. `abc…wxyz`; the key itself is never returned.
    pub api_key_masked: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub registration_open: Option<bool>,
    pub allow_private_provider_urls: Option<bool>,
    pub swanlab: Option<SwanlabPatch>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SwanlabPatch {
    pub mode: Option<SwanlabMode>,
    pub project: Option<String>,
    pub workspace: Option<String>,
    /// A new key; an empty string removes the stored key; absent keeps it.
    pub api_key: Option<String>,
}

impl RuntimeSettings {
    pub fn view(&self) -> SettingsView {
        SettingsView {
            registration_open: self.registration_open,
            allow_private_provider_urls: self.allow_private_provider_urls,
            swanlab: SwanlabView {
                mode: self.swanlab.mode,
                project: self.swanlab.project.clone(),
                workspace: self.swanlab.workspace.clone(),
                api_key_masked: self.swanlab.api_key_hint.clone(),
            },
        }
    }

    /// The decrypted SwanLab key, for the training sidecar.
    pub fn swanlab_api_key(&self, cipher: &crypto::Cipher) -> Option<String> {
        let sealed = self.swanlab.api_key_encrypted.as_deref()?;
        cipher.decrypt(sealed, SWANLAB_KEY_AAD).ok()
    }
}

/// How long a process trusts its copy of the settings. Changes made through this process apply
/// at once (see [`update`]); another instance sharing the database sees them within this time.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The settings as last read, so that every chat request does not read the row again.
#[derive(Default)]
pub struct SettingsCache(Mutex<Option<(Instant, RuntimeSettings)>>);

impl SettingsCache {
    fn get(&self) -> Option<RuntimeSettings> {
        let cached = self.0.lock().expect("settings cache lock");
        cached.as_ref().filter(|(at, _)| at.elapsed() < CACHE_FOR).map(|(_, s)| s.clone())
    }

    fn put(&self, settings: &RuntimeSettings) {
        *self.0.lock().expect("settings cache lock") = Some((Instant::now(), settings.clone()));
    }
}

pub async fn load(state: &AppState) -> Result<RuntimeSettings, ApiError> {
    if let Some(settings) = state.runtime_settings.get() {
        return Ok(settings);
    }
    let settings = load_from(&state.db, state).await?;
    state.runtime_settings.put(&settings);
    Ok(settings)
}

async fn load_from(db: &impl ConnectionTrait, state: &AppState) -> Result<RuntimeSettings, ApiError> {
    let row = app_settings::Entity::find_by_id(RUNTIME_KEY.to_owned()).one(db).await?;
    match row {
        Some(row) => serde_json::from_str(&row.value)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("stored settings are corrupt"))),
        None => Ok(RuntimeSettings {
            registration_open: state.settings.auth.registration_open,
            allow_private_provider_urls: state.settings.providers.allow_private_urls,
            swanlab: SwanlabStored::default(),
        }),
    }
}

pub async fn update(state: &AppState, patch: SettingsPatch) -> Result<RuntimeSettings, ApiError> {
    let mut current = load_from(&state.db, state).await?;
    let exists = app_settings::Entity::find_by_id(RUNTIME_KEY.to_owned()).one(&state.db).await?.is_some();
    if let Some(v) = patch.registration_open {
        current.registration_open = v;
    }
    if let Some(v) = patch.allow_private_provider_urls {
        current.allow_private_provider_urls = v;
    }
    if let Some(s) = patch.swanlab {
        let mut checks = crate::validation::Checks::default();
        let project = checks.check("swanlab.project", optional_name(s.project));
        let workspace = checks.check("swanlab.workspace", optional_name(s.workspace));
        checks.finish()?;
        if let Some(mode) = s.mode {
            current.swanlab.mode = mode;
        }
        if let Some(project) = project.flatten() {
            current.swanlab.project = (!project.is_empty()).then_some(project);
        }
        if let Some(workspace) = workspace.flatten() {
            current.swanlab.workspace = (!workspace.is_empty()).then_some(workspace);
        }
        match s.api_key.as_deref().map(str::trim) {
            None => {}
            Some("") => {
                current.swanlab.api_key_encrypted = None;
                current.swanlab.api_key_hint = None;
            }
            Some(key) => {
                current.swanlab.api_key_encrypted = Some(state.cipher.encrypt(key, SWANLAB_KEY_AAD));
                current.swanlab.api_key_hint = Some(crypto::mask(key));
            }
        }
    }
    let row = app_settings::ActiveModel {
        key: Set(RUNTIME_KEY.to_owned()),
        value: Set(serde_json::to_string(&current).expect("settings serialise")),
        updated_at: Set(state.clock.now()),
    };
    if exists { row.update(&state.db).await?; } else { row.insert(&state.db).await?; }
    state.runtime_settings.put(&current);
    Ok(current)
}

/// `None` → unchanged; `Some("")` → cleared; otherwise at most 100 characters.
fn optional_name(raw: Option<String>) -> Result<Option<String>, String> {
    match raw.map(|s| s.trim().to_owned()) {
        Some(s) if s.chars().count() > 100 => Err("must be at most 100 characters".into()),
        other => Ok(other),
    }
}
