//! Playground sessions and streamed answers over real HTTP against the fake provider: order and
//! completeness of the stream, persistence, stop and disconnect, upstream failures, regenerate,
//! edit-and-resend, export, isolation between users.
mod common;

use std::{collections::HashMap, time::Duration};

use common::{Response, TestApp};
use fake_provider::{FakeModel, FakeProvider};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_all_backends!(
    sessions_crud_search_and_cascade,
    an_answer_streams_in_order_and_is_saved_whole,
    reasoning_is_streamed_and_saved_apart,
    the_stop_endpoint_cancels_upstream_and_saves_the_partial,
    a_dropped_client_cancels_upstream_and_saves_the_partial,
    an_answer_is_saved_while_it_streams,
    a_broken_upstream_ends_in_error_and_the_session_goes_on,
    an_upstream_401_reaches_the_client_with_the_provider_message,
    regenerate_replaces_the_last_answer,
    edit_and_resend_replaces_later_messages,
    export_as_markdown_and_json,
    other_users_sessions_do_not_exist,
    bad_input_is_a_422,
    a_disabled_account_cannot_stream_even_just_after_streaming,
    config_changes_apply_to_the_next_answer_at_once,
    a_rename_during_the_first_answer_is_kept,
    a_session_deleted_elsewhere_is_gone_for_sending,
);

/// Upper bound for anything that should take milliseconds; a hang fails the test instead.
const PATIENCE: Duration = Duration::from_secs(10);

/// The scenario models the fake lists (see `fake_provider::Scenario::from_model`).
const MODELS: [&str; 7] =
    ["fake-normal", "fake-think", "fake-reasoning", "fake-endless", "fake-cut", "fake-status-401", "fake-garbage"];

struct Chat {
    fake: FakeProvider,
    token: String,
    /// Model id → the user's config id for it.
    configs: HashMap<&'static str, String>,
}

impl Chat {
    fn config(&self, model: &str) -> &str {
        &self.configs[model]
    }
}

