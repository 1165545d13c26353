//! The `f32` [`DiagGru`](super::DiagGru) cell (value and Jacobian) in
//! AVX2+FMA intrinsics, eight units per vector, with no division.
//!
//! Why: the portable cell ([`crate::vmath`] inside a loop the compiler
//! vectorizes) is ~200 AVX2 instructions per 8 units, three of them
//! divisions (`vdivps`, ~10 cycles of throughput each on the CPUs we run
//! on), and it dominates a fused Newton iteration. Here every quotient is a
//! reciprocal estimate (`vrcpps`, 12 bits) refined by one Newton–Raphson
//! step (two FMAs), `exp` is the same range reduction and polynomial as
//! [`crate::vmath::exp`] written with FMAs, and the GRU's `1 − z` and
//! `1 − c²` come from quantities already at hand without cancellation
//! (`1 − σ(u) = e^{−u}·σ(u)`, `1 − |tanh u| = 2/(e^{2|u|} + 1)`).
//!
//! [`DiagGru<f32>`](super::DiagGru) takes this path when the CPU has AVX2
//! and FMA ([`available`]); the portable cell stays for other CPUs, for
//! `f64`, and for the backward pass. The two paths round differently (this
//! one is not bit-identical to the portable one, whose error is
//! [`crate::vmath`]'s per function); `step` and `step_jacobian` of one cell
//! always agree bit for bit (they run the same code).
//!
//! # Error bounds
//!
//! Against the cell evaluated in `f64` from the same `f32` inputs, per
//! unit, with `ε = 2^-24`, `1 − z`, `1 − r` and `1 − c²` exact (no
//! cancellation in the reference), `dz = z(1−z)a_z`, `dr = r(1−r)a_r`,
//! and `κ = 1 + |x_z| + |a_z h| + |x_r| + |a_r h| + |x_c| + |a_c r h|`
//! (the magnitudes of the pre-activations' terms: rounding them in `f32`
//! moves a pre-activation by up to `κ·ε`, which no evaluation avoids):
//!
//! - `|Δh'| ≤` [`OUT_MAX_ERR`]` · ε · ((1−z)|h| + z|c| + κ·(z(1−z)(|c| +
//!   |h|) + z(1−c²))) + 2^-124·(1 + |h|)`;
//! - `|Δ∂h'/∂h| ≤` [`JAC_MAX_ERR`]` · ε · κ · ((1−z) + (|c| + |h|)·|dz| +
//!   z(1−c²)|a_c|·(r + |h·dr|)) + 2^-124·(1 + |h|)(1 + |a_z| + |a_r| + |a_c|)`.
//!
//! The absolute terms cover saturated gates: `e^{±u}` is clamped at
//! `|u| = 87`, so a gate never gets closer to 0 than `e^-87 ≈ 2^-125.5`.
//! The largest errors seen by `tests/gru_avx2.rs` (random units with
//! saturated gates, dense sweeps near the formulas' switches) are about
//! 3.4 and 2.7 of these units. NaN in `h` or `x` gives NaN out.

/// Bound on the error of `h'` (see the module docs for its scale).
pub const OUT_MAX_ERR: f64 = 8.0;
/// Bound on the error of `∂h'/∂h` (see the module docs for its scale).
pub const JAC_MAX_ERR: f64 = 8.0;

/// Whether this CPU takes the AVX2+FMA cell (a cached feature check).
pub fn available() -> bool {
    crate::simd::avx2_fma()
}

