//! The state every handler shares.
use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{chat::ActiveAnswers, auth::rate_limit::LoginLimiter, auth::tokens::TokenKeys, clock::Clock, config::Settings, crypto::Cipher, providers::ProviderClients};

/// Cloned for every extractor of every request, so one reference count rather than one per
/// field (measured: cloning and dropping the fields was 2–3 % of the platform's CPU with
/// one-token chat answers, `BENCH_MODEL=bench-1 bench/chat/run.sh`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: DatabaseConnection,
    /// Where chat answers and their sessions are written on the way to the first token.
    pub chat_rows: crate::chat::ChatRows,
    pub settings: Arc<Settings>,
    pub tokens: TokenKeys,
    pub clock: Arc<dyn Clock>,
    pub login_limiter: Arc<LoginLimiter>,
    pub cipher: Cipher,
    /// Outbound HTTP clients for provider APIs, one per private-URL setting.
    pub provider_clients: ProviderClients,
    pub http_metrics: Arc<crate::metrics::HttpMetrics>,
    /// Answers streaming now, by session, so a stop request can reach them.
    pub answers: ActiveAnswers,
    /// Loaded local models, shared by every chat and comparison.
    pub engines: Arc<local::Engines>,
    /// Wakes training workers and task event streams in this process.
    pub training: crate::training::Hub,
    /// Dataset token counters by model file, loaded once.
    pub tokenizers: crate::datasets::TokenizerCache,
    /// The admin's runtime settings, read at most once a second.
    pub runtime_settings: Arc<crate::runtime_settings::SettingsCache>,
    /// Accounts as the streaming endpoints last read them.
    pub accounts: Arc<crate::users::AccountCache>,
    /// Owners of recently created or read chat sessions, by session id.
    pub session_owners: Arc<crate::chat::SessionOwners>,
    /// Model configs with their providers as the streaming endpoints last resolved them.
    pub configs_in_use: Arc<crate::routes::model_configs::InUseCache>,
}

impl AppState {
    /// `<data_dir>/training/<task id>`: log, metrics, adapter.
    pub fn training_dir(&self, task_id: i32) -> std::path::PathBuf {
        crate::training::task_dir(&self.settings.data_dir, task_id)
    }
}
