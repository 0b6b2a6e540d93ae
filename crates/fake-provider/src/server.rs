use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::FakeProviderError;
use crate::scenario::{Reply, Scenario};
use crate::wire::{Encoder, Wire, complete_body, error_body};

/// A model in the fake's model lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeModel {
    pub id: String,
    pub size: i64,
    pub vision: bool,
}

impl FakeModel {
    pub fn new(id: &str, size: i64, vision: bool) -> Self {
        FakeModel {
            id: id.to_owned(),
            size,
            vision,
        }
    }
}

/// One request as the fake received it; header names are lower-case.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as JSON, or `Value::Null` when it was not JSON.
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    scenario: Mutex<Scenario>,
    models: Mutex<Vec<FakeModel>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Off in the standalone binary: nobody reads the log there, and under a benchmark's load it
    /// would only grow.
    recording: AtomicBool,
    /// Streams whose client went away before the stream ended.
    disconnects: watch::Sender<usize>,
    /// Streams sent to their end (including deliberate cuts).
    completed: watch::Sender<usize>,
}

/// A running fake. Dropping it stops accepting connections.
pub struct FakeProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeProvider {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> FakeProvider {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("binding 127.0.0.1:0 cannot fail")
    }

    pub async fn start_on(addr: SocketAddr) -> Result<FakeProvider, FakeProviderError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeProviderError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeProviderError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            scenario: Mutex::new(Scenario::default()),
            models: Mutex::new(vec![
                FakeModel::new("fake-normal", 1_000_000, false),
                FakeModel::new("fake-vision", 2_000_000, true),
            ]),
            requests: Mutex::new(Vec::new()),
            recording: AtomicBool::new(true),
            disconnects: watch::Sender::new(0),
            completed: watch::Sender::new(0),
        });
        let state = shared.clone();
        let app = Router::new().fallback(move |method, uri, headers, body| {
            handle(state.clone(), method, uri, headers, body)
        });
        // Without TCP_NODELAY every frame after the first waits for the client's delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeProvider {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base for Anthropic and Ollama.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the base an OpenAI-compatible client is configured with.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The behaviour for requests whose model name does not pick one, and for model lists.
    pub fn set_scenario(&self, scenario: Scenario) {
        *self.shared.scenario.lock().unwrap() = scenario;
    }

    pub fn set_models(&self, models: Vec<FakeModel>) {
        *self.shared.models.lock().unwrap() = models;
    }

    /// Whether requests are kept for [`FakeProvider::requests`] (on by default).
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    pub fn disconnects(&self) -> usize {
        *self.shared.disconnects.borrow()
    }

    pub fn completed_streams(&self) -> usize {
        *self.shared.completed.borrow()
    }

    /// Resolves once `count` streams have seen their client disconnect mid-stream.
    pub async fn wait_for_disconnects(&self, count: usize) {
        let mut rx = self.shared.disconnects.subscribe();
        let _ = rx.wait_for(|seen| *seen >= count).await;
    }

    /// Resolves once `count` streams have been sent to their end.
    pub async fn wait_for_completed(&self, count: usize) {
        let mut rx = self.shared.completed.subscribe();
        let _ = rx.wait_for(|seen| *seen >= count).await;
    }
}

async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if shared.recording.load(Ordering::Relaxed) {
        shared.requests.lock().unwrap().push(RecordedRequest {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |pq| pq.to_string()),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: json_body.clone(),
        });
    }
    let is_anthropic = headers.contains_key("anthropic-version");
    match (method, uri.path()) {
        (Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            chat(shared, Wire::OpenAi, &json_body)
        }
        (Method::POST, "/v1/messages") => chat(shared, Wire::Anthropic, &json_body),
        (Method::POST, "/api/chat") => chat(shared, Wire::Ollama, &json_body),
        (Method::GET, "/v1/models" | "/models") if is_anthropic => {
            models(shared, Wire::Anthropic).await
        }
        (Method::GET, "/v1/models" | "/models") => models(shared, Wire::OpenAi).await,
        (Method::GET, "/api/tags") => models(shared, Wire::Ollama).await,
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not found"})),
        )
            .into_response(),
    }
}

