//! Comparisons over real HTTP against the fake provider: models streamed side by side, a slow one
//! and a failing one not holding back the others, persistence, re-run, export, isolation.
mod common;

use std::{collections::HashMap, time::Duration};

use common::{Response, TestApp};
use fake_provider::{FakeModel, FakeProvider};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_all_backends!(
    models_stream_side_by_side_and_are_saved,
    a_dropped_client_cancels_every_model,
    a_comparison_is_saved_while_it_streams_and_a_restart_keeps_it,
    rerun_replaces_the_results_and_exports_work,
    other_users_comparisons_do_not_exist_and_bad_input_is_a_422,
);

const PATIENCE: Duration = Duration::from_secs(10);
const MODELS: [&str; 5] = ["fake-normal", "fake-think", "fake-slow-400", "fake-status-500", "fake-endless"];

struct Setup {
    fake: FakeProvider,
    token: String,
    configs: HashMap<&'static str, String>,
}

async fn setup(app: &TestApp) -> Setup {
    let fake = FakeProvider::start().await;
    fake.set_models(MODELS.iter().map(|m| FakeModel::new(m, 1, false)).collect());
    let admin = app.admin_token().await;
    app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"allow_private_provider_urls": true}))).await;
    let res = app.post("/api/providers", Some(&admin), json!({"id": "fake", "name": "Fake", "kind": "openai", "api_url": fake.openai_base_url()})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(app.call(Method::POST, "/api/providers/fake/sync", Some(&admin), None).await.status, StatusCode::OK);
    let (_, token) = app.user_token("ann@example.com").await;
    let mut configs = HashMap::new();
    for model in MODELS {
        let res = app.post("/api/model-configs", Some(&token), json!({"provider_id": "fake", "model_id": model})).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        configs.insert(model, res.json["id"].as_str().unwrap().to_owned());
    }
    Setup { fake, token, configs }
}

struct Events {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    async fn open(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> Events {
        let mut req = app.client.post(app.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}: {}", res.text().await.unwrap());
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Events { res, buf: Vec::new() }
    }

    async fn next(&mut self) -> Option<(String, Value)> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                    let frame = String::from_utf8(self.buf.drain(..at + 2).collect()).unwrap();
                    let event = frame.lines().find_map(|l| l.strip_prefix("event: ")).unwrap().to_owned();
                    let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                    return Some((event, serde_json::from_str(data).unwrap()));
                }
                match self.res.chunk().await.expect("chunk") {
                    Some(bytes) => self.buf.extend_from_slice(&bytes),
                    None => return None,
                }
            }
        })
        .await
        .expect("the stream stalled")
    }

    async fn rest(mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// Events of one model, after the run's own `meta`.
fn lane<'a>(events: &'a [(String, Value)], config: &str) -> Vec<&'a (String, Value)> {
    events.iter().filter(|(_, d)| d["model_config_id"] == config).collect()
}

fn joined(events: &[&(String, Value)], name: &str) -> String {
    events.iter().filter(|(e, _)| e == name).map(|(_, d)| d["delta"].as_str().unwrap()).collect()
}

