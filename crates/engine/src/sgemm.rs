//! f32 matrix products for the trainer's large projections, on an AVX-512 register tile.
//!
//! The gemm crate sustains about a third of this class of CPU's AVX-512 peak on the trainer's
//! shapes (512 rows against 576…49152 columns, one operand a transposed weight). This is a
//! BLIS-style loop nest specialised to them: the left operand is row-major activations, read
//! in place with broadcasts (packing it would cost as much as the product on the narrow k/v
//! projections); the right operand is packed per `kc × nc` block into 32-column panels that
//! stay in L2 while a `12 × kc` sliver of the left operand stays in L1; a 12×32 tile of the
//! result lives in 24 zmm registers for the whole `kc` reduction. Threads split the columns.

use std::cell::RefCell;

/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile: two 16-lane vectors.
const NR: usize = 32;
/// Reduction depth per packed block for long reductions: a `MR × KC` sliver of the left
/// operand (12 KiB) stays in L1 while the tile runs along a packed block.
const KC: usize = 256;
/// Reductions up to this deep are one block: every result tile is then stored once instead of
/// being read back and stored again per block, which for the 512 × 49152 logits (k = 576) was
/// hundreds of megabytes of memory traffic per product. The sliver (27 KiB at 576) still fits
/// L1.
const MAX_SINGLE_KC: usize = 640;
/// Floats of one packed block (`kc × nc`, 768 KiB): it stays in L2 beside the left operand.
const PACKED_FLOATS: usize = KC * 768;

/// Reduction depth and column count of the packed blocks for a reduction over `k`.
fn block_shape(k: usize) -> (usize, usize) {
    let kc = if k <= MAX_SINGLE_KC { k.max(1) } else { KC };
    (kc, (PACKED_FLOATS / kc / NR * NR).max(NR))
}

/// A matrix operand with arbitrary strides: element `(i, j)` at `data[i·rs + j·cs]` (a
/// transpose is a swap of the strides).
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl Strided<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        self.data.len() > (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// The left operand as the kernel reads it: `m × k` floats at `data[i·rs + p]`.
#[derive(Clone, Copy)]
struct RowMajor<'a> {
    data: &'a [f32],
    rs: usize,
}

/// Whether [`gemm`] can run here (AVX-512F at run time).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Shape of one product: `dst[m×n] (+)= alpha · lhs[m×k] · rhs[k×n]`, dst row-major with
/// stride `n`.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

/// Where a product goes: rows `ldc` apart, overwritten or accumulated into.
pub(crate) struct Dst<'a> {
    pub(crate) data: &'a mut [f32],
    pub(crate) ldc: usize,
    pub(crate) accumulate: bool,
}

/// `dst[m×n] = (accumulate ? dst : 0) + alpha · lhs · rhs` on `threads` threads of rayon's pool.
/// Panics when [`supported`] is false or an operand is too small for its strides.
pub(crate) fn gemm(dst: Dst, d: Dims, lhs: Strided, rhs: Strided, alpha: f32, threads: usize) {
    assert!(supported(), "sgemm needs AVX-512F");
    let Dims { m, n, k } = d;
    let Dst { data: dst, ldc, accumulate } = dst;
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && dst.len() >= (m - 1) * ldc + n, "sgemm: destination too small");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "sgemm: operand too small");
    // A transposed left operand (gradients of the rank-r factors, of keys and values) is small
    // next to its product: copied row-major.
    let copy;
    let lhs = if lhs.cs == 1 {
        RowMajor { data: lhs.data, rs: lhs.rs }
    } else {
        copy = row_major_copy(lhs, m, k);
        RowMajor { data: &copy, rs: k }
    };
    if n <= NARROW {
        gemm_narrow(Dst { data: dst, ldc, accumulate }, d, lhs, rhs, alpha, threads);
        return;
    }
    let parts = reduction_parts(d, threads);
    if parts > 1 {
        gemm_split_reduction(Dst { data: dst, ldc, accumulate }, d, lhs, rhs, alpha, parts);
        return;
    }
    let blocks = split(m, n, threads);
    let out = SharedDst(dst.as_mut_ptr());
    // One row tile uses each packed float once: packing would cost as much as the product.
    let unpacked = m <= MR && rhs.cs == 1;
    let run = |b: &Block| {
        // SAFETY: the blocks are disjoint rectangles of `dst`, whose size was checked above;
        // each task writes only inside its own, and the caller's borrow outlives the tasks.
        unsafe {
            if unpacked {
                gemm_block_unpacked(out, ldc, accumulate, d, lhs, rhs, alpha, *b)
            } else {
                gemm_block(out, ldc, accumulate, d, lhs, rhs, alpha, *b)
            }
        }
    };
    if blocks.len() == 1 {
        run(&blocks[0]);
    } else {
        use rayon::prelude::*;
        blocks.par_iter().for_each(run);
    }
}

