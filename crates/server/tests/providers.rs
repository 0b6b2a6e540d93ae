//! Providers, model-list sync against the fake provider, model configs, secrets and the outbound
//! URL policy, over real HTTP.
mod common;

use common::{Response, TestApp};
use fake_provider::{FakeModel, FakeProvider, Scenario};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_all_backends!(
    provider_crud_and_validation,
    users_are_forbidden_admin_routes,
    sync_each_kind,
    test_connection_reports_latency_or_the_provider_error,
    one_failing_sync_does_not_affect_another,
    model_configs_are_private_and_validated,
    disabling_a_provider_disables_its_configs,
    no_response_contains_the_key,
    url_policy,
    key_rotation_reencrypts_every_secret,
);

mod key_file {
    use super::common::{Backend, TestApp};
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_replaces_the_key_file() {
        super::key_file_rotation(TestApp::spawn(Backend::Sqlite).await).await
    }
}

const KEY: &str = "sk-test-plaintext-key-0123456789";

async fn patch(app: &TestApp, path: &str, token: &str, body: Value) -> Response {
    app.call(Method::PATCH, path, Some(token), Some(body)).await
}

async fn delete(app: &TestApp, path: &str, token: &str) -> Response {
    app.call(Method::DELETE, path, Some(token), None).await
}

async fn post_empty(app: &TestApp, path: &str, token: &str) -> Response {
    app.call(Method::POST, path, Some(token), None).await
}

async fn allow_private_urls(app: &TestApp, admin: &str, allow: bool) {
    let res = patch(app, "/api/admin/settings", admin, json!({"allow_private_provider_urls": allow})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
}

/// Creates a provider and returns its id.
async fn create_provider(app: &TestApp, admin: &str, body: Value) -> String {
    let res = app.post("/api/providers", Some(admin), body).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    res.json["id"].as_str().unwrap().to_owned()
}

async fn sync(app: &TestApp, admin: &str, id: &str) -> Response {
    post_empty(app, &format!("/api/providers/{id}/sync"), admin).await
}

/// Admin's view of a provider's models, by model id.
async fn models(app: &TestApp, token: &str, provider: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/providers/{provider}/models?page_size=100"), token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res.json["items"].as_array().unwrap().clone()
}

fn model<'a>(models: &'a [Value], id: &str) -> &'a Value {
    models.iter().find(|m| m["model_id"] == id).unwrap_or_else(|| panic!("no model {id} in {models:?}"))
}

