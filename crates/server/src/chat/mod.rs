//! Streaming one answer into a chat session (R-CHAT-2..4).
//!
//! The upstream stream is owned by a spawned task, never by the HTTP response: the task forwards
//! events into a bounded channel that feeds the response body, and watches for a stop (the stop
//! endpoint) and for the body going away (a dropped client). Either way it drops the upstream
//! stream at once (which aborts the provider request) and still saves what was streamed so far.
//!
//! The answer is also saved while it streams: at most every [`CHECKPOINT_EVERY`], never per
//! chunk, by a write that runs beside the stream (a slow database never holds a token back). A
//! crash loses at most that window; the row it leaves has `is_streaming` true and no finish reason
//! until the next start settles it as `interrupted`.
pub mod comparison;
pub mod metrics;
mod registry;
mod rows;

use std::{
    convert::Infallible,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt;
use llm::{ChatMessage, ChatProvider, ChatRequest, LlmError, Role, StreamEvent};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use metrics::{Meter, Metrics};
pub use registry::{ActiveAnswers, Claim};
pub use rows::{ChatRows, FinalAnswer, Turn};

use crate::{
    error::{ApiError, ApiResult},
    providers, routes::model_configs,
    state::AppState,
};
use store::entities::{chat_messages, model_configs as configs, system_prompts, users};

pub const ROLE_USER: &str = "user";
pub const ROLE_ASSISTANT: &str = "assistant";

/// Events waiting for a slow client; beyond this the task waits (and can still be stopped).
const CHANNEL_EVENTS: usize = 64;

/// How often a streaming answer's text is written to its row.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The finish reason of an answer that was streaming when the server stopped.
pub const INTERRUPTED: &str = "interrupted";

/// The owners of sessions this process created or read lately, so that sending a message does
/// not read the session's row before its first token. A session never changes owner and is
/// deleted through this process ([`SessionOwners::forget`]) or through another instance; the
/// question's insert then fails on its foreign key, and the send answers 404 as for any
/// unknown session. This relies on session ids never being reused (SQLite's `AUTOINCREMENT`,
/// PostgreSQL's sequence, MariaDB's persistent `AUTO_INCREMENT`), so a stale entry cannot
/// point at another user's new session.
pub type SessionOwners = crate::recent::Recent<i32, i32>;

pub fn session_owners() -> SessionOwners {
    // Long-lived: the copy can only be wrong about a session that is gone (see above).
    SessionOwners::new(Duration::from_secs(3600), 65_536)
}

/// Checkpoint writes of one streaming answer (or comparison). At most one is in flight; the final
/// save waits for it, so a checkpoint can never land after the final row.
pub struct Checkpoints {
    due: tokio::time::Instant,
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl Checkpoints {
    pub fn new() -> Self {
        Self { due: tokio::time::Instant::now() + CHECKPOINT_EVERY, writing: None }
    }

    pub fn due(&self) -> tokio::time::Instant {
        self.due
    }

    /// Runs `write` beside the stream unless the previous one is still running (the database is
    /// slower than the interval: skip a beat rather than queue writes), and schedules the next.
    /// False when it skipped.
    pub fn start(&mut self, write: impl Future<Output = ()> + Send + 'static) -> bool {
        self.due = tokio::time::Instant::now() + CHECKPOINT_EVERY;
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return false;
        }
        self.writing = Some(tokio::spawn(write));
        true
    }

    /// Waits for the write in flight, if any.
    pub async fn settle(&mut self) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
    }
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes an answer's text so far, beside its stream.
async fn checkpoint(rows: ChatRows, id: i32, content: String, reasoning: String) {
    if let Err(err) = rows.checkpoint(id, content, reasoning).await {
        tracing::warn!(error = %err, message_id = id, "checkpointing a streaming answer failed");
    }
}

/// One `text/event-stream` frame. Every payload is one line of JSON, so one `data:` line. Built
/// in one buffer: this runs for every streamed chunk.
pub fn frame(event: &str, data: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(32 + event.len());
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    serde_json::to_writer(&mut buf, data).expect("event data serialises");
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// The data of a `content` or `reasoning` event; `model_config_id` only in comparisons.
#[derive(Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_config_id: Option<&'a str>,
    pub delta: &'a str,
}

/// Batches of a response written without waiting for more frames ([`take_waiting`]).
const EAGER_BATCHES: u32 = 2;

/// At most this many bytes of waiting frames go out in one write.
const COALESCE_BYTES: usize = 16 * 1024;

/// An SSE response whose body is fed from `rx`; dropping the body drops `rx`, which the sender
/// sees as `closed()`. Frames are written in batches gathered by [`gather`]: under load that is
/// one write per batch instead of one per token.
pub fn sse_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold((rx, 0), |(mut rx, written)| async move {
        let first = rx.recv().await?;
        let batch = if written < EAGER_BATCHES { take_waiting(first, &mut rx) } else { gather(first, &mut rx).await };
        Some((Ok::<_, Infallible>(batch), (rx, written + 1)))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `first` and the frames that follow it while the runtime has other work to do. An upstream
/// read often holds dozens of chunks, but the provider's connection hands them to the answer
/// task one at a time, so they are rarely all waiting at once: taking only those already queued
/// wrote one frame per write (measured: one `writev` per streamed chunk, over a third of the
/// platform's CPU at 64 streams). Yielding lets the producers run first; the batch is written
/// as soon as a yield brings nothing new, so a lone token (a model streaming at its own pace)
/// waits one pass of the scheduler, not a timer.
async fn gather(first: Bytes, rx: &mut mpsc::Receiver<Bytes>) -> Bytes {
    let mut batch = bytes::BytesMut::new();
    while batch.len() < COALESCE_BYTES {
        tokio::task::yield_now().await;
        let Ok(next) = rx.try_recv() else { break };
        if batch.is_empty() {
            batch.reserve(COALESCE_BYTES);
            batch.extend_from_slice(&first);
        }
        batch.extend_from_slice(&next);
        append_waiting(&mut batch, rx);
    }
    if batch.is_empty() { first } else { batch.freeze() }
}

/// `first` and the frames already waiting behind it, without yielding: the first batches of a
/// response (its `meta` and usually its first token) are what the client is waiting for, and
/// under load one turn of the scheduler is a pass over every other stream's work. Measured with
/// `bench/chat` (together with [`AppState`]'s single reference count), three alternating pairs
/// of runs: the added first-token time at 64 saturating streams went from p50 +3.8–4.8 and p99
/// +14.7–22.1 ms to p50 +1.5–3.3 and p99 +11.6–15.8 ms.
fn take_waiting(first: Bytes, rx: &mut mpsc::Receiver<Bytes>) -> Bytes {
    let Ok(next) = rx.try_recv() else { return first };
    let mut batch = bytes::BytesMut::with_capacity(COALESCE_BYTES);
    batch.extend_from_slice(&first);
    batch.extend_from_slice(&next);
    append_waiting(&mut batch, rx);
    batch.freeze()
}

/// Appends the frames already waiting in `rx` until the batch holds [`COALESCE_BYTES`].
fn append_waiting(batch: &mut bytes::BytesMut, rx: &mut mpsc::Receiver<Bytes>) {
    while batch.len() < COALESCE_BYTES {
        match rx.try_recv() {
            Ok(next) => batch.extend_from_slice(&next),
            Err(_) => break,
        }
    }
}

/// The `{code, message}` of an `error` event.
pub fn error_data(error: &LlmError) -> Value {
    let code = match error {
        LlmError::UrlRefused(_) => "provider_url_refused",
        LlmError::Connect(_) => "provider_unreachable",
        LlmError::Timeout(_) => "provider_timeout",
        LlmError::Upstream { .. } => "provider_http_error",
        LlmError::Provider(_) => "provider_error",
        LlmError::Protocol(_) => "provider_protocol_error",
        LlmError::Interrupted(_) => "provider_interrupted",
        LlmError::InvalidRequest(_) => "invalid_request",
    };
    json!({"code": code, "message": error.to_string()})
}

/// A model config the caller may chat with now, and a client for its provider.
pub struct ResolvedModel {
    pub config: configs::Model,
    pub provider: Arc<dyn ChatProvider>,
}

/// The caller's own, usable config; anything else is a 422 on `field`.
pub async fn resolve_model(state: &AppState, user: &users::Model, field: &str, id: &str) -> ApiResult<ResolvedModel> {
    let key = (user.id, id.to_owned());
    let found = match state.configs_in_use.get(&key) {
        Some(found) => found,
        None => {
            let found = model_configs::find_own_in_use(state, user.id, id)
                .await?
                .ok_or_else(|| ApiError::field(field, "no such model config"))?;
            state.configs_in_use.put(key, found.clone());
            found
        }
    };
    if !found.usable {
        return Err(ApiError::field(
            field,
            "this model config cannot be used now: it, its provider or its model is disabled or no longer offered",
        ));
    }
    let provider = found.provider.ok_or_else(|| ApiError::field(field, "the provider of this model config is gone"))?;
    let provider = providers::client(state, &provider, Some(user)).await?;
    Ok(ResolvedModel { config: found.config, provider })
}

/// The system prompt for a turn: typed text wins over a saved prompt, which must be the caller's
/// own or a built-in one (422 on `system_prompt_id` otherwise).
pub async fn resolve_system_prompt(
    state: &AppState,
    user_id: i32,
    id: Option<i32>,
    text: Option<&str>,
) -> ApiResult<Option<String>> {
    if let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(Some(text.to_owned()));
    }
    let Some(id) = id else { return Ok(None) };
    let prompt = system_prompts::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|p| p.is_system || p.created_by == Some(user_id))
        .ok_or_else(|| ApiError::field("system_prompt_id", "no such system prompt"))?;
    Ok(Some(prompt.content))
}

/// The session's messages, oldest first.
pub async fn messages(db: &impl ConnectionTrait, session_id: i32) -> Result<Vec<chat_messages::Model>, sea_orm::DbErr> {
    chat_messages::Entity::find()
        .filter(chat_messages::Column::SessionId.eq(session_id))
        .order_by_asc(chat_messages::Column::Id)
        .all(db)
        .await
}

/// What goes upstream: the system prompt, then every user message and every answer that has
/// text (an answer that failed before its first word is left out).
pub fn conversation(system: Option<&str>, history: &[chat_messages::Model]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(history.len() + 1);
    if let Some(system) = system {
        out.push(ChatMessage::new(Role::System, system));
    }
    for m in history {
        match m.role.as_str() {
            ROLE_USER => out.push(ChatMessage::new(Role::User, m.content.clone())),
            ROLE_ASSISTANT if !m.content.is_empty() => out.push(ChatMessage::new(Role::Assistant, m.content.clone())),
            _ => {}
        }
    }
    out
}

pub fn chat_request(config: &configs::Model, messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: config.model_id.clone(),
        messages,
        temperature: Some(config.temperature as f32),
        top_p: Some(config.top_p as f32),
        top_k: Some(config.top_k as u32),
        max_tokens: u32::try_from(config.max_tokens).ok(),
        stop: Vec::new(),
    }
}

