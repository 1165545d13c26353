//! The PermDiagonal kernels (`kernels/perm_diagonal.cu`) driven by the Rust
//! orchestration (`parascan::kernels::perm_diagonal`) on the SIMT emulator:
//! every dtype × plan (P0–P4 through Sequential, Chunk, MinDepth, Auto,
//! LookBack) ×
//! team shape (small n ≤ 32, wide n > 32 with 2/4/8 slots per lane) ×
//! awkward shapes, under every fiber order, against the f64 oracle;
//! measured depth against the plan's formula, element by element; typed
//! errors before any launch; workspace reuse. `tests/cuda_perm_diagonal.rs`
//! runs the same suite on a GPU.
//!
//! Sizes are small: the emulator runs every CUDA thread as a fiber.

mod common;
mod perm_diagonal_suite;

use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::PlanRequest;
use perm_diagonal_suite::Case;

fn run_order(runner: EmuBackend, seed: u64) {
    perm_diagonal_suite::run_cases(
        &runner,
        &perm_diagonal_suite::standard_cases(),
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
    for runner in [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(7),
    ] {
        perm_diagonal_suite::run_depth_plans(&runner, &format!("emu {} depth", runner.order()));
    }
}

/// `Auto` and `MinDepth` on a "device" with more SMs (emulator workers):
/// more, shorter chunks.
#[test]
fn auto_with_more_sms() {
    let runner = EmuBackend::shuffled(11).with_workers(16);
    let mut cases = Vec::new();
    for shape in [(1, 3000, 5), (2, 700, 64), (1, 500, 256)] {
        for (i, r) in [PlanRequest::Auto, PlanRequest::MinDepth]
            .into_iter()
            .enumerate()
        {
            cases.push(Case::new(shape, r, i == 0));
        }
    }
    // Add one of each kind so the coverage assertion holds.
    cases.push(Case::new((1, 40, 5), PlanRequest::Sequential, true));
    cases.push(Case::new((1, 40, 5), PlanRequest::Chunk(40), false));
    cases.push(Case::new((1, 1100, 5), PlanRequest::Chunk(1), false));
    perm_diagonal_suite::run_cases(&runner, &cases, 0x5000, "emu 16 workers");
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
        perm_diagonal_suite::check_lookback_aggregate_path(
            &runner,
            &format!("emu {} look-back", runner.order()),
        );
    }
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
        perm_diagonal_suite::check_lookback_surplus_blocks(
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
        perm_diagonal_suite::check_lookback_withheld_traps(
            &runner,
            &format!("emu {} withheld", runner.order()),
        );
    }
}

#[test]
fn final_state_only() {
    perm_diagonal_suite::check_final_state_only(&EmuBackend::shuffled(13));
}

#[test]
fn bad_perm_on_the_device_path_is_clamped() {
    perm_diagonal_suite::check_bad_perm_is_clamped(&EmuBackend::reverse());
}

#[test]
fn errors_before_any_launch() {
    perm_diagonal_suite::check_errors(&EmuBackend::shuffled(3));
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    perm_diagonal_suite::check_workspace_reuse(&EmuBackend::reverse());
}

#[test]
fn kernels_are_registered() {
    let names = EmuBackend::kernel_names();
    for sfx in ["f32", "f64", "f16", "bf16", "depth"] {
        for k in [
            "pd_small_reduce",
            "pd_small_rescan",
            "pd_small_sequential",
            "pd_wide_reduce",
            "pd_wide_rescan",
            "pd_wide_sequential",
            "pd_scan",
            "pd_lookback1",
            "pd_lookback2",
            "pd_lookback4",
            "pd_lookback8",
        ] {
            let name = format!("{k}_{sfx}");
            assert!(names.contains(&name), "{name} is not registered");
        }
    }
}

#[test]
fn kernel_scan_face() {
    perm_diagonal_suite::check_kernel_scan(&EmuBackend::shuffled(21));
}

#[test]
fn s5_word_problem_is_exact() {
    perm_diagonal_suite::check_s5_exact(&EmuBackend::shuffled(5));
}

#[test]
fn no_writes_outside_the_outputs() {
    perm_diagonal_suite::check_no_writes_outside(&EmuBackend::forward());
}
