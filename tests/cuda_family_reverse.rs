//! Reverse PermDiagonal, BlockDiagonal (Dense) and DPLR scans and their
//! backward passes on CUDA (a GPU, or the emulated driver:
//! `bash scripts/emulated-driver.sh cargo test --release --test
//! cuda_family_reverse`): the suite of `tests/emu_family_reverse.rs`
//! through the CUDA backend.
//!
//! Without a usable CUDA device every test prints `skipped: <reason>` and
//! passes, except under `REQUIRE_GPU=1` or `REQUIRE_CUDA=1` (see
//! `tests/common/gpu.rs`).

mod common;
mod family_reverse_suite;
#[path = "common/gpu.rs"]
mod gpu;

#[test]
fn reverse_scans_match_the_oracle() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    family_reverse_suite::pd_reverse_cases(&cuda, 0x4000, "cuda");
    family_reverse_suite::bd_reverse_cases(&cuda, 0x5000, "cuda");
    family_reverse_suite::dplr_reverse_cases(&cuda, 0x6000, "cuda");
}

#[test]
fn reverse_measured_depth_equals_the_forward_formula() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    family_reverse_suite::reverse_depth_all(&cuda, "cuda");
}

#[test]
fn gradients_match_finite_differences_and_the_sequential_adjoint() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    family_reverse_suite::pd_gradients(&cuda, gpu::scaled(&cuda, 50_000, 2100), "cuda");
    family_reverse_suite::bd_gradients(&cuda, gpu::scaled(&cuda, 20_000, 1500), "cuda");
    family_reverse_suite::dplr_gradients(&cuda, gpu::scaled(&cuda, 5_000, 400), "cuda");
}

#[test]
fn perm_diagonal_half_precision_gradients_match_the_sequential_adjoint() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    family_reverse_suite::pd_gradients_half(&cuda, gpu::scaled(&cuda, 50_000, 2100), "cuda");
}