/// Marks answers and comparisons that were streaming when the server last stopped as
/// `interrupted`, keeping the text their last checkpoint saved: their tasks are gone, and the
/// rows would otherwise show "streaming" forever. Called at start-up.
pub async fn settle_interrupted(db: &impl ConnectionTrait) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sea_query::Expr;
    let answers = chat_messages::Entity::update_many()
        .col_expr(chat_messages::Column::IsStreaming, Expr::value(false))
        .col_expr(chat_messages::Column::FinishReason, Expr::value(INTERRUPTED))
        .filter(chat_messages::Column::IsStreaming.eq(true))
        .exec(db)
        .await?;
    let tests = comparison::settle_interrupted(db).await?;
    if answers.rows_affected + tests > 0 {
        tracing::warn!(answers = answers.rows_affected, comparisons = tests, "settled answers interrupted by a restart");
    }
    Ok(())
}

/// One answer about to be streamed. Its row is created by the answer's task, while the request
/// is already on its way upstream.
pub struct Answer {
    pub session_id: i32,
    pub user_message_id: i32,
    pub model: ResolvedModel,
    pub request: ChatRequest,
    pub claim: Claim,
    /// The answer's row when it was inserted with the question; otherwise the answer's task
    /// inserts it.
    pub row: Option<chat_messages::Model>,
    /// A title for the session made from the question, saved with the answer where the session
    /// still has the default title (its first answer names it).
    pub title: Option<String>,
}