/// Products at most this many columns wide run as dot products ([`gemm_narrow`]).
const NARROW: usize = 16;

/// [`gemm`] for at most [`NARROW`] columns, the rank-r factors of LoRA (`x·Aᵀ`, `g·B`): dot
/// products of the left operand's rows with the right operand's columns, both read along the
/// reduction. The register tile would spend three quarters of its multiply-adds on padding at
/// r = 8, and pack the right operand on every call.
fn gemm_narrow(dst: Dst, d: Dims, lhs: RowMajor, rhs: Strided, alpha: f32, threads: usize) {
    use rayon::prelude::*;
    let Dims { m, n, k } = d;
    let Dst { data: dst, ldc, accumulate } = dst;
    // Column `j` at `cols[j·stride..][..k]`: a transposed weight as it is, anything else copied
    // as the rows of its transpose (n·k floats, small next to the product).
    let copy: Vec<f32>;
    let (cols, stride) = if rhs.rs == 1 {
        (rhs.data, rhs.cs)
    } else {
        copy = row_major_copy(Strided { data: rhs.data, rs: rhs.cs, cs: rhs.rs }, n, k);
        (&copy[..], k)
    };
    let tasks = if threads > 1 { 4 * threads } else { 1 };
    let bands: Vec<(usize, usize)> = (0..tasks).map(|t| (m * t / tasks, m * (t + 1) / tasks)).filter(|(a, b)| a < b).collect();
    let out = SharedDst(dst.as_mut_ptr());
    let run = |&(i0, i1): &(usize, usize)| {
        let band = Narrow { dst: out, ldc, accumulate, lhs, cols, stride, n, k, alpha, i0, i1 };
        // SAFETY: the bands are disjoint row ranges of `dst`, whose size `gemm` checked; the
        // operands' extents were checked there too (a copied right operand holds n·k floats).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::narrow(&band)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = band;
    };
    if bands.len() == 1 {
        run(&bands[0]);
    } else {
        bands.par_iter().for_each(run);
    }
}

/// Rows `i0..i1` of a narrow product (see [`gemm_narrow`]).
struct Narrow<'a> {
    dst: SharedDst,
    ldc: usize,
    accumulate: bool,
    lhs: RowMajor<'a>,
    cols: &'a [f32],
    stride: usize,
    n: usize,
    k: usize,
    alpha: f32,
    i0: usize,
    i1: usize,
}

/// [`gemm_block`] for a product of at most [`MR`] rows whose right operand is row-major: the
/// tile reads the right operand in place, each float of it once.
///
/// # Safety
/// As [`gemm_block`], with `rhs.cs == 1` and `d.m <= MR`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block_unpacked(dst: SharedDst, ldc: usize, accumulate: bool, d: Dims, lhs: RowMajor, rhs: Strided, alpha: f32, block: Block) {
    debug_assert!(rhs.cs == 1 && block.i1 - block.i0 <= MR);
    let rows = block.i1 - block.i0;
    for jr in (block.j0..block.j1).step_by(NR) {
        let cols = NR.min(block.j1 - jr);
        // SAFETY: rows `i0..i1` and columns `jr..jr+cols` lie inside `dst` and this task's
        // block; the tile reads `cols` floats of `d.k` rows of `rhs` from column `jr`, which
        // `gemm` checked to be inside the operand, and `rows` rows of `d.k` of `lhs`.
        unsafe {
            let c = dst.0.add(block.i0 * ldc + jr);
            let a = lhs.data.as_ptr().add(block.i0 * lhs.rs);
            let t = Tile { a, lda: lhs.rs, b: rhs.data.as_ptr().add(jr), kc: d.k, c, ldc, rows, cols, alpha, load_dst: accumulate };
            tile::<false>(t, rhs.rs);
        }
    }
}

/// Into how many ranges of the reduction a product is split across threads: more than one for
/// reductions much deeper than the result is wide, the loss gradient's `512 × 49152` logits times
/// the `49152 × 576` output weight. Split by columns, every task read all 100 MB of the left
/// operand (and copied it sliver by sliver, its rows being 4 KiB multiples apart); split by
/// reduction, each task reads its own range of both operands once.
fn reduction_parts(d: Dims, threads: usize) -> usize {
    if threads > 1 && d.k >= 8 * d.m.max(d.n) { (4 * threads).min(d.k / KC).max(1) } else { 1 }
}

