//! One input streamed to several model configs at once (R-CHAT-6).
//!
//! Every model's upstream stream is merged into one (`select_all`), so a slow or failing model
//! never holds back the others: whichever has an event ready goes out first, tagged with its
//! `model_config_id`. As in a chat answer, a spawned task owns the upstream streams; a client
//! that goes away cancels all of them, and the results are saved either way.
//!
//! While a run streams, its transcript in `model_playground_chats` (the input as a `user` row, one
//! `assistant` row per model, an `error` row for each model that fails) is written at most every
//! [`super::CHECKPOINT_EVERY`], so a crash loses at most that window: the next start rebuilds the
//! run's results from the transcript with finish reason `interrupted`. `model_tests.results` keeps
//! the finished run with its metrics.
use std::{pin::pin, time::Instant};

use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use llm::{ChatMessage, LlmError, StreamEvent};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{Checkpoints, Delta, INTERRUPTED, Meter, Metrics, ResolvedModel, chat_request, error_data, frame, sse_response};
use crate::state::AppState;
use store::entities::{model_configs, model_playground_chats as transcript, model_tests};

pub const ROLE_USER: &str = "user";
pub const ROLE_ASSISTANT: &str = "assistant";
pub const ROLE_ERROR: &str = "error";

/// A comparison's key in `model_playground_chats.session_id`.
pub fn transcript_key(test_id: i32) -> String {
    format!("comparison-{test_id}")
}

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
    /// `stop`, `length`, `stopped` (the client went away), `error`, or `interrupted` (the server
    /// stopped during the run; text as last saved, metrics unmeasured).
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
    /// The lane's `assistant` row in the transcript.
    row: Option<i32>,
    /// Text streamed since the last checkpoint.
    unsaved: bool,
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

/// Replaces the transcript of `test` with the input and an empty answer row per model; returns the
/// answer rows' ids in the models' order.
async fn open_transcript(db: &DatabaseConnection, test: &model_tests::Model, models: &[ResolvedModel], now: DateTime<Utc>) -> Result<Vec<i32>, DbErr> {
    let key = transcript_key(test.id);
    let txn = db.begin().await?;
    transcript::Entity::delete_many().filter(transcript::Column::SessionId.eq(key.as_str())).exec(&txn).await?;
    let row = |role: &str, config: Option<String>, content: String| transcript::ActiveModel {
        user_id: Set(Some(test.user_id)),
        session_id: Set(key.clone()),
        model_config_id: Set(config),
        role: Set(role.to_owned()),
        content: Set(content),
        thinking: Set(None),
        created_at: Set(now),
        ..Default::default()
    };
    row(ROLE_USER, None, test.input_data.clone()).insert(&txn).await?;
    let mut ids = Vec::with_capacity(models.len());
    for m in models {
        ids.push(row(ROLE_ASSISTANT, Some(m.config.id.clone()), String::new()).insert(&txn).await?.id);
    }
    txn.commit().await?;
    Ok(ids)
}

/// Writes the lanes' text so far to their transcript rows.
async fn checkpoint(db: DatabaseConnection, texts: Vec<(i32, String, String)>) {
    for (id, content, reasoning) in texts {
        let saved = transcript::ActiveModel {
            id: Set(id),
            content: Set(content),
            thinking: Set((!reasoning.is_empty()).then_some(reasoning)),
            ..Default::default()
        }
        .update(&db)
        .await;
        if let Err(err) = saved {
            tracing::warn!(error = %err, row = id, "checkpointing a comparison failed");
            return;
        }
    }
}

