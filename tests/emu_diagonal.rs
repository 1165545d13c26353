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

mod common;
mod diagonal_suite;

use diagonal_suite::Case;
use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::family::Layout;
use parascan::PlanRequest;

/// The correctness cases, for both layouts.
fn cases() -> Vec<Case> {
    use PlanRequest::*;
    let mut cases = Vec::new();
    let mut h0 = false;
    let mut push = |shape, requests: &[PlanRequest]| {
        for layout in [Layout::Btd, Layout::Bdt] {
            for &r in requests {
                h0 = !h0;
                cases.push(Case::new(shape, layout, r, h0));
            }
        }
    };
    // T = 1: every request is a single step.
    push((1, 1, 1), &[Sequential, Chunk(1), MinDepth, Auto]);
    push((2, 1, 3), &[Chunk(4), MinDepth]);
    // Odd T, T < C, T not a multiple of C.
    push((1, 7, 3), &[Sequential, Chunk(2), Chunk(16), MinDepth]);
    push((3, 37, 2), &[Chunk(1), Chunk(5), Chunk(64), Auto]);
    // D = 1 (the [B,D,T] kernels for both layouts).
    push((2, 100, 1), &[Sequential, Chunk(9), MinDepth, Auto]);
    // T ≫ C, D = 64.
    push((1, 300, 64), &[Chunk(7), Auto]);
    push((2, 1000, 3), &[Chunk(3), Chunk(256), MinDepth, Auto]);
    // More than 2048 chunks: P3.
    push((1, 2500, 2), &[Chunk(1)]);
    push((2, 4200, 1), &[Chunk(2)]);
    cases
}

fn run_order(runner: EmuBackend, seed: u64) {
    diagonal_suite::run_cases(
        &runner,
        &cases(),
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

#[test]
fn errors_before_any_launch() {
    diagonal_suite::check_errors(&EmuBackend::shuffled(3));
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    diagonal_suite::check_workspace_reuse(&EmuBackend::reverse());
}
