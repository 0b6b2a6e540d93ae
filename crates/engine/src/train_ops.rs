//! The trainer's heavy differentiable ops, written against matrix kernels directly (f32 on
//! `sgemm`'s AVX-512 tile where the CPU has it, otherwise and for f64 the gemm crate).
//!
//! Composed from candle ops, a LoRA projection over a frozen weight costs five matmuls forward
//! (one of them a weight gradient nobody wants), half a dozen full-size temporaries and copies in
//! and out of custom ops; the loss over a 49k vocabulary costs six more passes over
//! `tokens × vocab` floats each way. Here each is one op with a hand-written backward that
//! computes only what LoRA training needs: input gradients through frozen weights, gradients of
//! the rank-r factors, and the loss gradient `softmax − one_hot`, formed inside the forward pass
//! together with the output projection. Attention is in `train_attention`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::{Mutex, OnceLock};

pub(crate) trait Float: candle_core::WithDType + Copy + Send + Sync + 'static {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// `x[i] = exp(x[i])` in the type's own precision: f32's is vectorised (see `exp`), and the
    /// loss, the attention softmax and SwiGLU run it some eighty million times a step.
    fn exp_in_place(x: &mut [Self]);
    /// See [`softmax_in_place`].
    fn softmax_in_place(row: &mut [Self]) -> (f64, f64) {
        softmax_in_place_generic(row)
    }
    /// Runs a checked product on a type-specific fast path when there is one; gives it back
    /// for the gemm crate otherwise.
    fn fast_gemm(product: Product<'_, Self>) -> Option<Product<'_, Self>> {
        Some(product)
    }
    /// Runs `f` on `len` elements of scratch memory whose contents are unspecified.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        f(&mut zeros::<Self>(len))
    }
}

impl Float for f32 {
    fn softmax_in_place(row: &mut [Self]) -> (f64, f64) {
        softmax_in_place_f32(row)
    }
    fn fast_gemm(p: Product<'_, Self>) -> Option<Product<'_, Self>> {
        if !crate::sgemm::supported() {
            return Some(p);
        }
        let dims = crate::sgemm::Dims { m: p.m, n: p.n, k: p.k };
        let lhs = crate::sgemm::Strided { data: p.lhs.data, rs: p.lhs.rs, cs: p.lhs.cs };
        let rhs = crate::sgemm::Strided { data: p.rhs.data, rs: p.rhs.rs, cs: p.rhs.cs };
        let dst = crate::sgemm::Dst { data: p.dst, ldc: p.ldc, accumulate: p.accumulate };
        crate::sgemm::gemm(dst, dims, lhs, rhs, p.scale as f32, p.threads);
        None
    }
    fn exp_in_place(x: &mut [Self]) {
        crate::exp::exp_in_place(x)
    }
    /// One buffer kept for the process, grown as needed: the loss's logits (100 MB at 512 rows
    /// of a 49152-token vocabulary), freshly allocated, were a fresh mapping each step whose
    /// page faults and zeroing cost as much as a tenth of the loss's matrix products.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        static SCRATCH: Mutex<Vec<f32>> = Mutex::new(Vec::new());
        // Held by another caller (two trainings in one process): a buffer of this call's own.
        let Ok(mut buf) = SCRATCH.try_lock() else { return f(&mut zeros(len)) };
        if buf.len() < len {
            // The old buffer goes before the new one comes: never both at once.
            *buf = Vec::new();
            *buf = zeros(len);
        }
        f(&mut buf[..len])
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Float for f64 {
    fn exp_in_place(x: &mut [Self]) {
        x.iter_mut().for_each(|v| *v = v.exp());
    }
    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// A matrix operand: data plus row and column strides (a transpose is a swap of the strides).
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

pub(crate) fn mat<T>(data: &[T], rs: usize, cs: usize) -> Mat<'_, T> {
    Mat { data, rs, cs }
}

/// `dst[m×n] = (accumulate ? dst : 0) + scale · lhs[m×k] · rhs[k×n]`, dst row-major, on all of
/// rayon's threads.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: Float>(dst: &mut [T], accumulate: bool, m: usize, n: usize, k: usize, lhs: Mat<T>, rhs: Mat<T>, scale: f64) {
    Product { dst, ldc: n, accumulate, m, n, k, lhs, rhs, scale, threads: rayon::current_num_threads() }.run()
}

/// One matrix product: `dst (+)= scale · lhs[m×k] · rhs[k×n]`, dst rows `ldc` apart.
pub(crate) struct Product<'a, T> {
    pub(crate) dst: &'a mut [T],
    pub(crate) ldc: usize,
    pub(crate) accumulate: bool,
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) lhs: Mat<'a, T>,
    pub(crate) rhs: Mat<'a, T>,
    pub(crate) scale: f64,
    /// 1 inside work that is already split among threads (attention heads).
    pub(crate) threads: usize,
}

