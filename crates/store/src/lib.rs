//! Persistence: SeaORM entities, migrations and the connection, for SQLite, PostgreSQL and MariaDB;
//! on SQLite also a connection for statements run inline ([`inline`]).
pub mod entities;
pub mod inline;
pub mod migration;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
pub use sea_orm_migration::MigratorTrait;

pub use inline::InlineSqlite;
pub use migration::Migrator;

/// SQLite runs one writer at a time, but readers beside it (WAL); the others wait in
/// [`retry_soon`]. One connection serialised reads too, and its single worker thread became the
/// queue every request waited in (measured: 4× the added first-token latency of eight).
const SQLITE_CONNECTIONS: u32 = 8;

/// WAL pages after which a committing connection checkpoints the log itself, on its own
/// request's time (SQLite's default is 1,000 pages: under streaming load, a checkpoint every
/// hundred or so requests, each copying megabytes and syncing the disk twice inside somebody's
/// request). The server checkpoints in the background every [`CHECKPOINT_INTERVAL`] instead
/// ([`Checkpointer`]), so the log stays far below this; it remains the bound for processes that
/// do not (the CLI, a training worker on its own). Measured with 64 paced streams
/// (`bench/chat`): the added first-token p99 went from 2.7–4.2 ms to 1.3–2.0 ms.
const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// How often a server checkpoints SQLite's log with [`Checkpointer`].
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Log pages past which [`Checkpointer::run`] has SQLite start the log over. A passive
/// checkpoint copies pages in but cannot rewind the log while any reader still uses it, and
/// under steady load one always does: the log then only grows (measured: 150 MB within seconds
/// of `bench/chat` at 64 streams), and once past [`SQLITE_AUTOCHECKPOINT_PAGES`] every commit
/// checkpoints inside its request again. 2,000 pages is 8 MB with 4 KiB pages.
const RESTART_LOG_PAGES: i64 = 2_000;

/// Busy-handler tries of the checkpoint connection, about 50 ms (see [`retry_soon`]): a
/// restarting checkpoint holds new writers back while it waits for readers, so it gives up soon
/// and tries again at the next interval rather than stall every write behind a slow reader.
const CHECKPOINT_BUSY_RETRIES: i32 = 55;

/// Opens a pool for `url` (`sqlite://…?mode=rwc`, `postgres://…`, `mysql://…`).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { SQLITE_CONNECTIONS } else { 16 })
        .connect_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out by default: one more round trip per query
        // (a thread hop for SQLite). Only a connection idle this long may have been dropped.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    // Set on every pooled connection (a PRAGMA run through the pool reaches only one of them).
    // WAL lets readers proceed during a write; writers that find the write lock taken wait in
    // [`retry_soon`] (installed below, in place of a busy timeout) instead of failing with
    // SQLITE_BUSY. In WAL mode `synchronous = NORMAL` syncs
    // at checkpoints instead of at every commit: a crash of the process loses nothing committed
    // (only a power cut can lose the last commits), and a streaming chat's several small writes no
    // longer each wait for the disk.
    options.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", SQLITE_AUTOCHECKPOINT_PAGES.to_string())
    });
    // ENABLE_QPSG (query planner stability): without it SQLite plans a statement for the values
    // bound to it where they could matter, such as the `LIMIT ?` SeaORM puts on every `.one()`,
    // and so recompiles the cached statement each time it is run with new bindings. Measured
    // with one-chunk chat answers (`BENCH_MODEL=bench-1 bench/chat/run.sh`, AMD EPYC Zen 1):
    // re-preparing was about 15 % of the SQLite threads' time, and with stable plans the platform
    // served 14–23 % more requests per second at concurrency 1 and 64 in alternating runs.
    options.map_sqlx_sqlite_pool_opts(|pool| {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                let db = handle.as_raw_handle().as_ptr();
                // SAFETY: the handle is locked away from the connection's worker thread for
                // these calls, `retry_soon` is a plain function that lives forever, and
                // ENABLE_QPSG takes an int and a nullable int pointer.
                let qpsg = unsafe {
                    libsqlite3_sys::sqlite3_busy_handler(db, Some(retry_soon), std::ptr::null_mut());
                    libsqlite3_sys::sqlite3_db_config(db, libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG, 1, std::ptr::null_mut::<std::ffi::c_int>())
                };
                if qpsg != libsqlite3_sys::SQLITE_OK {
                    tracing::warn!(code = qpsg, "SQLite refused a stable query plan: cached statements may be recompiled per use");
                }
                Ok(())
            })
        })
    });
    Database::connect(options).await
}

