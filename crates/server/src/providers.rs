//! Model providers as the API sees them: checked input, the masked view, the outbound clients,
//! and the model-list sync (R-PROV-1..3, R-PROV-5).
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use llm::{Endpoint, HttpClient, LlmError, ProviderKind, RemoteModel, Timeouts, UrlPolicy};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set, TransactionTrait,
};
use secrecy::SecretString;
use serde::Serialize;
use url::Url;
use utoipa::ToSchema;

use crate::{crypto, error::ApiError, state::AppState};
use store::entities::{model_providers, provider_models};

pub const STATUS_ENABLED: i32 = 1;
pub const STATUS_DISABLED: i32 = 0;

/// The two outbound clients, one per value of the admin's private-URL setting: the policy is
/// fixed when a client is built, and both share nothing but the configuration.
#[derive(Clone, Debug)]
pub struct ProviderClients {
    public_only: HttpClient,
    private_allowed: HttpClient,
}

impl ProviderClients {
    pub fn new(timeouts: Timeouts) -> Result<Self, LlmError> {
        Ok(Self {
            public_only: HttpClient::new(UrlPolicy::new(false), timeouts)?,
            private_allowed: HttpClient::new(UrlPolicy::new(true), timeouts)?,
        })
    }

    pub fn for_setting(&self, allow_private: bool) -> &HttpClient {
        if allow_private { &self.private_allowed } else { &self.public_only }
    }
}

/// A provider as every API answer shows it: the key only in its masked form.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    /// `openai`, `anthropic` or `ollama`.
    pub kind: String,
    pub api_url: String,
    /// e.g. `sk-…abcd`; null when no key is stored.
    pub api_key_masked: Option<String>,
    pub description: Option<String>,
    pub icon_url: Option<String>,
    /// 1 enabled, 0 disabled (its models and configs are unusable everywhere).
    pub status: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<model_providers::Model> for ProviderView {
    fn from(p: model_providers::Model) -> Self {
        Self {
            id: p.id,
            name: p.name,
            kind: p.kind,
            api_url: p.api_url,
            api_key_masked: p.api_key_hint,
            description: p.description,
            icon_url: p.icon_url,
            status: p.status,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct ProviderModelView {
    /// `provider_id:model_id`.
    pub id: String,
    pub provider_id: String,
    pub model_id: String,
    pub model_name: String,
    /// Bytes on disk, where the provider says (Ollama).
    pub size: Option<i64>,
    pub description: Option<String>,
    pub is_vision: bool,
    /// The admin's choice: 1 enabled, 0 disabled.
    pub status: i32,
    /// Listed by the provider at the last sync.
    pub available: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<provider_models::Model> for ProviderModelView {
    fn from(m: provider_models::Model) -> Self {
        Self {
            id: m.id,
            provider_id: m.provider_id,
            model_id: m.model_id,
            model_name: m.model_name,
            size: m.size,
            description: m.description,
            is_vision: m.is_vision,
            status: m.status,
            available: m.available,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A provider id: `[a-z0-9_-]{1,100}`, used in URLs and as the key's associated data.
pub fn parse_id(raw: &str) -> Result<String, String> {
    let ok = (1..=100).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(raw.to_owned()) } else { Err("must be 1 to 100 characters of a-z, 0-9, '-' and '_'".into()) }
}

/// The id made from a name when none is given: "DeepSeek (CN)" → `deepseek-cn`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(90);
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() { "provider".to_owned() } else { slug }
}

pub fn parse_name(raw: &str) -> Result<String, String> {
    crate::validation::required_text(raw, 200)
}

pub fn parse_kind(raw: &str) -> Result<ProviderKind, String> {
    match raw {
        "local" => Err("\"local\" is reserved for the built-in engine and cannot be configured yet".into()),
        other => other.parse().map_err(|_| "must be one of \"openai\", \"anthropic\", \"ollama\"".into()),
    }
}

/// Syntax only; [`check_url_policy`] does the address checks, which need the runtime setting.
pub fn parse_api_url(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.len() > 500 {
        return Err("must be at most 500 characters".into());
    }
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use api_key".into());
    }
    Ok(url)
}

/// The stored form: as typed, without surrounding spaces or a trailing slash.
pub fn normalise_api_url(raw: &str) -> String {
    raw.trim().trim_end_matches('/').to_owned()
}

/// How long saving a provider waits for its host name to resolve.
const SAVE_DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses link-local/metadata addresses always and private ones unless the admin allows them.
/// A host name that does not resolve now (or not within [`SAVE_DNS_TIMEOUT`]) is accepted: the
/// resolver of the outbound client applies the same policy to every connection.
pub async fn check_url_policy(url: &Url, allow_private: bool) -> Result<(), String> {
    match tokio::time::timeout(SAVE_DNS_TIMEOUT, UrlPolicy::new(allow_private).check(url)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(LlmError::UrlRefused(reason))) => Err(format!("refused: {reason}")),
        Ok(Err(err)) => {
            tracing::info!(error = %err, "provider host not resolvable while saving");
            Ok(())
        }
        Err(_) => {
            tracing::info!(host = ?url.host_str(), "provider host did not resolve in time while saving");
            Ok(())
        }
    }
}

pub fn parse_description(raw: Option<&str>) -> Result<Option<String>, String> {
    crate::validation::optional_text(raw.unwrap_or(""), crate::validation::DESCRIPTION_MAX)
}

pub fn parse_icon_url(raw: Option<&str>) -> Result<Option<String>, String> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(u) if u.len() > 500 => Err("must be at most 500 characters".into()),
        Some(u) if u.starts_with('/') => Ok(Some(u.to_owned())),
        Some(u) => match Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(u.to_owned())),
            _ => Err("must be an http(s) URL or a path starting with /".into()),
        },
    }
}

