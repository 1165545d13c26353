//! PLACEHOLDER oracle (helper replaces).
use crate::dtype::Storage;
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};
/// PermDiagonal oracle: `(h [B,T,n], h_T [B,n])`.
pub fn perm_diagonal<S: Storage, P: PermIndex>(
    _p: &PermDiagonal<'_, S, P>,
) -> (Vec<f64>, Vec<f64>) {
    unimplemented!("placeholder")
}
