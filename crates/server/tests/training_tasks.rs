//! Training tasks over real HTTP: the queue, a real trainer child process on the reference
//! model, live events, cancel, dead workers, racing workers, SwanLab offline, ownership.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{Value, json};
use server::config::Settings;
use store::entities::{datasets, models, training_configs, training_tasks};

const TINY_CONFIG: &str = r#"{"epochs": 1, "batch_size": 2, "max_seq_length": 64, "lora_r": 4, "lora_alpha": 8,
    "learning_rate": 0.001, "target_modules": ["q_proj", "v_proj"], "seed": 1}"#;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// `target/debug/workbench`, built beside this test (`cargo build --workspace --all-targets`).
fn workbench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("workbench");
    assert!(bin.is_file(), "{} is missing: run cargo build --workspace --all-targets", bin.display());
    bin
}

/// A missing model fails the test with the way to get it: a skipped test would read as a pass.
fn reference_model() -> PathBuf {
    let path = std::env::var_os("WORKBENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.is_file(), "reference model not found at {}: run scripts/fetch-model.sh", path.display());
    path
}

fn training_settings(s: &mut Settings, workers: usize) {
    s.training.workers = workers;
    s.training.trainer_binary = Some(workbench_binary());
    s.training.heartbeat_secs = 1;
    s.training.poll_secs = 1;
    s.training.swanlab_python = workspace_root().join(".venv-swanlab/bin/python");
    s.training.swanlab_script = workspace_root().join("scripts/swanlab_sidecar.py");
}

async fn app_with_workers(backend: Backend, workers: usize) -> TestApp {
    TestApp::spawn_with(backend, |s| training_settings(s, workers)).await
}

async fn seed_model(app: &TestApp, name: &str, path: &Path, model_type: &str) -> models::Model {
    models::ActiveModel {
        name: Set(name.into()),
        display_name: Set(name.into()),
        model_path: Set(path.display().to_string()),
        model_type: Set(Some(model_type.into())),
        status: Set("ready".into()),
        is_available: Set(true),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("seed model")
}

/// A dataset as the datasets API leaves it: the upload and its normalized `.train.jsonl`.
async fn seed_dataset(app: &TestApp, owner: i32, records: usize) -> i32 {
    let dir = app.state.settings.data_dir.join("datasets");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("upload-{owner}-{records}-{}.jsonl", uuid::Uuid::new_v4().simple()));
    let lines: String = (0..records)
        .map(|i| {
            json!({"messages": [
                {"role": "user", "content": format!("What is {i} plus {i}?")},
                {"role": "assistant", "content": format!("{i} plus {i} is {}.", 2 * i)}
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&file, &lines).unwrap();
    std::fs::write(file.with_extension("train.jsonl"), &lines).unwrap();
    datasets::ActiveModel {
        name: Set(format!("sums {records}")),
        file_path: Set(file.display().to_string()),
        file_size: Set(Some(lines.len() as i64)),
        format_type: Set(Some("messages".into())),
        uploaded_by: Set(Some(owner)),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("seed dataset")
    .id
}

async fn seed_config(app: &TestApp, owner: i32, config: &str) -> i32 {
    training_configs::ActiveModel {
        name: Set("tiny".into()),
        config_data: Set(serde_json::from_str(config).unwrap()),
        created_by: Set(Some(owner)),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("seed config")
    .id
}

/// Polls the task until `done` holds (a deadline, not a sleep: the condition decides).
async fn wait_for(app: &TestApp, token: &str, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let res = app.get(&format!("/api/training-tasks/{id}"), token).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        if done(&res.json) {
            return res.json;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {}", res.json);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads an SSE stream to its end (the server closes it once the task ended).
async fn read_events(app: &TestApp, token: &str, id: i64) -> Vec<(String, Value)> {
    let res = app.client.get(app.url(&format!("/api/training-tasks/{id}/events"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut res = res;
    let mut buf = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = res.chunk().await.expect("body chunk") {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = Value::Null;
                for line in frame.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap();
                    }
                }
                events.push((name, data));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), read).await.expect("the event stream ends after the task");
    events
}

fn trainer_pid(log: &Value) -> i32 {
    log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| l.as_str()?.split("trainer started (pid ").nth(1)?.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no trainer pid in the log: {log}"))
}

/// Field 19 of /proc/PID/stat (after the parenthesised command name, the 17th).
fn niceness(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')').next().unwrap().split_whitespace().nth(16).unwrap().parse().unwrap()
}

fn process_exists(pid: i32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

async fn wait_process_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "trainer process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_trains_streams_and_registers_its_adapter_with_swanlab_offline() {
    let python = workspace_root().join(".venv-swanlab/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/install-swanlab.sh", python.display());
    let app = app_with_workers(Backend::Sqlite, 1).await;
    let admin = app.admin_token().await;
    let (owner, token) = app.user_token("trainer@example.com").await;
    let (_, other) = app.user_token("other@example.com").await;
    let res = app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"swanlab": {"mode": "offline", "project": "wb-test"}}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let base = seed_model(&app, "smollm2-135m", &reference_model(), "base").await;
    let dataset = seed_dataset(&app, owner, 4).await;
    let config = seed_config(&app, owner, TINY_CONFIG).await;

    let res = app
        .post("/api/training-tasks", Some(&token), json!({"name": "sums", "model_name": "smollm2-135m", "dataset_id": dataset, "config_id": config}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(res.json["status"], "pending");
    assert_eq!(res.json["model_id"], base.id);
    let id = res.json["id"].as_i64().unwrap();

    // Live: connected while pending or running, the stream follows the task to its end.
    let events = read_events(&app, &token, id).await;
    assert_ne!(events[0].1["status"], "completed", "connected before the end, the events came live");
    assert!(events.iter().any(|(n, d)| n == "status" && d["status"] == "running"), "{events:?}");
    let metrics: Vec<&Value> = events.iter().filter(|(n, _)| n == "metrics").map(|(_, d)| d).collect();
    assert_eq!(metrics.len(), 2, "4 records, batch 2, 1 epoch: {events:?}");
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1);
        assert_eq!(m["total_steps"], 2);
        for key in ["epoch", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed", "eta"] {
            assert!(m[key].is_number(), "{key} in {m}");
        }
    }
    assert!(events.iter().any(|(n, d)| n == "log" && d["line"].as_str().unwrap().starts_with("step 1/2")), "{events:?}");
    let (_, status) = events.iter().rev().find(|(n, _)| n == "status").unwrap();
    assert_eq!(status["status"], "completed", "{events:?}");
    assert_eq!(status["progress"], 100.0);

    let task = app.get(&format!("/api/training-tasks/{id}"), &token).await.json;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["current_step"], 2);
    assert_eq!(task["total_steps"], 2);
    let adapter = PathBuf::from(task["output_dir"].as_str().unwrap());
    assert!(adapter.join("adapter_config.json").is_file() && adapter.join("adapter_model.safetensors").is_file());
    let report = &task["report"];
    assert_eq!(report["steps"], 2);
    assert!(report["final_loss"].as_f64().unwrap() > 0.0 && report["min_loss"].as_f64().unwrap() <= report["final_loss"].as_f64().unwrap());
    assert!(report["tokens_seen"].as_u64().unwrap() > 0);
    assert!(report["adapter_size_bytes"].as_u64().unwrap() > 1000);
    assert_eq!(report["adapter_path"], task["output_dir"]);

    // The adapter is in the registry.
    let adapter_id = task["adapter_model_id"].as_i64().expect("adapter registered") as i32;
    let row = models::Entity::find_by_id(adapter_id).one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(row.model_type.as_deref(), Some("lora"));
    assert_eq!(row.status, "ready");
    assert!(row.is_available);
    assert_eq!(row.name, format!("sums-lora-{id}"));
    assert_eq!(PathBuf::from(&row.model_path), adapter);
    let params: Value = serde_json::from_str(row.parameters.as_deref().unwrap()).unwrap();
    assert_eq!((params["base_model_id"].as_i64(), params["task_id"].as_i64()), (Some(base.id as i64), Some(id)));
    assert_eq!((params["r"].as_u64(), params["lora_alpha"].as_f64()), (Some(4), Some(8.0)));

    // Chat-able at once: one click gives a usable config on the built-in `local` provider, and
    // the owner's answer streams from base + adapter; someone else cannot use it.
    assert_eq!(app.post(&format!("/api/models/{adapter_id}/model-config"), Some(&other), json!({})).await.status, StatusCode::NOT_FOUND);
    let config = app.post(&format!("/api/models/{adapter_id}/model-config"), Some(&token), json!({})).await;
    assert_eq!(config.status, StatusCode::CREATED, "{}", config.body);
    assert_eq!(config.json["usable"], true);
    let config_id = config.json["id"].as_str().unwrap();
    let res = app.call(Method::PATCH, &format!("/api/model-configs/{config_id}"), Some(&token), Some(json!({"max_tokens": 3, "temperature": 0}))).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let session = app.post("/api/chat/sessions", Some(&token), json!({})).await.json["id"].as_i64().unwrap();
    let answer = app
        .client
        .post(app.url(&format!("/api/chat/sessions/{session}/messages")))
        .bearer_auth(&token)
        .json(&json!({"content": "What is 2 + 2?", "model_config_id": config_id}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("event: content") && answer.contains("event: done"), "{answer}");
    assert!(!answer.contains("event: error"), "{answer}");

    // SwanLab offline: the run directory holds the logged steps (read back with the SDK).
    let run_dir = task["swanlab_url"].as_str().expect("swanlab run recorded");
    assert!(Path::new(run_dir).is_dir(), "{run_dir}");
    let out = std::process::Command::new(&python)
        .arg(workspace_root().join("scripts/swanlab_sidecar.py"))
        .args(["--read", run_dir])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<u64> = logged["train/loss"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2], "{logged}");
    assert_eq!(logged["train/loss"][1][1].as_f64(), metrics[1]["loss"].as_f64());

    // A browser arriving late gets the whole history, then the stream ends.
    let late = read_events(&app, &token, id).await;
    assert_eq!(late[0].0, "status");
    assert_eq!(late.iter().filter(|(n, _)| n == "metrics").count(), 2);
    assert!(late.iter().any(|(n, _)| n == "log"));

    let log = app.get(&format!("/api/training-tasks/{id}/log?tail=3"), &token).await;
    assert_eq!(log.status, StatusCode::OK);
    assert_eq!(log.json["lines"].as_array().unwrap().len(), 3);
    assert!(log.json["total_lines"].as_u64().unwrap() > 3);

    // Someone else's task does not exist for them.
    for (method, path) in [
        (Method::GET, format!("/api/training-tasks/{id}")),
        (Method::GET, format!("/api/training-tasks/{id}/events")),
        (Method::GET, format!("/api/training-tasks/{id}/log")),
        (Method::POST, format!("/api/training-tasks/{id}/cancel")),
        (Method::DELETE, format!("/api/training-tasks/{id}")),
    ] {
        let res = app.call(method.clone(), &path, Some(&other), None).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert_eq!(app.get("/api/training-tasks", &other).await.json["total"], 0);
    assert_eq!(app.get("/api/training-tasks?status=completed", &token).await.json["total"], 1);

    // Deleting the task keeps the registered adapter.
    let res = app.call(Method::DELETE, &format!("/api/training-tasks/{id}"), Some(&token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert!(adapter.join("adapter_model.safetensors").is_file());
    assert!(models::Entity::find_by_id(adapter_id).one(&app.state.db).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_trainer_and_a_missing_swanlab_is_only_a_warning() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        training_settings(s, 1);
        s.training.swanlab_python = PathBuf::from("/nonexistent/python");
    })
    .await;
    let admin = app.admin_token().await;
    let (owner, token) = app.user_token("trainer@example.com").await;
    app.call(Method::PATCH, "/api/admin/settings", Some(&admin), Some(json!({"swanlab": {"mode": "offline"}}))).await;
    seed_model(&app, "smollm2-135m", &reference_model(), "base").await;
    let dataset = seed_dataset(&app, owner, 16).await;
    let config = seed_config(&app, owner, &TINY_CONFIG.replace("\"epochs\": 1", "\"epochs\": 20")).await;
    let res = app
        .post("/api/training-tasks", Some(&token), json!({"name": "long", "model_name": "smollm2-135m", "dataset_id": dataset, "config_id": config}))
        .await;
    let id = res.json["id"].as_i64().unwrap();
    let running = wait_for(&app, &token, id, "the first step", |t| t["current_step"].as_i64().unwrap_or(0) >= 1).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["total_steps"], 160);

    let res = app.call(Method::DELETE, &format!("/api/training-tasks/{id}"), Some(&token), None).await;
    assert_eq!((res.status, res.error_code()), (StatusCode::CONFLICT, "task_running"));

    let log = app.get(&format!("/api/training-tasks/{id}/log?tail=10000"), &token).await.json;
    let pid = trainer_pid(&log);
    assert!(process_exists(pid));
    assert_eq!(niceness(pid), server::training::worker::TRAINER_NICENESS, "the trainer yields to the server");
    assert!(log["lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().starts_with("warning: SwanLab is enabled")), "{log}");

    let res = app.post(&format!("/api/training-tasks/{id}/cancel"), Some(&token), json!({})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.json["cancel_requested"], true);
    let task = wait_for(&app, &token, id, "cancelled", |t| t["status"] != "running").await;
    assert_eq!(task["status"], "cancelled", "{task}");
    assert!(task["swanlab_url"].is_null());
    assert!(!process_exists(pid), "the trainer must be gone once the task is cancelled");
    let res = app.post(&format!("/api/training-tasks/{id}/cancel"), Some(&token), json!({})).await;
    assert_eq!((res.status, res.error_code()), (StatusCode::CONFLICT, "task_finished"));
}

/// `workbench worker` killed with SIGKILL mid-task: its trainer dies with it, and the next
/// worker to start fails the task with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_a_failed_task_never_a_running_one() {
    let app = app_with_workers(Backend::Sqlite, 0).await;
    let (owner, token) = app.user_token("trainer@example.com").await;
    seed_model(&app, "smollm2-135m", &reference_model(), "base").await;
    let dataset = seed_dataset(&app, owner, 16).await;
    let config = seed_config(&app, owner, &TINY_CONFIG.replace("\"epochs\": 1", "\"epochs\": 20")).await;
    let res = app
        .post("/api/training-tasks", Some(&token), json!({"name": "doomed", "model_name": "smollm2-135m", "dataset_id": dataset, "config_id": config}))
        .await;
    let id = res.json["id"].as_i64().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let worker = || {
        tokio::process::Command::new(workbench_binary())
            .arg("worker")
            .arg("--data-dir")
            .arg(&app.state.settings.data_dir)
            .current_dir(cwd.path())
            .env("WORKBENCH__TRAINING__TRAINER_BINARY", workbench_binary())
            .env("WORKBENCH__TRAINING__HEARTBEAT_SECS", "1")
            .env("WORKBENCH__TRAINING__POLL_SECS", "1")
            .env("WORKBENCH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start workbench worker")
    };
    let mut first = worker();
    let running = wait_for(&app, &token, id, "the first step", |t| t["current_step"].as_i64().unwrap_or(0) >= 1).await;
    assert_eq!(running["status"], "running");
    let worker_pid = first.id().unwrap();
    assert!(running["worker_id"].as_str().unwrap().contains(&format!(":{worker_pid}:")), "{running}");
    let trainer = trainer_pid(&app.get(&format!("/api/training-tasks/{id}/log?tail=10000"), &token).await.json);

    first.kill().await.unwrap(); // SIGKILL
    wait_process_gone(trainer).await;
    assert_eq!(app.get(&format!("/api/training-tasks/{id}"), &token).await.json["status"], "running");

    let mut second = worker();
    let task = wait_for(&app, &token, id, "failed", |t| t["status"] != "running").await;
    second.kill().await.unwrap();
    assert_eq!(task["status"], "failed", "{task}");
    let reason = task["error_message"].as_str().unwrap();
    assert!(reason.contains(&format!("its process {worker_pid} ended")), "{reason}");
}

async fn insert_task(app: &TestApp, status: &str, worker: Option<&str>, heartbeat_age: Option<chrono::Duration>) -> i32 {
    let now = server::clock::Clock::now(&app.clock);
    training_tasks::ActiveModel {
        name: Set("raw".into()),
        model_name: Set("m".into()),
        status: Set(status.into()),
        progress: Set(0.0),
        worker_id: Set(worker.map(str::to_owned)),
        heartbeat_at: Set(heartbeat_age.map(|age| now - age)),
        started_at: Set(worker.map(|_| now)),
        cancel_requested: Set(false),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .expect("insert task")
    .id
}

async fn row(app: &TestApp, id: i32) -> training_tasks::Model {
    training_tasks::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

/// Tasks whose workers died are failed by the check every worker runs at start and between
/// tasks; a task another machine is working on (fresh heartbeat) is left alone.
async fn tasks_of_dead_workers_are_failed(app: TestApp) {
    let stale = insert_task(&app, "running", Some("elsewhere:4242:deadbeef"), Some(chrono::Duration::hours(1))).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    // pid_max is at most 2^22: this pid cannot exist.
    let gone = insert_task(&app, "running", Some(&format!("{host}:4194305:cafe")), Some(chrono::Duration::seconds(1))).await;
    let alive = insert_task(&app, "running", Some("elsewhere:4242:feedface"), Some(chrono::Duration::seconds(1))).await;
    let failed = server::training::queue::fail_orphans(&app.state.db, server::clock::Clock::now(&app.clock), chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(failed, 2);
    let stale = row(&app, stale).await;
    assert_eq!(stale.status, "failed");
    assert!(stale.error_message.unwrap().contains("stopped sending heartbeats"));
    assert!(stale.completed_at.is_some());
    let gone = row(&app, gone).await;
    assert_eq!(gone.status, "failed");
    assert!(gone.error_message.unwrap().contains("its process 4194305 ended"));
    assert_eq!(row(&app, alive).await.status, "running");
}

/// Two workers with their own connections race for each of several pending tasks: exactly one
/// wins each, and the row names the winner.
async fn two_workers_never_take_the_same_task(app: TestApp) {
    let url = app.state.settings.database_url();
    let (a, b) = (store::connect(&url).await.unwrap(), store::connect(&url).await.unwrap());
    let now = chrono::Utc::now();
    for _ in 0..10 {
        let id = insert_task(&app, "pending", None, None).await;
        let (wa, wb) = (server::training::queue::WorkerId::new(), server::training::queue::WorkerId::new());
        let (ra, rb) = tokio::join!(
            server::training::queue::claim_next(&a, wa.as_str(), now),
            server::training::queue::claim_next(&b, wb.as_str(), now)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.is_some() != rb.is_some(), "exactly one worker claims task {id}: {ra:?} {rb:?}");
        let (winner, task) = if let Some(t) = ra { (wa.as_str().to_owned(), t) } else { (wb.as_str().to_owned(), rb.unwrap()) };
        assert_eq!(task.id, id);
        let stored = row(&app, id).await;
        assert_eq!((stored.status.as_str(), stored.worker_id.as_deref()), ("running", Some(winner.as_str())));
    }
    assert!(server::training::queue::claim_next(&a, "nobody", now).await.unwrap().is_none());
}

async fn creating_checks_references_and_ownership(app: TestApp) {
    let (owner, token) = app.user_token("trainer@example.com").await;
    let (stranger, other) = app.user_token("other@example.com").await;
    let model_file = app.state.settings.data_dir.join("fake.gguf");
    std::fs::write(&model_file, b"GGUF").unwrap();
    seed_model(&app, "base", &model_file, "base").await;
    let lora = seed_model(&app, "an-adapter", &app.state.settings.data_dir, "lora").await;
    let dataset = seed_dataset(&app, owner, 2).await;
    let foreign_dataset = seed_dataset(&app, stranger, 2).await;
    let config = seed_config(&app, owner, TINY_CONFIG).await;
    let foreign_config = seed_config(&app, stranger, TINY_CONFIG).await;

    let create = |body: Value| app.post("/api/training-tasks", Some(&token), body);
    let res = create(json!({"name": " ", "model_name": "nope", "dataset_id": foreign_dataset, "config_id": foreign_config})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    let fields = &res.json["error"]["fields"];
    assert_eq!(fields["name"], "must not be empty");
    assert_eq!(fields["model_name"], "no such model");
    assert_eq!(fields["dataset_id"], "no such dataset");
    assert_eq!(fields["config_id"], "no such training config");
    let res = create(json!({"name": "x", "model_id": lora.id, "dataset_id": dataset, "config_id": config})).await;
    assert!(res.json["error"]["fields"]["model_id"].as_str().unwrap().contains("LoRA"), "{}", res.body);
    let res = create(json!({"name": "x", "dataset_id": dataset, "config_id": config})).await;
    assert!(res.json["error"]["fields"]["model_name"].is_string(), "{}", res.body);
    let res = create(json!({"name": "x", "model_name": "base", "dataset_id": dataset, "config_id": config, "extra": 1})).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);

    // No worker runs here: tasks stay pending.
    let res = create(json!({"name": "queued", "model_name": "base", "dataset_id": dataset, "config_id": config})).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let id = res.json["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/api/training-tasks/{id}"), &other).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.post(&format!("/api/training-tasks/{id}/cancel"), Some(&other), json!({})).await.status, StatusCode::NOT_FOUND);
    let list = app.get("/api/training-tasks?status=pending", &token).await;
    assert_eq!(list.json["total"], 1);
    assert_eq!(app.get("/api/training-tasks?status=bogus", &token).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.get(&format!("/api/training-tasks/{id}/log?tail=0"), &token).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let log = app.get(&format!("/api/training-tasks/{id}/log"), &token).await;
    assert_eq!((log.status, log.json["total_lines"].as_u64()), (StatusCode::OK, Some(0)));

    let res = app.post(&format!("/api/training-tasks/{id}/cancel"), Some(&token), json!({})).await;
    assert_eq!((res.status, res.json["status"].as_str()), (StatusCode::OK, Some("cancelled")), "{}", res.body);
    let events = read_events(&app, &token, id).await;
    assert_eq!(events.len(), 1, "an ended task with no history: one status event: {events:?}");
    assert_eq!(events[0].1["status"], "cancelled");
    let res = app.call(Method::DELETE, &format!("/api/training-tasks/{id}"), Some(&token), None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/training-tasks/{id}"), &token).await.status, StatusCode::NOT_FOUND);
}

mod on_backends {
    use super::*;

    macro_rules! each_backend {
        ($($test:ident),*) => {$(
            mod $test {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { super::super::$test(app_with_workers(Backend::Sqlite, 0).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { super::super::$test(app_with_workers(Backend::Postgres, 0).await).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mariadb() { super::super::$test(app_with_workers(Backend::MariaDb, 0).await).await }
            }
        )*};
    }
    each_backend!(tasks_of_dead_workers_are_failed, two_workers_never_take_the_same_task, creating_checks_references_and_ownership);
}
