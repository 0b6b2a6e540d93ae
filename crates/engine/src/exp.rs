//! `exp` over f32 slices, sixteen lanes at a time with AVX-512F.
//!
//! A training step takes some eighty million exponentials (SwiGLU both ways, the loss over a
//! 49152-token vocabulary, attention softmax); libm's scalar `expf` spent about a twentieth of
//! the step on them.

/// `x[i] = exp(x[i])`: AVX-512F when the CPU has it, libm otherwise.
pub(crate) fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::sgemm::supported() {
        // SAFETY: AVX-512F is present (checked just above).
        unsafe { avx512::exp_in_place(x) };
        return;
    }
    exp_scalar(x);
}

fn exp_scalar(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Cephes' `expf`: `x = n·ln 2 + r` with |r| ≤ ln 2 / 2, a degree-6 polynomial for `exp(r)`,
    /// and `2ⁿ` applied by `vscalefps`, which also gives 0 and ∞ beyond the float range. The
    /// clamps are written `max(bound, x)` so that a NaN input stays NaN.
    ///
    /// # Safety
    /// AVX-512F must be present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_in_place(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds exactly 16 floats.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mask: __mmask16 = ((1u32 << rest.len()) - 1) as __mmask16;
            // SAFETY: the mask limits the load and store to the remainder's floats.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, rest.as_ptr());
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, exp16(v));
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_set1_ps(88.8), x);
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        _mm512_scalef_ps(p, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against libm over the range softmax and SiLU use, the ends of the float range, and
    /// lengths that leave a remainder.
    #[test]
    fn matches_libm() {
        let mut x: Vec<f32> = (0..4003).map(|i| -110.0 + i as f32 * 0.05).collect();
        x.extend([0.0, -0.0, 88.7, 89.0, -87.0, -120.0, f32::NEG_INFINITY, f32::INFINITY]);
        let mut want = x.clone();
        exp_scalar(&mut want);
        let mut got = x.clone();
        exp_in_place(&mut got);
        for ((&g, &w), &x) in got.iter().zip(&want).zip(&x) {
            let close = (g - w).abs() <= 2e-7 * w.abs() || (w < 1e-37 && g < 1e-37) || g == w;
            assert!(close, "exp({x}) = {g}, libm {w}");
        }
        let mut nan = [f32::NAN; 3];
        exp_in_place(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()));
    }
}
