//! The BlockDiagonal kernels (`kernels/block_diagonal.cu`) driven by the
//! Rust orchestration (`parascan::kernels::block_diagonal`) on the SIMT
//! emulator: every supported `k` × plan (P0–P2 through Sequential, Chunk,
//! MinDepth, Auto) × dtype × awkward `T` × `h0` given or not, under every
//! fiber order, against the f64 oracle; measured depth against the plan's
//! formula, element by element; typed errors before any launch; workspace
//! reuse. `tests/cuda_block_diagonal.rs` runs the same suite on a GPU.

mod block_diagonal_suite;
mod common;
mod diagonal_suite;

use parascan::backend::emu::{EmuBackend, FiberOrder};

fn runner(order: FiberOrder, seed: u64) -> EmuBackend {
    EmuBackend::new(order, seed)
}

#[test]
fn matches_oracle_every_fiber_order() {
    // The kernels have no barriers or shuffles, so the order cannot matter;
    // running all three keeps it that way if a later version adds some.
    for (i, order) in FiberOrder::ALL.into_iter().enumerate() {
        let r = runner(order, 0x51 + i as u64);
        block_diagonal_suite::run_cases(
            &r,
            &block_diagonal_suite::standard_cases(),
            0xB000 + 0x1000 * i as u64,
            &format!("emu {order}"),
        );
    }
}

#[test]
fn measured_depth_equals_formula() {
    for order in FiberOrder::ALL {
        let r = runner(order, 7);
        block_diagonal_suite::run_depth_plans(&r, &format!("emu {order} depth"));
    }
}

#[test]
fn final_state_only() {
    block_diagonal_suite::check_final_state_only(&EmuBackend::shuffled(13));
}

#[test]
fn errors_before_any_launch() {
    block_diagonal_suite::check_errors(&EmuBackend::shuffled(3));
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    block_diagonal_suite::check_workspace_reuse(&EmuBackend::reverse());
}

/// `Auto` on a "device" with more SMs (emulator workers) picks chunks
/// along `T` for few (row, block) pairs.
#[test]
fn auto_with_more_sms() {
    use block_diagonal_suite::Case;
    use parascan::kernels::block_diagonal::BlockShape;
    use parascan::PlanRequest;
    let r = EmuBackend::shuffled(11).with_workers(16);
    let cases: Vec<Case> = [(1, 600, 1, 2), (2, 333, 2, 4), (1, 90, 1, 16)]
        .into_iter()
        .flat_map(|(b, t, nb, k)| {
            [PlanRequest::Auto, PlanRequest::MinDepth].map(|request| Case {
                shape: BlockShape::new(b, t, nb, k),
                request,
                h0: true,
            })
        })
        .collect();
    let mut ws = parascan::kernels::block_diagonal::BlockDiagonalWorkspace::new();
    for (i, case) in cases.iter().enumerate() {
        let plan = block_diagonal_suite::run_case::<_, f32>(&r, &mut ws, case, 0x9000 + i as u64)
            .unwrap_or_else(|e| panic!("{e}"));
        if case.request == PlanRequest::Auto {
            assert!(plan.chunks > 1, "{plan}");
        }
    }
}
