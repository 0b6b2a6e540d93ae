//! `workbench tokenize | generate | train`: the local engine without the server, with stable JSON
//! output so outside references (llama.cpp, PyTorch + PEFT) and scripts can compare against it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Args, ValueEnum};
use engine::{
    ChatMessage, GenerationParams, LoadOptions, LrSchedule, Model, Projection, SamplingParams,
    TrainConfig, WeightFormat, load_dataset,
};

#[derive(Args)]
pub struct TokenizeArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Treat special-token text such as `<|im_start|>` as the special token.
    #[arg(long)]
    parse_special: bool,
    /// Print `{"ids": [...]}` (the default output is the same JSON).
    #[arg(long)]
    json: bool,
    text: String,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory, applied unmerged beside the quantized weights.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// JSON file with `[{"role": ..., "content": ...}, ...]`, rendered with the model's chat template.
    #[arg(long)]
    messages: PathBuf,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// 0 disables top-k filtering.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this text (repeatable); it is not emitted.
    #[arg(long)]
    stop: Vec<String>,
    /// Print one JSON object `{"prompt_ids", "ids", "text", "finish_reason"}` at the end instead
    /// of streaming the text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Args)]
pub struct TrainArgs {
    /// GGUF model file (dequantized to f32 for training).
    #[arg(long)]
    model: PathBuf,
    /// Dataset: JSON array or JSON Lines of alpaca, sharegpt or messages records.
    #[arg(long)]
    data: PathBuf,
    /// Where the PEFT adapter (and per-epoch checkpoints) are written.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 512)]
    max_seq_len: usize,
    #[arg(long, default_value_t = 8)]
    lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    lora_dropout: f32,
    /// Comma-separated target modules: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj", value_parser = parse_target)]
    targets: Vec<Projection>,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    #[arg(long, value_enum, default_value = "cosine")]
    schedule: Schedule,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm clipping; 0 disables it.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Scale by alpha/√r instead of alpha/r.
    #[arg(long)]
    rslora: bool,
    /// Write the per-step JSON lines here instead of stdout.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
}

fn parse_target(name: &str) -> Result<Projection, String> {
    Projection::from_hf_name(name.trim()).ok_or_else(|| {
        format!("unknown target module {name:?} (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
    })
}

fn load(path: &Path, options: &LoadOptions) -> anyhow::Result<Model> {
    Model::load(path, options).with_context(|| format!("loading model {}", path.display()))
}

pub fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let model = load(&args.model, &LoadOptions::default())?;
    let ids = model.tokenize(&args.text, args.parse_special);
    // JSON is the only output shape; --json is accepted so every engine command reads the same.
    let _ = args.json;
    println!("{}", serde_json::json!({ "ids": ids }));
    Ok(())
}

pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let model = load(&args.model, &LoadOptions { adapter: args.adapter.clone(), ..Default::default() })?;
    let text = std::fs::read_to_string(&args.messages)
        .with_context(|| format!("reading {}", args.messages.display()))?;
    let messages: Vec<ChatMessage> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected [{{\"role\", \"content\"}}, ...]", args.messages.display()))?;
    let prompt_ids = model.chat_prompt_ids(&messages)?;
    let params = GenerationParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: args.seed,
        },
        stop: args.stop,
    };
    let mut stdout = std::io::stdout().lock();
    if !args.json {
        model.generate(&prompt_ids, &params, None, &mut |delta| {
            let _ = stdout.write_all(delta.as_bytes()).and_then(|_| stdout.flush());
        })?;
        writeln!(stdout)?;
        return Ok(());
    }
    let out = model.generate(&prompt_ids, &params, None, &mut |_| {})?;
    let json = serde_json::json!({
        "prompt_ids": out.prompt_ids,
        "ids": out.ids,
        "text": out.text,
        "finish_reason": out.finish_reason,
    });
    writeln!(stdout, "{json}")?;
    Ok(())
}

/// Runs on a blocking thread; `cancel` is raised by Ctrl-C, which stops between micro-batches
/// and keeps the checkpoints already written.
pub fn train(args: TrainArgs, cancel: Arc<AtomicBool>) -> anyhow::Result<()> {
    let model = load(&args.model, &LoadOptions { format: WeightFormat::F32, ..Default::default() })?;
    let examples = load_dataset(&args.data).with_context(|| format!("reading {}", args.data.display()))?;
    let config = TrainConfig {
        targets: args.targets,
        r: args.lora_r,
        alpha: args.lora_alpha,
        dropout: args.lora_dropout,
        use_rslora: args.rslora,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        epochs: args.epochs,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_seq_len: args.max_seq_len,
        warmup_steps: args.warmup_steps,
        schedule: match args.schedule {
            Schedule::Cosine => LrSchedule::Cosine,
            Schedule::Linear => LrSchedule::Linear,
            Schedule::Constant => LrSchedule::Constant,
        },
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        checkpoint_every_epoch: true,
        base_model_name: model.config().name.clone(),
    };
    let mut log: Box<dyn Write> = match &args.metrics_file {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let report = model.train(&examples, &config, &args.out, &mut log, Some(&cancel))?;
    let last = report.steps.last();
    let summary = serde_json::json!({
        "status": "completed",
        "steps": report.steps.len(),
        "first_loss": report.steps.first().map(|s| s.loss),
        "final_loss": last.map(|s| s.loss),
        "tokens_per_s": last.map(|s| s.tokens_per_s),
        "elapsed_s": last.map(|s| s.elapsed_s),
        "adapter_dir": report.adapter_dir,
        "checkpoints": report.checkpoints,
    });
    println!("{summary}");
    Ok(())
}

/// Ctrl-C during training raises the flag the trainer polls.
pub async fn train_cancellable(args: TrainArgs) -> anyhow::Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let result = tokio::task::spawn_blocking(move || train(args, cancel)).await?;
    watcher.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use server::training::params::{TrainingParams, presets};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// The server's training configs become exactly these flags: every field must parse here
    /// and arrive with its value.
    #[test]
    fn training_params_map_onto_train_flags() {
        let mut all = presets().into_iter().map(|p| p.params).collect::<Vec<_>>();
        all.push(TrainingParams { rslora: true, scheduler: "linear".into(), seed: (1 << 53) - 1, ..Default::default() });
        for params in all {
            let mut argv = vec!["train".to_owned(), "--model=m.gguf".into(), "--data=d.jsonl".into(), "--out=o".into()];
            argv.extend(params.to_trainer_args(100));
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let a = cli.train;
            assert_eq!(a.epochs, params.epochs as usize);
            assert_eq!(a.lr, params.learning_rate);
            assert_eq!((a.batch_size, a.grad_accum), (params.batch_size as usize, params.gradient_accumulation as usize));
            assert_eq!(a.max_seq_len, params.max_seq_length as usize);
            assert_eq!((a.lora_r, a.lora_alpha), (params.lora_r as usize, params.lora_alpha));
            assert_eq!(a.lora_dropout as f64, (params.lora_dropout as f32) as f64);
            let targets: Vec<&str> = a.targets.iter().map(|p| p.hf_name()).collect();
            assert_eq!(targets, params.target_modules);
            assert_eq!(a.warmup_steps as u64, params.warmup_steps_for(100));
            let schedule = match a.schedule {
                Schedule::Cosine => "cosine",
                Schedule::Linear => "linear",
                Schedule::Constant => "constant",
            };
            assert_eq!(schedule, params.scheduler);
            assert_eq!((a.weight_decay, a.max_grad_norm, a.seed), (params.weight_decay, params.max_grad_norm, params.seed));
            assert_eq!(a.rslora, params.rslora);
        }
    }
}
