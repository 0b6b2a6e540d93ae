//! `chat-bench`: the load generator of `bench/chat/run.sh`.
//!
//! Drives streamed chat requests against three targets that all end at the same fake provider:
//! the fake itself (direct), the platform's chat endpoint (a new session per request, the answer
//! streamed and persisted) and optionally LiteLLM's proxy. Every phase is bounded in time and in
//! requests, and only loopback addresses are accepted. Prints a table and writes JSON.
mod measure;
mod report;
mod stream;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;

use measure::{LoadPhase, Start, Target};

#[derive(Parser, Debug, Clone)]
#[command(about = "Streamed-chat benchmark: direct vs platform vs LiteLLM, against the fake provider")]
pub struct Args {
    /// The fake provider's base URL (`http://127.0.0.1:PORT`).
    #[arg(long)]
    fake: String,
    /// The platform's base URL.
    #[arg(long)]
    platform: String,
    /// The platform's process id: its CPU time and RSS are read from /proc.
    #[arg(long)]
    platform_pid: u32,
    /// An admin of the platform (creates the provider and the model configs, then chats).
    #[arg(long)]
    email: String,
    #[arg(long)]
    password: String,
    /// LiteLLM's proxy base URL; left out, LiteLLM is not measured.
    #[arg(long)]
    litellm: Option<String>,
    #[arg(long)]
    litellm_pid: Option<u32>,
    #[arg(long, default_value = "sk-bench")]
    litellm_key: String,
    /// The model name LiteLLM's config maps to the fake's bench model.
    #[arg(long, default_value = "bench")]
    litellm_model: String,
    /// The fake's model that streams the benchmark's answer (`bench-<chunks>`).
    #[arg(long, default_value = "bench-256")]
    bench_model: String,
    /// The fake's model streaming at a model's pace, for the latency phase (`paced-<n>-<ms>`).
    #[arg(long, default_value = "paced-64-20")]
    paced_model: String,
    /// Concurrent paced streams in the latency phase.
    #[arg(long, default_value_t = 64)]
    paced_concurrency: usize,
    /// The fake's model that holds a stream open (a token every second).
    #[arg(long, default_value = "endless-1000")]
    open_model: String,
    /// Seconds per load phase.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds per LiteLLM phase (it is slow; fewer requests fit).
    #[arg(long, default_value_t = 10.0)]
    litellm_secs: f64,
    /// Streams held open to measure memory per stream.
    #[arg(long, default_value_t = 256)]
    open_streams: usize,
    /// Concurrency levels of the throughput phases.
    #[arg(long, value_delimiter = ',', default_value = "1,64,512")]
    concurrency: Vec<usize>,
    /// Concurrency levels for LiteLLM.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    litellm_concurrency: Vec<usize>,
    /// Where the results JSON goes.
    #[arg(long)]
    out: PathBuf,
}

