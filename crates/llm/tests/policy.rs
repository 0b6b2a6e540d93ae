//! R-PROV-5: refused addresses, both when a URL is checked and when a request actually connects.

mod common;

use common::*;
use fake_provider::FakeProvider;
use llm::{Endpoint, HttpClient, LlmError, ProviderKind, UrlPolicy, provider_for};
use url::Url;

fn url(text: &str) -> Url {
    text.parse().unwrap()
}

async fn refused(policy: UrlPolicy, text: &str) -> bool {
    match policy.check(&url(text)).await {
        Ok(()) => false,
        Err(LlmError::UrlRefused(_)) => true,
        Err(other) => panic!("{text}: unexpected {other:?}"),
    }
}

#[tokio::test]
async fn metadata_addresses_are_refused_even_when_private_is_allowed() {
    let open = UrlPolicy::new(true);
    for text in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[fe80::1]:8080/",
        "http://0.0.0.0:11434/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        assert!(refused(open, text).await, "{text}");
    }
}

#[tokio::test]
async fn loopback_depends_on_the_setting() {
    for text in [
        "http://127.0.0.1:11434",
        "http://[::1]:8000/v1",
        "http://10.0.0.5/",
        "http://localhost:11434/",
    ] {
        assert!(
            refused(UrlPolicy::new(false), text).await,
            "{text} refused by default"
        );
        assert!(
            !refused(UrlPolicy::new(true), text).await,
            "{text} allowed for local servers"
        );
    }
}

#[tokio::test]
async fn only_http_schemes() {
    for text in [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ] {
        assert!(refused(UrlPolicy::new(true), text).await, "{text}");
    }
}

fn endpoint_at(base: &str) -> Endpoint {
    Endpoint {
        kind: ProviderKind::Ollama,
        base_url: url(base),
        api_key: None,
    }
}

#[tokio::test]
async fn connecting_obeys_the_policy_for_names_and_literals() {
    let fake = FakeProvider::start().await;
    let port = fake.addr().port();
    let closed = HttpClient::new(UrlPolicy::new(false), timeouts(5000, 5000)).unwrap();
    // `localhost` goes through the resolver, the literal through the pre-send check.
    for base in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let provider = provider_for(endpoint_at(&base), &closed);
        let outcome = collect(provider.stream_chat(request("normal"))).await;
        assert!(
            matches!(outcome.error(), LlmError::UrlRefused(_)),
            "{base}: {:?}",
            outcome.end
        );
        assert!(
            matches!(provider.list_models().await, Err(LlmError::UrlRefused(_))),
            "{base}"
        );
    }
    assert_eq!(
        fake.request_count(),
        0,
        "nothing reached the refused address"
    );

    let open = HttpClient::new(UrlPolicy::new(true), timeouts(5000, 5000)).unwrap();
    for base in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let outcome =
            collect(provider_for(endpoint_at(&base), &open).stream_chat(request("normal"))).await;
        assert!(!outcome.content.is_empty(), "{base}: {:?}", outcome.end);
    }
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn metadata_literal_is_refused_before_any_connection() {
    let open = HttpClient::new(UrlPolicy::new(true), timeouts(5000, 5000)).unwrap();
    let provider = provider_for(endpoint_at("http://169.254.169.254"), &open);
    let outcome = collect(provider.stream_chat(request("normal"))).await;
    assert!(
        matches!(outcome.error(), LlmError::UrlRefused(_)),
        "{:?}",
        outcome.end
    );
}
