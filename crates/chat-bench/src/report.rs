//! The summary against the targets of issue #4, and the table printed at the end of a run.
use serde_json::{Value, json};

fn phase<'a>(phases: &'a Value, target: &str, concurrency: u64) -> Option<&'a Value> {
    phases.as_array()?.iter().find(|p| p["target"] == target && p["concurrency"] == concurrency)
}

/// A paced phase by how its workers started (`spread` or `together`).
fn paced_phase<'a>(phases: &'a Value, target: &str, concurrency: u64, start: &str) -> Option<&'a Value> {
    phases.as_array()?.iter().find(|p| p["target"] == target && p["concurrency"] == concurrency && p["start"] == start)
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

fn target(name: &str, value: Option<f64>, unit: &str, goal: &str, met: Option<bool>) -> Value {
    json!({"name": name, "value": value, "unit": unit, "goal": goal, "met": met})
}

/// Figures and targets from the raw results.
pub fn summarise(raw: &Value) -> Value {
    let phases = &raw["phases"];
    let concurrencies: Vec<u64> = raw["args"]["concurrency"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    // The latency and CPU targets are stated at 64 streams; a smoke run may use fewer.
    let at = if concurrencies.contains(&64) { 64 } else { concurrencies.iter().copied().max().unwrap_or(1) };
    let direct = phase(phases, "direct", at);
    let platform = phase(phases, "platform", at);
    let added_p50 = diff(platform.and_then(|p| num(&p["ttft_p50_ms"])), direct.and_then(|p| num(&p["ttft_p50_ms"])));
    let added_p99 = diff(platform.and_then(|p| num(&p["ttft_p99_ms"])), direct.and_then(|p| num(&p["ttft_p99_ms"])));
    let per_core = platform.and_then(|p| num(&p["chunks_per_cpu_s"]));
    let per_stream = num(&raw["memory"]["per_stream_kib"]);

    let throughput: Vec<Value> = concurrencies
        .iter()
        .map(|&c| {
            let d = phase(phases, "direct", c).and_then(|p| num(&p["requests_per_s"]));
            let p = phase(phases, "platform", c).and_then(|p| num(&p["requests_per_s"]));
            json!({"concurrency": c, "direct_rps": d, "platform_rps": p,
                "ratio_to_direct": match (p, d) { (Some(p), Some(d)) if d > 0.0 => Some(p / d), _ => None }})
        })
        .collect();

    let lite = &raw["litellm"]["phases"];
    let mut litellm = json!(null);
    let paced = &raw["paced"];
    let pc = raw["args"]["paced_concurrency"].as_u64().unwrap_or(64);
    let added = |start: &str, q: &str| {
        let (d, p) = (paced_phase(paced, "direct", pc, start), paced_phase(paced, "platform", pc, start));
        diff(p.and_then(|p| num(&p[q])), d.and_then(|d| num(&d[q])))
    };
    let (paced_p50, paced_p99) = (added("spread", "ttft_p50_ms"), added("spread", "ttft_p99_ms"));
    let (burst_p50, burst_p99) = (added("together", "ttft_p50_ms"), added("together", "ttft_p99_ms"));
    let model = raw["args"]["paced_model"].as_str().unwrap_or("paced");
    let mut targets = vec![
        target(&format!("added TTFT p50, {pc} streams of {model}"), paced_p50, "ms", "< 2", paced_p50.map(|v| v < 2.0)),
        target(&format!("added TTFT p99, {pc} streams of {model}"), paced_p99, "ms", "< 10", paced_p99.map(|v| v < 10.0)),
        // All 64 arriving in one instant is a harsher case than the issue states: reported, and
        // held to the same goals, so that it shows.
        target(&format!("added TTFT p50, burst of {pc} arrivals"), burst_p50, "ms", "< 2", burst_p50.map(|v| v < 2.0)),
        target(&format!("added TTFT p99, burst of {pc} arrivals"), burst_p99, "ms", "< 10", burst_p99.map(|v| v < 10.0)),
        target(&format!("added TTFT p50, saturated c={at}"), added_p50, "ms", "< 2", added_p50.map(|v| v < 2.0)),
        target(&format!("added TTFT p99, saturated c={at}"), added_p99, "ms", "< 10", added_p99.map(|v| v < 10.0)),
        target(&format!("platform chunks per CPU second at c={at}"), per_core, "chunks/s/core", ">= 1000", per_core.map(|v| v >= 1000.0)),
        target("memory per open stream", per_stream, "KiB", "< 64", per_stream.map(|v| v < 64.0)),
    ];
    if lite.as_array().is_some_and(|a| !a.is_empty()) {
        let rows: Vec<Value> = lite
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["target"] == "litellm")
            .map(|l| {
                let c = l["concurrency"].as_u64().unwrap_or(0);
                // The direct run right after LiteLLM's, at the same concurrency.
                let d = lite.as_array().and_then(|a| a.iter().find(|p| p["target"] == "direct" && p["concurrency"] == c));
                let ours = phase(phases, "platform", c).and_then(|p| num(&p["requests_per_s"]));
                let theirs = num(&l["requests_per_s"]);
                json!({
                    "concurrency": c,
                    "litellm_rps": theirs,
                    "litellm_added_ttft_p50_ms": diff(num(&l["ttft_p50_ms"]), d.and_then(|d| num(&d["ttft_p50_ms"]))),
                    "litellm_added_ttft_p99_ms": diff(num(&l["ttft_p99_ms"]), d.and_then(|d| num(&d["ttft_p99_ms"]))),
                    "platform_rps": ours,
                    "platform_over_litellm": match (ours, theirs) { (Some(o), Some(t)) if t > 0.0 => Some(o / t), _ => None },
                })
            })
            .collect();
        if let Some(r) = rows.iter().find(|r| r["concurrency"] == 64) {
            let ratio = num(&r["platform_over_litellm"]);
            targets.push(target("platform req/s over LiteLLM's at c=64", ratio, "x", ">= 100", ratio.map(|v| v >= 100.0)));
        }
        litellm = json!({"rows": rows, "rss_mib": raw["litellm"]["rss_kib"].as_f64().map(|k| k / 1024.0)});
    }
    json!({
        "targets": targets,
        "throughput": throughput,
        "litellm": litellm,
        "platform_rss_mib": raw["platform_rss_kib"].as_f64().map(|k| k / 1024.0),
        "persisted": raw["persisted"],
    })
}

