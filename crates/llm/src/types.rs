use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::LlmError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, DeepSeek, vLLM, llama.cpp server, LM Studio, Ollama's /v1.
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    /// Ollama's native NDJSON API, which reports model sizes and thinking separately.
    Ollama,
    /// GGUF models served in-process by the engine (crate `local`); never an HTTP endpoint.
    Local,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Local => "local",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "ollama" => Ok(ProviderKind::Ollama),
            "local" => Ok(ProviderKind::Local),
            other => Err(LlmError::InvalidRequest(format!(
                "unknown provider kind {other:?}"
            ))),
        }
    }
}

/// Where and how to reach one provider. The key stays a [`SecretString`] until the moment it is
/// written into a (sensitive-marked) header.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub kind: ProviderKind,
    pub base_url: Url,
    pub api_key: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Sampling parameters are optional so each provider keeps its own default when unset; a `top_k`
/// of 0 means "off", as in model configs, and is not sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
}

impl ChatRequest {
    pub(crate) fn effective_top_k(&self) -> Option<u32> {
        self.top_k.filter(|&k| k > 0)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub reasoning_tokens: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Other(String),
}

impl FinishReason {
    pub(crate) fn from_provider(reason: &str) -> Self {
        match reason {
            "stop" | "end_turn" | "stop_sequence" | "eos" => FinishReason::Stop,
            "length" | "max_tokens" | "model_length" => FinishReason::Length,
            other => FinishReason::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Other(reason) => reason,
        }
    }
}

/// One step of a streamed answer. A stream always ends with exactly one `Finish` or one `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Reasoning(String),
    Content(String),
    Usage(Usage),
    Finish(FinishReason),
    Error(LlmError),
}

impl StreamEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Finish(_) | StreamEvent::Error(_))
    }
}

/// A model as the provider lists it, before it becomes a `provider_models` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteModel {
    pub id: String,
    pub name: String,
    /// Bytes on disk, where the provider says (Ollama).
    pub size: Option<i64>,
    pub is_vision: bool,
    pub description: Option<String>,
}

/// The answer to "test connection".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReport {
    pub latency_ms: u64,
    pub models_seen: usize,
}
