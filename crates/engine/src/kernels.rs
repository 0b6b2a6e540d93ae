//! Quantized matmuls computed the way llama.cpp computes them on x86 (AVX2 when the CPU has it):
//! Q4_1 weights × Q8_1 activations and Q8_0 weights × Q8_0 activations, activations quantized
//! with llama.cpp's rounding. candle 0.11 only has a scalar kernel for Q4_1, which made Q4_1
//! models several times slower than llama.cpp, and its activation rounding differs.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q8_0_BYTES: usize = 34;

/// One activation block: scale, scale × sum of quants, 32 quants.
#[derive(Clone, Copy)]
struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// A LoRA update in plain memory for the quantized path, where a handful of candle ops per
/// projection would cost more than the rank-r arithmetic itself.
#[derive(Debug)]
pub(crate) struct HostLora {
    /// `[r, in]`, row-major.
    pub(crate) a: Vec<f32>,
    /// `[out, r]`, row-major.
    pub(crate) b: Vec<f32>,
    pub(crate) r: usize,
    pub(crate) scale: f32,
}

#[derive(Debug, Clone)]
pub(crate) struct QuantWeight {
    tensor: Arc<QTensor>,
    out_features: usize,
    in_features: usize,
}

impl QuantWeight {
    /// Takes a Q4_1 or Q8_0 matrix on the CPU; hands any other tensor back.
    pub(crate) fn new(tensor: QTensor) -> std::result::Result<Self, QTensor> {
        let dims = tensor.shape().dims2();
        match dims {
            Ok((out_features, in_features))
                if matches!(tensor.dtype(), GgmlDType::Q4_1 | GgmlDType::Q8_0)
                    && matches!(tensor.device(), Device::Cpu)
                    && in_features % QK == 0 =>
            {
                Ok(Self { tensor: Arc::new(tensor), out_features, in_features })
            }
            _ => Err(tensor),
        }
    }

    pub(crate) fn qtensor(&self) -> &QTensor {
        &self.tensor
    }

    pub(crate) fn forward(&self, x: &Tensor, lora: Option<&HostLora>) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = self.in_features;
        let n = self.out_features;
        let m = x.elem_count() / k;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let blocks_per_row = k / QK;
        let acts: Vec<BlockQ8_1> =
            xs.chunks_exact(QK).map(quantize_block).collect::<Vec<_>>();
        let data = self.tensor.data()?;
        let weights: &[u8] = &data;
        let q8_0 = self.tensor.dtype() == GgmlDType::Q8_0;
        let row_bytes = blocks_per_row * if q8_0 { Q8_0_BYTES } else { Q4_1_BYTES };
        let dot = select_kernel(q8_0);
        let dot4 = select_kernel4(q8_0);
        let mut out_t = vec![0f32; n * m];
        // Output rows are independent; chunks keep a weight row hot across all activation rows.
        let work = |(chunk, dst): (usize, &mut [f32])| {
            for (r, dst_row) in dst.chunks_mut(m).enumerate() {
                let row = chunk * 16 + r;
                let w = &weights[row * row_bytes..(row + 1) * row_bytes];
                let act = |i: usize| &acts[i * blocks_per_row..(i + 1) * blocks_per_row];
                let mut i = 0;
                if let Some(dot4) = dot4 {
                    // Four activation rows per pass over the weight row: the unpacked nibbles
                    // are reused, and each row's arithmetic is the same as the one-row kernel.
                    while i + 4 <= m {
                        dst_row[i..i + 4].copy_from_slice(&dot4(w, [act(i), act(i + 1), act(i + 2), act(i + 3)]));
                        i += 4;
                    }
                }
                for (j, d) in dst_row.iter_mut().enumerate().skip(i) {
                    *d = dot(w, act(j));
                }
            }
        };
        // A pool hand-off per matmul costs more than it saves with one thread.
        if rayon::current_num_threads() > 1 {
            out_t.par_chunks_mut(m * 16).enumerate().for_each(work);
        } else {
            out_t.chunks_mut(m * 16).enumerate().for_each(work);
        }
        let mut out = if m == 1 {
            out_t
        } else {
            let mut out = vec![0f32; m * n];
            for (row, col) in out_t.chunks_exact(m).enumerate() {
                for (i, v) in col.iter().enumerate() {
                    out[i * n + row] = *v;
                }
            }
            out
        };
        if let Some(l) = lora {
            let mut t = vec![0f32; l.r];
            for (x, y) in xs.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
                for (tj, a) in t.iter_mut().zip(l.a.chunks_exact(k)) {
                    *tj = a.iter().zip(x).map(|(a, x)| a * x).sum();
                }
                for (y, b) in y.iter_mut().zip(l.b.chunks_exact(l.r)) {
                    *y += l.scale * b.iter().zip(&t).map(|(b, t)| b * t).sum::<f32>();
                }
            }
        }
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = n;
        Tensor::from_vec(out, out_dims, &Device::Cpu)
    }
}

