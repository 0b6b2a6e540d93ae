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

/// The activation blocks of four rows at one block index, side by side, so that a weight block
/// meets all four with vector loads (and the four `m·s` terms form one vector product).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct BlockQ8_1x4 {
    qs: [[i8; QK]; 4],
    d: [f32; 4],
    s: [f32; 4],
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
        let [y] = forward_shared([(self, lora)], x)?;
        Ok(y)
    }
}

/// `x · Wᵀ (+ LoRA)` for several weights over the same input `x [.., k]` (q/k/v, gate/up):
/// the activations are quantized once and all the matmuls share one parallel pass, which saves
/// a quantization and a pool hand-off per extra weight.
pub(crate) fn forward_shared<const N: usize>(
    weights: [(&QuantWeight, Option<&HostLora>); N],
    x: &Tensor,
) -> candle_core::Result<[Tensor; N]> {
    let k = weights[0].0.in_features;
    if weights.iter().any(|(w, _)| w.in_features != k) {
        candle_core::bail!("forward_shared: weights of different input sizes");
    }
    let m = x.elem_count() / k;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let data: Vec<_> = weights.iter().map(|(w, _)| w.tensor.data()).collect::<candle_core::Result<_>>()?;
    let mats: Vec<Matrix> = weights
        .iter()
        .zip(&data)
        .map(|((w, _), d)| Matrix { data: d, rows: w.out_features, q8_0: w.tensor.dtype() == GgmlDType::Q8_0 })
        .collect();
    let mut outs = matmul_shared(&mats, &xs, m, k);
    let mut tensors = Vec::with_capacity(N);
    for ((w, lora), mut out) in weights.iter().zip(outs.drain(..)) {
        let n = w.out_features;
        if let Some(l) = lora {
            add_lora(&mut out, &xs, k, n, l);
        }
        let mut dims = x.dims().to_vec();
        *dims.last_mut().unwrap() = n;
        tensors.push(Tensor::from_vec(out, dims, &Device::Cpu)?);
    }
    Ok(tensors.try_into().expect("one output per weight"))
}

fn add_lora(out: &mut [f32], xs: &[f32], k: usize, n: usize, l: &HostLora) {
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

/// One quantized weight matrix `[rows, k]` in GGUF block layout.
struct Matrix<'a> {
    data: &'a [u8],
    rows: usize,
    q8_0: bool,
}

/// Weight rows per parallel task: a task's weights stay in L1 while every group of activation
/// rows passes over them, and its outputs fill whole cache lines.
const TASK_ROWS: usize = 16;

/// Activations quantized the way the kernels read them.
enum Activations {
    /// Row after row (one-row kernels).
    Rows(Vec<BlockQ8_1>),
    /// Groups of four rows interleaved block by block (the tiled kernel).
    Groups(Vec<BlockQ8_1x4>, TileFn),
}