/// A fake provider with every scenario model, synced, and a user with a config for each.
async fn setup(app: &TestApp) -> Chat {
    let fake = FakeProvider::start().await;
    fake.set_models(MODELS.iter().map(|m| FakeModel::new(m, 1, false)).collect());
    let admin = app.admin_token().await;
    let res = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"allow_private_provider_urls": true}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let res = app
        .post("/api/providers", Some(&admin), json!({"id": "fake", "name": "Fake", "kind": "openai", "api_url": fake.openai_base_url(), "api_key": "sk-fake-key-123456"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let res = app.call(Method::POST, "/api/providers/fake/sync", Some(&admin), None).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let (_, token) = app.user_token("ann@example.com").await;
    let mut configs = HashMap::new();
    for model in MODELS {
        let res = app.post("/api/model-configs", Some(&token), json!({"provider_id": "fake", "model_id": model})).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
        configs.insert(model, res.json["id"].as_str().unwrap().to_owned());
    }
    Chat { fake, token, configs }
}

async fn new_session(app: &TestApp, token: &str) -> i64 {
    let res = app.post("/api/chat/sessions", Some(token), json!({})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    res.json["id"].as_i64().unwrap()
}

/// An SSE response read frame by frame.
struct Events {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    async fn open(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Events {
        let res = app.client.request(method, app.url(path)).bearer_auth(token).json(&body).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}: {}", res.text().await.unwrap());
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Events { res, buf: Vec::new() }
    }

    /// The next `(event, data)`, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                    let frame = String::from_utf8(self.buf.drain(..at + 2).collect()).expect("UTF-8 frame");
                    let mut event = "message".to_owned();
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            event = v.to_owned();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data.push_str(v);
                        }
                    }
                    return Some((event, serde_json::from_str(&data).expect("JSON data")));
                }
                match self.res.chunk().await.expect("body chunk") {
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

/// Sends a message and reads the whole stream.
async fn send(app: &TestApp, token: &str, session: i64, content: &str, config: &str) -> Vec<(String, Value)> {
    let path = format!("/api/chat/sessions/{session}/messages");
    Events::open(app, Method::POST, &path, token, json!({"content": content, "model_config_id": config})).await.rest().await
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

fn joined(events: &[(String, Value)], name: &str) -> String {
    events.iter().filter(|(e, _)| e == name).map(|(_, d)| d["delta"].as_str().unwrap()).collect()
}

fn last<'a>(events: &'a [(String, Value)], name: &str) -> &'a Value {
    &events.iter().rev().find(|(e, _)| e == name).unwrap_or_else(|| panic!("no {name} in {events:?}")).1
}

async fn messages(app: &TestApp, token: &str, session: i64) -> Vec<Value> {
    let res = app.get(&format!("/api/chat/sessions/{session}/messages?page_size=100"), token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.json["total"].as_u64().unwrap() as usize, res.json["items"].as_array().unwrap().len());
    res.json["items"].as_array().unwrap().clone()
}

async fn sessions_crud_search_and_cascade(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let first = new_session(&app, &token).await;
    let named = app.post("/api/chat/sessions", Some(&token), json!({"title": "Rust questions"})).await;
    assert_eq!(named.status, StatusCode::CREATED);
    assert_eq!(named.json["title"], "Rust questions");
    let second = named.json["id"].as_i64().unwrap();

    let list = app.get("/api/chat/sessions", &token).await;
    assert_eq!(list.json["total"], 2);
    let ids: Vec<i64> = list.json["items"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [second, first], "newest first");
    let page = app.get("/api/chat/sessions?page=2&page_size=1", &token).await;
    assert_eq!(page.json["items"][0]["id"], first);
    let found = app.get("/api/chat/sessions?q=rust", &token).await;
    assert_eq!(found.json["total"], 1, "{}", found.body);
    assert_eq!(app.get("/api/chat/sessions?q=100%25", &token).await.json["total"], 0, "% is literal");

    let path = format!("/api/chat/sessions/{first}");
    let renamed = app.call(Method::PATCH, &path, Some(&token), Some(json!({"title": "  Renamed  "}))).await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json["title"], "Renamed");
    assert_eq!(app.get(&path, &token).await.json["title"], "Renamed");

    // Deleting a session deletes its messages.
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
    use store::entities::chat_messages;
    chat_messages::ActiveModel {
        session_id: Set(first as i32),
        role: Set("user".into()),
        content: Set("hi".into()),
        is_streaming: Set(false),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    // An answer left streaming by a restart is settled as interrupted at start-up, its text kept.
    let orphan = chat_messages::ActiveModel {
        session_id: Set(first as i32),
        role: Set("assistant".into()),
        content: Set("half an ans".into()),
        is_streaming: Set(true),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    server::chat::settle_interrupted(&app.state.db).await.unwrap();
    let settled = messages(&app, &token, first).await;
    let settled = settled.iter().find(|m| m["id"] == orphan.id).unwrap();
    assert_eq!((settled["is_streaming"].as_bool(), settled["finish_reason"].as_str()), (Some(false), Some("interrupted")));
    assert_eq!(settled["content"], "half an ans");

    let res = app.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &token).await.status, StatusCode::NOT_FOUND);
    let left = chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(first as i32))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