pub fn parse_status(raw: i32) -> Result<i32, String> {
    match raw {
        STATUS_ENABLED | STATUS_DISABLED => Ok(raw),
        _ => Err("must be 0 (disabled) or 1 (enabled)".into()),
    }
}

/// `None` → none; otherwise 1 to 1024 printable ASCII characters (it goes into a header).
pub fn parse_api_key(raw: &str) -> Result<Option<String>, String> {
    match raw.trim() {
        "" => Ok(None),
        k if k.len() > 1024 => Err("must be at most 1024 characters".into()),
        k if !k.bytes().all(|b| b.is_ascii_graphic()) => Err("must be printable ASCII without spaces".into()),
        k => Ok(Some(k.to_owned())),
    }
}

/// How to reach a provider, with its key decrypted for the request at hand only.
/// The client for a provider row: HTTP for remote kinds, the engine for the built-in `local` one
/// (whose catalog is what `user` may use; every usable model when `None`).
pub async fn client(
    state: &AppState,
    provider: &model_providers::Model,
    user: Option<&store::entities::users::Model>,
) -> Result<std::sync::Arc<dyn llm::ChatProvider>, ApiError> {
    if provider.kind == ProviderKind::Local.as_str() {
        return crate::local_models::provider_for(state, user).await;
    }
    let allow_private = crate::runtime_settings::load(state).await?.allow_private_provider_urls;
    let endpoint = endpoint(state, provider)?;
    Ok(llm::provider_for(endpoint, state.provider_clients.for_setting(allow_private)))
}

pub fn endpoint(state: &AppState, provider: &model_providers::Model) -> Result<Endpoint, ApiError> {
    let kind: ProviderKind = provider
        .kind
        .parse()
        .map_err(|e: LlmError| ApiError::Internal(anyhow::anyhow!("provider {}: {e}", provider.id)))?;
    let base_url = Url::parse(&provider.api_url)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("provider {}: stored URL: {e}", provider.id)))?;
    let api_key = match &provider.api_key_encrypted {
        None => None,
        Some(sealed) => Some(SecretString::from(state.cipher.decrypt(sealed, &provider.id).map_err(|_| {
            // Typically the key file was replaced without `workbench keys rotate`.
            tracing::error!(provider = %provider.id, "stored API key does not decrypt with the current key");
            ApiError::conflict(
                "api_key_unreadable",
                "the stored API key cannot be decrypted with the current encryption key; set the key again",
            )
        })?)),
    };
    Ok(Endpoint { kind, base_url, api_key })
}

/// Seals a key for the provider row `provider_id`; returns (ciphertext, masked hint).
pub fn seal_key(cipher: &crypto::Cipher, provider_id: &str, key: &str) -> (String, String) {
    (cipher.encrypt(key, provider_id), crypto::mask(key))
}

#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Models seen for the first time.
    pub added: u64,
    /// Models already known, refreshed (and available again if they had vanished).
    pub updated: u64,
    /// Known models the provider no longer lists, marked unavailable (kept for their configs).
    pub unavailable: u64,
    /// Models the provider lists now.
    pub total: u64,
}

