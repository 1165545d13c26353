//! The sequential loop of `f32` PermDiagonal rows with at most 8 slots,
//! with the state in one AVX2 register and the permutation applied by
//! `vpermps` (a lane shuffle) instead of loads through memory.
//!
//! Why: the portable loop (`PermDiagonal::run_rows`) keeps the state in a buffer, so every step stores it and the next one
//! gathers it back slot by slot (store-to-load forwarding on the critical
//! path, plus a loop of `n` iterations with its overhead for `n = 5`). Here
//! one step of a row is: load `perm`, `d`, `b` for the step (8 lanes,
//! unaligned), shuffle the state, multiply, add, store 8 lanes. Lanes at
//! `n..8` carry the next step's values and are overwritten by the next
//! step's store; the last steps of a row (fewer than 8 values left) go
//! through padded copies so that nothing outside the row is read or
//! written. Same operations per slot as the portable loop (`d·h[π] + b`,
//! a multiply then an add, no FMA), so results are bitwise identical.
//!
//! Taken when the storage type is `f32`, `n ≤ 8`, the index type is `u8`,
//! `u16` or `u32`, and the CPU has AVX2; [`run_rows`] returns `false`
//! otherwise and the caller runs the portable loop.

use super::perm_diagonal::{PermDiagonal, PermIndex};
use crate::dtype::Storage;
use crate::simd::{same_type, same_type_mut};
use rayon::prelude::*;

