//! Persistence: SeaORM entities, migrations and the connection, for SQLite, PostgreSQL and MariaDB.
pub mod entities;
pub mod migration;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
pub use sea_orm_migration::MigratorTrait;

pub use migration::Migrator;

/// Opens a pool for `url` (`sqlite://…?mode=rwc`, `postgres://…`, `mysql://…`).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { 8 } else { 16 })
        .connect_timeout(Duration::from_secs(10))
        // sqlx pings every connection it hands out by default: one more round trip per query
        // (a thread hop for SQLite). Only a connection idle this long may have been dropped.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    // Set on every pooled connection (a PRAGMA run through the pool reaches only one of them).
    // WAL lets readers proceed during a write; the busy timeout makes writers wait instead of
    // failing with SQLITE_BUSY under concurrent requests. In WAL mode `synchronous = NORMAL` syncs
    // at checkpoints instead of at every commit: a crash of the process loses nothing committed
    // (only a power cut can lose the last commits), and a streaming chat's several small writes no
    // longer each wait for the disk.
    options.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
    });
    Database::connect(options).await
}

/// True when `err` is a unique-constraint violation (the API answers 409).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}
