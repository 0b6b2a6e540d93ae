//! A SQLite connection used from the async task that needs it, without a thread hop.
//!
//! sqlx runs every SQLite statement on a worker thread of the connection's own: the task sends
//! the statement over a channel, the thread wakes, runs it, replies, and the task is woken and
//! queued again. A chat answer's handful of small statements cost far more in those hand-offs
//! than in SQLite (measured with 64 arrivals at once, `bench/chat`: the database path was half
//! the platform's added time to first token, and its threads' wake-ups a large share of the
//! kernel's scheduling work). A statement of a few microseconds is cheaper run where it is
//! needed, as any other short piece of a handler's CPU work, so the hot paths run here.
//!
//! One connection, taken in turn: its statements are short, and one writer at a time is all
//! SQLite allows anyway. It never sleeps on a thread of the runtime for long:
//! when another connection (the pool, the checkpointer, another process) holds the write lock,
//! SQLite's busy handler waits up to 150 µs on the thread, then the task waits on a timer and
//! tries again.
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use sea_orm::{DbErr, RuntimeErr};

pub use rusqlite;

/// Busy-handler tries inline before the statement fails as busy and the task waits on a timer:
/// 150 µs, about as long as a short write transaction of the pool holds the lock.
const INLINE_BUSY_RETRIES: i32 = 2;

/// How long an operation waits for a write lock held elsewhere before it fails, as the pool's
/// busy handler (about 5 s).
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// Pages of the connection's own cache (SQLite's default is about 2 MB); kept warm because this
/// connection makes most writes, which leave its cache valid.
const CACHE_PAGES: i64 = 4_000;

pub struct InlineSqlite {
    conn: std::sync::Mutex<Connection>,
}

impl InlineSqlite {
    /// A connection to the database at `url`, set up as the pool's are (WAL, synchronous
    /// NORMAL, foreign keys); `None` for databases other than a SQLite file.
    pub fn open(url: &str) -> Result<Option<Self>, DbErr> {
        use sea_orm::sqlx::sqlite::SqliteConnectOptions;
        use std::str::FromStr;
        if !url.starts_with("sqlite:") {
            return Ok(None);
        }
        // An in-memory database is one per connection: another one would see none of its rows.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Ok(None);
        }
        let options = SqliteConnectOptions::from_str(url).map_err(|e| DbErr::Conn(RuntimeErr::Internal(e.to_string())))?;
        let path = options.get_filename();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(internal)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(internal)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(internal)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(internal)?;
        conn.pragma_update(None, "wal_autocheckpoint", crate::SQLITE_AUTOCHECKPOINT_PAGES).map_err(internal)?;
        conn.pragma_update(None, "cache_size", CACHE_PAGES).map_err(internal)?;
        conn.busy_handler(Some(|tries| crate::retry_until(tries, INLINE_BUSY_RETRIES) != 0)).map_err(internal)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Some(Self { conn: std::sync::Mutex::new(conn) }))
    }

    /// Runs `op` on the connection, inline. `op` must leave no transaction open and be safe to
    /// run again: when the write lock is held elsewhere it fails as busy, having changed nothing
    /// (a transaction is rolled back), and runs again once a timer has passed.
    pub async fn run<R>(&self, mut op: impl FnMut(&mut Connection) -> rusqlite::Result<R>) -> Result<R, DbErr> {
        let started = tokio::time::Instant::now();
        loop {
            match self.try_once(&mut op) {
                None => tokio::task::yield_now().await,
                Some(Err(err)) if is_busy(&err) && started.elapsed() < GIVE_UP_AFTER => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Some(done) => return done.map_err(internal),
            }
        }
    }

    /// `op` under the lock, or `None` while another thread holds it. Whoever runs takes the
    /// lock: it is held for a statement or two and never across an await. An async lock would
    /// hand itself to the next waiting task and stay taken until the runtime got round to
    /// running that task, under load a pass over every other task; a blocking one would stop a
    /// runtime thread whenever the other held it. Measured with `bench/chat`, three alternating
    /// pairs against the async lock: the added first-token p99 at 64 saturating streams went
    /// from +12.5–17.3 ms to +5.8–10.1 ms, the burst's p99 from +6.7–17.4 to +12.3–17.2 ms
    /// (a blocking lock: +9.3–22.2 and +13.9–33.9 ms).
    fn try_once<R>(&self, op: &mut impl FnMut(&mut Connection) -> rusqlite::Result<R>) -> Option<rusqlite::Result<R>> {
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let done = op(&mut conn);
        // A transaction that failed part-way (or whose op panicked before) is left open by
        // SQLite for the caller.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        Some(done)
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// True when `err` is SQLite refusing a row whose foreign key points nowhere.
pub fn is_foreign_key_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

fn internal(err: rusqlite::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(format!("SQLite: {err}")))
}

