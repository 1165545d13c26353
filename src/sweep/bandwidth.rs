//! The machine's copy bandwidth: the yardstick every scan's GB/s is
//! compared with, measured in the same run and with the same thread count
//! as the engine.

use std::time::Instant;

use rayon::prelude::*;

use super::timing::median;
use super::Result;
use crate::error::Error;

/// Multi-threaded copy bandwidth in GB/s (1e9 bytes/s), counting bytes read
/// plus bytes written.
///
/// Copies one buffer of `bytes` bytes (rounded down to whole `u64`) into
/// another on `pool`, split into `4 × threads` contiguous parts so every
/// worker streams its own ranges (each part is a plain `memcpy`, which the
/// C library vectorizes and, for large parts, writes with streaming
/// stores). One untimed copy first faults the destination's pages in; then
/// `reps` timed copies, median reported. Use ≥ 256 MiB so the buffers are
/// far larger than any cache.
pub fn cpu_copy_gbs(pool: &rayon::ThreadPool, bytes: usize, reps: usize) -> Result<f64> {
    let n = bytes / std::mem::size_of::<u64>();
    if n == 0 {
        return Err(Error::size("bytes", bytes, "≥ 8").into());
    }
    if reps == 0 {
        return Err(Error::size("reps", 0, "≥ 1").into());
    }
    pool.install(|| {
        let src: Vec<u64> = (0..n as u64).into_par_iter().collect();
        let mut dst = vec![0u64; n];
        let part = n.div_ceil(4 * rayon::current_num_threads()).max(1);
        let copy = |dst: &mut [u64]| {
            dst.par_chunks_mut(part)
                .zip(src.par_chunks(part))
                .for_each(|(d, s)| d.copy_from_slice(s));
        };
        copy(&mut dst);
        let mut samples: Vec<f64> = (0..reps)
            .map(|_| {
                let start = Instant::now();
                copy(&mut dst);
                let s = start.elapsed().as_secs_f64();
                2.0 * (n * 8) as f64 / s / 1e9
            })
            .collect();
        // Touch the result so the copies cannot be optimized away.
        std::hint::black_box(dst[n - 1]);
        Ok(median(&mut samples))
    })
}

/// Independent multiply-add chains per probe kernel: enough 8-lane
/// vectors in flight (12) to cover the latency of two FMA pipes.
const FMA_CHAINS: usize = 96;

/// The machine's `f32` multiply-add peak in GFLOP/s (one multiply-add is 2
/// flops), measured as [`cpu_copy_gbs`] is: on `pool`, every worker runs
/// the same register-resident kernel of `FMA_CHAINS` independent chains
/// `acc = acc·m + c` for `iters` rounds; `reps` timed runs after one
/// warm-up, median reported. The kernel uses fused multiply-adds on
/// 8-lane AVX2 vectors where the CPU has them (picked at run time), else
/// separate multiplies and adds at the target's baseline width, so it
/// measures what the engine's own dispatched loops can reach. The
/// yardstick of the compute-bound families (dense, DPLR).
pub fn cpu_fma_gflops(pool: &rayon::ThreadPool, iters: usize, reps: usize) -> Result<f64> {
    if iters == 0 {
        return Err(Error::size("iters", 0, "≥ 1").into());
    }
    if reps == 0 {
        return Err(Error::size("reps", 0, "≥ 1").into());
    }
    pool.install(|| {
        let threads = rayon::current_num_threads();
        let run = || {
            (0..threads)
                .into_par_iter()
                .with_max_len(1)
                .map(|t| fma_kernel(iters, t as f32))
                .sum::<f32>()
        };
        std::hint::black_box(run());
        let flops = 2.0 * (FMA_CHAINS * iters * threads) as f64;
        let mut samples: Vec<f64> = (0..reps)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(run());
                flops / start.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        Ok(median(&mut samples))
    })
}

/// One worker's share of the FMA probe; returns a sum so the chains stay live.
fn fma_kernel(iters: usize, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { fma_kernel_avx2(iters, seed) };
    }
    let mut acc = [seed; FMA_CHAINS];
    let (m, c) = std::hint::black_box((0.999_999f32, 1e-6f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * m + c;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_kernel_avx2(iters: usize, seed: f32) -> f32 {
    let mut acc = [seed; FMA_CHAINS];
    let (m, c) = std::hint::black_box((0.999_999f32, 1e-6f32));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    acc.iter().sum()
}
