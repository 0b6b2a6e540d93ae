//! Every provider kind against the fake, one test per fake mode.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_provider::{FakeProvider, Reply, Scenario};
use futures::StreamExt;
use llm::{
    ChatMessage, ChatRequest, FinishReason, LlmError, ProviderKind, Role, StreamEvent,
    TimeoutPhase, Usage,
};

const DEFAULT_TEXT: &str = "Hello from the fake provider.";

#[tokio::test]
async fn normal_reply_streams_content_usage_and_stop() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("normal")))
                .await;
        assert_eq!(outcome.content, DEFAULT_TEXT, "{kind}");
        assert_eq!(outcome.reasoning, "", "{kind}");
        assert_eq!(
            outcome.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                reasoning_tokens: None
            }),
            "{kind}"
        );
        assert_eq!(
            outcome.end,
            StreamEvent::Finish(FinishReason::Stop),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn leading_think_block_becomes_reasoning() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("think")))
                .await;
        assert_eq!(
            outcome.reasoning, "The user greets me; greet back.",
            "{kind}"
        );
        assert_eq!(outcome.content, "Hello! <think> is just a tag.", "{kind}");
        assert_eq!(
            outcome.end,
            StreamEvent::Finish(FinishReason::Stop),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn think_tags_split_one_character_per_chunk() {
    let fake = FakeProvider::start().await;
    fake.set_scenario(Scenario::Reply(Reply {
        content: " <think>plan: 日本</think>\n\nanswer </think>".to_owned(),
        chunk_chars: 1,
        ..Reply::default()
    }));
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("custom")))
                .await;
        assert_eq!(outcome.reasoning, "plan: 日本", "{kind}");
        assert_eq!(outcome.content, "answer </think>", "{kind}");
    }
}

#[tokio::test]
async fn native_reasoning_fields_become_reasoning() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("reasoning")))
                .await;
        assert_eq!(
            outcome.reasoning, "Native reasoning, step by step.",
            "{kind}"
        );
        assert_eq!(outcome.content, DEFAULT_TEXT, "{kind}");
    }
}

#[tokio::test]
async fn length_limit_is_reported_as_length() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("truncated")))
                .await;
        assert_eq!(
            outcome.end,
            StreamEvent::Finish(FinishReason::Length),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn slow_first_byte_times_out() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let started = Instant::now();
        let outcome =
            collect(provider(&fake, kind, timeouts(200, 5000)).stream_chat(request("slow-10000")))
                .await;
        assert_eq!(
            outcome.error(),
            &LlmError::Timeout(TimeoutPhase::FirstByte),
            "{kind}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{kind}: gave up late"
        );
    }
}

#[tokio::test]
async fn slow_first_byte_within_the_limit_succeeds() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("slow-100")))
                .await;
        assert_eq!(outcome.content, DEFAULT_TEXT, "{kind}");
        assert_eq!(
            outcome.end,
            StreamEvent::Finish(FinishReason::Stop),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn stall_mid_stream_hits_the_idle_timeout_after_partial_content() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 200)).stream_chat(request("stall"))).await;
        assert_eq!(outcome.content, "Hello fr", "{kind}");
        assert_eq!(
            outcome.error(),
            &LlmError::Timeout(TimeoutPhase::Idle),
            "{kind}"
        );
    }
    // Giving up closed each stalled connection.
    tokio::time::timeout(TEST_BOUND, fake.wait_for_disconnects(3))
        .await
        .unwrap();
}

/// Multi-threaded: the fake must flush the partial stream before cutting on any runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_is_an_interrupted_stream() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("cut"))).await;
        assert_eq!(outcome.content, "Hello fr", "{kind}");
        assert!(
            matches!(outcome.error(), LlmError::Interrupted(_)),
            "{kind}: {:?}",
            outcome.end
        );
    }
}

#[tokio::test]
async fn error_statuses_carry_the_providers_message() {
    let fake = FakeProvider::start().await;
    let cases = [
        (401, "Incorrect API key provided."),
        (429, "Rate limit reached, retry later."),
        (
            500,
            "The server had an error while processing your request.",
        ),
    ];
    for kind in KINDS {
        for (status, message) in cases {
            let model = format!("status-{status}");
            let outcome =
                collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request(&model)))
                    .await;
            assert_eq!(
                outcome.error(),
                &LlmError::Upstream {
                    status,
                    message: message.to_owned()
                },
                "{kind}"
            );
            assert_eq!(outcome.content, "", "{kind}");
        }
    }
}

