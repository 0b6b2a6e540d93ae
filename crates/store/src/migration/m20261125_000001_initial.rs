//! The 14 tables of the system design plus what authentication and settings need.
//!
//! Deviations from the design's column types, each for a reason:
//! - `provider_models.id` is 320 characters: it holds `provider_id:model_id` (100 + 1 + 200).
//! - byte sizes (`provider_models.size`, `datasets.file_size`) are 64-bit: model files exceed 2 GiB.
//! - `model_providers` gains `kind`, the encrypted key and its masked hint (R-PROV-1, R-PROV-2).
//! - `chat_messages` gains reasoning, model config, finish reason and metrics (R-CHAT-2, R-CHAT-4).
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_initial"
    }
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

fn created(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
    table.col(timestamp_with_time_zone(a("created_at")))
}

fn created_updated(table: &mut TableCreateStatement) -> &mut TableCreateStatement {
    created(table).col(timestamp_with_time_zone_null(a("updated_at")))
}

fn fk(
    from_table: &str,
    column: &str,
    to_table: &str,
    to_column: &str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{from_table}_{column}"))
        .from(a(from_table), a(column))
        .to(a(to_table), a(to_column))
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(table: &str, columns: &[&str]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(format!("idx_{table}_{}", columns.join("_"))).table(a(table));
    for column in columns {
        index.col(a(column));
    }
    index.to_owned()
}

/// Tables in creation order; dropped in reverse.
const TABLES: &[&str] = &[
    "users",
    "refresh_tokens",
    "app_settings",
    "model_providers",
    "provider_models",
    "model_configs",
    "models",
    "model_tests",
    "model_playground_chats",
    "chat_sessions",
    "chat_messages",
    "system_prompts",
    "test_prompts",
    "datasets",
    "training_configs",
    "training_tasks",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, SetNull};

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("users"))
                    .col(pk_auto(a("id")))
                    .col(string_len_uniq(a("email"), 255))
                    .col(string_len_null(a("nickname"), 100))
                    .col(string_len(a("password_hash"), 255))
                    .col(string_len(a("role"), 20).default("user"))
                    .col(boolean(a("is_admin")).default(false))
                    .col(boolean(a("is_active")).default(true)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("refresh_tokens"))
                    .col(pk_auto(a("id")))
                    .col(integer(a("user_id")))
                    .col(string_len(a("family_id"), 36))
                    .col(string_len_uniq(a("token_hash"), 64))
                    .col(timestamp_with_time_zone(a("expires_at")))
                    .col(timestamp_with_time_zone_null(a("revoked_at")))
                    .foreign_key(&mut fk("refresh_tokens", "user_id", "users", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("refresh_tokens", &["user_id"])).await?;
        m.create_index(index("refresh_tokens", &["family_id"])).await?;

        m.create_table(
            Table::create()
                .table(a("app_settings"))
                .col(string_len(a("key"), 100).primary_key())
                .col(text(a("value")))
                .col(timestamp_with_time_zone(a("updated_at")))
                .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("model_providers"))
                    .col(string_len(a("id"), 100).primary_key())
                    .col(string_len(a("name"), 200))
                    .col(string_len(a("kind"), 20).default("openai"))
                    .col(string_len(a("api_url"), 500))
                    .col(text_null(a("api_key_encrypted")))
                    .col(string_len_null(a("api_key_hint"), 20))
                    .col(text_null(a("description")))
                    .col(string_len_null(a("icon_url"), 500))
                    .col(integer(a("status")).default(1)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("provider_models"))
                    .col(string_len(a("id"), 320).primary_key())
                    .col(string_len(a("provider_id"), 100))
                    .col(string_len(a("model_id"), 200))
                    .col(string_len(a("model_name"), 200))
                    .col(big_integer_null(a("size")))
                    .col(text_null(a("description")))
                    .col(boolean(a("is_vision")).default(false))
                    .col(integer(a("status")).default(1))
                    .foreign_key(&mut fk("provider_models", "provider_id", "model_providers", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("provider_models", &["provider_id", "model_id"]).unique().to_owned())
            .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("model_configs"))
                    .col(string_len(a("id"), 100).primary_key())
                    .col(integer(a("user_id")))
                    .col(string_len(a("provider_id"), 100))
                    .col(string_len(a("provider_name"), 200))
                    .col(string_len(a("endpoint"), 500))
                    .col(text_null(a("api_key")))
                    .col(string_len(a("model_id"), 200))
                    .col(string_len(a("model_name"), 200))
                    .col(string_len(a("type"), 50).default("text"))
                    .col(double(a("temperature")).default(0.7))
                    .col(integer(a("max_tokens")).default(8192))
                    .col(double(a("top_p")).default(0.9))
                    .col(double(a("top_k")).default(0.0))
                    .col(integer(a("status")).default(1))
                    .foreign_key(&mut fk("model_configs", "user_id", "users", "id", Cascade))
                    .foreign_key(&mut fk("model_configs", "provider_id", "model_providers", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("model_configs", &["user_id"])).await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("models"))
                    .col(pk_auto(a("id")))
                    .col(string_len_uniq(a("name"), 255))
                    .col(string_len(a("display_name"), 255))
                    .col(string_len(a("model_path"), 500))
                    .col(string_len_null(a("model_type"), 100))
                    .col(string_len(a("status"), 50).default("active"))
                    .col(boolean(a("is_available")).default(true))
                    .col(text_null(a("description")))
                    .col(string_len_null(a("parameters"), 100))
                    .col(integer_null(a("created_by")))
                    .foreign_key(&mut fk("models", "created_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("model_tests"))
                    .col(pk_auto(a("id")))
                    .col(integer(a("user_id")))
                    .col(string_len(a("test_name"), 255))
                    .col(text_null(a("models_tested")))
                    .col(text(a("input_data")))
                    .col(text_null(a("results")))
                    .col(boolean(a("is_streaming")).default(false))
                    .foreign_key(&mut fk("model_tests", "user_id", "users", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("model_tests", &["user_id"])).await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("model_playground_chats"))
                    .col(pk_auto(a("id")))
                    .col(integer_null(a("user_id")))
                    .col(string_len(a("session_id"), 100))
                    .col(string_len_null(a("model_config_id"), 100))
                    .col(string_len(a("role"), 20))
                    .col(text(a("content")))
                    .col(text_null(a("thinking")))
                    .foreign_key(&mut fk("model_playground_chats", "user_id", "users", "id", Cascade))
                    .foreign_key(&mut fk(
                        "model_playground_chats",
                        "model_config_id",
                        "model_configs",
                        "id",
                        SetNull,
                    )),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("model_playground_chats", &["session_id"])).await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("chat_sessions"))
                    .col(pk_auto(a("id")))
                    .col(integer(a("user_id")))
                    .col(string_len(a("title"), 255).default("新对话"))
                    .foreign_key(&mut fk("chat_sessions", "user_id", "users", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("chat_sessions", &["user_id", "updated_at"])).await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("chat_messages"))
                    .col(pk_auto(a("id")))
                    .col(integer(a("session_id")))
                    .col(string_len(a("role"), 50))
                    .col(text(a("content")))
                    .col(text_null(a("thinking")))
                    .col(string_len_null(a("model_name"), 255))
                    .col(string_len_null(a("model_config_id"), 100))
                    .col(boolean(a("is_streaming")).default(false))
                    .col(string_len_null(a("finish_reason"), 20))
                    .col(text_null(a("metrics")))
                    .foreign_key(&mut fk("chat_messages", "session_id", "chat_sessions", "id", Cascade)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("chat_messages", &["session_id"])).await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("system_prompts"))
                    .col(pk_auto(a("id")))
                    .col(string_len(a("name"), 255))
                    .col(text(a("content")))
                    .col(text_null(a("description")))
                    .col(string_len(a("format_type"), 50).default("openai"))
                    .col(string_len(a("category"), 100).default("general"))
                    .col(boolean(a("is_default")).default(false))
                    .col(boolean(a("is_system")).default(false))
                    .col(integer_null(a("created_by")))
                    .foreign_key(&mut fk("system_prompts", "created_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("test_prompts"))
                    .col(pk_auto(a("id")))
                    .col(string_len(a("title"), 255))
                    .col(text(a("content")))
                    .col(integer_null(a("created_by")))
                    .foreign_key(&mut fk("test_prompts", "created_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("test_prompts", &["created_by"])).await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("datasets"))
                    .col(pk_auto(a("id")))
                    .col(string_len(a("name"), 255))
                    .col(text_null(a("description")))
                    .col(string_len(a("file_path"), 500))
                    .col(big_integer_null(a("file_size")))
                    .col(string_len_null(a("format_type"), 50))
                    .col(integer_null(a("uploaded_by")))
                    .foreign_key(&mut fk("datasets", "uploaded_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("datasets", &["uploaded_by"])).await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(a("training_configs"))
                    .col(pk_auto(a("id")))
                    .col(string_len(a("name"), 255))
                    .col(json(a("config_data")))
                    .col(integer_null(a("created_by")))
                    .foreign_key(&mut fk("training_configs", "created_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created(
                Table::create()
                    .table(a("training_tasks"))
                    .col(pk_auto(a("id")))
                    .col(string_len(a("name"), 255))
                    .col(string_len(a("model_name"), 255))
                    .col(integer_null(a("dataset_id")))
                    .col(integer_null(a("config_id")))
                    .col(string_len(a("status"), 50).default("pending"))
                    .col(double(a("progress")).default(0.0))
                    .col(string_len_null(a("log_file"), 500))
                    .col(string_len_null(a("output_dir"), 500))
                    .col(string_len_null(a("swanlab_url"), 500))
                    .col(timestamp_with_time_zone_null(a("started_at")))
                    .col(timestamp_with_time_zone_null(a("completed_at")))
                    .col(integer_null(a("created_by")))
                    .foreign_key(&mut fk("training_tasks", "dataset_id", "datasets", "id", SetNull))
                    .foreign_key(&mut fk("training_tasks", "config_id", "training_configs", "id", SetNull))
                    .foreign_key(&mut fk("training_tasks", "created_by", "users", "id", SetNull)),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(index("training_tasks", &["status"])).await?;
        m.create_index(index("training_tasks", &["created_by"])).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES.iter().rev() {
            m.drop_table(Table::drop().table(a(table)).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
