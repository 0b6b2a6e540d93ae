//! `workbench`: the platform's one binary.
mod engine_cmd;

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use server::{clock::SystemClock, config::Settings};
use store::MigratorTrait;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "workbench", version, about = "LLM Workbench: providers, playground and LoRA training in one binary")]
struct Cli {
    /// Data directory: SQLite file, generated secrets, uploads, models, training outputs.
    #[arg(long, global = true, env = "WORKBENCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML); default ./workbench.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve the API and the web UI.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// User accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Token ids of TEXT with the model's own tokenizer, as `{"ids": [...]}`.
    Tokenize(engine_cmd::TokenizeArgs),
    /// Answer a chat with the local engine (streams the text, or one JSON object with --json).
    Generate(engine_cmd::GenerateArgs),
    /// Train a LoRA adapter (PEFT format); one JSON line per optimizer step, then a summary line.
    Train(engine_cmd::TrainArgs),
    /// Run training workers against the configured database (no HTTP); they share the data
    /// directory with the server. Ctrl-C or SIGTERM stops them.
    Worker {
        /// How many tasks to run at once (default: `training.workers`, at least 1).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// The key that encrypts provider API keys at rest.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Generate a new encryption key file and re-encrypt every stored secret with it, in one
    /// transaction. Stop the server first: a running server keeps the old key in memory.
    Rotate,
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Roll back the last migration (or `--steps N`).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user (the first admin, typically).
    Create(CreateUser),
}

#[derive(Args)]
struct CreateUser {
    #[arg(long)]
    email: String,
    #[arg(long, env = "WORKBENCH_USER_PASSWORD")]
    password: String,
    #[arg(long)]
    nickname: Option<String>,
    #[arg(long)]
    admin: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    configure_cpu_threads();
    if matches!(cli.command, Command::Train(_)) {
        // Before the runtime starts threads (see the function's comment).
        engine::train::configure_malloc_for_training();
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli))
}

/// Runs before any other thread exists (setting the environment is only sound then).
/// candle's element-wise ops wait on a spinning worker pool of their own while its matmuls run on
/// rayon's; on a few shared cores the two pools spin against each other and halve training speed,
/// so element-wise ops stay on the calling thread unless CANDLE_NUM_THREADS says otherwise.
/// Matmuls and the quantized kernels follow RAYON_NUM_THREADS (default: one per core).
fn configure_cpu_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: single-threaded at this point, see above.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The engine commands need neither settings nor logging.
    let command = match cli.command {
        Command::Tokenize(args) => return engine_cmd::tokenize(args),
        Command::Generate(args) => return engine_cmd::generate(args),
        Command::Train(args) => return engine_cmd::train_cancellable(args).await,
        other => other,
    };
    let filter = EnvFilter::try_from_env("WORKBENCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // JSON lines for log shippers; human-readable text otherwise.
    if std::env::var("WORKBENCH_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let mut settings = Settings::load(cli.config.as_deref(), cli.data_dir.as_deref())?;
    match command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                settings.server.bind = bind;
            }
            serve(settings).await
        }
        Command::Migrate { action } => migrate(settings, action).await,
        Command::Worker { workers } => {
            let count = workers.unwrap_or(settings.training.workers).max(1);
            server::training::run_standalone(settings, count, shutdown_signal()).await
        }
        Command::User { action: UserAction::Create(args) } => create_user(settings, args).await,
        Command::Keys { action: KeysAction::Rotate } => {
            let report = server::key_rotation::rotate_key_file(&settings).await?;
            println!(
                "re-encrypted {} secret(s) with the new key ({} already used it)",
                report.rotated, report.already_rotated
            );
            Ok(())
        }
        Command::Tokenize(_) | Command::Generate(_) | Command::Train(_) => unreachable!("handled above"),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind;
    let state = server::build_state(settings, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| format!("binding {bind}"))?;
    tracing::info!("LLM Workbench listening on http://{}", listener.local_addr()?);
    server::serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<()> {
    settings.ensure_data_dir()?;
    let db = store::connect(&settings.database_url()).await?;
    match action {
        MigrateAction::Up => store::Migrator::up(&db, None).await?,
        MigrateAction::Down { steps } => store::Migrator::down(&db, Some(steps)).await?,
        MigrateAction::Status => {
            for migration in store::Migrator::get_migration_with_status(&db).await? {
                println!("{}\t{}", migration.status(), migration.name());
            }
        }
    }
    Ok(())
}

async fn create_user(settings: Settings, args: CreateUser) -> anyhow::Result<()> {
    let state = server::build_state(settings, Arc::new(SystemClock)).await?;
    let role = if args.admin { "admin" } else { "user" };
    let new = server::users::NewUser::parse(&args.email, &args.password, args.nickname.as_deref(), Some(role))
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    let user = server::users::create(&state.db, new, state.clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
    println!("created {} user {} (id {})", user.role, user.email, user.id);
    Ok(())
}

fn describe(err: &server::error::ApiError) -> String {
    match err {
        server::error::ApiError::Validation(fields) => {
            fields.iter().map(|(f, why)| format!("{f}: {why}")).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}
