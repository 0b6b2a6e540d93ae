use std::fmt;

/// Everything that can go wrong talking to a provider. Messages are shown to users, so they carry
/// the provider's own words and never a secret: API keys are scrubbed from upstream text before it
/// gets here, and transport errors are rendered without URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("provider URL refused: {0}")]
    UrlRefused(String),
    #[error("cannot connect to provider: {0}")]
    Connect(String),
    #[error("provider timed out waiting for {0}")]
    Timeout(TimeoutPhase),
    /// The provider answered with an HTTP error status.
    #[error("provider returned HTTP {status}: {message}")]
    Upstream { status: u16, message: String },
    /// The provider reported an error inside a stream that had started successfully.
    #[error("provider error: {0}")]
    Provider(String),
    /// The provider sent something that is not its documented wire format.
    #[error("malformed response from provider: {0}")]
    Protocol(String),
    /// The response body broke off before the provider said it was complete.
    #[error("provider stream interrupted: {0}")]
    Interrupted(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "the connection",
            TimeoutPhase::FirstByte => "the first byte",
            TimeoutPhase::Idle => "the next chunk",
        })
    }
}

impl LlmError {
    /// Maps a transport error. The URL is dropped from the message: it is the admin's
    /// configuration, not something to echo into chat transcripts.
    pub(crate) fn from_transport(err: reqwest::Error) -> Self {
        if let Some(refused) = find_source::<crate::policy::AddressRefused>(&err) {
            return LlmError::UrlRefused(refused.to_string());
        }
        if err.is_timeout() {
            return LlmError::Timeout(TimeoutPhase::Connect);
        }
        let is_connect = err.is_connect() || err.is_request();
        let message = error_chain(&err.without_url());
        if is_connect {
            LlmError::Connect(message)
        } else {
            LlmError::Interrupted(message)
        }
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// "outer: inner: root" — reqwest's own Display hides the useful root cause.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
