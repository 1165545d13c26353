//! Oracle for the PermDiagonal family.

use crate::dtype::Storage;
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};

/// PermDiagonal oracle: `(h [B,T,n], h_T [B,n])`, from the definition
/// `h_t[i] = d_t[i] · h_{t-1}[perm_t[i]] + b_t[i]` step by step in f64.
///
/// Expects a validated problem (it indexes with `perm`).
pub fn perm_diagonal<S: Storage, P: PermIndex>(p: &PermDiagonal<'_, S, P>) -> (Vec<f64>, Vec<f64>) {
    let (bsz, t_len, n) = (p.batch, p.len, p.n);
    let mut out = vec![0.0; bsz * t_len * n];
    let mut last = vec![0.0; bsz * n];
    for bi in 0..bsz {
        let mut h: Vec<f64> = match p.h0 {
            Some(h0) => (0..n).map(|i| h0[bi * n + i].to_f64()).collect(),
            None => vec![0.0; n],
        };
        for t in 0..t_len {
            let row = (bi * t_len + t) * n;
            let prev = h.clone();
            for (i, hi) in h.iter_mut().enumerate() {
                let src = p.perm[row + i].index();
                *hi = p.d[row + i].to_f64() * prev[src] + p.b[row + i].to_f64();
            }
            out[row..row + n].copy_from_slice(&h);
        }
        last[bi * n..(bi + 1) * n].copy_from_slice(&h);
    }
    (out, last)
}
