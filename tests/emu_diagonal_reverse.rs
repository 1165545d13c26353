//! Reverse Diagonal scans and the Diagonal backward pass on the kernels
//! (`kernels/diagonal.cu`'s `_rev_` kernels through
//! `parascan::kernels::diagonal` and `parascan::grad::diagonal_kernels`) on
//! the SIMT emulator, under every fiber order: see
//! `tests/diagonal_reverse_suite` for what each check compares against.
//! `tests/cuda_diagonal_reverse.rs` runs the same suite on CUDA.
//!
//! Planted bug: built with `CXXFLAGS=-DPS_DIAG_DROP_BARRIER=2` (the
//! `[B,D,T]` tile barrier of the reverse kernels removed), the suite fails;
//! the count is in the project notes of the change that added it.

mod common;
mod diagonal_reverse_suite;
mod diagonal_suite;

use parascan::backend::emu::{EmuBackend, FiberOrder};

fn orders() -> [EmuBackend; 3] {
    [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(0x5eed),
    ]
}

#[test]
fn the_orders_are_every_fiber_order() {
    assert_eq!(orders().map(|r| r.order()), FiberOrder::ALL);
}

#[test]
fn reverse_scans_match_the_oracle_forward_order() {
    diagonal_reverse_suite::run_reverse_cases(&EmuBackend::forward(), 0x9000, "emu forward");
}

#[test]
fn reverse_scans_match_the_oracle_reverse_order() {
    diagonal_reverse_suite::run_reverse_cases(&EmuBackend::reverse(), 0xa000, "emu reverse");
}

#[test]
fn reverse_scans_match_the_oracle_shuffled_order() {
    diagonal_reverse_suite::run_reverse_cases(&EmuBackend::shuffled(3), 0xb000, "emu shuffled");
}

#[test]
fn reverse_lookback_aggregate_path() {
    for runner in orders() {
        let label = format!("emu {}", runner.order());
        diagonal_reverse_suite::check_reverse_lookback_aggregate_path(&runner, &label);
    }
}

#[test]
fn reverse_measured_depth_equals_the_forward_formula() {
    for runner in [EmuBackend::forward(), EmuBackend::shuffled(9)] {
        let label = format!("emu {}", runner.order());
        diagonal_reverse_suite::run_reverse_depth_plans(&runner, &label);
    }
}

#[test]
fn gradients_match_finite_differences() {
    for runner in orders() {
        let label = format!("emu {}", runner.order());
        diagonal_reverse_suite::check_gradients_fd(&runner, &label);
    }
}

#[test]
fn gradients_match_the_sequential_adjoint_on_long_t() {
    for runner in orders() {
        let label = format!("emu {}", runner.order());
        diagonal_reverse_suite::check_gradients_long(&runner, 2600, &label);
    }
}

#[test]
fn half_precision_gradients_match_the_sequential_adjoint() {
    for runner in orders() {
        let label = format!("emu {}", runner.order());
        diagonal_reverse_suite::check_gradients_half(&runner, 2600, &label);
    }
}
