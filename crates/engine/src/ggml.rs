//! llama.cpp's CPU arithmetic for the non-matmul parts of a llama layer, reproduced operation for
//! operation, so that quantized inference gives llama.cpp's logits bit for bit.
//!
//! Why it matters: activations are quantized to 8 bits before every matmul, so a last-bit
//! difference anywhere re-rounds some quants downstream and the logits move by 0.3–0.7. llama.cpp
//! itself lands 0.70 away from its own output when only its attention kernel changes (flash
//! attention on). With every step below matched, the engine reproduces llama-cpp-python 0.3.36's
//! logits (x86-64 build with AVX-512, flash attention off) exactly.
//!
//! What llama.cpp does, and what each function reproduces:
//! - rms norm: sum of squares in f64, `x · (1/√(mean+ε)) · w` in f32 ([`rms_norm`]);
//! - rotary tables: θ multiplied by `base^(−2/d)` step by step in f32 ([`rope_tables`]), rotation
//!   with fused multiply-adds as GCC contracts `x0·c − x1·s` ([`rope`]);
//! - attention: K and V cached as f16, Q converted to f16 for the K·Q product, products summed
//!   in 16 lanes by fused multiply-adds then folded in `_mm512_reduce_add_ps` order; softmax with
//!   ggml's vectorised `expf` and an f64 sum; probabilities converted to f16 for P·V ([`attention`]);
//! - SwiGLU with ggml's vectorised `expf` ([`swiglu`]).
//!
//! The arithmetic is plain Rust (`mul_add` is an exact fused multiply-add on every target), so the
//! result does not depend on the CPU; on x86-64 the loops are compiled for FMA when it is present.

use candle_core::Tensor;
use half::f16;
use rayon::prelude::*;

use crate::config::ModelConfig;

/// Sum of 16 lanes in the order GCC's `_mm512_reduce_add_ps` uses.
#[inline(always)]
fn reduce16(l: &[f32; 16]) -> f32 {
    let mut t3 = [0f32; 8];
    for i in 0..8 {
        t3[i] = l[8 + i] + l[i];
    }
    let t6 = [t3[4] + t3[0], t3[5] + t3[1], t3[6] + t3[2], t3[7] + t3[3]];
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// `GGML_F32x16_REDUCE`'s pairwise fold of four accumulators, before the 16-lane sum.
#[inline(always)]
fn fold4(a0: &[f32; 16], a1: &[f32; 16], a2: &[f32; 16], a3: &[f32; 16]) -> [f32; 16] {
    std::array::from_fn(|l| (a0[l] + a2[l]) + (a1[l] + a3[l]))
}

/// K·Q as llamafile's tinyBLAS computes it for several queries: one 16-lane accumulator.
#[inline(always)]
fn dot_tiled(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (xc, yc) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
        for lane in 0..16 {
            acc[lane] = xc[lane].mul_add(yc[lane], acc[lane]);
        }
    }
    reduce16(&acc)
}

/// [`dot_tiled`] with the 16 lanes in two AVX registers (the compiler splits the plain loop
/// into two-lane pieces). The lane reduction is [`reduce16`]'s: upper eight onto lower eight,
/// upper four onto lower four, then `(l0 + l2) + (l1 + l3)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_tiled_avx2(x: &[f32], y: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len()) / 16 * 16;
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for c in (0..n).step_by(16) {
        // SAFETY: c + 16 ≤ n, within both slices.
        unsafe {
            let (xp, yp) = (x.as_ptr().add(c), y.as_ptr().add(c));
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(xp), _mm256_loadu_ps(yp), lo);
            hi = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), _mm256_loadu_ps(yp.add(8)), hi);
        }
    }
    let t3 = _mm256_add_ps(hi, lo);
    let t6 = _mm_add_ps(_mm256_extractf128_ps::<1>(t3), _mm256_castps256_ps128(t3));
    let u = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
    _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)))
}

