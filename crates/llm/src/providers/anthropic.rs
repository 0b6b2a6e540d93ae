//! Anthropic Messages API: a typed SSE event stream where thinking and text arrive as separate
//! content blocks, and usage is split between `message_start` and `message_delta`.

use async_trait::async_trait;
use futures::FutureExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use super::{ChatProvider, Upstream};
use crate::sse::{SseEvent, SseParser};
use crate::stream::{Decoder, Delta, drive, failed};
use crate::{
    ChatRequest, FinishReason, LlmError, ProviderKind, RemoteModel, Role, StreamEvent, Usage,
};

const API_VERSION: &str = "2023-06-01";
/// The API requires `max_tokens`; model configs default to the same value (R-PROV-4).
const DEFAULT_MAX_TOKENS: u32 = 8192;
/// Enough for any account; guards against a server that always says `has_more`.
const MAX_MODEL_PAGES: usize = 20;

pub(crate) struct Anthropic {
    pub(crate) upstream: Upstream,
}

impl Anthropic {
    fn builder(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::RequestBuilder, LlmError> {
        let mut builder = self
            .upstream
            .client
            .inner
            .request(method, url)
            .header("anthropic-version", API_VERSION);
        if let Some(key) = self.upstream.secret_header("")? {
            builder = builder.header("x-api-key", key);
        }
        Ok(builder)
    }

    fn request(&self, req: &ChatRequest) -> Result<reqwest::RequestBuilder, LlmError> {
        let url = self.upstream.url("/v1/messages", Some("/v1"))?;
        Ok(self
            .builder(reqwest::Method::POST, url)?
            .json(&chat_body(req)))
    }
}

/// System messages become the top-level `system` field (the API has no system role). Anthropic
/// accepts temperature only up to 1 and recent models refuse temperature together with top_p, so
/// temperature is clamped and top_p sent only when temperature is not.
fn chat_body(req: &ChatRequest) -> serde_json::Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<_> = req
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    match (req.temperature, req.top_p) {
        (Some(t), _) => body["temperature"] = json!(t.clamp(0.0, 1.0)),
        (None, Some(p)) => body["top_p"] = json!(p),
        (None, None) => {}
    }
    if let Some(k) = req.effective_top_k() {
        body["top_k"] = json!(k);
    }
    if !req.stop.is_empty() {
        body["stop_sequences"] = json!(req.stop);
    }
    body
}

#[async_trait]
impl ChatProvider for Anthropic {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn stream_chat(&self, req: ChatRequest) -> BoxStream<'static, StreamEvent> {
        let request = match self.request(&req) {
            Ok(request) => request,
            Err(error) => return failed(error),
        };
        let upstream = self.upstream.clone();
        let response = async move { upstream.send(request).await }.boxed();
        drive(
            response,
            Box::new(AnthropicDecoder::default()),
            self.upstream.client.timeouts(),
        )
    }

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError> {
        #[derive(Deserialize)]
        struct ModelPage {
            data: Vec<Model>,
            #[serde(default)]
            has_more: bool,
            #[serde(default)]
            last_id: Option<String>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
            #[serde(default)]
            display_name: Option<String>,
        }
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let mut url = self.upstream.url("/v1/models", Some("/v1"))?;
            url.query_pairs_mut().append_pair("limit", "1000");
            if let Some(after) = &after {
                url.query_pairs_mut().append_pair("after_id", after);
            }
            let page: ModelPage = self
                .upstream
                .get_json(self.builder(reqwest::Method::GET, url)?)
                .await?;
            models.extend(page.data.into_iter().map(|m| RemoteModel {
                name: m.display_name.unwrap_or_else(|| m.id.clone()),
                id: m.id,
                size: None,
                is_vision: false,
                description: None,
            }));
            match page.last_id {
                Some(last) if page.has_more => after = Some(last),
                _ => break,
            }
        }
        Ok(models)
    }
}

#[derive(Default)]
struct AnthropicDecoder {
    sse: SseParser,
    usage: Option<Usage>,
    stop_reason: Option<String>,
    done: bool,
    seen_event: bool,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        content_block: Block,
    },
    ContentBlockDelta {
        delta: Block,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<RawUsage>,
    },
    MessageStop,
    Error {
        error: ErrorBody,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<RawUsage>,
}

/// Content blocks and their deltas share the fields that matter here.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    #[serde(alias = "text_delta")]
    Text { text: String },
    #[serde(alias = "thinking_delta")]
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

impl AnthropicDecoder {
    fn merge_usage(&mut self, raw: RawUsage) {
        let usage = self.usage.get_or_insert_with(Usage::default);
        if let Some(input) = raw.input_tokens {
            usage.prompt_tokens = input;
        }
        if let Some(output) = raw.output_tokens {
            usage.completion_tokens = output;
        }
    }

    fn complete(&mut self, out: &mut Vec<Delta>) {
        if let Some(usage) = self.usage.take() {
            out.push(Delta::Usage(usage));
        }
        let reason = self
            .stop_reason
            .take()
            .map(|r| FinishReason::from_provider(&r));
        out.push(Delta::Finish(reason.unwrap_or(FinishReason::Stop)));
        self.done = true;
    }

    fn event(&mut self, event: SseEvent, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if self.done {
            return Ok(());
        }
        self.seen_event = true;
        let event: Event = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::Protocol(format!("invalid event JSON: {e}")))?;
        match event {
            Event::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.merge_usage(usage);
                }
            }
            Event::ContentBlockStart {
                content_block: block,
            }
            | Event::ContentBlockDelta { delta: block } => match block {
                Block::Text { text } if !text.is_empty() => out.push(Delta::Content(text)),
                Block::Thinking { thinking } if !thinking.is_empty() => {
                    out.push(Delta::Reasoning(thinking))
                }
                _ => {}
            },
            Event::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(usage) = usage {
                    self.merge_usage(usage);
                }
            }
            Event::MessageStop => self.complete(out),
            Event::Error { error } => return Err(LlmError::Provider(error.message)),
            Event::Other => {}
        }
        Ok(())
    }
}

impl Decoder for AnthropicDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Delta>) -> Result<(), LlmError> {
        for event in self.sse.feed(chunk)? {
            self.event(event, out)?;
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if let Some(event) = self.sse.finish()? {
            self.event(event, out)?;
        }
        if !self.seen_event {
            return Err(LlmError::Protocol(
                "the response is not an event stream".into(),
            ));
        }
        if !self.done && self.stop_reason.is_some() {
            self.complete(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::decode_all;

    #[test]
    fn overloaded_error_event_is_a_provider_error() {
        let wire = concat!(
            "event: ping\ndata: {\"type\": \"ping\"}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",",
            "\"message\":\"Overloaded\"}}\n\n",
        );
        assert_eq!(
            decode_all(&mut AnthropicDecoder::default(), wire),
            Err(LlmError::Provider("Overloaded".into()))
        );
    }

    #[test]
    fn unknown_events_and_blocks_are_ignored() {
        let wire = concat!(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,",
            "\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"x\"}}\n\n",
            "event: future_event\ndata: {\"type\":\"future_event\"}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"stop_sequence\"}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let deltas = decode_all(&mut AnthropicDecoder::default(), wire).unwrap();
        assert_eq!(deltas, [Delta::Finish(FinishReason::Stop)]);
    }
}
