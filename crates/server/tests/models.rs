//! The local models registry and the built-in `local` provider: first-start registration of the
//! reference model, registration by hand and by scan, ownership of adapters, and chat and
//! comparison with local models (base and PEFT adapter) streamed through the engine.
mod common;

use std::path::{Path, PathBuf};

use common::{Response, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use store::entities::models;

on_all_backends!(
    the_reference_model_is_registered_on_first_start_and_chats,
    admins_register_and_scan_models,
    adapters_belong_to_their_creator,
    the_built_in_provider_cannot_be_repointed_or_deleted,
);

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn reference_model() -> PathBuf {
    let path = std::env::var_os("WORKBENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("data/models").join(MODEL_FILE));
    assert!(path.is_file(), "reference model not found at {}: run scripts/fetch-model.sh", path.display());
    path
}

/// The PEFT adapter of the reference fixtures (trained for the reference model).
fn fixture_adapter() -> PathBuf {
    let path = workspace().join("../shared/fixtures/reference/peft/adapter");
    assert!(path.join("adapter_config.json").is_file(), "PEFT fixture adapter not found at {}", path.display());
    path
}

/// An app whose models folder holds the reference model, as after `scripts/fetch-model.sh`.
async fn spawn_with_model(backend: common::Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        let dir = s.data_dir.join("models");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(reference_model(), dir.join(MODEL_FILE)).unwrap();
        s.engine.default_max_tokens = 6;
    })
    .await
}

fn items(res: &Response) -> Vec<Value> {
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res.json["items"].as_array().unwrap().clone()
}

