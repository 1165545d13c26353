//! The Newton suite (`tests/newton_suite`) on a GPU. Skips with a printed
//! reason when no GPU opens; fails under `REQUIRE_GPU=1`.

mod common;
#[path = "common/gpu.rs"]
mod gpu;
mod newton_suite;

#[test]
fn every_cell_and_mode_on_cuda() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    newton_suite::run_suite(&cuda, 42, "cuda");
    newton_suite::run_fused_suite(&cuda, 44, "cuda fused");
    newton_suite::run_sequential(&cuda, 43);
    newton_suite::run_divergence(&cuda);
    newton_suite::run_errors(&cuda);
}
