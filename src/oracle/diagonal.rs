//! Oracle for the Diagonal family.

use crate::dtype::Storage;
use crate::family::diagonal::Diagonal;
use crate::family::Layout;

/// Diagonal: returns `(h, h_T)` in the problem's output layout, f64.
pub fn diagonal<S: Storage>(p: &Diagonal<'_, S>) -> (Vec<f64>, Vec<f64>) {
    let (bsz, t_len, d) = (p.batch, p.len, p.dim);
    let mut out = vec![0.0; bsz * t_len * d];
    let mut last = vec![0.0; bsz * d];
    for b in 0..bsz {
        for c in 0..d {
            let mut h = p.h0.map_or(0.0, |h0| h0[b * d + c].to_f64());
            for t in 0..t_len {
                let i = match p.layout {
                    Layout::Btd => (b * t_len + t) * d + c,
                    Layout::Bdt => (b * d + c) * t_len + t,
                };
                h = p.a[i].to_f64() * h + p.b[i].to_f64();
                out[i] = h;
            }
            last[b * d + c] = h;
        }
    }
    (out, last)
}
