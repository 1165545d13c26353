//! Oracle for the DPLR family: the textbook recurrence in f64, one step at a
//! time, with the transition built as a dense matrix (nothing shared with the
//! family's low-rank step or dense combine).

use crate::dtype::Storage;
use crate::family::dplr::{Dplr, DplrOutput};

/// DPLR: returns `(out, h_T)` in f64, where `out` is `y: [B,T,m]`
/// (`y_t = H_tᵀ q_t`) for [`DplrOutput::Readout`] or every state
/// `H_t: [B,T,n,m]` for [`DplrOutput::States`], and `h_T: [B,n,m]`.
///
/// Each step forms `A_t = diag(w_t) + Σ_r u_{t,r} v_{t,r}ᵀ` densely and
/// evaluates `H_t = A_t H_{t-1} + k_t x_tᵀ`.
///
/// # Panics
/// If the problem is not valid (call `validate` first), e.g. `q` missing
/// for the readout.
pub fn dplr<S: Storage>(p: &Dplr<'_, S>) -> (Vec<f64>, Vec<f64>) {
    let (bsz, t_len, n, m, rank) = (p.batch, p.len, p.n, p.m, p.rank);
    let f = |s: &[S], i: usize| s[i].to_f64();
    let per_step = match p.output {
        DplrOutput::Readout => m,
        DplrOutput::States => n * m,
    };
    let mut out = vec![0.0; bsz * t_len * per_step];
    let mut last = vec![0.0; bsz * n * m];
    let mut a = vec![0.0; n * n];
    let mut h_new = vec![0.0; n * m];
    for b in 0..bsz {
        let mut h: Vec<f64> = match p.h0 {
            Some(h0) => (0..n * m).map(|i| f(h0, b * n * m + i)).collect(),
            None => vec![0.0; n * m],
        };
        for t in 0..t_len {
            let bt = b * t_len + t;
            // A_t, dense.
            for i in 0..n {
                for j in 0..n {
                    let mut s = if i == j { f(p.w, bt * n + i) } else { 0.0 };
                    for r in 0..rank {
                        let base = (bt * rank + r) * n;
                        s += f(p.u, base + i) * f(p.v, base + j);
                    }
                    a[i * n + j] = s;
                }
            }
            // H_t = A_t H_{t-1} + k_t x_tᵀ.
            for i in 0..n {
                for j in 0..m {
                    let mut s = f(p.k, bt * n + i) * f(p.x, bt * m + j);
                    for l in 0..n {
                        s += a[i * n + l] * h[l * m + j];
                    }
                    h_new[i * m + j] = s;
                }
            }
            std::mem::swap(&mut h, &mut h_new);
            let o = &mut out[bt * per_step..(bt + 1) * per_step];
            match p.output {
                DplrOutput::Readout => {
                    let q = p.q.expect("DPLR readout needs q");
                    for (j, y) in o.iter_mut().enumerate() {
                        *y = (0..n).map(|i| h[i * m + j] * f(q, bt * n + i)).sum();
                    }
                }
                DplrOutput::States => o.copy_from_slice(&h),
            }
        }
        last[b * n * m..(b + 1) * n * m].copy_from_slice(&h);
    }
    (out, last)
}
