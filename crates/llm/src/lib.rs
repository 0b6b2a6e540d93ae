//! The LLM client layer: one [`ChatProvider`] trait with an implementation per provider kind, all
//! streaming the same [`StreamEvent`]s, so the server measures and stores every provider the same
//! way (R-LLM-1..3). Outbound requests obey a [`UrlPolicy`] (R-PROV-5).

mod client;
mod error;
mod policy;
mod providers;
mod stream;
mod types;

pub mod ndjson;
pub mod sse;
pub mod think;

pub use client::{HttpClient, Timeouts};
pub use error::{LlmError, TimeoutPhase};
pub use policy::UrlPolicy;
pub use providers::{ChatProvider, provider_for};
pub use think::ThinkSplitter;
pub use types::{
    ChatMessage, ChatRequest, Endpoint, FinishReason, PingReport, ProviderKind, RemoteModel, Role,
    StreamEvent, Usage,
};