/// `x [m, k] · Wᵀ` for each matrix, outputs row-major `[m, rows]`. Several activation rows
/// with Q4_1 weights on AVX2 take the tiled kernel: two weight rows by four activation rows per
/// call, so each unpacked weight block meets four rows and each activation block two weight
/// rows. Otherwise (decoding, Q8_0, CPUs without AVX2) one weight row meets one activation row
/// at a time. Every output is the one-row kernel's arithmetic either way.
fn matmul_shared(mats: &[Matrix], xs: &[f32], m: usize, k: usize) -> Vec<Vec<f32>> {
    let blocks_per_row = k / QK;
    let tile = select_tile(false).filter(|_| m > 1 && mats.iter().all(|w| !w.q8_0));
    let acts = match tile {
        Some(tile) => Activations::Groups(quantize_groups(xs, m, k), tile),
        None => Activations::Rows(xs.chunks_exact(QK).map(quantize_block).collect()),
    };
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.rows]).collect();
    let dsts: Vec<OutputColumns> = outs.iter_mut().map(|o| OutputColumns(o.as_mut_ptr())).collect();
    let tasks: Vec<(usize, usize)> = mats
        .iter()
        .enumerate()
        .flat_map(|(i, w)| (0..w.rows).step_by(TASK_ROWS).map(move |first| (i, first)))
        .collect();
    let dots = [select_kernel(false), select_kernel(true)];
    let fours = [select_four(false), select_four(true)];
    let work = |&(i, first): &(usize, usize)| {
        let (mat, dst) = (&mats[i], &dsts[i]);
        let n = mat.rows;
        let end = (first + TASK_ROWS).min(n);
        let row_bytes = blocks_per_row * if mat.q8_0 { Q8_0_BYTES } else { Q4_1_BYTES };
        let w = |col: usize| &mat.data[col * row_bytes..(col + 1) * row_bytes];
        match &acts {
            Activations::Groups(acts, tile) => {
                for (g, group) in acts.chunks_exact(blocks_per_row).enumerate() {
                    let rows = (m - g * 4).min(4);
                    for col in (first..end).step_by(2) {
                        let pair = col + 1 < end;
                        let y = tile(w(col), if pair { w(col + 1) } else { w(col) }, group);
                        for (c, y) in y.iter().enumerate().take(if pair { 2 } else { 1 }) {
                            for (r, &v) in y.iter().enumerate().take(rows) {
                                // SAFETY: (g·4 + r, col + c) is inside the output (r < rows,
                                // col + c < n), and only this task writes columns first..end.
                                unsafe { dst.write((g * 4 + r) * n + col + c, v) };
                            }
                        }
                    }
                }
            }
            Activations::Rows(acts) => {
                let dot = dots[mat.q8_0 as usize];
                let mut first = first;
                if let (1, Some(four)) = (m, fours[mat.q8_0 as usize]) {
                    while first + 4 <= end {
                        prefetch(mat.data, (first + 4) * row_bytes, 4 * row_bytes);
                        let y = four([w(first), w(first + 1), w(first + 2), w(first + 3)], acts);
                        for (c, v) in y.into_iter().enumerate() {
                            // SAFETY: as below, with m = 1.
                            unsafe { dst.write(first + c, v) };
                        }
                        first += 4;
                    }
                }
                for col in first..end {
                    for (r, act) in acts.chunks_exact(blocks_per_row).enumerate() {
                        // SAFETY: as above, with r < m.
                        unsafe { dst.write(r * n + col, dot(w(col), act)) };
                    }
                }
            }
        }
    };
    // A pool hand-off costs more than it saves with one thread.
    if rayon::current_num_threads() > 1 {
        tasks.par_iter().for_each(work);
    } else {
        tasks.iter().for_each(work);
    }
    outs
}

/// Asks for `len` bytes of `data` from `start` to be brought into the cache. Decoding streams
/// every weight once per token and waits on memory, not arithmetic (its rate is the same with
/// and without VNNI): the next four rows are requested while the kernel works on these four.
#[inline(always)]
fn prefetch(data: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (start + len).min(data.len());
        for at in (start..end).step_by(64) {
            // SAFETY: `at` is inside `data`; a prefetch reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

/// An output of [`matmul_shared`], shared by tasks that each write their own columns: an output
/// row-major `[m, n]` directly saves a transposing pass whose writes are strided.
#[derive(Clone, Copy)]
struct OutputColumns(*mut f32);
// SAFETY: tasks write disjoint elements, and the buffer outlives the parallel loop.
unsafe impl Send for OutputColumns {}
unsafe impl Sync for OutputColumns {}

impl OutputColumns {
    /// SAFETY: `at` must be inside the buffer and written by no other task.
    unsafe fn write(&self, at: usize, v: f32) {
        // SAFETY: as the caller promises.
        unsafe { self.0.add(at).write(v) }
    }
}

/// Quantizes `xs [m, k]` into groups of four rows, block by block; rows past `m` are zeros.
fn quantize_groups(xs: &[f32], m: usize, k: usize) -> Vec<BlockQ8_1x4> {
    let blocks_per_row = k / QK;
    let groups = m.div_ceil(4);
    let zero = BlockQ8_1x4 { qs: [[0; QK]; 4], d: [0.0; 4], s: [0.0; 4] };
    let mut acts = vec![zero; groups * blocks_per_row];
    for (row, x) in xs.chunks_exact(k).enumerate() {
        let (g, lane) = (row / 4, row % 4);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            let q = quantize_block(xb);
            let dst = &mut acts[g * blocks_per_row + b];
            dst.qs[lane] = q.qs;
            dst.d[lane] = q.d;
            dst.s[lane] = q.s;
        }
    }
    acts
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
    // Looked up once: reading the environment takes a lock, and decoding asks per matmul.
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::env::var_os("ENGINE_NO_VNNI").is_none()
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
    })
}

