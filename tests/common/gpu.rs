//! GPU availability for integration tests: run on a GPU when there is one,
//! otherwise skip with a reason, except under `REQUIRE_GPU=1` (set on the GPU
//! machines), where a missing GPU fails the test instead of silently passing.
//!
//! The emulated CUDA driver (`scripts/emulated-driver.sh`) counts as a CUDA
//! device but not as a GPU: the script sets `REQUIRE_CUDA=1`, so a backend
//! that does not open fails the test there too, while `REQUIRE_GPU=1` with
//! the emulated device is a failure (its results are not GPU results).
//! Tests tell the two apart with [`CudaBackend::is_emulated`] (the device
//! name) and shrink their largest shapes on the emulator with [`scaled`].
//!
//! Include it with `#[path = "common/gpu.rs"] mod gpu;`.
#![allow(dead_code)]

use std::fmt::Display;

use parascan::backend::cuda::CudaBackend;

/// Whether `REQUIRE_GPU=1` is set: GPU tests must run, not skip.
pub fn gpu_required() -> bool {
    std::env::var("REQUIRE_GPU").is_ok_and(|v| v.trim() == "1")
}

/// Whether `REQUIRE_CUDA=1` (or `REQUIRE_GPU=1`) is set: the CUDA backend,
/// real or emulated, must open.
pub fn cuda_required() -> bool {
    gpu_required() || std::env::var("REQUIRE_CUDA").is_ok_and(|v| v.trim() == "1")
}

/// `Some(value)` when `opened` succeeded. Otherwise prints
/// `skipped: <what>: <reason>` and returns `None`, or panics under
/// `REQUIRE_GPU=1`.
pub fn or_skip<T, E: Display>(what: &str, opened: Result<T, E>) -> Option<T> {
    match opened {
        Ok(value) => Some(value),
        Err(reason) if cuda_required() => {
            panic!("REQUIRE_GPU=1 or REQUIRE_CUDA=1 but {what} is unavailable: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {what}: {reason}");
            None
        }
    }
}

/// CUDA device 0 with the kernels loaded, or `None` after printing why
/// (panics instead under `REQUIRE_GPU=1` or `REQUIRE_CUDA=1`, and under
/// `REQUIRE_GPU=1` when the device is the emulated driver). Prints the
/// device's name, so a test log says what it ran on.
pub fn cuda_or_skip() -> Option<CudaBackend> {
    let cuda = or_skip("CUDA device 0", CudaBackend::new(0))?;
    if cuda.is_emulated() && gpu_required() {
        panic!(
            "REQUIRE_GPU=1 but CUDA device 0 is {}, not a GPU",
            cuda.device_name()
        );
    }
    eprintln!("cuda device 0: {}", cuda.device_name());
    Some(cuda)
}

/// `full` on a GPU, `emulated` on the emulated driver: the sizes that take
/// a GPU milliseconds take the SIMT emulator minutes.
pub fn scaled(cuda: &CudaBackend, full: usize, emulated: usize) -> usize {
    if cuda.is_emulated() {
        emulated
    } else {
        full
    }
}
