//! OpenAI-compatible chat completions: SSE of `chat.completion.chunk`s ending in `data: [DONE]`.
//! Reasoning arrives as `delta.reasoning_content` (DeepSeek, vLLM) or `delta.reasoning`
//! (OpenRouter, newer vLLM, Ollama's /v1).

use async_trait::async_trait;
use futures::FutureExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use super::{ChatProvider, Upstream};
use crate::sse::{SseEvent, SseParser};
use crate::stream::{Decoder, Delta, drive, failed};
use crate::{ChatRequest, FinishReason, LlmError, ProviderKind, RemoteModel, StreamEvent, Usage};

pub(crate) struct OpenAi {
    pub(crate) upstream: Upstream,
}

impl OpenAi {
    fn request(&self, req: &ChatRequest, path: &str) -> Result<reqwest::RequestBuilder, LlmError> {
        let url = self.upstream.url(path, None)?;
        let mut builder = self.upstream.client.inner.post(url);
        if let Some(auth) = self.upstream.secret_header("Bearer ")? {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth);
        }
        Ok(builder.json(&chat_body(req)))
    }
}

/// `top_k` is not part of the OpenAI API and strict servers reject unknown fields, so it is left out.
fn chat_body(req: &ChatRequest) -> serde_json::Value {
    let messages: Vec<_> = req
        .messages
        .iter()
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(n) = req.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !req.stop.is_empty() {
        body["stop"] = json!(req.stop);
    }
    body
}

#[async_trait]
impl ChatProvider for OpenAi {
    fn kind(&self) -> ProviderKind {
        ProviderKind::OpenAi
    }

    fn stream_chat(&self, req: ChatRequest) -> BoxStream<'static, StreamEvent> {
        let request = match self.request(&req, "/chat/completions") {
            Ok(request) => request,
            Err(error) => return failed(error),
        };
        let upstream = self.upstream.clone();
        let response = async move { upstream.send(request).await }.boxed();
        drive(
            response,
            Box::new(OpenAiDecoder::default()),
            self.upstream.client.timeouts(),
        )
    }

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError> {
        #[derive(Deserialize)]
        struct ModelList {
            data: Vec<Model>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
            #[serde(default)]
            owned_by: Option<String>,
        }
        let url = self.upstream.url("/models", None)?;
        let mut builder = self.upstream.client.inner.get(url);
        if let Some(auth) = self.upstream.secret_header("Bearer ")? {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth);
        }
        let list: ModelList = self.upstream.get_json(builder).await?;
        Ok(list
            .data
            .into_iter()
            .map(|m| RemoteModel {
                name: m.id.clone(),
                id: m.id,
                size: None,
                is_vision: false,
                description: m.owned_by.map(|owner| format!("owned by {owner}")),
            })
            .collect())
    }
}

#[derive(Default)]
struct OpenAiDecoder {
    sse: SseParser,
    finish: Option<FinishReason>,
    done: bool,
    seen_event: bool,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<ChoiceDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ChoiceDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u32>,
}

impl OpenAiDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if self.done {
            return Ok(());
        }
        self.seen_event = true;
        if event.data.trim() == "[DONE]" {
            out.push(Delta::Finish(
                self.finish.take().unwrap_or(FinishReason::Stop),
            ));
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::Protocol(format!("invalid chunk JSON: {e}")))?;
        if let Some(error) = chunk.error {
            let message = match &error {
                serde_json::Value::String(text) => text.clone(),
                other => other
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("unknown error")
                    .to_owned(),
            };
            return Err(LlmError::Provider(message));
        }
        for choice in chunk.choices.into_iter().take(1) {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.reasoning_content.or(delta.reasoning) {
                out.push(Delta::Reasoning(text));
            }
            if let Some(text) = delta.content {
                out.push(Delta::Content(text));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(FinishReason::from_provider(&reason));
            }
        }
        if let Some(usage) = chunk.usage {
            out.push(Delta::Usage(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                reasoning_tokens: usage
                    .completion_tokens_details
                    .and_then(|d| d.reasoning_tokens),
            }));
        }
        Ok(())
    }
}

impl Decoder for OpenAiDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Delta>) -> Result<(), LlmError> {
        for event in self.sse.feed(chunk)? {
            self.event(event, out)?;
        }
        Ok(())
    }

    /// Some servers close after the last chunk without `[DONE]`; a seen finish reason is enough.
    fn end(&mut self, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if let Some(event) = self.sse.finish()? {
            self.event(event, out)?;
        }
        if !self.seen_event {
            return Err(LlmError::Protocol(
                "the response is not an event stream".into(),
            ));
        }
        if !self.done
            && let Some(reason) = self.finish.take()
        {
            out.push(Delta::Finish(reason));
            self.done = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::decode_all;

    #[test]
    fn reasoning_tokens_and_deepseek_reasoning_field() {
        let wire = concat!(
            "data: {\"choices\":[{\"delta\":{\"reasoning\":\"r\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9,",
            "\"completion_tokens_details\":{\"reasoning_tokens\":4}}}\n\n",
        );
        let deltas = decode_all(&mut OpenAiDecoder::default(), wire).unwrap();
        assert_eq!(
            deltas,
            [
                Delta::Reasoning("r".into()),
                Delta::Content("a".into()),
                Delta::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 9,
                    reasoning_tokens: Some(4)
                }),
                // No [DONE]: the seen finish reason ends the stream.
                Delta::Finish(FinishReason::Length),
            ]
        );
    }

    #[test]
    fn error_object_mid_stream_is_a_provider_error() {
        let wire = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        assert_eq!(
            decode_all(&mut OpenAiDecoder::default(), wire),
            Err(LlmError::Provider("overloaded".into()))
        );
    }
}
