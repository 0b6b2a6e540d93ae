use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Hyper-parameters of a llama-family model, read from GGUF metadata (`{arch}.*` keys) so that
/// nothing is tied to one model size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: String,
    pub name: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    pub context_length: usize,
    /// True when the GGUF has no `output.weight`: the output projection reuses the embedding.
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

pub(crate) struct Metadata<'a> {
    pub(crate) map: &'a HashMap<String, Value>,
}

impl<'a> Metadata<'a> {
    pub(crate) fn get(&self, key: &str) -> Result<&'a Value> {
        self.map
            .get(key)
            .ok_or_else(|| EngineError::Metadata(format!("missing key {key}")))
    }

    pub(crate) fn opt(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        value_to_u64(self.get(key)?, key).map(|v| v as usize)
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt(key).map(|v| value_to_u64(v, key).map(|v| v as u32)).transpose()
    }

    pub(crate) fn f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::F32(v) => Ok(*v as f64),
            Value::F64(v) => Ok(*v),
            other => value_to_u64(other, key).map(|v| v as f64),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<&'a str> {
        self.get(key)?
            .to_string()
            .map(|s| s.as_str())
            .map_err(|_| EngineError::Metadata(format!("{key} is not a string")))
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Option<bool> {
        self.opt(key).and_then(|v| v.to_bool().ok())
    }
}

fn value_to_u64(v: &Value, key: &str) -> Result<u64> {
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::I8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::I16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::I32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I64(x) => *x as u64,
        _ => return Err(EngineError::Metadata(format!("{key} is not an integer"))),
    };
    Ok(n)
}

impl ModelConfig {
    /// Reads only the GGUF header (metadata and tensor directory, not the weights): what a
    /// registry needs to describe a model file in milliseconds.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| EngineError::io(path, e))?;
        let content = Content::read(&mut file).map_err(|e| {
            EngineError::Metadata(format!("{}: not a readable GGUF file: {e}", path.display()))
        })?;
        Self::from_gguf(&content)
    }

    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = Metadata { map: &content.metadata };
        let arch = md.string("general.architecture")?.to_string();
        if arch != "llama" {
            // Other architectures share the key names but not the graph.
            return Err(EngineError::Unsupported(format!("architecture {arch}")));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let hidden_size = md.usize(&key("embedding_length"))?;
        let num_heads = md.usize(&key("attention.head_count"))?;
        let num_kv_heads = match md.opt(&key("attention.head_count_kv")) {
            Some(_) => md.usize(&key("attention.head_count_kv"))?,
            None => num_heads,
        };
        let head_dim = match md.opt(&key("rope.dimension_count")) {
            Some(_) => md.usize(&key("rope.dimension_count"))?,
            None => hidden_size / num_heads,
        };
        let vocab_size = match md.opt(&key("vocab_size")) {
            Some(_) => md.usize(&key("vocab_size"))?,
            None => md
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .map_err(|_| EngineError::Metadata("tokenizer.ggml.tokens is not an array".into()))?
                .len(),
        };
        let rope_theta = match md.opt(&key("rope.freq_base")) {
            Some(_) => md.f64(&key("rope.freq_base"))? as f32,
            None => 10_000.0,
        };
        Ok(Self {
            name: md.opt("general.name").and_then(|v| v.to_string().ok()).cloned(),
            vocab_size,
            hidden_size,
            intermediate_size: md.usize(&key("feed_forward_length"))?,
            num_layers: md.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta,
            rms_norm_eps: md.f64(&key("attention.layer_norm_rms_epsilon"))?,
            context_length: md.usize(&key("context_length"))?,
            tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
            bos_token_id: md.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: md.opt_u32("tokenizer.ggml.eos_token_id")?,
            pad_token_id: md.opt_u32("tokenizer.ggml.padding_token_id")?,
            architecture: arch,
        })
    }

    /// A Hugging Face `LlamaConfig` equivalent, written next to adapters so that PEFT and
    /// llama.cpp's LoRA converter can reconstruct the base model's shapes.
    pub fn hf_config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.context_length,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "initializer_range": 0.02,
            "pretraining_tp": 1,
            "use_cache": true,
            "torch_dtype": "float32",
        })
    }
}
