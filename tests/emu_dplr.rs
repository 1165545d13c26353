//! The DPLR kernels (`kernels/dplr.cu`) driven by the Rust orchestration
//! (`parascan::kernels::dplr`) on the SIMT emulator: every plan kind
//! (sequential, single pass, chunked through Sequential, Chunk, MinDepth,
//! Auto) × f32/f64/f16/bf16 × ranks 1–4 × `(n, m)` from `3×5` to
//! `128×128` × `T ∈ {1, odd, < chunk, ≫ chunk}` × `h0` given or not ×
//! readout and all-states outputs, under every fiber order, against the
//! f64 oracle; measured depth of every output against the plan's formula;
//! typed errors before any launch; workspace reuse. `tests/cuda_dplr.rs`
//! runs the same suite on a GPU.
//!
//! The suite catches a race: built with `CXXFLAGS=-DPS_DPLR_DROP_BARRIER=1`
//! (one barrier of the chunk kernels removed), the three `matches_oracle_*`
//! tests fail (8 of 35 cases each).

mod common;
mod dplr_suite;

use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::family::dplr::DplrOutput;
use parascan::PlanRequest;

#[test]
fn matches_oracle_forward() {
    dplr_suite::run_all(&EmuBackend::forward(), 0x1000, "emu forward");
}

#[test]
fn matches_oracle_reverse() {
    dplr_suite::run_all(&EmuBackend::reverse(), 0x2000, "emu reverse");
}

#[test]
fn matches_oracle_shuffled() {
    dplr_suite::run_all(&EmuBackend::shuffled(0x5eed), 0x3000, "emu shuffle");
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
        dplr_suite::run_depth_plans(&runner, &format!("emu {} depth", runner.order()));
    }
}

/// `Auto` on a "device" with more SMs (emulator workers): more chunks.
#[test]
fn auto_with_more_sms() {
    let runner = EmuBackend::shuffled(11).with_workers(16);
    let cases = [
        dplr_suite::Case::new(
            (1, 300, 6, 4, 2),
            PlanRequest::Auto,
            true,
            DplrOutput::Readout,
        ),
        dplr_suite::Case::new(
            (2, 200, 5, 3, 1),
            PlanRequest::Auto,
            false,
            DplrOutput::States,
        ),
    ];
    let kinds = dplr_suite::run_cases::<_, f32>(&runner, &cases, 0x5000, "emu 16 workers");
    assert_eq!(
        kinds[2],
        cases.len(),
        "auto should chunk few problems: {kinds:?}"
    );
}

#[test]
fn errors_before_any_launch() {
    dplr_suite::check_errors(&EmuBackend::shuffled(3));
}

#[test]
fn workspace_is_reused() {
    dplr_suite::check_workspace_reuse(&EmuBackend::reverse());
}
