//! LoRA fine-tuning over frozen, dequantized (f32) base weights, with loss on assistant tokens
//! only. The result is saved as a PEFT adapter (see [`crate::lora`]).

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{EngineError, Result};
use crate::lora::{AdapterConfig, save_adapter};
use crate::model::{Llama, LoraWeights, Projection, WeightFormat};
use crate::sampling::Rng;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub targets: Vec<Projection>,
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub use_rslora: bool,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longer examples are truncated.
    pub max_seq_len: usize,
    /// Optimizer steps of linear warm-up from 0 to `learning_rate`.
    pub warmup_steps: usize,
    pub schedule: LrSchedule,
    /// Global gradient-norm clipping; 0 disables it.
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Save an adapter after every epoch but the last under `out_dir/checkpoint-epoch-N`; the
    /// last epoch's adapter is `out_dir` itself.
    pub checkpoint_every_epoch: bool,
    /// Recorded as `base_model_name_or_path` in the adapter config.
    pub base_model_name: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            targets: vec![Projection::Q, Projection::K, Projection::V, Projection::O],
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            use_rslora: false,
            learning_rate: 2e-4,
            weight_decay: 0.0,
            epochs: 3,
            batch_size: 4,
            grad_accum: 1,
            max_seq_len: 512,
            warmup_steps: 0,
            schedule: LrSchedule::Cosine,
            max_grad_norm: 1.0,
            seed: 42,
            checkpoint_every_epoch: true,
            base_model_name: None,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, message: &str| {
            Err(EngineError::InvalidParameter { name, message: message.into() })
        };
        if self.targets.is_empty() {
            return bad("targets", "at least one target module is needed");
        }
        if self.r == 0 {
            return bad("r", "must be positive");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", "must be positive");
        }
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("epochs", "epochs, batch_size and grad_accum must be positive");
        }
        if self.max_seq_len < 2 {
            return bad("max_seq_len", "must be at least 2");
        }
        Ok(())
    }

    pub fn adapter_config(&self) -> AdapterConfig {
        let mut c = AdapterConfig::new(
            self.r,
            self.alpha,
            &self.targets,
            self.use_rslora,
            // Through its shortest decimal form: `0.1f32 as f64` is 0.10000000149011612, which
            // adapter_config.json would then say.
            self.dropout.to_string().parse().unwrap_or(self.dropout as f64),
        );
        c.base_model_name_or_path = self.base_model_name.clone();
        c
    }

    /// Learning rate for optimizer step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = total.saturating_sub(self.warmup_steps).max(1);
        let progress = (step - self.warmup_steps) as f64 / decay_steps as f64;
        match self.schedule {
            LrSchedule::Constant => self.learning_rate,
            LrSchedule::Linear => self.learning_rate * (1.0 - progress),
            LrSchedule::Cosine => {
                self.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// One conversation to learn from; only assistant messages contribute to the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExample {
    pub messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    /// `{"instruction", "input"?, "output", "system"?}`
    Alpaca,
    /// `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`
    ShareGpt,
    /// `{"messages": [{"role", "content"}]}`
    Messages,
}

impl DatasetFormat {
    pub fn detect(record: &serde_json::Value) -> Option<Self> {
        if record.get("messages").is_some() {
            Some(DatasetFormat::Messages)
        } else if record.get("conversations").is_some() {
            Some(DatasetFormat::ShareGpt)
        } else if record.get("instruction").is_some() && record.get("output").is_some() {
            Some(DatasetFormat::Alpaca)
        } else {
            None
        }
    }
}

fn str_field<'a>(v: &'a serde_json::Value, key: &str, at: usize) -> Result<&'a str> {
    v.get(key)
        .and_then(|x| x.as_str())
        .ok_or_else(|| EngineError::Dataset(format!("record {at}: field {key:?} missing or not a string")))
}

