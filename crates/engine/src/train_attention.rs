//! Causal self-attention for training, rotary embedding included, as one differentiable op.
//!
//! Composed from candle ops, attention took a transposed copy of q, k and v, their rotations,
//! copies of k and v per query head (grouped-query attention), a score tensor, its scaled and
//! masked copies, the softmax, and a transposed copy of the output; each of those a graph node
//! whose gradient candle's autograd allocates, zeroes and sums. Here q, k, v stay in the
//! projections' layout `[b, t, heads·d]` (a head is a strided view), the kept intermediates are
//! the rotated q and k and the probabilities `[b, heads, t, t]`, and the backward computes dq,
//! dk, dv directly.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::train_ops::{Float, Product, input_slice, mat, softmax_in_place, with_data, zeros};

/// `softmax(rope(q)·rope(k)ᵀ·scale + causal mask)·v` over `q [b, t, heads·d]`, `k`, `v [b, t,
/// kv_heads·d]` (query head `h` reads key/value head `h / (heads / kv_heads)`; interleaved
/// rotary embedding with `cos`, `sin [t, d/2]`), as `apply_op3`; the result is `[b, t,
/// heads·d]`, the output projection's input layout.
pub(crate) struct CausalAttention {
    scale: f64,
    heads: usize,
    kv_heads: usize,
    cos: Tensor,
    sin: Tensor,
    /// Set by the forward pass for the backward pass.
    saved: OnceLock<Saved>,
}

/// What the backward pass needs beyond the op's inputs.
struct Saved {
    /// `[b, heads, t, t]`, zero above the diagonal.
    probs: Tensor,
    /// The rotated q and k.
    q: Tensor,
    k: Tensor,
}

