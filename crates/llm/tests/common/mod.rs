#![allow(dead_code)]

use std::time::Duration;

use fake_provider::FakeProvider;
use futures::StreamExt;
use futures::stream::BoxStream;
use llm::{
    ChatMessage, ChatProvider, ChatRequest, Endpoint, HttpClient, LlmError, ProviderKind, Role,
    StreamEvent, Timeouts, UrlPolicy, Usage, provider_for,
};
use secrecy::SecretString;

pub const KINDS: [ProviderKind; 3] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Ollama,
];
pub const API_KEY: &str = "sk-test-3f9c1a7be2d54e0b";
/// Upper bound for any single test stream; the assertions are about what happens well before.
pub const TEST_BOUND: Duration = Duration::from_secs(20);

pub fn timeouts(first_byte_ms: u64, idle_ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_millis(first_byte_ms),
        idle: Duration::from_millis(idle_ms),
    }
}

pub fn local_client(timeouts: Timeouts) -> HttpClient {
    HttpClient::new(UrlPolicy::new(true), timeouts).unwrap()
}

pub fn base_url(fake: &FakeProvider, kind: ProviderKind) -> String {
    match kind {
        ProviderKind::OpenAi => fake.openai_base_url(),
        _ => fake.base_url(),
    }
}

pub fn endpoint(fake: &FakeProvider, kind: ProviderKind) -> Endpoint {
    Endpoint {
        kind,
        base_url: base_url(fake, kind).parse().unwrap(),
        api_key: Some(SecretString::from(API_KEY)),
    }
}

pub fn provider(
    fake: &FakeProvider,
    kind: ProviderKind,
    timeouts: Timeouts,
) -> std::sync::Arc<dyn ChatProvider> {
    provider_for(endpoint(fake, kind), &local_client(timeouts))
}

pub fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages: vec![ChatMessage::new(Role::User, "Hi")],
        ..ChatRequest::default()
    }
}

/// A finished stream, checked for the one-terminal-event rule.
#[derive(Debug)]
pub struct Outcome {
    pub reasoning: String,
    pub content: String,
    pub content_events: usize,
    pub usage: Option<Usage>,
    pub end: StreamEvent,
}

impl Outcome {
    pub fn error(&self) -> &LlmError {
        match &self.end {
            StreamEvent::Error(error) => error,
            other => panic!("expected an error, stream ended with {other:?}"),
        }
    }
}

pub async fn collect(mut stream: BoxStream<'static, StreamEvent>) -> Outcome {
    let events = tokio::time::timeout(TEST_BOUND, async {
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.push(event);
        }
        events
    })
    .await
    .expect("stream must end");
    let terminal: Vec<_> = events.iter().filter(|e| e.is_terminal()).collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal event: {events:?}");
    assert!(
        events.last().unwrap().is_terminal(),
        "terminal event last: {events:?}"
    );
    let mut outcome = Outcome {
        reasoning: String::new(),
        content: String::new(),
        content_events: 0,
        usage: None,
        end: events.last().unwrap().clone(),
    };
    for event in events {
        match event {
            StreamEvent::Reasoning(text) => outcome.reasoning += &text,
            StreamEvent::Content(text) => {
                outcome.content += &text;
                outcome.content_events += 1;
            }
            StreamEvent::Usage(usage) => outcome.usage = Some(usage),
            _ => {}
        }
    }
    outcome
}
