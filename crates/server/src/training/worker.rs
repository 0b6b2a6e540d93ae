//! A worker: claims tasks one at a time and runs each as a `workbench train` child process,
//! turning its output into progress, log lines and metrics, and its end into the task's result.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::{broadcast::error::RecvError, watch},
};

use super::{
    CANCELLED, COMPLETED, FAILED, RUNNING, Runtime, adapter_path,
    events::{StepMetrics, TaskFiles, TrainerStep},
    log_path, queue, swanlab,
};
use store::entities::{datasets, models, training_configs, training_tasks};

/// Progress is written to the row at most this often (and always at the last step).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Stderr lines kept to explain a failed trainer.
const ERROR_CONTEXT: usize = 5;

pub async fn run(rt: Runtime, mut stop: watch::Receiver<bool>) {
    let worker = queue::WorkerId::new();
    let poll = Duration::from_secs(rt.settings.training.poll_secs.max(1));
    let stale_after = chrono::Duration::seconds(rt.settings.training.stale_after_secs.max(1) as i64);
    tracing::info!(worker = worker.as_str(), "training worker started");
    while !*stop.borrow() {
        if let Err(e) = queue::fail_orphans(&rt.db, rt.clock.now(), stale_after).await {
            tracing::warn!(error = %e, "checking for orphaned training tasks");
        }
        match queue::claim_next(&rt.db, worker.as_str(), rt.clock.now()).await {
            Ok(Some(task)) => {
                rt.hub.task_changed(task.id);
                run_task(&rt, worker.as_str(), task, &mut stop).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a training task"),
        }
        tokio::select! {
            _ = rt.hub.next_queued() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!(worker = worker.as_str(), "training worker stopped");
}

/// Everything the trainer command needs, resolved from the task's rows.
struct Plan {
    model: models::Model,
    data: PathBuf,
    config: Value,
    flags: Vec<String>,
}

async fn plan(rt: &Runtime, task: &training_tasks::Model) -> anyhow::Result<Plan> {
    let model = match task.model_id {
        Some(id) => models::Entity::find_by_id(id).one(&rt.db).await?,
        None => models::Entity::find().filter(models::Column::Name.eq(task.model_name.as_str())).one(&rt.db).await?,
    }
    .with_context(|| format!("the base model {} is no longer registered", task.model_name))?;
    anyhow::ensure!(Path::new(&model.model_path).is_file(), "the base model file {} is missing", model.model_path);
    let dataset = match task.dataset_id {
        Some(id) => datasets::Entity::find_by_id(id).one(&rt.db).await?,
        None => None,
    }
    .context("the dataset was deleted")?;
    let data = dataset_training_file(&dataset);
    let text = tokio::fs::read_to_string(&data)
        .await
        .with_context(|| format!("reading the dataset's training file {}", data.display()))?;
    let records = text.lines().filter(|l| !l.trim().is_empty()).count();
    anyhow::ensure!(records > 0, "the dataset has no records");
    let config = match task.config_id {
        Some(id) => training_configs::Entity::find_by_id(id).one(&rt.db).await?,
        None => None,
    }
    .context("the training config was deleted")?
    .config_data;
    // The configs API validated these; a row that no longer passes (edited by hand, written by
    // an older version) fails the task with the reasons rather than training on guesses.
    let params = super::params::TrainingParams::from_stored(&config).map_err(|fields| {
        let why: Vec<String> = fields.iter().map(|(field, reason)| format!("{field}: {reason}")).collect();
        anyhow::anyhow!("the training config is not valid: {}", why.join("; "))
    })?;
    let flags = params.to_trainer_args(records as u64);
    Ok(Plan { model, data, config, flags })
}

/// The normalized messages JSONL the datasets API writes beside every upload.
pub fn dataset_training_file(dataset: &datasets::Model) -> PathBuf {
    crate::datasets::train_file(&dataset.file_path)
}

/// How the trainer's run ended.
enum End {
    Exited(ExitStatus),
    Cancelled,
    /// This worker is stopping (server shutdown, Ctrl-C on `workbench worker`).
    Stopped,
    /// Another worker took the task away (it thought this one dead).
    Lost,
    Broken(String),
}

/// What the trainer reported while it ran.
#[derive(Default)]
struct Progress {
    last: Option<StepMetrics>,
    first_loss: Option<f64>,
    min_loss: Option<f64>,
    last_write: Option<Instant>,
    stderr: VecDeque<String>,
}

async fn run_task(rt: &Runtime, worker: &str, task: training_tasks::Model, stop: &mut watch::Receiver<bool>) {
    let dir = rt.task_dir(task.id);
    let adapter = adapter_path(&dir);
    let files = match TaskFiles::create(&dir, task.id, rt.hub.clone()).await {
        Ok(files) => files,
        Err(e) => {
            finish(rt, worker, &task, FAILED, Some(format!("cannot create {}: {e}", dir.display())), None, None).await;
            return;
        }
    };
    let _ = training_tasks::Entity::update_many()
        .col_expr(training_tasks::Column::LogFile, Expr::value(log_path(&dir).display().to_string()))
        .col_expr(training_tasks::Column::OutputDir, Expr::value(adapter.display().to_string()))
        .filter(training_tasks::Column::Id.eq(task.id))
        .exec(&rt.db)
        .await;
    files.line(&format!("worker {worker} took the task")).await;
    let plan = match plan(rt, &task).await {
        Ok(plan) => plan,
        Err(e) => {
            let why = format!("{e:#}");
            files.line(&format!("error: {why}")).await;
            finish(rt, worker, &task, FAILED, Some(why), None, None).await;
            return;
        }
    };
    let mut sidecar = swanlab::start(rt, &task, &dir, &plan.config, &files).await;
    if let Some(s) = &sidecar {
        let _ = training_tasks::Entity::update_many()
            .col_expr(training_tasks::Column::SwanlabUrl, Expr::value(s.location.clone()))
            .filter(training_tasks::Column::Id.eq(task.id))
            .exec(&rt.db)
            .await;
    }
    let started = Instant::now();
    let mut child = match spawn_trainer(rt, &plan, &adapter, &files).await {
        Ok(child) => child,
        Err(e) => {
            let why = format!("cannot start the trainer: {e:#}");
            files.line(&format!("error: {why}")).await;
            if let Some(s) = sidecar {
                s.abort().await;
            }
            finish(rt, worker, &task, FAILED, Some(why), None, None).await;
            return;
        }
    };
    let mut progress = Progress::default();
    let end = supervise(rt, worker, &task, &mut child, &files, &mut sidecar, &mut progress, stop).await;
    if !matches!(end, End::Exited(_)) {
        kill_group(&child);
    }
    let _ = child.wait().await;
    match end {
        End::Exited(status) if status.success() && adapter.join("adapter_model.safetensors").is_file() => {
            if let Some(s) = sidecar {
                s.finish().await;
            }
            let report = report(&progress, started.elapsed(), &adapter);
            let registered = register_adapter(rt, &task, &plan.model, &adapter).await;
            match registered {
                Ok(model) => {
                    files.line(&format!("adapter saved to {} and registered as model {:?}", adapter.display(), model.name)).await;
                    finish(rt, worker, &task, COMPLETED, None, Some(report), Some(model.id)).await;
                }
                Err(e) => {
                    let why = format!("the adapter could not be registered: {e:#}");
                    files.line(&format!("error: {why}")).await;
                    finish(rt, worker, &task, FAILED, Some(why), Some(report), None).await;
                }
            }
        }
        End::Exited(status) => {
            if let Some(s) = sidecar {
                s.finish().await;
            }
            let detail = progress.stderr.iter().rev().find(|l| !l.trim().is_empty()).cloned();
            let why = match (status.success(), detail) {
                (true, _) => "the trainer ended without saving an adapter".to_owned(),
                (false, Some(d)) => format!("the trainer failed ({status}): {d}"),
                (false, None) => format!("the trainer failed ({status})"),
            };
            files.line(&format!("error: {why}")).await;
            finish(rt, worker, &task, FAILED, Some(why), None, None).await;
        }
        End::Cancelled => {
            if let Some(s) = sidecar {
                s.abort().await;
            }
            files.line("cancelled: the trainer was stopped").await;
            finish(rt, worker, &task, CANCELLED, None, None, None).await;
        }
        End::Stopped => {
            if let Some(s) = sidecar {
                s.abort().await;
            }
            let why = format!("worker {worker} was stopped while the task was running");
            files.line(&format!("error: {why}")).await;
            finish(rt, worker, &task, FAILED, Some(why), None, None).await;
        }
        End::Lost => {
            if let Some(s) = sidecar {
                s.abort().await;
            }
            files.line("the task was taken from this worker; the trainer was stopped").await;
        }
        End::Broken(why) => {
            if let Some(s) = sidecar {
                s.abort().await;
            }
            files.line(&format!("error: {why}")).await;
            finish(rt, worker, &task, FAILED, Some(why), None, None).await;
        }
    }
}

async fn spawn_trainer(rt: &Runtime, plan: &Plan, adapter: &Path, files: &TaskFiles) -> anyhow::Result<Child> {
    let binary = rt.trainer_binary()?;
    let mut command = Command::new(&binary);
    command
        .arg("train")
        .arg("--model")
        .arg(&plan.model.model_path)
        .arg("--data")
        .arg(&plan.data)
        .arg("--out")
        .arg(adapter)
        .args(&plan.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a cancel reaches everything it started.
    #[cfg(unix)]
    command.process_group(0);
    constrain_trainer(&mut command);
    let shown: Vec<String> = std::iter::once(binary.display().to_string())
        .chain(["train".into(), "--model".into(), plan.model.model_path.clone(), "--data".into(), plan.data.display().to_string(), "--out".into(), adapter.display().to_string()])
        .chain(plan.flags.iter().cloned())
        .collect();
    files.line(&format!("starting: {}", shown.join(" "))).await;
    let child = command.spawn().with_context(|| format!("running {}", binary.display()))?;
    files.line(&format!("trainer started (pid {})", child.id().unwrap_or_default())).await;
    Ok(child)
}

#[allow(clippy::too_many_arguments)]
async fn supervise(
    rt: &Runtime,
    worker: &str,
    task: &training_tasks::Model,
    child: &mut Child,
    files: &TaskFiles,
    sidecar: &mut Option<swanlab::Sidecar>,
    progress: &mut Progress,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let (mut stdout_open, mut stderr_open) = (true, true);
    let mut beat = tokio::time::interval(Duration::from_secs(rt.settings.training.heartbeat_secs.max(1)));
    beat.tick().await;
    let mut cancels = rt.hub.subscribe_cancels();
    loop {
        tokio::select! {
            line = stdout.next_line(), if stdout_open => match line {
                Ok(Some(line)) => on_stdout(rt, task, &line, files, sidecar, progress).await,
                _ => stdout_open = false,
            },
            line = stderr.next_line(), if stderr_open => match line {
                Ok(Some(line)) => {
                    files.line(&line).await;
                    progress.stderr.push_back(line);
                    if progress.stderr.len() > ERROR_CONTEXT {
                        progress.stderr.pop_front();
                    }
                }
                _ => stderr_open = false,
            },
            status = child.wait(), if !stdout_open && !stderr_open => {
                return match status {
                    Ok(status) => End::Exited(status),
                    Err(e) => End::Broken(format!("waiting for the trainer: {e}")),
                };
            }
            _ = beat.tick() => match queue::heartbeat(&rt.db, task.id, worker, rt.clock.now()).await {
                Ok(queue::Beat::Held) => {
                    // A busy worker still notices other workers' deaths.
                    let stale_after = chrono::Duration::seconds(rt.settings.training.stale_after_secs.max(1) as i64);
                    if let Err(e) = queue::fail_orphans(&rt.db, rt.clock.now(), stale_after).await {
                        tracing::warn!(error = %e, "checking for orphaned training tasks");
                    }
                }
                Ok(queue::Beat::CancelRequested) => return End::Cancelled,
                Ok(queue::Beat::Lost) => return End::Lost,
                Err(e) => tracing::warn!(task = task.id, error = %e, "training heartbeat"),
            },
            news = cancels.recv() => {
                let ours = matches!(news, Ok(id) if id == task.id) || matches!(news, Err(RecvError::Lagged(_)));
                if ours && let Ok(queue::Beat::CancelRequested) = queue::cancel_requested(&rt.db, task.id).await {
                    return End::Cancelled;
                }
            }
            _ = stop.changed() => return End::Stopped,
        }
    }
}

async fn on_stdout(
    rt: &Runtime,
    task: &training_tasks::Model,
    line: &str,
    files: &TaskFiles,
    sidecar: &mut Option<swanlab::Sidecar>,
    progress: &mut Progress,
) {
    let Ok(step) = serde_json::from_str::<TrainerStep>(line) else {
        // The summary line and anything else: kept in the log as is.
        files.line(line).await;
        return;
    };
    let metrics = StepMetrics::from(step);
    files
        .line(&format!(
            "step {}/{} epoch {:.2} loss {:.4} lr {:.3e} grad_norm {:.3} {:.0} tokens/s eta {:.0}s",
            metrics.step, metrics.total_steps, metrics.epoch, metrics.loss, metrics.lr, metrics.grad_norm, metrics.tokens_per_s, metrics.eta
        ))
        .await;
    files.metrics(&metrics).await;
    if let Some(s) = sidecar.as_mut() {
        s.send(&metrics).await;
    }
    progress.first_loss.get_or_insert(metrics.loss);
    progress.min_loss = Some(progress.min_loss.map_or(metrics.loss, |m| m.min(metrics.loss)));
    let last_step = metrics.step >= metrics.total_steps;
    let due = progress.last_write.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
    if due || last_step {
        let percent = if metrics.total_steps == 0 { 0.0 } else { metrics.step as f64 * 100.0 / metrics.total_steps as f64 };
        let result = training_tasks::Entity::update_many()
            .col_expr(training_tasks::Column::Progress, Expr::value(percent.min(100.0)))
            .col_expr(training_tasks::Column::CurrentStep, Expr::value(metrics.step as i32))
            .col_expr(training_tasks::Column::TotalSteps, Expr::value(metrics.total_steps as i32))
            .col_expr(training_tasks::Column::EtaSeconds, Expr::value(metrics.eta.round() as i64))
            .filter(training_tasks::Column::Id.eq(task.id))
            .filter(training_tasks::Column::Status.eq(RUNNING))
            .exec(&rt.db)
            .await;
        if let Err(e) = result {
            tracing::warn!(task = task.id, error = %e, "saving training progress");
        }
        progress.last_write = Some(Instant::now());
        rt.hub.task_changed(task.id);
    }
    progress.last = Some(metrics);
}

/// The trainer's scheduling niceness. Training takes every core it is given for minutes or
/// hours; on a machine that also serves chats, the server's short bursts of work must not queue
/// behind it. On a machine with idle cores the trainer loses nothing.
pub const TRAINER_NICENESS: i32 = 10;

/// The trainer gets SIGKILL when its worker dies, even a worker killed with SIGKILL, so no
/// trainer outlives the worker that supervises it; and it runs at [`TRAINER_NICENESS`].
#[cfg(target_os = "linux")]
fn constrain_trainer(command: &mut Command) {
    // SAFETY: the hook runs between fork and exec and only calls prctl and setpriority, which
    // are async-signal-safe system calls.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setpriority(libc::PRIO_PROCESS, 0, TRAINER_NICENESS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn constrain_trainer(_command: &mut Command) {}

/// Sends SIGKILL to the trainer's process group (it is its leader).
fn kill_group(child: &Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: plain kill(2) on the group we created for the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = child;
}

fn report(progress: &Progress, duration: Duration, adapter: &Path) -> Value {
    let last = progress.last.as_ref();
    let size: u64 = std::fs::read_dir(adapter)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0);
    json!({
        "duration_s": duration.as_secs_f64(),
        "steps": last.map(|m| m.step),
        "epochs": last.map(|m| m.epoch),
        "first_loss": progress.first_loss,
        "final_loss": last.map(|m| m.loss),
        "min_loss": progress.min_loss,
        "tokens_seen": last.map(|m| (m.tokens_per_s * m.elapsed).round() as u64),
        "tokens_per_s": last.map(|m| m.tokens_per_s),
        "adapter_path": adapter.display().to_string(),
        "adapter_size_bytes": size,
    })
}

/// Adds the adapter to the models registry (R-TRAIN-6), under a name unique by the task id.
async fn register_adapter(rt: &Runtime, task: &training_tasks::Model, base: &models::Model, adapter: &Path) -> anyhow::Result<models::Model> {
    // Described as an adapter registered from disk is, plus where it came from.
    let mut parameters = crate::local_models::describe_adapter(adapter).map_err(|e| anyhow::anyhow!("the trained adapter: {e}"))?;
    parameters["base_model_id"] = json!(base.id);
    parameters["base_model_path"] = json!(base.model_path);
    parameters["task_id"] = json!(task.id);
    let stem = format!("{}-lora-{}", task.name.chars().take(60).collect::<String>(), task.id);
    let name = crate::local_models::free_name(&rt.db, &stem).await?;
    let model = crate::local_models::insert(
        &rt.db,
        crate::local_models::NewModel {
            name,
            display_name: format!("{} (LoRA on {})", task.name, base.display_name),
            model_path: adapter.to_path_buf(),
            model_type: crate::local_models::TYPE_LORA,
            description: Some(format!("LoRA adapter trained by task {} on {}", task.id, base.name)),
            parameters,
            created_by: task.created_by,
        },
    )
    .await?;
    // Chat-able at once: the built-in provider's model list follows the registry.
    crate::local_models::sync_provider_at(&rt.db, rt.clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("listing the adapter on the local provider: {e:?}"))?;
    Ok(model)
}

/// Records the task's end, unless another worker took it over meanwhile.
async fn finish(
    rt: &Runtime,
    worker: &str,
    task: &training_tasks::Model,
    status: &str,
    error: Option<String>,
    report: Option<Value>,
    adapter_model_id: Option<i32>,
) {
    let mut update = training_tasks::Entity::update_many()
        .col_expr(training_tasks::Column::Status, Expr::value(status))
        .col_expr(training_tasks::Column::ErrorMessage, Expr::value(error))
        .col_expr(training_tasks::Column::CompletedAt, Expr::value(rt.clock.now()))
        .col_expr(training_tasks::Column::EtaSeconds, Expr::value(Option::<i64>::None))
        .col_expr(training_tasks::Column::Report, Expr::value(report.map(|r| r.to_string())))
        .col_expr(training_tasks::Column::AdapterModelId, Expr::value(adapter_model_id));
    if status == COMPLETED {
        update = update.col_expr(training_tasks::Column::Progress, Expr::value(100.0));
    }
    let result = update
        .filter(training_tasks::Column::Id.eq(task.id))
        .filter(training_tasks::Column::WorkerId.eq(worker))
        .filter(training_tasks::Column::Status.eq(RUNNING))
        .exec(&rt.db)
        .await;
    if let Err(e) = result {
        tracing::error!(task = task.id, error = %e, "recording the end of a training task");
    }
    tracing::info!(task = task.id, status, "training task ended");
    rt.hub.task_changed(task.id);
}
