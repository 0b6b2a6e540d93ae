//! A local stand-in for LLM providers, speaking the real wire formats of OpenAI-compatible APIs
//! (SSE), Anthropic Messages (typed SSE events) and Ollama (NDJSON), with the failure modes a
//! client must survive. Used by the tests of `llm` and the server, and by benchmarks.
//!
//! A request's behaviour comes from its model name when that names a [`Scenario`]
//! (`Scenario::from_model`), otherwise from the scenario set on the handle.

mod scenario;
mod server;
mod wire;

pub use scenario::{Reply, Scenario};
pub use server::{FakeModel, FakeProvider, RecordedRequest};
pub use wire::Wire;

#[derive(Debug, thiserror::Error)]
pub enum FakeProviderError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
