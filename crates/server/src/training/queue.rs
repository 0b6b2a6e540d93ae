//! The queue is the `training_tasks` table: a worker claims the oldest pending task atomically,
//! keeps a heartbeat while it runs, and any worker fails the tasks of workers that died.
use std::{
    collections::HashSet,
    sync::{LazyLock, Mutex},
};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::{Expr, LockBehavior, LockType},
};
use store::entities::training_tasks::{self, Column, Entity};

use super::{FAILED, PENDING, RUNNING};

/// Worker ids alive in this process: a task held by this process under an id not in this set
/// belongs to a worker that is gone (an earlier incarnation that reused the pid, or a stopped
/// worker).
static LIVE_WORKERS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// `host:pid:token`, registered as alive until dropped. Host and pid let a worker on the same
/// machine see at once that the holder of a task is gone; other machines' dead workers are
/// found by their stale heartbeat.
pub struct WorkerId(String);

impl WorkerId {
    pub fn new() -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("{}:{}:{}", hostname(), std::process::id(), &token[..8]);
        LIVE_WORKERS.lock().expect("worker registry").insert(id.clone());
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WorkerId {
    fn drop(&mut self) {
        LIVE_WORKERS.lock().expect("worker registry").remove(&self.0);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Takes the oldest pending task for `worker`, or `None`. Two workers never take the same task:
/// PostgreSQL and MariaDB lock the candidate row (`FOR UPDATE SKIP LOCKED`, so a second worker
/// moves on to the next task instead of waiting); SQLite serialises writers, and the
/// conditional update succeeds for one of them only.
pub async fn claim_next(db: &DatabaseConnection, worker: &str, now: DateTime<Utc>) -> Result<Option<training_tasks::Model>, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        loop {
            let Some(candidate) = oldest_pending().one(db).await? else { return Ok(None) };
            if take(db, candidate.id, worker, now).await? {
                return Entity::find_by_id(candidate.id).one(db).await;
            }
            // Another worker was quicker: try the next one.
        }
    }
    let txn = db.begin().await?;
    let candidate = oldest_pending().lock_with_behavior(LockType::Update, LockBehavior::SkipLocked).one(&txn).await?;
    let claimed = match candidate {
        Some(task) if take(&txn, task.id, worker, now).await? => Some(task.id),
        _ => None,
    };
    txn.commit().await?;
    match claimed {
        Some(id) => Entity::find_by_id(id).one(db).await,
        None => Ok(None),
    }
}

fn oldest_pending() -> sea_orm::Select<Entity> {
    Entity::find().filter(Column::Status.eq(PENDING)).order_by_asc(Column::Id)
}

async fn take(db: &impl ConnectionTrait, id: i32, worker: &str, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let result = Entity::update_many()
        .col_expr(Column::Status, Expr::value(RUNNING))
        .col_expr(Column::WorkerId, Expr::value(worker))
        .col_expr(Column::StartedAt, Expr::value(now))
        .col_expr(Column::HeartbeatAt, Expr::value(now))
        .col_expr(Column::Progress, Expr::value(0.0))
        .filter(Column::Id.eq(id))
        .filter(Column::Status.eq(PENDING))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// What the holder of a running task learns from its heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Held,
    CancelRequested,
    /// The task is no longer ours (another worker failed it as stale, or it was deleted).
    Lost,
}

pub async fn heartbeat(db: &DatabaseConnection, task_id: i32, worker: &str, now: DateTime<Utc>) -> Result<Beat, DbErr> {
    let result = Entity::update_many()
        .col_expr(Column::HeartbeatAt, Expr::value(now))
        .filter(Column::Id.eq(task_id))
        .filter(Column::WorkerId.eq(worker))
        .filter(Column::Status.eq(RUNNING))
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Ok(Beat::Lost);
    }
    cancel_requested(db, task_id).await
}

pub async fn cancel_requested(db: &DatabaseConnection, task_id: i32) -> Result<Beat, DbErr> {
    Ok(match Entity::find_by_id(task_id).one(db).await? {
        Some(t) if t.cancel_requested => Beat::CancelRequested,
        Some(_) => Beat::Held,
        None => Beat::Lost,
    })
}

/// Fails every running task whose worker is gone, with the reason; returns how many. Run by
/// every worker when it starts and between tasks, so no task stays `running` after its worker
/// crashed, was killed or restarted.
pub async fn fail_orphans(db: &DatabaseConnection, now: DateTime<Utc>, stale_after: Duration) -> Result<usize, DbErr> {
    let running = Entity::find().filter(Column::Status.eq(RUNNING)).all(db).await?;
    let mut failed = 0;
    for task in running {
        let Some(reason) = orphan_reason(&task, now, stale_after) else { continue };
        let mut update = Entity::update_many()
            .col_expr(Column::Status, Expr::value(FAILED))
            .col_expr(Column::ErrorMessage, Expr::value(reason.clone()))
            .col_expr(Column::CompletedAt, Expr::value(now))
            .col_expr(Column::EtaSeconds, Expr::value(Option::<i64>::None))
            .filter(Column::Id.eq(task.id))
            .filter(Column::Status.eq(RUNNING));
        update = match &task.worker_id {
            Some(w) => update.filter(Column::WorkerId.eq(w.as_str())),
            None => update.filter(Column::WorkerId.is_null()),
        };
        if update.exec(db).await?.rows_affected == 1 {
            tracing::warn!(task = task.id, %reason, "failed a task whose worker is gone");
            failed += 1;
        }
    }
    Ok(failed)
}

fn orphan_reason(task: &training_tasks::Model, now: DateTime<Utc>, stale_after: Duration) -> Option<String> {
    let Some(worker) = task.worker_id.as_deref() else {
        return Some("the task was running without a worker".into());
    };
    let mut parts = worker.splitn(3, ':');
    let (host, pid) = (parts.next().unwrap_or_default(), parts.next().and_then(|p| p.parse::<u32>().ok()));
    if host == hostname()
        && let Some(pid) = pid
    {
        if pid == std::process::id() {
            if !LIVE_WORKERS.lock().expect("worker registry").contains(worker) {
                return Some(format!("worker {worker} stopped while the task was running (restart)"));
            }
            return None;
        }
        if !process_alive(pid) {
            return Some(format!(
                "worker {worker} is gone: its process {pid} ended while the task was running (crash, kill or restart)"
            ));
        }
    }
    match task.heartbeat_at {
        Some(beat) if now - beat <= stale_after => None,
        Some(beat) => Some(format!("worker {worker} stopped sending heartbeats (last at {})", beat.to_rfc3339())),
        None => Some(format!("worker {worker} never sent a heartbeat")),
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence only; EPERM means it exists under another user.
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}