async fn an_answer_streams_in_order_and_is_saved_whole(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let path = format!("/api/chat/sessions/{session}/messages");
    let body = json!({"content": "Hello there, how are you today?", "model_config_id": chat.config("fake-normal"),
        "system_prompt": "Be brief."});
    let events = Events::open(&app, Method::POST, &path, &chat.token, body).await.rest().await;

    let order = names(&events);
    assert_eq!(order.first(), Some(&"meta"), "{order:?}");
    assert_eq!(order.last(), Some(&"done"), "{order:?}");
    assert!(order[1..order.len() - 1].iter().all(|e| *e == "content" || *e == "usage"), "{order:?}");
    assert!(order.iter().filter(|e| **e == "content").count() > 1, "the answer arrives in pieces");
    let meta = &events[0].1;
    assert_eq!(meta["session_id"], session);
    assert_eq!(meta["model"], "fake-normal");
    let done = last(&events, "done");
    assert_eq!(done["finish_reason"], "stop");
    let answer = joined(&events, "content");
    assert_eq!(answer, "Hello from the fake provider.");
    let usage = last(&events, "usage");
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(12), Some(7)));
    let metrics = &done["metrics"];
    assert!(metrics["ttft_ms"].as_f64().unwrap() >= 0.0);
    assert!(metrics["ttfa_ms"].as_f64().unwrap() >= metrics["ttft_ms"].as_f64().unwrap());
    assert!(metrics["total_ms"].as_f64().unwrap() >= metrics["ttfa_ms"].as_f64().unwrap());
    assert_eq!(metrics["answer_tokens"], 7, "the provider's usage is used when given");
    assert_eq!(metrics["reasoning_tokens"], 0);

    // Saved: the question before the upstream call, the answer whole, ids as announced.
    let saved = messages(&app, &chat.token, session).await;
    assert_eq!(saved.len(), 2);
    assert_eq!((saved[0]["id"].clone(), saved[0]["role"].as_str()), (meta["user_message_id"].clone(), Some("user")));
    assert_eq!(saved[1]["id"], meta["assistant_message_id"]);
    assert_eq!(saved[1]["content"], answer);
    assert_eq!(saved[1]["finish_reason"], "stop");
    assert_eq!(saved[1]["is_streaming"], false);
    assert_eq!(saved[1]["model_config_id"], chat.config("fake-normal"));
    assert_eq!(saved[1]["metrics"]["answer_tokens"], 7);
    assert_eq!(saved[1]["thinking"], Value::Null);

    // Messages are a list like every other: paged, oldest first.
    let page = app.get(&format!("/api/chat/sessions/{session}/messages?page=2&page_size=1"), &chat.token).await;
    assert_eq!((page.json["total"].as_u64(), page.json["items"][0]["id"].clone()), (Some(2), saved[1]["id"].clone()));

    // The title comes from the first message, cut to 50 characters.
    let title = app.get(&format!("/api/chat/sessions/{session}"), &chat.token).await.json["title"].clone();
    assert_eq!(title, "Hello there, how are you today?");

    // Upstream got the system prompt and the question; the next turn carries the history.
    let sent = chat.fake.last_request().unwrap().body;
    assert_eq!(sent["messages"], json!([{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there, how are you today?"}]));
    let second = send(&app, &chat.token, session, "And then?", chat.config("fake-normal")).await;
    assert_eq!(last(&second, "done")["finish_reason"], "stop");
    let sent = chat.fake.last_request().unwrap().body;
    let roles: Vec<&str> = sent["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], answer);
    let title_after = app.get(&format!("/api/chat/sessions/{session}"), &chat.token).await.json["title"].clone();
    assert_eq!(title_after, title, "only the first message names the session");
}

async fn reasoning_is_streamed_and_saved_apart(app: TestApp) {
    let chat = setup(&app).await;
    for (model, reasoning) in [("fake-think", "The user greets me; greet back."), ("fake-reasoning", "Native reasoning, step by step.")] {
        let session = new_session(&app, &chat.token).await;
        let events = send(&app, &chat.token, session, "Hi", chat.config(model)).await;
        let streamed_reasoning = joined(&events, "reasoning");
        let answer = joined(&events, "content");
        assert_eq!(streamed_reasoning, reasoning, "{model}");
        assert!(!answer.contains(reasoning), "{model}: reasoning leaked into the answer: {answer:?}");
        let first_content = names(&events).iter().position(|e| *e == "content").unwrap();
        let last_reasoning = names(&events).iter().rposition(|e| *e == "reasoning").unwrap();
        assert!(last_reasoning < first_content, "{model}: reasoning comes first");
        let saved = messages(&app, &chat.token, session).await;
        assert_eq!(saved[1]["thinking"], reasoning, "{model}");
        assert_eq!(saved[1]["content"], answer, "{model}");
        let metrics = &last(&events, "done")["metrics"];
        assert!(metrics["ttfa_ms"].as_f64().unwrap() >= metrics["ttft_ms"].as_f64().unwrap());
        assert!(metrics["reasoning_tokens"].as_u64().unwrap() > 0, "{model}: {metrics}");
    }
    // Inline `<think>` later in the answer is answer text.
    let session = new_session(&app, &chat.token).await;
    let events = send(&app, &chat.token, session, "Hi", chat.config("fake-think")).await;
    assert!(joined(&events, "content").contains("<think> is just a tag."));
}

/// Reads until the first answer delta; returns the events so far.
async fn until_content(events: &mut Events) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let is_content = event.0 == "content";
        seen.push(event);
        if is_content {
            return seen;
        }
    }
    panic!("the stream ended without content: {seen:?}");
}

async fn the_stop_endpoint_cancels_upstream_and_saves_the_partial(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let path = format!("/api/chat/sessions/{session}/messages");
    let mut events =
        Events::open(&app, Method::POST, &path, &chat.token, json!({"content": "Count forever", "model_config_id": chat.config("fake-endless")}))
            .await;
    let mut seen = until_content(&mut events).await;

    // One answer at a time per session.
    let busy = app.post(&path, Some(&chat.token), json!({"content": "again", "model_config_id": chat.config("fake-normal")})).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.error_code(), "answer_in_progress");

    let asked = std::time::Instant::now();
    let stopped = app.call(Method::POST, &format!("/api/chat/sessions/{session}/stop"), Some(&chat.token), None).await;
    assert_eq!(stopped.status, StatusCode::NO_CONTENT, "{}", stopped.body);
    tokio::time::timeout(PATIENCE, chat.fake.wait_for_disconnects(1)).await.expect("upstream saw the cancel");
    eprintln!("upstream cancelled and the partial saved {:?} after the stop request", asked.elapsed());
    seen.extend(events.rest().await);
    assert_eq!(last(&seen, "done")["finish_reason"], "stopped");
    assert!(!names(&seen).contains(&"error"));

    // The 204 came after the save: the partial is there, exactly what was streamed.
    let saved = messages(&app, &chat.token, session).await;
    assert_eq!(saved[1]["finish_reason"], "stopped");
    assert_eq!(saved[1]["is_streaming"], false);
    let partial = joined(&seen, "content");
    assert!(!partial.is_empty());
    assert_eq!(saved[1]["content"], partial);

    // The session is free again; stopping when nothing runs is a no-op.
    let next = send(&app, &chat.token, session, "Now answer", chat.config("fake-normal")).await;
    assert_eq!(last(&next, "done")["finish_reason"], "stop");
    let again = app.call(Method::POST, &format!("/api/chat/sessions/{session}/stop"), Some(&chat.token), None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
}

async fn a_dropped_client_cancels_upstream_and_saves_the_partial(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let path = format!("/api/chat/sessions/{session}/messages");
    let mut events =
        Events::open(&app, Method::POST, &path, &chat.token, json!({"content": "Count forever", "model_config_id": chat.config("fake-endless")}))
            .await;
    let seen = until_content(&mut events).await;
    let dropped = std::time::Instant::now();
    drop(events);
    // The bound: the provider request is cancelled within 100 ms of the client leaving.
    tokio::time::timeout(Duration::from_millis(100), chat.fake.wait_for_disconnects(1))
        .await
        .expect("upstream saw the disconnect within 100 ms");
    eprintln!("upstream cancelled {:?} after the client went away", dropped.elapsed());

    // Stop waits for an answer still being saved, so afterwards the row is final.
    let res = app.call(Method::POST, &format!("/api/chat/sessions/{session}/stop"), Some(&chat.token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let saved = messages(&app, &chat.token, session).await;
    assert_eq!(saved[1]["finish_reason"], "stopped");
    assert_eq!(saved[1]["is_streaming"], false);
    let partial = saved[1]["content"].as_str().unwrap();
    assert!(partial.starts_with(&joined(&seen, "content")), "{partial:?} vs {seen:?}");
}

/// The answer's row as stored, read straight from the database.
async fn stored_answer(app: &TestApp, id: i64) -> store::entities::chat_messages::Model {
    use sea_orm::EntityTrait;
    store::entities::chat_messages::Entity::find_by_id(id as i32).one(&app.state.db).await.unwrap().expect("the answer's row")
}

async fn an_answer_is_saved_while_it_streams(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let path = format!("/api/chat/sessions/{session}/messages");
    let opened = std::time::Instant::now();
    let mut events =
        Events::open(&app, Method::POST, &path, &chat.token, json!({"content": "Count forever", "model_config_id": chat.config("fake-endless")}))
            .await;
    let mut seen = until_content(&mut events).await;
    let id = seen[0].1["assistant_message_id"].as_i64().unwrap();

    // While the stream is open the row fills up: a crash now would lose at most the last second.
    let checkpoint = tokio::time::timeout(PATIENCE, async {
        loop {
            let row = stored_answer(&app, id).await;
            if !row.content.is_empty() {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no checkpoint while streaming");
    assert!(opened.elapsed() >= server::chat::CHECKPOINT_EVERY, "checkpoints are periodic, not per chunk");
    assert!(checkpoint.is_streaming, "a checkpoint is recognisable as unfinished");
    assert_eq!(checkpoint.finish_reason, None);
    assert!(checkpoint.content.starts_with("tick ") && checkpoint.content.len() > "tick ".len(), "{:?}", checkpoint.content);

    // The stream goes on after the checkpoint (read until the client has more than was saved:
    // what it has read so far may all be in the checkpoint), and the final write still sets
    // everything.
    seen.extend(until_content(&mut events).await);
    while joined(&seen, "content").len() <= checkpoint.content.len() {
        seen.extend(until_content(&mut events).await);
    }
    let stopped = app.call(Method::POST, &format!("/api/chat/sessions/{session}/stop"), Some(&chat.token), None).await;
    assert_eq!(stopped.status, StatusCode::NO_CONTENT);
    seen.extend(events.rest().await);
    let streamed = joined(&seen, "content");
    assert!(streamed.starts_with(&checkpoint.content) && streamed.len() > checkpoint.content.len());
    let last_row = stored_answer(&app, id).await;
    assert_eq!((last_row.is_streaming, last_row.finish_reason.as_deref()), (false, Some("stopped")));
    assert_eq!(last_row.content, streamed);
    assert!(last_row.metrics.is_some());
}

async fn a_broken_upstream_ends_in_error_and_the_session_goes_on(app: TestApp) {
    let chat = setup(&app).await;
    for model in ["fake-cut", "fake-garbage"] {
        let session = new_session(&app, &chat.token).await;
        let events = send(&app, &chat.token, session, "Hi", chat.config(model)).await;
        let order = names(&events);
        assert_eq!(&order[order.len() - 2..], ["error", "done"], "{model}: {order:?}");
        assert_eq!(last(&events, "done")["finish_reason"], "error");
        let error = last(&events, "error");
        assert!(error["code"].as_str().unwrap().starts_with("provider_"), "{error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
        let partial = joined(&events, "content");
        assert!(!partial.is_empty(), "{model}: some text came before the failure");

        let saved = messages(&app, &chat.token, session).await;
        assert_eq!(saved[1]["finish_reason"], "error");
        assert_eq!(saved[1]["content"], partial);
        assert_eq!(saved[1]["metrics"]["error"], *error);

        // The session is still usable, and the partial answer is part of its history.
        let next = send(&app, &chat.token, session, "Try again", chat.config("fake-normal")).await;
        assert_eq!(last(&next, "done")["finish_reason"], "stop");
        let sent = chat.fake.last_request().unwrap().body;
        assert_eq!(sent["messages"][1]["content"], partial);
        assert_eq!(messages(&app, &chat.token, session).await.len(), 4);
    }
}

async fn an_upstream_401_reaches_the_client_with_the_provider_message(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let events = send(&app, &chat.token, session, "Hi", chat.config("fake-status-401")).await;
    assert_eq!(names(&events), ["meta", "error", "done"]);
    let error = last(&events, "error");
    assert_eq!(error["code"], "provider_http_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("401") && message.contains("Incorrect API key provided."), "{message}");
    assert!(!message.contains("sk-fake-key"), "no key in messages");
    let done = last(&events, "done");
    assert_eq!(done["finish_reason"], "error");
    assert_eq!(done["metrics"]["ttft_ms"], Value::Null);
    let saved = messages(&app, &chat.token, session).await;
    assert_eq!((saved[1]["finish_reason"].as_str(), saved[1]["content"].as_str()), (Some("error"), Some("")));
}

async fn regenerate_replaces_the_last_answer(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    send(&app, &chat.token, session, "Hi", chat.config("fake-normal")).await;
    let before = messages(&app, &chat.token, session).await;
    let path = format!("/api/chat/sessions/{session}/regenerate");

    let events = Events::open(&app, Method::POST, &path, &chat.token, json!({"model_config_id": chat.config("fake-think")})).await.rest().await;
    let meta = &events[0].1;
    assert_eq!(meta["user_message_id"], before[0]["id"]);
    let after = messages(&app, &chat.token, session).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[0], "the question is untouched");
    assert_ne!(after[1]["id"], before[1]["id"]);
    assert_eq!(after[1]["id"], meta["assistant_message_id"]);
    assert_eq!(after[1]["model_config_id"], chat.config("fake-think"));
    assert_eq!(after[1]["content"], joined(&events, "content"));
    // Upstream saw the question only, not the replaced answer.
    let roles: Vec<Value> = chat.fake.last_request().unwrap().body["messages"].as_array().unwrap().iter().map(|m| m["role"].clone()).collect();
    assert_eq!(roles, [json!("user")]);

    // Without a config, the replaced answer's config is used again.
    let events = Events::open(&app, Method::POST, &path, &chat.token, json!({})).await.rest().await;
    assert_eq!(events[0].1["model"], "fake-think");
    assert_eq!(messages(&app, &chat.token, session).await.len(), 2);

    // Nothing to regenerate in an empty session.
    let empty = new_session(&app, &chat.token).await;
    let res = app.post(&format!("/api/chat/sessions/{empty}/regenerate"), Some(&chat.token), json!({})).await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
}

async fn edit_and_resend_replaces_later_messages(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    send(&app, &chat.token, session, "First question", chat.config("fake-normal")).await;
    send(&app, &chat.token, session, "Second question", chat.config("fake-normal")).await;
    let before = messages(&app, &chat.token, session).await;
    assert_eq!(before.len(), 4);
    let first = before[0]["id"].as_i64().unwrap();

    let path = format!("/api/chat/sessions/{session}/messages/{first}");
    let events =
        Events::open(&app, Method::PUT, &path, &chat.token, json!({"content": "Edited question", "model_config_id": chat.config("fake-think")}))
            .await
            .rest()
            .await;
    assert_eq!(last(&events, "done")["finish_reason"], "stop");
    let after = messages(&app, &chat.token, session).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0]["id"], first);
    assert_eq!(after[0]["content"], "Edited question");
    assert_eq!(after[1]["content"], joined(&events, "content"));
    let sent = chat.fake.last_request().unwrap().body;
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "Edited question"}]));

    // Only user messages can be edited; a message of another session does not exist here.
    let answer = after[1]["id"].as_i64().unwrap();
    let res = app
        .call(Method::PUT, &format!("/api/chat/sessions/{session}/messages/{answer}"), Some(&chat.token),
            Some(json!({"content": "x", "model_config_id": chat.config("fake-normal")})))
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let other = new_session(&app, &chat.token).await;
    let res = app
        .call(Method::PUT, &format!("/api/chat/sessions/{other}/messages/{first}"), Some(&chat.token),
            Some(json!({"content": "x", "model_config_id": chat.config("fake-normal")})))
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.body);
}

async fn export_as_markdown_and_json(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    send(&app, &chat.token, session, "What is 2+2?", chat.config("fake-think")).await;

    let md = app.get(&format!("/api/chat/sessions/{session}/export?format=md"), &chat.token).await;
    assert_eq!(md.status, StatusCode::OK);
    assert_eq!(md.headers["content-disposition"], format!("attachment; filename=\"session-{session}.md\""));
    assert!(md.headers["content-type"].to_str().unwrap().starts_with("text/markdown"));
    assert!(md.body.starts_with("# What is 2+2?\n"), "{}", md.body);
    assert!(md.body.contains("## User\n\nWhat is 2+2?"), "{}", md.body);
    assert!(md.body.contains("## Assistant (fake-think)"), "{}", md.body);
    assert!(md.body.contains("The user greets me; greet back."), "reasoning is exported");

    let js = app.get(&format!("/api/chat/sessions/{session}/export?format=json"), &chat.token).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(js.headers["content-disposition"], format!("attachment; filename=\"session-{session}.json\""));
    assert_eq!(js.json["session"]["id"], session);
    assert_eq!(js.json["messages"].as_array().unwrap().len(), 2);
    assert_eq!(js.json["messages"][1]["thinking"], "The user greets me; greet back.");

    let bad = app.get(&format!("/api/chat/sessions/{session}/export?format=pdf"), &chat.token).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.json["error"]["fields"]["format"].is_string());
}

async fn other_users_sessions_do_not_exist(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    send(&app, &chat.token, session, "Private", chat.config("fake-normal")).await;
    let question = messages(&app, &chat.token, session).await[0]["id"].as_i64().unwrap();
    let (_, bob) = app.user_token("bob@example.com").await;

    let base = format!("/api/chat/sessions/{session}");
    let config = chat.config("fake-normal");
    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, base.clone(), None),
        (Method::PATCH, base.clone(), Some(json!({"title": "mine now"}))),
        (Method::GET, format!("{base}/messages"), None),
        (Method::POST, format!("{base}/messages"), Some(json!({"content": "hi", "model_config_id": config}))),
        (Method::PUT, format!("{base}/messages/{question}"), Some(json!({"content": "hi", "model_config_id": config}))),
        (Method::POST, format!("{base}/regenerate"), Some(json!({}))),
        (Method::POST, format!("{base}/stop"), None),
        (Method::GET, format!("{base}/export?format=json"), None),
        (Method::DELETE, base.clone(), None),
    ];
    for (method, path, body) in calls {
        let res: Response = app.call(method.clone(), &path, Some(&bob), body).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method} {path}: {}", res.body);
    }
    assert_eq!(app.get("/api/chat/sessions", &bob).await.json["total"], 0);
    assert_eq!(messages(&app, &chat.token, session).await.len(), 2, "nothing changed");
    assert_eq!(app.get(&base, &chat.token).await.json["title"], "Private");

    // Bob cannot chat with Ann's model config in his own session either.
    let own = new_session(&app, &bob).await;
    let res = app.post(&format!("/api/chat/sessions/{own}/messages"), Some(&bob), json!({"content": "hi", "model_config_id": config})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.json["error"]["fields"]["model_config_id"].is_string());
}

