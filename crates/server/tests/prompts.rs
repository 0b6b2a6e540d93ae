//! System prompts and test prompts: built-in ones seeded, per-user ownership, admin-only
//! built-ins, search and category filter, and a saved system prompt reaching the provider.
mod common;

use common::{Response, TestApp};
use fake_provider::FakeProvider;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_all_backends!(
    built_in_system_prompts_are_seeded_and_read_only,
    system_prompts_are_private_searchable_and_validated,
    test_prompts_are_private_searchable_and_validated,
    a_saved_system_prompt_is_sent_upstream,
);

fn fields(res: &Response) -> Vec<String> {
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    res.json["error"]["fields"].as_object().unwrap().keys().cloned().collect()
}

fn ids(res: &Response) -> Vec<i64> {
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res.json["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

async fn built_in_system_prompts_are_seeded_and_read_only(app: TestApp) {
    let (_, ann) = app.user_token("ann@example.com").await;
    let list = app.get("/api/system-prompts?page_size=100", &ann).await;
    assert_eq!(list.status, StatusCode::OK);
    let built_in = list.json["items"].as_array().unwrap().clone();
    assert!(built_in.len() >= 3, "{}", list.body);
    assert!(built_in.iter().all(|p| p["is_system"] == true && p["created_by"].is_null()));
    assert_eq!(built_in.iter().filter(|p| p["is_default"] == true).count(), 1);
    let id = built_in[0]["id"].as_i64().unwrap();
    let path = format!("/api/system-prompts/{id}");

    assert_eq!(app.get(&path, &ann).await.status, StatusCode::OK);
    let res = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"name": "mine"}))).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert_eq!(res.error_code(), "built_in_prompt");
    assert_eq!(app.call(Method::DELETE, &path, Some(&ann), None).await.status, StatusCode::FORBIDDEN);
    let res = app.post("/api/system-prompts", Some(&ann), json!({"name": "x", "content": "y", "is_system": true})).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);

    // Admins manage them.
    let admin = app.admin_token().await;
    let res = app.call(Method::PATCH, &path, Some(&admin), Some(json!({"description": "Edited by the admin"}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(app.get(&path, &ann).await.json["description"], "Edited by the admin");
    let created = app.post("/api/system-prompts", Some(&admin), json!({"name": "House style", "content": "Write plainly.", "is_system": true})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let new_id = created.json["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/api/system-prompts/{new_id}"), &ann).await.status, StatusCode::OK, "everyone sees built-ins");
    assert_eq!(app.call(Method::DELETE, &format!("/api/system-prompts/{new_id}"), Some(&admin), None).await.status, StatusCode::NO_CONTENT);
}

async fn system_prompts_are_private_searchable_and_validated(app: TestApp) {
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let built_in = app.get("/api/system-prompts", &ann).await.json["total"].as_u64().unwrap();

    let res = app
        .post("/api/system-prompts", Some(&ann), json!({"name": "Pirate", "content": "Talk like a pirate.", "category": "fun",
            "description": "Arr", "format_type": "custom", "is_default": true}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!((res.json["is_system"].as_bool(), res.json["format_type"].as_str()), (Some(false), Some("custom")));
    let pirate = res.json["id"].as_i64().unwrap();
    let res = app.post("/api/system-prompts", Some(&ann), json!({"name": "Poet", "content": "Answer in verse.", "is_default": true})).await;
    assert_eq!(res.json["category"], "general");
    let poet = res.json["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/api/system-prompts/{pirate}"), &ann).await.json["is_default"], false, "one default per user");

    assert_eq!(ids(&app.get("/api/system-prompts?q=PIRA", &ann).await), [pirate]);
    assert_eq!(ids(&app.get("/api/system-prompts?category=fun", &ann).await), [pirate]);
    assert_eq!(app.get("/api/system-prompts", &ann).await.json["total"].as_u64().unwrap(), built_in + 2);
    assert_eq!(app.get("/api/system-prompts", &bob).await.json["total"].as_u64().unwrap(), built_in, "Bob sees only built-ins");

    let path = format!("/api/system-prompts/{poet}");
    for (method, body) in [(Method::GET, None), (Method::PATCH, Some(json!({"name": "Bob's"}))), (Method::DELETE, None)] {
        let res = app.call(method.clone(), &path, Some(&bob), body).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method}: {}", res.body);
    }
    let res = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"content": "Answer in haiku."}))).await;
    assert_eq!(res.json["content"], "Answer in haiku.");
    let res = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"is_system": true}))).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "a user cannot promote a prompt to built-in");

    let bad = app.post("/api/system-prompts", Some(&ann), json!({"name": " ", "content": "", "format_type": "xml", "category": ""})).await;
    let mut names = fields(&bad);
    names.sort();
    assert_eq!(names, ["category", "content", "format_type", "name"]);
    assert_eq!(fields(&app.call(Method::PATCH, &path, Some(&ann), Some(json!({"name": "x".repeat(300)}))).await), ["name"]);
    assert_eq!(app.call(Method::DELETE, &path, Some(&ann), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &ann).await.status, StatusCode::NOT_FOUND);
}

