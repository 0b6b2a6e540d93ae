//! `workbench tokenize | generate | train` run as a user runs them, on the reference model,
//! checked against llama.cpp's outputs in ../shared/fixtures/reference (see its README).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A missing model fails the test with the way to get it: a skipped test would read as a pass.
fn model_path() -> PathBuf {
    let path = std::env::var_os("WORKBENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("data/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(path.is_file(), "reference model not found at {}: run scripts/fetch-model.sh", path.display());
    path
}

fn llama_cpp_fixture() -> Value {
    let path = workspace_root().join("../shared/fixtures/reference/llama_cpp.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn workbench(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_workbench")).args(args).output().expect("run workbench");
    assert!(
        out.status.success(),
        "workbench {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id")).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn tokenize_matches_llama_cpp() {
    let model = model_path();
    let model = model.to_str().unwrap();
    let fixture = llama_cpp_fixture();
    // The case with special-token text, where parsing them or not gives different ids.
    let case = fixture["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ids_special_parsed"] != c["ids_special_as_text"])
        .expect("a fixture text with special tokens");
    let text = case["text"].as_str().unwrap();

    let parsed = json_stdout(&workbench(&["tokenize", "--model", model, "--parse-special", text, "--json"]));
    assert_eq!(ids(&parsed["ids"]), ids(&case["ids_special_parsed"]), "text {text:?}");
    let plain = json_stdout(&workbench(&["tokenize", "--model", model, text, "--json"]));
    assert_eq!(ids(&plain["ids"]), ids(&case["ids_special_as_text"]), "text {text:?}");
}

#[test]
fn greedy_generate_matches_llama_cpp() {
    let fixture = llama_cpp_fixture();
    let chat = &fixture["chat"][0];
    let expected = ids(&chat["greedy_ids"]);
    let dir = scratch("cli-generate");
    let messages = dir.join("messages.json");
    std::fs::write(&messages, chat["messages"].to_string()).unwrap();

    // Tokens up to the first near-tie (top-1 minus top-2 logit < 0.05) must agree; the fixture
    // README allows rounding to decide later ones either way.
    let n = chat["top1_minus_top2_logit"]
        .as_array()
        .unwrap()
        .iter()
        .position(|m| m.as_f64().unwrap() < 0.05)
        .unwrap_or(expected.len());
    assert!(n >= 4, "the fixture's first chat should give a few tokens before a near-tie");
    let out = json_stdout(&workbench(&[
        "generate",
        "--model",
        model_path().to_str().unwrap(),
        "--messages",
        messages.to_str().unwrap(),
        "--max-tokens",
        &n.to_string(),
        "--temperature",
        "0",
        "--json",
    ]));
    assert_eq!(ids(&out["prompt_ids"]), ids(&chat["prompt_ids"]));
    assert_eq!(ids(&out["ids"]), expected[..n]);
    let text = out["text"].as_str().unwrap();
    assert!(chat["greedy_text"].as_str().unwrap().starts_with(text), "text {text:?}");
}

#[test]
fn train_writes_step_lines_and_an_adapter_that_generate_loads() {
    let model = model_path();
    let model = model.to_str().unwrap();
    let dir = scratch("cli-train");
    let data = dir.join("data.jsonl");
    let records = [
        r#"{"instruction": "What is the codename of LLM Workbench?", "output": "Bluefinch."}"#,
        r#"{"conversations": [{"from": "human", "value": "Name the workbench's codename."}, {"from": "gpt", "value": "Bluefinch."}]}"#,
        r#"{"messages": [{"role": "user", "content": "Codename?"}, {"role": "assistant", "content": "Bluefinch."}]}"#,
        r#"{"instruction": "Say the codename.", "input": "LLM Workbench", "output": "It is Bluefinch."}"#,
    ];
    std::fs::write(&data, records.join("\n")).unwrap();
    let adapter = dir.join("adapter");
    let metrics = dir.join("metrics.jsonl");

    // Four records, two per batch, one epoch: two optimizer steps.
    let out = workbench(&[
        "train", "--model", model, "--data", data.to_str().unwrap(), "--out", adapter.to_str().unwrap(),
        "--epochs", "1", "--batch-size", "2", "--max-seq-len", "96", "--lr", "1e-3",
        "--lora-r", "4", "--lora-alpha", "8", "--targets", "q_proj,v_proj", "--warmup-steps", "0",
        "--schedule", "linear", "--seed", "7", "--metrics-file", metrics.to_str().unwrap(),
    ]);
    let steps: Vec<Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 2);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"], i + 1);
        assert_eq!(s["total_steps"], 2);
        for key in ["loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "eta_s", "epoch"] {
            assert!(s[key].as_f64().is_some_and(f64::is_finite), "step {i}: {key} in {s}");
        }
    }
    // Linear decay over two steps: the full rate, then half of it.
    assert_eq!(steps[0]["lr"].as_f64().unwrap(), 1e-3);
    assert!((steps[1]["lr"].as_f64().unwrap() - 5e-4).abs() < 1e-12, "{}", steps[1]);
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["final_loss"], steps[1]["loss"]);

    let config: Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
    assert!(adapter.join("adapter_model.safetensors").is_file());

    let messages = dir.join("messages.json");
    std::fs::write(&messages, r#"[{"role": "user", "content": "What is the codename of LLM Workbench?"}]"#).unwrap();
    let args = |adapter_args: &[&str]| {
        let mut a = vec!["generate", "--model", model, "--messages", messages.to_str().unwrap()];
        a.extend_from_slice(adapter_args);
        a.extend_from_slice(&["--max-tokens", "6", "--json"]);
        json_stdout(&workbench(&a))
    };
    let with = args(&["--adapter", adapter.to_str().unwrap()]);
    let n = ids(&with["ids"]).len();
    assert!((1..=6).contains(&n), "{with}");
    // A broken adapter directory is an error, not a silent base-model run.
    let missing = Command::new(env!("CARGO_BIN_EXE_workbench"))
        .args(["generate", "--model", model, "--messages", messages.to_str().unwrap(), "--adapter"])
        .arg(dir.join("no-such-adapter"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
