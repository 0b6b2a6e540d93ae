//! The state every handler shares.
use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{chat::ActiveAnswers, auth::rate_limit::LoginLimiter, auth::tokens::TokenKeys, clock::Clock, config::Settings, crypto::Cipher, providers::ProviderClients};

#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
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
    /// Dataset token counters by model file, loaded once.
    pub tokenizers: crate::datasets::TokenizerCache,
}
