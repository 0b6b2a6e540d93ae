//! Local models — base GGUF files and LoRA adapters on top of them — served in-process by the
//! engine behind the same [`ChatProvider`] trait as remote providers, so the playground and the
//! comparison stream, measure and store them exactly like any other model (R-MODEL-1, #7).
//!
//! Loading a model costs seconds and hundreds of megabytes, so loaded models are kept in a small
//! least-recently-used pool shared by every request. Generation is CPU-bound: a semaphore admits
//! as many concurrent generations as the pool is configured for, and the rest queue (their wait
//! shows up honestly in the time to first token).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use llm::{
    ChatProvider, ChatRequest, FinishReason, LlmError, ProviderKind, RemoteModel, StreamEvent,
    ThinkSplitter, Usage,
};
use tokio::sync::{OnceCell, Semaphore, mpsc};

/// One model the caller may use: a registry row resolved to files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// The registry name, which is also the `model_id` of model configs.
    pub name: String,
    pub display_name: String,
    pub base_path: PathBuf,
    /// A PEFT adapter directory applied on top of the base.
    pub adapter_path: Option<PathBuf>,
}

impl LocalModel {
    /// The registry row's own files: the adapter folder, or the base file.
    fn own_path(&self) -> &Path {
        self.adapter_path.as_deref().unwrap_or(&self.base_path)
    }
}

/// Bytes on disk: the file, or every file of an adapter directory.
pub fn size_on_disk(path: &Path) -> Option<i64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len() as i64);
    }
    let entries = std::fs::read_dir(path).ok()?;
    Some(entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len() as i64).sum())
}

/// The catalog as a provider model list. Sizes are read from disk here, only when listing, not
/// on every chat request.
pub fn remote_models(catalog: &[LocalModel]) -> Vec<RemoteModel> {
    catalog
        .iter()
        .map(|m| RemoteModel {
            id: m.name.clone(),
            name: m.display_name.clone(),
            size: size_on_disk(m.own_path()),
            is_vision: false,
            description: Some(match &m.adapter_path {
                Some(_) => "LoRA adapter served by the built-in engine".to_owned(),
                None => "GGUF model served by the built-in engine".to_owned(),
            }),
        })
        .collect()
}

type Key = (PathBuf, Option<PathBuf>);
type Slot = Arc<OnceCell<Arc<engine::Model>>>;

/// Loaded models, shared by every request of the process.
pub struct Engines {
    capacity: usize,
    /// Most recently used last. A slot is inserted before its model loads, so concurrent first
    /// requests for one model wait for a single load instead of each starting their own.
    loaded: Mutex<Vec<(Key, Slot)>>,
    generations: Arc<Semaphore>,
    default_max_tokens: usize,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl Engines {
    /// `capacity` models stay loaded; `concurrency` generations run at once.
    pub fn new(capacity: usize, concurrency: usize, default_max_tokens: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            loaded: Mutex::new(Vec::new()),
            generations: Arc::new(Semaphore::new(concurrency.max(1))),
            default_max_tokens: default_max_tokens.max(1),
        }
    }

    fn slot(&self, key: &Key) -> Slot {
        let mut loaded = self.loaded.lock().expect("engine pool lock");
        if let Some(i) = loaded.iter().position(|(k, _)| k == key) {
            let entry = loaded.remove(i);
            let slot = entry.1.clone();
            loaded.push(entry);
            return slot;
        }
        if loaded.len() >= self.capacity {
            // Requests still generating keep their Arc; the memory goes when they finish.
            loaded.remove(0);
        }
        let slot = Slot::default();
        loaded.push((key.clone(), slot.clone()));
        slot
    }

    fn forget(&self, key: &Key) {
        self.loaded.lock().expect("engine pool lock").retain(|(k, _)| k != key);
    }

    async fn get(&self, model: &LocalModel) -> Result<Arc<engine::Model>, LlmError> {
        let key = (model.base_path.clone(), model.adapter_path.clone());
        let slot = self.slot(&key);
        let loaded = slot
            .get_or_try_init(|| async {
                let (base, adapter) = key.clone();
                tokio::task::spawn_blocking(move || {
                    let options = engine::LoadOptions { adapter, ..Default::default() };
                    engine::Model::load(&base, &options).map(Arc::new)
                })
                .await
                .map_err(|e| LlmError::Provider(format!("model loader crashed: {e}")))?
                .map_err(|e| LlmError::Provider(format!("cannot load local model {:?}: {e}", model.name)))
            })
            .await
            .cloned();
        if loaded.is_err() {
            // A file fixed on disk should load on the next try.
            self.forget(&key);
        }
        loaded
    }
}

/// The `local` provider for one caller: the models they may use, served by the shared pool.
pub struct LocalProvider {
    engines: Arc<Engines>,
    catalog: Vec<LocalModel>,
}

impl LocalProvider {
    pub fn new(engines: Arc<Engines>, catalog: Vec<LocalModel>) -> Self {
        Self { engines, catalog }
    }
}

#[async_trait]
impl ChatProvider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn stream_chat(&self, req: ChatRequest) -> BoxStream<'static, StreamEvent> {
        let Some(model) = self.catalog.iter().find(|m| m.name == req.model).cloned() else {
            let error = LlmError::InvalidRequest(format!("no local model named {:?}", req.model));
            return stream::iter([StreamEvent::Error(error)]).boxed();
        };
        // Small: a full channel only means the client reads slower than the model writes.
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(serve(self.engines.clone(), model, req, tx));
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|event| (event, rx)) }).boxed()
    }

    async fn list_models(&self) -> Result<Vec<RemoteModel>, LlmError> {
        Ok(remote_models(&self.catalog))
    }
}

