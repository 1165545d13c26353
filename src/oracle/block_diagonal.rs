//! Oracle for the BlockDiagonal family.

use crate::dtype::Storage;
use crate::family::block_diagonal::BlockDiagonal;

/// BlockDiagonal oracle: `(h [B,T,n], h_T [B,n])`, from the definition
/// `h_t[j·k + r] = Σ_c a_t[j][r][c] · h_{t-1}[j·k + c] + b_t[j·k + r]`
/// step by step in f64.
///
/// Expects a validated problem.
pub fn block_diagonal<S: Storage>(p: &BlockDiagonal<'_, S>) -> (Vec<f64>, Vec<f64>) {
    let (bsz, t_len, nb, k) = (p.batch, p.len, p.blocks, p.block);
    let n = nb * k;
    let mut out = vec![0.0; bsz * t_len * n];
    let mut last = vec![0.0; bsz * n];
    for bi in 0..bsz {
        let mut h: Vec<f64> = match p.h0 {
            Some(h0) => (0..n).map(|i| h0[bi * n + i].to_f64()).collect(),
            None => vec![0.0; n],
        };
        for t in 0..t_len {
            let step = bi * t_len + t;
            let prev = h.clone();
            for j in 0..nb {
                for r in 0..k {
                    let mut acc = p.b[step * n + j * k + r].to_f64();
                    for c in 0..k {
                        let a = p.a[((step * nb + j) * k + r) * k + c].to_f64();
                        acc += a * prev[j * k + c];
                    }
                    h[j * k + r] = acc;
                }
            }
            out[step * n..(step + 1) * n].copy_from_slice(&h);
        }
        last[bi * n..(bi + 1) * n].copy_from_slice(&h);
    }
    (out, last)
}
