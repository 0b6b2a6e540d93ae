//! Datasets over real HTTP: uploads of every format valid and invalid (nothing stored on
//! failure), size limit, preview, statistics, download, delete while in use, imports from
//! sessions and comparisons, and other users' datasets not existing.
mod common;

use std::path::{Path, PathBuf};

use common::{Response, TestApp};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{Value, json};
use store::entities::{chat_messages, chat_sessions, model_tests, models, training_tasks};

on_all_backends!(
    every_format_is_accepted_and_normalized,
    invalid_files_are_named_and_store_nothing,
    preview_stats_and_download,
    delete_is_refused_while_a_task_uses_the_dataset,
    sessions_and_comparisons_import_as_messages,
    other_users_datasets_do_not_exist,
);

/// A multipart form: (field name, file name, contents).
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----workbench-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file_name, contents) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file_name {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(contents);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn read(res: reqwest::Response) -> Response {
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.text().await.expect("body");
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    Response { status, headers, body, json }
}

async fn upload_with(app: &TestApp, token: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Response {
    let (content_type, body) = form(parts);
    let res = app
        .client
        .post(app.url("/api/datasets"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    read(res).await
}

async fn upload(app: &TestApp, token: &str, name: &str, file_name: &str, contents: &[u8]) -> Response {
    upload_with(app, token, &[("name", None, name.as_bytes()), ("file", Some(file_name), contents)]).await
}

async fn upload_ok(app: &TestApp, token: &str, name: &str, file_name: &str, contents: &[u8]) -> Value {
    let res = upload(app, token, name, file_name, contents).await;
    assert_eq!(res.status, StatusCode::CREATED, "{file_name}: {}", res.body);
    res.json
}

fn datasets_dir(app: &TestApp) -> PathBuf {
    app.state.settings.data_dir.join("datasets")
}

/// Files in the datasets directory (temporary ones included).
fn stored_files(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(datasets_dir(app)) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

async fn stored_path(app: &TestApp, id: i64) -> String {
    store::entities::datasets::Entity::find_by_id(id as i32).one(&app.state.db).await.unwrap().unwrap().file_path
}

const ALPACA_JSON: &str = r#"[
  {"instruction": "Add the numbers", "input": "2 and 3", "output": "5"},
  {"instruction": "Say hi", "output": "Hi!", "system": "Be brief."}
]"#;

const SHAREGPT_JSONL: &str = r#"{"conversations": [{"from": "human", "value": "What is Rust?"}, {"from": "gpt", "value": "A language."}]}
{"conversations": [{"from": "system", "value": "Answer in French."}, {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Bonjour"}]}
"#;

const MESSAGES_JSONL: &str = r#"{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]}

{"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}, {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]}
{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q4"}, {"role": "assistant", "content": "a4"}]}
"#;

/// A UTF-8 BOM, Chinese text, a quoted cell with newlines and commas, and doubled quotes.
const ALPACA_CSV: &str = "\u{feff}instruction,input,output\n\"把这句话翻译成英文\",\"你好，\n世界\",\"Hello,\nworld\"\n\"Say \"\"hi\"\"\",,\"\"\"hi\"\"\"\n";

fn train_records(path: &str) -> Vec<Value> {
    let train = Path::new(path).with_extension("train.jsonl");
    std::fs::read_to_string(&train)
        .unwrap_or_else(|e| panic!("{}: {e}", train.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn every_format_is_accepted_and_normalized(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let cases: [(&str, &str, &str, &str, i64); 4] = [
        ("alpaca.json", ALPACA_JSON, "alpaca", "json", 2),
        ("chat.jsonl", SHAREGPT_JSONL, "sharegpt", "jsonl", 2),
        ("messages.jsonl", MESSAGES_JSONL, "messages", "jsonl", 3),
        ("中文.csv", ALPACA_CSV, "alpaca", "csv", 2),
    ];
    for (file_name, contents, format, file_type, records) in cases {
        let d = upload_ok(&app, &token, &format!("set {file_name}"), file_name, contents.as_bytes()).await;
        assert_eq!(d["format"], format, "{file_name}");
        assert_eq!(d["file_type"], file_type, "{file_name}");
        assert_eq!(d["record_count"], records, "{file_name}");
        assert_eq!(d["original_filename"], file_name);
        assert_eq!(d["file_size"], contents.len() as i64);
        assert_eq!(d["in_use"], false);

        // Stored under a generated name, byte for byte, with the trainer's copy beside it.
        let path = stored_path(&app, d["id"].as_i64().unwrap()).await;
        let stored = Path::new(&path);
        assert_eq!(stored.parent().unwrap(), datasets_dir(&app));
        let stem = stored.file_stem().unwrap().to_str().unwrap();
        assert!(stem.len() == 32 && stem.chars().all(|c| c.is_ascii_hexdigit()), "generated name: {path}");
        assert_eq!(std::fs::read(stored).unwrap(), contents.as_bytes());
        let train = train_records(&path);
        assert_eq!(train.len() as i64, records);
        // The trainer itself reads the normalized file.
        let examples = engine::load_dataset(&stored.with_extension("train.jsonl")).expect("the trainer accepts it");
        assert_eq!(examples.len() as i64, records);
        for record in &train {
            let roles: Vec<&str> = record["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
            assert!(roles.contains(&"assistant"), "{record}");
        }
    }

    // The CSV's quoted newlines, BOM and Chinese text survive into the training copy.
    let list = app.get("/api/datasets", &token).await;
    assert_eq!(list.json["total"], 4);
    let csv = &list.json["items"][0];
    let path = stored_path(&app, csv["id"].as_i64().unwrap()).await;
    let train = train_records(&path);
    assert_eq!(train[0]["messages"][0]["content"], "把这句话翻译成英文\n\n你好，\n世界");
    assert_eq!(train[0]["messages"][1]["content"], "Hello,\nworld");
    assert_eq!(train[1]["messages"][0]["content"], "Say \"hi\"");
    assert_eq!(train[1]["messages"][1]["content"], "\"hi\"");
    // Alpaca's system and input fields land where the trainer puts them.
    let alpaca = train_records(&stored_path(&app, list.json["items"][3]["id"].as_i64().unwrap()).await);
    assert_eq!(alpaca[1]["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(alpaca[0]["messages"][0]["content"], "Add the numbers\n\n2 and 3");

    // A chosen format is honoured; the description and a messages CSV work too.
    let res = upload_with(
        &app,
        &token,
        &[
            ("name", None, "rows".as_bytes()),
            ("description", None, "role per row".as_bytes()),
            ("format", None, b"messages"),
            ("file", Some("rows.csv"), b"conversation_id,role,content\n1,user,hi\n1,assistant,hello\n2,user,\xe4\xbd\xa0\xe5\xa5\xbd\n2,assistant,\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x81\n"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!((res.json["format"].as_str(), res.json["record_count"].as_i64()), (Some("messages"), Some(2)));
    assert_eq!(res.json["description"], "role per row");
}

/// The field keys of a 422, which name the record and field.
fn problem_keys(res: &Response) -> Vec<String> {
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert_eq!(res.error_code(), "validation_failed");
    res.json["error"]["fields"].as_object().expect("fields").keys().cloned().collect()
}

async fn invalid_files_are_named_and_store_nothing(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;

    // Bad JSON at line 57 of 60.
    let mut jsonl = String::new();
    for i in 1..=60 {
        jsonl.push_str(&if i == 57 {
            "{\"instruction\": \"q\", \"output\": \"a\",}\n".to_owned()
        } else {
            format!("{{\"instruction\": \"q{i}\", \"output\": \"a{i}\"}}\n")
        });
    }
    let res = upload(&app, &token, "bad", "bad.jsonl", jsonl.as_bytes()).await;
    assert_eq!(problem_keys(&res), ["line 57"]);
    assert!(res.json["error"]["fields"]["line 57"].as_str().unwrap().contains("not valid JSON"), "{}", res.body);

    // (file name, contents, chosen format, the 422's field keys, part of the first reason)
    type Case<'a> = (&'a str, &'a [u8], Option<&'a str>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        // Missing field.
        ("missing.jsonl", b"{\"instruction\": \"q\", \"output\": \"a\"}\n{\"instruction\": \"q\"}\n", Some("alpaca"), vec!["line 2: output"], "missing"),
        // Wrong type.
        ("type.json", b"[{\"instruction\": \"q\", \"output\": \"a\"}, {\"instruction\": \"q\", \"output\": 42}]", None, vec!["index 1: output"], "must be a string"),
        ("roles.jsonl", b"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"bot\", \"content\": \"a\"}]}\n", None, vec!["line 1: messages[1].role"], "unknown role"),
        ("no-answer.jsonl", b"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n", None, vec!["line 1: messages"], "assistant"),
        // Empty files.
        ("empty.jsonl", b"", None, vec!["file"], "empty"),
        ("bom-only.csv", b"\xef\xbb\xbf", None, vec!["file"], "empty"),
        ("header-only.csv", b"instruction,output\n", None, vec!["file"], "no records"),
        // CSV: a short row, an empty answer, unknown columns, a quote never closed.
        ("short.csv", b"instruction,output\n\"multi\nline\",ok\nonly-one-cell\n", None, vec!["row 3"], "cells"),
        ("blank.csv", "instruction,output\n你好,\n".as_bytes(), None, vec!["row 2: output"], "must not be empty"),
        ("columns.csv", b"question,answer\nq,a\n", None, vec!["row 1: header"], "columns"),
        // Not UTF-8.
        ("latin1.jsonl", b"{\"instruction\": \"caf\xe9\", \"output\": \"x\"}\n", None, vec!["line 1"], "UTF-8"),
        // A chosen format the records do not have.
        ("chosen.jsonl", MESSAGES_JSONL.as_bytes(), Some("alpaca"), vec!["line 1: instruction", "line 3: instruction", "line 4: instruction"], "missing"),
    ];
    for (file_name, contents, format, keys, reason) in cases {
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("name", None, b"bad"), ("file", Some(file_name), contents)];
        if let Some(f) = format {
            parts.push(("format", None, f.as_bytes()));
        }
        let res = upload_with(&app, &token, &parts).await;
        assert_eq!(problem_keys(&res), keys, "{file_name}: {}", res.body);
        let first = res.json["error"]["fields"][keys[0]].as_str().unwrap();
        assert!(first.contains(reason), "{file_name}: {first}");
    }

    // The form itself: no name, no file, an unknown format; not multipart at all.
    let res = upload_with(&app, &token, &[("file", Some("a.jsonl"), MESSAGES_JSONL.as_bytes()), ("format", None, b"yaml")]).await;
    assert_eq!(problem_keys(&res), ["format", "name"]);
    let res = upload_with(&app, &token, &[("name", None, b"x")]).await;
    assert_eq!(problem_keys(&res), ["file"]);
    let res = app.post("/api/datasets", Some(&token), json!({"name": "x"})).await;
    assert_eq!((res.status, res.error_code()), (StatusCode::BAD_REQUEST, "expected_multipart"), "{}", res.body);

    // Nothing of any of it was kept.
    assert_eq!(app.get("/api/datasets", &token).await.json["total"], 0);
    assert_eq!(stored_files(&app), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_file_is_a_413_naming_the_limit() {
    let app = TestApp::spawn_with(common::Backend::Sqlite, |s| s.datasets.max_upload_bytes = 4096).await;
    let (_, token) = app.user_token("ann@example.com").await;
    let line = "{\"instruction\": \"q\", \"output\": \"a\"}\n";
    let big = line.repeat(4096 / line.len() + 1);
    let res = upload(&app, &token, "big", "big.jsonl", big.as_bytes()).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", res.body);
    assert_eq!(res.error_code(), "dataset_too_large");
    assert!(res.json["error"]["message"].as_str().unwrap().contains("4 KiB"), "{}", res.body);
    assert_eq!(stored_files(&app), Vec::<String>::new(), "the partial upload is removed");
    // Just under the limit is fine.
    let small = line.repeat(4000 / line.len());
    upload_ok(&app, &token, "small", "small.jsonl", small.as_bytes()).await;
}

async fn preview_stats_and_download(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let d = upload_ok(&app, &token, "客服/对话 \"v1\"", "conv.jsonl", MESSAGES_JSONL.as_bytes()).await;
    let id = d["id"].as_i64().unwrap();

    let res = app.get(&format!("/api/datasets/{id}/preview?offset=1&limit=5"), &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!((res.json["total"].as_i64(), res.json["offset"].as_i64(), res.json["limit"].as_i64()), (Some(3), Some(1), Some(5)));
    let items = res.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["messages"][3], json!({"role": "assistant", "content": "a3"}));
    let res = app.get(&format!("/api/datasets/{id}/preview?limit=0"), &token).await;
    assert_eq!(problem_keys(&res), ["limit"]);

    // Without any model file, the counts are there and tokens say why they are not.
    let res = app.get(&format!("/api/datasets/{id}/stats"), &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let basic = &res.json["basic"];
    assert_eq!((basic["records"].as_i64(), basic["messages"].as_i64()), (Some(3), Some(9)));
    assert_eq!(basic["roles"], json!({"assistant": 4, "system": 1, "user": 4}));
    assert_eq!((basic["turns"]["min"].as_i64(), basic["turns"]["max"].as_i64()), (Some(1), Some(2)));
    assert_eq!(basic["with_system_prompt"], 1);
    assert!(res.json["tokens"].is_null());
    assert!(res.json["tokens_unavailable"].as_str().unwrap().contains("base model"));
    let res = app.get(&format!("/api/datasets/{id}/stats?model_id=9999"), &token).await;
    assert_eq!(problem_keys(&res), ["model_id"]);

    // The download is the file as uploaded, named after the dataset.
    let res = app.get(&format!("/api/datasets/{id}/download"), &token).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, MESSAGES_JSONL);
    assert_eq!(res.headers["content-type"], "application/x-ndjson");
    let disposition = res.headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"_____ _v1_.jsonl\""), "{disposition}");
    assert!(disposition.contains("filename*=UTF-8''%E5%AE%A2%E6%9C%8D_%E5%AF%B9%E8%AF%9D%20_v1_.jsonl"), "{disposition}");

    // Renaming and describing.
    let res = app.call(Method::PATCH, &format!("/api/datasets/{id}"), Some(&token), Some(json!({"name": "renamed", "description": "d"}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!((res.json["name"].as_str(), res.json["description"].as_str()), (Some("renamed"), Some("d")));
    assert!(res.json["updated_at"].is_string());
    let res = app.call(Method::PATCH, &format!("/api/datasets/{id}"), Some(&token), Some(json!({"name": " ", "description": ""}))).await;
    assert_eq!(problem_keys(&res), ["name"]);
    let res = app.call(Method::PATCH, &format!("/api/datasets/{id}"), Some(&token), Some(json!({"description": ""}))).await;
    assert!(res.json["description"].is_null());
    let res = app.get("/api/datasets?q=RENAMED", &token).await;
    assert_eq!(res.json["total"], 1);
    let res = app.get("/api/datasets?q=nothing-like-it", &token).await;
    assert_eq!(res.json["total"], 0);
}

async fn insert_task(app: &TestApp, dataset_id: i64, status: &str) -> training_tasks::Model {
    training_tasks::ActiveModel {
        name: Set("task".into()),
        model_name: Set("base".into()),
        dataset_id: Set(Some(dataset_id as i32)),
        status: Set(status.into()),
        progress: Set(0.0),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap()
}

async fn delete_is_refused_while_a_task_uses_the_dataset(app: TestApp) {
    let (_, token) = app.user_token("ann@example.com").await;
    let d = upload_ok(&app, &token, "used", "used.json", ALPACA_JSON.as_bytes()).await;
    let id = d["id"].as_i64().unwrap();
    let path = stored_path(&app, id).await;
    for status in ["pending", "running"] {
        let task = insert_task(&app, id, status).await;
        assert_eq!(app.get(&format!("/api/datasets/{id}"), &token).await.json["in_use"], true);
        let res = app.call(Method::DELETE, &format!("/api/datasets/{id}"), Some(&token), None).await;
        assert_eq!((res.status, res.error_code()), (StatusCode::CONFLICT, "dataset_in_use"), "{status}: {}", res.body);
        let mut done: training_tasks::ActiveModel = task.into();
        done.status = Set("completed".into());
        done.update(&app.state.db).await.unwrap();
    }
    assert_eq!(app.get("/api/datasets", &token).await.json["items"][0]["in_use"], false);
    let res = app.call(Method::DELETE, &format!("/api/datasets/{id}"), Some(&token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.body);
    assert!(!Path::new(&path).exists() && !Path::new(&path).with_extension("train.jsonl").exists(), "files removed");
    assert_eq!(stored_files(&app), Vec::<String>::new());
    assert_eq!(app.get(&format!("/api/datasets/{id}"), &token).await.status, StatusCode::NOT_FOUND);
}

async fn seed_session(app: &TestApp, user_id: i32, messages: &[(&str, &str)]) -> i32 {
    let now = chrono::Utc::now();
    let session = chat_sessions::ActiveModel {
        user_id: Set(user_id),
        title: Set("Rust questions".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    for (role, content) in messages {
        chat_messages::ActiveModel {
            session_id: Set(session.id),
            role: Set((*role).into()),
            content: Set((*content).into()),
            is_streaming: Set(false),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(&app.state.db)
        .await
        .unwrap();
    }
    session.id
}

async fn seed_comparison(app: &TestApp, user_id: i32) -> i32 {
    let result = |id: &str, content: &str, error: Option<&str>| {
        json!({"model_config_id": id, "model_name": id, "content": content, "reasoning": null, "error": error,
            "error_code": error.map(|_| "upstream_error"), "finish_reason": if error.is_some() { "error" } else { "stop" },
            "metrics": {}})
    };
    let results = json!([result("cfg-a", "Answer A", None), result("cfg-b", "Answer B", None), result("cfg-c", "", Some("boom"))]);
    model_tests::ActiveModel {
        user_id: Set(user_id),
        test_name: Set("Capitals".into()),
        models_tested: Set(Some(json!(["cfg-a", "cfg-b", "cfg-c"]).to_string())),
        input_data: Set("What is the capital of France?".into()),
        results: Set(Some(results.to_string())),
        is_streaming: Set(false),
        system_prompt: Set(Some("Answer in one word.".into())),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap()
    .id
}

async fn preview_items(app: &TestApp, token: &str, id: i64) -> Vec<Value> {
    let res = app.get(&format!("/api/datasets/{id}/preview"), token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    res.json["items"].as_array().unwrap().clone()
}

async fn sessions_and_comparisons_import_as_messages(app: TestApp) {
    let (ann, token) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let session = seed_session(&app, ann, &[("user", "What is a borrow?"), ("assistant", "A reference."), ("user", "And a move?"), ("assistant", "")]).await;
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "session", "id": session})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!((res.json["name"].as_str(), res.json["format"].as_str(), res.json["file_type"].as_str()), (Some("Rust questions"), Some("messages"), Some("jsonl")));
    let items = preview_items(&app, &token, res.json["id"].as_i64().unwrap()).await;
    // The question whose answer came back empty is left out with it.
    assert_eq!(items, [json!({"messages": [
        {"role": "user", "content": "What is a borrow?"}, {"role": "assistant", "content": "A reference."}]})]);

    let comparison = seed_comparison(&app, ann).await;
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "comparison", "id": comparison, "name": "capitals"})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(res.json["record_count"], 2, "the failed answer is left out");
    let items = preview_items(&app, &token, res.json["id"].as_i64().unwrap()).await;
    assert_eq!(items[1], json!({"messages": [
        {"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Answer B"}]}));
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "comparison", "id": comparison, "model_config_id": "cfg-a"})).await;
    assert_eq!((res.status, res.json["record_count"].as_i64(), res.json["name"].as_str()), (StatusCode::CREATED, Some(1), Some("Capitals")));
    // The imported file is what the trainer reads.
    let path = stored_path(&app, res.json["id"].as_i64().unwrap()).await;
    assert_eq!(engine::load_dataset(&Path::new(&path).with_extension("train.jsonl")).unwrap().len(), 1);

    // Bad requests name the field.
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "comparison", "id": comparison, "model_config_id": "cfg-z"})).await;
    assert_eq!(problem_keys(&res), ["model_config_id"]);
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "comparison", "id": comparison, "model_config_id": "cfg-c"})).await;
    assert_eq!(problem_keys(&res), ["id"]);
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "notebook", "id": 1})).await;
    assert_eq!(problem_keys(&res), ["source"]);
    let unanswered = seed_session(&app, ann, &[("user", "hello?")]).await;
    let res = app.post("/api/datasets/import", Some(&token), json!({"source": "session", "id": unanswered})).await;
    assert_eq!(problem_keys(&res), ["id"]);

    // Someone else's sources do not exist.
    for (source, id) in [("session", session), ("comparison", comparison), ("session", 999_999)] {
        let res = app.post("/api/datasets/import", Some(&bob), json!({"source": source, "id": id})).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{source} {id}: {}", res.body);
    }
    assert_eq!(app.get("/api/datasets", &bob).await.json["total"], 0);
}

async fn other_users_datasets_do_not_exist(app: TestApp) {
    let (_, ann) = app.user_token("ann@example.com").await;
    let (_, bob) = app.user_token("bob@example.com").await;
    let admin = app.admin_token().await;
    let d = upload_ok(&app, &ann, "ann's", "a.json", ALPACA_JSON.as_bytes()).await;
    let id = d["id"].as_i64().unwrap();
    for token in [&bob, &admin] {
        for path in ["", "/preview", "/stats", "/download"] {
            let res = app.get(&format!("/api/datasets/{id}{path}"), token).await;
            assert_eq!((res.status, res.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{path}");
        }
        let res = app.call(Method::PATCH, &format!("/api/datasets/{id}"), Some(token), Some(json!({"name": "mine"}))).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        let res = app.call(Method::DELETE, &format!("/api/datasets/{id}"), Some(token), None).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get("/api/datasets", token).await.json["total"], 0);
    }
    // Still there for its owner; and nobody gets in without a token.
    assert_eq!(app.get(&format!("/api/datasets/{id}"), &ann).await.json["name"], "ann's");
    let res = app.call(Method::GET, "/api/datasets", None, None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = upload_with(&app, "not-a-token", &[("name", None, b"x"), ("file", Some("a.json"), ALPACA_JSON.as_bytes())]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stored_files(&app).len(), 2, "one upload: its file and its training copy");
}

/// The reference model, as the engine tests find it.
fn reference_model() -> PathBuf {
    let path = std::env::var_os("WORKBENCH_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(path.is_file(), "reference model not found at {}: run scripts/fetch-model.sh (or set WORKBENCH_MODEL)", path.display());
    path.canonicalize().unwrap()
}

/// Token counts use the base model's tokenizer and chat template; one backend is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_tokens_with_the_base_models_tokenizer() {
    let model = reference_model();
    let app = TestApp::spawn(common::Backend::Sqlite).await;
    let (_, token) = app.user_token("ann@example.com").await;
    let d = upload_ok(&app, &token, "conv", "conv.jsonl", MESSAGES_JSONL.as_bytes()).await;
    let id = d["id"].as_i64().unwrap();

    // The reference model file in the data directory is used when the registry is empty.
    let models_dir = app.state.settings.data_dir.join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    std::os::unix::fs::symlink(&model, models_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let res = app.get(&format!("/api/datasets/{id}/stats"), &token).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let tokens = &res.json["tokens"];
    assert!(res.json["tokens_unavailable"].is_null(), "{}", res.body);
    assert_eq!(tokens["model"], "SmolLM2-135M-Instruct.Q4_1");
    let counter = engine::TokenCounter::from_gguf_file(&model).unwrap();
    let examples = engine::load_dataset(&Path::new(&stored_path(&app, id).await).with_extension("train.jsonl")).unwrap();
    let mut want: Vec<u64> = examples.iter().map(|e| counter.count(e).unwrap() as u64).collect();
    want.sort();
    assert_eq!((tokens["lengths"]["min"].as_u64(), tokens["lengths"]["max"].as_u64()), (Some(want[0]), Some(want[2])));
    assert_eq!(tokens["lengths"]["total"].as_u64(), Some(want.iter().sum()));
    // ChatML framing: every message adds its role markers, so a 2-message chat is > 10 tokens.
    assert!(want[0] > 10, "{want:?}");
    let histogram = tokens["histogram"].as_array().unwrap();
    assert_eq!(histogram.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), 3);
    assert_eq!(tokens["over"]["512"], 0);

    // Cached: the stats column now holds the counts for this model.
    let row = store::entities::datasets::Entity::find_by_id(id as i32).one(&app.state.db).await.unwrap().unwrap();
    assert!(row.stats.unwrap().contains("SmolLM2"), "cached");

    // A registered base model is chosen by id; an adapter is refused.
    let now = chrono::Utc::now();
    let base = models::ActiveModel {
        name: Set("smollm2".into()),
        display_name: Set("SmolLM2 135M".into()),
        model_path: Set(model.to_string_lossy().into_owned()),
        model_type: Set(Some("base".into())),
        status: Set("available".into()),
        is_available: Set(true),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let lora = models::ActiveModel {
        name: Set("smollm2-lora".into()),
        display_name: Set("adapter".into()),
        model_path: Set(models_dir.to_string_lossy().into_owned()),
        model_type: Set(Some("lora".into())),
        status: Set("available".into()),
        is_available: Set(true),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    let res = app.get(&format!("/api/datasets/{id}/stats?model_id={}", base.id), &token).await;
    assert_eq!(res.json["tokens"]["model"], "SmolLM2 135M", "{}", res.body);
    assert_eq!(res.json["tokens"]["lengths"]["total"].as_u64(), Some(want.iter().sum()));
    // Without model_id the registry's first base model now wins over the file.
    assert_eq!(app.get(&format!("/api/datasets/{id}/stats"), &token).await.json["tokens"]["model"], "SmolLM2 135M");
    let res = app.get(&format!("/api/datasets/{id}/stats?model_id={}", lora.id), &token).await;
    assert_eq!(problem_keys(&res), ["model_id"]);
}
