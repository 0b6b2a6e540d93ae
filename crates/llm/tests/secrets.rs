//! The API key never reaches an error message or a log line, even when the provider echoes it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use fake_provider::{FakeProvider, Scenario};
use llm::{Endpoint, LlmError, ProviderKind, StreamEvent, provider_for};
use secrecy::SecretString;

#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_key(text: &str, what: &str) {
    assert!(
        !text.contains(API_KEY),
        "{what} contains the API key: {text}"
    );
}

#[tokio::test]
async fn key_is_absent_from_errors_and_logs() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .init();

    let fake = FakeProvider::start().await;
    // A provider that echoes the key back in its error body.
    fake.set_scenario(Scenario::Status {
        code: 401,
        message: format!("Incorrect API key provided: {API_KEY}. Check it."),
    });
    let mut errors: Vec<LlmError> = Vec::new();
    for kind in KINDS {
        let provider = provider(&fake, kind, timeouts(5000, 5000));
        let outcome = collect(provider.stream_chat(request("custom"))).await;
        let StreamEvent::Error(error) = outcome.end else {
            panic!("{kind}: expected an error")
        };
        assert_eq!(
            error,
            LlmError::Upstream {
                status: 401,
                message: "Incorrect API key provided: [redacted]. Check it.".to_owned()
            },
            "{kind}"
        );
        errors.push(error);
        errors.push(provider.ping().await.unwrap_err());
    }
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("garbage")))
                .await;
        errors.push(outcome.error().clone());
    }
    // Connection refused and URL-policy errors carry the URL's parts, never the key.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for base in [
        format!("http://127.0.0.1:{port}"),
        "http://169.254.169.254".to_owned(),
    ] {
        let endpoint = Endpoint {
            kind: ProviderKind::OpenAi,
            base_url: base.parse().unwrap(),
            api_key: Some(SecretString::from(API_KEY)),
        };
        let outcome = collect(
            provider_for(endpoint.clone(), &local_client(timeouts(5000, 5000)))
                .stream_chat(request("x")),
        )
        .await;
        errors.push(outcome.error().clone());
        assert_no_key(&format!("{endpoint:?}"), "Endpoint's Debug");
    }

    assert_eq!(errors.len(), 11);
    for error in &errors {
        assert_no_key(&error.to_string(), "an error's Display");
        assert_no_key(&format!("{error:?}"), "an error's Debug");
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("provider returned an error status"),
        "logs were captured: {logs}"
    );
    assert_no_key(&logs, "the logs");
}