impl<T: Float> Product<'_, T> {
    pub(crate) fn run(self) {
        let Product { m, n, k, ldc, lhs, rhs, .. } = self;
        let extent = |x: Mat<T>, rows: usize, cols: usize| (rows - 1) * x.rs + (cols - 1) * x.cs + 1;
        if m == 0 || n == 0 {
            return;
        }
        assert!(ldc >= n && self.dst.len() >= (m - 1) * ldc + n, "gemm: destination too small");
        if k == 0 {
            if !self.accumulate {
                self.dst.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(T::from_f64(0.0)));
            }
            return;
        }
        assert!(lhs.data.len() >= extent(lhs, m, k) && rhs.data.len() >= extent(rhs, k, n), "gemm: operand too small");
        let Some(product) = T::fast_gemm(self) else { return };
        let parallelism = if product.threads > 1 && m * n * k >= 64 * 64 * 64 { Parallelism::Rayon(product.threads) } else { Parallelism::None };
        // SAFETY: the asserts above keep every index the strides produce inside the slices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                product.dst.as_mut_ptr(),
                1,
                ldc as isize,
                product.accumulate,
                lhs.data.as_ptr(),
                lhs.cs as isize,
                lhs.rs as isize,
                rhs.data.as_ptr(),
                rhs.cs as isize,
                rhs.rs as isize,
                T::from_f64(1.0),
                T::from_f64(product.scale),
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}

/// A zeroed vector, filled by rayon's threads when large: each step allocates gigabytes of
/// outputs, and zeroing them on the calling thread alone left the other cores idle.
pub(crate) fn zeros<T: Float>(len: usize) -> Vec<T> {
    if len < 1 << 16 {
        return vec![T::from_f64(0.0); len];
    }
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut().par_chunks_mut(1 << 14).for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(T::from_f64(0.0))));
    // SAFETY: the loop above initialised all `len` elements of the capacity.
    unsafe { v.set_len(len) };
    v
}

/// `a + b` for same-shaped tensors, on rayon's threads: candle's own addition runs on the calling
/// thread alone, and the trainer adds activation-sized tensors twice per layer each way.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    fn run<T: Float>(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let sum = with_data::<T, _>(a, |a| {
            with_data::<T, _>(b, |b| {
                let mut sum = Vec::with_capacity(a.len());
                sum.spare_capacity_mut().par_chunks_mut(ELEMENTWISE_CHUNK).zip(a.par_chunks(ELEMENTWISE_CHUNK)).zip(b.par_chunks(ELEMENTWISE_CHUNK)).for_each(|((s, a), b)| {
                    for ((s, &a), &b) in s.iter_mut().zip(a).zip(b) {
                        s.write(a + b);
                    }
                });
                // SAFETY: the chunks above cover all `a.len()` elements of the capacity.
                unsafe { sum.set_len(a.len()) };
                sum
            })
        })??;
        Tensor::from_vec(sum, a.shape(), a.device())
    }
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        candle_core::bail!("add: {:?} {:?} and {:?} {:?}", a.shape(), a.dtype(), b.shape(), b.dtype());
    }
    match a.dtype() {
        DType::F32 => run::<f32>(a, b),
        DType::F64 => run::<f64>(a, b),
        d => candle_core::bail!("add: unsupported dtype {d:?}"),
    }
}

/// Runs `f` on the contiguous data of a CPU tensor.
pub(crate) fn with_data<T: Float, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("train ops run on the CPU") };
    let Some(data) = T::slice(cpu) else { candle_core::bail!("train ops: dtype {:?}", t.dtype()) };
    let (start, end) = layout.contiguous_offsets().expect("contiguous");
    Ok(f(&data[start..end]))
}

pub(crate) fn input_slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("{what} must be contiguous") };
    let Some(data) = T::slice(s) else { candle_core::bail!("{what}: unsupported dtype {:?}", s.dtype()) };
    Ok(&data[start..end])
}

