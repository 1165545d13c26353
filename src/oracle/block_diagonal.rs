//! PLACEHOLDER oracle (helper replaces).
use crate::dtype::Storage;
use crate::family::block_diagonal::BlockDiagonal;
/// BlockDiagonal oracle: `(h [B,T,n], h_T [B,n])`.
pub fn block_diagonal<S: Storage>(_p: &BlockDiagonal<'_, S>) -> (Vec<f64>, Vec<f64>) {
    unimplemented!("placeholder")
}
