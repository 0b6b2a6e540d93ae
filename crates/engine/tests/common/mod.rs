//! Locating the reference model and fixtures. Missing files fail the test with a message saying
//! how to get them: a skipped correctness test would read as a pass.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

pub fn model_path() -> PathBuf {
    let path = match std::env::var_os("WORKBENCH_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            let data = std::env::var_os("WORKBENCH_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("data"));
            let data = if data.is_absolute() { data } else { workspace_root().join(data) };
            data.join("models").join(MODEL_FILE)
        }
    };
    assert!(
        path.is_file(),
        "reference model not found at {}: run scripts/fetch-model.sh (or set WORKBENCH_MODEL)",
        path.display()
    );
    path
}

pub fn fixtures_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("WORKBENCH_FIXTURES") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            workspace_root().join("../shared/fixtures/reference"),
            workspace_root().join("shared/fixtures/reference"),
        ],
    };
    candidates
        .iter()
        .find(|p| p.join("llama_cpp.json").is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("reference fixtures not found in {candidates:?} (set WORKBENCH_FIXTURES)")
        })
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}