fn with_last_dim(shape: &Shape, n: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    *dims.last_mut().expect("at least one dimension") = n;
    Shape::from(dims)
}

/// `x·Wᵀ (+ scale·((x ⊙ mask)·Aᵀ)·Bᵀ)` over a frozen `W [out, in]`, as `apply_op1` (no LoRA) or
/// `apply_op3(A, B)`; the mask, shaped like `x`, is LoRA's dropout. The backward never forms a
/// gradient for `W`.
#[derive(Clone)]
pub(crate) struct FrozenLinear {
    pub(crate) w: Tensor,
    pub(crate) scale: f64,
    pub(crate) mask: Option<Tensor>,
}

impl FrozenLinear {
    fn dims(&self) -> (usize, usize) {
        self.w.dims2().expect("2-d weight")
    }

    fn forward<T: Float>(&self, x: &[T], shape: &Shape, lora: Option<(&[T], &[T])>) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out_f, in_f) = self.dims();
        let rows = x.len() / in_f;
        let mut y = zeros::<T>(rows * out_f);
        with_data::<T, _>(&self.w, |w| gemm_into(&mut y, false, rows, out_f, in_f, mat(x, in_f, 1), mat(w, 1, in_f), 1.0))?;
        if let Some((a, b)) = lora {
            let r = a.len() / in_f;
            let dropped = self.dropped(x)?;
            let x = dropped.as_deref().unwrap_or(x);
            let mut t = zeros::<T>(rows * r);
            gemm_into(&mut t, false, rows, r, in_f, mat(x, in_f, 1), mat(a, 1, in_f), 1.0);
            gemm_into(&mut y, true, rows, out_f, r, mat(&t, r, 1), mat(b, 1, r), self.scale);
        }
        Ok((T::to_cpu_storage_owned(y), with_last_dim(shape, out_f)))
    }

    /// `x ⊙ mask` when there is a mask.
    fn dropped<T: Float>(&self, x: &[T]) -> candle_core::Result<Option<Vec<T>>> {
        let Some(mask) = &self.mask else { return Ok(None) };
        with_data::<T, _>(mask, |m| {
            if m.len() != x.len() {
                candle_core::bail!("frozen-linear: dropout mask of {} for an input of {}", m.len(), x.len());
            }
            Ok(Some(x.par_iter().zip(m).map(|(&x, &m)| x * m).collect()))
        })?
    }

    fn backward<T: Float>(&self, x: &Tensor, lora: Option<(&Tensor, &Tensor)>, grad: &Tensor) -> candle_core::Result<[Option<Tensor>; 3]> {
        let (out_f, in_f) = self.dims();
        let rows = grad.elem_count() / out_f;
        let dev = grad.device();
        let in_shape = x.shape().clone();
        with_data::<T, _>(grad, |g| -> candle_core::Result<[Option<Tensor>; 3]> {
            let mut dx = zeros::<T>(rows * in_f);
            with_data::<T, _>(&self.w, |w| gemm_into(&mut dx, false, rows, in_f, out_f, mat(g, out_f, 1), mat(w, in_f, 1), 1.0))?;
            let Some((a, b)) = lora else {
                return Ok([Some(Tensor::from_vec(dx, in_shape, dev)?), None, None]);
            };
            let r = a.dim(0)?;
            with_data::<T, _>(x, |x| {
                // With dropout, the adapter sees `x ⊙ mask`, and its part of the input gradient
                // is masked the same way.
                let dropped = self.dropped(x)?;
                let x = dropped.as_deref().unwrap_or(x);
                with_data::<T, _>(a, |a| {
                    with_data::<T, _>(b, |b| {
                        let s = self.scale;
                        // u = g·B and t = x·Aᵀ are [rows, r]: cheap, so t is recomputed
                        // rather than kept from the forward pass.
                        let mut u = zeros::<T>(rows * r);
                        gemm_into(&mut u, false, rows, r, out_f, mat(g, out_f, 1), mat(b, r, 1), 1.0);
                        let mut t = zeros::<T>(rows * r);
                        gemm_into(&mut t, false, rows, r, in_f, mat(x, in_f, 1), mat(a, 1, in_f), 1.0);
                        match &self.mask {
                            None => gemm_into(&mut dx, true, rows, in_f, r, mat(&u, r, 1), mat(a, in_f, 1), s),
                            Some(mask) => with_data::<T, _>(mask, |m| {
                                let mut d = zeros::<T>(rows * in_f);
                                gemm_into(&mut d, false, rows, in_f, r, mat(&u, r, 1), mat(a, in_f, 1), s);
                                dx.par_iter_mut().zip(d.par_iter().zip(m)).for_each(|(dx, (&d, &m))| *dx += d * m);
                            })?,
                        }
                        let mut da = zeros::<T>(r * in_f);
                        gemm_into(&mut da, false, r, in_f, rows, mat(&u, 1, r), mat(x, in_f, 1), s);
                        // dB = s·gᵀ·t, formed as its transpose tᵀ·g: the transposed left operand
                        // is then t (rows × r), not the much larger g (rows × out).
                        let mut db_t = zeros::<T>(r * out_f);
                        gemm_into(&mut db_t, false, r, out_f, rows, mat(&t, 1, r), mat(g, out_f, 1), s);
                        let db: Vec<T> = (0..out_f * r).map(|i| db_t[(i % r) * out_f + i / r]).collect();
                        Ok([
                            Some(Tensor::from_vec(dx, in_shape, dev)?),
                            Some(Tensor::from_vec(da, (r, in_f), dev)?),
                            Some(Tensor::from_vec(db, (out_f, r), dev)?),
                        ])
                    })?
                })?
            })?
        })?
    }
}

