//! Operations: liveness, readiness, the OpenAPI document and its interactive page.
use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde_json::json;

use crate::{openapi, state::AppState};

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": { "code": "database_unavailable", "message": "the database is not reachable" } })),
            )
                .into_response()
        }
    }
}

pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
        .into_response()
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>LLM Workbench API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>"#;

const DOCS_INIT: &str = r#"window.ui = SwaggerUIBundle({ url: '/api/openapi.json', dom_id: '#swagger-ui', deepLinking: true, persistAuthorization: true });"#;

pub async fn docs_page() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

pub async fn docs_init() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], DOCS_INIT).into_response()
}

pub async fn docs_bundle() -> Response {
    static_asset("text/javascript; charset=utf-8", include_bytes!("../../assets/swagger/swagger-ui-bundle.js"))
}

pub async fn docs_css() -> Response {
    static_asset("text/css; charset=utf-8", include_bytes!("../../assets/swagger/swagger-ui.css"))
}

fn static_asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")],
        body,
    )
        .into_response()
}
