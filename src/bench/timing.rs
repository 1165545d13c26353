//! How `parascan bench` times a prepared plan, and the device copy
//! bandwidth every row is compared with.
//!
//! A case is timed with [`KernelRunner::device_times`] (CUDA events around
//! each run on the GPU, wall clock plus `synchronize` in the emulator):
//! one first run, the rest of the warm-up, then as many timed runs as fit
//! in the case's time budget (at least `min_reps`, at most `max_reps`),
//! median reported. A first run at least `slow` long is the measurement
//! itself (one rep): repeating a multi-second sequential loop would spend
//! device time and tell nothing new.

use std::time::Duration;

use crate::backend::launch::{KernelArg, KernelRunner, LaunchConfig};
use crate::error::{Error, Result};
use crate::sweep::timing::median;

/// Repetitions of one case.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RepPolicy {
    /// Runs before the timed ones (the first one included).
    pub warmup: usize,
    /// Timed runs at least (unless the first run was slow).
    pub min_reps: usize,
    /// Timed runs at most.
    pub max_reps: usize,
    /// Time the timed runs of a case should take in all.
    #[serde(serialize_with = "seconds")]
    pub budget: Duration,
    /// A first run this long is the only timed run.
    #[serde(serialize_with = "seconds")]
    pub slow: Duration,
}

impl RepPolicy {
    /// The full benchmark: warm-up 2, then 3 to 50 runs in about 0.3 s.
    pub fn full() -> Self {
        RepPolicy {
            warmup: 2,
            min_reps: 3,
            max_reps: 50,
            budget: Duration::from_millis(300),
            slow: Duration::from_millis(500),
        }
    }

    /// `--quick`: warm-up 1, then 3 to 10 runs in about 50 ms.
    pub fn quick() -> Self {
        RepPolicy {
            warmup: 1,
            min_reps: 3,
            max_reps: 10,
            budget: Duration::from_millis(50),
            slow: Duration::from_millis(200),
        }
    }

    /// Timed runs after a first run of `first_s` seconds.
    pub fn reps_after(&self, first_s: f64) -> usize {
        if first_s >= self.slow.as_secs_f64() {
            return 1;
        }
        let fit = self.budget.as_secs_f64() / first_s.max(1e-9);
        let min = self.min_reps.max(1);
        (fit.min(1e9) as usize).clamp(min, self.max_reps.max(min))
    }
}

/// A duration as seconds in JSON.
fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Timed runs of one case, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Timed runs.
    pub reps: usize,
    /// Median seconds per run.
    pub median_s: f64,
    /// Fastest run.
    pub min_s: f64,
}

impl Timing {
    /// The median and minimum of `samples` (at least one).
    pub fn of(mut samples: Vec<f64>) -> Result<Self> {
        if samples.is_empty() {
            return Err(Error::size("reps", 0, "at least one timed run"));
        }
        let min_s = samples.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(Timing {
            reps: samples.len(),
            median_s: median(&mut samples),
            min_s,
        })
    }
}

/// Times `run` (which only queues work on `runner`) under `policy`.
pub fn time_launches<R: KernelRunner>(
    runner: &R,
    policy: &RepPolicy,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<Timing> {
    let first = runner.device_times(1, run)?;
    let first_s = first.first().copied().unwrap_or(0.0);
    let reps = policy.reps_after(first_s);
    if first_s >= policy.slow.as_secs_f64() {
        return Timing::of(first);
    }
    if policy.warmup > 1 {
        runner.device_times(policy.warmup - 1, run)?;
    }
    Timing::of(runner.device_times(reps, run)?)
}

/// Threads per block of the copy probe (as `CudaBackend::copy_bandwidth_gbs`).
const COPY_BLOCK: u32 = 256;

/// Copy bandwidth of `runner` in GB/s (bytes read + written per second,
/// 1e9): `copy_f32` (`kernels/copy.cu`) from one buffer of `bytes` bytes
/// to another, timed with [`time_launches`] under `policy`. The emulator's
/// number is what the emulated kernels can reach on this CPU; on a GPU use
/// [`CudaBackend::copy_bandwidth_gbs`](crate::backend::cuda::CudaBackend::copy_bandwidth_gbs),
/// the probe `parascan info` quotes.
pub fn copy_bandwidth_gbs<R: KernelRunner>(
    runner: &R,
    bytes: usize,
    policy: &RepPolicy,
) -> Result<f64> {
    let n = bytes / 4;
    if n == 0 {
        return Err(Error::size("bytes", bytes, "at least 4 (one f32)"));
    }
    let src = runner.alloc(n * 4)?;
    let dst = runner.alloc(n * 4)?;
    runner.fill(&src, 0)?;
    let blocks = n
        .div_ceil(4)
        .div_ceil(COPY_BLOCK as usize)
        .clamp(1, runner.sm_count().max(1) * 8);
    let cfg = LaunchConfig::linear(blocks as u32, COPY_BLOCK);
    let args = [(&src).into(), (&dst).into(), KernelArg::U64(n as u64)];
    let timing = time_launches(runner, policy, &mut || {
        // SAFETY: `src` and `dst` hold `n` f32 values each.
        unsafe { runner.launch("copy_f32", cfg, &args) }
    })?;
    Ok(2.0 * (n * 4) as f64 / timing.median_s.max(1e-12) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::emu::EmuBackend;

    #[test]
    fn reps_fit_the_budget() {
        let p = RepPolicy::full();
        assert_eq!(p.reps_after(1.0), 1);
        assert_eq!(p.reps_after(0.2), 3);
        assert_eq!(p.reps_after(0.01), 30);
        assert_eq!(p.reps_after(1e-6), 50);
        assert_eq!(p.reps_after(0.0), 50);
    }

    #[test]
    fn emulated_copy_and_timing() {
        let emu = EmuBackend::default();
        let gbs = copy_bandwidth_gbs(&emu, 1 << 20, &RepPolicy::quick()).unwrap();
        assert!(gbs.is_finite() && gbs > 0.0, "{gbs}");
        let mut calls = 0;
        let t = time_launches(&emu, &RepPolicy::quick(), &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.reps, 10);
        assert_eq!(calls, 11);
        assert!(t.min_s <= t.median_s);
        assert!(Timing::of(Vec::new()).is_err());
    }
}
