use std::time::Duration;

use crate::{LlmError, UrlPolicy};

/// Limits that keep a hung provider from holding a chat open forever (R-LLM-3). `first_byte` runs
/// from sending the request to the first body byte, which covers a model's prompt processing;
/// `idle` is the longest gap allowed between later chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// The one outbound HTTP client for providers: connection pool, URL policy in its DNS resolver,
/// timeouts. Cheap to clone; build a new one when the admin changes the private-URL setting.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pub(crate) inner: reqwest::Client,
    policy: UrlPolicy,
    timeouts: Timeouts,
}

impl HttpClient {
    pub fn new(policy: UrlPolicy, timeouts: Timeouts) -> Result<Self, LlmError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .dns_resolver(policy.resolver())
            // A redirect or a proxy would pick the address past the policy; providers need neither.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .user_agent(concat!("llm-workbench/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Connect(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpClient {
            inner,
            policy,
            timeouts,
        })
    }

    pub fn policy(&self) -> UrlPolicy {
        self.policy
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}
