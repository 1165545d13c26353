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
//! (the barrier that keeps a stage buffer from being refilled while other
//! threads read it removed), 5 of its 9 tests fail: the three
//! `matches_oracle_*` (11 of 38 cases each, forward order included: the
//! emulator's async copies poison their destination when issued),
//! `auto_with_more_sms` and `kernel_scan_face`. Built with
//! `CXXFLAGS=-DPS_DPLR_DROP_WAIT=1` (stage buffers read without waiting for
//! their async copies), the same 5 tests fail: every case of the three
//! `matches_oracle_*` (38 of 38 each) and of `auto_with_more_sms` (2 of 2).

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

/// The family-independent face used by `check` and `sweep`: plan summary,
/// scan, measured depth and prepared launches agree with the module API.
#[test]
fn kernel_scan_face() {
    use parascan::backend::launch::KernelRunner;
    use parascan::family::dplr::Dplr;
    use parascan::kernels::dplr::{plan_dplr, DplrShape};
    use parascan::kernels::KernelScan;
    let runner = EmuBackend::shuffled(21);
    let case = dplr_suite::Case::new(
        (2, 90, 6, 5, 2),
        PlanRequest::Chunk(9),
        true,
        DplrOutput::Readout,
    );
    let (w, u, v, k, x, q, h0) = dplr_suite::inputs::<f32>(&case, 0x77);
    let p = Dplr {
        w: &w,
        u: &u,
        v: &v,
        k: &k,
        x: &x,
        q: Some(&q),
        h0: Some(&h0),
        batch: 2,
        len: 90,
        n: 6,
        m: 5,
        rank: 2,
        output: DplrOutput::Readout,
    };
    let summary = p.kernel_plan(runner.sm_count(), case.request).unwrap();
    let plan = plan_dplr(
        DplrShape::of(&p),
        p.output,
        parascan::DType::F32,
        case.request,
        runner.sm_count(),
    )
    .unwrap();
    assert_eq!(summary, plan.summary());
    assert_eq!(
        (summary.kind.as_str(), summary.chunk, summary.chunks),
        ("P2", 9, 10)
    );
    assert_eq!(
        p.kernel_depth(&runner, case.request).unwrap(),
        summary.depth_formula
    );
    let outs = p.kernel_scan(&runner, case.request).unwrap();
    let (want, want_t) = parascan::oracle::dplr(&p);
    let tol = common::tolerance::<f32>(90);
    assert!(parascan::oracle::rel_l2(&outs.out, &want) <= tol);
    assert!(parascan::oracle::rel_l2(&outs.h_last, &want_t) <= tol);
    let counter = dplr_suite::Counter::new(&runner);
    let (prepared, mut run) = p.kernel_prepare(&counter, case.request).unwrap();
    assert_eq!(prepared, summary);
    let allocs = counter.allocs.get();
    run().unwrap();
    run().unwrap();
    assert_eq!(counter.launches.get(), 2 * plan.launches.len());
    assert_eq!(counter.allocs.get(), allocs, "a prepared run allocated");
    assert_eq!(counter.syncs.get(), 0, "a prepared run synchronized");
}
