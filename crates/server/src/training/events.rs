//! A task's log and metrics files, and the `/events` stream built from them.
//!
//! Workers append whole lines; readers follow the files by byte offset and take complete lines
//! only, so a stream never repeats or skips a line whichever process wrote it.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use sea_orm::EntityTrait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt},
    sync::{Mutex, broadcast::error::RecvError, mpsc},
};
use utoipa::ToSchema;

use super::{Hub, is_finished, log_path, metrics_path};
use crate::chat::frame;
use store::entities::training_tasks;

/// One optimizer step, as the `metrics` event and `metrics.jsonl` carry it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepMetrics {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Seconds since training started.
    pub elapsed: f64,
    /// Seconds left, estimated.
    pub eta: f64,
}

/// The trainer's own step line (`workbench train`).
#[derive(Deserialize)]
pub(crate) struct TrainerStep {
    step: u64,
    total_steps: u64,
    epoch: f64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens_per_s: f64,
    elapsed_s: f64,
    eta_s: f64,
}

impl From<TrainerStep> for StepMetrics {
    fn from(s: TrainerStep) -> Self {
        Self {
            step: s.step,
            total_steps: s.total_steps,
            epoch: s.epoch,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            tokens_per_s: s.tokens_per_s,
            elapsed: s.elapsed_s,
            eta: s.eta_s,
        }
    }
}

/// Appends to a task's `train.log` and `metrics.jsonl`, waking in-process listeners. Cloned
/// into the tasks that forward the trainer's and the sidecar's output.
#[derive(Clone)]
pub struct TaskFiles {
    task_id: i32,
    log: Arc<Mutex<tokio::fs::File>>,
    metrics: Arc<Mutex<tokio::fs::File>>,
    hub: Hub,
}

async fn append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
}

impl TaskFiles {
    /// Starts the task's files afresh: a task runs once, and a leftover directory (a reset
    /// database reusing the id) must not mix into its history.
    pub async fn create(dir: &Path, task_id: i32, hub: Hub) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(dir).await?;
        for path in [log_path(dir), metrics_path(dir)] {
            match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(Self {
            task_id,
            log: Arc::new(Mutex::new(append(&log_path(dir)).await?)),
            metrics: Arc::new(Mutex::new(append(&metrics_path(dir)).await?)),
            hub,
        })
    }

    /// One log line; a failing disk is logged, never fatal to the task.
    pub async fn line(&self, text: &str) {
        let mut line = text.replace(['\n', '\r'], " ");
        line.push('\n');
        if let Err(e) = self.log.lock().await.write_all(line.as_bytes()).await {
            tracing::warn!(task = self.task_id, error = %e, "writing the task log");
        }
        self.hub.task_changed(self.task_id);
    }

    pub async fn metrics(&self, metrics: &StepMetrics) {
        let mut line = serde_json::to_string(metrics).expect("metrics serialise");
        line.push('\n');
        if let Err(e) = self.metrics.lock().await.write_all(line.as_bytes()).await {
            tracing::warn!(task = self.task_id, error = %e, "writing the task metrics");
        }
        self.hub.task_changed(self.task_id);
    }
}

/// Follows a file that only grows, from a byte offset, yielding complete lines.
pub struct LineCursor {
    path: PathBuf,
    offset: u64,
}

impl LineCursor {
    pub fn new(path: PathBuf) -> Self {
        Self { path, offset: 0 }
    }

    /// Lines completed since the last call; a missing file has none yet.
    pub async fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else { return Vec::new() };
        if file.seek(std::io::SeekFrom::Start(self.offset)).await.is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).await.is_err() {
            return Vec::new();
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        self.offset += end as u64 + 1;
        String::from_utf8_lossy(&buf[..end]).split('\n').map(str::to_owned).collect()
    }
}