/// [`gemm`] with the reduction split into `parts` ranges, each a task computing its partial
/// product into a buffer of its own; the partial products are then summed into `dst`.
fn gemm_split_reduction(dst: Dst, d: Dims, lhs: RowMajor, rhs: Strided, alpha: f32, parts: usize) {
    use rayon::prelude::*;
    let Dims { m, n, k } = d;
    let Dst { data: dst, ldc, accumulate } = dst;
    let mut partials = vec![0f32; parts * m * n];
    partials.par_chunks_mut(m * n).enumerate().for_each(|(part, buf)| {
        let (p0, p1) = (k * part / parts, k * (part + 1) / parts);
        let lhs = RowMajor { data: &lhs.data[p0..], rs: lhs.rs };
        let rhs = Strided { data: &rhs.data[p0 * rhs.rs..], ..rhs };
        let whole = Block { i0: 0, i1: m, j0: 0, j1: n };
        // SAFETY: `buf` holds `m` rows of `n` floats and belongs to this task alone.
        unsafe { gemm_block(SharedDst(buf.as_mut_ptr()), n, false, Dims { m, n, k: p1 - p0 }, lhs, rhs, alpha, whole) };
    });
    dst.par_chunks_mut(ldc).take(m).enumerate().for_each(|(i, row)| {
        for (j, out) in row[..n].iter_mut().enumerate() {
            let sum: f32 = partials[i * n + j..].iter().step_by(m * n).sum();
            *out = if accumulate { *out + sum } else { sum };
        }
    });
}

/// `m × k` elements of `x` in a row-major vector.
fn row_major_copy(x: Strided, m: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * k];
    if x.rs == 1 {
        // Columns are adjacent in memory: the transpose of a row-major `k × m` matrix.
        transpose(&mut out, k, x.data, x.cs, k, m);
    } else {
        for (i, row) in out.chunks_exact_mut(k).enumerate() {
            for (p, v) in row.iter_mut().enumerate() {
                *v = x.data[i * x.rs + p * x.cs];
            }
        }
    }
    out
}

/// A rectangle of the result: rows `i0..i1`, columns `j0..j1`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Block {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

/// Splits the result into tasks for `threads` threads: column bands of whole register tiles
/// when there are enough of them (each task then packs only its own columns of the right
/// operand), otherwise row bands (the narrow rank-r products). Up to four tasks per thread, so
/// that when another process holds up one of our threads, the others take over its share
/// instead of waiting for it.
fn split(m: usize, n: usize, threads: usize) -> Vec<Block> {
    let tasks = if threads > 1 { 4 * threads } else { 1 };
    let bands = |len: usize, unit: usize| -> Vec<(usize, usize)> {
        let units = len.div_ceil(unit);
        let count = tasks.clamp(1, units);
        (0..count).map(|t| ((units * t / count * unit).min(len), (units * (t + 1) / count * unit).min(len))).filter(|(a, b)| a < b).collect()
    };
    if n.div_ceil(NR) >= threads {
        bands(n, NR).into_iter().map(|(j0, j1)| Block { i0: 0, i1: m, j0, j1 }).collect()
    } else {
        bands(m, MR).into_iter().map(|(i0, i1)| Block { i0, i1, j0: 0, j1: n }).collect()
    }
}

#[derive(Clone, Copy)]
struct SharedDst(*mut f32);
// SAFETY: tasks given a `SharedDst` write disjoint column bands (see `gemm`).
unsafe impl Send for SharedDst {}
// SAFETY: as above.
unsafe impl Sync for SharedDst {}

thread_local! {
    /// Packed right-operand block, reused across calls: a fresh allocation per call
    /// would be a fresh mapping and its page faults each time.
    static PACKED: RefCell<Vec<Lane>> = const { RefCell::new(Vec::new()) };
}

/// Row stride of the copy of a left-operand sliver made when the operand's own rows are a
/// multiple of 4 KiB apart (the loss gradient over a 49152-token vocabulary): such rows fall into
/// one L1 set and evict each other; 16 floats of padding spread them.
const SLIVER_STRIDE: usize = MAX_SINGLE_KC + 16;

/// 64-byte aligned storage for one 16-float vector, so packed panels load whole cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lane([f32; 16]);

