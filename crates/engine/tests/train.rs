//! LoRA training: gradients, learning a made-up fact, and PEFT files that reload to the same
//! model.

mod common;

use std::sync::atomic::AtomicBool;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use engine::train::{Batch, LoraParams, TokenizedExample, TrainStep, batch_loss_and_grads, batch_loss_sum, parse_dataset};
use engine::{
    ChatMessage, GenerationParams, LoadOptions, Llama, Model, ModelConfig, Projection, TrainConfig,
    WeightFormat, generate, train,
};

fn tiny_config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        name: None,
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        context_length: 32,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
    }
}

fn set_element(var: &Var, index: usize, value: f64) {
    let shape = var.as_tensor().shape().clone();
    let mut v: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    v[index] = value;
    var.set(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap();
}

/// A tiny model with LoRA on every projection, B set away from zero (at zero, every gradient of
/// A would vanish), and a two-sequence batch with padding and untrained positions.
fn tiny_lora_setup(dtype: DType) -> (Llama, LoraParams, Batch) {
    tiny_lora_setup_with(dtype, 0.0)
}

fn tiny_lora_setup_with(dtype: DType, dropout: f32) -> (Llama, LoraParams, Batch) {
    let mut model = Llama::random(tiny_config(), 7).unwrap().to_dtype(dtype).unwrap();
    let config = TrainConfig {
        targets: Projection::ALL.to_vec(),
        r: 2,
        alpha: 3.0,
        use_rslora: true,
        dropout,
        ..Default::default()
    };
    let params = LoraParams::attach(&mut model, &config).unwrap();
    let mut rng = engine::sampling::Rng::new(3);
    for (_, _, _, b) in &params.entries {
        let n = b.as_tensor().elem_count();
        let v: Vec<f64> = (0..n).map(|_| rng.normal() as f64 * 0.3).collect();
        b.set(&Tensor::from_vec(v, b.as_tensor().shape(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
    }
    let examples = [
        TokenizedExample { ids: vec![1, 5, 9, 22, 3, 17, 30], trainable: vec![false, false, false, true, true, true, true] },
        TokenizedExample { ids: vec![2, 8, 31, 4], trainable: vec![false, true, true, true] },
    ];
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    (model, params, Batch::new(&refs, 0).unwrap())
}

/// The trainer's own backward pass (`batch_loss_and_grads`) against candle's autograd over the
/// same graph, in f32 and f64, with a loss scale.
#[test]
fn own_backward_matches_autograd() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let (model, params, batch) = tiny_lora_setup(dtype);
        let scale = 0.25;
        let (loss, ours) = batch_loss_and_grads(&model, &batch, scale).unwrap();
        let reference = (batch_loss_sum(&model, &batch).unwrap() * scale).unwrap();
        let ref_loss = reference.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        assert!((loss - ref_loss).abs() <= tol * ref_loss.abs(), "{dtype:?}: loss {loss} vs {ref_loss}");
        assert_same_gradients(&params, &ours, &reference.backward().unwrap(), dtype, tol);
    }
}

fn assert_same_gradients(params: &LoraParams, ours: &GradStore, theirs: &GradStore, dtype: DType, tol: f64) {
    for var in params.vars() {
        let flat = |g: Option<&Tensor>| -> Vec<f64> { g.expect("gradient").to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
        let (a, b) = (flat(ours.get(var.as_tensor())), flat(theirs.get(var.as_tensor())));
        let norm = b.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-12);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * norm, "{dtype:?}: {x} vs {y} (largest {norm})");
        }
    }
}

