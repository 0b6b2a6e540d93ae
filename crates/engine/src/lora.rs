//! PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors`, tensors in
//! Hugging Face row order. The engine keeps q/k in GGUF order, so B matrices of q/k are permuted
//! on the way in and out.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model::{Llama, LoraWeights, Projection, permute_gguf_to_hf, permute_hf_to_gguf};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of PEFT's `LoraConfig` that the engine reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

fn bias_none() -> String {
    "none".into()
}

impl AdapterConfig {
    pub fn new(
        r: usize,
        lora_alpha: f64,
        targets: &[Projection],
        use_rslora: bool,
        lora_dropout: f64,
    ) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            r,
            lora_alpha,
            lora_dropout,
            target_modules: targets.iter().map(|p| p.hf_name().to_string()).collect(),
            use_rslora,
            bias: bias_none(),
            base_model_name_or_path: None,
            fan_in_fan_out: false,
            inference_mode: true,
            use_dora: false,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
        }
    }

    /// PEFT's scaling: alpha/r, or alpha/√r with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    pub fn targets(&self) -> Result<Vec<Projection>> {
        self.target_modules
            .iter()
            .map(|m| {
                Projection::from_hf_name(m).ok_or_else(|| {
                    EngineError::Adapter(format!("unsupported target module {m:?}"))
                })
            })
            .collect()
    }

    fn check_supported(&self) -> Result<()> {
        if self.peft_type != "LORA" {
            return Err(EngineError::Adapter(format!("peft_type {} is not LORA", self.peft_type)));
        }
        if self.use_dora || self.fan_in_fan_out || self.bias != "none" {
            return Err(EngineError::Adapter(
                "DoRA, fan_in_fan_out and LoRA biases are not supported".into(),
            ));
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return Err(EngineError::Adapter("per-module rank/alpha patterns are not supported".into()));
        }
        if self.r == 0 {
            return Err(EngineError::Adapter("r must be positive".into()));
        }
        Ok(())
    }
}

pub(crate) fn tensor_key(layer: usize, p: Projection, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.{which}.weight", p.hf_path())
}

fn head_count(config: &ModelConfig, p: Projection) -> Option<usize> {
    match p {
        Projection::Q => Some(config.num_heads),
        Projection::K => Some(config.num_kv_heads),
        _ => None,
    }
}

pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
    let config: AdapterConfig = serde_json::from_str(&text)
        .map_err(|e| EngineError::Adapter(format!("{}: {e}", path.display())))?;
    config.check_supported()?;
    Ok(config)
}

/// Attaches a PEFT adapter to `model` (unmerged). Fails on any missing or mis-shaped tensor.
pub fn load_adapter(model: &mut Llama, dir: &Path) -> Result<AdapterConfig> {
    let config = read_adapter_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| EngineError::Adapter(format!("{}: {e}", path.display())))?;
    let get = |key: &str| -> Option<&Tensor> {
        // Older PEFT versions keep the adapter name in the key.
        tensors.get(key).or_else(|| tensors.get(&key.replace(".weight", ".default.weight")))
    };
    let targets = config.targets()?;
    let scale = config.scale();
    let mut attached = 0;
    for layer in 0..model.config.num_layers {
        for &p in &targets {
            let (a, b) = (get(&tensor_key(layer, p, "lora_A")), get(&tensor_key(layer, p, "lora_B")));
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?),
                (None, None) => continue,
                _ => {
                    return Err(EngineError::Adapter(format!(
                        "layer {layer} {}: only one of lora_A / lora_B present",
                        p.hf_name()
                    )));
                }
            };
            let (out_f, in_f) = model.projection_shape(layer, p);
            if a.dims2()? != (config.r, in_f) || b.dims2()? != (out_f, config.r) {
                return Err(EngineError::Adapter(format!(
                    "layer {layer} {}: lora_A {:?} / lora_B {:?} do not fit a [{out_f}, {in_f}] weight with r={}",
                    p.hf_name(),
                    a.shape(),
                    b.shape(),
                    config.r
                )));
            }
            let b = match head_count(&model.config, p) {
                Some(n) => permute_hf_to_gguf(&b, n)?,
                None => b,
            };
            model.set_lora(layer, p, Some(LoraWeights { a, b, scale, dropout: 0.0 }));
            attached += 1;
        }
    }
    if attached == 0 {
        return Err(EngineError::Adapter(format!(
            "{} holds no LoRA tensor for this model's layers",
            path.display()
        )));
    }
    Ok(config)
}

/// Writes the model's LoRA weights as a PEFT adapter, plus a Hugging Face `config.json` for the
/// base so converters can find its shapes.
pub fn save_adapter(model: &Llama, config: &AdapterConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for layer in 0..model.config.num_layers {
        for p in Projection::ALL {
            let Some(l) = model.lora(layer, p) else { continue };
            let b = match head_count(&model.config, p) {
                Some(n) => permute_gguf_to_hf(&l.b, n)?,
                None => l.b.contiguous()?,
            };
            tensors.insert(tensor_key(layer, p, "lora_A"), l.a.contiguous()?);
            tensors.insert(tensor_key(layer, p, "lora_B"), b);
        }
    }
    if tensors.is_empty() {
        return Err(EngineError::Adapter("the model carries no LoRA weights to save".into()));
    }
    let weights = dir.join(ADAPTER_WEIGHTS);
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| EngineError::Adapter(format!("{}: {e}", weights.display())))?;
    write_json(&dir.join(ADAPTER_CONFIG), &serde_json::to_value(config)?)?;
    write_json(&dir.join("config.json"), &model.config.hf_config_json())?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| EngineError::io(path, e))
}