/// `out = f(h, x)` (and `jac = ∂f/∂h` when `jac` is `Some`) for every unit
/// of an `f32` `DiagGru` with weights `w = [a_z, a_r, a_c]`, when the CPU
/// has AVX2 and FMA; returns `false` (touching nothing) otherwise. Shapes
/// as [`Cell::step_jacobian`](super::Cell::step_jacobian): `h, out, jac:
/// [n]`, `x: [3n]`, with `n = out.len()`.
pub(crate) fn run(
    w: [&[f32]; 3],
    h: &[f32],
    x: &[f32],
    out: &mut [f32],
    jac: Option<&mut [f32]>,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if available() {
            let n = out.len();
            let units = imp::Units {
                az: &w[0][..n],
                ar: &w[1][..n],
                ac: &w[2][..n],
                h: &h[..n],
                xz: &x[..n],
                xr: &x[n..2 * n],
                xc: &x[2 * n..3 * n],
            };
            match jac {
                // SAFETY: the CPU has AVX2 and FMA (checked just above),
                // the features these functions are compiled for.
                Some(jac) => unsafe { imp::units::<true>(&units, out, &mut jac[..n]) },
                // SAFETY: as above.
                None => unsafe { imp::units::<false>(&units, out, &mut []) },
            }
            return true;
        }
    }
    let _ = (w, h, x, out, jac);
    false
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    /// The per-unit inputs of one step, every slice `[n]`.
    pub(super) struct Units<'a> {
        pub az: &'a [f32],
        pub ar: &'a [f32],
        pub ac: &'a [f32],
        pub h: &'a [f32],
        pub xz: &'a [f32],
        pub xr: &'a [f32],
        pub xc: &'a [f32],
    }

    /// Eight lanes from `s[i..i + 8]` (bounds-checked).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(s: &[f32], i: usize) -> __m256 {
        let s = &s[i..i + 8];
        // SAFETY: `s` holds 8 `f32`s (sliced above); unaligned load.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// Stores eight lanes into `s[i..i + 8]` (bounds-checked).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(s: &mut [f32], i: usize, v: __m256) {
        let s = &mut s[i..i + 8];
        // SAFETY: `s` holds 8 `f32`s (sliced above); unaligned store.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }

    /// `e^x` for `x` clamped to `[-87, 87]` (so `2^k` is a normal number
    /// and so is `1/(1 + e^x)`); NaN stays NaN. [`crate::vmath::exp`]'s
    /// reduction and polynomial with FMAs: within ~1.5 ulp on that range.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp(x: __m256) -> __m256 {
        // `min(c, x)`/`max(c, x)` return `x` when it is NaN.
        let x = _mm256_min_ps(_mm256_set1_ps(87.0), x);
        let x = _mm256_max_ps(_mm256_set1_ps(-87.0), x);
        let rounder = _mm256_set1_ps(12_582_912.0); // 1.5·2^23
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), rounder);
        let n = _mm256_sub_ps(t, rounder);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let q = _mm256_set1_ps(1.392_692_7e-3);
        let q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.363_774e-3));
        let q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.166_655e-2));
        let q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.666_657_3e-1));
        let q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0.5));
        // 2^n: `t`'s low mantissa bits hold `n` (two's complement) above
        // the rounder's, whose bits shift out, so `t << 23` is `n << 23`.
        let scale = _mm256_add_epi32(
            _mm256_slli_epi32::<23>(_mm256_castps_si256(t)),
            _mm256_set1_epi32(127 << 23),
        );
        let scale = _mm256_castsi256_ps(scale);
        // e^x = 2^n·(1 + (r + r²·q)), the last step one FMA.
        let p = _mm256_fmadd_ps(_mm256_mul_ps(r, r), q, r);
        _mm256_fmadd_ps(p, scale, scale)
    }

    /// `1/d` for `1 ≤ d ≤ e^87 + 1`: the 12-bit estimate and one
    /// Newton–Raphson step (`r + r·(1 − d·r)`), ~2^-22 relative.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn recip(d: __m256) -> __m256 {
        let r = _mm256_rcp_ps(d);
        let e = _mm256_fnmadd_ps(d, r, _mm256_set1_ps(1.0));
        _mm256_fmadd_ps(r, e, r)
    }

    /// `(σ(u), 1 − σ(u))`, the second as `e^{-u}·σ(u)` (no cancellation
    /// near `σ = 1`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sigmoid(u: __m256) -> (__m256, __m256) {
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), u));
        let s = recip(_mm256_add_ps(_mm256_set1_ps(1.0), e));
        (s, _mm256_mul_ps(e, s))
    }

    /// `(tanh u, 1 − |tanh u|)`: below `|u| = 0.625` the odd polynomial of
    /// [`crate::vmath::tanh`], above it `1 − q` with `q = 2/(e^{2|u|} + 1)`
    /// (which is also the second value there, without cancellation).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tanh(u: __m256) -> (__m256, __m256) {
        let sign = _mm256_set1_ps(-0.0);
        let one = _mm256_set1_ps(1.0);
        let ax = _mm256_andnot_ps(sign, u);
        let s = _mm256_mul_ps(ax, ax);
        let p = _mm256_set1_ps(-6.096_714e-3);
        let p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(2.099_718e-2));
        let p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-5.385_091e-2));
        let p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.333_277e-1));
        let p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-3.333_332_9e-1));
        let small = _mm256_fmadd_ps(ax, _mm256_mul_ps(s, p), ax);
        let e = exp(_mm256_add_ps(ax, ax));
        let q = _mm256_mul_ps(_mm256_set1_ps(2.0), recip(_mm256_add_ps(e, one)));
        let large = _mm256_sub_ps(one, q);
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625));
        let t = _mm256_blendv_ps(large, small, is_small);
        let rest = _mm256_blendv_ps(q, _mm256_sub_ps(one, small), is_small);
        // tanh is odd: `u`'s sign (keeps tanh(−0) = −0).
        (_mm256_or_ps(t, _mm256_and_ps(sign, u)), rest)
    }

    /// Eight units: `(h', ∂h'/∂h)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn cell(
        az: __m256,
        ar: __m256,
        ac: __m256,
        h: __m256,
        xz: __m256,
        xr: __m256,
        xc: __m256,
    ) -> (__m256, __m256) {
        let one = _mm256_set1_ps(1.0);
        let (z, zc) = sigmoid(_mm256_fmadd_ps(az, h, xz));
        let (r, rc) = sigmoid(_mm256_fmadd_ps(ar, h, xr));
        let (c, cc) = tanh(_mm256_fmadd_ps(ac, _mm256_mul_ps(r, h), xc));
        // h' = (1 − z)·h + z·c
        let out = _mm256_fmadd_ps(z, c, _mm256_mul_ps(zc, h));
        // ∂h'/∂h = (1 − z) + (c − h)·dz + z·dc with dz = z(1−z)a_z,
        // dr = r(1−r)a_r, dc = (1 − c²)·a_c·(r + h·dr) and
        // 1 − c² = (1 − |c|)(2 − (1 − |c|)).
        let dz = _mm256_mul_ps(_mm256_mul_ps(z, zc), az);
        let dr = _mm256_mul_ps(_mm256_mul_ps(r, rc), ar);
        let c2 = _mm256_mul_ps(cc, _mm256_sub_ps(_mm256_add_ps(one, one), cc));
        let dc = _mm256_mul_ps(_mm256_mul_ps(c2, ac), _mm256_fmadd_ps(h, dr, r));
        let jac = _mm256_fmadd_ps(_mm256_sub_ps(c, h), dz, zc);
        (out, _mm256_fmadd_ps(z, dc, jac))
    }

    /// Every unit of `u` into `out` (and `jac` when `JAC`); `out`, `jac`
    /// and every slice of `u` are `[n]`. A tail of `n mod 8` units runs
    /// through zero-padded copies.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn units<const JAC: bool>(u: &Units<'_>, out: &mut [f32], jac: &mut [f32]) {
        let n = out.len();
        let full = n - n % 8;
        let mut i = 0;
        // Two groups per iteration: one group's cell is a long dependent
        // chain (exp, reciprocal, then tanh of a value that needs `r`),
        // and two independent chains in flight keep the pipes busy.
        while i + 16 <= full {
            let (o0, j0) = cell(
                load(u.az, i),
                load(u.ar, i),
                load(u.ac, i),
                load(u.h, i),
                load(u.xz, i),
                load(u.xr, i),
                load(u.xc, i),
            );
            let k = i + 8;
            let (o1, j1) = cell(
                load(u.az, k),
                load(u.ar, k),
                load(u.ac, k),
                load(u.h, k),
                load(u.xz, k),
                load(u.xr, k),
                load(u.xc, k),
            );
            store(out, i, o0);
            store(out, k, o1);
            if JAC {
                store(jac, i, j0);
                store(jac, k, j1);
            }
            i += 16;
        }
        while i < full {
            let (o, j) = cell(
                load(u.az, i),
                load(u.ar, i),
                load(u.ac, i),
                load(u.h, i),
                load(u.xz, i),
                load(u.xr, i),
                load(u.xc, i),
            );
            store(out, i, o);
            if JAC {
                store(jac, i, j);
            }
            i += 8;
        }
        if full < n {
            let pad = |s: &[f32]| {
                let mut p = [0.0f32; 8];
                p[..n - full].copy_from_slice(&s[full..n]);
                p
            };
            let (o, j) = cell(
                load(&pad(u.az), 0),
                load(&pad(u.ar), 0),
                load(&pad(u.ac), 0),
                load(&pad(u.h), 0),
                load(&pad(u.xz), 0),
                load(&pad(u.xr), 0),
                load(&pad(u.xc), 0),
            );
            let (mut po, mut pj) = ([0.0f32; 8], [0.0f32; 8]);
            store(&mut po, 0, o);
            store(&mut pj, 0, j);
            out[full..].copy_from_slice(&po[..n - full]);
            if JAC {
                jac[full..n].copy_from_slice(&pj[..n - full]);
            }
        }
    }
}
