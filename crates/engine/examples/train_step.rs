//! Profiling target: only the LoRA training step of `bench` (r=8, alpha=16, q/k/v/o, batch 4 ×
//! sequence 128, AdamW), without the inference measurements before it, so that `perf record`
//! sees nothing else. Prints wall and CPU seconds per step.
//!
//! Usage: train_step MODEL.gguf [STEPS]

use std::time::Instant;

use candle_nn::Optimizer;
use engine::train::{Batch, LoraParams, TokenizedExample, batch_loss_and_grads};
use engine::{LoadOptions, Model, TrainConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the trainer process does (`workbench train`).
    engine::train::configure_malloc_for_training();
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().ok_or("usage: train_step MODEL.gguf [STEPS]")?);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let model = Model::load(&path, &LoadOptions::default())?;
    let text = "The history of the printing press begins in the fifteenth century, when movable type \
                changed how books were made and how knowledge spread across Europe. ".repeat(6);
    let mut prompt = model.tokenize(&text, false);
    prompt.truncate(128);
    let mut train_model = model.llama.to_f32()?;
    let lora = LoraParams::attach(&mut train_model, &TrainConfig { r: 8, alpha: 16.0, ..Default::default() })?;
    let example = TokenizedExample { ids: prompt.clone(), trainable: vec![true; prompt.len()] };
    let batch = Batch::new(&[&example, &example, &example, &example], 0)?;
    let mut opt = candle_nn::AdamW::new_lr(lora.vars().cloned().collect(), 1e-4)?;
    for step in 0..steps {
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        let (loss, grads) = batch_loss_and_grads(&train_model, &batch, 1.0)?;
        let passes = t.elapsed().as_secs_f64();
        opt.step(&grads)?;
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "step {step}: loss {:.4} forward+backward {passes:.3}s total {wall:.3}s cpu {cpu:.2}s  {:.1} tok/s {:.1} tok/cpu-s",
            loss / batch.target_tokens as f64,
            batch.tokens as f64 / wall,
            batch.tokens as f64 / cpu
        );
    }
    Ok(())
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
