//! The BlockDiagonal kernels driven by the Rust orchestration
//! (`parascan::kernels::block_diagonal`) on the GPU: the same suite as
//! `tests/emu_block_diagonal.rs` (every `k` × plan × dtype × shape against
//! the f64 oracle, measured depth against the formula, typed errors before
//! any launch, workspace reuse), plus a longer sequence.
//!
//! Without a usable GPU every test prints `skipped: <reason>` and passes,
//! except under `REQUIRE_GPU=1`, where it fails (see `tests/common/gpu.rs`).

mod block_diagonal_suite;
mod common;
mod diagonal_suite;
#[path = "common/gpu.rs"]
mod gpu;

use block_diagonal_suite::Case;
use parascan::backend::cuda::CudaBackend;
use parascan::kernels::block_diagonal::{BlockDiagonalWorkspace, BlockShape};
use parascan::PlanRequest;

fn cuda() -> Option<CudaBackend> {
    gpu::cuda_or_skip()
}

#[test]
fn matches_oracle() {
    let Some(cuda) = cuda() else { return };
    block_diagonal_suite::run_cases(
        &cuda,
        &block_diagonal_suite::standard_cases(),
        0xC000,
        "cuda",
    );
}

#[test]
fn measured_depth_equals_formula() {
    let Some(cuda) = cuda() else { return };
    block_diagonal_suite::run_depth_plans(&cuda, "cuda depth");
}

#[test]
fn errors_before_any_launch() {
    let Some(cuda) = cuda() else { return };
    block_diagonal_suite::check_errors(&cuda);
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    let Some(cuda) = cuda() else { return };
    block_diagonal_suite::check_workspace_reuse(&cuda);
}

#[test]
fn final_state_only() {
    let Some(cuda) = cuda() else { return };
    block_diagonal_suite::check_final_state_only(&cuda);
}

/// Long sequences with few (row, block) pairs: every plan, k = 2 (DiagLstm's
/// Jacobian) and dense k = 32, 64, f32 and bf16.
#[test]
fn long_sequences() {
    let Some(cuda) = cuda() else { return };
    let mut ws = BlockDiagonalWorkspace::new();
    let mut i = 0u64;
    let long = |t: usize| gpu::scaled(&cuda, t, t >> 6);
    for (b, t, nb, k) in [
        (2, long(1 << 16), 64, 2),
        (1, long(4096), 1, 32),
        (1, long(2048), 1, 64),
    ] {
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(64),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
        ] {
            let case = Case {
                shape: BlockShape::new(b, t, nb, k),
                request,
                h0: i % 2 == 0,
            };
            i += 1;
            let plan = block_diagonal_suite::run_case::<_, f32>(&cuda, &mut ws, &case, 0xD000 + i)
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!("  ok  {plan}");
            block_diagonal_suite::run_case::<_, half::bf16>(&cuda, &mut ws, &case, 0xE000 + i)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
