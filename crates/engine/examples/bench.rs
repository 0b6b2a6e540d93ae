//! Throughput of the engine on one model: prompt and decode tokens/s with the quantized weights,
//! and LoRA training tokens/s over the dequantized base (r=8, alpha=16, q/k/v/o, batch 4,
//! sequence 128, AdamW). Prints one JSON object; bench/engine/run.sh compares it with references.
//!
//! Usage: bench MODEL.gguf [TRAIN_STEPS]

use std::time::Instant;

use engine::train::{Batch, LoraParams, TokenizedExample, batch_loss_and_grads};
use engine::{GenerationParams, LoadOptions, Model, TrainConfig};

/// Rounds of 64 decoded tokens; the median counts.
const DECODE_ROUNDS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the trainer process does (`workbench train`).
    engine::train::configure_malloc_for_training();
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().ok_or("usage: bench MODEL.gguf [TRAIN_STEPS]")?);
    let train_steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);

    let model = Model::load(&path, &LoadOptions::default())?;
    let text = "The history of the printing press begins in the fifteenth century, when movable type \
                changed how books were made and how knowledge spread across Europe. ".repeat(6);
    let mut prompt = model.tokenize(&text, false);
    prompt.truncate(128);
    // Warm-up, then measure.
    model.generate(&prompt[..8], &GenerationParams { max_tokens: 4, ..Default::default() }, None, &mut |_| {})?;
    let params = GenerationParams { max_tokens: 64, ..Default::default() };
    let gen_out = model.generate(&prompt, &params, None, &mut |_| {})?;
    // Decoding 64 tokens takes under a second, short enough for another tenant of a shared
    // machine to halve one measurement: the median of three rounds, as llama_cpp_bench.py does.
    let cpu0 = cpu_seconds();
    let mut rounds = Vec::with_capacity(DECODE_ROUNDS);
    for _ in 0..DECODE_ROUNDS {
        let t = Instant::now();
        let mut cache = engine::KvCache::new();
        let mut next = vec![prompt[0]];
        for _ in 0..64 {
            let logits = model.llama.forward_last(&next, &mut cache)?.to_vec1::<f32>()?;
            next = vec![engine::sampling::argmax(&logits)];
        }
        rounds.push(64.0 / t.elapsed().as_secs_f64());
    }
    rounds.sort_by(f64::total_cmp);
    let decode_tps = rounds[DECODE_ROUNDS / 2];
    let decode_cpu = cpu_seconds().zip(cpu0).map(|(b, a)| (b - a) / DECODE_ROUNDS as f64);
    // With BENCH_ADAPTER: the cost of a LoRA adapter kept beside quantized weights vs merged
    // into dequantized ones.
    let adapter = std::env::var_os("BENCH_ADAPTER").map(std::path::PathBuf::from);
    let mut adapter_rates = serde_json::Map::new();
    if let Some(dir) = &adapter {
        for (name, format, merge) in [
            ("decode_tokens_per_s_lora_unmerged_quantized", engine::WeightFormat::Quantized, false),
            ("decode_tokens_per_s_lora_merged_f32", engine::WeightFormat::F32, true),
        ] {
            let m = Model::load(&path, &LoadOptions { format, adapter: Some(dir.clone()), merge_adapter: merge })?;
            let g = m.generate(&prompt[..16], &GenerationParams { max_tokens: 32, ..Default::default() }, None, &mut |_| {})?;
            adapter_rates.insert(name.into(), g.decode_tokens_per_second().into());
        }
    }
    // Repeated so that CPU time (10 ms ticks) resolves it.
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    for _ in 0..5 {
        model.last_logits(&prompt)?;
    }
    let prompt_tps = 5.0 * prompt.len() as f64 / t.elapsed().as_secs_f64();
    let prompt_cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);

    // Peak memory of the training part alone (the adapter comparison above loads extra models):
    // writing 5 to clear_refs resets the high-water mark to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut train_model = model.llama.to_f32()?;
    let config = TrainConfig { r: 8, alpha: 16.0, ..Default::default() };
    let lora = LoraParams::attach(&mut train_model, &config)?;
    let example = TokenizedExample { ids: prompt.clone(), trainable: vec![true; prompt.len()] };
    let batch = Batch::new(&[&example, &example, &example, &example], 0)?;
    let vars: Vec<_> = lora.vars().cloned().collect();
    let mut opt = candle_nn::AdamW::new_lr(vars, 1e-4)?;
    // Warm-up, as the PyTorch reference does (forward and backward, no optimizer step): the
    // first step also pays for first-touch page faults of buffers that later steps reuse.
    batch_loss_and_grads(&train_model, &batch, 1.0)?;
    let (t, cpu0) = (Instant::now(), cpu_seconds());
    for _ in 0..train_steps {
        // The trainer's step: loss and gradients, then the optimizer.
        let (_, grads) = batch_loss_and_grads(&train_model, &batch, 1.0)?;
        use candle_nn::Optimizer;
        opt.step(&grads)?;
    }
    let train_tps = (batch.tokens * train_steps) as f64 / t.elapsed().as_secs_f64();
    // Per CPU-second of this process: less disturbed than wall time when other work shares the
    // cores (compare with the reference's figure measured the same way).
    let train_tpcs = cpu_seconds().map(|c| (batch.tokens * train_steps) as f64 / (c - cpu0.unwrap_or(0.0)));
    println!(
        "{}",
        serde_json::json!({
            "engine": "workbench-engine (candle)",
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "prompt_tokens": prompt.len(),
            "prompt_tokens_per_s": prompt_tps,
            "decode_tokens_per_s": decode_tps,
            "decode_cpu_s_per_token": decode_cpu.map(|c| c / 64.0),
            "prompt_cpu_s_per_token": prompt_cpu.map(|c| c / (5.0 * prompt.len() as f64)),
            "generate_decode_tokens_per_s": gen_out.decode_tokens_per_second(),
            "train_tokens_per_s": train_tps,
            "train_tokens_per_cpu_s": train_tpcs,
            "train_batch": [4, prompt.len()],
            "peak_rss_mb": peak_rss_mb(),
            "adapter": adapter_rates,
        })
    );
    Ok(())
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