async fn bad_input_is_a_422(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let path = format!("/api/chat/sessions/{session}/messages");
    let config = chat.config("fake-normal");
    let field = |res: &Response| -> Vec<String> {
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        res.json["error"]["fields"].as_object().unwrap().keys().cloned().collect()
    };
    let t = Some(chat.token.as_str());
    assert_eq!(field(&app.post(&path, t, json!({"content": "  ", "model_config_id": config})).await), ["content"]);
    assert_eq!(field(&app.post(&path, t, json!({"content": "hi"})).await), ["model_config_id"]);
    assert_eq!(field(&app.post(&path, t, json!({"content": "hi", "model_config_id": "nope"})).await), ["model_config_id"]);
    assert_eq!(
        field(&app.post(&path, t, json!({"content": "hi", "model_config_id": config, "system_prompt_id": 999999})).await),
        ["system_prompt_id"]
    );
    assert_eq!(field(&app.post(&path, t, json!({"content": 5, "model_config_id": config})).await), ["content"]);
    // Nothing was saved by the refused requests.
    assert!(messages(&app, &chat.token, session).await.is_empty());

    // A disabled config cannot be used.
    let res = app.call(Method::PATCH, &format!("/api/model-configs/{config}"), t, Some(json!({"status": 0}))).await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app.post(&path, t, json!({"content": "hi", "model_config_id": config})).await;
    assert!(field(&res).contains(&"model_config_id".to_owned()));
    assert!(res.json["error"]["fields"]["model_config_id"].as_str().unwrap().contains("cannot be used"));

    assert_eq!(field(&app.post("/api/chat/sessions", t, json!({"title": ""})).await), ["title"]);
    let long = "x".repeat(300);
    assert_eq!(field(&app.call(Method::PATCH, &format!("/api/chat/sessions/{session}"), t, Some(json!({"title": long}))).await), ["title"]);
    assert_eq!(field(&app.get("/api/chat/sessions?page_size=0", &chat.token).await), ["page_size"]);
    let res = app.get("/api/chat/sessions/abc", &chat.token).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
}

