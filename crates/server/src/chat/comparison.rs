//! One input streamed to several model configs at once (R-CHAT-6).
//!
//! Every model's upstream stream is merged into one (`select_all`), so a slow or failing model
//! never holds back the others: whichever has an event ready goes out first, tagged with its
//! `model_config_id`. As in a chat answer, a spawned task owns the upstream streams; a client
//! that goes away cancels all of them, and the results are saved either way.
use std::time::Instant;

use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use llm::{ChatMessage, LlmError, StreamEvent};
use sea_orm::{ActiveModelTrait, Set};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{Meter, Metrics, ResolvedModel, chat_request, error_data, frame, sse_response};
use crate::state::AppState;
use store::entities::model_tests;

/// One model's outcome, as saved in `model_tests.results` (a JSON array in request order).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct ComparisonResult {
    pub model_config_id: String,
    pub model_name: String,
    pub content: String,
    pub reasoning: Option<String>,
    /// The error message when the model failed.
    pub error: Option<String>,
    pub error_code: Option<String>,
    /// `stop`, `length`, `stopped` (the client went away) or `error`.
    pub finish_reason: String,
    pub metrics: Metrics,
}

struct Lane {
    config_id: String,
    model_name: String,
    content: String,
    reasoning: String,
    meter: Meter,
    ending: Option<(String, Option<Value>, Metrics)>,
}

impl Lane {
    fn end(&mut self, finish_reason: &str, error: Option<Value>) -> Value {
        let metrics = self.meter.finish(Instant::now());
        let done = json!({"model_config_id": self.config_id, "finish_reason": finish_reason, "metrics": metrics});
        self.ending = Some((finish_reason.to_owned(), error, metrics));
        done
    }

    fn result(self) -> ComparisonResult {
        let (finish_reason, error, metrics) = self.ending.expect("every lane ends");
        ComparisonResult {
            model_config_id: self.config_id,
            model_name: self.model_name,
            content: self.content,
            reasoning: (!self.reasoning.is_empty()).then_some(self.reasoning),
            error: error.as_ref().and_then(|e| e["message"].as_str().map(str::to_owned)),
            error_code: error.as_ref().and_then(|e| e["code"].as_str().map(str::to_owned)),
            finish_reason,
            metrics,
        }
    }
}

/// Starts the comparison task for the `model_tests` row `test` and returns its SSE response.
pub fn stream(state: AppState, test: model_tests::Model, models: Vec<ResolvedModel>, messages: Vec<ChatMessage>) -> Response {
    let (tx, rx) = mpsc::channel(super::CHANNEL_EVENTS);
    tokio::spawn(run(state, test, models, messages, tx));
    sse_response(rx)
}

async fn send_all(tx: &mpsc::Sender<Bytes>, frames: Vec<Bytes>) -> bool {
    for f in frames {
        if tx.send(f).await.is_err() {
            return false;
        }
    }
    true
}

async fn run(state: AppState, test: model_tests::Model, models: Vec<ResolvedModel>, messages: Vec<ChatMessage>, tx: mpsc::Sender<Bytes>) {
    let started = Instant::now();
    let ids: Vec<&str> = models.iter().map(|m| m.config.id.as_str()).collect();
    let mut opening = vec![frame("meta", &json!({"test_id": test.id, "model_config_ids": ids}))];
    opening.extend(models.iter().map(|m| frame("meta", &json!({"model_config_id": m.config.id, "model": m.config.model_name}))));
    let mut lanes: Vec<Lane> = models
        .iter()
        .map(|m| Lane {
            config_id: m.config.id.clone(),
            model_name: m.config.model_name.clone(),
            content: String::new(),
            reasoning: String::new(),
            meter: Meter::start(started),
            ending: None,
        })
        .collect();
    let mut merged = futures::stream::select_all(models.iter().enumerate().map(|(i, m)| {
        m.provider.stream_chat(chat_request(&m.config, messages.clone())).map(move |event| (i, event)).boxed()
    }));

    let mut client_gone = !send_all(&tx, opening).await;
    while !client_gone {
        let next = tokio::select! {
            biased;
            _ = tx.closed() => { client_gone = true; break }
            next = merged.next() => next,
        };
        let Some((i, event)) = next else { break };
        let lane = &mut lanes[i];
        let id = lane.config_id.clone();
        let now = Instant::now();
        let frames = match event {
            StreamEvent::Reasoning(delta) => {
                lane.meter.reasoning(now);
                lane.reasoning.push_str(&delta);
                vec![frame("reasoning", &json!({"model_config_id": id, "delta": delta}))]
            }
            StreamEvent::Content(delta) => {
                lane.meter.answer(now);
                lane.content.push_str(&delta);
                vec![frame("content", &json!({"model_config_id": id, "delta": delta}))]
            }
            StreamEvent::Usage(usage) => {
                lane.meter.usage(usage);
                let mut data = serde_json::to_value(usage).expect("usage serialises");
                data["model_config_id"] = json!(id);
                vec![frame("usage", &data)]
            }
            StreamEvent::Finish(reason) => vec![frame("done", &lane.end(reason.as_str(), None))],
            StreamEvent::Error(error) => {
                let mut data = error_data(&error);
                let done = lane.end("error", Some(data.clone()));
                data["model_config_id"] = json!(id);
                vec![frame("error", &data), frame("done", &done)]
            }
        };
        client_gone = !send_all(&tx, frames).await;
    }
    drop(merged);
    for lane in lanes.iter_mut().filter(|l| l.ending.is_none()) {
        if client_gone {
            lane.end("stopped", None);
        } else {
            lane.end("error", Some(error_data(&LlmError::Interrupted("the stream ended without a finish".into()))));
        }
    }
    let results: Vec<ComparisonResult> = lanes.into_iter().map(Lane::result).collect();
    let saved = model_tests::ActiveModel {
        id: Set(test.id),
        results: Set(Some(serde_json::to_string(&results).expect("results serialise"))),
        is_streaming: Set(false),
        ..Default::default()
    }
    .update(&state.db)
    .await;
    if let Err(err) = saved {
        tracing::error!(error = %err, test_id = test.id, "saving comparison results failed");
        let _ = tx.send(frame("error", &json!({"code": "save_failed", "message": "the results could not be saved"}))).await;
    }
}