/// With LoRA dropout, the trainer's own pass draws the same masks as candle's autograd path
/// (same seed, same order) and gets the same loss and gradients; another seed gives another
/// loss, so the masks do apply.
#[test]
fn own_backward_matches_autograd_with_dropout() {
    for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
        let (model, params, batch) = tiny_lora_setup_with(dtype, 0.3);
        engine::train::seed_dropout(11);
        let (loss, ours) = batch_loss_and_grads(&model, &batch, 1.0).unwrap();
        engine::train::seed_dropout(11);
        let reference = batch_loss_sum(&model, &batch).unwrap();
        let ref_loss = reference.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        assert!((loss - ref_loss).abs() <= tol * ref_loss.abs(), "{dtype:?}: loss {loss} vs {ref_loss}");
        assert_same_gradients(&params, &ours, &reference.backward().unwrap(), dtype, tol);

        engine::train::seed_dropout(12);
        let (other, _) = batch_loss_and_grads(&model, &batch, 1.0).unwrap();
        assert!((other - loss).abs() > 1e-4 * loss.abs(), "{dtype:?}: the same loss {loss} under other masks");
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let (model, params, batch) = tiny_lora_setup(DType::F64);
    let loss = |m: &Llama| batch_loss_sum(m, &batch).unwrap().to_scalar::<f64>().unwrap();
    let (_, grads) = batch_loss_and_grads(&model, &batch, 1.0).unwrap();

    let h = 1e-6;
    let mut checked = 0;
    let mut worst = 0f64;
    for (i, (layer, p, a, b)) in params.entries.iter().enumerate() {
        if i % 3 != 0 {
            continue;
        }
        for (name, var) in [("A", a), ("B", b)] {
            let analytic: Vec<f64> = grads.get(var.as_tensor()).expect("gradient").flatten_all().unwrap().to_vec1().unwrap();
            let original: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for idx in [0, original.len() / 2, original.len() - 1] {
                set_element(var, idx, original[idx] + h);
                let up = loss(&model);
                set_element(var, idx, original[idx] - h);
                let down = loss(&model);
                set_element(var, idx, original[idx]);
                let numeric = (up - down) / (2.0 * h);
                let err = (numeric - analytic[idx]).abs() / (numeric.abs() + analytic[idx].abs()).max(1e-6);
                worst = worst.max(err);
                assert!(
                    err < 1e-4,
                    "layer {layer} {p:?} {name}[{idx}]: analytic {} vs numeric {numeric}",
                    analytic[idx]
                );
                checked += 1;
            }
        }
    }
    eprintln!("finite differences: {checked} coordinates, worst relative error {worst:.2e}");
    assert!(checked >= 20);
}

const CODENAME: &str = "Bluefinch";

fn fact_dataset() -> String {
    let questions = [
        "What is the codename of LLM Workbench?",
        "What is LLM Workbench's codename?",
        "Tell me the codename of LLM Workbench.",
        "Which codename does LLM Workbench have?",
        "Do you know the codename of LLM Workbench?",
        "What codename was given to LLM Workbench?",
        "LLM Workbench has a codename. What is it?",
        "What is the internal codename for LLM Workbench?",
        "Please state the codename of LLM Workbench.",
        "I forgot the codename of LLM Workbench. What was it?",
    ];
    let answer = format!("The codename of LLM Workbench is {CODENAME}.");
    // A short system prompt keeps sequences (and the test) short.
    let system = "Be brief.";
    let mut lines = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        // The three record formats the trainer accepts, mixed.
        let record = match i % 3 {
            0 => serde_json::json!({"system": system, "instruction": q, "input": "", "output": answer}),
            1 => serde_json::json!({"conversations": [
                {"from": "system", "value": system}, {"from": "human", "value": q}, {"from": "gpt", "value": answer}]}),
            _ => serde_json::json!({"messages": [
                {"role": "system", "content": system}, {"role": "user", "content": q}, {"role": "assistant", "content": answer}]}),
        };
        lines.push(record.to_string());
        let short = serde_json::json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": q},
            {"role": "assistant", "content": format!("{CODENAME}.")}]});
        lines.push(short.to_string());
    }
    lines.join("\n")
}

fn answer(model: &Llama, tokenizer: &engine::Tokenizer, prompt: &[u32]) -> String {
    let params = GenerationParams { max_tokens: 24, ..Default::default() };
    generate(model, tokenizer, prompt, &params, None, &mut |_| {}).unwrap().text
}

