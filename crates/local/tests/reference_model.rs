//! The local provider over the real reference model: the same event contract as remote providers.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llm::{ChatMessage, ChatProvider, ChatRequest, FinishReason, Role, StreamEvent};
use local::{Engines, LocalModel, LocalProvider};

fn model_path() -> PathBuf {
    let path = std::env::var_os("WORKBENCH_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    assert!(path.is_file(), "reference model not found at {}: run scripts/fetch-model.sh", path.display());
    path
}

fn provider(engines: Arc<Engines>) -> LocalProvider {
    let base = LocalModel {
        name: "smollm2".into(),
        display_name: "SmolLM2".into(),
        base_path: model_path(),
        adapter_path: None,
    };
    LocalProvider::new(engines, vec![base])
}

fn request(max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: "smollm2".into(),
        messages: vec![ChatMessage::new(Role::User, "What is the capital of France?")],
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_content_then_usage_then_finish() {
    let provider = provider(Arc::new(Engines::new(1, 1, 64)));
    let events: Vec<_> = provider.stream_chat(request(12)).collect().await;
    let text: String = events.iter().filter_map(|e| match e { StreamEvent::Content(t) => Some(t.as_str()), _ => None }).collect();
    assert!(text.trim().len() > 3, "greedy answer: {text:?}");
    let tail = &events[events.len() - 2..];
    match tail {
        [StreamEvent::Usage(usage), StreamEvent::Finish(reason)] => {
            assert!(usage.prompt_tokens > 10, "{usage:?}");
            assert!((1..=12).contains(&usage.completion_tokens), "{usage:?}");
            assert!(matches!(reason, FinishReason::Stop | FinishReason::Length));
        }
        other => panic!("stream must end with usage then finish: {other:?}"),
    }
    let listed = provider.list_models().await.unwrap();
    assert_eq!(listed[0].id, "smollm2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_generation_and_frees_the_slot() {
    let engines = Arc::new(Engines::new(1, 1, 64));
    let provider = provider(engines.clone());
    let mut stream = provider.stream_chat(request(2000));
    // First token: the model is loaded and decoding.
    loop {
        match stream.next().await.expect("stream ended early") {
            StreamEvent::Content(_) => break,
            StreamEvent::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    drop(stream);
    // The single generation permit comes back only when the engine has stopped; a second
    // request then gets its first token quickly instead of waiting for 2000 tokens.
    let started = Instant::now();
    let mut second = provider.stream_chat(request(1));
    let first = tokio::time::timeout(Duration::from_secs(20), second.next()).await.expect("second request starved");
    assert!(matches!(first, Some(StreamEvent::Content(_))), "{first:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}