fn cell(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_owned(),
    }
}

pub fn print(results: &Value) {
    let s = &results["summary"];
    println!();
    println!("Streamed chat benchmark (fake provider, {} chunks per answer)", results["raw"]["args"]["bench_model"].as_str().unwrap_or("?"));
    println!();
    println!("{:<44} {:>12} {:>14} {:>8}", "target", "value", "goal", "met");
    for t in s["targets"].as_array().into_iter().flatten() {
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "?",
        };
        println!("{:<44} {:>12} {:>14} {:>8}", t["name"].as_str().unwrap_or(""), cell(&t["value"], 2), format!("{} {}", t["goal"].as_str().unwrap_or(""), t["unit"].as_str().unwrap_or("")), met);
    }
    println!();
    println!("{:<12} {:>14} {:>14} {:>10}", "concurrency", "direct req/s", "platform req/s", "ratio");
    for r in s["throughput"].as_array().into_iter().flatten() {
        println!("{:<12} {:>14} {:>14} {:>10}", r["concurrency"], cell(&r["direct_rps"], 1), cell(&r["platform_rps"], 1), cell(&r["ratio_to_direct"], 3));
    }
    println!();
    println!("(first four rows: {}, starts spread then together)", results["raw"]["args"]["paced_model"].as_str().unwrap_or("paced"));
    println!("{:<8} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}", "target", "c", "req/s", "ttft p50", "ttft p99", "errors", "CPU s", "chunks/CPU-s");
    let raw = &results["raw"];
    let all = [&raw["paced"], &raw["phases"], &raw["litellm"]["phases"]];
    for p in all.into_iter().filter_map(Value::as_array).flatten() {
        println!(
            "{:<8} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            p["target"].as_str().unwrap_or(""),
            p["concurrency"],
            cell(&p["requests_per_s"], 1),
            cell(&p["ttft_p50_ms"], 2),
            cell(&p["ttft_p99_ms"], 2),
            p["errors"],
            cell(&p["cpu_secs"], 2),
            cell(&p["chunks_per_cpu_s"], 0)
        );
    }
    let m = &results["raw"]["memory"];
    println!();
    println!(
        "memory: {} streams open: RSS {} → {} KiB ({} KiB per stream); {} KiB after they closed",
        m["streams"], m["rss_before_kib"], m["rss_open_kib"], cell(&m["per_stream_kib"], 1), m["rss_after_close_kib"]
    );
    println!("platform RSS after the load phases: {} MiB", cell(&s["platform_rss_mib"], 1));
    println!("persisted answers checked: {} ({} wrong)", s["persisted"]["checked"], s["persisted"]["bad"]);
    if !s["litellm"].is_null() {
        println!();
        println!("{:<12} {:>12} {:>16} {:>16} {:>14} {:>10}", "concurrency", "LiteLLM req/s", "+TTFT p50 ms", "+TTFT p99 ms", "platform req/s", "ours/theirs");
        for r in s["litellm"]["rows"].as_array().into_iter().flatten() {
            println!(
                "{:<12} {:>12} {:>16} {:>16} {:>14} {:>10}",
                r["concurrency"],
                cell(&r["litellm_rps"], 1),
                cell(&r["litellm_added_ttft_p50_ms"], 2),
                cell(&r["litellm_added_ttft_p99_ms"], 2),
                cell(&r["platform_rps"], 1),
                cell(&r["platform_over_litellm"], 1)
            );
        }
        println!("LiteLLM RSS (process tree): {} MiB", cell(&s["litellm"]["rss_mib"], 1));
    }
}
