//! Playground additions: `test_prompts.category` (test prompts are filtered by category like
//! system prompts), `model_tests.system_prompt` (a comparison is re-run with the same system
//! prompt) and the built-in system prompts every user sees (`is_system`, owned by nobody).
use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_chat_library"
    }
}

/// (name, category, description, content). Removed again by `down` by name, so keep the names
/// unique among built-in prompts.
const BUILT_IN: &[(&str, &str, &str, &str)] = &[
    (
        "Helpful assistant",
        "general",
        "A neutral default for everyday questions.",
        "You are a helpful, honest assistant. Answer clearly and concisely; say so when you are not sure.",
    ),
    (
        "Code reviewer",
        "coding",
        "Reviews code for bugs, clarity and style.",
        "You are a senior software engineer reviewing code. Point out bugs first, then unclear names and \
         structure, then style. Quote the lines you mean and suggest concrete fixes.",
    ),
    (
        "Translator (Chinese ⇄ English)",
        "translation",
        "Translates between Chinese and English, keeping formatting.",
        "Translate the user's text: Chinese into English, anything else into Simplified Chinese. Keep Markdown, \
         code and names unchanged. Output only the translation.",
    ),
    (
        "Step-by-step reasoner",
        "reasoning",
        "Asks the model to reason before answering.",
        "Think through the problem step by step before answering. Show the key steps, then give the final \
         answer on its own line.",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(Alias::new("test_prompts")).add_column(string_len_null(Alias::new("category"), 50)).to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter().table(Alias::new("model_tests")).add_column(text_null(Alias::new("system_prompt"))).to_owned(),
        )
        .await?;
        let mut insert = Query::insert();
        insert.into_table(Alias::new("system_prompts")).columns([
            Alias::new("name"),
            Alias::new("content"),
            Alias::new("description"),
            Alias::new("format_type"),
            Alias::new("category"),
            Alias::new("is_default"),
            Alias::new("is_system"),
            Alias::new("created_at"),
        ]);
        let now = chrono::Utc::now();
        for (i, (name, category, description, content)) in BUILT_IN.iter().enumerate() {
            insert.values_panic([
                (*name).into(),
                (*content).into(),
                (*description).into(),
                "openai".into(),
                (*category).into(),
                (i == 0).into(),
                true.into(),
                now.into(),
            ]);
        }
        m.exec_stmt(insert).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.exec_stmt(
            Query::delete()
                .from_table(Alias::new("system_prompts"))
                .and_where(Expr::col(Alias::new("is_system")).eq(true))
                .and_where(Expr::col(Alias::new("created_by")).is_null())
                .and_where(Expr::col(Alias::new("name")).is_in(BUILT_IN.iter().map(|p| p.0)))
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table(Alias::new("model_tests")).drop_column(Alias::new("system_prompt")).to_owned())
            .await?;
        m.alter_table(Table::alter().table(Alias::new("test_prompts")).drop_column(Alias::new("category")).to_owned())
            .await
    }
}