impl Answer {
    /// The answer to the last message of `history` (the question, already saved), with the
    /// system prompt in front.
    pub fn to(history: &[chat_messages::Model], system: Option<&str>, model: ResolvedModel, claim: Claim) -> Self {
        let question = history.last().expect("a history ending in the question");
        let request = chat_request(&model.config, conversation(system, history));
        Self { session_id: question.session_id, user_message_id: question.id, model, request, claim, row: None, title: None }
    }
}

/// The answer's row: `row` when it exists already, otherwise inserted while the request is
/// already on its way `upstream`, so the first token does not wait for it. An event that
/// arrives before the row exists is kept in `early`.
async fn answer_row(
    state: &AppState,
    session_id: i32,
    config: &configs::Model,
    row: Option<chat_messages::Model>,
    upstream: &mut (impl futures::Stream<Item = StreamEvent> + Unpin),
    early: &mut Option<(Instant, Option<StreamEvent>)>,
) -> Result<chat_messages::Model, sea_orm::DbErr> {
    if let Some(row) = row {
        return Ok(row);
    }
    // Boxed: a database future is large, and the stream's task would otherwise keep room for it
    // for as long as the answer streams.
    let mut inserting = Box::pin(state.chat_rows.insert_answer(session_id, config, state.clock.now()));
    loop {
        tokio::select! {
            biased;
            inserted = &mut inserting => return inserted,
            event = upstream.next(), if early.is_none() => *early = Some((Instant::now(), event)),
        }
    }
}

