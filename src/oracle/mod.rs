//! The f64 sequential oracle: each family's recurrence evaluated step by
//! step in f64, written independently of the scan engine and of the
//! families' combine code, for tests and `parascan check`.
//!
//! Each function returns `(out, h_T)` as f64 in the family's output layout.

mod block_diagonal;
mod diagonal;
mod dplr;
mod perm_diagonal;

pub use block_diagonal::block_diagonal;
pub use diagonal::diagonal;
pub use dplr::dplr;
pub use perm_diagonal::perm_diagonal;

use crate::dtype::Storage;

/// Relative L2 error `‖got − want‖ / max(‖want‖, tiny)`.
pub fn rel_l2<S: Storage>(got: &[S], want: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        let e = g.to_f64() - w;
        num += e * e;
        den += w * w;
    }
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    (num.sqrt()) / den.sqrt().max(1e-300)
}