async fn serve(engines: Arc<Engines>, model: LocalModel, req: ChatRequest, tx: mpsc::Sender<StreamEvent>) {
    let Ok(permit) = engines.generations.clone().acquire_owned().await else { return };
    if tx.is_closed() {
        return; // the client left while queued
    }
    let loaded = match engines.get(&model).await {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = tx.send(StreamEvent::Error(error)).await;
            return;
        }
    };
    let params = generation_params(&req, engines.default_max_tokens);
    let finished = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        generate_blocking(&loaded, &req, &params, &tx)
    })
    .await;
    if let Err(e) = finished {
        tracing::error!(error = %e, model = %model.name, "local generation panicked");
    }
}

fn generation_params(req: &ChatRequest, default_max_tokens: usize) -> engine::GenerationParams {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    engine::GenerationParams {
        max_tokens: req.max_tokens.map(|n| n as usize).unwrap_or(default_max_tokens),
        sampling: engine::SamplingParams {
            temperature: req.temperature.map(f64::from).unwrap_or(0.7),
            top_p: req.top_p.map(f64::from).unwrap_or(1.0),
            top_k: req.top_k.map(|k| k as usize).unwrap_or(0),
            seed,
        },
        stop: req.stop.clone(),
    }
}

/// Runs on a blocking thread. A closed channel (the client stopped or left) cancels the engine
/// between two tokens.
fn generate_blocking(
    model: &engine::Model,
    req: &ChatRequest,
    params: &engine::GenerationParams,
    tx: &mpsc::Sender<StreamEvent>,
) {
    let send = |event: StreamEvent| tx.blocking_send(event).is_ok();
    let messages: Vec<engine::ChatMessage> =
        req.messages.iter().map(|m| engine::ChatMessage::new(m.role.as_str(), m.content.clone())).collect();
    let prompt = match model.chat_prompt_ids(&messages) {
        Ok(prompt) => prompt,
        Err(e) => {
            send(StreamEvent::Error(LlmError::InvalidRequest(e.to_string())));
            return;
        }
    };
    let context = model.config().context_length;
    if prompt.len() >= context {
        send(StreamEvent::Error(LlmError::InvalidRequest(format!(
            "the conversation is {} tokens, the model's context is {context}",
            prompt.len()
        ))));
        return;
    }
    let cancel = AtomicBool::new(false);
    let mut splitter = ThinkSplitter::new();
    let forward = |split: llm::think::Split| {
        let mut ok = true;
        if !split.reasoning.is_empty() {
            ok &= send(StreamEvent::Reasoning(split.reasoning));
        }
        if !split.answer.is_empty() {
            ok &= send(StreamEvent::Content(split.answer));
        }
        ok
    };
    let generated = model.generate(&prompt, params, Some(&cancel), &mut |delta| {
        if !forward(splitter.push(delta)) {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    match generated {
        Ok(generation) => {
            if generation.finish_reason == engine::FinishReason::Cancelled {
                return; // nobody is listening
            }
            forward(splitter.finish());
            let eos = matches!(generation.finish_reason, engine::FinishReason::Eos) as usize;
            send(StreamEvent::Usage(Usage {
                prompt_tokens: generation.prompt_ids.len() as u32,
                completion_tokens: generation.ids.len().saturating_sub(eos) as u32,
                reasoning_tokens: None,
            }));
            send(StreamEvent::Finish(match generation.finish_reason {
                engine::FinishReason::Length => FinishReason::Length,
                _ => FinishReason::Stop,
            }));
        }
        Err(e) => {
            send(StreamEvent::Error(LlmError::Provider(e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, base: &str) -> LocalModel {
        LocalModel {
            name: name.into(),
            display_name: name.into(),
            base_path: base.into(),
            adapter_path: None,
        }
    }

    #[test]
    fn the_pool_evicts_the_least_recently_used_model() {
        let engines = Engines::new(2, 1, 16);
        let key = |p: &str| (PathBuf::from(p), None);
        let a = engines.slot(&key("a"));
        engines.slot(&key("b"));
        assert!(Arc::ptr_eq(&a, &engines.slot(&key("a"))), "a is reused");
        engines.slot(&key("c")); // evicts b, the least recently used
        let keys: Vec<_> = engines.loaded.lock().unwrap().iter().map(|(k, _)| k.0.clone()).collect();
        assert_eq!(keys, [PathBuf::from("a"), PathBuf::from("c")]);
    }

    #[tokio::test]
    async fn an_unknown_model_is_an_error_event_not_a_panic() {
        let provider = LocalProvider::new(Arc::new(Engines::new(1, 1, 16)), vec![model("known", "/nope.gguf")]);
        let events: Vec<_> = provider.stream_chat(ChatRequest { model: "other".into(), ..Default::default() }).collect().await;
        assert!(matches!(&events[..], [StreamEvent::Error(LlmError::InvalidRequest(m))] if m.contains("other")));
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_event_and_is_retried_later() {
        let engines = Arc::new(Engines::new(1, 1, 16));
        let provider = LocalProvider::new(engines.clone(), vec![model("gone", "/definitely/not/here.gguf")]);
        let events: Vec<_> = provider.stream_chat(ChatRequest { model: "gone".into(), ..Default::default() }).collect().await;
        assert!(matches!(&events[..], [StreamEvent::Error(LlmError::Provider(m))] if m.contains("gone")), "{events:?}");
        assert!(engines.loaded.lock().unwrap().is_empty(), "a failed load is not cached");
    }
}
