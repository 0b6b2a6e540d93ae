//! Ollama's native API: NDJSON chat chunks with a separate `thinking` field, and `/api/tags`,
//! which, unlike the OpenAI-compatible list, reports sizes and model families.

use async_trait::async_trait;
use futures::FutureExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use super::{ChatProvider, Upstream};
use crate::ndjson::LineSplitter;
use crate::stream::{Decoder, Delta, drive, failed};
use crate::{ChatRequest, FinishReason, LlmError, ProviderKind, RemoteModel, StreamEvent, Usage};

pub(crate) struct Ollama {
    pub(crate) upstream: Upstream,
}

fn chat_body(req: &ChatRequest) -> serde_json::Value {
    let messages: Vec<_> = req
        .messages
        .iter()
        .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
        .collect();
    let mut options = serde_json::Map::new();
    if let Some(t) = req.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.effective_top_k() {
        options.insert("top_k".into(), json!(k));
    }
    if let Some(n) = req.max_tokens {
        options.insert("num_predict".into(), json!(n));
    }
    if !req.stop.is_empty() {
        options.insert("stop".into(), json!(req.stop));
    }
    json!({"model": req.model, "messages": messages, "stream": true, "options": options})
}

impl Ollama {
    fn builder(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, LlmError> {
        let url = self.upstream.url(path, Some("/api"))?;
        let mut builder = self.upstream.client.inner.request(method, url);
        // Plain Ollama has no auth, but it is often put behind a proxy that checks a bearer key.
        if let Some(auth) = self.upstream.secret_header("Bearer ")? {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth);
        }
        Ok(builder)
    }
}

#[async_trait]
impl ChatProvider for Ollama {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ollama
    }

    fn stream_chat(&self, req: ChatRequest) -> BoxStream<'static, StreamEvent> {
        let request = match self.builder(reqwest::Method::POST, "/api/chat") {
            Ok(builder) => builder.json(&chat_body(&req)),
            Err(error) => return failed(error),
        };
        let upstream = self.upstream.clone();
        let response = async move { upstream.send(request).await }.boxed();
        drive(
            response,
            Box::new(OllamaDecoder::default()),
            self.upstream.client.timeouts(),
        )
    }

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            name: String,
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            size: Option<i64>,
            #[serde(default)]
            details: Option<Details>,
        }
        #[derive(Deserialize, Default)]
        struct Details {
            #[serde(default)]
            families: Option<Vec<String>>,
            #[serde(default)]
            parameter_size: Option<String>,
            #[serde(default)]
            quantization_level: Option<String>,
        }
        let tags: Tags = self
            .upstream
            .get_json(self.builder(reqwest::Method::GET, "/api/tags")?)
            .await?;
        Ok(tags
            .models
            .into_iter()
            .map(|tag| {
                let details = tag.details.unwrap_or_default();
                // Ollama lists a vision projector as an extra family ("clip", or "mllama").
                let is_vision = details
                    .families
                    .iter()
                    .flatten()
                    .any(|f| f == "clip" || f == "mllama");
                let description = [details.parameter_size, details.quantization_level]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                RemoteModel {
                    id: tag.model.unwrap_or_else(|| tag.name.clone()),
                    name: tag.name,
                    size: tag.size,
                    is_vision,
                    description: (!description.is_empty()).then_some(description),
                }
            })
            .collect())
    }
}

#[derive(Default)]
struct OllamaDecoder {
    lines: LineSplitter,
    done: bool,
    seen_line: bool,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: Option<String>,
}

impl OllamaDecoder {
    fn line(&mut self, line: &str, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if self.done {
            return Ok(());
        }
        self.seen_line = true;
        let line: Line = serde_json::from_str(line)
            .map_err(|e| LlmError::Protocol(format!("invalid NDJSON line: {e}")))?;
        if let Some(error) = line.error {
            return Err(LlmError::Provider(error));
        }
        if let Some(message) = line.message {
            if let Some(thinking) = message.thinking.filter(|t| !t.is_empty()) {
                out.push(Delta::Reasoning(thinking));
            }
            if !message.content.is_empty() {
                out.push(Delta::Content(message.content));
            }
        }
        if line.done {
            if line.prompt_eval_count.is_some() || line.eval_count.is_some() {
                out.push(Delta::Usage(Usage {
                    prompt_tokens: line.prompt_eval_count.unwrap_or(0),
                    completion_tokens: line.eval_count.unwrap_or(0),
                    reasoning_tokens: None,
                }));
            }
            let reason = line.done_reason.map(|r| FinishReason::from_provider(&r));
            out.push(Delta::Finish(reason.unwrap_or(FinishReason::Stop)));
            self.done = true;
        }
        Ok(())
    }
}

impl Decoder for OllamaDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Delta>) -> Result<(), LlmError> {
        for line in self.lines.feed(chunk)? {
            self.line(&line, out)?;
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<Delta>) -> Result<(), LlmError> {
        if let Some(line) = self.lines.finish()? {
            self.line(&line, out)?;
        }
        if !self.seen_line {
            return Err(LlmError::Protocol("the response is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::decode_all;

    #[test]
    fn error_line_is_a_provider_error() {
        let wire = "{\"error\":\"model requires more system memory\"}\n";
        assert_eq!(
            decode_all(&mut OllamaDecoder::default(), wire),
            Err(LlmError::Provider(
                "model requires more system memory".into()
            ))
        );
    }

    #[test]
    fn thinking_field_content_and_final_counts() {
        let wire = concat!(
            "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"hm\"},\"done\":false}\n",
            "{\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"done\":false}\n",
            "{\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":2,\"eval_count\":5}",
        );
        let deltas = decode_all(&mut OllamaDecoder::default(), wire).unwrap();
        assert_eq!(
            deltas,
            [
                Delta::Reasoning("hm".into()),
                Delta::Content("ok".into()),
                Delta::Usage(Usage {
                    prompt_tokens: 2,
                    completion_tokens: 5,
                    reasoning_tokens: None
                }),
                Delta::Finish(FinishReason::Length),
            ]
        );
    }
}