async fn test_prompts_are_private_searchable_and_validated(app: TestApp) {
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let res = app.post("/api/test-prompts", Some(&ann), json!({"title": "Primes", "content": "List primes below 20.", "category": "math"})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(res.json["category"], "math");
    let primes = res.json["id"].as_i64().unwrap();
    let res = app.post("/api/test-prompts", Some(&ann), json!({"title": "Haiku", "content": "Write a haiku about rust."})).await;
    let haiku = res.json["id"].as_i64().unwrap();
    assert_eq!(res.json["category"], Value::Null);

    assert_eq!(ids(&app.get("/api/test-prompts", &ann).await), [haiku, primes], "newest first");
    assert_eq!(ids(&app.get("/api/test-prompts?q=RUST", &ann).await), [haiku], "content is searched too");
    assert_eq!(ids(&app.get("/api/test-prompts?category=math", &ann).await), [primes]);
    assert_eq!(app.get("/api/test-prompts", &bob).await.json["total"], 0);

    let path = format!("/api/test-prompts/{primes}");
    for (method, body) in [(Method::GET, None), (Method::PATCH, Some(json!({"title": "x"}))), (Method::DELETE, None)] {
        let res = app.call(method.clone(), &path, Some(&bob), body).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method}: {}", res.body);
    }
    let res = app.call(Method::PATCH, &path, Some(&ann), Some(json!({"title": "Primes < 20", "category": ""}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!((res.json["title"].as_str(), res.json["category"].clone()), (Some("Primes < 20"), Value::Null));

    let mut names = fields(&app.post("/api/test-prompts", Some(&ann), json!({"title": "", "content": " "})).await);
    names.sort();
    assert_eq!(names, ["content", "title"]);
    assert_eq!(fields(&app.post("/api/test-prompts", Some(&ann), json!({"title": "t"})).await), ["content"]);
    assert_eq!(app.call(Method::DELETE, &path, Some(&ann), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &ann).await.status, StatusCode::NOT_FOUND);
}

async fn a_saved_system_prompt_is_sent_upstream(app: TestApp) {
    let fake = FakeProvider::start().await;
    let admin = app.admin_token().await;
    app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"allow_private_provider_urls": true}))).await;
    let res = app.post("/api/providers", Some(&admin), json!({"id": "fake", "name": "Fake", "kind": "openai", "api_url": fake.openai_base_url()})).await;
    assert_eq!(res.status, StatusCode::CREATED);
    app.call(Method::POST, "/api/providers/fake/sync", Some(&admin), None).await;
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let config = app.post("/api/model-configs", Some(&ann), json!({"provider_id": "fake", "model_id": "fake-normal"})).await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let prompt = app.post("/api/system-prompts", Some(&ann), json!({"name": "Terse", "content": "One sentence only."})).await.json["id"]
        .as_i64()
        .unwrap();
    let bobs = app.post("/api/system-prompts", Some(&bob), json!({"name": "Bob's", "content": "Bob's secret."})).await.json["id"]
        .as_i64()
        .unwrap();
    let session = app.post("/api/chat/sessions", Some(&ann), json!({})).await.json["id"].as_i64().unwrap();
    let path = format!("/api/chat/sessions/{session}/messages");

    let res = app.post(&path, Some(&ann), json!({"content": "Hi", "model_config_id": config, "system_prompt_id": bobs})).await;
    assert_eq!(fields(&res), ["system_prompt_id"], "another user's prompt does not exist");
    let res = app.post(&path, Some(&ann), json!({"content": "Hi", "model_config_id": config, "system_prompt_id": prompt})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(res.body.contains("event: done"));
    let sent = fake.last_request().unwrap().body;
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "One sentence only."}));
}
