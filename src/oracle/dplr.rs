//! PLACEHOLDER oracle (helper replaces).
use crate::dtype::Storage;
use crate::family::dplr::Dplr;
/// DPLR oracle: `(out, h_T [B,n,m])`, `out` per `p.output`.
pub fn dplr<S: Storage>(_p: &Dplr<'_, S>) -> (Vec<f64>, Vec<f64>) {
    unimplemented!("placeholder")
}