impl candle_core::CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match s.dtype() {
            DType::F32 => self.forward::<f32>(input_slice(s, l, "x")?, l.shape(), None),
            DType::F64 => self.forward::<f64>(input_slice(s, l, "x")?, l.shape(), None),
            d => candle_core::bail!("frozen-linear: unsupported dtype {d:?}"),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let [dx, _, _] = match x.dtype() {
            DType::F64 => self.backward::<f64>(x, None, grad)?,
            _ => self.backward::<f32>(x, None, grad)?,
        };
        Ok(dx)
    }
}

impl candle_core::CustomOp3 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear-lora"
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
        match s1.dtype() {
            DType::F32 => self.forward::<f32>(
                input_slice(s1, l1, "x")?,
                l1.shape(),
                Some((input_slice(s2, l2, "lora A")?, input_slice(s3, l3, "lora B")?)),
            ),
            DType::F64 => self.forward::<f64>(
                input_slice(s1, l1, "x")?,
                l1.shape(),
                Some((input_slice(s2, l2, "lora A")?, input_slice(s3, l3, "lora B")?)),
            ),
            d => candle_core::bail!("frozen-linear-lora: unsupported dtype {d:?}"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, da, db] = match x.dtype() {
            DType::F64 => self.backward::<f64>(x, Some((a, b)), grad)?,
            _ => self.backward::<f32>(x, Some((a, b)), grad)?,
        };
        Ok((dx, da, db))
    }
}

/// Sum over rows of `−log softmax(x·Wᵀ)[target]` for a frozen output projection `W [vocab,
/// hidden]`, as `apply_op1` on the hidden states `x [rows, hidden]`.
///
/// The logits are the largest tensor of a training step (rows × vocab). As graph nodes they were
/// kept for the backward pass, and they and their gradient were allocated, zeroed and summed
/// again by candle's autograd, hundreds of megabytes each step. Here they live only inside the
/// forward pass, which turns them in place into the loss gradient `softmax − one_hot` and
/// multiplies that by `W` at once; the backward pass scales the kept input gradient by the
/// (scalar) upstream gradient.
pub(crate) struct ProjectedCrossEntropy {
    w: Tensor,
    targets: Vec<u32>,
    /// d(loss)/dx, set by the forward pass.
    input_grad: OnceLock<Tensor>,
}

impl ProjectedCrossEntropy {
    pub(crate) fn new(w: Tensor, targets: Vec<u32>) -> Self {
        Self { w, targets, input_grad: OnceLock::new() }
    }

    fn forward<T: Float>(&self, x: &[T], hidden: usize) -> candle_core::Result<(f64, Vec<T>)> {
        let (vocab, w_hidden) = self.w.dims2()?;
        let rows = self.targets.len();
        if w_hidden != hidden || x.len() != rows * hidden {
            candle_core::bail!("projected cross-entropy: {} targets, input of {} floats, weight {:?}", rows, x.len(), self.w.shape());
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("projected cross-entropy: target {t} outside the vocabulary of {vocab}");
        }
        let mut dx = zeros::<T>(rows * hidden);
        with_data::<T, _>(&self.w, |w| {
            T::with_scratch(rows * vocab, |logits| {
                gemm_into(logits, false, rows, vocab, hidden, mat(x, hidden, 1), mat(w, 1, hidden), 1.0);
                let loss: f64 = logits.par_chunks_mut(vocab).zip(&self.targets).map(|(row, &t)| softmax_minus_one_hot(row, t as usize)).sum();
                gemm_into(&mut dx, false, rows, hidden, vocab, mat(logits, vocab, 1), mat(w, hidden, 1), 1.0);
                (loss, dx)
            })
        })
    }
}