/// Checkpoints SQLite's write-ahead log on a connection of its own, outside the pool, whose busy
/// handler gives up after [`CHECKPOINT_BUSY_RETRIES`].
pub struct Checkpointer {
    conn: sea_orm::sqlx::SqliteConnection,
}

/// What one [`Checkpointer::run`] did, in log pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Pages in the log when the passive checkpoint ran.
    pub log_pages: i64,
    /// Whether the log had grown past [`RESTART_LOG_PAGES`] and the next write now starts it
    /// over (false also when readers held on past the busy handler: the next run tries again).
    pub restarted: bool,
}

impl Checkpointer {
    /// A checkpointer for the database at `url`; `None` for databases other than SQLite.
    pub async fn open(url: &str) -> Result<Option<Self>, DbErr> {
        use sea_orm::sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
        use std::str::FromStr;
        if !url.starts_with("sqlite:") {
            return Ok(None);
        }
        let mut conn = SqliteConnectOptions::from_str(url).map_err(sqlx_err)?.connect().await.map_err(sqlx_err)?;
        let mut handle = conn.lock_handle().await.map_err(sqlx_err)?;
        // SAFETY: the handle is locked away from the connection's worker thread, and
        // `retry_briefly` is a plain function that lives forever.
        unsafe { libsqlite3_sys::sqlite3_busy_handler(handle.as_raw_handle().as_ptr(), Some(retry_briefly), std::ptr::null_mut()) };
        drop(handle);
        Ok(Some(Self { conn }))
    }

    /// Copies the log into the database as far as readers allow (a passive checkpoint: it waits
    /// for nobody). When the log has grown past [`RESTART_LOG_PAGES`] it then waits, briefly,
    /// until every reader has moved past the log, so that the next write starts it over.
    pub async fn run(&mut self) -> Result<Checkpoint, DbErr> {
        let (_, log_pages, _) = self.pragma("PRAGMA wal_checkpoint(PASSIVE)").await?;
        let mut restarted = false;
        if log_pages > RESTART_LOG_PAGES {
            let (busy, _, _) = self.pragma("PRAGMA wal_checkpoint(RESTART)").await?;
            restarted = busy == 0;
        }
        Ok(Checkpoint { log_pages, restarted })
    }

    /// `wal_checkpoint`'s row: busy (1 when it could not finish), log pages, pages copied in.
    async fn pragma(&mut self, sql: &'static str) -> Result<(i64, i64, i64), DbErr> {
        sea_orm::sqlx::query_as(sql).fetch_one(&mut self.conn).await.map_err(sqlx_err)
    }
}

fn sqlx_err(err: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Custom(format!("SQLite checkpoint connection: {err}"))
}

const BUSY_RETRIES: i32 = 5_000;

/// SQLite's busy handler, replacing the one `busy_timeout` installs. That one sleeps 1, 2, 5,
/// 10, 15… ms between tries, so with many concurrent writers (every streaming answer writes
/// checkpoints) a request spent milliseconds asleep while the write lock, held for tens of
/// microseconds, was long free. This one sleeps 50 µs, doubling up to 1 ms, and gives up after
/// about 5 s like the timeout it replaces. It runs on the connection's own worker thread, where
/// sleeping blocks nothing else.
extern "C" fn retry_soon(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    retry_until(tries, BUSY_RETRIES)
}

/// [`retry_soon`] for the [`Checkpointer`], giving up after [`CHECKPOINT_BUSY_RETRIES`].
extern "C" fn retry_briefly(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    retry_until(tries, CHECKPOINT_BUSY_RETRIES)
}

fn retry_until(tries: std::ffi::c_int, limit: i32) -> std::ffi::c_int {
    if tries >= limit {
        return 0;
    }
    let micros = (50u64 << tries.clamp(0, 5)).min(1_000);
    std::thread::sleep(Duration::from_micros(micros));
    1
}

