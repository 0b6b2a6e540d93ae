//! LoRA hyper-parameters (R-TRAIN-2): the JSON kept in `training_configs.config_data`, checked
//! field by field, and turned into `workbench train` flags.
//!
//! Every field maps to one trainer flag (see `crates/workbench/src/engine_cmd.rs`, whose tests
//! parse [`TrainingParams::to_trainer_args`] with the real command line).
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::FieldErrors;

/// The projections a LoRA adapter can target, in Hugging Face PEFT names.
pub const TARGET_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
pub const SCHEDULERS: [&str; 3] = ["cosine", "linear", "constant"];
/// Seeds stay exact in JavaScript numbers.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Complete, valid hyper-parameters. Built only through [`TrainingParams::apply`] (or the
/// defaults and presets), so a value of this type is always trainable.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct TrainingParams {
    /// Peak learning rate, (0, 1]. Flag `--lr`.
    pub learning_rate: f64,
    /// Passes over the dataset, 1–100. `--epochs`.
    pub epochs: u32,
    /// Sequences per micro-batch, 1–256. `--batch-size`.
    pub batch_size: u32,
    /// Micro-batches per optimizer step, 1–1024. `--grad-accum`.
    pub gradient_accumulation: u32,
    /// Longer conversations are truncated, 16–32768 tokens. `--max-seq-len`.
    pub max_seq_length: u32,
    /// LoRA rank, 1–256. `--lora-r`.
    pub lora_r: u32,
    /// LoRA scaling numerator, (0, 4096]. `--lora-alpha`.
    pub lora_alpha: f64,
    /// [0, 1). `--lora-dropout`.
    pub lora_dropout: f64,
    /// A non-empty subset of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    /// `--targets`.
    pub target_modules: Vec<String>,
    /// Warm-up as a share of all optimizer steps, [0, 0.5]; used when `warmup_steps` is null.
    pub warmup_ratio: Option<f64>,
    /// Warm-up in optimizer steps, 0–100000; wins over `warmup_ratio`. `--warmup-steps`.
    pub warmup_steps: Option<u32>,
    /// `cosine`, `linear` or `constant`. `--schedule`.
    pub scheduler: String,
    /// AdamW weight decay, [0, 1]. `--weight-decay`.
    pub weight_decay: f64,
    /// Gradient-norm clipping, [0, 1000]; 0 turns it off. `--max-grad-norm`.
    pub max_grad_norm: f64,
    /// 0 to 2^53 − 1. `--seed`.
    pub seed: u64,
    /// Scale by alpha/√r instead of alpha/r. `--rslora`.
    pub rslora: bool,
}

impl Default for TrainingParams {
    /// The trainer's own defaults.
    fn default() -> Self {
        Self {
            learning_rate: 2e-4,
            epochs: 3,
            batch_size: 4,
            gradient_accumulation: 1,
            max_seq_length: 512,
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
            warmup_ratio: None,
            warmup_steps: Some(0),
            scheduler: "cosine".into(),
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 42,
            rslora: false,
        }
    }
}

/// Any subset of the parameters, as a client sends them. Numbers are taken as `f64` so that a
/// fraction or an out-of-range value is a 422 naming the field and its range.
#[derive(Deserialize, ToSchema, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TrainingParamsInput {
    pub learning_rate: Option<f64>,
    pub epochs: Option<f64>,
    pub batch_size: Option<f64>,
    pub gradient_accumulation: Option<f64>,
    pub max_seq_length: Option<f64>,
    pub lora_r: Option<f64>,
    pub lora_alpha: Option<f64>,
    pub lora_dropout: Option<f64>,
    pub target_modules: Option<Vec<String>>,
    /// Setting it clears `warmup_steps`; `null` leaves it as it is.
    pub warmup_ratio: Option<f64>,
    /// Setting it clears `warmup_ratio`.
    pub warmup_steps: Option<f64>,
    pub scheduler: Option<String>,
    pub weight_decay: Option<f64>,
    pub max_grad_norm: Option<f64>,
    pub seed: Option<f64>,
    pub rslora: Option<bool>,
}

