//! Independent f64 sequential adjoints (backpropagation through time, one
//! step at a time from the last), written from the recurrences' definitions
//! without the scan engine, the families' algebra or the transposed-family
//! trick the library uses. Each takes the inputs as f64 vectors (already
//! rounded to the storage type by the caller), the direct gradients `gy` of
//! every output and `gh` of the final state, and returns the gradients in
//! the inputs' layouts.
#![allow(dead_code, clippy::too_many_arguments)]

/// Diagonal `[B,T,D]` (or `[B,D,T]` when `bdt`): returns `(da, db, dh0)`.
pub fn diagonal(
    a: &[f64],
    b: &[f64],
    h0: &[f64],
    gy: &[f64],
    gh: &[f64],
    batch: usize,
    len: usize,
    dim: usize,
    bdt: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let idx = |bi: usize, t: usize, c: usize| {
        if bdt {
            (bi * dim + c) * len + t
        } else {
            (bi * len + t) * dim + c
        }
    };
    let (mut da, mut db, mut dh0) = (vec![0.0; a.len()], vec![0.0; a.len()], vec![0.0; h0.len()]);
    for bi in 0..batch {
        for c in 0..dim {
            // Forward states of this lane.
            let mut h = vec![h0[bi * dim + c]];
            for t in 0..len {
                let i = idx(bi, t, c);
                let prev = h[t];
                h.push(a[i] * prev + b[i]);
            }
            let mut g = gh[bi * dim + c];
            for t in (0..len).rev() {
                let i = idx(bi, t, c);
                g += gy[i];
                db[i] = g;
                da[i] = g * h[t];
                g *= a[i];
            }
            dh0[bi * dim + c] = g;
        }
    }
    (da, db, dh0)
}

/// PermDiagonal `[B,T,n]`: returns `(dd, db, dh0)`.
pub fn perm_diagonal(
    perm: &[usize],
    d: &[f64],
    b: &[f64],
    h0: &[f64],
    gy: &[f64],
    gh: &[f64],
    batch: usize,
    len: usize,
    n: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut dd, mut db, mut dh0) = (vec![0.0; d.len()], vec![0.0; d.len()], vec![0.0; h0.len()]);
    for bi in 0..batch {
        let mut hs = vec![h0[bi * n..(bi + 1) * n].to_vec()];
        for t in 0..len {
            let row = (bi * len + t) * n;
            let prev = &hs[t];
            let next: Vec<f64> = (0..n)
                .map(|i| d[row + i] * prev[perm[row + i]] + b[row + i])
                .collect();
            hs.push(next);
        }
        let mut g = gh[bi * n..(bi + 1) * n].to_vec();
        for t in (0..len).rev() {
            let row = (bi * len + t) * n;
            let mut back = vec![0.0; n];
            for i in 0..n {
                g[i] += gy[row + i];
                db[row + i] = g[i];
                dd[row + i] = g[i] * hs[t][perm[row + i]];
                back[perm[row + i]] += d[row + i] * g[i];
            }
            g = back;
        }
        dh0[bi * n..(bi + 1) * n].copy_from_slice(&g);
    }
    (dd, db, dh0)
}

/// BlockDiagonal `a: [B,T,nb,k,k]`, `b: [B,T,n]`: returns `(da, db, dh0)`.
pub fn block_diagonal(
    a: &[f64],
    b: &[f64],
    h0: &[f64],
    gy: &[f64],
    gh: &[f64],
    batch: usize,
    len: usize,
    nb: usize,
    k: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = nb * k;
    // Entry (row, col) of step s's full n×n transition (0 off the blocks).
    let entry = |s: usize, row: usize, col: usize| {
        if row / k != col / k {
            0.0
        } else {
            a[s * nb * k * k + (row / k) * k * k + (row % k) * k + col % k]
        }
    };
    let (mut da, mut db, mut dh0) = (vec![0.0; a.len()], vec![0.0; b.len()], vec![0.0; h0.len()]);
    for bi in 0..batch {
        let mut hs = vec![h0[bi * n..(bi + 1) * n].to_vec()];
        for t in 0..len {
            let s = bi * len + t;
            let next: Vec<f64> = (0..n)
                .map(|r| b[s * n + r] + (0..n).map(|c| entry(s, r, c) * hs[t][c]).sum::<f64>())
                .collect();
            hs.push(next);
        }
        let mut g = gh[bi * n..(bi + 1) * n].to_vec();
        for t in (0..len).rev() {
            let s = bi * len + t;
            for r in 0..n {
                g[r] += gy[s * n + r];
                db[s * n + r] = g[r];
            }
            for r in 0..n {
                for c in 0..n {
                    if r / k == c / k {
                        da[s * nb * k * k + (r / k) * k * k + (r % k) * k + c % k] =
                            g[r] * hs[t][c];
                    }
                }
            }
            g = (0..n)
                .map(|c| (0..n).map(|r| entry(s, r, c) * g[r]).sum())
                .collect();
        }
        dh0[bi * n..(bi + 1) * n].copy_from_slice(&g);
    }
    (da, db, dh0)
}

