//! The engine behind the command-line shapes `workbench tokenize|generate|train` will have, as
//! thin wrappers over the library (the real CLI lives in the `workbench` crate).
//!
//!   engine_cli tokenize --model M [--parse-special] TEXT
//!   engine_cli generate --model M [--adapter DIR] --messages FILE.json [--max-tokens N]
//!                       [--temperature T] [--top-p P] [--top-k K] [--seed S]
//!   engine_cli train --model M --data FILE --out DIR [--epochs N] [--lr X] [--r R] [--alpha A]

use std::collections::HashMap;
use std::path::PathBuf;

use engine::{
    ChatMessage, GenerationParams, LoadOptions, Model, SamplingParams, TrainConfig, WeightFormat,
    load_dataset,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args.split_first().ok_or("usage: engine_cli tokenize|generate|train …")?;
    let mut opts: HashMap<String, String> = HashMap::new();
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--") {
            Some(f @ ("parse-special" | "json")) => flags.push(f.to_string()),
            Some(name) => {
                opts.insert(name.to_string(), it.next().ok_or(format!("--{name} needs a value"))?.clone());
            }
            None => positional.push(a.clone()),
        }
    }
    let get = |k: &str| opts.get(k).cloned().ok_or(format!("--{k} is required"));
    let num = |k: &str, default: f64| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(opts.get(k).map(|v| v.parse()).transpose()?.unwrap_or(default))
    };
    let model_path = PathBuf::from(get("model")?);
    match command.as_str() {
        "tokenize" => {
            let model = Model::load(&model_path, &LoadOptions::default())?;
            let text = positional.first().ok_or("TEXT is required")?;
            let ids = model.tokenize(text, flags.iter().any(|f| f == "parse-special"));
            println!("{}", serde_json::json!({ "ids": ids }));
        }
        "generate" => {
            let options = LoadOptions { adapter: opts.get("adapter").map(PathBuf::from), ..Default::default() };
            let model = Model::load(&model_path, &options)?;
            let messages: Vec<ChatMessage> = serde_json::from_str(&std::fs::read_to_string(get("messages")?)?)?;
            let prompt_ids = model.chat_prompt_ids(&messages)?;
            let params = GenerationParams {
                max_tokens: num("max-tokens", 256.0)? as usize,
                sampling: SamplingParams {
                    temperature: num("temperature", 0.0)?,
                    top_p: num("top-p", 1.0)?,
                    top_k: num("top-k", 0.0)? as usize,
                    seed: num("seed", 0.0)? as u64,
                },
                stop: Vec::new(),
            };
            let out = model.generate(&prompt_ids, &params, None, &mut |d| eprint!("{d}"))?;
            eprintln!();
            println!("{}", serde_json::json!({ "prompt_ids": out.prompt_ids, "ids": out.ids, "text": out.text }));
        }
        "train" => {
            let model = Model::load(&model_path, &LoadOptions { format: WeightFormat::F32, ..Default::default() })?;
            let examples = load_dataset(&PathBuf::from(get("data")?))?;
            let config = TrainConfig {
                epochs: num("epochs", 3.0)? as usize,
                learning_rate: num("lr", 2e-4)?,
                r: num("r", 8.0)? as usize,
                alpha: num("alpha", 16.0)?,
                base_model_name: model.config().name.clone(),
                ..Default::default()
            };
            let template = model.chat_template.as_ref().ok_or("the model has no chat template")?;
            let out = PathBuf::from(get("out")?);
            engine::train(&model.llama, &model.tokenizer, template, &examples, &config, &out, &mut std::io::stdout(), None)?;
        }
        other => return Err(format!("unknown command {other}").into()),
    }
    Ok(())
}