fn whole(value: f64, min: u64, max: u64) -> Result<u64, String> {
    if value.fract() == 0.0 && value >= min as f64 && value <= max as f64 {
        Ok(value as u64)
    } else {
        Err(format!("must be a whole number from {min} to {max}"))
    }
}

fn between(value: f64, min: f64, max: f64) -> Result<f64, String> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(format!("must be between {min} and {max}")) }
}

fn positive_up_to(value: f64, max: f64) -> Result<f64, String> {
    if value > 0.0 && value <= max { Ok(value) } else { Err(format!("must be greater than 0 and at most {max}")) }
}

fn parse_targets(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Err("must name at least one module".into());
    }
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let name = name.trim();
        if !TARGET_MODULES.contains(&name) {
            return Err(format!("unknown module {name:?}; choose from {}", TARGET_MODULES.join(", ")));
        }
        if out.iter().any(|n| n == name) {
            return Err(format!("{name} is listed twice"));
        }
        out.push(name.to_owned());
    }
    // The order of the modules list, so equal sets compare and print equal.
    out.sort_by_key(|n| TARGET_MODULES.iter().position(|m| m == n));
    Ok(out)
}

impl TrainingParams {
    /// `self` with every field given in `input` replaced, checked together: the error names
    /// every bad field (prefixed with `prefix`, e.g. `params.`) and its allowed range.
    pub fn apply(&self, input: &TrainingParamsInput, prefix: &str) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut out = self.clone();
        let mut check = |field: &str, result: Result<(), String>| {
            if let Err(why) = result {
                errors.insert(format!("{prefix}{field}"), why);
            }
        };
        if let Some(v) = input.learning_rate {
            check("learning_rate", positive_up_to(v, 1.0).map(|v| out.learning_rate = v));
        }
        if let Some(v) = input.epochs {
            check("epochs", whole(v, 1, 100).map(|v| out.epochs = v as u32));
        }
        if let Some(v) = input.batch_size {
            check("batch_size", whole(v, 1, 256).map(|v| out.batch_size = v as u32));
        }
        if let Some(v) = input.gradient_accumulation {
            check("gradient_accumulation", whole(v, 1, 1024).map(|v| out.gradient_accumulation = v as u32));
        }
        if let Some(v) = input.max_seq_length {
            check("max_seq_length", whole(v, 16, 32768).map(|v| out.max_seq_length = v as u32));
        }
        if let Some(v) = input.lora_r {
            check("lora_r", whole(v, 1, 256).map(|v| out.lora_r = v as u32));
        }
        if let Some(v) = input.lora_alpha {
            check("lora_alpha", positive_up_to(v, 4096.0).map(|v| out.lora_alpha = v));
        }
        if let Some(v) = input.lora_dropout {
            let r = if (0.0..1.0).contains(&v) { Ok(v) } else { Err("must be at least 0 and less than 1".to_owned()) };
            check("lora_dropout", r.map(|v| out.lora_dropout = v));
        }
        if let Some(v) = &input.target_modules {
            check("target_modules", parse_targets(v).map(|v| out.target_modules = v));
        }
        match (input.warmup_ratio, input.warmup_steps) {
            (Some(_), Some(_)) => check("warmup_steps", Err("give warmup_steps or warmup_ratio, not both".into())),
            (Some(ratio), None) => check(
                "warmup_ratio",
                between(ratio, 0.0, 0.5).map(|r| {
                    out.warmup_ratio = Some(r);
                    out.warmup_steps = None;
                }),
            ),
            (None, Some(steps)) => check(
                "warmup_steps",
                whole(steps, 0, 100_000).map(|s| {
                    out.warmup_steps = Some(s as u32);
                    out.warmup_ratio = None;
                }),
            ),
            (None, None) => {}
        }
        if let Some(v) = &input.scheduler {
            let r = if SCHEDULERS.contains(&v.as_str()) {
                Ok(v.clone())
            } else {
                Err(format!("must be one of {}", SCHEDULERS.join(", ")))
            };
            check("scheduler", r.map(|v| out.scheduler = v));
        }
        if let Some(v) = input.weight_decay {
            check("weight_decay", between(v, 0.0, 1.0).map(|v| out.weight_decay = v));
        }
        if let Some(v) = input.max_grad_norm {
            check("max_grad_norm", between(v, 0.0, 1000.0).map(|v| out.max_grad_norm = v));
        }
        if let Some(v) = input.seed {
            check("seed", whole(v, 0, MAX_SEED).map(|v| out.seed = v));
        }
        if let Some(v) = input.rslora {
            out.rslora = v;
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    /// Reads stored parameters; fields missing from older rows take their defaults, and values
    /// that no longer pass the checks are reported like a client's input.
    pub fn from_stored(value: &serde_json::Value) -> Result<Self, FieldErrors> {
        let input: TrainingParamsInput = serde_json::from_value(value.clone())
            .map_err(|e| FieldErrors::from([("config_data".to_owned(), e.to_string())]))?;
        Self::default().apply(&input, "")
    }

    /// Optimizer steps the trainer will take on `records` examples (an upper bound: examples
    /// with no assistant token left after truncation are dropped by the trainer).
    pub fn total_steps(&self, records: u64) -> u64 {
        let batches = records.div_ceil(u64::from(self.batch_size));
        batches.div_ceil(u64::from(self.gradient_accumulation)) * u64::from(self.epochs)
    }

    /// Warm-up in optimizer steps for a dataset of `records` examples.
    pub fn warmup_steps_for(&self, records: u64) -> u64 {
        match (self.warmup_steps, self.warmup_ratio) {
            (Some(steps), _) => u64::from(steps),
            (None, Some(ratio)) => (ratio * self.total_steps(records) as f64).ceil() as u64,
            (None, None) => 0,
        }
    }

    /// The `workbench train` flags for these parameters on a dataset of `records` examples
    /// (needed to turn `warmup_ratio` into steps). `--model`, `--data`, `--out` and
    /// `--metrics-file` are the caller's.
    pub fn to_trainer_args(&self, records: u64) -> Vec<String> {
        let mut args: Vec<String> = [
            ("--epochs", self.epochs.to_string()),
            ("--lr", self.learning_rate.to_string()),
            ("--batch-size", self.batch_size.to_string()),
            ("--grad-accum", self.gradient_accumulation.to_string()),
            ("--max-seq-len", self.max_seq_length.to_string()),
            ("--lora-r", self.lora_r.to_string()),
            ("--lora-alpha", self.lora_alpha.to_string()),
            ("--lora-dropout", self.lora_dropout.to_string()),
            ("--targets", self.target_modules.join(",")),
            ("--warmup-steps", self.warmup_steps_for(records).to_string()),
            ("--schedule", self.scheduler.clone()),
            ("--weight-decay", self.weight_decay.to_string()),
            ("--max-grad-norm", self.max_grad_norm.to_string()),
            ("--seed", self.seed.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        if self.rslora {
            args.push("--rslora".into());
        }
        args
    }
}

/// A named starting point offered by the configs page.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct Preset {
    /// `quick_test`, `balanced` or `quality`.
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub params: TrainingParams,
}

pub fn presets() -> Vec<Preset> {
    let base = TrainingParams::default();
    vec![
        Preset {
            id: "quick_test",
            name: "Quick test",
            description: "One short epoch on attention projections: checks that a dataset trains at all.",
            params: TrainingParams {
                learning_rate: 3e-4,
                epochs: 1,
                max_seq_length: 256,
                lora_r: 8,
                lora_alpha: 16.0,
                target_modules: ["q_proj", "v_proj"].map(String::from).to_vec(),
                warmup_steps: Some(0),
                warmup_ratio: None,
                scheduler: "constant".into(),
                ..base.clone()
            },
        },
        Preset {
            id: "balanced",
            name: "Balanced",
            description: "Three epochs on all attention projections with a short warm-up and cosine decay.",
            params: TrainingParams {
                learning_rate: 2e-4,
                epochs: 3,
                max_seq_length: 512,
                lora_r: 16,
                lora_alpha: 32.0,
                lora_dropout: 0.05,
                warmup_steps: None,
                warmup_ratio: Some(0.03),
                ..base.clone()
            },
        },
        Preset {
            id: "quality",
            name: "Quality",
            description: "More epochs, a higher rank and the MLP projections too: slower, for the final run.",
            params: TrainingParams {
                learning_rate: 1e-4,
                epochs: 5,
                gradient_accumulation: 2,
                max_seq_length: 1024,
                lora_r: 32,
                lora_alpha: 64.0,
                lora_dropout: 0.05,
                target_modules: TARGET_MODULES.map(String::from).to_vec(),
                warmup_steps: None,
                warmup_ratio: Some(0.05),
                ..base
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_bad_field_with_its_range() {
        let input = TrainingParamsInput {
            learning_rate: Some(0.0),
            epochs: Some(1.5),
            lora_dropout: Some(1.0),
            target_modules: Some(vec!["q_proj".into(), "lm_head".into()]),
            scheduler: Some("step".into()),
            ..Default::default()
        };
        let errors = TrainingParams::default().apply(&input, "params.").unwrap_err();
        let keys: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["params.epochs", "params.learning_rate", "params.lora_dropout", "params.scheduler", "params.target_modules"]
        );
        assert!(errors["params.epochs"].contains("1 to 100"), "{errors:?}");
        assert!(errors["params.target_modules"].contains("lm_head"), "{errors:?}");
    }

    #[test]
    fn warmup_is_steps_or_a_ratio() {
        let p = TrainingParams::default()
            .apply(&TrainingParamsInput { warmup_ratio: Some(0.1), ..Default::default() }, "")
            .unwrap();
        assert_eq!((p.warmup_steps, p.warmup_ratio), (None, Some(0.1)));
        // 100 records, batch 4 → 25 steps per epoch, 3 epochs → 75 steps; 10 % → 8 (rounded up).
        assert_eq!(p.total_steps(100), 75);
        assert_eq!(p.warmup_steps_for(100), 8);
        let both = TrainingParamsInput { warmup_ratio: Some(0.1), warmup_steps: Some(3.0), ..Default::default() };
        assert!(TrainingParams::default().apply(&both, "").is_err());
    }

    #[test]
    fn stored_params_round_trip_and_fill_defaults() {
        for preset in presets() {
            let stored = serde_json::to_value(&preset.params).unwrap();
            assert_eq!(TrainingParams::from_stored(&stored).unwrap(), preset.params, "{}", preset.id);
        }
        let sparse = TrainingParams::from_stored(&serde_json::json!({"epochs": 2})).unwrap();
        assert_eq!(sparse, TrainingParams { epochs: 2, ..Default::default() });
    }

    #[test]
    fn trainer_args_carry_every_field() {
        let p = TrainingParams { rslora: true, ..presets().remove(2).params };
        let args = p.to_trainer_args(40);
        let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].as_str());
        assert_eq!(flag("--targets"), Some("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"));
        assert_eq!(flag("--lr"), Some("0.0001"));
        assert_eq!(flag("--schedule"), Some("cosine"));
        // 40 records, batch 4, accumulation 2 → 5 steps per epoch × 5 epochs; 5 % → 2 steps.
        assert_eq!(flag("--warmup-steps"), Some("2"));
        assert_eq!(args.last().map(String::as_str), Some("--rslora"));
    }
}
