//! Training datasets on disk (R-TRAIN-1): each upload is kept as sent, under a generated name in
//! `<data_dir>/datasets/`, beside a normalized copy the trainer reads.
//!
//! The normalized copy is JSON Lines of `{"messages": [{"role", "content"}, ...]}` at
//! [`train_file`]`(file_path)`; training tasks pass exactly that path to `workbench train --data`.
pub mod parse;
pub mod stats;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use engine::TrainingExample;

pub use stats::TokenizerCache;

/// The reference model's file name in `<data_dir>/models/`: its tokenizer counts tokens when the
/// registry has no base model.
pub const REFERENCE_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where uploads are kept.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("datasets")
}

/// The normalized training file that belongs to a stored dataset file.
pub fn train_file(file_path: impl AsRef<Path>) -> PathBuf {
    file_path.as_ref().with_extension("train.jsonl")
}

/// A fresh stored-file path with `extension`: a UUID, never anything the client chose.
pub fn new_file_path(data_dir: &Path, extension: &str) -> PathBuf {
    let dir = dir(data_dir);
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    dir.join(format!("{}.{extension}", uuid::Uuid::new_v4().simple()))
}

/// Removes a file when dropped unless [`FileGuard::keep`] was called: an upload that fails
/// validation, a failed insert or a client that goes away mid-upload leaves nothing behind.
pub struct FileGuard(Option<PathBuf>);

impl FileGuard {
    pub fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("guard holds a path until kept")
    }

    pub fn keep(mut self) -> PathBuf {
        self.0.take().expect("guard holds a path until kept")
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes the normalized training file for `examples`. Blocking.
pub fn write_train_file(path: &Path, examples: &[TrainingExample]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for example in examples {
        serde_json::to_writer(&mut out, &engine::dataset::normalized_record(example))?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Reads records `offset..offset + limit` of a normalized training file (all when `limit` is
/// `None`). Blocking.
pub fn read_train_file(path: &Path, offset: usize, limit: Option<usize>) -> anyhow::Result<Vec<TrainingExample>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines().skip(offset) {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        out.push(serde_json::from_str(&line?)?);
    }
    Ok(out)
}

/// Deletes a dataset's files; ones already gone are fine.
pub fn remove_files(file_path: &Path) -> std::io::Result<()> {
    for path in [file_path.to_path_buf(), train_file(file_path)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// A name safe in a `Content-Disposition` header on any OS: no path separators, quotes or
/// control characters, at most 100 characters, never empty.
pub fn download_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() || "/\\\"'`:*?<>|;%".contains(c) { '_' } else { c })
        .take(100)
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if cleaned.is_empty() { "dataset".to_owned() } else { cleaned.to_owned() }
}

/// `attachment` with an ASCII fallback name and the UTF-8 name (RFC 6266 / 5987).
pub fn content_disposition(name: &str, extension: &str) -> String {
    let full = format!("{}.{extension}", download_name(name));
    let ascii: String = full.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '_' }).collect();
    let encoded: String = full
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_train_file_sits_beside_the_upload() {
        assert_eq!(train_file("/d/datasets/ab12.jsonl"), Path::new("/d/datasets/ab12.train.jsonl"));
        assert_eq!(train_file("/d/datasets/ab12.csv"), Path::new("/d/datasets/ab12.train.jsonl"));
    }

    #[test]
    fn download_names_are_safe() {
        assert_eq!(download_name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(download_name("  "), "dataset");
        assert_eq!(download_name("a\"b\r\nc"), "a_b__c");
        let header = content_disposition("客服 对话", "csv");
        assert_eq!(header, "attachment; filename=\"__ __.csv\"; filename*=UTF-8''%E5%AE%A2%E6%9C%8D%20%E5%AF%B9%E8%AF%9D.csv");
    }
}
