//! The schema on every backend: migrations reversible, constraints and cascades as designed.
mod common;

use common::TestApp;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, PaginatorTrait, Set};
use store::{MigratorTrait, entities::*};

on_all_backends!(migrations_go_down_and_up_again, cascades_and_unique_constraints);

const TABLES: [&str; 14] = [
    "users", "model_providers", "provider_models", "model_configs", "models", "model_tests",
    "model_playground_chats", "chat_sessions", "chat_messages", "system_prompts", "test_prompts",
    "datasets", "training_configs", "training_tasks",
];

async fn table_exists(app: &TestApp, table: &str) -> bool {
    app.state.db.execute_unprepared(&format!("SELECT 1 FROM {table} WHERE 1 = 0")).await.is_ok()
}

async fn migrations_go_down_and_up_again(app: TestApp) {
    let db = &app.state.db;
    for table in TABLES.iter().chain(&["refresh_tokens", "app_settings"]) {
        assert!(table_exists(&app, table).await, "{table} missing");
    }
    let applied = store::Migrator::get_applied_migrations(db).await.unwrap().len();
    assert_eq!(applied, store::Migrator::migrations().len());
    store::Migrator::down(db, None).await.unwrap();
    for table in TABLES {
        assert!(!table_exists(&app, table).await, "{table} survived down");
    }
    assert!(store::Migrator::get_pending_migrations(db).await.unwrap().len() == applied);
    store::Migrator::up(db, None).await.unwrap();
    store::Migrator::up(db, None).await.unwrap(); // idempotent
    assert!(table_exists(&app, "training_tasks").await);
}

async fn cascades_and_unique_constraints(app: TestApp) {
    let db = &app.state.db;
    let now = server::clock::Clock::now(&app.clock);
    let owner = app.seed_user("owner@example.com", "owner-pass-1", false).await;
    let session = chat_sessions::ActiveModel {
        user_id: Set(owner),
        title: Set("first".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    for role in ["user", "assistant"] {
        chat_messages::ActiveModel {
            session_id: Set(session.id),
            role: Set(role.into()),
            content: Set("hi".into()),
            is_streaming: Set(false),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    assert_eq!(chat_messages::Entity::find().count(db).await.unwrap(), 2);
    chat_sessions::Entity::delete_by_id(session.id).exec(db).await.unwrap();
    assert_eq!(chat_messages::Entity::find().count(db).await.unwrap(), 0, "messages cascade with their session");

    // A message must belong to an existing session.
    let orphan = chat_messages::ActiveModel {
        session_id: Set(999_999),
        role: Set("user".into()),
        content: Set("x".into()),
        is_streaming: Set(false),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await;
    assert!(orphan.is_err(), "foreign key enforced");

    // Unique model names in the local registry, and the column defaults from the design.
    db.execute_unprepared(&format!(
        "INSERT INTO models (name, display_name, model_path, created_at) VALUES ('m', 'M', '/x', '{}')",
        now.format("%Y-%m-%d %H:%M:%S")
    ))
    .await
    .unwrap();
    let model = models::Entity::find().one(db).await.unwrap().unwrap();
    assert_eq!((model.status.as_str(), model.is_available), ("active", true));
    let dup = models::ActiveModel {
        name: Set("m".into()),
        display_name: Set("M2".into()),
        model_path: Set("/y".into()),
        status: Set("active".into()),
        is_available: Set(true),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap_err();
    assert!(store::is_unique_violation(&dup), "{dup}");
}
