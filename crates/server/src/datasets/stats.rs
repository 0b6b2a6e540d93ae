//! Dataset statistics: counts known at upload, and token lengths with a base model's tokenizer,
//! computed on first request and cached in `datasets.stats` (tokenizing a large file takes
//! seconds; the page asks on every visit).
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use engine::{TokenCounter, TrainingExample};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Token lengths seen at most this many times per cached dataset entry (one per model).
const MAX_CACHED_MODELS: usize = 4;
const HISTOGRAM_BUCKETS: usize = 20;

/// What the stats column holds.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct CachedStats {
    pub basic: Option<BasicStats>,
    /// By model file path.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenStats>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct BasicStats {
    pub records: u64,
    pub messages: u64,
    /// Messages per role.
    pub roles: BTreeMap<String, u64>,
    /// Assistant replies per record (what the model learns from).
    pub turns: Summary,
    /// Characters per record, all messages together.
    pub chars: Summary,
    /// Records that start with a system message.
    pub with_system_prompt: u64,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct Summary {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub median: u64,
    pub p95: u64,
    pub total: u64,
}

impl Summary {
    fn of(values: &mut [u64]) -> Self {
        values.sort_unstable();
        let n = values.len();
        let pick = |q: f64| if n == 0 { 0 } else { values[((q * (n - 1) as f64).round() as usize).min(n - 1)] };
        let total: u64 = values.iter().sum();
        Self {
            min: values.first().copied().unwrap_or(0),
            max: values.last().copied().unwrap_or(0),
            mean: if n == 0 { 0.0 } else { total as f64 / n as f64 },
            median: pick(0.5),
            p95: pick(0.95),
            total,
        }
    }
}

/// Token counts per record with one model's tokenizer and chat template, as the trainer sees
/// them before truncation.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct TokenStats {
    /// The model whose tokenizer counted (registry name or file name).
    pub model: String,
    pub lengths: Summary,
    /// Equal-width buckets over [min, max].
    pub histogram: Vec<Bucket>,
    /// Records longer than common `max_seq_length` values (they would be truncated).
    pub over: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Inclusive.
    pub start: u64,
    /// Exclusive (inclusive for the last bucket).
    pub end: u64,
    pub count: u64,
}

pub fn basic(examples: &[TrainingExample]) -> BasicStats {
    let mut roles = BTreeMap::new();
    let mut turns = Vec::with_capacity(examples.len());
    let mut chars = Vec::with_capacity(examples.len());
    for e in examples {
        for m in &e.messages {
            *roles.entry(m.role.clone()).or_insert(0) += 1;
        }
        turns.push(e.messages.iter().filter(|m| m.role == "assistant").count() as u64);
        chars.push(e.messages.iter().map(|m| m.content.chars().count() as u64).sum());
    }
    BasicStats {
        records: examples.len() as u64,
        messages: examples.iter().map(|e| e.messages.len() as u64).sum(),
        roles,
        turns: Summary::of(&mut turns),
        chars: Summary::of(&mut chars),
        with_system_prompt: examples.iter().filter(|e| e.messages.first().is_some_and(|m| m.role == "system")).count()
            as u64,
    }
}

pub fn histogram(sorted: &[u64]) -> Vec<Bucket> {
    let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else { return Vec::new() };
    let width = (max - min).div_ceil(HISTOGRAM_BUCKETS as u64).max(1);
    let buckets = ((max - min) / width + 1) as usize;
    let mut out: Vec<Bucket> =
        (0..buckets as u64).map(|i| Bucket { start: min + i * width, end: min + (i + 1) * width, count: 0 }).collect();
    for &v in sorted {
        out[((v - min) / width) as usize].count += 1;
    }
    if let Some(last) = out.last_mut() {
        last.end = last.end.min(max.max(last.start));
    }
    out
}

pub fn tokens(counter: &TokenCounter, model: &str, examples: &[TrainingExample]) -> engine::Result<TokenStats> {
    let mut lengths = examples.iter().map(|e| counter.count(e).map(|n| n as u64)).collect::<engine::Result<Vec<_>>>()?;
    let summary = Summary::of(&mut lengths);
    let over = [256u64, 512, 1024, 2048, 4096]
        .into_iter()
        .map(|limit| (limit.to_string(), lengths.iter().filter(|&&n| n > limit).count() as u64))
        .collect();
    Ok(TokenStats { model: model.to_owned(), histogram: histogram(&lengths), lengths: summary, over })
}

impl CachedStats {
    pub fn from_column(raw: Option<&str>) -> Self {
        raw.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
    }

    pub fn to_column(&self) -> String {
        serde_json::to_string(self).expect("stats serialise")
    }

    /// Keeps the cache small: a dataset is rarely counted with more than a few models.
    pub fn insert_tokens(&mut self, key: String, stats: TokenStats) {
        if self.tokens.len() >= MAX_CACHED_MODELS && !self.tokens.contains_key(&key) {
            let first = self.tokens.keys().next().cloned().expect("not empty");
            self.tokens.remove(&first);
        }
        self.tokens.insert(key, stats);
    }
}

/// Token counters loaded from GGUF files, kept while the file is unchanged: loading one reads
/// and indexes the whole vocabulary.
#[derive(Clone, Default)]
pub struct TokenizerCache(Arc<Mutex<HashMap<PathBuf, CachedCounter>>>);

/// A counter and the modification time of the file it was loaded from.
type CachedCounter = (Option<SystemTime>, Arc<TokenCounter>);

impl TokenizerCache {
    /// Blocking: call from `spawn_blocking`.
    pub fn load(&self, path: &Path) -> engine::Result<Arc<TokenCounter>> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some((at, counter)) = self.0.lock().expect("tokenizer cache").get(path)
            && *at == modified
        {
            return Ok(counter.clone());
        }
        let counter = Arc::new(TokenCounter::from_gguf_file(path)?);
        self.0.lock().expect("tokenizer cache").insert(path.to_path_buf(), (modified, counter.clone()));
        Ok(counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_covers_every_value_once() {
        let values: Vec<u64> = (0..1000).map(|i| (i * 37) % 613 + 5).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let h = histogram(&sorted);
        assert!(h.len() <= HISTOGRAM_BUCKETS + 1);
        assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert_eq!(h[0].start, 5);
        assert!(h.last().unwrap().end >= 617);
        assert_eq!(histogram(&[7, 7, 7]), vec![Bucket { start: 7, end: 7, count: 3 }]);
        assert!(histogram(&[]).is_empty());
    }

    #[test]
    fn summary_percentiles() {
        let s = Summary::of(&mut (1..=100).collect::<Vec<u64>>());
        assert_eq!((s.min, s.max, s.median, s.p95, s.total), (1, 100, 51, 95, 5050));
    }
}
