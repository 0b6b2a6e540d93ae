//! The measurements: setup through the platform's API, closed-loop load phases, open streams for
//! memory, a check that answers were persisted, and process CPU time and RSS from /proc.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Args,
    stream::{Reader, Wire, read_all},
};

/// Upper bound on requests in one phase, whatever its duration.
const MAX_REQUESTS_PER_PHASE: usize = 1_000_000;
/// A phase stops starting requests at its deadline; these are the ones still allowed to finish.
const DRAIN: Duration = Duration::from_secs(30);
const QUESTION: &str = "Stream the benchmark answer.";

/// Where a streamed request goes.
#[derive(Clone)]
pub enum Target {
    /// An OpenAI-compatible `/v1/chat/completions` (the fake itself, or LiteLLM with a key).
    OpenAi { base: String, model: String, key: Option<String>, chunks: usize },
    /// The platform: a new session, then a message streamed into it.
    Platform { base: String, token: String, config_id: String, chunks: usize },
}

impl Target {
    /// Content chunks a complete answer has.
    fn chunks(&self) -> usize {
        match self {
            Target::OpenAi { chunks, .. } | Target::Platform { chunks, .. } => *chunks,
        }
    }
}

/// `bench-<n>` streams n chunks.
pub fn chunks_of_model(model: &str) -> usize {
    model.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

/// One finished request.
pub struct Sample {
    pub sent: Instant,
    pub ttft: Duration,
    pub chunks: usize,
    pub session: Option<i64>,
}

pub struct Setup {
    pub token: String,
    pub bench_config: String,
    pub open_config: String,
    pub paced_config: String,
}

async fn api(client: &reqwest::Client, method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> Result<Value> {
    let mut req = client.request(method.clone(), &url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.with_context(|| format!("{method} {url}"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("{method} {url}: HTTP {status}: {text}");
    }
    Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
}

/// Logs in, lets the platform reach the fake on 127.0.0.1, registers it as an OpenAI-compatible
/// provider, syncs its models and creates a model config for the bench and the open model.
pub async fn setup_platform(client: &reqwest::Client, args: &Args) -> Result<Setup> {
    use reqwest::Method;
    let base = &args.platform;
    let login = api(client, Method::POST, format!("{base}/api/auth/login"), None, Some(json!({"email": args.email, "password": args.password}))).await?;
    let token = login["access_token"].as_str().ok_or_else(|| anyhow!("no access_token in {login}"))?.to_owned();
    let t = Some(token.as_str());
    api(client, Method::PATCH, format!("{base}/api/admin/settings"), t, Some(json!({"allow_private_provider_urls": true}))).await?;
    let provider = json!({"id": "bench-fake", "name": "Bench fake", "kind": "openai", "api_url": format!("{}/v1", args.fake), "api_key": "sk-bench-not-a-secret"});
    api(client, Method::POST, format!("{base}/api/providers"), t, Some(provider)).await?;
    api(client, Method::POST, format!("{base}/api/providers/bench-fake/sync"), t, None).await?;
    let mut configs = Vec::new();
    for model in [&args.bench_model, &args.open_model, &args.paced_model] {
        let config = api(client, Method::POST, format!("{base}/api/model-configs"), t, Some(json!({"provider_id": "bench-fake", "model_id": model}))).await?;
        configs.push(config["id"].as_str().ok_or_else(|| anyhow!("no id in {config}"))?.to_owned());
    }
    Ok(Setup {
        token,
        paced_config: configs.pop().expect("three configs"),
        open_config: configs.pop().expect("three configs"),
        bench_config: configs.pop().expect("three configs"),
    })
}

/// Sends one request and returns the open response with the instant it was sent.
async fn new_session(client: &reqwest::Client, target: &Target) -> Result<Option<i64>> {
    let Target::Platform { base, token, .. } = target else { return Ok(None) };
    let session = api(client, reqwest::Method::POST, format!("{base}/api/chat/sessions"), Some(token), Some(json!({}))).await?;
    Ok(Some(session["id"].as_i64().ok_or_else(|| anyhow!("no session id in {session}"))?))
}

async fn open(client: &reqwest::Client, target: &Target) -> Result<(reqwest::Response, Instant, Wire, Option<i64>)> {
    let session = new_session(client, target).await?;
    open_in(client, target, session).await
}

/// Sends the request; on the platform into `session`, created beforehand.
async fn open_in(client: &reqwest::Client, target: &Target, session: Option<i64>) -> Result<(reqwest::Response, Instant, Wire, Option<i64>)> {
    match target {
        Target::OpenAi { base, model, key, .. } => {
            let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": QUESTION}]});
            let mut req = client.post(format!("{base}/v1/chat/completions")).json(&body);
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let sent = Instant::now();
            Ok((req.send().await?, sent, Wire::OpenAi, None))
        }
        Target::Platform { base, token, config_id, .. } => {
            let id = session.ok_or_else(|| anyhow!("no session to stream into"))?;
            let body = json!({"content": QUESTION, "model_config_id": config_id});
            let req = client.post(format!("{base}/api/chat/sessions/{id}/messages")).bearer_auth(token).json(&body);
            let sent = Instant::now();
            Ok((req.send().await?, sent, Wire::Platform, Some(id)))
        }
    }
}

pub async fn one(client: &reqwest::Client, target: &Target) -> Result<Sample> {
    let (response, sent, wire, session) = open(client, target).await?;
    let streamed = read_all(response, wire, sent, target.chunks()).await?;
    Ok(Sample { sent, ttft: streamed.ttft, chunks: streamed.chunks, session })
}

pub async fn warm_up(client: &reqwest::Client, target: &Target, count: usize) -> Result<()> {
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move { one(&client, &target).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// How the workers of a phase start.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// All at once: every worker's first request in the same instant (a burst of arrivals; with
    /// requests of equal length they keep arriving in waves).
    Together,
    /// Worker `i` of `c` starts `i/c` of this span late, the span being one request's length:
    /// the steady state of `c` open streams whose users arrived independently. Requests sent
    /// before the span is over (fewer than `c` streams open) are not in the TTFT figures.
    Spread(Duration),
}

/// One closed-loop phase: `concurrency` workers send request after request until `duration` is
/// over (or the request cap is reached).
#[derive(Serialize, Debug)]
pub struct LoadPhase {
    pub target: String,
    pub concurrency: usize,
    /// `together` or `spread`: how the workers started (see [`Start`]).
    pub start: &'static str,
    pub completed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub secs: f64,
    pub requests_per_s: f64,
    pub chunks_per_s: f64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    /// CPU seconds the measured process used during the phase (platform phases only).
    pub cpu_secs: Option<f64>,
    /// Streamed chunks per CPU second of the measured process.
    pub chunks_per_cpu_s: Option<f64>,
    /// A few sessions of the phase, to check what was saved.
    #[serde(skip)]
    pub sessions: Vec<i64>,
}

impl LoadPhase {
    pub fn line(&self) -> String {
        format!(
            "{:>8} c={:<4} {:>7} ok {:>4} err {:>9.1} req/s  ttft p50 {:>7.2} ms p99 {:>7.2} ms{}{}",
            self.target,
            self.concurrency,
            self.completed,
            self.errors,
            self.requests_per_s,
            self.ttft_p50_ms.unwrap_or(f64::NAN),
            self.ttft_p99_ms.unwrap_or(f64::NAN),
            self.chunks_per_cpu_s.map(|c| format!("  {c:.0} chunks/CPU-s")).unwrap_or_default(),
            self.first_error.as_ref().map(|e| format!("  first error: {e}")).unwrap_or_default(),
        )
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Default)]
struct Tally {
    completed: usize,
    ttfts_ms: Vec<f64>,
    chunks: usize,
    errors: usize,
    first_error: Option<String>,
    sessions: Vec<i64>,
}

pub async fn load(client: &reqwest::Client, name: &str, target: &Target, concurrency: usize, duration: Duration, pid: Option<u32>, start: Start) -> LoadPhase {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started_count = Arc::new(AtomicUsize::new(0));
    let cpu_before = pid.and_then(cpu_secs);
    let started = Instant::now();
    let (ramp, start_name) = match start {
        Start::Together => (Duration::ZERO, "together"),
        Start::Spread(span) => (span, "spread"),
    };
    let deadline = started + ramp + duration;
    let counted_from = started + ramp;
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, target, tally, started_count) = (client.clone(), target.clone(), tally.clone(), started_count.clone());
            let delay = ramp.mul_f64(i as f64 / concurrency.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut last_session = None;
                while Instant::now() < deadline && started_count.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS_PER_PHASE {
                    let result = tokio::time::timeout(DRAIN, one(&client, &target)).await.unwrap_or_else(|_| Err(anyhow!("timed out")));
                    let mut t = tally.lock().unwrap();
                    match result {
                        Ok(sample) => {
                            if sample.sent >= counted_from {
                                t.ttfts_ms.push(sample.ttft.as_secs_f64() * 1000.0);
                            }
                            t.completed += 1;
                            t.chunks += sample.chunks;
                            last_session = sample.session.or(last_session);
                        }
                        Err(error) => {
                            t.errors += 1;
                            t.first_error.get_or_insert_with(|| format!("{error:#}"));
                        }
                    }
                }
                if let Some(session) = last_session {
                    tally.lock().unwrap().sessions.push(session);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, pid.and_then(cpu_secs)) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let mut tally = std::mem::take(&mut *tally.lock().unwrap());
    tally.ttfts_ms.sort_by(f64::total_cmp);
    let completed = tally.completed;
    LoadPhase {
        target: name.to_owned(),
        concurrency,
        start: start_name,
        completed,
        errors: tally.errors,
        first_error: tally.first_error,
        secs,
        requests_per_s: completed as f64 / secs,
        chunks_per_s: tally.chunks as f64 / secs,
        ttft_p50_ms: percentile(&tally.ttfts_ms, 0.50),
        ttft_p99_ms: percentile(&tally.ttfts_ms, 0.99),
        cpu_secs: cpu,
        chunks_per_cpu_s: cpu.filter(|c| *c > 0.0).map(|c| tally.chunks as f64 / c),
        sessions: tally.sessions,
    }
}

#[derive(Serialize, Debug)]
pub struct Memory {
    pub streams: usize,
    pub opened: usize,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_after_close_kib: u64,
    pub per_stream_kib: f64,
}

/// Opens `count` streams that stay open (the fake sends a token a second), reads each to its
/// first token, and compares the platform's RSS before and with all of them open.
pub async fn memory_per_stream(client: &reqwest::Client, target: &Target, count: usize, pid: u32) -> Result<Memory> {
    // A small round first: what every server grows once (database caches, connection pools,
    // allocator arenas of its threads) is not memory per stream.
    hold_open(client, target, (count / 8).max(1), pid).await?;
    hold_open(client, target, count, pid).await
}

async fn hold_open(client: &reqwest::Client, target: &Target, count: usize, pid: u32) -> Result<Memory> {
    // The sessions exist beforehand: a stored session is not an open stream.
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(new_session(client, target).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid).context("reading the platform's RSS")?;
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<Result<()>>(count.max(1));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    for session in sessions {
        let (client, target, opened_tx, mut close_rx) = (client.clone(), target.clone(), opened_tx.clone(), close_rx.clone());
        tasks.push(tokio::spawn(async move {
            let (mut response, sent, wire, _) = match open_in(&client, &target, session).await {
                Ok(opened) => opened,
                Err(error) => return opened_tx.send(Err(error)).await.unwrap_or(()),
            };
            let mut reader = Reader::new(wire, sent);
            let mut told = false;
            loop {
                tokio::select! {
                    _ = close_rx.changed() => break,
                    chunk = response.chunk() => match chunk {
                        Ok(Some(bytes)) => {
                            reader.feed(&bytes);
                            if reader.first_content.is_some() && !told {
                                told = true;
                                let _ = opened_tx.send(Ok(())).await;
                            }
                        }
                        _ => break,
                    },
                }
            }
            if !told {
                let _ = opened_tx.send(Err(anyhow!("the stream ended before its first token"))).await;
            }
        }));
    }
    drop(opened_tx);
    let mut opened = 0;
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while opened < count {
            match opened_rx.recv().await {
                Some(Ok(())) => opened += 1,
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        Ok(())
    })
    .await;
    let failure = match wait {
        Err(_) => Some(anyhow!("only {opened} of {count} streams opened within 30 s")),
        Ok(Err(error)) => Some(error),
        Ok(Ok(())) => None,
    };
    // Each stream has received a token or two more by now; the RSS is that of steady streaming.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open_rss = rss_kib(pid).context("reading the platform's RSS")?;
    close_tx.send_replace(true);
    drop(close_rx);
    for task in tasks {
        let _ = task.await;
    }
    if let Some(error) = failure {
        return Err(error.context("opening streams for the memory measurement"));
    }
    // The platform saves each stopped answer; give it a moment before the next phase.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_kib(pid).unwrap_or(0);
    Ok(Memory {
        streams: count,
        opened,
        rss_before_kib: before,
        rss_open_kib: open_rss,
        rss_after_close_kib: after,
        per_stream_kib: (open_rss as f64 - before as f64) / count.max(1) as f64,
    })
}

/// Reads back the last answer of some sessions of every platform phase: it must be the whole
/// streamed text, finished with `stop`.
pub async fn check_persisted(client: &reqwest::Client, target: &Target, phases: &[LoadPhase]) -> Result<Value> {
    let Target::Platform { base, token, chunks, .. } = target else { bail!("not the platform") };
    let expected = "tok ".repeat(*chunks);
    let (mut checked, mut bad) = (0, Vec::new());
    for session in phases.iter().filter(|p| p.target == "platform").flat_map(|p| p.sessions.iter().take(32)) {
        let page = api(client, reqwest::Method::GET, format!("{base}/api/chat/sessions/{session}/messages"), Some(token), None).await?;
        let answer = page["items"].as_array().and_then(|items| items.iter().rev().find(|m| m["role"] == "assistant")).cloned().unwrap_or_default();
        checked += 1;
        if answer["content"] != expected.as_str() || answer["finish_reason"] != "stop" || answer["is_streaming"] != false {
            bad.push(json!({"session": session, "finish_reason": answer["finish_reason"], "content_chars": answer["content"].as_str().map(str::len)}));
        }
    }
    Ok(json!({"checked": checked, "bad": bad.len(), "examples": bad.into_iter().take(3).collect::<Vec<_>>()}))
}

/// utime + stime of a process, all threads, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from field 3 here; USER_HZ is 100 on Linux.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// RSS of a process and all its descendants (LiteLLM may run workers as children).
pub fn tree_rss_kib(pid: u32) -> u64 {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
            let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else { continue };
            if let Some(ppid) = rest.split(' ').nth(1).and_then(|p| p.parse().ok()) {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    tree.into_iter().filter_map(rss_kib).sum()
}
