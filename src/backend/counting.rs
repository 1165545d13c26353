//! A kernel runner that counts what it is asked to do: allocations (and
//! their bytes), host-to-device and device-to-host copies, fills, launches
//! and synchronizations.
//!
//! A diagnostic for code that must not allocate or read back once warm
//! (the device-resident Newton solver, a reused scan workspace): wrap any
//! runner ([`EmuBackend`](super::emu::EmuBackend), `CudaBackend`), run the
//! code through the wrapper and compare [`CountingRunner::counts`] before
//! and after. Counting costs one relaxed atomic add per call; buffers are
//! the inner runner's (its backend name, its memory), so memory made
//! through either works with both.

use std::sync::atomic::{AtomicU64, Ordering};

use super::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::error::Result;

/// What a [`CountingRunner`] has been asked to do since it was made (or
/// last [reset](CountingRunner::reset)). Failed calls count too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerCounts {
    /// Device allocations: `alloc` calls plus `upload` calls (each upload
    /// allocates its buffer).
    pub allocations: u64,
    /// Bytes of those allocations.
    pub allocated_bytes: u64,
    /// Host-to-device copies (`upload`).
    pub uploads: u64,
    /// Device-to-host copies (`download`): every read-back, however small;
    /// on CUDA each one waits for the stream.
    pub downloads: u64,
    /// Bytes read back.
    pub downloaded_bytes: u64,
    /// `fill` calls (device memsets).
    pub fills: u64,
    /// Kernel launches.
    pub launches: u64,
    /// Explicit `synchronize` calls.
    pub synchronizations: u64,
}

impl RunnerCounts {
    /// The counts of `self` minus those of an earlier snapshot `before`.
    pub fn since(&self, before: &RunnerCounts) -> RunnerCounts {
        RunnerCounts {
            allocations: self.allocations - before.allocations,
            allocated_bytes: self.allocated_bytes - before.allocated_bytes,
            uploads: self.uploads - before.uploads,
            downloads: self.downloads - before.downloads,
            downloaded_bytes: self.downloaded_bytes - before.downloaded_bytes,
            fills: self.fills - before.fills,
            launches: self.launches - before.launches,
            synchronizations: self.synchronizations - before.synchronizations,
        }
    }
}

#[derive(Default)]
struct Counters {
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
    downloaded_bytes: AtomicU64,
    fills: AtomicU64,
    launches: AtomicU64,
    synchronizations: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Wraps a runner and counts its calls (see the [module docs](self)).
pub struct CountingRunner<R> {
    inner: R,
    counters: Counters,
}

impl<R: std::fmt::Debug> std::fmt::Debug for CountingRunner<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingRunner")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish()
    }
}

impl<R> CountingRunner<R> {
    /// Counts the calls made to `inner` through the wrapper, from zero.
    pub fn new(inner: R) -> Self {
        CountingRunner {
            inner,
            counters: Counters::default(),
        }
    }

    /// The wrapped runner (calls made on it directly are not counted).
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// A snapshot of the counts.
    pub fn counts(&self) -> RunnerCounts {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunnerCounts {
            allocations: get(&c.allocations),
            allocated_bytes: get(&c.allocated_bytes),
            uploads: get(&c.uploads),
            downloads: get(&c.downloads),
            downloaded_bytes: get(&c.downloaded_bytes),
            fills: get(&c.fills),
            launches: get(&c.launches),
            synchronizations: get(&c.synchronizations),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.allocations,
            &c.allocated_bytes,
            &c.uploads,
            &c.downloads,
            &c.downloaded_bytes,
            &c.fills,
            &c.launches,
            &c.synchronizations,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

impl<R: KernelRunner> KernelRunner for CountingRunner<R> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        bump(&self.counters.allocations, 1);
        bump(&self.counters.allocated_bytes, bytes as u64);
        self.inner.alloc(bytes)
    }

    fn upload<T: bytemuck::Pod>(&self, host: &[T]) -> Result<DeviceBuffer> {
        bump(&self.counters.allocations, 1);
        bump(
            &self.counters.allocated_bytes,
            std::mem::size_of_val(host) as u64,
        );
        bump(&self.counters.uploads, 1);
        self.inner.upload(host)
    }

    fn download<T: bytemuck::Pod>(&self, buf: &DeviceBuffer, host: &mut [T]) -> Result<()> {
        bump(&self.counters.downloads, 1);
        bump(
            &self.counters.downloaded_bytes,
            std::mem::size_of_val(host) as u64,
        );
        self.inner.download(buf, host)
    }

    fn fill(&self, buf: &DeviceBuffer, byte: u8) -> Result<()> {
        bump(&self.counters.fills, 1);
        self.inner.fill(buf, byte)
    }

    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        bump(&self.counters.launches, 1);
        // SAFETY: forwarded unchanged; the caller's obligations are the same.
        unsafe { self.inner.launch(kernel, cfg, args) }
    }

    fn synchronize(&self) -> Result<()> {
        bump(&self.counters.synchronizations, 1);
        self.inner.synchronize()
    }

    fn sm_count(&self) -> usize {
        self.inner.sm_count()
    }

    fn device_times(&self, reps: usize, work: &mut dyn FnMut() -> Result<()>) -> Result<Vec<f64>> {
        self.inner.device_times(reps, work)
    }
}