/// DPLR gradients `(w, u, v, k, x, q, h0)` in the inputs' layouts (`q` is
/// all zeros for the all-states output).
pub struct DplrGrads {
    pub w: Vec<f64>,
    pub u: Vec<f64>,
    pub v: Vec<f64>,
    pub k: Vec<f64>,
    pub x: Vec<f64>,
    pub q: Vec<f64>,
    pub h0: Vec<f64>,
}

/// DPLR: `H_t = A_t H_{t-1} + k_t x_tᵀ`, `A_t = diag(w) + Σ_r u_r v_rᵀ`;
/// `gy` is `[B,T,m]` (readout `y_t = H_tᵀ q_t`, when `readout`) or
/// `[B,T,n,m]` (all states).
pub fn dplr(
    w: &[f64],
    u: &[f64],
    v: &[f64],
    kk: &[f64],
    x: &[f64],
    q: &[f64],
    h0: &[f64],
    gy: &[f64],
    gh: &[f64],
    dims: (usize, usize, usize, usize, usize),
    readout: bool,
) -> DplrGrads {
    let (batch, len, n, m, rank) = dims;
    let mut out = DplrGrads {
        w: vec![0.0; w.len()],
        u: vec![0.0; u.len()],
        v: vec![0.0; v.len()],
        k: vec![0.0; kk.len()],
        x: vec![0.0; x.len()],
        q: vec![0.0; w.len()],
        h0: vec![0.0; h0.len()],
    };
    let dense = |s: usize| -> Vec<f64> {
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut e = if i == j { w[s * n + i] } else { 0.0 };
                for r in 0..rank {
                    e += u[(s * rank + r) * n + i] * v[(s * rank + r) * n + j];
                }
                a[i * n + j] = e;
            }
        }
        a
    };
    for bi in 0..batch {
        let mut hs = vec![h0[bi * n * m..(bi + 1) * n * m].to_vec()];
        for t in 0..len {
            let s = bi * len + t;
            let a = dense(s);
            let prev = &hs[t];
            let mut next = vec![0.0; n * m];
            for i in 0..n {
                for j in 0..m {
                    let mut e = kk[s * n + i] * x[s * m + j];
                    for l in 0..n {
                        e += a[i * n + l] * prev[l * m + j];
                    }
                    next[i * m + j] = e;
                }
            }
            hs.push(next);
        }
        let mut g = gh[bi * n * m..(bi + 1) * n * m].to_vec();
        for t in (0..len).rev() {
            let s = bi * len + t;
            let (ht, hp) = (&hs[t + 1], &hs[t]);
            if readout {
                for i in 0..n {
                    for j in 0..m {
                        g[i * m + j] += q[s * n + i] * gy[s * m + j];
                    }
                    out.q[s * n + i] = (0..m).map(|j| ht[i * m + j] * gy[s * m + j]).sum();
                }
            } else {
                for (e, d) in g.iter_mut().zip(&gy[s * n * m..(s + 1) * n * m]) {
                    *e += d;
                }
            }
            // dA = G H_{t-1}ᵀ.
            let mut da = vec![0.0; n * n];
            for i in 0..n {
                for l in 0..n {
                    da[i * n + l] = (0..m).map(|j| g[i * m + j] * hp[l * m + j]).sum();
                }
            }
            for i in 0..n {
                out.w[s * n + i] = da[i * n + i];
                out.k[s * n + i] = (0..m).map(|j| g[i * m + j] * x[s * m + j]).sum();
            }
            for j in 0..m {
                out.x[s * m + j] = (0..n).map(|i| g[i * m + j] * kk[s * n + i]).sum();
            }
            for r in 0..rank {
                let base = (s * rank + r) * n;
                for i in 0..n {
                    out.u[base + i] = (0..n).map(|l| da[i * n + l] * v[base + l]).sum();
                    out.v[base + i] = (0..n).map(|l| da[l * n + i] * u[base + l]).sum();
                }
            }
            let a = dense(s);
            let mut back = vec![0.0; n * m];
            for l in 0..n {
                for j in 0..m {
                    back[l * m + j] = (0..n).map(|i| a[i * n + l] * g[i * m + j]).sum();
                }
            }
            g = back;
        }
        out.h0[bi * n * m..(bi + 1) * n * m].copy_from_slice(&g);
    }
    out
}