/// K·Q as `ggml_vec_dot_f16` computes it for one query: four 16-lane accumulators over steps
/// of 64, leftovers added in f64.
#[inline(always)]
fn dot_vec(x: &[f32], y: &[f32]) -> f32 {
    let np = x.len() / 64 * 64;
    let mut acc = [[0f32; 16]; 4];
    for (xs, ys) in x[..np].chunks_exact(64).zip(y[..np].chunks_exact(64)) {
        for (g, a) in acc.iter_mut().enumerate() {
            for lane in 0..16 {
                a[lane] = xs[g * 16 + lane].mul_add(ys[g * 16 + lane], a[lane]);
            }
        }
    }
    let mut sum = reduce16(&fold4(&acc[0], &acc[1], &acc[2], &acc[3])) as f64;
    for (a, b) in x[np..].iter().zip(&y[np..]) {
        sum += (a * b) as f64;
    }
    sum as f32
}

/// ggml's AVX-512 `ggml_v_expf` for one lane (ARM's optimized-routines polynomial).
#[inline(always)]
fn expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(0x35bf_be8e), (-n).mul_add(f32::from_bits(0x3f31_7200), x));
    let u = b * b;
    let p = f32::from_bits(0x3c07_2010).mul_add(b, f32::from_bits(0x3d2b_9f17));
    let q = f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb));
    let j = p.mul_add(u, q).mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // `_mm512_scalef_ps(j, n)`: j·2ⁿ rounded once.
    let n = n as i32;
    if (-126..=127).contains(&n) {
        let r = j * f32::from_bits(((n + 127) as u32) << 23);
        if r.is_normal() {
            return r;
        }
    }
    (j as f64 * 2f64.powi(n)) as f32
}

/// `ggml_rms_norm` then `ggml_mul` by the weight, over the last dimension.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let n = w.dim(0)?;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let ws: Vec<f32> = w.to_vec1()?;
    let mut out = vec![0f32; xs.len()];
    for (y, x) in out.chunks_exact_mut(n).zip(xs.chunks_exact(n)) {
        let sum: f64 = x.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((y, x), w) in y.iter_mut().zip(x).zip(&ws) {
            *y = x * scale * w;
        }
    }
    Tensor::from_vec(out, x.shape(), x.device())
}

/// cos and sin tables `[context, head_dim/2]` as `ggml_rope_cache_init` fills them.
pub(crate) fn rope_tables(c: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let half = c.head_dim / 2;
    let theta_scale = c.rope_theta.powf(-2.0 / c.head_dim as f32);
    let n = c.context_length;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}

/// Interleaved rotation, in place, of `x [b, t, heads, d]` by the table rows `cos`,
/// `sin [t, d/2]` (the queries' positions).
pub(crate) fn rope(x: &mut [f32], t: usize, heads: usize, d: usize, cos: &[f32], sin: &[f32]) {
    let half = d / 2;
    for (row, x) in x.chunks_exact_mut(d).enumerate() {
        let p = (row / heads) % t;
        let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
        for (pair, (&c, &s)) in x.chunks_exact_mut(2).zip(c.iter().zip(s)) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0.mul_add(c, -(x1 * s));
            pair[1] = x0.mul_add(s, x1 * c);
        }
    }
}

/// Rounds to f16 precision in place: llama.cpp keeps K and V in f16 and converts Q to f16 for
/// the K·Q product.
pub(crate) fn round_f16(x: &mut [f32]) {
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// `silu(gate) · up` as `ggml_vec_swiglu_f32`.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    let g: Vec<f32> = gate.flatten_all()?.to_vec1()?;
    let u: Vec<f32> = up.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; g.len()];
    #[cfg(target_arch = "x86_64")]
    if fma() {
        // SAFETY: the features are present.
        unsafe { swiglu_into_fma(&mut out, &g, &u) };
        return Tensor::from_vec(out, gate.shape(), gate.device());
    }
    swiglu_into(&mut out, &g, &u);
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// Sizes of one attention call: `b` sequences of `t` queries at positions `offset..`, over
/// `s` positions of keys and values.
#[derive(Clone, Copy)]
pub(crate) struct AttentionShape {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) s: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) offset: usize,
}