/// The streaming endpoints (and session creation) keep a copy of the account for a second;
/// disabling it through the admin API still takes effect at once.
async fn a_disabled_account_cannot_stream_even_just_after_streaming(app: TestApp) {
    let chat = setup(&app).await;
    let session = new_session(&app, &chat.token).await;
    let events = send(&app, &chat.token, session, "hi", chat.config("fake-normal")).await;
    assert_eq!(names(&events).last(), Some(&"done"));

    let (admin, _) = app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let users = app.get("/api/admin/users?q=ann@example.com", &admin).await;
    let ann = users.json["items"][0]["id"].as_i64().unwrap();
    let res = app.call(Method::PATCH, &format!("/api/admin/users/{ann}"), Some(&admin), Some(json!({"is_active": false}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);

    let path = format!("/api/chat/sessions/{session}/messages");
    let res = app.post(&path, Some(&chat.token), json!({"content": "again", "model_config_id": chat.config("fake-normal")})).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    let res = app.post("/api/comparisons", Some(&chat.token), json!({"input": "x", "model_config_ids": [chat.config("fake-normal"), chat.config("fake-think")]})).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    // Creating a session trusts the same copy of the account.
    let res = app.post("/api/chat/sessions", Some(&chat.token), json!({})).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
}

/// Chats keep a resolved model config for a second; a change to the config, its provider or the
/// provider's model through the API still applies to the very next answer.
async fn config_changes_apply_to_the_next_answer_at_once(app: TestApp) {
    let chat = setup(&app).await;
    let (admin, _) = app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let session = new_session(&app, &chat.token).await;
    let config = chat.config("fake-normal");
    let path = format!("/api/chat/sessions/{session}/messages");
    let works = || async {
        let events = send(&app, &chat.token, session, "hi", config).await;
        assert_eq!(last(&events, "done")["finish_reason"], "stop", "{events:?}");
    };
    let refused = |why: &'static str| {
        let (app, path, token) = (&app, &path, &chat.token);
        async move {
            let res = app.post(path, Some(token), json!({"content": "hi", "model_config_id": config})).await;
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
            let reason = res.json["error"]["fields"]["model_config_id"].as_str().unwrap();
            assert!(reason.contains(why), "{reason}");
        }
    };
    works().await;

    let changes: [(&str, String); 3] = [
        ("admin", "/api/providers/fake/models/fake-normal".to_owned()),
        ("admin", "/api/providers/fake".to_owned()),
        ("user", format!("/api/model-configs/{config}")),
    ];
    for (who, change) in changes {
        let token = if who == "admin" { admin.as_str() } else { chat.token.as_str() };
        let res = app.call(Method::PATCH, &change, Some(token), Some(json!({"status": 0}))).await;
        assert_eq!(res.status, StatusCode::OK, "{change}: {}", res.body);
        refused("cannot be used").await;
        let res = app.call(Method::PATCH, &change, Some(token), Some(json!({"status": 1}))).await;
        assert_eq!(res.status, StatusCode::OK, "{change}: {}", res.body);
        works().await;
    }

    let res = app.call(Method::DELETE, &format!("/api/model-configs/{config}"), Some(&chat.token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    refused("no such model config").await;
}

/// The first answer names its session when it is saved, unless the user renamed the session
/// while it streamed.
async fn a_rename_during_the_first_answer_is_kept(app: TestApp) {
    let chat = setup(&app).await;
    // Renamed while streaming, the user's name stays; unrenamed, a stopped first answer still
    // names its session.
    for (rename, title) in [(Some("Mine"), "Mine"), (None, "Count forever")] {
        let session = new_session(&app, &chat.token).await;
        let path = format!("/api/chat/sessions/{session}");
        let mut events = Events::open(
            &app,
            Method::POST,
            &format!("{path}/messages"),
            &chat.token,
            json!({"content": "Count forever", "model_config_id": chat.config("fake-endless")}),
        )
        .await;
        until_content(&mut events).await;
        if let Some(name) = rename {
            let res = app.call(Method::PATCH, &path, Some(&chat.token), Some(json!({"title": name}))).await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        }
        let res = app.call(Method::POST, &format!("{path}/stop"), Some(&chat.token), None).await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
        events.rest().await;
        assert_eq!(app.get(&path, &chat.token).await.json["title"], title);
    }
}

/// Sending a message trusts this process's record of who owns a session instead of reading the
/// row; a session deleted meanwhile, by this process or by another instance sharing the
/// database, is still a 404 and nothing is written into it.
async fn a_session_deleted_elsewhere_is_gone_for_sending(app: TestApp) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use store::entities::{chat_messages, chat_sessions};
    let chat = setup(&app).await;
    let body = json!({"content": "hi", "model_config_id": chat.config("fake-normal")});

    let through_api = new_session(&app, &chat.token).await;
    let res = app.call(Method::DELETE, &format!("/api/chat/sessions/{through_api}"), Some(&chat.token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = app.post(&format!("/api/chat/sessions/{through_api}/messages"), Some(&chat.token), body.clone()).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.body);

    // Created here (so its owner is known here), then deleted straight in the database.
    let elsewhere = new_session(&app, &chat.token).await;
    chat_sessions::Entity::delete_by_id(elsewhere as i32).exec(&app.state.db).await.unwrap();
    let res = app.post(&format!("/api/chat/sessions/{elsewhere}/messages"), Some(&chat.token), body.clone()).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.body);
    assert_eq!(res.json["error"]["code"], "not_found", "{}", res.body);
    let res = app.post(&format!("/api/chat/sessions/{elsewhere}/messages"), Some(&chat.token), body.clone()).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "and again, once the record is dropped: {}", res.body);
    for gone in [through_api, elsewhere] {
        let rows = chat_messages::Entity::find().filter(chat_messages::Column::SessionId.eq(gone as i32)).count(&app.state.db).await.unwrap();
        assert_eq!(rows, 0, "nothing written into session {gone}");
    }
    let upstream = chat.fake.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count();
    assert_eq!(upstream, 0, "nothing went upstream");

    // The user's other sessions are untouched by all this.
    let kept = new_session(&app, &chat.token).await;
    let events = send(&app, &chat.token, kept, "Still here?", chat.config("fake-normal")).await;
    assert_eq!(last(&events, "done")["finish_reason"], "stop");
}