/// Reads a whole SSE response into `(event, data)` pairs.
async fn stream(app: &TestApp, path: &str, token: &str, body: Value) -> Vec<(String, Value)> {
    let res = app.client.post(app.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    let text = tokio::time::timeout(std::time::Duration::from_secs(120), res.text()).await.expect("stream finished").unwrap();
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let event = frame.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message").to_owned();
            let data: String = frame.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (event, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

fn joined(events: &[(String, Value)], name: &str) -> String {
    events.iter().filter(|(e, _)| e == name).map(|(_, d)| d["delta"].as_str().unwrap()).collect()
}

async fn the_reference_model_is_registered_on_first_start_and_chats(app: TestApp) {
    let app = { let backend = app.backend; drop(app); spawn_with_model(backend).await };
    let (_, ann) = app.user_token("ann@example.com").await;
    let listed = items(&app.get("/api/models", &ann).await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let base = &listed[0];
    assert_eq!(base["model_type"], "base");
    assert_eq!(base["status"], "ready");
    assert_eq!(base["parameters"]["architecture"], "llama");
    assert_eq!(base["parameters"]["context_length"], 8192);
    assert!(base["size_bytes"].as_i64().unwrap() > 50_000_000);
    let id = base["id"].as_i64().unwrap();

    // The built-in provider lists it, so configs and the usable flag work as for remote models.
    let admin = app.admin_token().await;
    let offered = items(&app.get("/api/providers/local/models", &admin).await);
    assert!(offered.iter().any(|m| m["model_id"] == base["name"] && m["available"] == true), "{offered:?}");

    // One click: a config for it, reused on the second click.
    let first = app.post(&format!("/api/models/{id}/model-config"), Some(&ann), json!({})).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.json["provider_id"], "local");
    assert_eq!(first.json["usable"], true);
    let again = app.post(&format!("/api/models/{id}/model-config"), Some(&ann), json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["id"], first.json["id"]);
    let config = first.json["id"].as_str().unwrap().to_owned();

    // A streamed answer from the engine, saved whole, with the server's metrics.
    let session = app.post("/api/chat/sessions", Some(&ann), json!({})).await.json["id"].as_i64().unwrap();
    let path = format!("/api/chat/sessions/{session}/messages");
    let events = stream(&app, &path, &ann, json!({"content": "What is the capital of France?", "model_config_id": config})).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"meta"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{events:?}");
    let answer = joined(&events, "content");
    assert!(!answer.is_empty(), "{events:?}");
    let done = &events.last().unwrap().1;
    assert_eq!(done["finish_reason"], "length", "6 tokens at most: {done}");
    assert!(done["metrics"]["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(done["metrics"]["answer_tokens"].as_u64().unwrap() >= 1);
    let usage = &events.iter().find(|(e, _)| e == "usage").expect("usage event").1;
    assert_eq!(usage["completion_tokens"], 6);
    let saved = items(&app.get(&format!("/api/chat/sessions/{session}/messages"), &ann).await);
    assert_eq!(saved.last().unwrap()["content"].as_str().unwrap(), answer);

    // A comparison of the base with itself at another temperature streams both.
    let other = app
        .post("/api/model-configs", Some(&ann), json!({"provider_id": "local", "model_id": base["name"], "temperature": 1.5, "max_tokens": 4}))
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    let events = stream(
        &app,
        "/api/comparisons",
        &ann,
        json!({"input": "Say hello.", "model_config_ids": [config, other.json["id"]]}),
    )
    .await;
    let done: Vec<&Value> = events.iter().filter(|(e, _)| e == "done").map(|(_, d)| d).collect();
    assert_eq!(done.len(), 2, "{events:?}");
    assert!(done.iter().all(|d| d["finish_reason"] == "length"), "{done:?}");
}

async fn admins_register_and_scan_models(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, ann) = app.user_token("ann@example.com").await;
    assert!(items(&app.get("/api/models", &ann).await).is_empty(), "an empty models folder registers nothing");
    let model = reference_model();

    let body = json!({"name": "smol", "model_path": model, "model_type": "base", "description": "reference"});
    assert_eq!(app.post("/api/models", Some(&ann), body.clone()).await.status, StatusCode::FORBIDDEN);
    let created = app.post("/api/models", Some(&admin), body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json["parameters"]["num_layers"], 30);
    let base_id = created.json["id"].as_i64().unwrap();
    let dup = app.post("/api/models", Some(&admin), body).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error_code(), "model_exists");

    // Every bad field is named at once.
    let bad = app
        .post("/api/models", Some(&admin), json!({"name": "bad name!", "model_path": "/no/such.gguf", "model_type": "base"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let fields = bad.json["error"]["fields"].as_object().unwrap();
    assert!(fields.contains_key("name") && fields.contains_key("model_path"), "{}", bad.body);
    let not_gguf = app
        .post("/api/models", Some(&admin), json!({"name": "readme", "model_path": fixture_adapter().join("adapter_config.json"), "model_type": "base"}))
        .await;
    assert_eq!(not_gguf.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(not_gguf.json["error"]["fields"]["model_path"].as_str().unwrap().contains("GGUF"), "{}", not_gguf.body);
    let orphan = app
        .post("/api/models", Some(&admin), json!({"name": "orphan", "model_path": fixture_adapter(), "model_type": "lora"}))
        .await;
    assert_eq!(orphan.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(orphan.json["error"]["fields"]["base_model_id"].is_string(), "{}", orphan.body);
    let adapter = app
        .post("/api/models", Some(&admin), json!({"name": "peft-fixture", "model_path": fixture_adapter(), "model_type": "lora", "base_model_id": base_id}))
        .await;
    assert_eq!(adapter.status, StatusCode::CREATED, "{}", adapter.body);
    assert_eq!(adapter.json["base_model_id"], base_id);
    assert_eq!(adapter.json["parameters"]["lora_alpha"], 8.0);

    // A base with adapters on it stays.
    let res = app.call(Method::DELETE, &format!("/api/models/{base_id}"), Some(&admin), None).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "model_in_use");

    // Scan: a new file in the models folder is registered; a vanished one becomes `missing`.
    let dir = app.state.settings.data_dir.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&model, dir.join("copy.gguf")).unwrap();
    assert_eq!(app.post("/api/models/scan", Some(&ann), json!({})).await.status, StatusCode::FORBIDDEN);
    let scan = app.post("/api/models/scan", Some(&admin), json!({})).await;
    assert_eq!(scan.status, StatusCode::OK, "{}", scan.body);
    assert_eq!(scan.json["added"], json!(["copy"]));
    let again = app.post("/api/models/scan", Some(&admin), json!({})).await;
    assert_eq!(again.json["added"], json!([]), "a second scan adds nothing");
    std::fs::remove_file(dir.join("copy.gguf")).unwrap();
    let gone = app.post("/api/models/scan", Some(&admin), json!({})).await;
    assert_eq!(gone.json["missing"], json!(["copy"]));
    let copy = items(&app.get("/api/models?model_type=base", &admin).await).into_iter().find(|m| m["name"] == "copy").unwrap();
    assert_eq!(copy["status"], "missing");
    let offered = items(&app.get("/api/providers/local/models", &admin).await);
    assert!(offered.iter().any(|m| m["model_id"] == "copy" && m["available"] == false), "{offered:?}");

    // Disabling hides a model from chat; the admin may remove rows (files stay).
    let res = app.call(Method::PATCH, &format!("/api/models/{base_id}"), Some(&ann), Some(json!({"is_available": false}))).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "users do not manage shared base models");
    let id = copy["id"].as_i64().unwrap();
    assert_eq!(app.call(Method::DELETE, &format!("/api/models/{id}"), Some(&admin), None).await.status, StatusCode::NO_CONTENT);
    assert!(model.is_file());
    let bad_type = app.get("/api/models?model_type=gguf", &ann).await;
    assert_eq!(bad_type.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// An adapter trained by Ann is Ann's: Bob neither sees nor uses it.
async fn adapters_belong_to_their_creator(app: TestApp) {
    let admin = app.admin_token().await;
    let (ann_id, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let base = app
        .post("/api/models", Some(&admin), json!({"name": "smol", "model_path": reference_model(), "model_type": "base"}))
        .await;
    let base_id = base.json["id"].as_i64().unwrap();
    // As a finished training task registers it.
    let adapter = server::local_models::insert(
        &app.state.db,
        server::local_models::NewModel {
            name: "ann-adapter".into(),
            display_name: "Ann's adapter".into(),
            model_path: fixture_adapter(),
            model_type: server::local_models::TYPE_LORA,
            description: None,
            parameters: json!({"base_model_id": base_id, "r": 8}),
            created_by: Some(ann_id),
        },
    )
    .await
    .unwrap();
    server::local_models::sync_provider(&app.state).await.unwrap();
    let path = format!("/api/models/{}", adapter.id);

    assert_eq!(items(&app.get("/api/models", &ann).await).len(), 2);
    assert_eq!(items(&app.get("/api/models", &bob).await).len(), 1, "Bob sees only the shared base");
    assert_eq!(app.get(&path, &ann).await.status, StatusCode::OK);
    assert_eq!(app.get(&path, &bob).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path, &admin).await.status, StatusCode::OK);
    for (method, body) in [(Method::PATCH, Some(json!({"display_name": "mine now"}))), (Method::DELETE, None)] {
        assert_eq!(app.call(method, &path, Some(&bob), body).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.post(&format!("{path}/model-config"), Some(&bob), json!({})).await.status, StatusCode::NOT_FOUND);
    // Nor through the generic config route, although the shared provider list names it.
    let res = app.post("/api/model-configs", Some(&bob), json!({"provider_id": "local", "model_id": "ann-adapter"})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.json["error"]["fields"]["model_id"].is_string());

    let renamed = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"display_name": "Tuned", "description": ""}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json["display_name"], "Tuned");
    let config = app.post(&format!("{path}/model-config"), Some(&ann), json!({})).await;
    assert_eq!(config.status, StatusCode::CREATED, "{}", config.body);
    assert_eq!(config.json["usable"], true);
    let config_id = config.json["id"].as_str().unwrap();

    // The adapter answers through chat: the engine loads base + adapter.
    let res = app.call(Method::PATCH, &format!("/api/model-configs/{config_id}"), Some(&ann), Some(json!({"max_tokens": 3}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let session = app.post("/api/chat/sessions", Some(&ann), json!({})).await.json["id"].as_i64().unwrap();
    let events = stream(&app, &format!("/api/chat/sessions/{session}/messages"), &ann, json!({"content": "Hi", "model_config_id": config_id})).await;
    let done = &events.last().unwrap().1;
    // Sampled at the config's temperature: a short answer may end on its own.
    assert!(["length", "stop"].contains(&done["finish_reason"].as_str().unwrap()), "{events:?}");
    assert!(!joined(&events, "content").is_empty());

    // Disabled: the config stays but is no longer usable.
    let res = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"is_available": false}))).await;
    assert_eq!(res.status, StatusCode::OK);
    let id = config.json["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/model-configs/{id}"), &ann).await.json["usable"], false);
    assert_eq!(app.call(Method::DELETE, &path, Some(&ann), None).await.status, StatusCode::NO_CONTENT);
    assert!(models_in_db(&app).await.iter().all(|m| m.name != "ann-adapter"));
}

async fn models_in_db(app: &TestApp) -> Vec<models::Model> {
    use sea_orm::EntityTrait;
    models::Entity::find().all(&app.state.db).await.unwrap()
}

async fn the_built_in_provider_cannot_be_repointed_or_deleted(app: TestApp) {
    let admin = app.admin_token().await;
    let provider = app.get("/api/providers/local", &admin).await;
    assert_eq!(provider.status, StatusCode::OK, "{}", provider.body);
    assert_eq!(provider.json["kind"], "local");
    let res = app
        .call(Method::PATCH, "/api/providers/local", Some(&admin), Some(json!({"api_url": "https://example.com", "api_key": "sk-x"})))
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let fields = res.json["error"]["fields"].as_object().unwrap();
    assert!(fields.contains_key("api_url") && fields.contains_key("api_key"));
    // The web form sends every field back: unchanged values pass.
    let renamed = app
        .call(Method::PATCH, "/api/providers/local", Some(&admin), Some(json!({"name": "On this server", "kind": "local", "api_url": "local://engine"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    let res = app.call(Method::DELETE, "/api/providers/local", Some(&admin), None).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.error_code(), "built_in_provider");
    let test = app.post("/api/providers/local/test", Some(&admin), json!({})).await;
    assert_eq!(test.status, StatusCode::OK);
    assert_eq!(test.json["ok"], true);
}
