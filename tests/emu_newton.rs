//! The Newton kernels (`kernels/newton.cu` + the scan kernels) through
//! `parascan::newton::solve_kernels` on the SIMT emulator, under every fiber
//! order (see `tests/newton_suite`). `tests/cuda_newton.rs` runs the same
//! suite on a GPU.

mod common;
mod newton_suite;

use parascan::backend::emu::{EmuBackend, FiberOrder};

#[test]
fn every_cell_and_mode_under_every_fiber_order() {
    for (i, order) in FiberOrder::ALL.into_iter().enumerate() {
        let runner = EmuBackend::new(order, 0x5eed + i as u64);
        newton_suite::run_suite(&runner, 1000 * i as u64, &format!("emu {order}"));
    }
}

/// gru's fused iterations (the assemble inside the look-back scan).
#[test]
fn fused_gru_iterations_under_every_fiber_order() {
    for (i, order) in FiberOrder::ALL.into_iter().enumerate() {
        let runner = EmuBackend::new(order, 0xf00d + i as u64);
        newton_suite::run_fused_suite(&runner, 500 * i as u64, &format!("emu {order} fused"));
    }
}

#[test]
fn sequential_kernels_match_the_cpu_loop() {
    for order in FiberOrder::ALL {
        newton_suite::run_sequential(&EmuBackend::new(order, 7), 3);
    }
}

#[test]
fn divergence_paths() {
    newton_suite::run_divergence(&EmuBackend::reverse());
}

#[test]
fn bad_arguments_are_typed_errors() {
    newton_suite::run_errors(&EmuBackend::forward());
}