/// Causal attention of `q [b, t, heads, hd]` over `k`, `v [b, s, kv_heads, hd]`, all already
/// rounded to f16 precision ([`round_f16`]), with llama.cpp's summation orders. Returns
/// `[b, t, heads, hd]`. Rows stay in the projections' position-major layout, so a KV cache
/// grows by appending and nothing is transposed on the way in.
pub(crate) fn attention(q: &[f32], k: &[f32], v: &[f32], a: AttentionShape) -> candle_core::Result<Vec<f32>> {
    let AttentionShape { b, t, s, heads: nh, kv_heads: nkv, head_dim: hd, offset } = a;
    if hd % 16 != 0 {
        candle_core::bail!("head size {hd} is not a multiple of 16");
    }
    if q.len() != b * t * nh * hd || k.len() != b * s * nkv * hd || v.len() != k.len() {
        candle_core::bail!("attention: operand sizes do not match the shape");
    }
    let rep = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    // Computed head by head, `[b, heads, t, hd]`, then put back in position order.
    let mut out = vec![0f32; b * nh * t * hd];
    let shape = Shape { nh, nkv, t, s, hd, rep, offset, scale };
    let head = |(bh, out): (usize, &mut [f32])| {
        #[cfg(target_arch = "x86_64")]
        if fma() {
            // SAFETY: the features are present.
            return unsafe { attend_head_fma(&shape, bh, out, q, k, v) };
        }
        attend_head(&shape, bh, out, q, k, v, dot_tiled)
    };
    // Decoding one token is too little work per head to pay for a pool hand-off.
    if t > 1 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(t * hd).enumerate().for_each(head);
    } else {
        out.chunks_mut(t * hd).enumerate().for_each(head);
    }
    if t == 1 {
        return Ok(out);
    }
    let mut rows = vec![0f32; out.len()];
    for (bh, head) in out.chunks_exact(t * hd).enumerate() {
        let (bi, h) = (bh / nh, bh % nh);
        for (i, o) in head.chunks_exact(hd).enumerate() {
            let at = ((bi * t + i) * nh + h) * hd;
            rows[at..at + hd].copy_from_slice(o);
        }
    }
    Ok(rows)
}

#[derive(Clone, Copy)]
struct Shape {
    nh: usize,
    nkv: usize,
    t: usize,
    s: usize,
    hd: usize,
    rep: usize,
    offset: usize,
    scale: f32,
}

#[inline(always)]
fn attend_head(
    sh: &Shape,
    bh: usize,
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dot_tiled: impl Fn(&[f32], &[f32]) -> f32,
) {
    let Shape { nh, nkv, t, s, hd, rep, offset, scale } = *sh;
    {
        let (bi, h) = (bh / nh, bh % nh);
        let kv_row = |j: usize| ((bi * s + j) * nkv + h / rep) * hd;
        let key = |j: usize| &k[kv_row(j)..kv_row(j) + hd];
        let value = |j: usize| &v[kv_row(j)..kv_row(j) + hd];
        let mut w = vec![f32::NEG_INFINITY; s.div_ceil(16) * 16];
        let mut p = vec![0f32; w.len()];
        // P·V accumulators `[group][lane][element]`: position j adds its whole row of V into
        // lane j mod 16 of its group, one contiguous (vectorisable) pass per position.
        let mut acc = vec![0f32; 4 * 16 * hd];
        {
            for (i, o) in out.chunks_exact_mut(hd).enumerate() {
                let qi = &q[((bi * t + i) * nh + h) * hd..((bi * t + i) * nh + h + 1) * hd];
                let visible = (i + offset + 1).min(s);
                w.fill(f32::NEG_INFINITY);
                for (j, w) in w[..visible].iter_mut().enumerate() {
                    *w = if t > 1 { dot_tiled(key(j), qi) } else { dot_vec(key(j), qi) } * scale;
                }
                let max = w.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f64;
                // Chunks past the visible positions would only add exact zeros.
                let live = visible.div_ceil(16) * 16;
                for (pc, wc) in p[..live].chunks_exact_mut(16).zip(w.chunks_exact(16)) {
                    let mut e = [0f32; 16];
                    for lane in 0..16 {
                        e[lane] = expf(wc[lane] - max);
                    }
                    pc.copy_from_slice(&e);
                    sum += reduce16(&e) as f64;
                }
                let inv = (1.0 / sum) as f32;
                for x in p[..visible].iter_mut() {
                    *x = f16::from_f32(*x * inv).to_f32();
                }
                // P·V: for each output element, lane j mod 16 accumulates position j (masked
                // positions would add exact zeros).
                // With one query llama.cpp's `ggml_vec_dot_f16` runs instead: four 16-lane
                // accumulators, position j in accumulator (j / 16) mod 4, folded pairwise.
                let groups = if t > 1 { 1 } else { 4 };
                acc[..groups * 16 * hd].fill(0.0);
                for (j, &pj) in p[..visible].iter().enumerate() {
                    let vj = value(j);
                    let (g, lane) = ((j / 16) % groups, j % 16);
                    let a = &mut acc[(g * 16 + lane) * hd..(g * 16 + lane + 1) * hd];
                    for (a, &x) in a.iter_mut().zip(vj) {
                        *a = x.mul_add(pj, *a);
                    }
                }
                if groups == 4 {
                    let (g01, g23) = acc.split_at_mut(2 * 16 * hd);
                    let (g0, g1) = g01.split_at_mut(16 * hd);
                    let (g2, g3) = g23.split_at_mut(16 * hd);
                    for (((a0, a1), a2), a3) in g0.iter_mut().zip(&*g1).zip(&*g2).zip(&*g3) {
                        *a0 = (*a0 + a2) + (*a1 + a3);
                    }
                }
                reduce16_rows(&mut acc[..16 * hd], hd, o);
            }
        }
    }
}

