//! GPU availability for integration tests: run on a GPU when there is one,
//! otherwise skip with a reason, except under `REQUIRE_GPU=1` (set on the GPU
//! machines), where a missing GPU fails the test instead of silently passing.
//!
//! Include it with `#[path = "common/gpu.rs"] mod gpu;`.
#![allow(dead_code)]

use std::fmt::Display;

/// Whether `REQUIRE_GPU=1` is set: GPU tests must run, not skip.
pub fn gpu_required() -> bool {
    std::env::var("REQUIRE_GPU").is_ok_and(|v| v.trim() == "1")
}

/// `Some(value)` when `opened` succeeded. Otherwise prints
/// `skipped: <what>: <reason>` and returns `None`, or panics under
/// `REQUIRE_GPU=1`.
pub fn or_skip<T, E: Display>(what: &str, opened: Result<T, E>) -> Option<T> {
    match opened {
        Ok(value) => Some(value),
        Err(reason) if gpu_required() => {
            panic!("REQUIRE_GPU=1 but {what} is unavailable: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: {what}: {reason}");
            None
        }
    }
}

/// CUDA device 0 with the kernels loaded, or `None` after printing why
/// (panics instead under `REQUIRE_GPU=1`).
pub fn cuda_or_skip() -> Option<parascan::backend::cuda::CudaBackend> {
    or_skip(
        "CUDA device 0",
        parascan::backend::cuda::CudaBackend::new(0),
    )
}