/// The last `n` lines of a log file (all of them when it is shorter).
pub async fn tail(path: &Path, n: usize) -> (Vec<String>, usize) {
    let mut cursor = LineCursor::new(path.to_path_buf());
    let lines = cursor.read_new().await;
    let total = lines.len();
    let mut tail: VecDeque<String> = lines.into();
    while tail.len() > n {
        tail.pop_front();
    }
    (tail.into(), total)
}

/// Log lines a newly connected browser gets before the live ones.
const LOG_BACKLOG: usize = 500;
/// How often a stream looks at the files and the row when nothing woke it: workers in other
/// processes cannot wake it.
const POLL: Duration = Duration::from_secs(1);

pub fn status_data(task: &training_tasks::Model) -> serde_json::Value {
    let mut data = json!({
        "status": task.status,
        "progress": task.progress,
        "current_step": task.current_step,
        "total_steps": task.total_steps,
        "eta_seconds": task.eta_seconds,
        "swanlab_url": task.swanlab_url,
    });
    if let Some(error) = &task.error_message {
        data["error"] = json!(error);
    }
    data
}

/// A task's files as one browser has seen them so far.
struct Follower {
    metrics: LineCursor,
    log: LineCursor,
    tx: mpsc::Sender<Bytes>,
}

impl Follower {
    async fn send(&self, event: &str, data: &serde_json::Value) -> bool {
        self.tx.send(frame(event, data)).await.is_ok()
    }

    /// Sends the steps and log lines written since the last call; false once the client left.
    async fn send_new(&mut self, mut log_lines: Vec<String>) -> bool {
        for line in self.metrics.read_new().await {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if !self.send("metrics", &value).await {
                return false;
            }
        }
        log_lines.extend(self.log.read_new().await);
        for line in log_lines {
            if !self.send("log", &json!({ "line": line })).await {
                return false;
            }
        }
        true
    }
}

/// Feeds `tx` with the task's status, its whole metrics history and the log tail, then the live
/// events, and ends after the task finished. Ends early when the client goes away.
pub async fn stream(db: sea_orm::DatabaseConnection, hub: Hub, task: training_tasks::Model, dir: PathBuf, tx: mpsc::Sender<Bytes>) {
    // Subscribe before reading anything, so nothing written in between is missed.
    let mut changed = hub.subscribe();
    let mut follower = Follower { metrics: LineCursor::new(metrics_path(&dir)), log: LineCursor::new(log_path(&dir)), tx };
    let mut last_status = status_data(&task);
    if !follower.send("status", &last_status).await {
        return;
    }
    let backlog = follower.log.read_new().await;
    let skip = backlog.len().saturating_sub(LOG_BACKLOG);
    if !follower.send_new(backlog.into_iter().skip(skip).collect()).await || is_finished(&task.status) {
        return;
    }
    loop {
        let wake = tokio::select! {
            _ = follower.tx.closed() => return,
            _ = tokio::time::sleep(POLL) => true,
            r = changed.recv() => matches!(r, Ok(id) if id == task.id) || matches!(r, Err(RecvError::Lagged(_))),
        };
        if !wake {
            continue;
        }
        let Ok(Some(row)) = training_tasks::Entity::find_by_id(task.id).one(&db).await else { return };
        // The files first, so a status follows the steps and lines written before it.
        if !follower.send_new(Vec::new()).await {
            return;
        }
        let status = status_data(&row);
        if status == last_status {
            continue;
        }
        if !follower.send("status", &status).await || is_finished(&row.status) {
            return;
        }
        last_status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_cursor_yields_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        let mut cursor = LineCursor::new(path.clone());
        assert!(cursor.read_new().await.is_empty(), "no file yet");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        file.write_all("first\nsecond, half".as_bytes()).unwrap();
        assert_eq!(cursor.read_new().await, ["first"]);
        assert!(cursor.read_new().await.is_empty());
        file.write_all(" done\n第三\n".as_bytes()).unwrap();
        assert_eq!(cursor.read_new().await, ["second, half done", "第三"]);
        let (lines, total) = tail(&path, 2).await;
        assert_eq!((lines, total), (vec!["second, half done".to_owned(), "第三".to_owned()], 3));
    }
}