/// Runs every row of `p` (`out: [B,T,n]`, `h_last: [B,n]`, as
/// [`PermDiagonal`]'s one-chunk plan) when this path applies (see the
/// module docs); returns whether it ran.
pub(crate) fn run_rows<S: Storage, P: PermIndex>(
    p: &PermDiagonal<'_, S, P>,
    out: &mut [S],
    h_last: &mut [S],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if p.n > 8 || !std::arch::is_x86_feature_detected!("avx2") {
            return false;
        }
        let (Some(d), Some(b), Some(out), Some(last)) = (
            same_type::<S, f32>(p.d),
            same_type::<S, f32>(p.b),
            same_type_mut::<S, f32>(out),
            same_type_mut::<S, f32>(h_last),
        ) else {
            return false;
        };
        let h0 = match p.h0 {
            Some(h0) => match same_type::<S, f32>(h0) {
                Some(h0) => Some(h0),
                None => return false,
            },
            None => None,
        };
        let rows = imp::Rows {
            d,
            b,
            h0,
            batch: p.batch,
            len: p.len,
            n: p.n,
        };
        if let Some(perm) = same_type::<P, u8>(p.perm) {
            rows.run(perm, out, last);
        } else if let Some(perm) = same_type::<P, u16>(p.perm) {
            rows.run(perm, out, last);
        } else if let Some(perm) = same_type::<P, u32>(p.perm) {
            rows.run(perm, out, last);
        } else {
            return false;
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, out, h_last);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use std::arch::x86_64::*;

    /// A permutation index type whose 8 consecutive values load as 8
    /// `i32` lanes.
    pub(super) trait Lanes: PermIndex + Default {
        /// `s[..8]` widened to 8 lanes (`s` holds at least 8 values).
        ///
        /// # Safety
        /// The CPU has AVX2.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8(s: &[Self]) -> __m256i {
            let s = &s[..8];
            // SAFETY: `s` holds 8 values (sliced above); AVX2 is the caller's.
            unsafe { Self::load8_at(s.as_ptr()) }
        }

        /// The 8 values at `p` widened to 8 lanes.
        ///
        /// # Safety
        /// The CPU has AVX2 and 8 values are readable at `p`.
        unsafe fn load8_at(p: *const Self) -> __m256i;
    }

    impl Lanes for u8 {
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8_at(p: *const u8) -> __m256i {
            // SAFETY: 8 bytes are readable at `p` (the contract), the 8 this reads.
            _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast()) })
        }
    }

    impl Lanes for u16 {
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8_at(p: *const u16) -> __m256i {
            // SAFETY: 8 `u16`s are readable at `p` (the contract): the 16 bytes read.
            _mm256_cvtepu16_epi32(unsafe { _mm_loadu_si128(p.cast()) })
        }
    }

    impl Lanes for u32 {
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load8_at(p: *const u32) -> __m256i {
            // SAFETY: 8 `u32`s are readable at `p` (the contract): the 32 bytes read.
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
    }

    /// Eight lanes from `s[i..i + 8]` (bounds-checked).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(s: &[f32], i: usize) -> __m256 {
        let s = &s[i..i + 8];
        // SAFETY: `s` holds 8 `f32`s (sliced above); unaligned load.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// Stores eight lanes into `s[i..i + 8]` (bounds-checked).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(s: &mut [f32], i: usize, v: __m256) {
        let s = &mut s[i..i + 8];
        // SAFETY: `s` holds 8 `f32`s (sliced above); unaligned store.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }

    /// `v[..m]` copied into 8 lanes padded with `T::default()`.
    fn pad<T: Copy + Default>(v: &[T], m: usize) -> [T; 8] {
        let mut p = [T::default(); 8];
        p[..m].copy_from_slice(&v[..m]);
        p
    }

    /// The problem's `f32` arrays (`d, b: [B,T,n]`, `h0: [B,n]`).
    pub(super) struct Rows<'a> {
        pub d: &'a [f32],
        pub b: &'a [f32],
        pub h0: Option<&'a [f32]>,
        pub batch: usize,
        pub len: usize,
        pub n: usize,
    }

    /// One row's inputs and outputs (`[T, n]` and `[n]`).
    struct Row<'a, I> {
        perm: &'a [I],
        d: &'a [f32],
        b: &'a [f32],
        h0: Option<&'a [f32]>,
        out: &'a mut [f32],
        last: &'a mut [f32],
    }

    impl Rows<'_> {
        /// Every row, in parallel; two rows per task in lockstep when
        /// there are at least two per worker (one row's steps form one
        /// dependent chain of shuffle, multiply, add; two chains overlap).
        pub(super) fn run<I: Lanes>(&self, perm: &[I], out: &mut [f32], last: &mut [f32]) {
            let (n, len) = (self.n, self.len);
            let per_task = if self.batch >= 2 * rayon::current_num_threads() {
                2
            } else {
                1
            };
            out.par_chunks_mut(per_task * len * n)
                .zip(last.par_chunks_mut(per_task * n))
                .enumerate()
                .for_each(|(k, (out_k, last_k))| {
                    let mut rows = out_k
                        .chunks_mut(len * n)
                        .zip(last_k.chunks_mut(n))
                        .enumerate()
                        .map(|(j, (o, l))| {
                            let q = k * per_task + j;
                            let r = q * len * n..(q + 1) * len * n;
                            Row {
                                perm: &perm[r.clone()],
                                d: &self.d[r.clone()],
                                b: &self.b[r],
                                h0: self.h0.map(|h| &h[q * n..(q + 1) * n]),
                                out: o,
                                last: l,
                            }
                        });
                    match (rows.next(), rows.next()) {
                        // SAFETY (both): `run_rows` checked that the CPU
                        // has AVX2.
                        (Some(a), Some(b)) => unsafe { steps([a, b], n, len) },
                        (Some(a), None) => unsafe { steps([a], n, len) },
                        _ => {}
                    }
                });
        }
    }

    /// One step of one row at `base`: shuffle the state, multiply, add,
    /// store 8 lanes. Raw pointers because a bounds check per step put a
    /// panic call on the loop's path, and LLVM then kept a state in memory
    /// across it (a store-to-load round trip on the dependency chain).
    ///
    /// # Safety
    /// The CPU has AVX2, and `row`'s `perm`, `d`, `b` and `out` each hold at
    /// least `base + 8` values.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step<I: Lanes>(h: __m256, row: &mut Row<'_, I>, base: usize) -> __m256 {
        debug_assert!(base + 8 <= row.out.len().min(row.d.len()).min(row.b.len()));
        // SAFETY (all four): `base + 8` values of each array are in bounds
        // (this function's contract).
        let idx = unsafe { I::load8_at(row.perm.as_ptr().add(base)) };
        let g = _mm256_permutevar8x32_ps(h, idx);
        let d = unsafe { _mm256_loadu_ps(row.d.as_ptr().add(base)) };
        let b = unsafe { _mm256_loadu_ps(row.b.as_ptr().add(base)) };
        let h = _mm256_add_ps(_mm256_mul_ps(d, g), b);
        unsafe { _mm256_storeu_ps(row.out.as_mut_ptr().add(base), h) };
        h
    }

    /// The sequential loop of `R` rows in lockstep.
    #[target_feature(enable = "avx2")]
    unsafe fn steps<I: Lanes, const R: usize>(mut rows: [Row<'_, I>; R], n: usize, len: usize) {
        let mut h = [_mm256_setzero_ps(); R];
        for (h, row) in h.iter_mut().zip(&rows) {
            if let Some(h0) = row.h0 {
                *h = load(&pad(h0, n), 0);
            }
        }
        let total = len * n;
        // Steps whose 8-lane loads and store stay inside the row: for
        // `t < wide`, `t·n + 8 ≤ total`, and every array of a row holds
        // `total` values (checked here once, so the loop needs no checks).
        let fits = rows.iter().all(|r| {
            r.perm.len() >= total
                && r.d.len() >= total
                && r.b.len() >= total
                && r.out.len() >= total
        });
        let wide = if fits && total >= 8 {
            ((total - 8) / n + 1).min(len)
        } else {
            0
        };
        // The states live in locals, not in the `h` array: indexed through
        // the array, LLVM kept one of them on the stack and the store-to-load
        // round trip sat on every step's dependency chain.
        if let [a, b] = &mut rows[..] {
            let (mut ha, mut hb) = (h[0], h[1]);
            for t in 0..wide {
                // SAFETY (both): AVX2 is this function's contract; `t < wide`
                // keeps `t·n + 8` within the row (see `wide`).
                ha = unsafe { step(ha, a, t * n) };
                hb = unsafe { step(hb, b, t * n) };
            }
            (h[0], h[1]) = (ha, hb);
        } else {
            for (h, row) in h.iter_mut().zip(rows.iter_mut()) {
                let mut x = *h;
                for t in 0..wide {
                    // SAFETY: as in the pair loop above.
                    x = unsafe { step(x, row, t * n) };
                }
                *h = x;
            }
        }
        for t in wide..len {
            let base = t * n;
            for (h, row) in h.iter_mut().zip(rows.iter_mut()) {
                let idx = I::load8(&pad(&row.perm[base..], n));
                let g = _mm256_permutevar8x32_ps(*h, idx);
                let d = load(&pad(&row.d[base..], n), 0);
                let b = load(&pad(&row.b[base..], n), 0);
                *h = _mm256_add_ps(_mm256_mul_ps(d, g), b);
                let mut o = [0.0f32; 8];
                store(&mut o, 0, *h);
                row.out[base..base + n].copy_from_slice(&o[..n]);
            }
        }
        for (h, row) in h.iter().zip(rows.iter_mut()) {
            let mut o = [0.0f32; 8];
            store(&mut o, 0, *h);
            row.last[..n].copy_from_slice(&o[..n]);
        }
    }
}