/// A timestamp as sqlx writes it for SQLite (RFC 3339 with as many fraction digits as needed),
/// so rows written here read back through SeaORM like its own.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// A timestamp written by [`timestamp`] or by sqlx.
pub fn parse_timestamp(text: &str) -> rusqlite::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%F %T%.f").map(|t| t.and_utc()))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database() -> (tempfile::TempDir, String, sea_orm::DatabaseConnection) {
        use sea_orm::ConnectionTrait;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("inline.db").display());
        let db = crate::connect(&url).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (v INTEGER)").await.unwrap();
        (dir, url, db)
    }

    /// A write lock held by the pool makes the inline connection wait, off the thread: other
    /// tasks on a one-thread runtime keep running, and the write lands once the lock is free.
    #[tokio::test(flavor = "current_thread")]
    async fn waits_for_a_write_lock_held_elsewhere_without_blocking_the_runtime() {
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let (_dir, url, db) = database().await;
        let inline = std::sync::Arc::new(InlineSqlite::open(&url).unwrap().expect("a SQLite file"));
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES (1)").await.unwrap();
        let write = tokio::spawn({
            let inline = inline.clone();
            async move { inline.run(|c| c.execute("INSERT INTO t VALUES (2)", [])).await }
        });
        let ticking = std::time::Instant::now();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(ticking.elapsed() < Duration::from_secs(1), "the waiting write held the runtime's one thread");
        assert!(!write.is_finished(), "the inline write waits while the pool's transaction holds the lock");
        txn.commit().await.unwrap();
        assert_eq!(write.await.unwrap().unwrap(), 1);
        let count = inline.run(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(count, 2);
    }

    /// Tasks on both runtime threads take the connection in turn; every write lands once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_tasks_each_get_the_connection() {
        let (_dir, url, _db) = database().await;
        let inline = std::sync::Arc::new(InlineSqlite::open(&url).unwrap().unwrap());
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let inline = inline.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        inline.run(|c| c.execute("INSERT INTO t VALUES (?1)", [i * 10 + j])).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let (rows, distinct) = inline
            .run(|c| c.query_row("SELECT count(*), count(DISTINCT v) FROM t", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))))
            .await
            .unwrap();
        assert_eq!((rows, distinct), (640, 640));
    }

    #[tokio::test]
    async fn only_sqlite_files_get_an_inline_connection() {
        assert!(InlineSqlite::open("postgres://127.0.0.1/test").unwrap().is_none());
        assert!(InlineSqlite::open("sqlite::memory:").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_transaction_leaves_nothing_open() {
        let (_dir, url, _db) = database().await;
        let inline = InlineSqlite::open(&url).unwrap().unwrap();
        let failed = inline
            .run(|c| {
                let tx = c.transaction()?;
                tx.execute("INSERT INTO t VALUES (1)", [])?;
                tx.execute("INSERT INTO nowhere VALUES (1)", [])?;
                tx.commit()
            })
            .await;
        assert!(failed.is_err());
        let count = inline.run(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))).await.unwrap();
        assert_eq!(count, 0, "the transaction's first insert was rolled back");
    }

    /// The text of a timestamp is what sorts and compares in SQL: it must be the same whichever
    /// side wrote it.
    #[tokio::test]
    async fn timestamps_are_written_as_sea_orm_writes_them() {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let (_dir, url, db) = database().await;
        let inline = InlineSqlite::open(&url).unwrap().unwrap();
        for at in ["2026-12-08T01:02:03.456789Z", "2026-12-08T01:02:03Z", "2026-12-08T01:02:03.100Z"] {
            let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc();
            db.execute_unprepared("DELETE FROM t").await.unwrap();
            db.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, "INSERT INTO t VALUES (?)", [at.into()])).await.unwrap();
            let written = inline.run(|c| c.query_row("SELECT v FROM t", [], |r| r.get::<_, String>(0))).await.unwrap();
            assert_eq!(written, timestamp(at));
        }
    }

    #[test]
    fn timestamps_read_back_as_written_by_either_side() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-08T01:02:03.456789Z").unwrap().to_utc();
        assert_eq!(timestamp(at), "2026-12-08T01:02:03.456789+00:00");
        assert_eq!(parse_timestamp(&timestamp(at)).unwrap(), at);
        assert_eq!(parse_timestamp("2026-12-08 01:02:03.456789").unwrap(), at);
    }
}