fn field_errors(res: &Response) -> Vec<String> {
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let mut names: Vec<String> = res.json["error"]["fields"].as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

/// A fake listing two models, an admin allowed to reach it, and a synced OpenAI-kind provider.
async fn synced_provider(app: &TestApp) -> (FakeProvider, String, String) {
    let fake = FakeProvider::start().await;
    let admin = app.admin_token().await;
    allow_private_urls(app, &admin, true).await;
    let id = create_provider(
        app,
        &admin,
        json!({"id": "fake", "name": "Fake", "kind": "openai", "api_url": fake.openai_base_url(), "api_key": KEY}),
    )
    .await;
    assert_eq!(sync(app, &admin, &id).await.status, StatusCode::OK);
    (fake, admin, id)
}

async fn provider_crud_and_validation(app: TestApp) {
    let admin = app.admin_token().await;
    let body = json!({"name": "Fake OpenAI", "kind": "openai", "api_url": "https://api.example.com/v1/", "api_key": KEY,
        "description": "the usual one"});
    let created = app.post("/api/providers", Some(&admin), body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json["id"], "fake-openai", "the id is a slug of the name");
    assert_eq!(created.json["api_key_masked"], "sk-…6789");
    assert_eq!(created.json["api_url"], "https://api.example.com/v1");
    assert_eq!(created.json["status"], 1);
    assert!(created.json.get("api_key").is_none() && created.json.get("api_key_encrypted").is_none());

    // The same name again gets the next free slug; an explicit id that is taken is a 409.
    let second = app.post("/api/providers", Some(&admin), body.clone()).await;
    assert_eq!(second.json["id"], "fake-openai-2", "{}", second.body);
    let mut taken = body.clone();
    taken["id"] = json!("fake-openai");
    let conflict = app.post("/api/providers", Some(&admin), taken).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.error_code(), "provider_exists");

    // Every bad field at once; `local` is refused with a reason.
    let bad = app
        .post(
            "/api/providers",
            Some(&admin),
            json!({"id": "Bad Id", "name": " ", "kind": "local", "api_url": "ftp://x.io", "status": 5, "icon_url": "javascript:x"}),
        )
        .await;
    assert_eq!(field_errors(&bad), ["api_url", "icon_url", "id", "kind", "name", "status"]);
    assert!(bad.json["error"]["fields"]["kind"].as_str().unwrap().contains("reserved"), "{}", bad.body);
    let unknown_kind = app.post("/api/providers", Some(&admin), json!({"name": "x", "kind": "gemini", "api_url": "https://x.io"})).await;
    assert_eq!(field_errors(&unknown_kind), ["kind"]);
    let missing = app.post("/api/providers", Some(&admin), json!({"name": "x", "kind": "openai"})).await;
    assert_eq!(field_errors(&missing), ["api_url"]);

    let got = app.get("/api/providers/fake-openai", &admin).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json["description"], "the usual one");
    assert_eq!(app.get("/api/providers/nope", &admin).await.status, StatusCode::NOT_FOUND);

    // PATCH: an absent key is kept, a new one replaces it, "" removes it.
    let renamed = patch(&app, "/api/providers/fake-openai", &admin, json!({"name": "Renamed", "description": ""})).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json["name"], "Renamed");
    assert_eq!(renamed.json["description"], Value::Null);
    assert_eq!(renamed.json["api_key_masked"], "sk-…6789");
    let rekeyed = patch(&app, "/api/providers/fake-openai", &admin, json!({"api_key": "sk-another-key-abcd"})).await;
    assert_eq!(rekeyed.json["api_key_masked"], "sk-…abcd");
    let unkeyed = patch(&app, "/api/providers/fake-openai", &admin, json!({"api_key": ""})).await;
    assert_eq!(unkeyed.json["api_key_masked"], Value::Null);
    let bad_patch = patch(&app, "/api/providers/fake-openai", &admin, json!({"kind": "local", "temperature": 1})).await;
    assert_eq!(bad_patch.status, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused: {}", bad_patch.body);
    assert_eq!(patch(&app, "/api/providers/nope", &admin, json!({"name": "x"})).await.status, StatusCode::NOT_FOUND);

    // Users list enabled providers only; admins see all.
    assert_eq!(patch(&app, "/api/providers/fake-openai-2", &admin, json!({"status": 0})).await.status, StatusCode::OK);
    let (_, user) = app.user_token("ann@example.com").await;
    let for_user = app.get("/api/providers", &user).await;
    // Plus the built-in `local` provider, which every instance has.
    assert_eq!(for_user.json["total"], 2, "{}", for_user.body);
    assert_eq!(for_user.json["items"][0]["id"], "fake-openai");
    assert_eq!(for_user.json["items"][1]["id"], "local");
    let for_admin = app.get("/api/providers", &admin).await;
    assert_eq!(for_admin.json["total"], 3);
    assert_eq!(for_admin.json["page_size"], 20);

    assert_eq!(delete(&app, "/api/providers/fake-openai", &admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/providers/fake-openai", &admin).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(&app, "/api/providers/fake-openai", &admin).await.status, StatusCode::NOT_FOUND);
}

async fn users_are_forbidden_admin_routes(app: TestApp) {
    let admin = app.admin_token().await;
    let id = create_provider(&app, &admin, json!({"id": "p", "name": "P", "kind": "openai", "api_url": "https://x.example.com"})).await;
    let (_, user) = app.user_token("bob@example.com").await;
    let body = json!({"name": "x", "kind": "openai", "api_url": "https://x.example.com", "status": 0});
    let calls: [(Method, String, Option<Value>); 7] = [
        (Method::POST, "/api/providers".into(), Some(body.clone())),
        (Method::GET, format!("/api/providers/{id}"), None),
        (Method::PATCH, format!("/api/providers/{id}"), Some(json!({"status": 0}))),
        (Method::DELETE, format!("/api/providers/{id}"), None),
        (Method::POST, format!("/api/providers/{id}/test"), None),
        (Method::POST, format!("/api/providers/{id}/sync"), None),
        (Method::PATCH, format!("/api/providers/{id}/models/some/model:1"), Some(json!({"status": 0}))),
    ];
    for (method, path, body) in calls {
        let res = app.call(method.clone(), &path, Some(&user), body.clone()).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{method} {path}: {}", res.body);
        let anonymous = app.call(method.clone(), &path, None, body).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // Nothing changed.
    let provider = app.get(&format!("/api/providers/{id}"), &admin).await;
    assert_eq!(provider.json["status"], 1);
    assert_eq!(app.get("/api/providers", &admin).await.json["total"], 2, "the provider and the built-in `local` one");
}

async fn sync_each_kind(app: TestApp) {
    let fake = FakeProvider::start().await;
    fake.set_models(vec![
        FakeModel::new("meta-llama/Llama-3:8b", 4_700_000_000, false),
        FakeModel::new("llava:7b", 5_000_000_000, true),
    ]);
    let admin = app.admin_token().await;
    allow_private_urls(&app, &admin, true).await;
    let (_, user) = app.user_token("ann@example.com").await;
    for (kind, url) in [("openai", fake.openai_base_url()), ("anthropic", fake.base_url()), ("ollama", fake.base_url())] {
        fake.set_models(vec![
            FakeModel::new("meta-llama/Llama-3:8b", 4_700_000_000, false),
            FakeModel::new("llava:7b", 5_000_000_000, true),
        ]);
        let id = create_provider(&app, &admin, json!({"id": kind, "name": kind, "kind": kind, "api_url": url, "api_key": KEY})).await;
        let first = sync(&app, &admin, &id).await;
        assert_eq!(first.status, StatusCode::OK, "{kind}: {}", first.body);
        assert_eq!(first.json, json!({"added": 2, "updated": 0, "unavailable": 0, "total": 2}), "{kind}");
        let listed = models(&app, &admin, &id).await;
        let llama = model(&listed, "meta-llama/Llama-3:8b");
        assert_eq!(llama["id"], format!("{kind}:meta-llama/Llama-3:8b"));
        assert_eq!(llama["available"], true);
        assert_eq!(llama["status"], 1);
        match kind {
            "ollama" => {
                assert_eq!(llama["size"], 4_700_000_000_i64, "sizes come from Ollama");
                assert_eq!(model(&listed, "llava:7b")["is_vision"], true, "vision from the clip family");
                assert_eq!(llama["is_vision"], false);
                assert!(llama["description"].as_str().unwrap().contains("135M"), "{llama}");
            }
            "anthropic" => assert_eq!(llama["model_name"], "Fake meta-llama/Llama-3:8b", "display names"),
            _ => assert_eq!(llama["description"], "owned by fake"),
        }

        // The admin disables one model; the route takes ids with '/' and ':' raw or encoded.
        let disabled = patch(&app, &format!("/api/providers/{id}/models/meta-llama/Llama-3:8b"), &admin, json!({"status": 0})).await;
        assert_eq!(disabled.status, StatusCode::OK, "{kind}: {}", disabled.body);
        assert_eq!(disabled.json["status"], 0);
        let encoded = patch(&app, &format!("/api/providers/{id}/models/llava%3A7b"), &admin, json!({"status": 1})).await;
        assert_eq!(encoded.status, StatusCode::OK, "{kind}: {}", encoded.body);
        assert_eq!(encoded.json["model_id"], "llava:7b");
        let unknown = patch(&app, &format!("/api/providers/{id}/models/nope"), &admin, json!({"status": 1})).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let bad_status = patch(&app, &format!("/api/providers/{id}/models/llava:7b"), &admin, json!({"status": 7})).await;
        assert_eq!(field_errors(&bad_status), ["status"]);

        // A model vanishes: kept, marked unavailable, hidden from users.
        fake.set_models(vec![FakeModel::new("meta-llama/Llama-3:8b", 4_700_000_000, false)]);
        let second = sync(&app, &admin, &id).await;
        assert_eq!(second.json, json!({"added": 0, "updated": 1, "unavailable": 1, "total": 1}), "{kind}");
        let listed = models(&app, &admin, &id).await;
        assert_eq!(listed.len(), 2);
        assert_eq!(model(&listed, "llava:7b")["available"], false);
        assert_eq!(model(&listed, "llava:7b")["status"], 1, "availability does not touch the admin's choice");
        let for_user = models(&app, &user, &id).await;
        assert!(for_user.is_empty(), "{kind}: disabled and vanished models are hidden from users: {for_user:?}");

        // It re-appears: available again; the admin's disabling of the other model survives.
        fake.set_models(vec![
            FakeModel::new("meta-llama/Llama-3:8b", 4_800_000_000, false),
            FakeModel::new("llava:7b", 5_000_000_000, true),
        ]);
        let third = sync(&app, &admin, &id).await;
        assert_eq!(third.json, json!({"added": 0, "updated": 2, "unavailable": 0, "total": 2}), "{kind}");
        let listed = models(&app, &admin, &id).await;
        assert_eq!(model(&listed, "llava:7b")["available"], true);
        assert_eq!(model(&listed, "meta-llama/Llama-3:8b")["status"], 0, "sync keeps the admin's choice");
        let for_user = models(&app, &user, &id).await;
        assert_eq!(for_user.len(), 1);
        assert_eq!(for_user[0]["model_id"], "llava:7b");
    }
    // Each kind spoke its own API, and sent the key its own way.
    let requests = fake.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.split('?').next().unwrap()).collect();
    assert!(paths.contains(&"/v1/models") && paths.contains(&"/api/tags"), "{paths:?}");
    let anthropic = requests.iter().find(|r| r.header("anthropic-version").is_some()).expect("an Anthropic call");
    assert_eq!(anthropic.header("x-api-key"), Some(KEY));
    let openai = requests.iter().find(|r| r.header("authorization").is_some()).expect("a bearer call");
    assert_eq!(openai.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    // A user cannot see a disabled provider's models at all.
    assert_eq!(patch(&app, "/api/providers/ollama", &admin, json!({"status": 0})).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/providers/ollama/models", &user).await.status, StatusCode::NOT_FOUND);
    assert_eq!(models(&app, &admin, "ollama").await.len(), 2);
}

async fn test_connection_reports_latency_or_the_provider_error(app: TestApp) {
    let (fake, admin, id) = synced_provider(&app).await;
    let ok = post_empty(&app, &format!("/api/providers/{id}/test"), &admin).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.json["ok"], true);
    assert_eq!(ok.json["models_seen"], 2);
    assert!(ok.json["latency_ms"].is_u64());
    assert!(ok.json.get("error").is_none());

    fake.set_scenario(Scenario::Status { code: 401, message: "Incorrect API key provided.".into() });
    let failed = post_empty(&app, &format!("/api/providers/{id}/test"), &admin).await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    assert_eq!(failed.json["ok"], false);
    let error = failed.json["error"].as_str().unwrap();
    assert!(error.contains("401") && error.contains("Incorrect API key provided."), "{error}");
    assert!(failed.json.get("models_seen").is_none());

    // A provider nobody listens on: the connection error, still a 200.
    drop(fake);
    let gone = post_empty(&app, &format!("/api/providers/{id}/test"), &admin).await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(gone.json["ok"], false);
    assert!(gone.json["error"].as_str().unwrap().contains("connect"), "{}", gone.body);
    assert_eq!(post_empty(&app, "/api/providers/nope/test", &admin).await.status, StatusCode::NOT_FOUND);
}

async fn one_failing_sync_does_not_affect_another(app: TestApp) {
    let (good, admin, good_id) = synced_provider(&app).await;
    let bad = FakeProvider::start().await;
    let bad_id = create_provider(&app, &admin, json!({"id": "broken", "name": "Broken", "kind": "ollama", "api_url": bad.base_url()})).await;
    assert_eq!(sync(&app, &admin, &bad_id).await.status, StatusCode::OK);
    bad.set_scenario(Scenario::Status { code: 500, message: "the GPU caught fire".into() });
    good.set_models(vec![FakeModel::new("fresh-model", 1, false)]);

    let failed = sync(&app, &admin, &bad_id).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.body);
    assert_eq!(failed.error_code(), "upstream_error");
    assert!(failed.json["error"]["message"].as_str().unwrap().contains("the GPU caught fire"), "{}", failed.body);
    // The failed sync changed nothing: its models are still available.
    assert!(models(&app, &admin, &bad_id).await.iter().all(|m| m["available"] == true));

    let fine = sync(&app, &admin, &good_id).await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
    assert_eq!(fine.json["added"], 1);
    assert_eq!(model(&models(&app, &admin, &good_id).await, "fresh-model")["available"], true);
}

/// Creates a config as `token` and returns it.
async fn create_config(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post("/api/model-configs", Some(token), body).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    res.json
}

async fn model_configs_are_private_and_validated(app: TestApp) {
    let (_fake, admin, provider) = synced_provider(&app).await;
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;

    let config = create_config(&app, &ann, json!({"provider_id": provider, "model_id": "fake-vision"})).await;
    assert_eq!(config["temperature"], 0.7);
    assert_eq!(config["max_tokens"], 8192);
    assert_eq!(config["top_p"], 0.9);
    assert_eq!(config["top_k"], 0.0);
    assert_eq!(config["status"], 1);
    assert_eq!(config["type"], "text", "OpenAI model lists carry no vision flag");
    assert_eq!(config["model_name"], "fake-vision");
    assert_eq!(config["provider_name"], "Fake");
    assert!(config["endpoint"].as_str().unwrap().ends_with("/v1"));
    assert_eq!(config["usable"], true);
    let id = config["id"].as_str().unwrap();
    let path = format!("/api/model-configs/{id}");

    // Bob cannot see, change or delete Ann's config; it does not even exist for him.
    assert_eq!(app.get(&path, &bob).await.status, StatusCode::NOT_FOUND);
    assert_eq!(patch(&app, &path, &bob, json!({"temperature": 1.0})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(patch(&app, &path, &bob, json!({"temperature": 9.0})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(&app, &path, &bob).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/model-configs", &bob).await.json["total"], 0);
    assert_eq!(app.get("/api/model-configs", &admin).await.json["total"], 0, "admins too see only their own");
    let still = app.get(&path, &ann).await;
    assert_eq!(still.status, StatusCode::OK);
    assert_eq!(still.json["temperature"], 0.7);

    // Field-level 422s, every bad field at once.
    let bad = app
        .post(
            "/api/model-configs",
            Some(&ann),
            json!({"provider_id": provider, "model_id": "fake-normal", "temperature": 2.1, "max_tokens": 0,
                "top_p": 1.01, "top_k": -1, "type": "audio", "status": 2}),
        )
        .await;
    assert_eq!(field_errors(&bad), ["max_tokens", "status", "temperature", "top_k", "top_p", "type"]);
    let bad_patch = patch(&app, &path, &ann, json!({"temperature": -0.1, "top_p": 2, "max_tokens": 1.5})).await;
    assert_eq!(field_errors(&bad_patch), ["max_tokens", "temperature", "top_p"]);
    let wrong_type = patch(&app, &path, &ann, json!({"temperature": "hot"})).await;
    assert_eq!(field_errors(&wrong_type), ["temperature"]);
    let unknown = app.post("/api/model-configs", Some(&ann), json!({"provider_id": "nope", "model_id": "x"})).await;
    assert_eq!(field_errors(&unknown), ["provider_id"]);
    let no_model = app.post("/api/model-configs", Some(&ann), json!({"provider_id": provider, "model_id": "x"})).await;
    assert_eq!(field_errors(&no_model), ["model_id"]);

    // Edges of the ranges are fine.
    let edited = patch(&app, &path, &ann, json!({"temperature": 2, "top_p": 0, "max_tokens": 1, "top_k": 40, "type": "text", "model_name": "Mine"})).await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!((edited.json["temperature"].as_f64(), edited.json["top_p"].as_f64()), (Some(2.0), Some(0.0)));
    assert_eq!((edited.json["max_tokens"].as_i64(), edited.json["top_k"].as_f64()), (Some(1), Some(40.0)));
    assert_eq!(edited.json["model_name"], "Mine");

    // A model the admin disabled cannot be picked; existing configs on it become unusable.
    let disabled = patch(&app, &format!("/api/providers/{provider}/models/fake-vision"), &admin, json!({"status": 0})).await;
    assert_eq!(disabled.status, StatusCode::OK);
    let refused = app.post("/api/model-configs", Some(&ann), json!({"provider_id": provider, "model_id": "fake-vision"})).await;
    assert_eq!(field_errors(&refused), ["model_id"]);
    assert_eq!(app.get(&path, &ann).await.json["usable"], false);

    // Paging and ownership of the list.
    create_config(&app, &ann, json!({"provider_id": provider, "model_id": "fake-normal"})).await;
    create_config(&app, &bob, json!({"provider_id": provider, "model_id": "fake-normal"})).await;
    let page = app.get("/api/model-configs?page=1&page_size=1", &ann).await;
    assert_eq!((page.json["total"].as_u64(), page.json["items"].as_array().unwrap().len()), (Some(2), 1));
    assert_eq!(field_errors(&app.get("/api/model-configs?page_size=1000", &ann).await), ["page_size"]);

    assert_eq!(delete(&app, &path, &ann).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &ann).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/model-configs", &ann).await.json["total"], 1);
    assert_eq!(app.get("/api/model-configs", &bob).await.json["total"], 1);
}

async fn disabling_a_provider_disables_its_configs(app: TestApp) {
    let (_fake, admin, provider) = synced_provider(&app).await;
    let (_, ann) = app.user_token("ann@example.com").await;
    let config = create_config(&app, &ann, json!({"provider_id": provider, "model_id": "fake-normal", "temperature": 0.2})).await;
    assert_eq!(config["usable"], true);

    assert_eq!(patch(&app, &format!("/api/providers/{provider}"), &admin, json!({"status": 0, "name": "Renamed"})).await.status, StatusCode::OK);
    let list = app.get("/api/model-configs", &ann).await;
    assert_eq!(list.json["items"][0]["usable"], false, "{}", list.body);
    assert_eq!(list.json["items"][0]["provider_name"], "Renamed", "copies follow the provider");
    let refused = app.post("/api/model-configs", Some(&ann), json!({"provider_id": provider, "model_id": "fake-normal"})).await;
    assert_eq!(field_errors(&refused), ["provider_id"]);
    assert!(refused.json["error"]["fields"]["provider_id"].as_str().unwrap().contains("disabled"));
    let visible = app.get("/api/providers", &ann).await;
    assert!(visible.json["items"].as_array().unwrap().iter().all(|p| p["id"] == "local"), "{}", visible.body);

    assert_eq!(patch(&app, &format!("/api/providers/{provider}"), &admin, json!({"status": 1})).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/model-configs", &ann).await.json["items"][0]["usable"], true);
    // A config the user switched off is not usable either.
    let off = patch(&app, &format!("/api/model-configs/{}", config["id"].as_str().unwrap()), &ann, json!({"status": 0})).await;
    assert_eq!(off.json["usable"], false);

    // Deleting the provider takes its models and configs with it.
    assert_eq!(delete(&app, &format!("/api/providers/{provider}"), &admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/model-configs", &ann).await.json["total"], 0);
}

async fn no_response_contains_the_key(app: TestApp) {
    let fake = FakeProvider::start().await;
    let admin = app.admin_token().await;
    allow_private_urls(&app, &admin, true).await;
    let (_, user) = app.user_token("ann@example.com").await;
    let mut seen: Vec<(String, Response)> = Vec::new();
    let body = json!({"id": "secret", "name": "Secret", "kind": "openai", "api_url": fake.openai_base_url(), "api_key": KEY});
    seen.push(("create".into(), app.post("/api/providers", Some(&admin), body).await));
    seen.push(("get".into(), app.get("/api/providers/secret", &admin).await));
    seen.push(("list admin".into(), app.get("/api/providers", &admin).await));
    seen.push(("list user".into(), app.get("/api/providers", &user).await));
    seen.push(("patch".into(), patch(&app, "/api/providers/secret", &admin, json!({"api_key": KEY, "name": "S"})).await));
    seen.push(("test".into(), post_empty(&app, "/api/providers/secret/test", &admin).await));
    seen.push(("sync".into(), sync(&app, &admin, "secret").await));
    seen.push(("models".into(), app.get("/api/providers/secret/models", &user).await));
    let config = app.post("/api/model-configs", Some(&user), json!({"provider_id": "secret", "model_id": "fake-normal"})).await;
    let config_path = format!("/api/model-configs/{}", config.json["id"].as_str().unwrap());
    seen.push(("create config".into(), config));
    seen.push(("get config".into(), app.get(&config_path, &user).await));
    seen.push(("list configs".into(), app.get("/api/model-configs", &user).await));
    seen.push(("patch config".into(), patch(&app, &config_path, &user, json!({"top_k": 5})).await));
    // A provider echoing the key in its error text.
    fake.set_scenario(Scenario::Status { code: 401, message: format!("Incorrect API key provided: {KEY}") });
    seen.push(("failing test".into(), post_empty(&app, "/api/providers/secret/test", &admin).await));
    seen.push(("failing sync".into(), sync(&app, &admin, "secret").await));
    seen.push(("openapi".into(), app.get("/api/openapi.json", &admin).await));

    for (what, res) in &seen {
        assert!(res.status.as_u16() < 500 || res.status == StatusCode::BAD_GATEWAY, "{what}: {}", res.status);
        assert!(!res.body.contains(KEY), "{what} leaks the key: {}", res.body);
        assert!(!res.body.contains("0123456789"), "{what} leaks part of the key: {}", res.body);
    }
    assert_eq!(seen[0].1.json["api_key_masked"], "sk-…6789");
    let listed = seen[3].1.json["items"].as_array().unwrap().iter().find(|p| p["id"] == "secret").expect("listed").clone();
    assert_eq!(listed["api_key_masked"], Value::Null, "users do not even see the masked key");
    assert_eq!(seen[5].1.json["ok"], true, "the stored key was usable: {}", seen[5].1.body);
    assert!(seen[13].1.body.contains("[redacted]"), "{}", seen[13].1.body);
    // The provider did get the key: it is stored, just never shown.
    let sent = fake.requests().iter().filter_map(|r| r.header("authorization").map(str::to_owned)).collect::<Vec<_>>();
    assert!(sent.iter().all(|h| h == &format!("Bearer {KEY}")) && !sent.is_empty(), "{sent:?}");

    if app.backend == common::Backend::Sqlite {
        key_is_not_in_the_database_file(&app).await;
    }
}

/// Reads every file of the SQLite database (main file and WAL, after a checkpoint) and looks for
/// the plaintext key.
async fn key_is_not_in_the_database_file(app: &TestApp) {
    use sea_orm::ConnectionTrait;
    app.state.db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)").await.expect("checkpoint");
    let mut checked = 0;
    for entry in std::fs::read_dir(&app.state.settings.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("workbench.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        checked += bytes.len();
        let needle = KEY.as_bytes();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the plaintext key", path.display());
    }
    assert!(checked > 0, "found the database file");
    // The row does hold a sealed value.
    use sea_orm::EntityTrait;
    let row = store::entities::model_providers::Entity::find_by_id("secret".to_owned()).one(&app.state.db).await.unwrap().unwrap();
    let sealed = row.api_key_encrypted.unwrap();
    assert!(sealed.starts_with("v1:"));
    assert_eq!(app.state.cipher.decrypt(&sealed, "secret").unwrap(), KEY);
}

async fn url_policy(app: TestApp) {
    let admin = app.admin_token().await;
    let provider = |url: &str| json!({"name": "Local", "kind": "ollama", "api_url": url});

    for url in ["http://169.254.169.254/latest", "http://[fe80::1]:11434", "http://100.100.100.200"] {
        let res = app.post("/api/providers", Some(&admin), provider(url)).await;
        assert_eq!(field_errors(&res), ["api_url"], "{url}");
        assert!(res.json["error"]["fields"]["api_url"].as_str().unwrap().contains("refused"), "{}", res.body);
    }
    let private = app.post("/api/providers", Some(&admin), provider("http://127.0.0.1:11434")).await;
    assert_eq!(field_errors(&private), ["api_url"]);
    assert!(private.json["error"]["fields"]["api_url"].as_str().unwrap().contains("private"), "{}", private.body);

    allow_private_urls(&app, &admin, true).await;
    let id = create_provider(&app, &admin, provider("http://127.0.0.1:11434")).await;
    // Metadata stays refused with the setting on, on PATCH too.
    let res = app.post("/api/providers", Some(&admin), provider("http://169.254.169.254")).await;
    assert_eq!(field_errors(&res), ["api_url"]);
    let res = patch(&app, &format!("/api/providers/{id}"), &admin, json!({"api_url": "http://169.254.169.254/"})).await;
    assert_eq!(field_errors(&res), ["api_url"]);

    // Turning the setting off again stops requests to the saved private URL.
    let fake = FakeProvider::start().await;
    assert_eq!(patch(&app, &format!("/api/providers/{id}"), &admin, json!({"api_url": fake.base_url()})).await.status, StatusCode::OK);
    assert_eq!(sync(&app, &admin, &id).await.status, StatusCode::OK);
    allow_private_urls(&app, &admin, false).await;
    let before = fake.request_count();
    let refused = post_empty(&app, &format!("/api/providers/{id}/test"), &admin).await;
    assert_eq!(refused.json["ok"], false);
    assert!(refused.json["error"].as_str().unwrap().contains("refused"), "{}", refused.body);
    let refused_sync = sync(&app, &admin, &id).await;
    assert_eq!(refused_sync.status, StatusCode::BAD_GATEWAY);
    assert_eq!(fake.request_count(), before, "no request reached the private address");
}

async fn key_rotation_reencrypts_every_secret(app: TestApp) {
    use sea_orm::EntityTrait;
    use server::{crypto::Cipher, key_rotation::rotate_encryption_key};
    use store::entities::model_providers;

    let admin = app.admin_token().await;
    create_provider(&app, &admin, json!({"id": "a", "name": "A", "kind": "openai", "api_url": "https://a.example.com", "api_key": KEY})).await;
    create_provider(&app, &admin, json!({"id": "b", "name": "B", "kind": "openai", "api_url": "https://b.example.com"})).await;
    let settings = patch(&app, "/api/admin/settings", &admin, json!({"swanlab": {"api_key": "swanlab-key-123456"}})).await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);

    let old = app.state.cipher.clone();
    let new = Cipher::new(&[42u8; 32]);
    let wrong = Cipher::new(&[1u8; 32]);
    // With a wrong old key nothing changes.
    assert!(rotate_encryption_key(&app.state.db, &wrong, &Cipher::new(&[2u8; 32])).await.is_err());
    let report = rotate_encryption_key(&app.state.db, &old, &new).await.expect("rotation");
    assert_eq!((report.rotated, report.already_rotated), (2, 0));

    let row = model_providers::Entity::find_by_id("a".to_owned()).one(&app.state.db).await.unwrap().unwrap();
    let sealed = row.api_key_encrypted.unwrap();
    assert_eq!(new.decrypt(&sealed, "a").unwrap(), KEY);
    assert!(old.decrypt(&sealed, "a").is_err());
    assert_eq!(row.api_key_hint.as_deref(), Some("sk-…6789"));
    let runtime = store::entities::app_settings::Entity::find_by_id("runtime".to_owned()).one(&app.state.db).await.unwrap().unwrap();
    let runtime: server::runtime_settings::RuntimeSettings = serde_json::from_str(&runtime.value).unwrap();
    assert_eq!(runtime.swanlab_api_key(&new).as_deref(), Some("swanlab-key-123456"));
    assert_eq!(runtime.swanlab_api_key(&old), None);

    // Running it again (say after a crash before the key file was replaced) is harmless.
    let again = rotate_encryption_key(&app.state.db, &old, &new).await.expect("second rotation");
    assert_eq!((again.rotated, again.already_rotated), (0, 2));

    // This server still runs with the old key: a clear error, not a 500 or a garbled key.
    let stale = post_empty(&app, "/api/providers/a/test", &admin).await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.error_code(), "api_key_unreadable");
}

/// `workbench keys rotate` as the lead wires it: the key file is replaced, and the new key opens
/// the stored secrets.
async fn key_file_rotation(app: TestApp) {
    use sea_orm::EntityTrait;
    use server::{config::parse_key, crypto::Cipher, key_rotation::rotate_key_file};

    let admin = app.admin_token().await;
    create_provider(&app, &admin, json!({"id": "a", "name": "A", "kind": "openai", "api_url": "https://a.example.com", "api_key": KEY})).await;
    let key_path = app.state.settings.data_dir.join("encryption.key");
    let before = std::fs::read_to_string(&key_path).unwrap();

    let report = rotate_key_file(&app.state.settings).await.expect("rotation");
    assert_eq!(report.rotated, 1);
    let after = std::fs::read_to_string(&key_path).unwrap();
    assert_ne!(before.trim(), after.trim());
    assert!(!app.state.settings.data_dir.join("encryption.key.new").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let cipher = Cipher::new(&parse_key(&after).unwrap());
    let row = store::entities::model_providers::Entity::find_by_id("a".to_owned()).one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(cipher.decrypt(&row.api_key_encrypted.unwrap(), "a").unwrap(), KEY);
}