/// One block of the product.
///
/// # Safety
/// `dst` must point at `m` rows of `n` floats, `ldc` apart, and no other thread may touch
/// `block` meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(dst: SharedDst, ldc: usize, accumulate: bool, d: Dims, lhs: RowMajor, rhs: Strided, alpha: f32, block: Block) {
    let Block { i0, i1, j0, j1 } = block;
    PACKED.with(|buf| {
        let mut buf = buf.borrow_mut();
        let lanes = PACKED_FLOATS / 16;
        if buf.len() < lanes {
            buf.resize(lanes, Lane([0.0; 16]));
        }
        // SAFETY: `Lane` is 16 plain floats with no padding.
        let packed = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<f32>(), lanes * 16) };
        let mut sliver = [0f32; MR * SLIVER_STRIDE];
        let aliased = lhs.rs % 1024 == 0;
        let (depth, width) = block_shape(d.k);
        for jc in (j0..j1).step_by(width) {
            let nc = width.min(j1 - jc);
            for pc in (0..d.k).step_by(depth) {
                let kc = depth.min(d.k - pc);
                pack_rhs(packed, rhs, pc, kc, jc, nc);
                let load_dst = accumulate || pc > 0;
                // The block packed next: its source (a frozen weight, in memory rather than
                // cache) is fetched while this one is multiplied, a share per row tile.
                let next = if pc + depth < d.k {
                    Some((pc + depth, depth.min(d.k - pc - depth), jc, nc))
                } else if jc + width < j1 {
                    Some((0, depth.min(d.k), jc + width, width.min(j1 - jc - width)))
                } else {
                    None
                };
                let tiles = (i1 - i0).div_ceil(MR);
                for (step, ic) in (i0..i1).step_by(MR).enumerate() {
                    if let Some(next) = next {
                        prefetch_share(rhs, next, step, tiles);
                    }
                    let rows = MR.min(i1 - ic);
                    let (a, lda) = if aliased {
                        for (i, dst) in sliver.chunks_exact_mut(SLIVER_STRIDE).take(rows).enumerate() {
                            let start = (ic + i) * lhs.rs + pc;
                            dst[..kc].copy_from_slice(&lhs.data[start..start + kc]);
                        }
                        (&sliver[..], SLIVER_STRIDE)
                    } else {
                        (&lhs.data[ic * lhs.rs + pc..], lhs.rs)
                    };
                    for jr in (0..nc).step_by(NR) {
                        let cols = NR.min(nc - jr);
                        let panel = &packed[jr * kc..(jr + NR) * kc];
                        // SAFETY: rows `ic..ic+rows` and columns `jc+jr..jc+jr+cols` lie inside
                        // `dst` and inside this task's band; `a` holds `rows` rows of `kc`.
                        unsafe {
                            let c = dst.0.add(ic * ldc + jc + jr);
                            tile::<true>(Tile { a: a.as_ptr(), lda, b: panel.as_ptr(), kc, c, ldc, rows, cols, alpha, load_dst }, NR);
                        }
                    }
                }
            }
        }
    })
}

/// Prefetches share `step` of `steps` of the source of block `(pc, kc, jc, nc)` of `rhs`: its
/// runs of adjacent floats (rows of a row-major operand, columns of a transposed one), line by
/// line.
fn prefetch_share(rhs: Strided, (pc, kc, jc, nc): (usize, usize, usize, usize), step: usize, steps: usize) {
    let (runs, run_len, start_of) = if rhs.cs == 1 {
        (kc, nc, (pc * rhs.rs + jc, rhs.rs))
    } else if rhs.rs == 1 {
        (nc, kc, (pc + jc * rhs.cs, rhs.cs))
    } else {
        return;
    };
    let (first, stride) = start_of;
    for run in runs * step / steps..runs * (step + 1) / steps {
        let start = first + run * stride;
        let Some(line) = rhs.data.get(start..start + run_len) else { return };
        for chunk in line.chunks(16) {
            prefetch(chunk.as_ptr());
        }
    }
}

fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Packs `rhs[pc..pc+kc, jc..jc+nc]` into 32-column panels: panel `q`, reduction step `p` holds
/// columns `jc+32q ..` at `dst[(q·kc + p)·32 ..]`, zero past `nc`.
fn pack_rhs(dst: &mut [f32], rhs: Strided, pc: usize, kc: usize, jc: usize, nc: usize) {
    for (q, j) in (0..nc).step_by(NR).enumerate() {
        let cols = NR.min(nc - j);
        let panel = &mut dst[q * kc * NR..(q + 1) * kc * NR];
        if rhs.cs == 1 {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                let start = (pc + p) * rhs.rs + jc + j;
                if cols == NR {
                    // A fixed-size copy compiles to two vector moves; a slice copy of run-time
                    // length is a `memcpy` call per 128 bytes.
                    let row: &mut [f32; NR] = row.try_into().expect("panel rows are NR wide");
                    *row = rhs.data[start..start + NR].try_into().expect("NR floats");
                } else {
                    row[..cols].copy_from_slice(&rhs.data[start..start + cols]);
                }
            }
        } else if rhs.rs == 1 {
            pack_transposed(panel, rhs, pc, kc, jc + j, cols);
        } else {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (jj, v) in row[..cols].iter_mut().enumerate() {
                    *v = rhs.data[(pc + p) * rhs.rs + (jc + j + jj) * rhs.cs];
                }
            }
        }
        if cols < NR {
            for row in panel.chunks_exact_mut(NR) {
                row[cols..].fill(0.0);
            }
        }
    }
}