type FourFn = fn([&[u8]; 4], &[BlockQ8_1]) -> [f32; 4];

/// The four-rows-by-one kernel for decoding where the CPU has AVX2.
fn select_four(q8_0: bool) -> Option<FourFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY (all three): only reached when the features they need are present.
            return Some(if q8_0 {
                |w, a| unsafe { dot_4x1_q8_0_avx2(w, a) }
            } else if vnni() {
                |w, a| unsafe { dot_4x1_vnni(w, a) }
            } else {
                |w, a| unsafe { dot_4x1_avx2(w, a) }
            });
        }
    }
    let _ = q8_0;
    None
}

type TileFn = fn(&[u8], &[u8], &[BlockQ8_1x4]) -> [[f32; 4]; 2];

/// The two-by-four Q4_1 kernel where the CPU has AVX2; none for Q8_0 weights.
fn select_tile(q8_0: bool) -> Option<TileFn> {
    #[cfg(target_arch = "x86_64")]
    {
        if !q8_0
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY (both): only reached when the features they need are present.
            return Some(if vnni() {
                |w0, w1, a| unsafe { tile_2x4_vnni(w0, w1, a) }
            } else {
                |w0, w1, a| unsafe { tile_2x4_avx2(w0, w1, a) }
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

/// [`vec_dot_q8_0_avx2`] for four weight rows against one activation row (decoding through the
/// output projection): the four rows' scales of a block are converted and multiplied in one
/// vector; each output's arithmetic is the one-row kernel's, in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_4x1_q8_0_avx2(w: [&[u8]; 4], acts: &[BlockQ8_1]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let bytes = acts.len() * Q8_0_BYTES;
    let w = w.map(|row| row[..bytes].as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let ones = _mm256_set1_epi16(1);
    let lane = [_mm256_set1_epi32(0), _mm256_set1_epi32(1), _mm256_set1_epi32(2), _mm256_set1_epi32(3)];
    for (b, a) in acts.iter().enumerate() {
        let at = b * Q8_0_BYTES;
        // SAFETY: every row was sliced to `bytes` above and `at + Q8_0_BYTES <= bytes`: a
        // block's 2-byte scale and 32 quants are inside its row; a block holds 32 activations.
        let (d, qy, qx) = unsafe {
            let d = |r: usize| (w[r].add(at) as *const i16).read_unaligned();
            let quants = |r: usize| _mm256_loadu_si256(w[r].add(at + 2) as *const __m256i);
            (
                _mm_cvtph_ps(_mm_setr_epi16(d(0), d(1), d(2), d(3), 0, 0, 0, 0)),
                _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
                [quants(0), quants(1), quants(2), quants(3)],
            )
        };
        let dd = _mm256_castps128_ps256(_mm_mul_ps(d, _mm_set1_ps(a.d)));
        for r in 0..4 {
            let d0d1 = _mm256_permutevar8x32_ps(dd, lane[r]);
            // maddubs needs an unsigned left side: move x's sign onto y.
            let ax = _mm256_sign_epi8(qx[r], qx[r]);
            let sy = _mm256_sign_epi8(qy, qx[r]);
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
            acc[r] = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(sums), acc[r]);
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
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
    ($features:literal, $sum:path, $one:ident, $tile:ident, $four:ident) => {
        q4_1_kernels!(@tile $features, $sum, $tile);
        q4_1_kernels!(@one $features, $sum, $one);
        q4_1_kernels!(@four $features, $sum, $four);
    };
    (@four $features:literal, $sum:path, $name:ident) => {
        /// Four weight rows × one activation row, for decoding: each activation block is loaded
        /// once for four rows, and four independent accumulator chains overlap where one row's
        /// chain waits on its previous FMA. The four rows' scales and offsets of a block are
        /// converted and multiplied together, one vector for four rows: decoding is bound by
        /// this loop's instruction count on CPUs without VNNI. Every output's arithmetic is the
        /// one-row kernel's, in the same order (`d·d'` and `m·s` rounded in f32 as there).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(w: [&[u8]; 4], acts: &[BlockQ8_1]) -> [f32; 4] {
            use std::arch::x86_64::*;
            let bytes = acts.len() * Q4_1_BYTES;
            let w = w.map(|row| row[..bytes].as_ptr());
            let low_mask = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let lane = [_mm256_set1_epi32(0), _mm256_set1_epi32(1), _mm256_set1_epi32(2), _mm256_set1_epi32(3)];
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = _mm_setzero_ps();
            for (b, a) in acts.iter().enumerate() {
                let at = b * Q4_1_BYTES;
                // SAFETY: every row was sliced to `bytes` above and `at + Q4_1_BYTES <= bytes`:
                // the reads stay inside the rows (d and m are the block's first four bytes, its
                // packed quants the next sixteen); a block holds 32 activation quants.
                let (dm, qy, packed) = unsafe {
                    let dm = |r: usize| (w[r].add(at) as *const i32).read_unaligned();
                    let quants = |r: usize| _mm_loadu_si128(w[r].add(at + 4) as *const __m128i);
                    (
                        _mm256_cvtph_ps(_mm_setr_epi32(dm(0), dm(1), dm(2), dm(3))),
                        _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
                        [quants(0), quants(1), quants(2), quants(3)],
                    )
                };
                // [d0 m0 d1 m1 | d2 m2 d3 m3] → [d0 d1 d2 d3] and [m0 m1 m2 m3].
                let (lo, hi) = (_mm256_castps256_ps128(dm), _mm256_extractf128_ps::<1>(dm));
                let d = _mm_shuffle_ps::<0b10_00_10_00>(lo, hi);
                let m = _mm_shuffle_ps::<0b11_01_11_01>(lo, hi);
                summs = _mm_add_ps(summs, _mm_mul_ps(m, _mm_set1_ps(a.s)));
                let dd = _mm256_castps128_ps256(_mm_mul_ps(d, _mm_set1_ps(a.d)));
                for r in 0..4 {
                    let d0d1 = _mm256_permutevar8x32_ps(dd, lane[r]);
                    let nibbles = _mm256_insertf128_si256(_mm256_castsi128_si256(packed[r]), _mm_srli_epi16(packed[r], 4), 1);
                    let qx = _mm256_and_si256(nibbles, low_mask);
                    acc[r] = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps($sum(qx, qy, ones)), acc[r]);
                }
            }
            let mut s = [0f32; 4];
            // SAFETY: four f32s.
            unsafe { _mm_storeu_ps(s.as_mut_ptr(), summs) };
            [hsum(acc[0]) + s[0], hsum(acc[1]) + s[1], hsum(acc[2]) + s[2], hsum(acc[3]) + s[3]]
        }
    };
    (@tile $features:literal, $sum:path, $name:ident) => {
        /// Two weight rows × four activation rows. Every output's arithmetic is the one-row
        /// kernel's, in the same order: `d·d'` rounded in f32, one eight-lane accumulator per
        /// output, `m·s` summed separately (here four outputs per vector lane-wise).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(w0: &[u8], w1: &[u8], acts: &[BlockQ8_1x4]) -> [[f32; 4]; 2] {
            use std::arch::x86_64::*;
            assert!(w0.len() >= acts.len() * Q4_1_BYTES && w1.len() >= acts.len() * Q4_1_BYTES);
            let low_mask = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            // One weight block: its scale broadcast, its offset broadcast, its 32 quants.
            let unpack = |w: *const u8| {
                // SAFETY: the caller passes the start of a whole block.
                let (dm, packed) = unsafe {
                    (_mm_cvtph_ps(_mm_cvtsi32_si128((w as *const i32).read_unaligned())),
                     _mm_loadu_si128(w.add(4) as *const __m128i))
                };
                let nibbles = _mm256_insertf128_si256(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4), 1);
                (_mm256_broadcastss_ps(dm), _mm_shuffle_ps::<0b0101_0101>(dm, dm), _mm256_and_si256(nibbles, low_mask))
            };
            let (mut a00, mut a01, mut a02, mut a03) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut a10, mut a11, mut a12, mut a13) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut summs0, mut summs1) = (_mm_setzero_ps(), _mm_setzero_ps());
            let (mut p0, mut p1) = (w0.as_ptr(), w1.as_ptr());
            for a in acts {
                // SAFETY: the group is 32-byte aligned and holds four rows of 32 quants; the
                // assert above keeps both weight pointers inside their rows.
                let (y0, y1, y2, y3, s4) = unsafe {
                    (
                        _mm256_load_si256(a.qs[0].as_ptr() as *const __m256i),
                        _mm256_load_si256(a.qs[1].as_ptr() as *const __m256i),
                        _mm256_load_si256(a.qs[2].as_ptr() as *const __m256i),
                        _mm256_load_si256(a.qs[3].as_ptr() as *const __m256i),
                        _mm_load_ps(a.s.as_ptr()),
                    )
                };
                let (d0, m0, x0) = unpack(p0);
                let (d1, m1, x1) = unpack(p1);
                // SAFETY: see the assert.
                unsafe {
                    p0 = p0.add(Q4_1_BYTES);
                    p1 = p1.add(Q4_1_BYTES);
                }
                summs0 = _mm_add_ps(summs0, _mm_mul_ps(m0, s4));
                summs1 = _mm_add_ps(summs1, _mm_mul_ps(m1, s4));
                let (e0, e1, e2, e3) =
                    (_mm256_set1_ps(a.d[0]), _mm256_set1_ps(a.d[1]), _mm256_set1_ps(a.d[2]), _mm256_set1_ps(a.d[3]));
                let step = |acc, d, e, x, y| _mm256_fmadd_ps(_mm256_mul_ps(d, e), _mm256_cvtepi32_ps($sum(x, y, ones)), acc);
                a00 = step(a00, d0, e0, x0, y0);
                a01 = step(a01, d0, e1, x0, y1);
                a02 = step(a02, d0, e2, x0, y2);
                a03 = step(a03, d0, e3, x0, y3);
                a10 = step(a10, d1, e0, x1, y0);
                a11 = step(a11, d1, e1, x1, y1);
                a12 = step(a12, d1, e2, x1, y2);
                a13 = step(a13, d1, e3, x1, y3);
            }
            let (mut s0, mut s1) = ([0f32; 4], [0f32; 4]);
            // SAFETY: four f32s each.
            unsafe {
                _mm_storeu_ps(s0.as_mut_ptr(), summs0);
                _mm_storeu_ps(s1.as_mut_ptr(), summs1);
            }
            [
                [hsum(a00) + s0[0], hsum(a01) + s0[1], hsum(a02) + s0[2], hsum(a03) + s0[3]],
                [hsum(a10) + s1[0], hsum(a11) + s1[1], hsum(a12) + s1[2], hsum(a13) + s1[3]],
            ]
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

q4_1_kernels!("avx2,fma,f16c", sum_u8_i8_avx2, vec_dot_avx2, tile_2x4_avx2, dot_4x1_avx2);
q4_1_kernels!("avx2,fma,f16c,avx512vnni,avx512vl", sum_u8_i8_vnni, vec_dot_vnni, tile_2x4_vnni, dot_4x1_vnni);

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
        // Odd row counts and activation rows that do not fill a group of four, on both sides.
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            for (n, m) in [(40, 6), (41, 5), (33, 1), (17, 8)] {
                check_kernel(dtype, n, m);
            }
        }
    }

    fn check_kernel(dtype: GgmlDType, n: usize, m: usize) {
        let k = 96;
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
            #[cfg(target_arch = "x86_64")]
            if n >= 4 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("f16c") {
                // The four-row decoding kernel without VNNI, which the matmul below may not pick.
                let rows: [&[u8]; 4] = std::array::from_fn(|r| &data[r * row.len()..(r + 1) * row.len()]);
                // SAFETY: the features the kernels need are present.
                let four = unsafe { dot_4x1_avx2(rows, &acts[..k / QK]) };
                for (r, got) in four.into_iter().enumerate() {
                    // SAFETY: as above.
                    let one = unsafe { vec_dot_avx2(rows[r], &acts[..k / QK]) };
                    assert_eq!(got.to_bits(), one.to_bits(), "four-row AVX2 kernel, row {r}");
                }
            }
        }
        // The tiled path must give exactly the one-row result for every output.
        let q8_0 = dtype == GgmlDType::Q8_0;
        let data = kernel.qtensor().data().unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let row_bytes = (k / QK) * if q8_0 { Q8_0_BYTES } else { Q4_1_BYTES };
        for j in 0..n {
            let row = &data[j * row_bytes..(j + 1) * row_bytes];
            for i in 0..m {
                let one = select_kernel(q8_0)(row, &acts[i * (k / QK)..(i + 1) * (k / QK)]);
                assert_eq!(got[i * n + j].to_bits(), one.to_bits(), "{dtype:?} output ({i}, {j})");
            }
        }
    }
}