async fn models_stream_side_by_side_and_are_saved(app: TestApp) {
    let s = setup(&app).await;
    let ids = [&s.configs["fake-normal"], &s.configs["fake-slow-400"], &s.configs["fake-status-500"], &s.configs["fake-think"]];
    let body = json!({"input": "Say hello", "model_config_ids": ids, "test_name": "Greetings", "system_prompt": "Be kind."});
    let events = Events::open(&app, "/api/comparisons", &s.token, Some(body)).await.rest().await;

    let (first, meta) = &events[0];
    assert_eq!(first, "meta");
    assert_eq!(meta["model_config_ids"], json!(ids));
    let test_id = meta["test_id"].as_i64().unwrap();
    assert!(events[1..].iter().all(|(_, d)| d["model_config_id"].is_string()), "every later event names its model");

    // The slow model did not hold back the fast one: the fast one was done before the slow one began.
    let position = |config: &str, name: &str| events.iter().position(|(e, d)| e == name && d["model_config_id"] == config).unwrap();
    assert!(position(ids[0], "done") < position(ids[1], "content"), "{events:?}");
    // The failing model failed alone.
    let failing = lane(&events, ids[2]);
    let names: Vec<&str> = failing.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["meta", "error", "done"]);
    assert!(failing[1].1["message"].as_str().unwrap().contains("500"));
    assert_eq!(failing[2].1["finish_reason"], "error");
    for config in [ids[0], ids[1], ids[3]] {
        let own = lane(&events, config);
        assert_eq!(own.last().unwrap().0, "done");
        assert_eq!(own.last().unwrap().1["finish_reason"], "stop");
    }
    assert_eq!(joined(&lane(&events, ids[3]), "reasoning"), "The user greets me; greet back.");

    // Saved with every output, reasoning, metrics and error, in the order asked.
    let saved = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert_eq!(saved.json["test_name"], "Greetings");
    assert_eq!(saved.json["input"], "Say hello");
    assert_eq!(saved.json["system_prompt"], "Be kind.");
    assert_eq!(saved.json["is_streaming"], false);
    let results = saved.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (result, config) in results.iter().zip(ids) {
        assert_eq!(result["model_config_id"], *config);
        assert_eq!(result["content"], joined(&lane(&events, config), "content"));
    }
    assert_eq!(results[0]["content"], "Hello from the fake provider.");
    assert_eq!(results[2]["finish_reason"], "error");
    assert!(results[2]["error"].as_str().unwrap().contains("500"));
    assert_eq!(results[3]["reasoning"], "The user greets me; greet back.");
    assert!(results[1]["metrics"]["ttft_ms"].as_f64().unwrap() >= 400.0, "the slow model's delay is measured");
    let sent = s.fake.requests().into_iter().find(|r| r.body["model"] == "fake-normal").unwrap().body;
    assert_eq!(sent["messages"], json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hello"}]));

    let list = app.get("/api/comparisons?q=greet", &s.token).await;
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.json["items"][0]["id"], test_id);
}

async fn a_dropped_client_cancels_every_model(app: TestApp) {
    let s = setup(&app).await;
    let ids = [&s.configs["fake-endless"], &s.configs["fake-normal"], &s.configs["fake-endless"]];
    // The same config twice is refused.
    let res = app.post("/api/comparisons", Some(&s.token), json!({"input": "x", "model_config_ids": ids})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);

    let ids = [&s.configs["fake-endless"], &s.configs["fake-normal"]];
    let mut events = Events::open(&app, "/api/comparisons", &s.token, Some(json!({"input": "Count", "model_config_ids": ids}))).await;
    let test_id = events.next().await.unwrap().1["test_id"].as_i64().unwrap();
    // Wait until the normal model is done and the endless one has spoken.
    let (mut normal_done, mut endless_spoke) = (false, false);
    while !(normal_done && endless_spoke) {
        let (event, data) = events.next().await.expect("stream open");
        normal_done |= event == "done" && data["model_config_id"] == *ids[1];
        endless_spoke |= event == "content" && data["model_config_id"] == *ids[0];
    }
    drop(events);
    tokio::time::timeout(Duration::from_secs(2), s.fake.wait_for_disconnects(1)).await.expect("upstream saw the disconnect");

    // The results are saved after the cancel; wait (bounded) for the row to settle.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let saved = loop {
        let res = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await;
        if res.json["is_streaming"] == false {
            break res;
        }
        assert!(tokio::time::Instant::now() < deadline, "results never saved: {}", res.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let results = saved.json["results"].as_array().unwrap();
    assert_eq!(results[0]["finish_reason"], "stopped");
    assert!(!results[0]["content"].as_str().unwrap().is_empty());
    assert_eq!(results[1]["finish_reason"], "stop");
}

/// The comparison's transcript rows (`model_playground_chats`), oldest first.
async fn transcript(app: &TestApp, test_id: i64) -> Vec<store::entities::model_playground_chats::Model> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    use store::entities::model_playground_chats as rows;
    rows::Entity::find()
        .filter(rows::Column::SessionId.eq(server::chat::comparison::transcript_key(test_id as i32)))
        .order_by_asc(rows::Column::Id)
        .all(&app.state.db)
        .await
        .unwrap()
}

