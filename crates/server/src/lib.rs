//! The HTTP server: configuration, state, routes and the error envelope.
pub mod auth;
pub mod chat;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod datasets;
pub mod error;
pub mod extract;
pub mod key_rotation;
pub mod local_models;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod providers;
pub mod recent;
pub mod router;
pub mod routes;
pub mod runtime_settings;
pub mod state;
pub mod training;
pub mod users;
pub mod validation;
pub mod web;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::ExposeSecret;
use store::{MigratorTrait, entities::users as user_entity};
use tokio::net::TcpListener;

use crate::{
    auth::{rate_limit::LoginLimiter, tokens::TokenKeys},
    clock::Clock,
    config::{Secrets, Settings},
    crypto::Cipher,
    state::AppState,
};

/// Connects, migrates, creates the bootstrap admin if configured, and assembles the state.
pub async fn build_state(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let secrets = Secrets::load_or_generate(&settings)?;
    let db = store::connect(&settings.database_url()).await.context("connecting to the database")?;
    let inline = store::InlineSqlite::open(&settings.database_url()).context("opening the chat's SQLite connection")?;
    store::Migrator::up(&db, None).await.context("applying migrations")?;
    chat::settle_interrupted(&db).await.context("settling interrupted answers")?;
    let auth = &settings.auth;
    let state = AppState::new(state::Shared {
        chat_rows: chat::ChatRows::new(db.clone(), inline),
        db,
        tokens: TokenKeys::new(&secrets.jwt_secret, auth.access_token_ttl_secs, auth.refresh_token_ttl_secs),
        login_limiter: Arc::new(LoginLimiter::new(
            auth.login_attempts_per_ip,
            auth.login_failures_per_email,
            auth.login_window_secs,
        )),
        cipher: Cipher::new(&secrets.encryption_key),
        provider_clients: providers::ProviderClients::new(llm::Timeouts::default())
            .context("building the provider HTTP clients")?,
        http_metrics: Arc::default(),
        answers: chat::ActiveAnswers::default(),
        engines: Arc::new(local::Engines::new(
            settings.engine.loaded_models,
            settings.engine.concurrent_generations,
            settings.engine.default_max_tokens,
        )),
        training: training::Hub::default(),
        tokenizers: datasets::TokenizerCache::default(),
        runtime_settings: Arc::default(),
        accounts: Arc::new(users::account_cache()),
        session_owners: Arc::new(chat::session_owners()),
        configs_in_use: Arc::new(routes::model_configs::in_use_cache()),
        clock,
        settings: Arc::new(settings),
    });
    bootstrap_admin(&state).await?;
    local_models::on_start(&state).await.map_err(|e| anyhow::anyhow!("registering local models: {e:?}"))?;
    Ok(state)
}

/// Creates the admin named in the configuration when the database has no admin yet.
async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&state.settings.auth.bootstrap_admin_email, &state.settings.auth.bootstrap_admin_password)
    else {
        return Ok(());
    };
    let admins = user_entity::Entity::find()
        .filter(user_entity::Column::Role.eq(auth::tokens::ROLE_ADMIN))
        .count(&state.db)
        .await?;
    if admins > 0 {
        return Ok(());
    }
    let new = users::NewUser::parse(email, password.expose_secret(), None, Some(auth::tokens::ROLE_ADMIN))
        .map_err(|e| anyhow::anyhow!("bootstrap admin: {e:?}"))?;
    let user = users::create(&state.db, new, state.clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
    tracing::info!(email = %user.email, "created the bootstrap admin");
    Ok(())
}

/// Serves until `shutdown` resolves.
/// Serves until `shutdown` resolves, with `training.workers` training workers beside it; they
/// stop (failing the tasks they were running) on shutdown too.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let (stop_workers, stop) = tokio::sync::watch::channel(false);
    let checkpoints = tokio::spawn(checkpoint_periodically(state.settings.database_url(), stop.clone()));
    let workers = training::start_workers(training::Runtime::from(&state), state.settings.training.workers, stop);
    let app = router::router(state);
    // Streamed answers are many small writes: with Nagle's algorithm each one after the first
    // waits for the client's delayed ACK (40 ms on Linux) before it leaves.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_workers.send(true);
        })
        .await;
    for worker in workers {
        let _ = worker.await;
    }
    let _ = checkpoints.await;
    served
}

/// Checkpoints SQLite's log every [`store::CHECKPOINT_INTERVAL`] until `stop`, so that no
/// request's commit has to and the log does not grow under steady load (see `store`).
async fn checkpoint_periodically(database_url: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut checkpointer = match store::Checkpointer::open(&database_url).await {
        Ok(Some(checkpointer)) => checkpointer,
        Ok(None) => return,
        Err(err) => {
            tracing::error!(error = %err, "no SQLite checkpoints: commits will checkpoint the log themselves");
            return;
        }
    };
    let mut every = tokio::time::interval(store::CHECKPOINT_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            _ = every.tick() => match checkpointer.run().await {
                Ok(done) => tracing::debug!(log_pages = done.log_pages, restarted = done.restarted, "checkpointed the SQLite log"),
                Err(err) => tracing::warn!(error = %err, "checkpointing the SQLite log failed"),
            },
        }
    }
}
