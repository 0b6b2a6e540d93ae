//! Prometheus metrics for HTTP traffic, labelled by route template (never the raw path, which
//! would let clients grow the label set without bound).
use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::Mutex,
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::state::AppState;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

#[derive(Default)]
struct Series {
    statuses: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_secs: f64,
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut series = self.series.lock().expect("metrics lock");
        let s = series.entry((method.to_owned(), route.to_owned())).or_default();
        *s.statuses.entry(status).or_default() += 1;
        for (bucket, bound) in s.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        s.count += 1;
        s.sum_secs += secs;
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str("# HELP workbench_http_requests_total HTTP requests by route template and status.\n");
        out.push_str("# TYPE workbench_http_requests_total counter\n");
        for ((method, route), s) in series.iter() {
            for (status, n) in &s.statuses {
                let _ = writeln!(out, "workbench_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        out.push_str("# HELP workbench_http_request_duration_seconds Time to the response head.\n");
        out.push_str("# TYPE workbench_http_request_duration_seconds histogram\n");
        for ((method, route), s) in series.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(out, "workbench_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "workbench_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "workbench_http_request_duration_seconds_sum{{{labels}}} {}", s.sum_secs);
            let _ = writeln!(out, "workbench_http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
        let _ = writeln!(out, "# TYPE workbench_build_info gauge\nworkbench_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

/// Route layer: runs after routing, so the matched route template is known.
pub async fn track(State(state): State<AppState>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(req).await;
    state.http_metrics.observe(&method, &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

pub async fn endpoint(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.http_metrics.render()).into_response()
}