/// Parses one record of any supported format into a conversation.
pub fn parse_record(record: &serde_json::Value, at: usize) -> Result<TrainingExample> {
    let format = DatasetFormat::detect(record).ok_or_else(|| {
        EngineError::Dataset(format!(
            "record {at}: not alpaca (instruction/output), sharegpt (conversations) or messages"
        ))
    })?;
    let mut messages = Vec::new();
    match format {
        DatasetFormat::Alpaca => {
            if let Some(system) = record.get("system").and_then(|s| s.as_str())
                && !system.is_empty() {
                    messages.push(ChatMessage::new("system", system));
                }
            let mut user = str_field(record, "instruction", at)?.to_string();
            if let Some(input) = record.get("input").and_then(|s| s.as_str())
                && !input.is_empty() {
                    user.push_str("\n\n");
                    user.push_str(input);
                }
            messages.push(ChatMessage::new("user", user));
            messages.push(ChatMessage::new("assistant", str_field(record, "output", at)?));
        }
        DatasetFormat::ShareGpt => {
            let turns = record["conversations"].as_array().ok_or_else(|| {
                EngineError::Dataset(format!("record {at}: conversations is not a list"))
            })?;
            for t in turns {
                let role = match str_field(t, "from", at)? {
                    "human" | "user" => "user",
                    "gpt" | "assistant" | "model" => "assistant",
                    "system" => "system",
                    other => {
                        return Err(EngineError::Dataset(format!("record {at}: unknown speaker {other:?}")));
                    }
                };
                messages.push(ChatMessage::new(role, str_field(t, "value", at)?));
            }
        }
        DatasetFormat::Messages => {
            let list = record["messages"].as_array().ok_or_else(|| {
                EngineError::Dataset(format!("record {at}: messages is not a list"))
            })?;
            for m in list {
                messages.push(ChatMessage::new(str_field(m, "role", at)?, str_field(m, "content", at)?));
            }
        }
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err(EngineError::Dataset(format!("record {at}: no assistant message to learn from")));
    }
    Ok(TrainingExample { messages })
}

/// Reads a dataset file: a JSON array of records, or JSON Lines.
pub fn load_dataset(path: &Path) -> Result<Vec<TrainingExample>> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    parse_dataset(&text)
}

pub fn parse_dataset(text: &str) -> Result<Vec<TrainingExample>> {
    let trimmed = text.trim_start();
    let records: Vec<serde_json::Value> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| EngineError::Dataset(format!("JSON array: {e}")))?
    } else {
        trimmed
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| EngineError::Dataset(format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_>>()?
    };
    if records.is_empty() {
        return Err(EngineError::Dataset("no records".into()));
    }
    records.iter().enumerate().map(|(i, r)| parse_record(r, i)).collect()
}

/// Token ids of a conversation and, per token, whether the loss counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedExample {
    pub ids: Vec<u32>,
    pub trainable: Vec<bool>,
}

pub fn tokenize_example(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    example: &TrainingExample,
    max_seq_len: usize,
) -> Result<TokenizedExample> {
    let mut ids = Vec::new();
    let mut trainable = Vec::new();
    if tokenizer.add_bos
        && let Some(bos) = tokenizer.bos_token_id {
            ids.push(bos);
            trainable.push(false);
        }
    for (text, assistant) in template.render_segments(&example.messages)? {
        let seg = tokenizer.encode(&text, true);
        trainable.extend(std::iter::repeat_n(assistant, seg.len()));
        ids.extend(seg);
    }
    ids.truncate(max_seq_len);
    trainable.truncate(max_seq_len);
    Ok(TokenizedExample { ids, trainable })
}

/// A padded micro-batch: inputs `[b, t]` and, for every position followed by a trainable token,
/// its flattened index and that token.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input: Tensor,
    /// Indices into the flattened `b × t` positions whose next token counts.
    pub rows: Tensor,
    pub targets: Tensor,
    pub target_tokens: usize,
    /// Non-padding tokens in the batch.
    pub tokens: usize,
}

impl Batch {
    pub fn new(examples: &[&TokenizedExample], pad_id: u32) -> Result<Self> {
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if t < 2 {
            return Err(EngineError::Dataset("examples need at least two tokens".into()));
        }
        let b = examples.len();
        let mut input = vec![pad_id; b * t];
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut tokens = 0;
        for (i, e) in examples.iter().enumerate() {
            tokens += e.ids.len();
            input[i * t..i * t + e.ids.len()].copy_from_slice(&e.ids);
            for j in 0..e.ids.len().saturating_sub(1) {
                if e.trainable[j + 1] {
                    rows.push((i * t + j) as u32);
                    targets.push(e.ids[j + 1]);
                }
            }
        }
        if rows.is_empty() {
            return Err(EngineError::Dataset("a batch has no trainable token".into()));
        }
        let dev = Device::Cpu;
        Ok(Self {
            input: Tensor::from_vec(input, (b, t), &dev)?,
            target_tokens: rows.len(),
            rows: Tensor::new(rows.as_slice(), &dev)?,
            targets: Tensor::new(targets.as_slice(), &dev)?,
            tokens,
        })
    }
}