/// Sizes of one attention call.
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl Heads {
    fn of(op: &CausalAttention, q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Self> {
        let (b, t, q_cols) = q.dims3()?;
        let (heads, kv_heads) = (op.heads, op.kv_heads);
        let d = q_cols / heads.max(1);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || q_cols != heads * d || d % 2 != 0 || k.dims3()? != (b, t, kv_heads * d) || v.dims3()? != (b, t, kv_heads * d) {
            candle_core::bail!("attention: q {q:?}, k {k:?}, v {v:?} for {heads} heads and {kv_heads} key/value heads");
        }
        Ok(Self { b, t, heads, kv_heads, d })
    }

    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Row stride of q (and of the output).
    fn q_row(&self) -> usize {
        self.heads * self.d
    }

    /// Row stride of k and v.
    fn kv_row(&self) -> usize {
        self.kv_heads * self.d
    }
}

impl CausalAttention {
    pub(crate) fn new(heads: usize, kv_heads: usize, cos: Tensor, sin: Tensor) -> candle_core::Result<Self> {
        let d = 2 * cos.dim(1)?;
        Ok(Self { scale: 1.0 / (d as f64).sqrt(), heads, kv_heads, cos, sin, saved: OnceLock::new() })
    }

    /// Returns the output `[b, t, heads·d]` and the probabilities. One task per (sequence,
    /// key/value head): it owns that head's query heads' probabilities and outputs.
    fn forward<T: Float>(&self, q: &[T], k: &[T], v: &[T], s: Heads) -> (Vec<T>, Vec<T>) {
        let Heads { b, t, d, .. } = s;
        let group = s.group();
        let mut probs = zeros::<T>(b * s.heads * t * t);
        // Per head, [t, d]: written by the tasks, then interleaved into [t, heads·d].
        let mut out_by_head = zeros::<T>(b * s.heads * t * d);
        probs.par_chunks_mut(group * t * t).zip(out_by_head.par_chunks_mut(group * t * d)).enumerate().for_each(|(task, (p, o))| {
            let (seq, kv) = (task / s.kv_heads, task % s.kv_heads);
            let k_g = &k[seq * t * s.kv_row() + kv * d..];
            let v_g = &v[seq * t * s.kv_row() + kv * d..];
            for (r, (p, o)) in p.chunks_exact_mut(t * t).zip(o.chunks_exact_mut(t * d)).enumerate() {
                let q_h = &q[seq * t * s.q_row() + (kv * group + r) * d..];
                // Per band of query rows, scores q·kᵀ against the keys the band sees, each row's
                // causal softmax in place, and the output.
                for (r0, r1) in row_bands(t) {
                    let band = &mut p[r0 * t..r1 * t];
                    Product { dst: &mut *band, ldc: t, accumulate: false, m: r1 - r0, n: r1, k: d, lhs: mat(&q_h[r0 * s.q_row()..], s.q_row(), 1), rhs: mat(k_g, 1, s.kv_row()), scale: self.scale, threads: 1 }.run();
                    band.chunks_exact_mut(t).enumerate().for_each(|(i, row)| causal_softmax(row, r0 + i));
                    Product { dst: &mut o[r0 * d..r1 * d], ldc: d, accumulate: false, m: r1 - r0, n: d, k: r1, lhs: mat(band, t, 1), rhs: mat(v_g, s.kv_row(), 1), scale: 1.0, threads: 1 }.run();
                }
            }
        });
        (interleave_heads(&out_by_head, b, s.heads, t, d), probs)
    }

    /// dq, dk, dv from the output gradient `[b, t, heads·d]`.
    fn backward<T: Float>(&self, q: &[T], k: &[T], v: &[T], probs: &[T], grad: &[T], s: Heads) -> [Vec<T>; 3] {
        let Heads { b, t, d, .. } = s;
        let group = s.group();
        let mut dq = zeros::<T>(b * s.heads * t * d);
        let mut dk = zeros::<T>(b * s.kv_heads * t * d);
        let mut dv = zeros::<T>(b * s.kv_heads * t * d);
        dq.par_chunks_mut(group * t * d).zip(dk.par_chunks_mut(t * d)).zip(dv.par_chunks_mut(t * d)).enumerate().for_each(|(task, ((dq, dk), dv))| {
            let (seq, kv) = (task / s.kv_heads, task % s.kv_heads);
            let k_g = &k[seq * t * s.kv_row() + kv * d..];
            let v_g = &v[seq * t * s.kv_row() + kv * d..];
            let mut ds = zeros::<T>(t * t);
            for (r, dq) in dq.chunks_exact_mut(t * d).enumerate() {
                let h = kv * group + r;
                let q_h = &q[seq * t * s.q_row() + h * d..];
                let g_h = &grad[seq * t * s.q_row() + h * d..];
                let p = &probs[(seq * s.heads + h) * t * t..][..t * t];
                let accumulate = r > 0;
                // p and ds are zero above the diagonal: query rows r0..r1 reach keys 0..r1, and
                // key rows c0..c1 are reached from queries c0..t.
                for (r0, r1) in row_bands(t) {
                    // dp = g·vᵀ, then ds = p∘(dp − ⟨dp, p⟩)·scale row by row; entries right of
                    // the band's keys stay zero (from the allocation or an earlier head).
                    let ds_band = &mut ds[r0 * t..r1 * t];
                    Product { dst: &mut *ds_band, ldc: t, accumulate: false, m: r1 - r0, n: r1, k: d, lhs: mat(&g_h[r0 * s.q_row()..], s.q_row(), 1), rhs: mat(v_g, 1, s.kv_row()), scale: 1.0, threads: 1 }.run();
                    ds_band.chunks_exact_mut(t).zip(p[r0 * t..r1 * t].chunks_exact(t)).for_each(|(ds, p)| softmax_backward(&mut ds[..r1], &p[..r1], self.scale));
                    // dq = ds·k
                    Product { dst: &mut dq[r0 * d..r1 * d], ldc: d, accumulate: false, m: r1 - r0, n: d, k: r1, lhs: mat(ds_band, t, 1), rhs: mat(k_g, s.kv_row(), 1), scale: 1.0, threads: 1 }.run();
                }
                for (c0, c1) in row_bands(t) {
                    // dv += pᵀ·g, dk += dsᵀ·q
                    let (m, k) = (c1 - c0, t - c0);
                    Product { dst: &mut dv[c0 * d..c1 * d], ldc: d, accumulate, m, n: d, k, lhs: mat(&p[c0 * t + c0..], 1, t), rhs: mat(&g_h[c0 * s.q_row()..], s.q_row(), 1), scale: 1.0, threads: 1 }.run();
                    Product { dst: &mut dk[c0 * d..c1 * d], ldc: d, accumulate, m, n: d, k, lhs: mat(&ds[c0 * t + c0..], 1, t), rhs: mat(&q_h[c0 * s.q_row()..], s.q_row(), 1), scale: 1.0, threads: 1 }.run();
                }
            }
        });
        [interleave_heads(&dq, b, s.heads, t, d), interleave_heads(&dk, b, s.kv_heads, t, d), interleave_heads(&dv, b, s.kv_heads, t, d)]
    }
}

/// Query (or key) rows split into bands, so that the products skip the blocks above the causal
/// diagonal, about half of each: bands of 32 rows keep each product large enough to run at
/// speed.
fn row_bands(t: usize) -> impl Iterator<Item = (usize, usize)> {
    const BAND: usize = 32;
    (0..t).step_by(BAND).map(move |r0| (r0, (r0 + BAND).min(t)))
}

/// Softmax of `row[..=i]` in place (row `i` of the scores sees positions up to `i`); zero
/// beyond.
fn causal_softmax<T: Float>(row: &mut [T], i: usize) {
    let (seen, masked) = row.split_at_mut(i + 1);
    softmax_in_place(seen);
    masked.fill(T::from_f64(0.0));
}

/// `dp` becomes the score gradient `p∘(dp − ⟨dp, p⟩)·scale`.
fn softmax_backward<T: Float>(dp: &mut [T], p: &[T], scale: f64) {
    let dot: f64 = dp.iter().zip(p).map(|(g, p)| g.to_f64() * p.to_f64()).sum();
    for (g, p) in dp.iter_mut().zip(p) {
        *g = T::from_f64(p.to_f64() * (g.to_f64() - dot) * scale);
    }
}

/// `[b, heads, t, d]` → `[b, t, heads, d]`.
fn interleave_heads<T: Float>(x: &[T], b: usize, heads: usize, t: usize, d: usize) -> Vec<T> {
    let mut y = zeros::<T>(x.len());
    y.par_chunks_mut(heads * t * d).zip(x.par_chunks(heads * t * d)).take(b).for_each(|(y, x)| {
        for (h, head) in x.chunks_exact(t * d).enumerate() {
            for (i, row) in head.chunks_exact(d).enumerate() {
                y[(i * heads + h) * d..][..d].copy_from_slice(row);
            }
        }
    });
    y
}

impl candle_core::CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = Heads::of(self, l1.shape(), l2.shape(), l3.shape())?;
        let (out, saved) = match s1.dtype() {
            DType::F32 => self.forward_saving::<f32>([input_slice(s1, l1, "q")?, input_slice(s2, l2, "k")?, input_slice(s3, l3, "v")?], s)?,
            DType::F64 => self.forward_saving::<f64>([input_slice(s1, l1, "q")?, input_slice(s2, l2, "k")?, input_slice(s3, l3, "v")?], s)?,
            d => candle_core::bail!("attention: unsupported dtype {d:?}"),
        };
        if self.saved.set(saved).is_err() {
            candle_core::bail!("attention: an op instance serves one forward pass");
        }
        Ok((out, Shape::from((s.b, s.t, s.q_row()))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let s = Heads::of(self, q.shape(), k.shape(), v.shape())?;
        let Some(saved) = self.saved.get() else { candle_core::bail!("attention: backward before forward") };
        let [dq, dk, dv] = match q.dtype() {
            DType::F64 => self.backward_tensors::<f64>([&saved.q, &saved.k, v, &saved.probs, grad], s)?,
            _ => self.backward_tensors::<f32>([&saved.q, &saved.k, v, &saved.probs, grad], s)?,
        };
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

impl CausalAttention {
    /// Rotates q and k, attends, and keeps what the backward pass needs.
    fn forward_saving<T: Float>(&self, [q, k, v]: [&[T]; 3], s: Heads) -> candle_core::Result<(CpuStorage, Saved)> {
        let Heads { b, t, d, .. } = s;
        let (q, k) = with_data::<T, _>(&self.cos, |cos| {
            with_data::<T, _>(&self.sin, |sin| (rope(q, cos, sin, (t, s.heads, d), false), rope(k, cos, sin, (t, s.kv_heads, d), false)))
        })??;
        let (out, probs) = self.forward(&q, &k, v, s);
        let dev = candle_core::Device::Cpu;
        let saved = Saved {
            probs: Tensor::from_vec(probs, (b, s.heads, t, t), &dev)?,
            q: Tensor::from_vec(q, (b, t, s.q_row()), &dev)?,
            k: Tensor::from_vec(k, (b, t, s.kv_row()), &dev)?,
        };
        Ok((T::to_cpu_storage_owned(out), saved))
    }

    /// [`Self::backward`] on tensors (rotated q, rotated k, v, the probabilities, the output
    /// gradient), the rotation undone on dq and dk.
    fn backward_tensors<T: Float>(&self, tensors: [&Tensor; 5], s: Heads) -> candle_core::Result<[Tensor; 3]> {
        let contiguous = tensors.map(|t| t.contiguous());
        let mut held = Vec::with_capacity(5);
        for t in contiguous {
            held.push(t?);
        }
        let guards: Vec<_> = held.iter().map(|t| t.storage_and_layout()).collect();
        let mut slices = Vec::with_capacity(5);
        for (storage, layout) in &guards {
            let candle_core::Storage::Cpu(cpu) = &**storage else { candle_core::bail!("attention runs on the CPU") };
            slices.push(input_slice::<T>(cpu, layout, "attention operand")?);
        }
        let [dq, dk, dv] = self.backward(slices[0], slices[1], slices[2], slices[3], slices[4], s);
        let Heads { t, d, .. } = s;
        let (dq, dk) = with_data::<T, _>(&self.cos, |cos| {
            with_data::<T, _>(&self.sin, |sin| (rope(&dq, cos, sin, (t, s.heads, d), true), rope(&dk, cos, sin, (t, s.kv_heads, d), true)))
        })??;
        let dev = tensors[0].device();
        Ok([
            Tensor::from_vec(dq, (s.b, t, s.q_row()), dev)?,
            Tensor::from_vec(dk, (s.b, t, s.kv_row()), dev)?,
            Tensor::from_vec(dv, (s.b, t, s.kv_row()), dev)?,
        ])
    }
}

/// Interleaved rotary embedding of `x [b, t, heads, d]`: pairs `(x₂ᵢ, x₂ᵢ₊₁)` of each head at
/// position `p` rotated by the angle whose cosine and sine are `cos`, `sin [p, i]`; by its
/// negative when `inverse` (the backward pass: the rotation's transpose is its inverse).
fn rope<T: Float>(x: &[T], cos: &[T], sin: &[T], (t, heads, d): (usize, usize, usize), inverse: bool) -> Vec<T> {
    let half = d / 2;
    let mut y = zeros::<T>(x.len());
    let sign = if inverse { -1.0 } else { 1.0 };
    y.par_chunks_mut(heads * d).zip(x.par_chunks(heads * d)).enumerate().for_each(|(row, (y, x))| {
        let p = row % t;
        let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
        for (y, x) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            for i in 0..half {
                let (x0, x1) = (x[2 * i].to_f64(), x[2 * i + 1].to_f64());
                let (c, s) = (c[i].to_f64(), sign * s[i].to_f64());
                y[2 * i] = T::from_f64(x0 * c - x1 * s);
                y[2 * i + 1] = T::from_f64(x0 * s + x1 * c);
            }
        }
    });
    y
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Tensor, Var};

    use super::*;

    /// The same attention from candle's own differentiable ops: heads transposed out, candle's
    /// composite interleaved RoPE, k and v repeated per query head, a −∞ mask above the diagonal.
    fn composite(q: &Tensor, k: &Tensor, v: &Tensor, (heads, kv_heads): (usize, usize), cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, q_cols) = q.dims3()?;
        let d = q_cols / heads;
        let group = heads / kv_heads;
        let split = |x: &Tensor, n: usize| x.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous();
        let repeat = |x: Tensor| x.unsqueeze(2)?.repeat((1, 1, group, 1, 1))?.reshape((b, heads, t, d));
        let q = candle_nn::rotary_emb::rope_i_slow(&split(q, heads)?, cos, sin)?;
        let k = repeat(candle_nn::rotary_emb::rope_i_slow(&split(k, kv_heads)?, cos, sin)?)?;
        let v = repeat(split(v, kv_heads)?)?;
        let mask: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (t, t), q.device())?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, heads * d))
    }

    fn random(shape: (usize, usize, usize), seed: u64) -> Var {
        let mut rng = crate::sampling::Rng::new(seed);
        let data: Vec<f32> = (0..shape.0 * shape.1 * shape.2).map(|_| rng.normal()).collect();
        Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Output and input gradients in f32 against the composite, with grouped-query heads and
    /// several sequences (the f64 path is covered by the trainer's finite-difference test).
    #[test]
    fn matches_candle_composite_with_grouped_heads() {
        let (b, t, heads, kv_heads, d) = (3, 37, 6, 2, 16);
        let (q, k, v) = (random((b, t, heads * d), 1), random((b, t, kv_heads * d), 2), random((b, t, kv_heads * d), 3));
        let angles: Vec<f32> = (0..t).flat_map(|p| (0..d / 2).map(move |i| p as f32 * 0.3f32.powi(i as i32))).collect();
        let angles = Tensor::from_vec(angles, (t, d / 2), &Device::Cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        // A loss that weights every output differently, so every gradient path matters.
        let weights = random((b, t, heads * d), 4);
        let op = CausalAttention::new(heads, kv_heads, cos.clone(), sin.clone()).unwrap();
        let ours = q.as_tensor().apply_op3(k.as_tensor(), v.as_tensor(), op).unwrap();
        let reference = composite(q.as_tensor(), k.as_tensor(), v.as_tensor(), (heads, kv_heads), &cos, &sin).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-4, "outputs differ by {}", max_diff(&ours, &reference));
        let grads_ours = (ours * weights.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let grads_ref = (reference * weights.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, r) = (grads_ours.get(var.as_tensor()).unwrap(), grads_ref.get(var.as_tensor()).unwrap());
            assert!(max_diff(a, r) < 1e-3, "d{name} differs by {}", max_diff(a, r));
        }
    }
}