#[tokio::test]
async fn garbage_frame_is_a_protocol_error_after_the_valid_part() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("garbage")))
                .await;
        assert_eq!(outcome.content, "Hell", "{kind}");
        assert!(
            matches!(outcome.error(), LlmError::Protocol(_)),
            "{kind}: {:?}",
            outcome.end
        );
    }
    tokio::time::timeout(TEST_BOUND, fake.wait_for_disconnects(3))
        .await
        .unwrap();
}

#[tokio::test]
async fn non_streaming_answer_is_a_protocol_error_except_for_ollama() {
    let fake = FakeProvider::start().await;
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("plain")))
                .await;
        assert!(
            matches!(outcome.error(), LlmError::Protocol(_)),
            "{kind}: {:?}",
            outcome.end
        );
    }
    // A non-streamed Ollama answer is one NDJSON line: still a valid stream.
    let outcome = collect(
        provider(&fake, ProviderKind::Ollama, timeouts(5000, 5000)).stream_chat(request("plain")),
    )
    .await;
    assert_eq!(outcome.content, DEFAULT_TEXT);
    assert_eq!(outcome.end, StreamEvent::Finish(FinishReason::Stop));
}

#[tokio::test]
async fn bench_mode_delivers_every_token() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let outcome =
            collect(provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("bench-2000")))
                .await;
        assert_eq!(outcome.content, "tok ".repeat(2000), "{kind}");
        assert_eq!(
            outcome.usage.map(|u| u.completion_tokens),
            Some(2000),
            "{kind}"
        );
        assert_eq!(
            outcome.end,
            StreamEvent::Finish(FinishReason::Stop),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_upstream_request() {
    let fake = FakeProvider::start().await;
    for (i, kind) in KINDS.into_iter().enumerate() {
        let mut stream =
            provider(&fake, kind, timeouts(5000, 5000)).stream_chat(request("endless"));
        for _ in 0..3 {
            let event = stream.next().await.unwrap();
            assert!(
                matches!(event, StreamEvent::Content(_)),
                "{kind}: {event:?}"
            );
        }
        assert_eq!(fake.disconnects(), i, "{kind}: still streaming");
        let dropped = Instant::now();
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), fake.wait_for_disconnects(i + 1))
            .await
            .unwrap_or_else(|_| panic!("{kind}: upstream never saw the cancel"));
        assert!(
            dropped.elapsed() < Duration::from_millis(500),
            "{kind}: cancel took {:?}",
            dropped.elapsed()
        );
    }
    assert_eq!(fake.completed_streams(), 0);
}

fn full_request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages: vec![
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hi"),
            ChatMessage::new(Role::Assistant, "Hello"),
            ChatMessage::new(Role::User, "Again"),
        ],
        temperature: Some(1.5),
        top_p: Some(0.9),
        top_k: Some(40),
        max_tokens: Some(256),
        stop: vec!["END".to_owned()],
    }
}

#[tokio::test]
async fn openai_request_mapping() {
    let fake = FakeProvider::start().await;
    collect(
        provider(&fake, ProviderKind::OpenAi, timeouts(5000, 5000))
            .stream_chat(full_request("normal")),
    )
    .await;
    let sent = fake.last_request().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let body = &sent.body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["temperature"], 1.5);
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["stop"][0], "END");
    assert!(
        body.get("top_k").is_none(),
        "top_k is not an OpenAI parameter"
    );
}

#[tokio::test]
async fn anthropic_request_mapping() {
    let fake = FakeProvider::start().await;
    let anthropic = provider(&fake, ProviderKind::Anthropic, timeouts(5000, 5000));
    collect(anthropic.stream_chat(full_request("normal"))).await;
    let sent = fake.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(API_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert!(sent.header("authorization").is_none());
    let body = &sent.body;
    assert_eq!(body["system"], "Be brief.");
    let roles: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["temperature"], 1.0, "clamped to Anthropic's range");
    assert!(
        body.get("top_p").is_none(),
        "not sent together with temperature"
    );
    assert_eq!(body["top_k"], 40);
    assert_eq!(body["stop_sequences"][0], "END");
    assert_eq!(body["stream"], true);

    let mut minimal = request("normal");
    minimal.top_k = Some(0);
    collect(anthropic.stream_chat(minimal)).await;
    let body = fake.last_request().unwrap().body;
    assert_eq!(body["max_tokens"], 8192, "required field gets the default");
    assert!(body.get("system").is_none());
    assert!(body.get("top_k").is_none(), "top_k 0 means off");
}