/// Turns a row of logits into the gradient of `−log softmax(row)[target]`, `softmax − one_hot`,
/// and returns that loss.
fn softmax_minus_one_hot<T: Float>(row: &mut [T], target: usize) -> f64 {
    let logit = row[target].to_f64();
    let (max, sum) = softmax_in_place(row);
    row[target] = T::from_f64(row[target].to_f64() - 1.0);
    max + sum.ln() - logit
}

/// Softmax of `row` in place; returns the row's maximum and `Σ exp(x − max)`, whose logarithm
/// plus the maximum is the log-sum-exp.
pub(crate) fn softmax_in_place<T: Float>(row: &mut [T]) -> (f64, f64) {
    T::softmax_in_place(row)
}

/// [`softmax_in_place`] in any float type, through f64.
fn softmax_in_place_generic<T: Float>(row: &mut [T]) -> (f64, f64) {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
    row.iter_mut().for_each(|v| *v = T::from_f64(v.to_f64() - max));
    T::exp_in_place(row);
    let sum: f64 = row.iter().map(|v| v.to_f64()).sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v = T::from_f64(v.to_f64() * inv));
    (max, sum)
}

/// [`softmax_in_place`] for f32 in 16 independent lanes, which the compiler vectorises (the
/// generic version's per-element f64 round trips and serial folds were several percent of a
/// step over the 49152-token vocabulary); the sum is still accumulated in f64.
fn softmax_in_place_f32(row: &mut [f32]) -> (f64, f64) {
    const LANES: usize = 16;
    let mut max_lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in max_lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&max_lanes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    row.iter_mut().for_each(|v| *v -= max);
    crate::exp::exp_in_place(row);
    let mut sum_lanes = [0f64; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (s, &v) in sum_lanes.iter_mut().zip(chunk) {
            *s += v as f64;
        }
    }
    let sum: f64 = sum_lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| v as f64).sum::<f64>();
    let inv = (1.0 / sum) as f32;
    row.iter_mut().for_each(|v| *v *= inv);
    (max as f64, sum)
}

impl candle_core::CustomOp1 for ProjectedCrossEntropy {
    fn name(&self) -> &'static str {
        "projected-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, hidden) = l.shape().dims2()?;
        let (loss, grad) = match s.dtype() {
            DType::F32 => {
                let (loss, dx) = self.forward::<f32>(input_slice(s, l, "x")?, hidden)?;
                (CpuStorage::F32(vec![loss as f32]), Tensor::from_vec(dx, (rows, hidden), &candle_core::Device::Cpu)?)
            }
            DType::F64 => {
                let (loss, dx) = self.forward::<f64>(input_slice(s, l, "x")?, hidden)?;
                (CpuStorage::F64(vec![loss]), Tensor::from_vec(dx, (rows, hidden), &candle_core::Device::Cpu)?)
            }
            d => candle_core::bail!("projected cross-entropy: unsupported dtype {d:?}"),
        };
        if self.input_grad.set(grad).is_err() {
            candle_core::bail!("projected cross-entropy: an op instance serves one forward pass");
        }
        Ok((loss, Shape::from(())))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some(dx) = self.input_grad.get() else { candle_core::bail!("projected cross-entropy: backward before forward") };
        Ok(Some(dx.broadcast_mul(&grad.to_dtype(dx.dtype())?)?))
    }
}

