//! The model engine: llama-family GGUF models on candle (CPU), their embedded tokenizer and chat
//! template, streaming generation, and PEFT-compatible LoRA adapters and training.
//!
//! [`Model`] bundles what a caller needs; the modules expose the parts for finer control.
//!
//! Numerics, and why there are two weight formats:
//! - [`WeightFormat::Quantized`] (generation default) keeps GGUF weights quantized, multiplies
//!   them by activations quantized to 8 bits with llama.cpp's rounding, and computes norms,
//!   rotary embeddings, attention and SwiGLU with llama.cpp's f16 conversions and summation
//!   orders (`ggml.rs`): logits equal llama.cpp's (x86-64 CPU build) bit for bit, and so do
//!   greedy outputs.
//! - [`WeightFormat::F32`] dequantizes once and computes in f32: what PyTorch + PEFT compute on
//!   the same file (logits agree to ~1e-4), and what the LoRA trainer differentiates through.
//! - A LoRA adapter runs unmerged beside quantized weights (requantizing would drown a small
//!   update) and may be merged into f32 weights ([`LoadOptions::merge_adapter`]).
//! - Weights stay in GGUF's q/k row order (interleaved rotary pairs); adapters are converted
//!   from and to Hugging Face order at the file boundary ([`lora`]).

pub mod chat;
pub mod config;
pub mod dataset;
pub mod error;
pub mod generate;
mod exp;
mod ggml;
pub mod lora;
pub mod model;
mod kernels;
pub mod sampling;
mod sgemm;
pub mod tokenizer;
pub mod train;
mod train_attention;
mod train_ops;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

pub use chat::{ChatMessage, ChatTemplate};
pub use config::ModelConfig;
pub use dataset::{RecordError, TokenCounter, check_record};
pub use error::{EngineError, Result};
pub use generate::{FinishReason, Generation, GenerationParams, generate};
pub use lora::{AdapterConfig, load_adapter, save_adapter};
pub use model::{KvCache, Llama, Projection, WeightFormat};
pub use sampling::SamplingParams;
pub use tokenizer::{Tokenizer, Utf8Stream};
pub use train::{
    DatasetFormat, LrSchedule, TrainConfig, TrainReport, TrainStep, TrainingExample, load_dataset,
    train,
};

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub format: WeightFormat,
    /// A PEFT adapter directory to apply at load.
    pub adapter: Option<PathBuf>,
    /// Fold the adapter into the base weights (only possible with [`WeightFormat::F32`]);
    /// otherwise it runs beside them.
    pub merge_adapter: bool,
}

/// A loaded model with its tokenizer and chat template: what the CLI and server hold.
#[derive(Debug)]
pub struct Model {
    pub llama: Llama,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub adapter: Option<AdapterConfig>,
    pub path: PathBuf,
}

impl Model {
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        let (mut llama, content) = Llama::load(path, options.format)?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let token_text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id)).unwrap_or_default().to_string()
        };
        let chat_template = match content.metadata.get("tokenizer.chat_template") {
            Some(v) => {
                let source = v.to_string().map_err(|_| {
                    EngineError::Metadata("tokenizer.chat_template is not a string".into())
                })?;
                Some(ChatTemplate::new(
                    source,
                    &token_text(tokenizer.bos_token_id),
                    &token_text(tokenizer.eos_token_id),
                )?)
            }
            None => None,
        };
        let adapter = match &options.adapter {
            Some(dir) => {
                let cfg = load_adapter(&mut llama, dir)?;
                if options.merge_adapter {
                    llama.merge_lora()?;
                }
                Some(cfg)
            }
            None => None,
        };
        Ok(Self { llama, tokenizer, chat_template, adapter, path: path.to_path_buf() })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.llama.config
    }

    pub fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
        self.tokenizer.encode(text, parse_special)
    }

    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false)
    }

    fn template(&self) -> Result<&ChatTemplate> {
        self.chat_template
            .as_ref()
            .ok_or_else(|| EngineError::Unsupported("the model has no chat template".into()))
    }

    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.template()?.render(messages, add_generation_prompt)
    }

    /// Token ids of a chat prompt that asks for the assistant's next reply.
    pub fn chat_prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.render_chat(messages, true)?;
        Ok(self.prompt_ids(&text))
    }

    /// Token ids of raw prompt text: special tokens parsed, BOS added if the model asks for it.
    pub fn prompt_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        if self.tokenizer.add_bos {
            ids.extend(self.tokenizer.bos_token_id);
        }
        ids.extend(self.tokenizer.encode(text, true));
        ids
    }

    /// Logits (full vocabulary) after the last of `ids`.
    pub fn last_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.llama.forward_last(ids, &mut KvCache::new())?.to_vec1::<f32>()?)
    }

    /// Trains a LoRA adapter on this model's (dequantized) weights; see [`train::train`].
    pub fn train(
        &self,
        examples: &[TrainingExample],
        config: &TrainConfig,
        out_dir: &Path,
        log: &mut dyn std::io::Write,
        cancel: Option<&AtomicBool>,
    ) -> Result<TrainReport> {
        train(&self.llama, &self.tokenizer, self.template()?, examples, config, out_dir, log, cancel)
    }

    pub fn generate(
        &self,
        prompt_ids: &[u32],
        params: &GenerationParams,
        cancel: Option<&AtomicBool>,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        generate(&self.llama, &self.tokenizer, prompt_ids, params, cancel, on_delta)
    }
}
