//! The Diagonal kernels (`kernels/diagonal.cu`) driven by the Rust
//! orchestration (`parascan::kernels::diagonal`) on the SIMT emulator:
//! every dtype × layout × plan (P0–P3 through Sequential, Chunk, MinDepth,
//! Auto) × awkward shapes, under every fiber order, against the f64
//! oracle; measured depth against the plan's formula; typed errors before
//! any launch; workspace reuse. `tests/cuda_diagonal.rs` runs the same
//! suite on a GPU.
//!
//! Sizes are kept small: the emulator runs every CUDA thread as a fiber.
//! The kernels' own selftest (`kernels/emu/diagonal_selftest.sh`) covers
//! many more shapes; this file covers the Rust path.
//!
//! Planted bug: built with `CXXFLAGS=-DPS_LB_DROP_RELEASE=1` (the
//! look-back's status store relaxed, i.e. published payloads not
//! released; the emulator's weak-memory mode then keeps them from other
//! blocks), 8 of the 13 tests fail under every fiber order: the four
//! `matches_oracle_*` (9 of the 24 look-back cases in the forward order,
//! the others having one chunk), `auto_with_more_sms`,
//! `lookback_aggregate_path`, `lookback_surplus_blocks_do_nothing` and
//! `measured_depth_equals_formula`. The same build fails 9 of the 17
//! `emu_perm_diagonal` tests, 7 of the 9 `emu_diagonal_reverse` tests
//! (recounted through `PS_LB_PLANT=4`, its emulator equivalent) and
//! `emu_newton`'s fused look-back test. The other look-back plants
//! (`-DPS_LB_PLANTS=1`, `PS_LB_PLANT`) and their counts: `kernels/README.md`.

mod common;
mod diagonal_suite;

use diagonal_suite::Case;
use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::family::Layout;
use parascan::PlanRequest;

fn run_order(runner: EmuBackend, seed: u64) {
    diagonal_suite::run_cases(
        &runner,
        &diagonal_suite::standard_cases(),
        seed,
        &format!("emu {} (seed {})", runner.order(), runner.seed()),
    );
}

#[test]
fn matches_oracle_forward() {
    run_order(EmuBackend::forward(), 0x1000);
}

#[test]
fn matches_oracle_reverse() {
    run_order(EmuBackend::reverse(), 0x2000);
}

#[test]
fn matches_oracle_shuffled() {
    run_order(EmuBackend::shuffled(1), 0x3000);
}

#[test]
fn matches_oracle_shuffled_other_seed() {
    run_order(EmuBackend::shuffled(0x5eed_cafe), 0x4000);
}

#[test]
fn every_fiber_order_is_covered() {
    let orders = [
        EmuBackend::forward().order(),
        EmuBackend::reverse().order(),
        EmuBackend::shuffled(1).order(),
    ];
    assert_eq!(orders, FiberOrder::ALL);
}

#[test]
fn measured_depth_equals_formula() {
    for runner in [EmuBackend::forward(), EmuBackend::shuffled(7)] {
        diagonal_suite::run_depth_plans(&runner, &format!("emu {} depth", runner.order()));
    }
}

/// `Auto` and `MinDepth` on a "device" with more SMs (emulator workers):
/// more, shorter chunks.
#[test]
fn auto_with_more_sms() {
    let runner = EmuBackend::shuffled(11).with_workers(16);
    let mut cases = Vec::new();
    for shape in [(1, 3000, 2), (2, 700, 3), (1, 5000, 1)] {
        for layout in [Layout::Btd, Layout::Bdt] {
            for (i, r) in [PlanRequest::Auto, PlanRequest::MinDepth]
                .into_iter()
                .enumerate()
            {
                cases.push(Case::new(shape, layout, r, i == 0));
            }
        }
    }
    diagonal_suite::run_cases_any_kinds(&runner, &cases, 0x5000, "emu 16 workers");
}

/// The look-back (P4) folding predecessors' aggregates, forced by
/// publishing prefixes only every n-th chunk, under every fiber order.
#[test]
fn lookback_aggregate_path() {
    for runner in [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(17),
    ] {
        diagonal_suite::check_lookback_aggregate_path(
            &runner,
            &format!("emu {} look-back", runner.order()),
        );
    }
}

#[test]
fn final_state_only() {
    diagonal_suite::check_final_state_only(&EmuBackend::shuffled(13));
}

#[test]
fn errors_before_any_launch() {
    diagonal_suite::check_errors(&EmuBackend::shuffled(3));
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    diagonal_suite::check_workspace_reuse(&EmuBackend::reverse());
}

/// Look-back blocks past the contract's grid take tickets that own no
/// chunk and do nothing, under every fiber order.
#[test]
fn lookback_surplus_blocks_do_nothing() {
    for runner in [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(19),
    ] {
        diagonal_suite::check_lookback_surplus_blocks(
            &runner,
            &format!("emu {} surplus", runner.order()),
        );
    }
}

/// A predecessor that never publishes ends the launch with a typed error
/// (the spin cap's `__trap()`), not a hang.
#[test]
fn lookback_withheld_publication_is_a_launch_error() {
    for runner in [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(23),
    ] {
        diagonal_suite::check_lookback_withheld_traps(
            &runner,
            &format!("emu {} withheld", runner.order()),
        );
    }
}
