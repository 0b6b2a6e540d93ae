//! Autoregressive generation with a KV cache, streaming text deltas as they become final.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::model::{KvCache, Llama};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Tokenizer, Utf8Stream};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these; they are not emitted.
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self { max_tokens: 256, sampling: SamplingParams::default(), stop: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
    Cancelled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids, including the end-of-generation token when there was one.
    pub ids: Vec<u32>,
    /// Generated text without special tokens and without the stop string.
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_seconds: f64,
    pub decode_seconds: f64,
}

impl Generation {
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.ids.len().saturating_sub(1);
        if self.decode_seconds > 0.0 { n as f64 / self.decode_seconds } else { 0.0 }
    }

    pub fn prompt_tokens_per_second(&self) -> f64 {
        if self.prompt_seconds > 0.0 { self.prompt_ids.len() as f64 / self.prompt_seconds } else { 0.0 }
    }
}

/// Holds back text that might be the start of a stop string, so no stop string prefix is ever
/// streamed out.
struct StopMatcher<'a> {
    stops: &'a [String],
    pending: String,
}

impl<'a> StopMatcher<'a> {
    /// Returns (text safe to emit, whether a stop string was hit).
    fn push(&mut self, delta: &str) -> (String, bool) {
        self.pending.push_str(delta);
        if let Some(pos) =
            self.stops.iter().filter(|s| !s.is_empty()).filter_map(|s| self.pending.find(s.as_str())).min()
        {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.len() > suffix.len() && s.starts_with(suffix)) {
                best = best.max(suffix.len());
                break;
            }
        }
        best
    }

    fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Runs the model from `prompt_ids`. `on_delta` receives text as soon as it is final (whole
/// characters, never part of a stop string). `cancel` is checked between tokens; a cancelled
/// generation returns what it has with [`FinishReason::Cancelled`].
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &GenerationParams,
    cancel: Option<&AtomicBool>,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Generation> {
    params.sampling.validate()?;
    if prompt_ids.is_empty() {
        return Err(EngineError::InvalidParameter { name: "prompt", message: "empty prompt".into() });
    }
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut cache = KvCache::new();
    let mut utf8 = Utf8Stream::new();
    let mut stops = StopMatcher { stops: &params.stop, pending: String::new() };
    let mut ids = Vec::new();
    let mut text = String::new();
    let context = model.config.context_length;

    let start = Instant::now();
    let mut prompt_seconds = 0.0;
    let mut next_input: Vec<u32> = prompt_ids.to_vec();
    let finish_reason = loop {
        if cancelled() {
            break FinishReason::Cancelled;
        }
        if ids.len() >= params.max_tokens || cache.len() + next_input.len() > context {
            break FinishReason::Length;
        }
        let logits = model.forward_last(&next_input, &mut cache)?.to_vec1::<f32>()?;
        if ids.is_empty() {
            prompt_seconds = start.elapsed().as_secs_f64();
        }
        let id = sampler.sample(&logits);
        ids.push(id);
        if tokenizer.is_end_of_generation(id) {
            break FinishReason::Eos;
        }
        let delta = utf8.push(&tokenizer.token_bytes(id, false));
        let (emit, hit) = stops.push(&delta);
        if !emit.is_empty() {
            text.push_str(&emit);
            on_delta(&emit);
        }
        if hit {
            break FinishReason::Stop;
        }
        next_input = vec![id];
    };
    if finish_reason != FinishReason::Stop {
        let tail = utf8.finish();
        let (mut emit, hit) = stops.push(&tail);
        if !hit {
            emit.push_str(&stops.finish());
        }
        if !emit.is_empty() {
            text.push_str(&emit);
            on_delta(&emit);
        }
    }
    let decode_seconds = start.elapsed().as_secs_f64() - prompt_seconds;
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text,
        finish_reason,
        prompt_seconds,
        decode_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher { stops: &stops, pending: String::new() };
        let mut out = String::new();
        for c in chunks {
            let (e, hit) = m.push(c);
            out.push_str(&e);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_across_chunks() {
        assert_eq!(run(&["END"], &["abc E", "N", "D more"]), ("abc ".into(), true));
        assert_eq!(run(&["END"], &["abc E", "x"]), ("abc Ex".into(), false));
        assert_eq!(run(&["\n\n"], &["a\n", "b"]), ("a\nb".into(), false));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&[], &["x", "y"]), ("xy".into(), false));
    }
}