/// Rows of the last dimension of a contiguous tensor, for ops that work row by row.
fn rows_of(l: &Layout) -> candle_core::Result<usize> {
    Ok(*l.shape().dims().last().ok_or_else(|| candle_core::Error::Msg("a 0-d tensor has no rows".into()))?)
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension with a frozen `w`, as `apply_op2`.
/// candle's composite version keeps five full-size temporaries per norm for its backward and
/// makes a dozen passes; this keeps nothing beyond `x` and makes one pass each way.
pub(crate) struct RmsNorm {
    pub(crate) eps: f64,
}

impl RmsNorm {
    fn forward<T: Float>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let n = w.len();
        let mut y = zeros::<T>(x.len());
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let ss: f64 = x.iter().map(|v| v.to_f64() * v.to_f64()).sum();
            let r = 1.0 / (ss / n as f64 + self.eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = T::from_f64(x.to_f64() * r * w.to_f64());
            }
        });
        y
    }

    /// dx = r·(g∘w) − x·r³·⟨g∘w, x⟩/n per row.
    fn backward<T: Float>(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let shape = x.shape().clone();
        let dev = x.device().clone();
        let dx = with_data::<T, _>(x, |x| {
            with_data::<T, _>(w, |w| {
                with_data::<T, _>(grad, |g| {
                    let n = w.len();
                    let mut dx = zeros::<T>(x.len());
                    dx.par_chunks_mut(n).zip(x.par_chunks(n)).zip(g.par_chunks(n)).for_each(|((dx, x), g)| {
                        let ss: f64 = x.iter().map(|v| v.to_f64() * v.to_f64()).sum();
                        let r = 1.0 / (ss / n as f64 + self.eps).sqrt();
                        let dot: f64 = x.iter().zip(g).zip(w).map(|((x, g), w)| g.to_f64() * w.to_f64() * x.to_f64()).sum();
                        let c = r * r * r * dot / n as f64;
                        for (((d, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                            *d = T::from_f64(r * g.to_f64() * w.to_f64() - x.to_f64() * c);
                        }
                    });
                    dx
                })
            })?
        })??;
        Tensor::from_vec(dx, shape, &dev)
    }
}

impl candle_core::CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-frozen"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if rows_of(l1)? != l2.shape().elem_count() {
            candle_core::bail!("rms-norm: weight {:?} for input {:?}", l2.shape(), l1.shape());
        }
        let storage = match s1.dtype() {
            DType::F32 => CpuStorage::F32(self.forward::<f32>(input_slice(s1, l1, "x")?, input_slice(s2, l2, "w")?)),
            DType::F64 => CpuStorage::F64(self.forward::<f64>(input_slice(s1, l1, "x")?, input_slice(s2, l2, "w")?)),
            d => candle_core::bail!("rms-norm: unsupported dtype {d:?}"),
        };
        Ok((storage, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match x.dtype() {
            DType::F64 => self.backward::<f64>(x, w, grad)?,
            _ => self.backward::<f32>(x, w, grad)?,
        };
        // The norm weights are frozen: no gradient for them.
        Ok((Some(dx), None))
    }
}

/// `silu(gate) · up`, the MLP's activation, as `apply_op2(gate, up)`. candle's composite makes
/// two graph nodes whose backward takes about ten passes over `tokens × intermediate` floats
/// (silu's derivative alone is built from neg, exp, recip and four more ops); this is one pass
/// each way.
pub(crate) struct SwiGlu;

/// Elements per parallel task: large enough to amortise the task, small enough to share.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `σ(x)` for a chunk of `x`, exponentials vectorised, in the type's own precision: in f32, the
/// forward takes about a third less time than through f64 conversions and divisions did (0.10–
/// 0.12 s vs 0.13–0.19 s for four steps of SmolLM2-135M on a Xeon).
fn sigmoids<T: Float>(x: &[T]) -> Vec<T> {
    let mut e: Vec<T> = x.iter().map(|&v| T::zero() - v).collect();
    T::exp_in_place(&mut e);
    e.iter_mut().for_each(|v| *v = T::one() / (T::one() + *v));
    e
}

impl SwiGlu {
    fn forward<T: Float>(gate: &[T], up: &[T]) -> Vec<T> {
        let mut y = zeros::<T>(gate.len());
        y.par_chunks_mut(ELEMENTWISE_CHUNK).zip(gate.par_chunks(ELEMENTWISE_CHUNK)).zip(up.par_chunks(ELEMENTWISE_CHUNK)).for_each(|((y, g), u)| {
            for (((y, &g), &u), s) in y.iter_mut().zip(g).zip(u).zip(sigmoids(g)) {
                *y = g * s * u;
            }
        });
        y
    }

