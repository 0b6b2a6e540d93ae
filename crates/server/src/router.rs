//! The whole route table in one place.
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, Method, header},
    routing::{get, patch, post, put},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    error::ApiError,
    routes::{
        admin, auth, chat, comparisons, datasets, model_configs, models, ops, prompts, providers, training_configs,
        training_tasks,
    },
    state::AppState,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/password", put(auth::change_password))
        .route("/admin/users", get(admin::list_users).post(admin::create_user))
        .route("/admin/users/{id}", get(admin::get_user).patch(admin::update_user))
        .route("/admin/users/{id}/password", put(admin::reset_password))
        .route("/admin/settings", get(admin::get_settings).patch(admin::update_settings))
        .route("/providers", get(providers::list).post(providers::create))
        .route("/providers/{id}", get(providers::get).patch(providers::update).delete(providers::delete))
        .route("/providers/{id}/test", post(providers::test))
        .route("/providers/{id}/sync", post(providers::sync))
        .route("/providers/{id}/models", get(providers::list_models))
        // Model ids contain '/' and ':' ("meta-llama/Llama-3:8b"): the rest of the path.
        .route("/providers/{id}/models/{*model_id}", patch(providers::update_model))
        .route("/model-configs", get(model_configs::list).post(model_configs::create))
        .route("/model-configs/{id}", get(model_configs::get).patch(model_configs::update).delete(model_configs::delete))
        .route("/chat/sessions", get(chat::list_sessions).post(chat::create_session))
        .route("/chat/sessions/{id}", get(chat::get_session).patch(chat::update_session).delete(chat::delete_session))
        .route("/chat/sessions/{id}/messages", get(chat::list_messages).post(chat::send_message))
        .route("/chat/sessions/{id}/messages/{message_id}", put(chat::edit_message))
        .route("/chat/sessions/{id}/regenerate", post(chat::regenerate))
        .route("/chat/sessions/{id}/stop", post(chat::stop))
        .route("/chat/sessions/{id}/export", get(chat::export))
        .route("/comparisons", get(comparisons::list).post(comparisons::create))
        .route("/comparisons/{id}", get(comparisons::get).delete(comparisons::delete))
        .route("/comparisons/{id}/rerun", post(comparisons::rerun))
        .route("/comparisons/{id}/export", get(comparisons::export))
        .route("/system-prompts", get(prompts::list_system).post(prompts::create_system))
        .route("/system-prompts/{id}", get(prompts::get_system).patch(prompts::update_system).delete(prompts::delete_system))
        .route("/test-prompts", get(prompts::list_test).post(prompts::create_test))
        .route("/test-prompts/{id}", get(prompts::get_test).patch(prompts::update_test).delete(prompts::delete_test))
        .route("/models", get(models::list).post(models::create))
        .route("/models/scan", post(models::scan))
        .route("/models/{id}", get(models::get).patch(models::update).delete(models::delete))
        .route("/models/{id}/model-config", post(models::model_config))
        .route("/training-tasks", get(training_tasks::list).post(training_tasks::create))
        .route("/training-tasks/{id}", get(training_tasks::get).delete(training_tasks::delete))
        .route("/training-tasks/{id}/cancel", post(training_tasks::cancel))
        .route("/training-tasks/{id}/events", get(training_tasks::events))
        .route("/training-tasks/{id}/log", get(training_tasks::log))
        // Uploads carry their own limit (datasets.max_upload_bytes), checked while streaming.
        .route(
            "/datasets",
            get(datasets::list).post(datasets::upload).layer(DefaultBodyLimit::max(dataset_body_limit(&state))),
        )
        .route("/datasets/import", post(datasets::import))
        .route("/datasets/{id}", get(datasets::get).patch(datasets::update).delete(datasets::delete))
        .route("/datasets/{id}/preview", get(datasets::preview))
        .route("/datasets/{id}/stats", get(datasets::stats))
        .route("/datasets/{id}/download", get(datasets::download))
        .route("/training-configs", get(training_configs::list).post(training_configs::create))
        .route("/training-configs/presets", get(training_configs::list_presets))
        .route(
            "/training-configs/{id}",
            get(training_configs::get).patch(training_configs::update).delete(training_configs::delete),
        )
        .route("/openapi.json", get(ops::openapi_json))
        .route("/docs", get(ops::docs_page))
        .route("/docs/init.js", get(ops::docs_init))
        .route("/docs/swagger-ui-bundle.js", get(ops::docs_bundle))
        .route("/docs/swagger-ui.css", get(ops::docs_css))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    let body_limit = state.settings.server.body_limit;
    let cors = cors_layer(&state.settings.cors.origins);
    Router::new()
        .nest("/api", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(crate::metrics::endpoint))
        .fallback(crate::web::serve)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The dataset limit plus room for the form around the file, so that the streaming check (with
/// its clear message) is what answers first.
fn dataset_body_limit(state: &AppState) -> usize {
    usize::try_from(state.settings.datasets.max_upload_bytes.saturating_add(64 * 1024)).unwrap_or(usize::MAX)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