/// llama.cpp's AVX2 `quantize_row_q8_1` (and `_q8_0`, which is the same without `s`): quants
/// x·127/max rounded to nearest-even, `s` from the unrounded scale.
fn quantize_block(x: &[f32]) -> BlockQ8_1 {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        // |v·id| ≤ 127: adding and removing 1.5·2²³ rounds half-to-even without a libm call.
        *q = ((v * id + 12_582_912.0) - 12_582_912.0) as i8;
        sum += *q as i32;
    }
    BlockQ8_1 {
        d: f16::from_f32(d).to_f32(),
        s: f16::from_f32(d * sum as f32).to_f32(),
        qs,
    }
}

type DotFn = fn(&[u8], &[BlockQ8_1]) -> f32;

/// Picks the kernel once per matmul rather than detecting CPU features per dot product.
fn select_kernel(q8_0: bool) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            if !q8_0 && vnni() {
                // SAFETY: only reached when the features it needs are present.
                return |w, a| unsafe { vec_dot_vnni(w, a) };
            }
            // SAFETY (both): only reached when the features they need are present.
            return if q8_0 {
                |w, a| unsafe { vec_dot_q8_0_avx2(w, a) }
            } else {
                |w, a| unsafe { vec_dot_avx2(w, a) }
            };
        }
    }
    if q8_0 { vec_dot_q8_0_scalar } else { vec_dot_scalar }
}

#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::env::var_os("ENGINE_NO_VNNI").is_none()
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vl")
}

type Dot4Fn = fn(&[u8], [&[BlockQ8_1]; 4]) -> [f32; 4];

fn select_kernel4(q8_0: bool) -> Option<Dot4Fn> {
    #[cfg(target_arch = "x86_64")]
    {
        if !q8_0
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY (both): only reached when the features they need are present.
            return Some(if vnni() {
                |w, a| unsafe { vec_dot4_vnni(w, a) }
            } else {
                |w, a| unsafe { vec_dot4_avx2(w, a) }
            });
        }
    }
    let _ = q8_0;
    None
}

#[cfg(test)]
fn vec_dot(w: &[u8], acts: &[BlockQ8_1]) -> f32 {
    select_kernel(false)(w, acts)
}

fn vec_dot_q8_0_scalar(w: &[u8], acts: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (wb, a) in w.chunks_exact(Q8_0_BYTES).zip(acts) {
        let d = f16::from_le_bytes([wb[0], wb[1]]).to_f32();
        let sumi: i32 = wb[2..].iter().zip(&a.qs).map(|(&x, &y)| x as i8 as i32 * y as i32).sum();
        sumf += d * a.d * sumi as f32;
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vec_dot_q8_0_avx2(w: &[u8], acts: &[BlockQ8_1]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let ones = _mm256_set1_epi16(1);
    for (wb, a) in w.chunks_exact(Q8_0_BYTES).zip(acts) {
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(u16::from_le_bytes([wb[0], wb[1]]) as i16))));
        let d0d1 = _mm256_set1_ps(d * a.d);
        // SAFETY: each block holds 32 quants after its 2-byte scale.
        let qx = unsafe { _mm256_loadu_si256(wb[2..].as_ptr() as *const __m256i) };
        let qy = unsafe { _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i) };
        // maddubs needs an unsigned left side: move x's sign onto y.
        let ax = _mm256_sign_epi8(qx, qx);
        let sy = _mm256_sign_epi8(qy, qx);
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
        acc = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(sums), acc);
    }
    hsum(acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let hi = _mm256_extractf128_ps(acc, 1);
    let lo = _mm256_castps256_ps128(acc);
    let s = _mm_add_ps(hi, lo);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline(always)]
fn block_parts(w: &[u8]) -> (f32, f32, &[u8]) {
    let d = f16::from_le_bytes([w[0], w[1]]).to_f32();
    let m = f16::from_le_bytes([w[2], w[3]]).to_f32();
    (d, m, &w[4..Q4_1_BYTES])
}

fn vec_dot_scalar(w: &[u8], acts: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    let mut summs = 0f32;
    for (wb, a) in w.chunks_exact(Q4_1_BYTES).zip(acts) {
        let (d, m, qs) = block_parts(wb);
        let mut sumi = 0i32;
        let (lo, hi) = a.qs.split_at(QK / 2);
        for ((&q, &l), &h) in qs.iter().zip(lo).zip(hi) {
            sumi += (q & 0x0F) as i32 * l as i32 + (q >> 4) as i32 * h as i32;
        }
        sumf += d * a.d * sumi as f32;
        summs += m * a.s;
    }
    sumf + summs
}

