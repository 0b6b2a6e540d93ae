//! The edges every client meets: the error envelope for bad input, unknown routes, body limits,
//! request ids, health, the OpenAPI document and the docs page.
mod common;

use common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn bad_bodies_get_clear_client_errors() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.server.body_limit = 4096).await;
    let login = app.url("/api/auth/login");
    let send = |body: &'static str, content_type: &'static str| {
        app.client.post(&login).header("content-type", content_type).body(body).send()
    };
    let cases = [
        ("{\"email\": ", "application/json", StatusCode::BAD_REQUEST, "malformed_json"),
        ("", "application/json", StatusCode::BAD_REQUEST, "malformed_json"),
        ("[1,2]", "application/json", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ("{\"email\": \"a@b.io\"}", "application/json", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ("{\"email\": 5, \"password\": \"x\"}", "application/json", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        ("email=a", "application/x-www-form-urlencoded", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    ];
    for (body, content_type, status, code) in cases {
        let res = send(body, content_type).await.unwrap();
        assert_eq!(res.status(), status, "{body}");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["error"]["code"], code, "{body}: {json}");
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let missing = app.post("/api/auth/login", None, json!({"email": "a@b.io"})).await;
    assert!(missing.json["error"]["fields"]["password"].as_str().unwrap().contains("missing field"));
    let wrong_type = app.post("/api/auth/login", None, json!({"email": 5, "password": "x"})).await;
    assert!(wrong_type.json["error"]["fields"]["email"].as_str().unwrap().contains("invalid type"));

    let huge = format!("{{\"email\": \"{}\", \"password\": \"x\"}}", "a".repeat(10_000));
    let res = app.client.post(&login).header("content-type", "application/json").body(huge).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.get(app.url("/api/does-not-exist")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["content-type"], "application/json");
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["error"]["code"], "not_found");
    let res = app.client.delete(app.url("/api/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    let res = app.client.get(app.url("/missing-file.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let res = app.client.get(app.url("/healthz")).header("x-request-id", "from-the-proxy-1").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "from-the-proxy-1", "a caller's id is kept");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app.state.db.clone().close().await.unwrap();
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["error"]["code"], "database_unavailable");
}

#[tokio::test]
async fn docs_page_works_offline() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = app.client.get(app.url("/api/docs")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("swagger-ui"));
    assert!(!page.contains("http://") && !page.contains("https://"), "no external assets: {page}");
    for asset in ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css", "/api/docs/init.js"] {
        let res = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        assert!(res.bytes().await.unwrap().len() > 50, "{asset}");
    }
    let doc: serde_json::Value = app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/auth/login"]["post"].is_object());
}

/// The document is part of the contract: a change to it must be deliberate. Regenerate the
/// snapshot with `UPDATE_OPENAPI=1 cargo test -p server --test http_edge openapi`.
#[test]
fn openapi_snapshot() {
    let current = server::openapi::document_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{current}\n")).unwrap();
    }
    let snapshot = std::fs::read_to_string(&path).expect("docs/openapi.json exists; run with UPDATE_OPENAPI=1");
    assert_eq!(snapshot.trim_end(), current, "the OpenAPI document changed; review and update the snapshot");
}

#[tokio::test]
async fn prometheus_metrics_count_requests_by_route_template() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin_token().await;
    for id in [1, 2, 3] {
        app.get(&format!("/api/admin/users/{id}"), &token).await;
    }
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"workbench_http_requests_total{method="GET",route="/api/admin/users/{id}",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"workbench_http_requests_total{method="GET",route="/api/admin/users/{id}",status="404"} 2"#));
    assert!(text.contains(r#"workbench_http_requests_total{method="POST",route="/api/auth/login",status="200"} 1"#));
    assert!(text.contains(r#"workbench_http_request_duration_seconds_count{method="GET",route="/api/admin/users/{id}"} 3"#));
    assert!(!text.contains("/api/admin/users/2"), "raw paths never become labels");
}

/// SQLite's log is copied into the database by the server's background checkpoint, not by
/// whichever request's commit crosses SQLite's own threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_checkpoints_sqlite_in_the_background() {
    use sea_orm::ConnectionTrait;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let file = app.state.settings.data_dir.join("workbench.db");
    app.state.db.execute_unprepared("CREATE TABLE bulk (v TEXT)").await.unwrap();
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    let rows = vec![format!("('{}')", "x".repeat(1000)); 20].join(", ");
    for _ in 0..100 {
        app.state.db.execute_unprepared(&format!("INSERT INTO bulk VALUES {rows}")).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while size() < before + (1 << 20) {
        assert!(std::time::Instant::now() < deadline, "2 MB committed, the database file grew only {} bytes in 5 s", size() - before);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