/// Sum over the batch's trainable positions of −log p(target).
pub fn batch_loss_sum(model: &Llama, batch: &Batch) -> Result<Tensor> {
    model.train_loss_sum(&batch.input, &batch.rows, batch.targets.to_vec1::<u32>()?)
}

/// `scale ×` [`batch_loss_sum`] and its gradients with respect to the model's LoRA factors (keyed
/// by their tensors, as `loss.backward()` keys them): by the trainer's own backward pass where
/// it applies, through candle's autograd otherwise (quantized weights). Dropout masks come from
/// this thread's generator (see [`seed_dropout`]) in the same order either way.
pub fn batch_loss_and_grads(model: &Llama, batch: &Batch, scale: f64) -> Result<(f64, GradStore)> {
    let targets = batch.targets.to_vec1::<u32>()?;
    if let Some(result) = model.train_loss_and_grads(&batch.input, &batch.rows, targets, scale)? {
        return Ok(result);
    }
    let loss = (batch_loss_sum(model, batch)? * scale)?;
    let grads = loss.backward()?;
    Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
}

/// Sets glibc's allocator up for a training process. Call first thing: a thread takes its arena
/// at its first allocation.
///
/// A training step allocates and frees gigabytes of activations and gradients in buffers of
/// megabytes, on rayon's threads, and every page glibc hands back to the kernel between steps is
/// faulted in and zeroed again in the next.
/// - One arena: with an arena per thread, how much went back changed from run to run (405 k to
///   730 k page faults for the same three steps of SmolLM2-135M). Allocations are few and large,
///   so threads hardly contend for the one arena.
/// - Fixed mmap and trim thresholds: with glibc's adaptive ones, some runs still mapped buffers
///   afresh or trimmed the heap's top when a step's activations were freed, up to 130 k page
///   faults a step on a Xeon (the engine's bench with six training steps: 358 k to 1,015 k
///   faults in all, by run). The faults of two threads also contend in the kernel. With these,
///   no step after the first faults (349 k in all, with two training steps or six). Buffers
///   above 32 MiB stay separate mappings, and the heap keeps a step's peak, which the next step
///   needs again anyway.
pub fn configure_malloc_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it takes the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

thread_local! {
    /// Seeded per training run, so that dropout masks repeat with the seed.
    static DROPOUT_RNG: RefCell<Rng> = RefCell::new(Rng::new(0));
}

/// Seeds this thread's dropout masks, as [`train`] does from its config's seed.
pub fn seed_dropout(seed: u64) {
    DROPOUT_RNG.with(|r| *r.borrow_mut() = Rng::new(seed));
}

/// Runs `f` with this thread's dropout generator, which `f` may hand to another thread (the
/// trainer's own pass runs on rayon's pool): masks are then drawn in the same sequence as if
/// they were drawn here.
pub(crate) fn with_dropout_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    DROPOUT_RNG.with(|r| f(&mut r.borrow_mut()))
}

/// A dropout mask shaped like `x`: 0 with probability `p`, `1 / (1 − p)` otherwise, element `i`
/// from `rng`'s `i`-th draw. Drawn on rayon's threads: one after the other on the pass's thread,
/// the 35 M draws a step of SmolLM2-135M (batch 4 × 128, q/k/v/o) took some 4 % of the step.
pub(crate) fn dropout_mask(rng: &mut Rng, x: &Tensor, p: f32) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let keep = 1.0 / (1.0 - p);
    let n = x.elem_count();
    let start = rng.clone();
    rng.skip(n as u64);
    let mask: Vec<f32> = (0..n).into_par_iter().map(|i| if (start.uniform_at(i as u64) as f32) < p { 0.0 } else { keep }).collect();
    Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())
}

