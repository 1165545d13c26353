//! Backward passes (reverse-mode gradients) of the linear families on the
//! CPU engine.
//!
//! For `h_t = A_t h_{t-1} + b_t` (`t = 0..T`, `h_{-1} = h0`) and a loss `L`
//! whose gradients with respect to every output `h_t` (`d_out`) and the
//! final state (`d_h_last`) are given, the adjoint state
//! `g_t = ∂L/∂h_t` (total) obeys
//!
//! ```text
//! g_{T-1} = d_out_{T-1} + d_h_last,   g_t = A_{t+1}ᵀ g_{t+1} + d_out_t,
//! ```
//!
//! a right-to-left scan ([`crate::backend::Cpu::scan_reverse`]) of the
//! *transposed* family with the transitions shifted by one step. The
//! transposes stay in their family: a diagonal is its own transpose, the
//! transpose of a PD step `(π, d)` is the PD step `(π⁻¹, d∘π⁻¹)`, a block
//! diagonal's is its blocks transposed, and a DPLR step's
//! `diag(w) + Σ u_r v_rᵀ` has the transpose `diag(w) + Σ v_r u_rᵀ` (`u` and
//! `v` swapped). Parameter gradients are then elementwise (or rank-`R`)
//! contractions of `g_t` with `h_{t-1}`: `∂L/∂b_t = g_t`,
//! `∂L/∂A_t = g_t h_{t-1}ᵀ` restricted to the family's pattern, and
//! `∂L/∂h0 = A_0ᵀ g_0`.
//!
//! The states `h_t` come from the forward pass (saved by the caller: the
//! forward output of Diagonal, PermDiagonal and BlockDiagonal *is* the
//! states; DPLR's readout is not, so its backward takes the states or
//! recomputes them with one forward scan in [`DplrOutput::States`] mode).
//! Each module states the memory it needs beyond inputs and gradients.
//!
//! The `*_kernels` forms run the same adjoint scan on any
//! [`KernelRunner`](crate::backend::launch::KernelRunner) (the `_rev_`
//! kernels, every plan of the family), with the transposed steps and the
//! parameter contractions on the host.
//!
//! [`DplrOutput::States`]: crate::family::dplr::DplrOutput::States

pub mod block_diagonal;
pub mod diagonal;
pub mod dplr;
pub mod perm_diagonal;

pub use block_diagonal::{block_diagonal, block_diagonal_kernels, BlockDiagonalGrads};
pub use diagonal::{diagonal, diagonal_kernels, DiagonalGrads};
pub use dplr::{dplr, dplr_kernels, DplrGrads};
pub use perm_diagonal::{perm_diagonal, perm_diagonal_kernels, PermDiagonalGrads};

use crate::error::{Error, Result};

/// Checks a gradient or saved-state buffer's length against its shape.
pub(crate) fn check_buf<T>(
    arg: &'static str,
    buf: &[T],
    expected: usize,
    shape: impl Fn() -> String,
) -> Result<()> {
    if buf.len() != expected {
        return Err(Error::shape(arg, shape(), expected, buf.len()));
    }
    Ok(())
}
