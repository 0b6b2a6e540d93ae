//! Per-answer metrics, measured by the server the same way for every provider (R-CHAT-4).
use std::time::Instant;

use llm::Usage;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the `done` event and the saved message carry.
///
/// Token counts are the provider's usage when it reports one (`reasoning_tokens` as reported,
/// answer tokens = completion tokens minus reasoning tokens); otherwise, and when the provider
/// reports a total without saying how much of it was reasoning while reasoning was streamed, they
/// are the number of streamed deltas (`token_source` says which).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq)]
pub struct Metrics {
    /// Request start to the first reasoning or answer delta.
    pub ttft_ms: Option<f64>,
    /// Request start to the first answer delta.
    pub ttfa_ms: Option<f64>,
    pub reasoning_tokens: u32,
    pub answer_tokens: u32,
    /// Answer tokens over the time from the first to the last answer delta; null with fewer than
    /// two answer deltas.
    pub answer_tokens_per_s: Option<f64>,
    pub total_ms: f64,
    /// `usage` (the provider's report) or `deltas` (counted by the server).
    pub token_source: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

impl Metrics {
    /// For an answer whose measurements were lost with the server (an interrupted comparison).
    pub fn unmeasured() -> Self {
        Self {
            ttft_ms: None,
            ttfa_ms: None,
            reasoning_tokens: 0,
            answer_tokens: 0,
            answer_tokens_per_s: None,
            total_ms: 0.0,
            token_source: "deltas".to_owned(),
            prompt_tokens: None,
            completion_tokens: None,
        }
    }
}

/// Timestamps and counts collected while an answer streams.
pub struct Meter {
    started: Instant,
    first_token: Option<Instant>,
    first_answer: Option<Instant>,
    last_answer: Option<Instant>,
    reasoning_deltas: u32,
    answer_deltas: u32,
    usage: Option<Usage>,
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to.duration_since(from).as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

impl Meter {
    pub fn start(started: Instant) -> Self {
        Self {
            started,
            first_token: None,
            first_answer: None,
            last_answer: None,
            reasoning_deltas: 0,
            answer_deltas: 0,
            usage: None,
        }
    }

    pub fn reasoning(&mut self, at: Instant) {
        self.first_token.get_or_insert(at);
        self.reasoning_deltas += 1;
    }

    pub fn answer(&mut self, at: Instant) {
        self.first_token.get_or_insert(at);
        self.first_answer.get_or_insert(at);
        self.last_answer = Some(at);
        self.answer_deltas += 1;
    }

    pub fn usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn finish(&self, ended: Instant) -> Metrics {
        let from_usage = self.usage.filter(|u| u.reasoning_tokens.is_some() || self.reasoning_deltas == 0);
        let (reasoning_tokens, answer_tokens, token_source) = match from_usage {
            Some(u) => {
                let reasoning = u.reasoning_tokens.unwrap_or(0);
                (reasoning, u.completion_tokens.saturating_sub(reasoning), "usage")
            }
            None => (self.reasoning_deltas, self.answer_deltas, "deltas"),
        };
        let answer_tokens_per_s = match (self.first_answer, self.last_answer) {
            (Some(first), Some(last)) if last > first && self.answer_deltas >= 2 => {
                let secs = last.duration_since(first).as_secs_f64();
                Some((f64::from(answer_tokens) / secs * 100.0).round() / 100.0)
            }
            _ => None,
        };
        Metrics {
            ttft_ms: self.first_token.map(|t| ms(self.started, t)),
            ttfa_ms: self.first_answer.map(|t| ms(self.started, t)),
            reasoning_tokens,
            answer_tokens,
            answer_tokens_per_s,
            total_ms: ms(self.started, ended),
            token_source: token_source.to_owned(),
            prompt_tokens: self.usage.map(|u| u.prompt_tokens),
            completion_tokens: self.usage.map(|u| u.completion_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_is_answer_tokens_over_the_answer_span() {
        let t0 = Instant::now();
        let mut meter = Meter::start(t0);
        meter.reasoning(t0 + Duration::from_millis(10));
        meter.answer(t0 + Duration::from_millis(100));
        meter.answer(t0 + Duration::from_millis(300));
        meter.answer(t0 + Duration::from_millis(600));
        let m = meter.finish(t0 + Duration::from_millis(700));
        assert_eq!((m.ttft_ms, m.ttfa_ms, m.total_ms), (Some(10.0), Some(100.0), 700.0));
        assert_eq!((m.reasoning_tokens, m.answer_tokens, m.token_source.as_str()), (1, 3, "deltas"));
        assert_eq!(m.answer_tokens_per_s, Some(6.0), "3 tokens over 0.5 s");
    }

    #[test]
    fn provider_usage_wins_when_it_separates_reasoning() {
        let t0 = Instant::now();
        let mut meter = Meter::start(t0);
        meter.reasoning(t0);
        meter.answer(t0 + Duration::from_millis(1));
        meter.usage(Usage { prompt_tokens: 5, completion_tokens: 30, reasoning_tokens: Some(10) });
        let m = meter.finish(t0 + Duration::from_millis(2));
        assert_eq!((m.reasoning_tokens, m.answer_tokens, m.token_source.as_str()), (10, 20, "usage"));
        assert_eq!(m.answer_tokens_per_s, None, "one delta has no span");

        // A total that hides the reasoning share is not split by guesswork.
        let mut meter = Meter::start(t0);
        meter.reasoning(t0);
        meter.answer(t0);
        meter.usage(Usage { prompt_tokens: 5, completion_tokens: 30, reasoning_tokens: None });
        let m = meter.finish(t0);
        assert_eq!((m.reasoning_tokens, m.answer_tokens, m.token_source.as_str()), (1, 1, "deltas"));
        assert_eq!(m.completion_tokens, Some(30));
    }
}