fn loopback_only(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let host = parsed.host_str().unwrap_or_default();
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => bail!("{url}: the benchmark only talks to 127.0.0.1"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for url in [Some(&args.fake), Some(&args.platform), args.litellm.as_ref()].into_iter().flatten() {
        loopback_only(url)?;
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()?;

    let setup = measure::setup_platform(&client, &args).await.context("setting up the platform")?;
    let chunks = measure::chunks_of_model(&args.bench_model);
    let direct = Target::OpenAi { base: args.fake.clone(), model: args.bench_model.clone(), key: None, chunks };
    let platform = Target::Platform { base: args.platform.clone(), token: setup.token.clone(), config_id: setup.bench_config.clone(), chunks };
    let litellm = args.litellm.as_ref().map(|base| Target::OpenAi {
        base: base.clone(),
        model: args.litellm_model.clone(),
        key: Some(args.litellm_key.clone()),
        chunks,
    });

    // Warm-up: connection pools, the DB's caches and the allocator see traffic before anything
    // is measured; the memory phase comes first, before load has grown the heap.
    measure::warm_up(&client, &direct, 16).await?;
    measure::warm_up(&client, &platform, 16).await?;
    // Latency with 64 streams in flight at a model's pace (50 tokens/s each): the time a gateway
    // adds before the first token when it is busy but not saturated. Measured twice: with the
    // streams' starts spread over one answer's length (the steady state of 64 users streaming,
    // the target's figure) and with all 64 arriving in the same instant (a burst).
    let mut paced_spec = args.paced_model.split('-').skip(1).map(|n| n.parse::<u64>().ok());
    let paced_chunks = paced_spec.next().flatten().unwrap_or(64) as usize;
    let paced_ms = paced_spec.next().flatten().unwrap_or(20);
    let answer_length = Duration::from_millis(paced_ms * paced_chunks as u64);
    let paced_direct = Target::OpenAi { base: args.fake.clone(), model: args.paced_model.clone(), key: None, chunks: paced_chunks };
    let paced_platform =
        Target::Platform { base: args.platform.clone(), token: setup.token.clone(), config_id: setup.paced_config.clone(), chunks: paced_chunks };
    let mut paced = Vec::new();
    for start in [Start::Spread(answer_length), Start::Together] {
        for (name, target, pid) in [("direct", &paced_direct, None), ("platform", &paced_platform, Some(args.platform_pid))] {
            let phase = measure::load(&client, name, target, args.paced_concurrency, Duration::from_secs_f64(args.secs), pid, start).await;
            eprintln!("paced {} {}", phase.start, phase.line());
            paced.push(phase);
        }
    }

    let open = Target::Platform { base: args.platform.clone(), token: setup.token.clone(), config_id: setup.open_config.clone(), chunks: 0 };
    let memory = measure::memory_per_stream(&client, &open, args.open_streams, args.platform_pid).await?;
    eprintln!("memory: {memory:?}");

    let secs = Duration::from_secs_f64(args.secs);
    let mut phases: Vec<LoadPhase> = Vec::new();
    for &c in &args.concurrency {
        for (name, target, pid) in [("direct", &direct, None), ("platform", &platform, Some(args.platform_pid))] {
            let phase = measure::load(&client, name, target, c, secs, pid, Start::Together).await;
            eprintln!("{}", phase.line());
            phases.push(phase);
        }
    }
    let persisted = measure::check_persisted(&client, &platform, &phases).await?;
    let platform_rss_kib = measure::rss_kib(args.platform_pid);

    let mut litellm_phases = Vec::new();
    let mut litellm_rss_kib = None;
    if let Some(target) = &litellm {
        measure::warm_up(&client, target, 4).await.context("LiteLLM warm-up")?;
        for &c in &args.litellm_concurrency {
            let phase = measure::load(&client, "litellm", target, c, Duration::from_secs_f64(args.litellm_secs), None, Start::Together).await;
            eprintln!("{}", phase.line());
            litellm_phases.push(phase);
            // Direct again at the same concurrency, right after, for its added latency.
            let phase = measure::load(&client, "direct", &direct, c, secs, None, Start::Together).await;
            eprintln!("{}", phase.line());
            litellm_phases.push(phase);
        }
        litellm_rss_kib = args.litellm_pid.map(measure::tree_rss_kib);
    }

    let results = json!({
        "args": {
            "bench_model": args.bench_model, "open_model": args.open_model, "paced_model": args.paced_model,
            "paced_concurrency": args.paced_concurrency, "secs": args.secs,
            "litellm_secs": args.litellm_secs, "open_streams": args.open_streams,
            "concurrency": args.concurrency, "litellm_concurrency": args.litellm_concurrency,
        },
        "memory": memory,
        "paced": paced,
        "phases": phases,
        "persisted": persisted,
        "platform_rss_kib": platform_rss_kib,
        "litellm": {"phases": litellm_phases, "rss_kib": litellm_rss_kib},
    });
    let summary = report::summarise(&results);
    let results = json!({"summary": summary, "raw": results});
    report::print(&results);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results: {}", args.out.display());
    let failed = summary["targets"].as_array().into_iter().flatten().filter(|t| t["met"] == false).count();
    if persisted["checked"].as_u64() == Some(0) || persisted["bad"].as_u64() != Some(0) {
        bail!("answers were not persisted as streamed: {persisted}");
    }
    if failed > 0 {
        eprintln!("{failed} target(s) missed");
    }
    Ok(())
}
