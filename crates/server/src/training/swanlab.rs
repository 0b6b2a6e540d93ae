//! The SwanLab sidecar (R-TRAIN-5): `scripts/swanlab_sidecar.py`, run with the Python of the
//! SwanLab venv, receives each step's metrics on stdin and logs them through the official SDK.
//! Anything going wrong here is a warning in the task log; training goes on without SwanLab.
use std::{path::Path, process::Stdio, time::Duration};

use sea_orm::EntityTrait;
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
};

use super::{Runtime, events::{StepMetrics, TaskFiles}};
use crate::runtime_settings::{RuntimeSettings, SwanlabMode};
use store::entities::{app_settings, training_tasks};

/// How long `swanlab.init` may take (online mode talks to the cloud).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the sidecar may take to flush and finish the run after training.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Sidecar {
    child: Child,
    stdin: Option<ChildStdin>,
    files: TaskFiles,
    /// The run URL (online) or the run directory (offline), for `swanlab_url`.
    pub location: String,
}

#[derive(Deserialize)]
struct Announcement {
    swanlab_sidecar: String,
    run_dir: Option<String>,
    url: Option<String>,
    message: Option<String>,
}

/// The stored settings, read directly so that `workbench worker` (no `AppState`) sees them too.
async fn settings(rt: &Runtime) -> Option<RuntimeSettings> {
    let row = app_settings::Entity::find_by_id(crate::runtime_settings::RUNTIME_KEY.to_owned()).one(&rt.db).await.ok()??;
    serde_json::from_str(&row.value).ok()
}

/// Starts the sidecar when SwanLab is enabled; `None` (with a warning in the log when it was
/// enabled) otherwise.
pub async fn start(rt: &Runtime, task: &training_tasks::Model, dir: &Path, config: &serde_json::Value, files: &TaskFiles) -> Option<Sidecar> {
    let settings = settings(rt).await?;
    let swanlab = &settings.swanlab;
    let mode = match swanlab.mode {
        SwanlabMode::Disabled => return None,
        SwanlabMode::Offline => "offline",
        SwanlabMode::Online => "online",
    };
    let warn = |why: String| async move {
        files.line(&format!("warning: SwanLab is enabled ({mode}) but not available: {why}; training goes on without it")).await;
    };
    let python = &rt.settings.training.swanlab_python;
    let script = &rt.settings.training.swanlab_script;
    if !python.is_file() {
        warn(format!("{} is missing (run scripts/install-swanlab.sh)", python.display())).await;
        return None;
    }
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--mode", mode, "--project"])
        .arg(swanlab.project.as_deref().unwrap_or("llm-workbench"))
        .args(["--experiment", &format!("{}-{}", task.name, task.id)])
        .arg("--logdir")
        .arg(dir.join("swanlab"))
        .arg("--config")
        .arg(config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The SDK wraps its messages at the terminal width; one message, one log line.
        .env("COLUMNS", "1000")
        .kill_on_drop(true);
    if let Some(workspace) = &swanlab.workspace {
        command.args(["--workspace", workspace]);
    }
    if mode == "online" {
        match settings.swanlab_api_key(&rt.cipher) {
            Some(key) => {
                command.env("SWANLAB_API_KEY", key);
            }
            None => {
                warn("online mode needs an API key in the settings".into()).await;
                return None;
            }
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn(format!("cannot start {}: {e}", python.display())).await;
            return None;
        }
    };
    forward(child.stderr.take(), files.clone());
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let announced = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = stdout.next_line().await {
            match serde_json::from_str::<Announcement>(&line) {
                Ok(a) => return Some(a),
                Err(_) => files.line(&format!("[swanlab] {line}")).await,
            }
        }
        None
    })
    .await;
    let location = match announced {
        Ok(Some(a)) if a.swanlab_sidecar == "started" => a.url.or(a.run_dir),
        Ok(Some(a)) => {
            warn(a.message.unwrap_or_else(|| "the sidecar failed".into())).await;
            None
        }
        Ok(None) => {
            warn("the sidecar exited before starting a run".into()).await;
            None
        }
        Err(_) => {
            warn(format!("the sidecar did not start a run within {}s", START_TIMEOUT.as_secs())).await;
            None
        }
    };
    let Some(location) = location else {
        let _ = child.kill().await;
        return None;
    };
    // Later stdout (the SDK's messages) goes to the log too.
    let rest = files.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            if serde_json::from_str::<Announcement>(&line).is_err() {
                rest.line(&format!("[swanlab] {line}")).await;
            }
        }
    });
    files.line(&format!("SwanLab ({mode}) run: {location}")).await;
    let stdin = child.stdin.take();
    Some(Sidecar { child, stdin, files: files.clone(), location })
}

fn forward(stream: Option<tokio::process::ChildStderr>, files: TaskFiles) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            files.line(&format!("[swanlab] {line}")).await;
        }
    });
}

impl Sidecar {
    pub async fn send(&mut self, metrics: &StepMetrics) {
        let Some(stdin) = self.stdin.as_mut() else { return };
        let mut line = serde_json::to_string(metrics).expect("metrics serialise");
        line.push('\n');
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            self.stdin = None;
            self.files.line(&format!("warning: the SwanLab sidecar stopped taking metrics ({e}); training goes on")).await;
        }
    }

    /// Closes its input, so it finishes the run, and waits for it (killing it after a while).
    pub async fn finish(mut self) {
        drop(self.stdin.take());
        match tokio::time::timeout(FINISH_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => self.files.line(&format!("warning: the SwanLab sidecar ended with {status}")).await,
            _ => {
                let _ = self.child.kill().await;
                self.files.line("warning: the SwanLab sidecar did not finish in time and was stopped").await;
            }
        }
    }

    /// Stops it at once (the task was cancelled or failed).
    pub async fn abort(mut self) {
        let _ = self.child.kill().await;
    }
}
