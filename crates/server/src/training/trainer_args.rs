//! `training_configs.config_data` → `workbench train` flags. Missing keys keep the trainer's
//! defaults; the configs API validates values, so an unusable one here is skipped with a
//! warning for the task log rather than failing the task.
use serde_json::Value;

/// Flags for `workbench train` and warnings about keys that were skipped. `records` is the
/// number of training examples, needed to turn `warmup_ratio` into steps.
pub fn trainer_flags(config: &Value, records: usize) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut warnings = Vec::new();
    let mut push = |flag: &str, value: String| {
        flags.push(flag.to_owned());
        flags.push(value);
    };
    let number = |key: &str| config.get(key).and_then(Value::as_f64);
    let count = |key: &str| config.get(key).and_then(Value::as_u64);

    if let Some(v) = number("learning_rate") {
        push("--lr", v.to_string());
    }
    if let Some(v) = count("epochs") {
        push("--epochs", v.to_string());
    }
    if let Some(v) = count("batch_size") {
        push("--batch-size", v.to_string());
    }
    if let Some(v) = count("gradient_accumulation").or_else(|| count("gradient_accumulation_steps")) {
        push("--grad-accum", v.to_string());
    }
    if let Some(v) = count("max_seq_length") {
        push("--max-seq-len", v.to_string());
    }
    if let Some(v) = count("lora_r") {
        push("--lora-r", v.to_string());
    }
    if let Some(v) = number("lora_alpha") {
        push("--lora-alpha", v.to_string());
    }
    if let Some(v) = number("lora_dropout") {
        push("--lora-dropout", v.to_string());
    }
    if let Some(modules) = config.get("target_modules").and_then(Value::as_array) {
        let names: Vec<&str> = modules.iter().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            push("--targets", names.join(","));
        }
    }
    if let Some(v) = count("warmup_steps") {
        push("--warmup-steps", v.to_string());
    } else if let Some(ratio) = number("warmup_ratio") {
        let steps_per_epoch =
            records.div_ceil(count("batch_size").unwrap_or(4).max(1) as usize).div_ceil(
                count("gradient_accumulation").or_else(|| count("gradient_accumulation_steps")).unwrap_or(1).max(1) as usize,
            );
        let total = steps_per_epoch * count("epochs").unwrap_or(3) as usize;
        push("--warmup-steps", ((ratio * total as f64).round() as usize).to_string());
    }
    match config.get("scheduler").and_then(Value::as_str) {
        None => {}
        Some(s @ ("cosine" | "linear" | "constant")) => push("--schedule", s.to_owned()),
        Some("constant_with_warmup") => push("--schedule", "constant".to_owned()),
        Some(other) => warnings.push(format!("scheduler {other:?} is not supported by the trainer; using cosine")),
    }
    if let Some(v) = number("weight_decay") {
        push("--weight-decay", v.to_string());
    }
    if let Some(v) = number("max_grad_norm") {
        push("--max-grad-norm", v.to_string());
    }
    if let Some(v) = count("seed") {
        push("--seed", v.to_string());
    }
    if config.get("rslora").or_else(|| config.get("use_rslora")).and_then(Value::as_bool) == Some(true) {
        flags.push("--rslora".to_owned());
    }
    (flags, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_every_key_and_leaves_missing_ones_to_the_trainer() {
        let (flags, warnings) = trainer_flags(
            &json!({"learning_rate": 0.001, "epochs": 2, "batch_size": 2, "gradient_accumulation": 2,
                    "max_seq_length": 64, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
                    "target_modules": ["q_proj", "v_proj"], "warmup_ratio": 0.5, "scheduler": "linear",
                    "seed": 7, "max_grad_norm": 1.0, "rslora": true}),
            8,
        );
        assert!(warnings.is_empty());
        let text = flags.join(" ");
        assert_eq!(
            text,
            "--lr 0.001 --epochs 2 --batch-size 2 --grad-accum 2 --max-seq-len 64 --lora-r 4 --lora-alpha 8 \
             --lora-dropout 0.05 --targets q_proj,v_proj --warmup-steps 2 --schedule linear --max-grad-norm 1 --seed 7 --rslora"
        );
        assert!(trainer_flags(&json!({}), 10).0.is_empty());
    }

    #[test]
    fn unknown_scheduler_is_a_warning() {
        let (flags, warnings) = trainer_flags(&json!({"scheduler": "polynomial", "warmup_steps": 3}), 4);
        assert_eq!(flags, ["--warmup-steps", "3"]);
        assert_eq!(warnings.len(), 1);
    }
}
