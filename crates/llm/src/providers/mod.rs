//! One [`ChatProvider`] per provider kind, over shared plumbing for URLs, keys and error bodies.

mod anthropic;
mod ollama;
mod openai;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::stream::BoxStream;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use crate::{
    ChatRequest, Endpoint, HttpClient, LlmError, PingReport, ProviderKind, RemoteModel,
    StreamEvent, TimeoutPhase,
};

/// The strategy the server holds per provider row (R-LLM-1).
#[async_trait]
pub trait ChatProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// Streams one answer. Never fails outright: every problem arrives as the stream's final
    /// [`StreamEvent::Error`]. Dropping the stream aborts the upstream request.
    fn stream_chat(&self, req: ChatRequest) -> BoxStream<'static, StreamEvent>;

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError>;

    /// "Test connection": the model list is the cheapest authenticated call every kind has.
    async fn ping(&self) -> Result<PingReport, LlmError> {
        let started = Instant::now();
        let models = self.list_models().await?;
        Ok(PingReport {
            latency_ms: started.elapsed().as_millis() as u64,
            models_seen: models.len(),
        })
    }
}

/// The HTTP client for a remote provider. [`ProviderKind::Local`] has no endpoint: the server
/// builds `local::LocalProvider` for it, and asking here gets a provider that says so.
pub fn provider_for(endpoint: Endpoint, client: &HttpClient) -> Arc<dyn ChatProvider> {
    let upstream = Upstream {
        client: client.clone(),
        base_url: endpoint.base_url,
        api_key: endpoint.api_key,
    };
    match endpoint.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi { upstream }),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic { upstream }),
        ProviderKind::Ollama => Arc::new(ollama::Ollama { upstream }),
        ProviderKind::Local => Arc::new(NotAnEndpoint),
    }
}

struct NotAnEndpoint;

#[async_trait]
impl ChatProvider for NotAnEndpoint {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn stream_chat(&self, _req: ChatRequest) -> BoxStream<'static, StreamEvent> {
        crate::stream::failed(Self::error())
    }

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError> {
        Err(Self::error())
    }
}

impl NotAnEndpoint {
    fn error() -> LlmError {
        LlmError::InvalidRequest("local models are served by the built-in engine, not over HTTP".into())
    }
}

/// Error bodies are read only this far: enough for any provider's message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct Upstream {
    client: HttpClient,
    base_url: Url,
    api_key: Option<SecretString>,
}

impl Upstream {
    /// `{base}{path}`, tolerating a trailing slash and, for APIs whose paths carry their own
    /// version prefix, a base that already ends with it (`https://api.anthropic.com/v1`).
    fn url(&self, path: &str, strip_suffix: Option<&str>) -> Result<Url, LlmError> {
        let mut url = self.base_url.clone();
        let mut base_path = self.base_url.path().trim_end_matches('/');
        if let Some(suffix) = strip_suffix {
            base_path = base_path.strip_suffix(suffix).unwrap_or(base_path);
        }
        url.set_path(&format!("{base_path}{path}"));
        self.client.policy().check_literal(&url)?;
        Ok(url)
    }

    fn key(&self) -> Option<&str> {
        self.api_key
            .as_ref()
            .map(|k| k.expose_secret())
            .filter(|k| !k.is_empty())
    }

    /// A header value carrying the key, marked sensitive so no layer below prints it.
    fn secret_header(&self, prefix: &str) -> Result<Option<HeaderValue>, LlmError> {
        let Some(key) = self.key() else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&format!("{prefix}{key}")).map_err(|_| {
            LlmError::InvalidRequest(
                "the API key contains characters not allowed in a header".into(),
            )
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Providers sometimes echo what they were sent; the key must not reach users or logs.
    fn redact(&self, text: String) -> String {
        match self.key() {
            Some(key) => text.replace(key, "[redacted]"),
            None => text,
        }
    }

    /// Sends and turns an HTTP error status into [`LlmError::Upstream`] with the provider's text.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
        let mut response = request.send().await.map_err(LlmError::from_transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut body = Vec::new();
        let idle = self.client.timeouts().idle;
        while body.len() < ERROR_BODY_LIMIT {
            match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let message = self.redact(upstream_message(status, &body));
        tracing::warn!(status = status.as_u16(), %message, "provider returned an error status");
        Err(LlmError::Upstream {
            status: status.as_u16(),
            message,
        })
    }

    /// A non-streaming JSON call (model lists), bounded by the first-byte and idle timeouts.
    async fn get_json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, LlmError> {
        let timeouts = self.client.timeouts();
        let response = tokio::time::timeout(timeouts.first_byte, self.send(request))
            .await
            .map_err(|_| LlmError::Timeout(TimeoutPhase::FirstByte))??;
        let body = tokio::time::timeout(timeouts.idle, response.bytes())
            .await
            .map_err(|_| LlmError::Timeout(TimeoutPhase::Idle))?
            .map_err(|e| LlmError::Interrupted(e.without_url().to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|e| LlmError::Protocol(format!("unexpected model list: {e}")))
    }
}

/// The provider's own error text: `{"error":{"message":…}}` (OpenAI, Anthropic), `{"error":"…"}`
/// (Ollama), `{"message":…}` or `{"detail":…}` (assorted servers), else the start of the body.
fn upstream_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| {
            let text =
                |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
            match json.get("error") {
                Some(serde_json::Value::String(message)) => Some(message.clone()),
                Some(error) => text(error.get("message")),
                None => text(json.get("message")).or_else(|| text(json.get("detail"))),
            }
        });
    let message = from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        text.trim().chars().take(300).collect()
    });
    if message.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn error_text_from_each_provider_shape() {
        let cases: [(&str, &str); 5] = [
            (
                r#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#,
                "bad key",
            ),
            (
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                "slow down",
            ),
            (r#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
            (r#"{"detail":"nope"}"#, "nope"),
            ("plain text failure", "plain text failure"),
        ];
        for (body, expected) in cases {
            assert_eq!(
                upstream_message(StatusCode::BAD_REQUEST, body.as_bytes()),
                expected
            );
        }
        assert_eq!(
            upstream_message(StatusCode::BAD_GATEWAY, b""),
            "Bad Gateway"
        );
    }
}
