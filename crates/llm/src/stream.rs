//! Turns a provider's HTTP response into [`StreamEvent`]s: applies the timeouts, runs the
//! provider's frame decoder, splits inline `<think>` blocks, and guarantees exactly one terminal
//! event, with at most one `Usage` (the provider's last report) right before `Finish`. Everything lives inside the returned stream (no spawned task), so dropping the stream
//! drops the response body and with it the upstream connection.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use tokio::time::{Instant, timeout_at};

use crate::{FinishReason, LlmError, StreamEvent, ThinkSplitter, TimeoutPhase, Timeouts, Usage};

/// What a provider's wire format says, before `<think>` splitting.
#[derive(Debug, PartialEq)]
pub(crate) enum Delta {
    Reasoning(String),
    Content(String),
    Usage(Usage),
    Finish(FinishReason),
}

/// One provider's framing and JSON schema. `end` is called when the body ends; it may emit a
/// `Finish` for providers that close without their final marker.
pub(crate) trait Decoder: Send + 'static {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Delta>) -> Result<(), LlmError>;
    fn end(&mut self, out: &mut Vec<Delta>) -> Result<(), LlmError>;
}

type Body = BoxStream<'static, Result<bytes::Bytes, String>>;

enum Phase {
    Connecting(BoxFuture<'static, Result<reqwest::Response, LlmError>>),
    Streaming(Body),
    Done,
}

struct Driver {
    phase: Phase,
    decoder: Box<dyn Decoder>,
    splitter: ThinkSplitter,
    queue: VecDeque<StreamEvent>,
    timeouts: Timeouts,
    first_byte_deadline: Instant,
    got_first_byte: bool,
    finished: bool,
    /// Some servers repeat usage on every chunk; only the final numbers are reported.
    usage: Option<Usage>,
}

pub(crate) fn drive(
    response: BoxFuture<'static, Result<reqwest::Response, LlmError>>,
    decoder: Box<dyn Decoder>,
    timeouts: Timeouts,
) -> BoxStream<'static, StreamEvent> {
    let driver = Driver {
        phase: Phase::Connecting(response),
        decoder,
        splitter: ThinkSplitter::new(),
        queue: VecDeque::new(),
        timeouts,
        first_byte_deadline: Instant::now() + timeouts.first_byte,
        got_first_byte: false,
        finished: false,
        usage: None,
    };
    stream::unfold(driver, |mut driver| async move {
        loop {
            if let Some(event) = driver.queue.pop_front() {
                if event.is_terminal() {
                    // Release the connection now, not when the consumer drops the stream.
                    driver.phase = Phase::Done;
                    driver.queue.clear();
                }
                return Some((event, driver));
            }
            if matches!(driver.phase, Phase::Done) {
                return None;
            }
            driver.step().await;
        }
    })
    .boxed()
}

/// A stream that only reports `error`, for requests that fail before anything is sent.
pub(crate) fn failed(error: LlmError) -> BoxStream<'static, StreamEvent> {
    stream::iter([StreamEvent::Error(error)]).boxed()
}

impl Driver {
    async fn step(&mut self) {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Connecting(response) => {
                self.first_byte_deadline = Instant::now() + self.timeouts.first_byte;
                match timeout_at(self.first_byte_deadline, response).await {
                    Err(_) => self.fail(LlmError::Timeout(TimeoutPhase::FirstByte)),
                    Ok(Err(error)) => self.fail(error),
                    Ok(Ok(response)) => {
                        let body = response
                            .bytes_stream()
                            .map_err(|e| body_error(e.without_url()))
                            .boxed();
                        self.phase = Phase::Streaming(body);
                    }
                }
            }
            Phase::Streaming(mut body) => {
                let (deadline, phase) = if self.got_first_byte {
                    (Instant::now() + self.timeouts.idle, TimeoutPhase::Idle)
                } else {
                    (self.first_byte_deadline, TimeoutPhase::FirstByte)
                };
                match timeout_at(deadline, body.next()).await {
                    Err(_) => self.fail(LlmError::Timeout(phase)),
                    Ok(Some(Ok(chunk))) => {
                        self.got_first_byte |= !chunk.is_empty();
                        let mut deltas = Vec::new();
                        let result = self.decoder.feed(&chunk, &mut deltas);
                        self.absorb(deltas);
                        match result {
                            Err(error) if !self.finished => self.fail(error),
                            _ if !self.finished => self.phase = Phase::Streaming(body),
                            _ => {}
                        }
                    }
                    Ok(Some(Err(message))) => self.fail(LlmError::Interrupted(message)),
                    Ok(None) => {
                        let mut deltas = Vec::new();
                        let result = self.decoder.end(&mut deltas);
                        self.absorb(deltas);
                        match result {
                            Err(error) if !self.finished => self.fail(error),
                            _ if !self.finished => self.fail(LlmError::Interrupted(
                                "the provider closed the stream before finishing".into(),
                            )),
                            _ => {}
                        }
                    }
                }
            }
            Phase::Done => {}
        }
    }

    fn absorb(&mut self, deltas: Vec<Delta>) {
        for delta in deltas {
            if self.finished {
                return;
            }
            match delta {
                Delta::Reasoning(text) => self.push_text(text, String::new()),
                Delta::Content(text) => {
                    let split = self.splitter.push(&text);
                    self.push_text(split.reasoning, split.answer);
                }
                Delta::Usage(usage) => self.usage = Some(usage),
                Delta::Finish(reason) => {
                    self.flush_splitter();
                    if let Some(usage) = self.usage.take() {
                        self.queue.push_back(StreamEvent::Usage(usage));
                    }
                    tracing::debug!(finish = reason.as_str(), "provider stream finished");
                    self.queue.push_back(StreamEvent::Finish(reason));
                    self.finished = true;
                }
            }
        }
    }

    fn fail(&mut self, error: LlmError) {
        self.flush_splitter();
        tracing::warn!(%error, "provider stream failed");
        self.queue.push_back(StreamEvent::Error(error));
        self.finished = true;
        self.phase = Phase::Done;
    }

    fn flush_splitter(&mut self) {
        let split = self.splitter.finish();
        self.push_text(split.reasoning, split.answer);
    }

    fn push_text(&mut self, reasoning: String, answer: String) {
        if !reasoning.is_empty() {
            self.queue.push_back(StreamEvent::Reasoning(reasoning));
        }
        if !answer.is_empty() {
            self.queue.push_back(StreamEvent::Content(answer));
        }
    }
}

fn body_error(error: reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
pub(crate) fn decode_all(decoder: &mut dyn Decoder, wire: &str) -> Result<Vec<Delta>, LlmError> {
    let mut out = Vec::new();
    decoder.feed(wire.as_bytes(), &mut out)?;
    decoder.end(&mut out)?;
    Ok(out)
}