/// How an answer ended.
enum Ending {
    Finished(String),
    Failed(LlmError),
    /// By the stop endpoint (`client_gone` false) or because the client went away.
    Stopped { client_gone: bool },
}

/// Starts the answer task and returns the SSE response that follows it.
pub fn stream(state: AppState, answer: Answer) -> Response {
    let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
    tokio::spawn(run(state, answer, tx));
    sse_response(rx)
}

async fn run(state: AppState, answer: Answer, tx: mpsc::Sender<Bytes>) {
    let Answer { session_id, user_message_id, model, request, mut claim, row, title } = answer;
    let started = Instant::now();
    let mut meter = Meter::start(started);
    let (mut content, mut reasoning) = (String::new(), String::new());

    let mut upstream = model.provider.stream_chat(request);
    let mut early = None;
    let assistant = answer_row(&state, session_id, &model.config, row, &mut upstream, &mut early).await;
    let assistant = match assistant {
        Ok(assistant) => assistant,
        Err(err) => {
            drop(upstream);
            drop(claim);
            tracing::error!(error = %err, session_id, "creating an answer's row failed");
            let error = json!({"code": "save_failed", "message": "the answer could not be saved"});
            let _ = tx.send(frame("error", &error)).await;
            let _ = tx.send(frame("done", &json!({"finish_reason": "error", "metrics": meter.finish(Instant::now())}))).await;
            return;
        }
    };
    let meta = json!({"session_id": session_id, "user_message_id": user_message_id,
        "assistant_message_id": assistant.id, "model": model.config.model_name, "model_config_id": model.config.id});
    let mut pending = Some(frame("meta", &meta));
    let mut checkpoints = Checkpoints::new();
    let mut tick = pin!(tokio::time::sleep_until(checkpoints.due()));
    // Text streamed since the last checkpoint.
    let mut unsaved = false;
    let ending = {
        // Made once, not per event: each new one would register with its channel again, twice
        // per streamed chunk.
        let mut stopped = pin!(claim.stopped());
        let mut closed = pin!(tx.closed());
        loop {
            if let Some(bytes) = pending.take() {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break Ending::Stopped { client_gone: false },
                    sent = tx.send(bytes) => if sent.is_err() { break Ending::Stopped { client_gone: true } },
                }
            }
            let (now, event) = match early.take() {
                Some(early) => early,
                None => {
                    let event = tokio::select! {
                        biased;
                        _ = &mut stopped => break Ending::Stopped { client_gone: false },
                        _ = &mut closed => break Ending::Stopped { client_gone: true },
                        () = &mut tick, if unsaved => {
                            let write = checkpoint(state.chat_rows.clone(), assistant.id, content.clone(), reasoning.clone());
                            unsaved = !checkpoints.start(write);
                            tick.as_mut().reset(checkpoints.due());
                            continue;
                        }
                        event = upstream.next() => event,
                    };
                    (Instant::now(), event)
                }
            };
            pending = Some(match event {
                Some(StreamEvent::Reasoning(delta)) => {
                    meter.reasoning(now);
                    let f = frame("reasoning", &Delta { model_config_id: None, delta: &delta });
                    reasoning.push_str(&delta);
                    unsaved = true;
                    f
                }
                Some(StreamEvent::Content(delta)) => {
                    meter.answer(now);
                    let f = frame("content", &Delta { model_config_id: None, delta: &delta });
                    content.push_str(&delta);
                    unsaved = true;
                    f
                }
                Some(StreamEvent::Usage(usage)) => {
                    meter.usage(usage);
                    frame("usage", &usage)
                }
                Some(StreamEvent::Finish(reason)) => break Ending::Finished(reason.as_str().to_owned()),
                Some(StreamEvent::Error(error)) => break Ending::Failed(error),
                None => break Ending::Failed(LlmError::Interrupted("the stream ended without a finish".into())),
            });
        }
    };
    // Cancel the provider request before anything else, then save (after any checkpoint).
    drop(upstream);
    checkpoints.settle().await;
    let metrics = meter.finish(Instant::now());
    let (finish_reason, error) = match &ending {
        Ending::Finished(reason) => (reason.clone(), None),
        Ending::Failed(error) => ("error".to_owned(), Some(error_data(error))),
        Ending::Stopped { .. } => ("stopped".to_owned(), None),
    };
    let mut saved_metrics = serde_json::to_value(&metrics).expect("metrics serialise");
    if let Some(error) = &error {
        saved_metrics["error"] = error.clone();
    }
    let answer = FinalAnswer { content, reasoning, finish_reason: finish_reason.clone(), metrics: saved_metrics.to_string() };
    let saved = state.chat_rows.finish(assistant.id, answer, session_id, title, state.clock.now()).await;
    // The session is free again once the answer is saved.
    drop(claim);

    if matches!(ending, Ending::Stopped { client_gone: true }) {
        if let Err(err) = saved {
            tracing::error!(error = %err, message_id = assistant.id, "saving a stopped answer failed");
        }
        return;
    }
    let mut tail = Vec::new();
    if let Err(err) = &saved {
        tracing::error!(error = %err, message_id = assistant.id, "saving an answer failed");
        tail.push(frame("error", &json!({"code": "save_failed", "message": "the answer could not be saved"})));
    }
    if let Some(error) = &error {
        tail.push(frame("error", error));
    }
    let finish_reason = if saved.is_err() { "error".to_owned() } else { finish_reason };
    tail.push(frame("done", &json!({"finish_reason": finish_reason, "metrics": metrics})));
    for bytes in tail {
        if tx.send(bytes).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_frames_go_out_together_in_order_and_bounded() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_EVENTS);
        for part in [&b"b"[..], b"c", b"d"] {
            tx.send(Bytes::copy_from_slice(part)).await.unwrap();
        }
        assert_eq!(&gather(Bytes::from_static(b"a"), &mut rx).await[..], b"abcd");

        let big = Bytes::from(vec![b'x'; COALESCE_BYTES / 2 + 1]);
        for _ in 0..4 {
            tx.send(big.clone()).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        let batch = gather(first, &mut rx).await;
        assert_eq!(batch.len(), 2 * big.len(), "stops once the batch is full");
        assert_eq!(rx.recv().await.unwrap().len(), big.len(), "the rest waits for the next write");
    }

    /// Frames that a producer hands over one per turn of the scheduler (as a provider's
    /// connection hands over chunks) still go out in one write.
    #[tokio::test]
    async fn frames_produced_while_gathering_join_the_batch() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_EVENTS);
        let producer = tokio::spawn(async move {
            for part in [&b"b"[..], b"c", b"d", b"e"] {
                tx.send(Bytes::copy_from_slice(part)).await.unwrap();
                tokio::task::yield_now().await;
            }
            tx
        });
        let batch = gather(Bytes::from_static(b"a"), &mut rx).await;
        assert_eq!(&batch[..], b"abcde");
        drop(producer.await.unwrap());
    }

    /// The first batches of a response take what is waiting, in order and bounded, and do not
    /// wait for a producer to run.
    #[tokio::test]
    async fn the_first_batches_take_only_what_is_waiting() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_EVENTS);
        assert_eq!(&take_waiting(Bytes::from_static(b"a"), &mut rx)[..], b"a");
        for part in [&b"b"[..], b"c"] {
            tx.send(Bytes::copy_from_slice(part)).await.unwrap();
        }
        assert_eq!(&take_waiting(Bytes::from_static(b"a"), &mut rx)[..], b"abc");
        let big = Bytes::from(vec![b'x'; COALESCE_BYTES / 2 + 1]);
        for _ in 0..3 {
            tx.send(big.clone()).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        assert_eq!(take_waiting(first, &mut rx).len(), 2 * big.len(), "stops once the batch is full");
    }

    /// A lone frame goes out once a turn of the scheduler brings nothing more: no timer, and
    /// the sender staying open does not hold it back.
    #[tokio::test]
    async fn a_lone_frame_is_not_held_back() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_EVENTS);
        let batch = tokio::time::timeout(Duration::from_secs(1), gather(Bytes::from_static(b"a"), &mut rx)).await;
        assert_eq!(&batch.expect("returned at once")[..], b"a");
        drop(tx);
    }
}