pub(crate) fn dropout(x: &Tensor, p: f32) -> candle_core::Result<Tensor> {
    x * with_dropout_rng(|rng| dropout_mask(rng, x, p))?
}

/// Trainable LoRA matrices attached to a model.
pub struct LoraParams {
    pub entries: Vec<(usize, Projection, Var, Var)>,
}

impl LoraParams {
    /// Attaches fresh adapters the way PEFT initialises them: A uniform in ±1/√in (Kaiming with
    /// a=√5), B zero, so training starts from the base model's outputs.
    pub fn attach(model: &mut Llama, config: &TrainConfig) -> Result<Self> {
        let mut rng = Rng::new(config.seed);
        let scale = config.adapter_config().scale();
        let dtype = model.dtype();
        let mut entries = Vec::new();
        for layer in 0..model.config.num_layers {
            for &p in &config.targets {
                let (out_f, in_f) = model.projection_shape(layer, p);
                let bound = 1.0 / (in_f as f64).sqrt();
                let a: Vec<f32> = (0..config.r * in_f)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let a = Var::from_tensor(
                    &Tensor::from_vec(a, (config.r, in_f), &Device::Cpu)?.to_dtype(dtype)?,
                )?;
                let b = Var::zeros((out_f, config.r), dtype, &Device::Cpu)?;
                model.set_lora(
                    layer,
                    p,
                    Some(LoraWeights {
                        a: a.as_tensor().clone(),
                        b: b.as_tensor().clone(),
                        scale,
                        dropout: config.dropout,
                    }),
                );
                entries.push((layer, p, a, b));
            }
        }
        Ok(Self { entries })
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.entries.iter().flat_map(|(_, _, a, b)| [a, b])
    }

    /// Replaces the model's adapters by plain tensors so inference builds no gradient graph.
    pub fn detach_into(&self, model: &mut Llama) {
        for (layer, p, a, b) in &self.entries {
            if let Some(l) = model.lora(*layer, *p).cloned() {
                model.set_lora(
                    *layer,
                    *p,
                    Some(LoraWeights { a: a.as_tensor().detach(), b: b.as_tensor().detach(), dropout: 0.0, ..l }),
                );
            }
        }
    }
}

/// AdamW with decoupled weight decay, on the engine's own state so accumulation and clipping
/// happen before the update.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    t: i32,
}

impl AdamW {
    fn new(vars: &[&Var], weight_decay: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars.iter().map(|v| zeros(v)).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(|v| zeros(v)).collect::<candle_core::Result<_>>()?,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
        })
    }

    fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t);
        let bc2 = 1.0 - self.beta2.powi(self.t);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let theta = var.as_tensor().detach();
            let theta = ((theta * (1.0 - lr * self.weight_decay))? - (update * lr)?)?;
            var.set(&theta)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStep {
    pub step: usize,
    pub total_steps: usize,
    /// Fractional: 1.5 is half-way through the second epoch.
    pub epoch: f64,
    /// Mean loss per trainable token over the step's micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
}

#[derive(Debug)]
pub struct TrainReport {
    /// The base in f32 with the trained adapters attached (unmerged).
    pub model: Llama,
    pub adapter_config: AdapterConfig,
    pub steps: Vec<TrainStep>,
    pub adapter_dir: PathBuf,
    pub checkpoints: Vec<PathBuf>,
}