const MAX_MODEL_ID: usize = 200;
const MAX_MODEL_NAME: usize = 200;

/// Upserts the provider's current model list into `provider_models` in one transaction.
/// Admin choices (`status`) survive; availability follows the list.
pub async fn apply_model_list(
    state: &AppState,
    provider_id: &str,
    remote: Vec<RemoteModel>,
) -> Result<SyncReport, ApiError> {
    let report = apply_model_list_at(&state.db, state.clock.now(), provider_id, remote).await?;
    crate::routes::model_configs::forget_in_use(state);
    Ok(report)
}

/// [`apply_model_list`] for callers without the app state (training workers).
pub async fn apply_model_list_at(
    db: &sea_orm::DatabaseConnection,
    now: DateTime<Utc>,
    provider_id: &str,
    remote: Vec<RemoteModel>,
) -> Result<SyncReport, ApiError> {
    let mut seen = HashSet::new();
    let remote: Vec<RemoteModel> = remote
        .into_iter()
        .filter(|m| {
            let fits = !m.id.is_empty() && m.id.chars().count() <= MAX_MODEL_ID;
            if !fits {
                tracing::warn!(provider = provider_id, model = %m.id.chars().take(80).collect::<String>(), "skipping a model id that does not fit");
            }
            fits && seen.insert(m.id.clone())
        })
        .collect();

    let txn = db.begin().await?;
    let existing: HashMap<String, provider_models::Model> = provider_models::Entity::find()
        .filter(provider_models::Column::ProviderId.eq(provider_id))
        .all(&txn)
        .await?
        .into_iter()
        .map(|m| (m.model_id.clone(), m))
        .collect();
    let mut report = SyncReport { added: 0, updated: 0, unavailable: 0, total: remote.len() as u64 };
    for model in &remote {
        let name: String = if model.name.trim().is_empty() { model.id.clone() } else { model.name.clone() };
        let name: String = name.chars().take(MAX_MODEL_NAME).collect();
        match existing.get(&model.id) {
            Some(row) => {
                let mut active = row.clone().into_active_model();
                active.model_name = Set(name);
                active.size = Set(model.size);
                active.description = Set(model.description.clone());
                active.is_vision = Set(model.is_vision);
                active.available = Set(true);
                active.updated_at = Set(Some(now));
                active.update(&txn).await?;
                report.updated += 1;
            }
            None => {
                provider_models::ActiveModel {
                    id: Set(format!("{provider_id}:{}", model.id)),
                    provider_id: Set(provider_id.to_owned()),
                    model_id: Set(model.id.clone()),
                    model_name: Set(name),
                    size: Set(model.size),
                    description: Set(model.description.clone()),
                    is_vision: Set(model.is_vision),
                    status: Set(STATUS_ENABLED),
                    available: Set(true),
                    created_at: Set(now),
                    updated_at: Set(None),
                }
                .insert(&txn)
                .await?;
                report.added += 1;
            }
        }
    }
    for (model_id, row) in existing {
        if seen.contains(&model_id) {
            continue;
        }
        report.unavailable += 1;
        if row.available {
            let mut active = row.into_active_model();
            active.available = Set(false);
            active.updated_at = Set(Some(now));
            active.update(&txn).await?;
        }
    }
    txn.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_ids() {
        assert_eq!(slugify("DeepSeek (CN)"), "deepseek-cn");
        assert_eq!(slugify("  OpenAI  "), "openai");
        assert_eq!(slugify("本地"), "provider");
        assert_eq!(slugify("vLLM / Qwen2.5"), "vllm-qwen2-5");
        for name in ["DeepSeek (CN)", "本地", &"x".repeat(300)] {
            assert!(parse_id(&slugify(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn ids_kinds_and_urls_are_checked() {
        assert!(parse_id("my_provider-1").is_ok());
        for bad in ["", "Upper", "a b", "a/b", &"a".repeat(101)] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
        assert!(parse_kind("local").unwrap_err().contains("reserved"));
        assert!(parse_kind("gemini").is_err());
        assert_eq!(parse_kind("anthropic").unwrap(), ProviderKind::Anthropic);
        for bad in ["ftp://x.io", "not a url", "http://user:pw@x.io", "file:///etc/passwd"] {
            assert!(parse_api_url(bad).is_err(), "{bad}");
        }
        assert!(parse_api_url(" https://api.openai.com/v1 ").is_ok());
        assert_eq!(normalise_api_url(" https://x.io/v1/ "), "https://x.io/v1");
    }
}
