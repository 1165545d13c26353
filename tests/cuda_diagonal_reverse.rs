//! Reverse Diagonal scans and the Diagonal backward pass on CUDA (a GPU,
//! or the emulated driver: `bash scripts/emulated-driver.sh cargo test
//! --release --test cuda_diagonal_reverse`): the suite of
//! `tests/emu_diagonal_reverse.rs` through the CUDA backend.
//!
//! Without a usable CUDA device every test prints `skipped: <reason>` and
//! passes, except under `REQUIRE_GPU=1` or `REQUIRE_CUDA=1` (see
//! `tests/common/gpu.rs`).

mod common;
mod diagonal_reverse_suite;
mod diagonal_suite;
#[path = "common/gpu.rs"]
mod gpu;

#[test]
fn reverse_scans_match_the_oracle() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    diagonal_reverse_suite::run_reverse_cases(&cuda, 0xc000, "cuda");
}

#[test]
fn reverse_lookback_aggregate_path() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    diagonal_reverse_suite::check_reverse_lookback_aggregate_path(&cuda, "cuda");
}

#[test]
fn reverse_measured_depth_equals_the_forward_formula() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    diagonal_reverse_suite::run_reverse_depth_plans(&cuda, "cuda");
}

#[test]
fn gradients_match_finite_differences_and_the_sequential_adjoint() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    diagonal_reverse_suite::check_gradients_fd(&cuda, "cuda");
    let len = gpu::scaled(&cuda, 100_000, 2600);
    diagonal_reverse_suite::check_gradients_long(&cuda, len, "cuda");
}

#[test]
fn half_precision_gradients_match_the_sequential_adjoint() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let len = gpu::scaled(&cuda, 100_000, 2600);
    diagonal_reverse_suite::check_gradients_half(&cuda, len, "cuda");
}
