//! Token choice from logits: greedy at temperature 0, otherwise top-k, then top-p, then a draw
//! from a seeded generator so that a seed reproduces a generation.

use crate::error::{EngineError, Result};

/// SplitMix64: tiny, seedable, and good enough for sampling and weight initialisation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// SplitMix64's step: its state moves by this constant per draw.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed ^ GAMMA }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// What the `i`-th call of [`Rng::uniform`] from here would return (0: the next), without
    /// drawing anything: the state moves by a constant per draw, so draws can be computed in
    /// any order, on several threads.
    pub fn uniform_at(&self, i: u64) -> f64 {
        Rng { state: self.state.wrapping_add(i.wrapping_mul(GAMMA)) }.uniform()
    }

    /// Moves past `n` draws, as `n` calls of [`Rng::uniform`] would.
    pub fn skip(&mut self, n: u64) {
        self.state = self.state.wrapping_add(n.wrapping_mul(GAMMA));
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    /// 1.0 disables nucleus filtering.
    pub top_p: f64,
    /// 0 disables top-k filtering.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(EngineError::InvalidParameter {
                name: "temperature",
                message: "must be a finite number ≥ 0".into(),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::InvalidParameter {
                name: "top_p",
                message: "must be in (0, 1]".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed);
        Self { params, rng }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> =
            logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // Sorting the whole vocabulary every token is the costliest part of sampling: select
        // the top k first, and sort only when top-p needs an order.
        if self.params.top_k > 0 && self.params.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.params.top_k - 1, desc);
            candidates.truncate(self.params.top_k);
        }
        if self.params.top_p < 1.0 || self.params.top_k > 0 {
            candidates.sort_unstable_by(desc);
        } else {
            let best = candidates.iter().enumerate().min_by(|a, b| desc(a.1, b.1)).map(|(i, _)| i).unwrap_or(0);
            candidates.swap(0, best);
        }
        let t = self.params.temperature as f32;
        let max = candidates[0].1 / t;
        let mut probs: Vec<f64> =
            candidates.iter().map(|&(_, l)| ((l / t - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let sum: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let mut r = self.rng.uniform();
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return candidates[i].0;
            }
            r -= p;
        }
        candidates[probs.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws computed by index are the draws made one after the other.
    #[test]
    fn draws_by_index_match_draws_in_sequence() {
        let mut seq = Rng::new(42);
        let start = seq.clone();
        let drawn: Vec<f64> = (0..100).map(|_| seq.uniform()).collect();
        for (i, &u) in drawn.iter().enumerate() {
            assert_eq!(start.uniform_at(i as u64), u, "draw {i}");
        }
        let mut skipped = start.clone();
        skipped.skip(100);
        assert_eq!(skipped.uniform(), seq.uniform());
    }

    #[test]
    fn greedy_and_seeded_sampling() {
        let logits = vec![0.0, 3.0, 1.0, 2.9];
        assert_eq!(Sampler::new(SamplingParams::default()).sample(&logits), 1);
        let params = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 2, seed: 7 };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let mut s = Sampler::new(params);
        let b: Vec<u32> = (0..50).map(|_| s.sample(&logits)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t == 1 || t == 3));
        assert!(a.contains(&1) && a.contains(&3));
        let mut nucleus =
            Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.1, top_k: 0, seed: 1 });
        assert!((0..20).all(|_| nucleus.sample(&logits) == 1));
    }
}
