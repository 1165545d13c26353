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