/// Q4_1 × Q8_1 kernels, generated once with AVX2's two-step u8×i8 multiply-add and once with
/// AVX-512 VNNI's one-step `vpdpbusd`: the integer sums are identical (no 16-bit saturation is
/// possible with 4-bit weights), so both give bit-identical results.
macro_rules! q4_1_kernels {
    ($features:literal, $sum:path, $one:ident, $four:ident) => {
        q4_1_kernels!(@four $features, $sum, $four);
        q4_1_kernels!(@one $features, $sum, $one);
    };
    (@four $features:literal, $sum:path, $name:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &[u8], acts: [&[BlockQ8_1]; 4]) -> [f32; 4] {
            use std::arch::x86_64::*;
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = [0f32; 4];
            let low_mask = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            for (b, wb) in w.chunks_exact(Q4_1_BYTES).enumerate() {
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([wb[0], wb[1], wb[2], wb[3]])));
                let d = _mm_cvtss_f32(dm);
                let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                // SAFETY: a block holds 16 packed bytes after its scales.
                let packed = unsafe { _mm_loadu_si128(wb[4..].as_ptr() as *const __m128i) };
                let nibbles =
                    _mm256_insertf128_si256(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4), 1);
                let qx = _mm256_and_si256(nibbles, low_mask);
                for r in 0..4 {
                    let a = &acts[r][b];
                    summs[r] += m * a.s;
                    let d0d1 = _mm256_set1_ps(d * a.d);
                    let qy = unsafe { _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i) };
                    let sums = $sum(qx, qy, ones);
                    acc[r] = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(sums), acc[r]);
                }
            }
            [hsum(acc[0]) + summs[0], hsum(acc[1]) + summs[1], hsum(acc[2]) + summs[2], hsum(acc[3]) + summs[3]]
        }
    };
    (@one $features:literal, $sum:path, $name:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(w: &[u8], acts: &[BlockQ8_1]) -> f32 {
            use std::arch::x86_64::*;
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0f32;
            let low_mask = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            for (wb, a) in w.chunks_exact(Q4_1_BYTES).zip(acts) {
                // d and m are adjacent f16s: one F16C conversion for both.
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([wb[0], wb[1], wb[2], wb[3]])));
                let d = _mm_cvtss_f32(dm);
                let m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
                let qs = &wb[4..Q4_1_BYTES];
                summs += m * a.s;
                let d0d1 = _mm256_set1_ps(d * a.d);
                // SAFETY: qs has 16 bytes, a.qs 32.
                let packed = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
                let nibbles = _mm256_insertf128_si256(
                    _mm256_castsi128_si256(packed),
                    _mm_srli_epi16(packed, 4),
                    1,
                );
                let qx = _mm256_and_si256(nibbles, low_mask);
                let qy = unsafe { _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i) };
                let sums = $sum(qx, qy, ones);
                acc = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(sums), acc);
            }
            hsum(acc) + summs
        }
    };
}

q4_1_kernels!("avx2,fma,f16c", sum_u8_i8_avx2, vec_dot_avx2, vec_dot4_avx2);
q4_1_kernels!("avx2,fma,f16c,avx512vnni,avx512vl", sum_u8_i8_vnni, vec_dot_vnni, vec_dot4_vnni);

/// Per 32-bit lane, the sum of four u8×i8 products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_u8_i8_avx2(x: std::arch::x86_64::__m256i, y: std::arch::x86_64::__m256i, ones: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
fn sum_u8_i8_vnni(x: std::arch::x86_64::__m256i, y: std::arch::x86_64::__m256i, _ones: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_rounding_is_half_to_even() {
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let b = quantize_block(&x);
        assert_eq!(&b.qs[..4], &[127, 2, -4, 0]);
    }

    #[test]
    fn kernels_match_dequantized_matmul() {
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            check_kernel(dtype);
        }
    }

    fn check_kernel(dtype: GgmlDType) {
        let (n, k, m) = (40, 96, 6);
        let mut rng = crate::sampling::Rng::new(5);
        let w: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
        let x: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x, (1, m, k), &Device::Cpu).unwrap();
        let want = xt.broadcast_matmul(&deq.t().unwrap()).unwrap();
        let kernel = QuantWeight::new(q).map_err(|_| ()).unwrap();
        let got = kernel.forward(&xt, None).unwrap();
        let diff: f32 = (&got - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        let scale: f32 = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        // Only the 8-bit activation rounding separates the two.
        assert!(diff < 0.02 * scale, "diff {diff} scale {scale}");
        let acts: Vec<BlockQ8_1> = xt.flatten_all().unwrap().to_vec1::<f32>().unwrap().chunks_exact(QK).map(quantize_block).collect();
        if dtype == GgmlDType::Q4_1 {
            let data = kernel.qtensor().data().unwrap();
            let row = &data[..(k / QK) * Q4_1_BYTES];
            let a = vec_dot(row, &acts[..k / QK]);
            let b = vec_dot_scalar(row, &acts[..k / QK]);
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0));
            #[cfg(target_arch = "x86_64")]
            if vnni() && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c") {
                // SAFETY: the features both kernels need are present.
                let (plain, fused) = unsafe { (vec_dot_avx2(row, &acts[..k / QK]), vec_dot_vnni(row, &acts[..k / QK])) };
                assert_eq!(plain.to_bits(), fused.to_bits(), "VNNI and AVX2 kernels must agree exactly");
            }
            // The batched kernel must give exactly the one-row result for every row.
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..m {
                let one = vec_dot(row, &acts[i * (k / QK)..(i + 1) * (k / QK)]);
                assert_eq!(got[i * n], one, "row {i}");
            }
        }
    }
}