/// [`reduce16`] of every column of a `[16, n]` block (clobbered), one row operation at a time.
#[inline(always)]
fn reduce16_rows(block: &mut [f32], n: usize, out: &mut [f32]) {
    let (lo, hi) = block.split_at_mut(8 * n);
    for (l, h) in lo.iter_mut().zip(&*hi) {
        *l = *h + *l;
    }
    let (lo, hi) = lo[..8 * n].split_at_mut(4 * n);
    for (l, h) in lo.iter_mut().zip(&*hi) {
        *l = *h + *l;
    }
    let (r0, rest) = lo.split_at(n);
    let (r1, rest) = rest.split_at(n);
    let (r2, r3) = rest.split_at(n);
    for ((((o, a), b), c), d) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(&r3[..n]) {
        *o = (a + c) + (b + d);
    }
}

/// `attend_head` compiled for FMA (`mul_add` one instruction instead of a libm call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_head_fma(sh: &Shape, bh: usize, out: &mut [f32], q: &[f32], k: &[f32], v: &[f32]) {
    // SAFETY: this function only runs where the features are present.
    attend_head(sh, bh, out, q, k, v, |x, y| unsafe { dot_tiled_avx2(x, y) })
}

#[cfg(target_arch = "x86_64")]
fn fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[inline(always)]
fn swiglu_into(out: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &x), &u) in out.iter_mut().zip(g).zip(u) {
        *o = (x / (1.0 + expf(0.0 - x))) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_into_fma(out: &mut [f32], g: &[f32], u: &[f32]) {
    swiglu_into(out, g, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm() {
        for x in [-100.0f32, -20.5, -3.25, -1.0, -1e-3, 0.0, 0.5, 1.0, 7.75, 80.0] {
            let (a, b) = (expf(x), x.exp());
            assert!((a - b).abs() <= 4.0 * f32::EPSILON * b, "{x}: {a} vs {b}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn reduce16_folds_halves() {
        let l: [f32; 16] = std::array::from_fn(|i| i as f32);
        assert_eq!(reduce16(&l), 120.0);
    }

    #[test]
    fn dot_tiled_kernels_agree() {
        let mut rng = crate::sampling::Rng::new(9);
        let x: Vec<f32> = (0..64).map(|_| rng.normal()).collect();
        let y: Vec<f32> = (0..64).map(|_| rng.normal()).collect();
        #[cfg(target_arch = "x86_64")]
        if fma() {
            // SAFETY: the features are present.
            let fast = unsafe { dot_tiled_avx2(&x, &y) };
            assert_eq!(fast.to_bits(), dot_tiled(&x, &y).to_bits());
        }
        let _ = (x, y);
    }

    #[test]
    fn reduce16_rows_is_reduce16_per_column() {
        let n = 5;
        let mut rng = crate::sampling::Rng::new(3);
        let block: Vec<f32> = (0..16 * n).map(|_| rng.normal() * 1e3).collect();
        let mut out = vec![0f32; n];
        reduce16_rows(&mut block.clone(), n, &mut out);
        for (d, o) in out.iter().enumerate() {
            let lanes: [f32; 16] = std::array::from_fn(|l| block[l * n + d]);
            assert_eq!(o.to_bits(), reduce16(&lanes).to_bits(), "column {d}");
        }
    }
}