#[tokio::test]
async fn ollama_request_mapping() {
    let fake = FakeProvider::start().await;
    collect(
        provider(&fake, ProviderKind::Ollama, timeouts(5000, 5000))
            .stream_chat(full_request("normal")),
    )
    .await;
    let sent = fake.last_request().unwrap();
    assert_eq!(sent.path, "/api/chat");
    let body = &sent.body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "system");
    let options = &body["options"];
    assert_eq!(options["temperature"], 1.5);
    assert_eq!(
        options["top_p"].as_f64().map(|p| (p * 100.0).round()),
        Some(90.0)
    );
    assert_eq!(options["top_k"], 40);
    assert_eq!(options["num_predict"], 256);
    assert_eq!(options["stop"][0], "END");
}

#[tokio::test]
async fn model_lists_in_each_format() {
    let fake = FakeProvider::start().await;
    let client = timeouts(5000, 5000);

    let openai = provider(&fake, ProviderKind::OpenAi, client)
        .list_models()
        .await
        .unwrap();
    let ids: Vec<_> = openai.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["fake-normal", "fake-vision"]);
    assert_eq!(fake.last_request().unwrap().path, "/v1/models");

    let anthropic = provider(&fake, ProviderKind::Anthropic, client)
        .list_models()
        .await
        .unwrap();
    assert_eq!(anthropic[0].id, "fake-normal");
    assert_eq!(anthropic[0].name, "Fake fake-normal");
    let sent = fake.last_request().unwrap();
    assert!(sent.path.starts_with("/v1/models"));
    assert_eq!(sent.header("x-api-key"), Some(API_KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));

    let ollama = provider(&fake, ProviderKind::Ollama, client)
        .list_models()
        .await
        .unwrap();
    assert_eq!(fake.last_request().unwrap().path, "/api/tags");
    assert_eq!(ollama[0].size, Some(1_000_000));
    assert!(!ollama[0].is_vision);
    assert!(ollama[1].is_vision, "a clip family marks a vision model");
    assert_eq!(ollama[0].description.as_deref(), Some("135M Q4_1"));
}

#[tokio::test]
async fn ping_reports_models_or_the_providers_error() {
    let fake = FakeProvider::start().await;
    for kind in KINDS {
        let report = provider(&fake, kind, timeouts(5000, 5000))
            .ping()
            .await
            .unwrap();
        assert_eq!(report.models_seen, 2, "{kind}");
    }
    fake.set_scenario(Scenario::Status {
        code: 401,
        message: "invalid x-api-key".to_owned(),
    });
    for kind in KINDS {
        let error = provider(&fake, kind, timeouts(5000, 5000))
            .ping()
            .await
            .unwrap_err();
        assert_eq!(
            error,
            LlmError::Upstream {
                status: 401,
                message: "invalid x-api-key".to_owned()
            },
            "{kind}"
        );
    }
    fake.set_scenario(Scenario::Garbage);
    for kind in KINDS {
        let error = provider(&fake, kind, timeouts(5000, 5000))
            .list_models()
            .await
            .unwrap_err();
        assert!(matches!(error, LlmError::Protocol(_)), "{kind}: {error:?}");
    }
    fake.set_scenario(Scenario::SlowFirstByte {
        delay: Duration::from_secs(10),
        reply: Reply::default(),
    });
    for kind in KINDS {
        let error = provider(&fake, kind, timeouts(200, 5000))
            .ping()
            .await
            .unwrap_err();
        assert_eq!(error, LlmError::Timeout(TimeoutPhase::FirstByte), "{kind}");
    }
}

#[tokio::test]
async fn unreachable_provider_is_a_connect_error() {
    // Bind then drop a listener: the port is free and nothing answers.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = local_client(timeouts(5000, 5000));
    let endpoint = llm::Endpoint {
        kind: ProviderKind::OpenAi,
        base_url: format!("http://127.0.0.1:{port}/v1").parse().unwrap(),
        api_key: None,
    };
    let outcome =
        collect(llm::provider_for(endpoint, &client).stream_chat(request("normal"))).await;
    assert!(
        matches!(outcome.error(), LlmError::Connect(_)),
        "{:?}",
        outcome.end
    );
}
