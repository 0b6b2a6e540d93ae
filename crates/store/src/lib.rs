//! Persistence: SeaORM entities, migrations and the connection, for SQLite, PostgreSQL and MariaDB.
pub mod entities;
pub mod migration;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
pub use sea_orm_migration::MigratorTrait;

pub use migration::Migrator;

/// Opens a pool for `url` (`sqlite://…?mode=rwc`, `postgres://…`, `mysql://…`).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(if url.starts_with("sqlite:") { 8 } else { 16 })
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets readers proceed during a write; the busy timeout makes writers wait instead of
        // failing with SQLITE_BUSY under concurrent requests.
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
            .await?;
    }
    Ok(db)
}

/// True when `err` is a unique-constraint violation (the API answers 409).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}