async fn a_comparison_is_saved_while_it_streams_and_a_restart_keeps_it(app: TestApp) {
    use sea_orm::{ActiveModelTrait, Set};
    let s = setup(&app).await;
    let ids = [&s.configs["fake-endless"], &s.configs["fake-status-500"]];
    let opened = std::time::Instant::now();
    let mut events = Events::open(&app, "/api/comparisons", &s.token, Some(json!({"input": "Count", "model_config_ids": ids}))).await;
    let test_id = events.next().await.unwrap().1["test_id"].as_i64().unwrap();

    // The transcript is written while the stream is open: the input, then each model's answer so far.
    let rows = tokio::time::timeout(PATIENCE, async {
        loop {
            let rows = transcript(&app, test_id).await;
            if rows.len() == 3 && !rows[1].content.is_empty() {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no checkpoint while streaming");
    assert!(opened.elapsed() >= server::chat::CHECKPOINT_EVERY, "checkpoints are periodic, not per chunk");
    assert_eq!((rows[0].role.as_str(), rows[0].content.as_str(), rows[0].model_config_id.as_deref()), ("user", "Count", None));
    assert_eq!((rows[1].role.as_str(), rows[1].model_config_id.as_deref()), ("assistant", Some(ids[0].as_str())));
    assert!(rows[1].content.starts_with("tick "), "{:?}", rows[1].content);
    assert!(rows.iter().all(|r| r.user_id.is_some()));
    let view = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await;
    assert_eq!(view.json["is_streaming"], true);

    // The end completes the transcript: the failed model also gets an `error` row.
    drop(events);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json["is_streaming"] == true {
        assert!(tokio::time::Instant::now() < deadline, "results never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = transcript(&app, test_id).await;
    let roles: Vec<&str> = rows.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "assistant", "error"]);
    assert_eq!(rows[3].model_config_id.as_deref(), Some(ids[1].as_str()));
    assert!(rows[3].content.contains("500"), "{:?}", rows[3].content);
    let results = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json["results"].clone();
    assert_eq!(results[0]["content"], rows[1].content.as_str(), "transcript and results agree");

    // A server that stops mid-run leaves the test streaming; the next start rebuilds its results
    // from the transcript, marked interrupted.
    store::entities::model_tests::ActiveModel { id: Set(test_id as i32), is_streaming: Set(true), ..Default::default() }
        .update(&app.state.db)
        .await
        .unwrap();
    server::chat::settle_interrupted(&app.state.db).await.unwrap();
    let settled = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json;
    assert_eq!(settled["is_streaming"], false);
    let results = settled["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["finish_reason"], "interrupted");
    assert_eq!(results[0]["model_name"], "fake-endless");
    assert_eq!(results[0]["content"], rows[1].content.as_str());

    // Deleting the comparison deletes its transcript.
    assert_eq!(app.call(Method::DELETE, &format!("/api/comparisons/{test_id}"), Some(&s.token), None).await.status, StatusCode::NO_CONTENT);
    assert!(transcript(&app, test_id).await.is_empty());
}

async fn rerun_replaces_the_results_and_exports_work(app: TestApp) {
    let s = setup(&app).await;
    let ids = [&s.configs["fake-normal"], &s.configs["fake-think"]];
    let events =
        Events::open(&app, "/api/comparisons", &s.token, Some(json!({"input": "Hi, \"there\"", "model_config_ids": ids}))).await.rest().await;
    let test_id = events[0].1["test_id"].as_i64().unwrap();
    let before = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json;
    assert_eq!(before["test_name"], "Hi, \"there\"", "the name defaults to the input");

    let requests = s.fake.request_count();
    let rerun = Events::open(&app, &format!("/api/comparisons/{test_id}/rerun"), &s.token, None).await.rest().await;
    assert_eq!(rerun[0].1["test_id"], test_id, "a re-run replaces the results of the same comparison");
    assert_eq!(s.fake.request_count(), requests + 2);
    let after = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json;
    assert_eq!(after["results"].as_array().unwrap().len(), 2);
    assert_eq!(after["input"], before["input"]);
    assert_eq!(app.get("/api/comparisons", &s.token).await.json["total"], 1);
    let rows = transcript(&app, test_id).await;
    let roles: Vec<&str> = rows.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "assistant"], "a re-run replaces the transcript");
    assert_eq!(rows[1].content, "Hello from the fake provider.");
    assert_eq!(rows[2].thinking.as_deref(), Some("The user greets me; greet back."));

    let json_export = app.get(&format!("/api/comparisons/{test_id}/export?format=json"), &s.token).await;
    assert_eq!(json_export.headers["content-disposition"], format!("attachment; filename=\"comparison-{test_id}.json\""));
    assert_eq!(json_export.json["results"].as_array().unwrap().len(), 2);
    let csv = app.get(&format!("/api/comparisons/{test_id}/export?format=csv"), &s.token).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers["content-disposition"], format!("attachment; filename=\"comparison-{test_id}.csv\""));
    let lines: Vec<&str> = csv.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("model_config_id,model_name,finish_reason,ttft_ms"));
    assert_eq!(lines.len(), 3, "{}", csv.body);
    assert!(lines[1].starts_with(&format!("{},fake-normal,stop,", ids[0])));
    let md = app.get(&format!("/api/comparisons/{test_id}/export?format=md"), &s.token).await;
    assert!(md.body.contains("## fake-think") && md.body.contains("Hello from the fake provider."), "{}", md.body);
    let bad = app.get(&format!("/api/comparisons/{test_id}/export?format=xls"), &s.token).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(app.call(Method::DELETE, &format!("/api/comparisons/{test_id}"), Some(&s.token), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.status, StatusCode::NOT_FOUND);
}

async fn other_users_comparisons_do_not_exist_and_bad_input_is_a_422(app: TestApp) {
    let s = setup(&app).await;
    let ids = [&s.configs["fake-normal"], &s.configs["fake-think"]];
    let prompt = app.post("/api/test-prompts", Some(&s.token), json!({"title": "Greeting test", "content": "Greet me"})).await;
    let prompt_id = prompt.json["id"].as_i64().unwrap();
    let events = Events::open(&app, "/api/comparisons", &s.token, Some(json!({"input": "", "test_prompt_id": prompt_id, "model_config_ids": ids})))
        .await
        .rest()
        .await;
    let test_id = events[0].1["test_id"].as_i64().unwrap();
    let saved = app.get(&format!("/api/comparisons/{test_id}"), &s.token).await.json;
    assert_eq!((saved["input"].as_str(), saved["test_name"].as_str()), (Some("Greet me"), Some("Greeting test")));

    let (_, bob) = app.user_token("bob@example.com").await;
    for (method, path) in [
        (Method::GET, format!("/api/comparisons/{test_id}")),
        (Method::DELETE, format!("/api/comparisons/{test_id}")),
        (Method::POST, format!("/api/comparisons/{test_id}/rerun")),
        (Method::GET, format!("/api/comparisons/{test_id}/export?format=csv")),
    ] {
        let res = app.call(method.clone(), &path, Some(&bob), None).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method} {path}: {}", res.body);
    }
    assert_eq!(app.get("/api/comparisons", &bob).await.json["total"], 0);

    let field = |res: Response| -> Vec<String> {
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        res.json["error"]["fields"].as_object().unwrap().keys().cloned().collect()
    };
    let post = |body: Value| app.post("/api/comparisons", Some(&bob), body);
    let bobs = app.post("/api/model-configs", Some(&bob), json!({"provider_id": "fake", "model_id": "fake-normal"})).await.json["id"].clone();
    assert_eq!(field(post(json!({"input": "x", "model_config_ids": [bobs]})).await), ["model_config_ids"]);
    assert_eq!(field(post(json!({"input": "x", "model_config_ids": vec![bobs.clone(); 9]})).await), ["model_config_ids"]);
    assert_eq!(field(post(json!({"input": "x", "model_config_ids": [bobs, ids[0]]})).await), ["model_config_ids[1]"], "Ann's config");
    assert_eq!(field(post(json!({"input": " ", "model_config_ids": [bobs, ids[0]]})).await), ["input"]);
    assert_eq!(field(post(json!({"input": "", "test_prompt_id": prompt_id, "model_config_ids": [bobs, ids[0]]})).await), ["test_prompt_id"]);
    assert_eq!(field(post(json!({"input": "x"})).await), ["model_config_ids"]);
}