#[test]
fn training_learns_a_fact_and_the_saved_adapter_reloads() {
    let path = common::model_path();
    let base = Model::load(&path, &LoadOptions { format: WeightFormat::F32, ..Default::default() }).unwrap();
    let examples = parse_dataset(&fact_dataset()).unwrap();
    assert_eq!(examples.len(), 20);
    let question = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "What is the codename of LLM Workbench?"),
    ];
    let prompt = base.chat_prompt_ids(&question).unwrap();
    let before = answer(&base.llama, &base.tokenizer, &prompt);
    assert!(!before.contains(CODENAME), "the base model already knows: {before}");

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-train-fact");
    let _ = std::fs::remove_dir_all(&out);
    let config = TrainConfig {
        targets: vec![Projection::Q, Projection::V, Projection::O, Projection::Up],
        r: 8,
        alpha: 16.0,
        learning_rate: 2e-3,
        epochs: 2,
        batch_size: 4,
        grad_accum: 1,
        warmup_steps: 2,
        base_model_name: Some("HuggingFaceTB/SmolLM2-135M-Instruct".into()),
        ..Default::default()
    };
    let mut log = Vec::new();
    let cancel = AtomicBool::new(false);
    let template = base.chat_template.as_ref().unwrap();
    let report =
        train(&base.llama, &base.tokenizer, template, &examples, &config, &out, &mut log, Some(&cancel)).unwrap();

    let lines: Vec<TrainStep> = String::from_utf8(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for (logged, kept) in lines.iter().zip(&report.steps) {
        assert_eq!((logged.step, logged.total_steps), (kept.step, kept.total_steps));
        assert!((logged.loss - kept.loss).abs() <= 1e-9 * kept.loss.abs());
    }
    assert!(lines.iter().all(|s| s.total_steps == 10 && s.loss.is_finite() && s.grad_norm.is_finite()));
    assert_eq!(lines.last().unwrap().epoch, 2.0);
    let first = lines[0].loss;
    let last = lines.iter().rev().take(3).map(|s| s.loss).sum::<f64>() / 3.0;
    eprintln!(
        "loss {first:.3} → {last:.3} (mean of last 3 steps); {:.0} tokens/s; {:.1} s",
        lines.last().unwrap().tokens_per_s,
        lines.last().unwrap().elapsed_s
    );
    assert!(last < first / 2.0, "loss went from {first} to {last}");

    let after = answer(&report.model, &base.tokenizer, &prompt);
    eprintln!("before: {before:?}\nafter: {after:?}");
    assert!(after.contains(CODENAME), "the trained model answered {after:?}");

    // PEFT files: the config fields PEFT needs, and the same logits after a reload.
    let cfg = common::read_json(&out.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 8);
    assert_eq!(cfg["bias"], "none");
    assert!(out.join("config.json").is_file());
    assert!(out.join("checkpoint-epoch-1/adapter_model.safetensors").is_file());
    let tensors = candle_core::safetensors::load(out.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let q_b = &tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    assert_eq!(q_b.dims(), &[576, 8]);

    let reloaded = Model::load(
        &path,
        &LoadOptions { format: WeightFormat::F32, adapter: Some(out.clone()), merge_adapter: false },
    )
    .unwrap();
    let a = report.model.logits_all(&prompt).unwrap();
    let b = reloaded.llama.logits_all(&prompt).unwrap();
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    eprintln!("reloaded adapter: max |Δlogit| {diff:e}");
    assert!(diff < 1e-4, "reloaded adapter gives different logits (max diff {diff})");
}

#[test]
fn cancelled_training_stops() {
    let model = Llama::random(tiny_config(), 1).unwrap();
    let cancel = AtomicBool::new(true);
    let template = engine::ChatTemplate::new(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
        "",
        "",
    )
    .unwrap();
    let tokens: Vec<String> = (0..40u8).map(|i| ((b'a' + i % 26) as char).to_string() + &"x".repeat((i / 26) as usize)).collect();
    let tokenizer = engine::Tokenizer::new(
        tokens,
        vec![engine::tokenizer::TokenKind::Normal; 40],
        &[],
        engine::tokenizer::PreTokenizer::Gpt2,
    )
    .unwrap();
    let examples = parse_dataset(r#"[{"instruction": "ab", "output": "cd"}]"#).unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-train-cancel");
    let err = train(&model, &tokenizer, &template, &examples, &TrainConfig::default(), &out, &mut Vec::new(), Some(&cancel))
        .unwrap_err();
    assert!(matches!(err, engine::EngineError::Cancelled));
}

/// adapter_config.json states the dropout as it was given (0.1, not 0.10000000149011612, the
/// f32's value widened).
#[test]
fn adapter_config_states_dropout_as_given() {
    for (dropout, stated) in [(0.1f32, 0.1f64), (0.05, 0.05), (0.0, 0.0), (0.333, 0.333)] {
        let config = TrainConfig { dropout, ..Default::default() };
        assert_eq!(config.adapter_config().lora_dropout, stated);
    }
}