/// The final transcript: every answer row's text, and an `error` row for each failed model.
async fn close_transcript(db: &DatabaseConnection, test: &model_tests::Model, lanes: &[Lane], now: DateTime<Utc>) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    for lane in lanes {
        let Some(id) = lane.row else { continue };
        transcript::ActiveModel {
            id: Set(id),
            content: Set(lane.content.clone()),
            thinking: Set((!lane.reasoning.is_empty()).then(|| lane.reasoning.clone())),
            ..Default::default()
        }
        .update(&txn)
        .await?;
        if let Some((_, Some(error), _)) = &lane.ending {
            transcript::ActiveModel {
                user_id: Set(Some(test.user_id)),
                session_id: Set(transcript_key(test.id)),
                model_config_id: Set(Some(lane.config_id.clone())),
                role: Set(ROLE_ERROR.to_owned()),
                content: Set(error["message"].as_str().unwrap_or_default().to_owned()),
                thinking: Set(None),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
    }
    txn.commit().await
}

/// Comparisons left streaming by a stop of the server get their results from the transcript
/// (what the last checkpoint saved), each model with finish reason `interrupted`. Returns how many.
pub async fn settle_interrupted(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let tests = model_tests::Entity::find().filter(model_tests::Column::IsStreaming.eq(true)).all(db).await?;
    for test in &tests {
        let rows = transcript::Entity::find()
            .filter(transcript::Column::SessionId.eq(transcript_key(test.id)))
            .filter(transcript::Column::Role.eq(ROLE_ASSISTANT))
            .order_by_asc(transcript::Column::Id)
            .all(db)
            .await?;
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            let config_id = row.model_config_id.unwrap_or_default();
            let model_name = model_configs::Entity::find_by_id(config_id.clone())
                .one(db)
                .await?
                .map_or_else(|| config_id.clone(), |c| c.model_name);
            results.push(ComparisonResult {
                model_config_id: config_id,
                model_name,
                content: row.content,
                reasoning: row.thinking,
                error: None,
                error_code: None,
                finish_reason: INTERRUPTED.to_owned(),
                metrics: Metrics::unmeasured(),
            });
        }
        // Without a transcript (none was written yet) the earlier results stay.
        let mut active = model_tests::ActiveModel { id: Set(test.id), is_streaming: Set(false), ..Default::default() };
        if !results.is_empty() {
            active.results = Set(Some(serde_json::to_string(&results).expect("results serialise")));
        }
        active.update(db).await?;
    }
    Ok(tests.len() as u64)
}

async fn run(state: AppState, test: model_tests::Model, models: Vec<ResolvedModel>, messages: Vec<ChatMessage>, tx: mpsc::Sender<Bytes>) {
    let started = Instant::now();
    let rows = match open_transcript(&state.db, &test, &models, state.clock.now()).await {
        Ok(ids) => ids.into_iter().map(Some).collect(),
        Err(err) => {
            // The run goes on; only its crash safety is lost.
            tracing::error!(error = %err, test_id = test.id, "starting a comparison transcript failed");
            vec![None; models.len()]
        }
    };
    let ids: Vec<&str> = models.iter().map(|m| m.config.id.as_str()).collect();
    let mut opening = vec![frame("meta", &json!({"test_id": test.id, "model_config_ids": ids}))];
    opening.extend(models.iter().map(|m| frame("meta", &json!({"model_config_id": m.config.id, "model": m.config.model_name}))));
    let mut lanes: Vec<Lane> = models
        .iter()
        .zip(rows)
        .map(|(m, row)| Lane {
            config_id: m.config.id.clone(),
            model_name: m.config.model_name.clone(),
            content: String::new(),
            reasoning: String::new(),
            meter: Meter::start(started),
            ending: None,
            row,
            unsaved: false,
        })
        .collect();
    let mut merged = futures::stream::select_all(models.iter().enumerate().map(|(i, m)| {
        m.provider.stream_chat(chat_request(&m.config, messages.clone())).map(move |event| (i, event)).boxed()
    }));

    let mut client_gone = !send_all(&tx, opening).await;
    let mut checkpoints = Checkpoints::new();
    let mut tick = pin!(tokio::time::sleep_until(checkpoints.due()));
    // Made once: a new one per event would register with the channel again.
    let mut closed = pin!(tx.closed());
    while !client_gone {
        let unsaved = lanes.iter().any(|l| l.unsaved && l.row.is_some());
        let next = tokio::select! {
            biased;
            _ = &mut closed => { client_gone = true; break }
            () = &mut tick, if unsaved => {
                let texts = lanes.iter().filter(|l| l.unsaved).filter_map(|l| Some((l.row?, l.content.clone(), l.reasoning.clone()))).collect();
                if checkpoints.start(checkpoint(state.db.clone(), texts)) {
                    lanes.iter_mut().for_each(|l| l.unsaved = false);
                }
                tick.as_mut().reset(checkpoints.due());
                continue;
            }
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
                lane.unsaved = true;
                vec![frame("reasoning", &Delta { model_config_id: Some(&id), delta: &delta })]
            }
            StreamEvent::Content(delta) => {
                lane.meter.answer(now);
                lane.content.push_str(&delta);
                lane.unsaved = true;
                vec![frame("content", &Delta { model_config_id: Some(&id), delta: &delta })]
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
    checkpoints.settle().await;
    for lane in lanes.iter_mut().filter(|l| l.ending.is_none()) {
        if client_gone {
            lane.end("stopped", None);
        } else {
            lane.end("error", Some(error_data(&LlmError::Interrupted("the stream ended without a finish".into()))));
        }
    }
    if let Err(err) = close_transcript(&state.db, &test, &lanes, state.clock.now()).await {
        tracing::error!(error = %err, test_id = test.id, "saving a comparison transcript failed");
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
