//! Top-50 logits after each reference chat prompt against llama.cpp's (shared fixtures):
//! prints the largest absolute difference per prompt. Usage: accuracy MODEL.gguf FIXTURES_DIR

use engine::{LoadOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = std::path::PathBuf::from(args.next().ok_or("usage: accuracy MODEL.gguf FIXTURES_DIR")?);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: accuracy MODEL.gguf FIXTURES_DIR")?);
    let fixtures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("llama_cpp.json"))?)?;
    let model = Model::load(&model, &LoadOptions::default())?;
    let mut worst = 0f32;
    for case in fixtures["chat"].as_array().ok_or("no chat cases")? {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone())?;
        let logits = model.last_logits(&prompt)?;
        let mut max_diff = 0f32;
        let mut sum = 0f32;
        let top = case["prompt_last_logits_top50"].as_array().ok_or("no top-50")?;
        for pair in top {
            let d = (logits[pair[0].as_u64().unwrap() as usize] - pair[1].as_f64().unwrap() as f32).abs();
            max_diff = max_diff.max(d);
            sum += d;
        }
        worst = worst.max(max_diff);
        println!("prompt of {:3} tokens: top-50 max |Δ| {max_diff:.4}, mean {:.4}", prompt.len(), sum / top.len() as f32);
    }
    println!("worst {worst:.4}");
    Ok(())
}