    /// d gate = grad·up·σ(g)·(1 + g·(1 − σ(g))), d up = grad·silu(g).
    fn backward<T: Float>(gate: &[T], up: &[T], grad: &[T]) -> (Vec<T>, Vec<T>) {
        let (mut d_gate, mut d_up) = (zeros::<T>(gate.len()), zeros::<T>(gate.len()));
        let chunks = gate.par_chunks(ELEMENTWISE_CHUNK).zip(up.par_chunks(ELEMENTWISE_CHUNK)).zip(grad.par_chunks(ELEMENTWISE_CHUNK));
        d_gate.par_chunks_mut(ELEMENTWISE_CHUNK).zip(d_up.par_chunks_mut(ELEMENTWISE_CHUNK)).zip(chunks).for_each(|((dg, du), ((g, u), gr))| {
            let s = sigmoids(g);
            for ((dg, du), (((&g, &u), &gr), s)) in dg.iter_mut().zip(du).zip(g.iter().zip(u).zip(gr).zip(s)) {
                let silu = g * s;
                *dg = gr * u * (s + silu * (T::one() - s));
                *du = gr * silu;
            }
        });
        (d_gate, d_up)
    }
}

impl candle_core::CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("swiglu: gate {:?} and up {:?} differ", l1.shape(), l2.shape());
        }
        let storage = match s1.dtype() {
            DType::F32 => CpuStorage::F32(Self::forward::<f32>(input_slice(s1, l1, "gate")?, input_slice(s2, l2, "up")?)),
            DType::F64 => CpuStorage::F64(Self::forward::<f64>(input_slice(s1, l1, "gate")?, input_slice(s2, l2, "up")?)),
            d => candle_core::bail!("swiglu: unsupported dtype {d:?}"),
        };
        Ok((storage, l1.shape().clone()))
    }

    fn bwd(&self, gate: &Tensor, up: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(gate: &Tensor, up: &Tensor, grad: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
            let (dg, du) = with_data::<T, _>(gate, |g| with_data::<T, _>(up, |u| with_data::<T, _>(grad, |gr| SwiGlu::backward(g, u, gr))))???;
            Ok((Tensor::from_vec(dg, gate.shape(), gate.device())?, Tensor::from_vec(du, gate.shape(), gate.device())?))
        }
        let (dg, du) = match gate.dtype() {
            DType::F64 => run::<f64>(gate, up, grad)?,
            _ => run::<f32>(gate, up, grad)?,
        };
        Ok((Some(dg), Some(du)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    fn random(n: usize, seed: u64) -> Var {
        let mut rng = crate::sampling::Rng::new(seed);
        let data: Vec<f32> = (0..n).map(|_| 3.0 * rng.normal()).collect();
        Var::from_tensor(&Tensor::from_vec(data, (n / 64, 64), &Device::Cpu).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// The vectorised f32 softmax against the generic one in f64, with a remainder past the
    /// lanes and a large spread of values.
    #[test]
    fn f32_softmax_matches_generic() {
        let mut rng = crate::sampling::Rng::new(9);
        let row: Vec<f32> = (0..1000 + 7).map(|_| 8.0 * rng.normal()).collect();
        let mut fast = row.clone();
        let mut reference: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let (max, sum) = softmax_in_place_f32(&mut fast);
        let (max_ref, sum_ref) = softmax_in_place_generic(&mut reference);
        assert_eq!(max, max_ref);
        assert!((sum - sum_ref).abs() < 1e-5 * sum_ref, "{sum} vs {sum_ref}");
        for (f, r) in fast.iter().zip(&reference) {
            assert!((*f as f64 - r).abs() < 1e-6 + 1e-5 * r, "{f} vs {r}");
        }
    }

    /// Output and both gradients against candle's `silu(gate) · up`, over more elements than one
    /// parallel chunk.
    #[test]
    fn swiglu_matches_candle_composite() {
        let n = 3 * ELEMENTWISE_CHUNK + 5 * 64;
        let (gate, up, weights) = (random(n, 1), random(n, 2), random(n, 3));
        let ours = gate.as_tensor().apply_op2(up.as_tensor(), SwiGlu).unwrap();
        let reference = (candle_nn::ops::silu(gate.as_tensor()).unwrap() * up.as_tensor()).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-4);
        let g_ours = (ours * weights.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = (reference * weights.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        for var in [&gate, &up] {
            let d = max_diff(g_ours.get(var.as_tensor()).unwrap(), g_ref.get(var.as_tensor()).unwrap());
            assert!(d < 1e-3, "gradients differ by {d}");
        }
    }
}