/// True when `err` is a unique-constraint violation (the API answers 409).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sea_orm::{ConnectionTrait, TransactionTrait};

    use super::*;

    #[test]
    fn the_busy_handler_retries_briefly_then_gives_up() {
        let started = Instant::now();
        assert_eq!(retry_soon(std::ptr::null_mut(), 0), 1);
        assert!(started.elapsed() < Duration::from_millis(20), "the first retry comes after about 50 µs");
        assert_eq!(retry_soon(std::ptr::null_mut(), BUSY_RETRIES), 0);
    }

    /// A writer that finds the database locked waits for the lock instead of failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_writer_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
        let db = connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (v INTEGER)").await.unwrap();
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (1)").await.unwrap();
        let other = tokio::spawn({
            let db = db.clone();
            async move { db.execute_unprepared("INSERT INTO t VALUES (2)").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!other.is_finished(), "the second writer waits while the first holds the lock");
        txn.commit().await.unwrap();
        other.await.unwrap().expect("the second write goes through once the lock is free");
    }

    /// Every pooled connection plans its statements once (ENABLE_QPSG), so the cached ones are
    /// not recompiled for new bindings.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_keeps_its_query_plans() {
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&format!("sqlite://{}?mode=rwc", dir.path().join("qpsg.db").display())).await.unwrap();
        let pool = db.get_sqlite_connection_pool();
        let mut held = Vec::new();
        for _ in 0..SQLITE_CONNECTIONS {
            held.push(pool.acquire().await.unwrap());
        }
        for conn in &mut held {
            let mut handle = conn.lock_handle().await.unwrap();
            let mut on: std::ffi::c_int = -1;
            // SAFETY: a locked handle; -1 leaves the setting as it is and reports it in `on`.
            let rc = unsafe {
                libsqlite3_sys::sqlite3_db_config(handle.as_raw_handle().as_ptr(), libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG, -1, &mut on as *mut std::ffi::c_int)
            };
            assert_eq!(rc, libsqlite3_sys::SQLITE_OK);
            assert_eq!(on, 1, "a connection without a stable query plan");
        }
    }

    /// Commits stay in the log until the server's checkpoint copies them in; no request's own
    /// commit does it at SQLite's default 1,000 pages.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_copied_in_by_the_checkpoint_not_by_commits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wal.db");
        let db = connect(&format!("sqlite://{}?mode=rwc", file.display())).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (v TEXT)").await.unwrap();
        // About 1,500 pages of commits: past SQLite's default threshold, far below ours.
        let rows = vec![format!("('{}')", "x".repeat(1000)); 20].join(", ");
        for _ in 0..300 {
            db.execute_unprepared(&format!("INSERT INTO t VALUES {rows}")).await.unwrap();
        }
        let size = || std::fs::metadata(&file).unwrap().len();
        assert!(size() < 1 << 20, "no commit checkpointed: the database file is still {} bytes", size());
        let url = format!("sqlite://{}?mode=rwc", file.display());
        Checkpointer::open(&url).await.unwrap().expect("a SQLite checkpointer").run().await.unwrap();
        assert!(size() > 4 << 20, "the checkpoint copied the log in: {} bytes", size());
    }

    /// Under steady load some reader always uses the log, so passive checkpoints alone never let
    /// it start over and it grows with every commit; the checkpointer keeps it near
    /// RESTART_LOG_PAGES. Writes, reads and checkpoints run side by side here, as in a server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_steady_reads_and_writes() {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, Ordering::Relaxed},
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steady.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (v TEXT)").await.unwrap();
        let mut checkpointer = Checkpointer::open(&url).await.unwrap().expect("a SQLite checkpointer");
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (db, done) = (db.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Relaxed) {
                        db.execute_unprepared("SELECT v FROM t ORDER BY rowid DESC LIMIT 1").await.unwrap();
                    }
                })
            })
            .collect();
        let checkpoints = tokio::spawn({
            let done = done.clone();
            async move {
                let mut restarts = 0;
                while !done.load(Relaxed) {
                    restarts += usize::from(checkpointer.run().await.unwrap().restarted);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                restarts
            }
        });
        // About 4.5 times RESTART_LOG_PAGES of commits.
        let rows = vec![format!("('{}')", "x".repeat(1000)); 20].join(", ");
        for _ in 0..1_500 {
            db.execute_unprepared(&format!("INSERT INTO t VALUES {rows}")).await.unwrap();
        }
        done.store(true, Relaxed);
        for reader in readers {
            reader.await.unwrap();
        }
        let restarts = checkpoints.await.unwrap();
        let wal = std::fs::metadata(dir.path().join("steady.db-wal")).unwrap().len();
        let bound = 2 * RESTART_LOG_PAGES as u64 * 4096;
        assert!(wal < bound, "the log grew to {wal} bytes ({restarts} restarts), more than {bound}");
        assert!(restarts > 0);
    }
}