fn status_response(wire: Wire, code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(error_body(wire, code, message))).into_response();
    if code == 429 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().unwrap());
    }
    response
}

async fn models(shared: Arc<Shared>, wire: Wire) -> Response {
    let scenario = shared.scenario.lock().unwrap().clone();
    match scenario {
        Scenario::Status { code, message } => return status_response(wire, code, &message),
        Scenario::Garbage => return (StatusCode::OK, "{\"data\": [oops").into_response(),
        Scenario::SlowFirstByte { delay, .. } => tokio::time::sleep(delay).await,
        _ => {}
    }
    let models = shared.models.lock().unwrap().clone();
    let body = match wire {
        Wire::OpenAi => json!({
            "object": "list",
            "data": models.iter().map(|m| json!({
                "id": m.id, "object": "model", "created": 1_767_225_600, "owned_by": "fake",
            })).collect::<Vec<_>>(),
        }),
        Wire::Anthropic => json!({
            "data": models.iter().map(|m| json!({
                "type": "model", "id": m.id, "display_name": format!("Fake {}", m.id),
                "created_at": "2026-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": models.first().map(|m| m.id.clone()),
            "last_id": models.last().map(|m| m.id.clone()),
        }),
        Wire::Ollama => json!({
            "models": models.iter().map(|m| json!({
                "name": m.id, "model": m.id, "modified_at": "2026-01-01T00:00:00Z",
                "size": m.size, "digest": "0".repeat(64),
                "details": {
                    "format": "gguf", "family": "llama",
                    "families": if m.vision { json!(["llama", "clip"]) } else { json!(["llama"]) },
                    "parameter_size": "135M", "quantization_level": "Q4_1",
                },
            })).collect::<Vec<_>>(),
        }),
    };
    axum::Json(body).into_response()
}

fn chat(shared: Arc<Shared>, wire: Wire, body: &Value) -> Response {
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let scenario =
        Scenario::from_model(&model).unwrap_or_else(|| shared.scenario.lock().unwrap().clone());
    match &scenario {
        Scenario::Status { code, message } => return status_response(wire, *code, message),
        Scenario::NotAStream => {
            let body = complete_body(wire, &model, &Reply::default().content);
            return axum::Json(body).into_response();
        }
        _ => {}
    }
    let wants_usage =
        wire != Wire::OpenAi || body["stream_options"]["include_usage"] == json!(true);
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    let (drained, drained_rx) = watch::channel(0);
    let frames = Frames {
        tx,
        sent: 0,
        drained: drained_rx,
        encoder: Encoder::new(wire, &model),
        wants_usage,
    };
    tokio::spawn(frames.play(scenario));
    let content_type = match wire {
        Wire::Ollama => "application/x-ndjson",
        _ => "text/event-stream",
    };
    let body = Body::from_stream(TrackedBody {
        rx,
        shared,
        ended: false,
        received: 0,
        drained,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap()
}

type Frame = Result<Bytes, io::Error>;

const FRAME_BUFFER: usize = 64;

/// Writes one scenario's frames; a failed send means the client went away.
struct Frames {
    tx: mpsc::Sender<Frame>,
    sent: usize,
    /// How many frames hyper had taken when it last found the channel empty.
    drained: watch::Receiver<usize>,
    encoder: Encoder,
    wants_usage: bool,
}

struct ClientGone;

impl Frames {
    async fn send(&mut self, frames: Vec<String>) -> Result<(), ClientGone> {
        for frame in frames {
            self.tx
                .send(Ok(Bytes::from(frame)))
                .await
                .map_err(|_| ClientGone)?;
            self.sent += 1;
        }
        Ok(())
    }

    async fn play(mut self, scenario: Scenario) {
        let _ = self.run(scenario).await;
    }

    async fn run(&mut self, scenario: Scenario) -> Result<(), ClientGone> {
        let default = Reply::default();
        match scenario {
            Scenario::Reply(reply) => self.reply(&reply).await,
            Scenario::SlowFirstByte { delay, reply } => {
                tokio::time::sleep(delay).await;
                self.reply(&reply).await
            }
            Scenario::Stall { chunks } => {
                self.text_pieces(&default, chunks).await?;
                self.tx.closed().await;
                Ok(())
            }
            Scenario::Cut { chunks } => {
                self.text_pieces(&default, chunks).await?;
                // Hyper discards unflushed bytes when a body fails. Once it has taken every
                // frame and then found the channel empty, it flushes before polling again.
                let sent = self.sent;
                self.drained
                    .wait_for(|&drained| drained >= sent)
                    .await
                    .map_err(|_| ClientGone)?;
                let cut = io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fake provider cut the stream",
                );
                self.tx.send(Err(cut)).await.map_err(|_| ClientGone)
            }
            Scenario::Garbage => {
                self.text_pieces(&default, 1).await?;
                let garbage = self.encoder.garbage();
                self.send(vec![garbage]).await?;
                // The client must stop at the garbage; if it does not, it hangs here and its
                // own timeout shows the failure.
                self.tx.closed().await;
                Ok(())
            }
            Scenario::Bench { tokens } => {
                let prelude = self.encoder.prelude(tokens as u32);
                self.send(prelude).await?;
                for _ in 0..tokens {
                    let frames = self.encoder.content("tok ");
                    self.send(frames).await?;
                }
                let end = self.encoder.finish(false, self.usage((5, tokens as u32)));
                self.send(end).await
            }
            Scenario::Paced { tokens, interval } => {
                let prelude = self.encoder.prelude(5);
                self.send(prelude).await?;
                for i in 0..tokens {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    let frames = self.encoder.content("tok ");
                    self.send(frames).await?;
                }
                let end = self.encoder.finish(false, self.usage((5, tokens as u32)));
                self.send(end).await
            }
            Scenario::Endless { interval } => {
                let prelude = self.encoder.prelude(5);
                self.send(prelude).await?;
                loop {
                    let frames = self.encoder.content("tick ");
                    self.send(frames).await?;
                    tokio::time::sleep(interval).await;
                }
            }
            Scenario::Status { .. } | Scenario::NotAStream => Ok(()),
        }
    }

    fn usage(&self, usage: (u32, u32)) -> Option<(u32, u32)> {
        self.wants_usage.then_some(usage)
    }

    async fn reply(&mut self, reply: &Reply) -> Result<(), ClientGone> {
        let prelude = self.encoder.prelude(reply.usage.0);
        self.send(prelude).await?;
        if let Some(reasoning) = &reply.reasoning {
            for piece in pieces(reasoning, reply.chunk_chars) {
                let frames = self.encoder.reasoning(&piece);
                self.send(frames).await?;
            }
        }
        for piece in pieces(&reply.content, reply.chunk_chars) {
            let frames = self.encoder.content(&piece);
            self.send(frames).await?;
        }
        let end = self
            .encoder
            .finish(reply.truncated, self.usage(reply.usage));
        self.send(end).await
    }

    /// The prelude and the first `count` pieces of a reply, for the broken-stream scenarios.
    async fn text_pieces(&mut self, reply: &Reply, count: usize) -> Result<(), ClientGone> {
        let prelude = self.encoder.prelude(reply.usage.0);
        self.send(prelude).await?;
        for piece in pieces(&reply.content, reply.chunk_chars)
            .into_iter()
            .take(count)
        {
            let frames = self.encoder.content(&piece);
            self.send(frames).await?;
        }
        Ok(())
    }
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The response body. Hyper drops it when the client disconnects; dropping it before its end is
/// how the fake learns that a client cancelled.
struct TrackedBody {
    rx: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    ended: bool,
    received: usize,
    drained: watch::Sender<usize>,
}

impl Stream for TrackedBody {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let polled = self.rx.poll_recv(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => self.received += 1,
            Poll::Pending => {
                let received = self.received;
                self.drained.send_if_modified(|drained| {
                    let changed = *drained != received;
                    *drained = received;
                    changed
                });
            }
            _ => {}
        }
        if let Poll::Ready(None | Some(Err(_))) = &polled
            && !self.ended
        {
            self.ended = true;
            self.shared.completed.send_modify(|n| *n += 1);
        }
        polled
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.disconnects.send_modify(|n| *n += 1);
        }
    }
}