/// Trains a LoRA adapter on `examples` and saves it to `out_dir` in PEFT format. `log` receives
/// one JSON object per optimizer step, one per line. `cancel` is checked between micro-batches;
/// a cancelled run returns [`EngineError::Cancelled`], keeping checkpoints already written.
#[allow(clippy::too_many_arguments)]
pub fn train(
    base: &Llama,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    examples: &[TrainingExample],
    config: &TrainConfig,
    out_dir: &Path,
    log: &mut dyn Write,
    cancel: Option<&AtomicBool>,
) -> Result<TrainReport> {
    config.validate()?;
    let mut model = match base.format {
        WeightFormat::F32 => base.clone(),
        WeightFormat::Quantized => base.to_f32()?,
    };
    for layer in 0..model.config.num_layers {
        for p in Projection::ALL {
            model.set_lora(layer, p, None);
        }
    }
    let tokenized: Vec<TokenizedExample> = examples
        .iter()
        .map(|e| tokenize_example(tokenizer, template, e, config.max_seq_len))
        .filter(|r| !matches!(r, Ok(t) if !t.trainable.iter().skip(1).any(|&x| x)))
        .collect::<Result<_>>()?;
    if tokenized.is_empty() {
        return Err(EngineError::Dataset(
            "no example has assistant tokens within max_seq_len".into(),
        ));
    }
    let pad_id = tokenizer.eos_token_id.or(model.config.pad_token_id).unwrap_or(0);
    let params = LoraParams::attach(&mut model, config)?;
    let vars: Vec<&Var> = params.vars().collect();
    let mut opt = AdamW::new(&vars, config.weight_decay)?;
    seed_dropout(config.seed ^ 0xD50);
    let mut shuffle_rng = Rng::new(config.seed);

    let batches_per_epoch = tokenized.len().div_ceil(config.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let total_steps = steps_per_epoch * config.epochs;
    let adapter_config = config.adapter_config();
    let start = Instant::now();
    let mut tokens_seen = 0usize;
    let mut step = 0usize;
    let mut steps = Vec::with_capacity(total_steps);
    let mut checkpoints = Vec::new();
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));

    for epoch in 0..config.epochs {
        let mut order: Vec<usize> = (0..tokenized.len()).collect();
        for i in (1..order.len()).rev() {
            let j = (shuffle_rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let batches: Vec<Vec<&TokenizedExample>> = order
            .chunks(config.batch_size)
            .map(|c| c.iter().map(|&i| &tokenized[i]).collect())
            .collect();
        for group in batches.chunks(config.grad_accum) {
            let group: Vec<Batch> = group
                .iter()
                .map(|b| Batch::new(b, pad_id))
                .collect::<Result<_>>()?;
            let denom = group.iter().map(|b| b.target_tokens).sum::<usize>().max(1) as f64;
            let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
            let mut loss_sum = 0.0;
            for batch in &group {
                if cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let (loss, store) = batch_loss_and_grads(&model, batch, 1.0 / denom)?;
                loss_sum += loss;
                for (slot, var) in grads.iter_mut().zip(&vars) {
                    let g = match store.get(var.as_tensor()) {
                        Some(g) => g.clone(),
                        None => var.as_tensor().zeros_like()?,
                    };
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g)?,
                        None => g,
                    });
                }
                tokens_seen += batch.tokens;
            }
            let grads: Vec<Tensor> = grads.into_iter().map(|g| g.expect("filled")).collect();
            let mut sq = 0.0;
            for g in &grads {
                sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
            let grad_norm = sq.sqrt();
            let grads = if config.max_grad_norm > 0.0 && grad_norm > config.max_grad_norm {
                let k = config.max_grad_norm / (grad_norm + 1e-6);
                grads.iter().map(|g| g * k).collect::<candle_core::Result<Vec<_>>>()?
            } else {
                grads
            };
            let lr = config.lr_at(step, total_steps);
            opt.step(&vars, &grads, lr)?;
            step += 1;
            let elapsed = start.elapsed().as_secs_f64();
            let record = TrainStep {
                step,
                total_steps,
                epoch: epoch as f64 + (step - epoch * steps_per_epoch) as f64 / steps_per_epoch as f64,
                loss: loss_sum,
                lr,
                grad_norm,
                tokens_per_s: tokens_seen as f64 / elapsed.max(1e-9),
                elapsed_s: elapsed,
                eta_s: elapsed / step as f64 * (total_steps - step) as f64,
            };
            let line = serde_json::to_string(&record)?;
            writeln!(log, "{line}")
                .and_then(|_| log.flush())
                .map_err(|e| EngineError::io("training log", e))?;
            steps.push(record);
        }
        if config.checkpoint_every_epoch && epoch + 1 < config.epochs {
            let dir = out_dir.join(format!("checkpoint-epoch-{}", epoch + 1));
            let mut snapshot = model.clone();
            params.detach_into(&mut snapshot);
            save_adapter(&snapshot, &adapter_config, &dir)?;
            checkpoints.push(dir);
        }
    }
    params.detach_into(&mut model);
    save_adapter(&model, &adapter_config, out_dir)?;
    Ok(TrainReport { model, adapter_config, steps, adapter_dir: out_dir.to_path_buf(), checkpoints })
}