/// Packs columns `j0..j0+cols` (at most 32) of a right operand whose rows are adjacent in
/// memory (`rs == 1`, a transposed weight) into one panel: a transpose, 16×16 floats at a time
/// in registers, then element by element for the edges.
fn pack_transposed(panel: &mut [f32], rhs: Strided, pc: usize, kc: usize, j0: usize, cols: usize) {
    debug_assert_eq!(rhs.rs, 1);
    transpose(panel, NR, &rhs.data[pc + j0 * rhs.cs..], rhs.cs, cols, kc);
}

/// `dst[c·dst_stride + r] = src[r·src_stride + c]` for `r < rows`, `c < cols`: 16×16 blocks in
/// registers, the edges element by element.
fn transpose(dst: &mut [f32], dst_stride: usize, src: &[f32], src_stride: usize, rows: usize, cols: usize) {
    let (full_rows, full_cols) = (rows / 16 * 16, cols / 16 * 16);
    #[cfg(target_arch = "x86_64")]
    for r in (0..full_rows).step_by(16) {
        for c in (0..full_cols).step_by(16) {
            let from = &src[r * src_stride + c..];
            let to = &mut dst[c * dst_stride + r..];
            assert!(from.len() > 15 * src_stride + 15 && to.len() > 15 * dst_stride + 15, "transpose: operand too small");
            // SAFETY: the assert keeps 16 rows of 16 floats at the given strides inside both
            // slices; `transpose` runs only under `gemm`, which checked for AVX-512F.
            unsafe { avx512::transpose16(from.as_ptr(), src_stride, to.as_mut_ptr(), dst_stride) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let (full_rows, full_cols) = (0, 0);
    for r in 0..rows {
        let start = if r < full_rows { full_cols } else { 0 };
        for c in start..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
}

/// One register tile's work: `c[rows × cols] (+)= alpha · a[rows × kc] · b[kc × 32]`.
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    alpha: f32,
    load_dst: bool,
}

/// # Safety
/// `t.a` must hold `t.rows` rows of `t.kc` floats at stride `t.lda`; `t.b` `t.kc` rows of 32
/// floats `ldb` apart, 64-byte aligned where `PACKED` (a packed panel, `ldb` = 32), otherwise
/// of `t.cols` floats (the rest is not read); `t.c` `t.rows` rows of `t.cols` floats at
/// stride `t.ldc`; AVX-512F present.
unsafe fn tile<const PACKED: bool>(t: Tile, ldb: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller; each arm runs the kernel with the tile's row count.
    unsafe {
        match t.rows {
            12 => avx512::kernel::<12, PACKED>(&t, ldb),
            11 => avx512::kernel::<11, PACKED>(&t, ldb),
            10 => avx512::kernel::<10, PACKED>(&t, ldb),
            9 => avx512::kernel::<9, PACKED>(&t, ldb),
            8 => avx512::kernel::<8, PACKED>(&t, ldb),
            7 => avx512::kernel::<7, PACKED>(&t, ldb),
            6 => avx512::kernel::<6, PACKED>(&t, ldb),
            5 => avx512::kernel::<5, PACKED>(&t, ldb),
            4 => avx512::kernel::<4, PACKED>(&t, ldb),
            3 => avx512::kernel::<3, PACKED>(&t, ldb),
            2 => avx512::kernel::<2, PACKED>(&t, ldb),
            1 => avx512::kernel::<1, PACKED>(&t, ldb),
            _ => unreachable!("tile of {} rows", t.rows),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (t, ldb);
        unreachable!("sgemm::supported() is false off x86_64");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// The register tile: `R` rows × 32 columns in `2R` accumulators; each reduction step loads
    /// two vectors of the right operand (a packed panel, or its row in place, masked to the
    /// tile's columns) and broadcasts one float per row.
    ///
    /// The loop uses wrapping pointer steps and load intrinsics rather than `add` and `*p`:
    /// with debug assertions (the dev profile the benchmarks use) those carry checks whose panic
    /// paths make LLVM keep the accumulators in memory.
    ///
    /// # Safety
    /// As [`super::tile`], with `t.rows == R`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel<const R: usize, const PACKED: bool>(t: &Tile, ldb: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let rows: [*const f32; R] = std::array::from_fn(|i| t.a.wrapping_add(i.wrapping_mul(t.lda)));
        let masks = [lane_mask(t.cols), lane_mask(t.cols.saturating_sub(16))];
        let mut b = t.b;
        // SAFETY: every pointer stays inside the extents promised by the caller: `kc` steps of
        // one float along each row of `a` and of `ldb` floats along `b`, of which the masked
        // loads read only the tile's columns.
        unsafe {
            for p in 0..t.kc {
                let (b0, b1) = if PACKED {
                    (_mm512_load_ps(b), _mm512_load_ps(b.wrapping_add(16)))
                } else {
                    (_mm512_maskz_loadu_ps(masks[0], b), _mm512_maskz_loadu_ps(masks[1], b.wrapping_add(16)))
                };
                b = b.wrapping_add(ldb);
                for i in 0..R {
                    let a = _mm512_broadcastss_ps(_mm_load_ss(rows[i].wrapping_add(p)));
                    acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);
                }
            }
            let alpha = _mm512_set1_ps(t.alpha);
            for i in 0..R {
                let c = t.c.wrapping_add(i.wrapping_mul(t.ldc));
                for v in 0..2 {
                    let c = c.wrapping_add(16 * v);
                    let out = if t.load_dst {
                        _mm512_fmadd_ps(alpha, acc[i][v], _mm512_maskz_loadu_ps(masks[v], c))
                    } else {
                        _mm512_mul_ps(alpha, acc[i][v])
                    };
                    _mm512_mask_storeu_ps(c, masks[v], out);
                }
            }
        }
    }

    /// Rows `i0..i1` of a narrow product, two rows and up to eight columns at a time: each step
    /// along the reduction loads 16 floats of both rows and of each column, and accumulates
    /// their products lane-wise; the lanes are summed at the end.
    ///
    /// # Safety
    /// As [`super::gemm_narrow`] promises: rows `i0..i1` of `dst` belong to this call, the
    /// operands hold what their strides address; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn narrow(t: &super::Narrow) {
        for j0 in (0..t.n).step_by(8) {
            // SAFETY: forwarded; each arm handles its group's column count.
            unsafe {
                match (t.n - j0).min(8) {
                    8 => narrow_group::<8>(t, j0),
                    7 => narrow_group::<7>(t, j0),
                    6 => narrow_group::<6>(t, j0),
                    5 => narrow_group::<5>(t, j0),
                    4 => narrow_group::<4>(t, j0),
                    3 => narrow_group::<3>(t, j0),
                    2 => narrow_group::<2>(t, j0),
                    _ => narrow_group::<1>(t, j0),
                }
            }
        }
    }

    /// Columns `j0..j0+J` of [`narrow`].
    #[target_feature(enable = "avx512f")]
    unsafe fn narrow_group<const J: usize>(t: &super::Narrow, j0: usize) {
        let cols: [*const f32; J] = std::array::from_fn(|j| t.cols.as_ptr().wrapping_add((j0 + j) * t.stride));
        for i in (t.i0..t.i1).step_by(2) {
            // An odd last row is computed twice and stored once.
            let rows = [t.lhs.data.as_ptr().wrapping_add(i * t.lhs.rs), t.lhs.data.as_ptr().wrapping_add((i + 1).min(t.i1 - 1) * t.lhs.rs)];
            let mut acc = [[_mm512_setzero_ps(); J]; 2];
            // SAFETY: loads stay inside the `k` floats of each row and column (the last step
            // masked to what is left); stores go to rows `i`, `i + 1` < `i1` of this band.
            unsafe {
                for p in (0..t.k).step_by(16) {
                    let mask = lane_mask(t.k - p);
                    let a = [_mm512_maskz_loadu_ps(mask, rows[0].wrapping_add(p)), _mm512_maskz_loadu_ps(mask, rows[1].wrapping_add(p))];
                    for j in 0..J {
                        let b = _mm512_maskz_loadu_ps(mask, cols[j].wrapping_add(p));
                        acc[0][j] = _mm512_fmadd_ps(a[0], b, acc[0][j]);
                        acc[1][j] = _mm512_fmadd_ps(a[1], b, acc[1][j]);
                    }
                }
                for (r, acc) in acc.iter().enumerate().take((t.i1 - i).min(2)) {
                    let c = t.dst.0.wrapping_add((i + r) * t.ldc + j0);
                    for (j, &v) in acc.iter().enumerate() {
                        let sum = t.alpha * _mm512_reduce_add_ps(v);
                        let c = c.wrapping_add(j);
                        *c = if t.accumulate { *c + sum } else { sum };
                    }
                }
            }
        }
    }

    /// Writes the transpose of the 16×16 block at `src` (rows `src_stride` apart) to `dst`
    /// (rows `dst_stride` apart): pairs of rows interleaved, then pairs of pairs, then 128-bit
    /// lanes gathered in two rounds.
    ///
    /// # Safety
    /// 16 rows of 16 floats must be readable at `src` and writable at `dst`; AVX-512F present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: loads and stores stay inside the 16×16 blocks promised by the caller.
        unsafe {
            let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.wrapping_add(i * src_stride)));
            // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, low and high halves of each lane.
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
            });
            // u[4g + q], lane L: column 4L + q of rows 4g..4g+4.
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (g, q) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + q / 2], t[4 * g + 2 + q / 2]);
                if q % 2 == 0 { _mm512_shuffle_ps::<0x44>(a, b) } else { _mm512_shuffle_ps::<0xEE>(a, b) }
            });
            for q in 0..4 {
                let v_even = _mm512_shuffle_f32x4::<0x88>(u[q], u[4 + q]);
                let v_odd = _mm512_shuffle_f32x4::<0xDD>(u[q], u[4 + q]);
                let w_even = _mm512_shuffle_f32x4::<0x88>(u[8 + q], u[12 + q]);
                let w_odd = _mm512_shuffle_f32x4::<0xDD>(u[8 + q], u[12 + q]);
                let out = |c: usize| dst.wrapping_add(c * dst_stride);
                _mm512_storeu_ps(out(q), _mm512_shuffle_f32x4::<0x88>(v_even, w_even));
                _mm512_storeu_ps(out(8 + q), _mm512_shuffle_f32x4::<0xDD>(v_even, w_even));
                _mm512_storeu_ps(out(4 + q), _mm512_shuffle_f32x4::<0x88>(v_odd, w_odd));
                _mm512_storeu_ps(out(12 + q), _mm512_shuffle_f32x4::<0xDD>(v_odd, w_odd));
            }
        }
    }

    /// The first `n` of 16 lanes (all of them from 16 on).
    fn lane_mask(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as __mmask16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(dst: &mut [f32], ldc: usize, accumulate: bool, d: Dims, lhs: Strided, rhs: Strided, alpha: f32) {
        for i in 0..d.m {
            for j in 0..d.n {
                let dot: f64 = (0..d.k).map(|p| lhs.data[i * lhs.rs + p * lhs.cs] as f64 * rhs.data[p * rhs.rs + j * rhs.cs] as f64).sum();
                let prev = if accumulate { dst[i * ldc + j] as f64 } else { 0.0 };
                dst[i * ldc + j] = (prev + alpha as f64 * dot) as f32;
            }
        }
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Products on the tile's edges (rows and columns not multiples of the tile, reductions
    /// over several packed blocks, several column blocks), both right-operand layouts, with and
    /// without accumulation, against an f64 reference.
    #[test]
    fn matches_reference_on_edges_and_layouts() {
        if !supported() {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        // (m, n, k, left row stride): 1024 and 2048 take the path for rows 4 KiB apart; k above
        // 640 takes several reduction blocks.
        // (20, 40, 9000) on several threads splits the reduction (see `reduction_parts`). Up
        // to 16 columns are dot products (`gemm_narrow`: 8 and 13 columns, odd row counts,
        // reductions not a multiple of 16); up to 12 rows over a row-major right operand read
        // it in place (`gemm_block_unpacked`, edges of 32-column panels).
        for &(m, n, k, lda) in &[(1, 1, 1, 4), (13, 33, 7, 10), (25, 70, 300, 1024), (12, 32, 256, 259), (40, 800, 520, 523), (7, 1600, 33, 36), (50, 8, 40, 43), (20, 100, 1300, 1303), (14, 40, 1100, 2048), (20, 40, 9000, 9216), (37, 13, 601, 605), (33, 16, 192, 192), (8, 600, 515, 520), (12, 70, 100, 100), (3, 17, 2000, 2000)] {
            // Right operand row-major, transposed, or with neither stride 1.
            for (rhs_layout, lhs_transposed) in [("rows", false), ("transposed", false), ("rows", true), ("strided", false)] {
                for accumulate in [false, true] {
                    for threads in [1, 3] {
                        let a = values(m * lda, 1);
                        let b = values(2 * k * n, 2);
                        let rhs = match rhs_layout {
                            "rows" => Strided { data: &b, rs: n, cs: 1 },
                            "transposed" => Strided { data: &b, rs: 1, cs: k },
                            _ => Strided { data: &b, rs: 2 * n, cs: 2 },
                        };
                        let lhs = if lhs_transposed { Strided { data: &a, rs: 1, cs: m } } else { Strided { data: &a, rs: lda, cs: 1 } };
                        let d = Dims { m, n, k };
                        // Destination rows 5 floats apart beyond their width: the padding must
                        // stay as it was.
                        let ldc = n + 5;
                        let mut want = values(m * ldc, 3);
                        let mut got = want.clone();
                        reference(&mut want, ldc, accumulate, d, lhs, rhs, 0.5);
                        gemm(Dst { data: &mut got, ldc, accumulate }, d, lhs, rhs, 0.5, threads);
                        let tol = 1e-5 * k as f32;
                        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!((g - w).abs() <= tol, "{m}x{n}x{k} rhs {rhs_layout} lhs transposed {lhs_transposed} acc={accumulate} at {idx}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pack_transposed_matches_elementwise_copy() {
        if !supported() {
            return;
        }
        let (k, n) = (40, 70);
        let b = values(k * n, 5);
        let rhs = Strided { data: &b, rs: 1, cs: k };
        for (pc, kc, j0, cols) in [(0, 40, 0, 32), (3, 35, 32, 32), (8, 16, 64, 6), (0, 7, 16, 17)] {
            let mut panel = vec![f32::NAN; kc * NR];
            pack_transposed(&mut panel, rhs, pc, kc, j0, cols);
            for p in 0..kc {
                for jj in 0..cols {
                    assert_eq!(panel[p * NR + jj], b[pc + p + (j0 + jj) * k], "p={p} jj={jj}");
                }
            }
        }
    }

    #[test]
    fn row_major_copy_reads_any_strides() {
        if !supported() {
            return;
        }
        let data = values(40 * 37, 6);
        for (m, k, rs, cs) in [(37, 40, 1, 37), (18, 33, 1, 37), (10, 12, 40, 2)] {
            let got = row_major_copy(Strided { data: &data, rs, cs }, m, k);
            for i in 0..m {
                for p in 0..k {
                    assert_eq!(got[i * k + p], data[i * rs + p * cs], "{m}x{k} at {i},{p}");
                }
            }
        }
    }

    /// Only reductions much deeper than the result is wide are split, on several threads, in
    /// ranges of at least one packed block.
    #[test]
    fn reduction_is_split_only_when_deep() {
        let parts = |m, n, k, threads| reduction_parts(Dims { m, n, k }, threads);
        assert_eq!(parts(512, 576, 49152, 2), 8);
        assert_eq!(parts(20, 40, 9000, 3), 12);
        assert_eq!(parts(512, 576, 49152, 1), 1);
        assert_eq!(parts(512, 576, 1536, 2), 1);
        assert_eq!(parts(8, 576, 512, 2), 1);
        assert_eq!(parts(2, 2, 600, 4), 2);
    }

    /// Blocks tile the result exactly, in whole register tiles, at most four per thread.
    #[test]
    fn split_covers_the_result_in_whole_tiles() {
        for (m, n, threads) in [(512, 100, 2), (512, 192, 2), (512, 576, 2), (512, 8, 2), (10, 8, 2), (512, 49152, 3), (512, 576, 1)] {
            let blocks = split(m, n, threads);
            assert!(!blocks.is_empty() && blocks.len() <= 4 * threads);
            if threads == 1 {
                assert_eq!(blocks, vec![Block { i0: 0, i1: m, j0: 0, j1: n }]);
            }
            let mut covered = vec![0u8; m * n];
            for b in &blocks {
                assert!((b.i0 % MR == 0 || b.i0 == m) && (b.j0 % NR == 0 || b.j0 == n), "{b:?}");
                for i in b.i0..b.i1 {
                    for j in b.j0..b.j1 {
                        covered[i * n + j] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{m}x{n} on {threads}");
        }
    }

    /// GFLOP/s of this path against the gemm crate on the trainer's shapes, per CPU second of
    /// the process (less disturbed by other load than wall time):
    /// `cargo test -p engine sgemm::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn throughput() {
        fn cpu_s() -> f64 {
            let s = std::fs::read_to_string("/proc/self/stat").unwrap();
            let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
        }
        let threads = rayon::current_num_threads();
        // (m, n, k, rhs transposed): forward x·Wᵀ and backward g·W of the projections and head.
        for &(m, n, k, transposed) in &[
            (512, 576, 576, true),
            (512, 192, 576, true),
            (512, 1536, 576, true),
            (512, 576, 1536, true),
            (512, 49152, 576, true),
            (512, 576, 576, false),
            (512, 576, 192, false),
            (512, 576, 1536, false),
            (512, 576, 49152, false),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut c = vec![0f32; m * n];
            let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
            let reps = (2e10 / (2.0 * (m * n * k) as f64)).ceil() as usize;
            let flop = 2.0 * (m * n * k * reps) as f64;
            let c0 = cpu_s();
            let t = std::time::Instant::now();
            for _ in 0..reps {
                gemm(Dst { data: &mut c, ldc: n, accumulate: false }, Dims { m, n, k }, Strided { data: &a, rs: k, cs: 1 }, Strided { data: &b, rs, cs }, 1.0, threads);
            }
            let (ours_wall, ours_cpu) = (flop / t.elapsed().as_secs_f64() / 1e9, flop / (cpu_s() - c0) / 1e9);
            let c0 = cpu_s();
            let t = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: the operands hold exactly the extents these strides address.
                unsafe {
                    gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), cs as isize, rs as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(threads));
                }
            }
            let (theirs_wall, theirs_cpu) = (flop / t.elapsed().as_secs_f64() / 1e9, flop / (cpu_s() - c0) / 1e9);
            println!("{m}x{n}x{k} t={transposed}: sgemm {ours_wall:.1} GFLOP/s ({ours_cpu:.1} per CPU-s), gemm crate {theirs_wall:.1} ({theirs_cpu:.1})");
        }
    }
}
