//! Training tasks (R-TRAIN-3…5): a queue in the database, workers that claim tasks atomically
//! and run the engine trainer as a child process, live progress for the browser, and the
//! optional SwanLab sidecar.
//!
//! Workers run inside the server (`training.workers`) or in `workbench worker` processes against
//! the same database and data directory. Everything a browser needs survives the process that
//! produced it: progress lives in the task row, log lines in `train.log`, per-step metrics in
//! `metrics.jsonl` (both under `<data_dir>/training/<task id>/`). The in-process [`Hub`] only makes
//! the server's own workers' news arrive at once; news from other processes arrive by polling.
pub mod events;
pub mod params;
pub mod queue;
pub mod swanlab;
pub mod worker;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};

use crate::{clock::Clock, config::Settings, crypto::Cipher, state::AppState};

pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";

pub fn is_finished(status: &str) -> bool {
    matches!(status, COMPLETED | FAILED | CANCELLED)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSettings {
    /// Workers the server runs in-process; 0 leaves training to `workbench worker` processes.
    pub workers: usize,
    /// The executable run as `<binary> train …`; default: the running `workbench` itself.
    pub trainer_binary: Option<PathBuf>,
    pub heartbeat_secs: u64,
    /// A running task whose heartbeat is older than this is failed (its worker died).
    pub stale_after_secs: u64,
    /// How often an idle worker looks for tasks queued by other processes.
    pub poll_secs: u64,
    /// Python of the SwanLab venv (scripts/install-swanlab.sh).
    pub swanlab_python: PathBuf,
    pub swanlab_script: PathBuf,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            workers: 1,
            trainer_binary: None,
            heartbeat_secs: 5,
            stale_after_secs: 60,
            poll_secs: 2,
            swanlab_python: PathBuf::from(".venv-swanlab/bin/python"),
            swanlab_script: PathBuf::from("scripts/swanlab_sidecar.py"),
        }
    }
}

/// Wakes in-process listeners: idle workers when a task is queued, event streams when a task
/// changed (a log line, a step, a status), the worker holding a task when it is cancelled.
#[derive(Clone)]
pub struct Hub {
    changed: broadcast::Sender<i32>,
    cancels: broadcast::Sender<i32>,
    queued: Arc<Notify>,
}

impl Default for Hub {
    fn default() -> Self {
        Self { changed: broadcast::channel(1024).0, cancels: broadcast::channel(64).0, queued: Arc::new(Notify::new()) }
    }
}

impl Hub {
    pub fn task_changed(&self, task_id: i32) {
        let _ = self.changed.send(task_id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<i32> {
        self.changed.subscribe()
    }

    /// A cancel was recorded for the task; the worker holding it (if in this process) stops it
    /// at once instead of at its next heartbeat.
    pub fn cancel_requested(&self, task_id: i32) {
        let _ = self.cancels.send(task_id);
        self.task_changed(task_id);
    }

    fn subscribe_cancels(&self) -> broadcast::Receiver<i32> {
        self.cancels.subscribe()
    }

    pub fn task_queued(&self) {
        self.queued.notify_one();
    }

    async fn next_queued(&self) {
        self.queued.notified().await
    }
}

/// What a worker needs: the server's state minus HTTP.
#[derive(Clone)]
pub struct Runtime {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    pub cipher: Cipher,
    pub clock: Arc<dyn Clock>,
    pub hub: Hub,
}

impl From<&AppState> for Runtime {
    fn from(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            settings: state.settings.clone(),
            cipher: state.cipher.clone(),
            clock: state.clock.clone(),
            hub: state.training.clone(),
        }
    }
}

impl Runtime {
    pub fn task_dir(&self, task_id: i32) -> PathBuf {
        task_dir(&self.settings.data_dir, task_id)
    }

    fn trainer_binary(&self) -> anyhow::Result<PathBuf> {
        match &self.settings.training.trainer_binary {
            Some(path) => Ok(path.clone()),
            None => std::env::current_exe().context("locating the workbench binary"),
        }
    }
}

pub fn task_dir(data_dir: &Path, task_id: i32) -> PathBuf {
    data_dir.join("training").join(task_id.to_string())
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("train.log")
}

pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join("metrics.jsonl")
}

pub fn adapter_path(dir: &Path) -> PathBuf {
    dir.join("adapter")
}

/// Starts `count` workers; they stop (killing their trainers) when `stop` turns true.
pub fn start_workers(rt: Runtime, count: usize, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count).map(|_| tokio::spawn(worker::run(rt.clone(), stop.clone()))).collect()
}

/// `workbench worker`: workers without the HTTP server, until `shutdown` resolves. The schema
/// must be current (the server, or `workbench migrate up`, migrates it).
pub async fn run_standalone(settings: Settings, count: usize, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    use store::MigratorTrait;
    let secrets = crate::config::Secrets::load_or_generate(&settings)?;
    let db = store::connect(&settings.database_url()).await.context("connecting to the database")?;
    let pending = store::Migrator::get_pending_migrations(&db).await?;
    anyhow::ensure!(pending.is_empty(), "the database schema is not current: run `workbench migrate up` first");
    let rt = Runtime {
        db,
        settings: Arc::new(settings),
        cipher: Cipher::new(&secrets.encryption_key),
        clock: Arc::new(crate::clock::SystemClock),
        hub: Hub::default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles = start_workers(rt, count.max(1), stop_rx);
    tracing::info!(workers = handles.len(), "training workers started");
    shutdown.await;
    let _ = stop_tx.send(true);
    for handle in handles {
        let _ = handle.await;
    }
    Ok(())
}
