//! Backward pass of the PermDiagonal family.
//!
//! A PD step `(A h)_i = d_i h_{π(i)}` has the transpose
//! `(Aᵀ g)_j = d_{π⁻¹(j)} g_{π⁻¹(j)}`: another PD step with permutation
//! `π⁻¹` and the scales moved along with it. So the adjoint is a reverse PD
//! scan of `(π⁻¹_{t+1}, d_{t+1}∘π⁻¹_{t+1}, d_out_t)` (the identity at the
//! last step), and `∂L/∂b_t = g_t`, `∂L/∂d_t[i] = g_t[i]·h_{t-1}[π_t(i)]`,
//! `∂L/∂h0[π_0(i)] = d_0[i]·g_0[i]`. The permutations have no gradient.
//!
//! Memory beyond the inputs and the returned gradients: the transposed
//! steps, `B·T·n` `u32` indices and `B·T·n` scalars of `S`.

use rayon::prelude::*;

use super::check_buf;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::Result;
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};
use crate::family::LinearProblem;
use crate::mem::try_vec;
use crate::scan::{Plan, PlanRequest};
use num_traits::{One, Zero};

/// Gradients of a PermDiagonal scan's inputs.
#[derive(Clone, Debug)]
pub struct PermDiagonalGrads<S> {
    /// `∂L/∂d`: `[B,T,n]`.
    pub d: Vec<S>,
    /// `∂L/∂b`: `[B,T,n]`; equal to the adjoint states `g_t`.
    pub b: Vec<S>,
    /// `∂L/∂h0`: `[B,n]`.
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: Plan,
}

/// The backward pass of `problem`: `states` are the forward outputs
/// `[B,T,n]`, `d_out = ∂L/∂h_t` `[B,T,n]`, `d_h_last = ∂L/∂h_T` `[B,n]`
/// (zeros when `None`); `request` plans the reverse PD scan.
pub fn perm_diagonal<S: Storage, P: PermIndex>(
    cpu: &Cpu,
    problem: &PermDiagonal<'_, S, P>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<PermDiagonalGrads<S>> {
    problem.validate()?;
    let shape = || problem.output_shape();
    check_buf("states", states, problem.output_len(), shape)?;
    check_buf("d_out", d_out, problem.output_len(), shape)?;
    if let Some(g) = d_h_last {
        check_buf("d_h_last", g, problem.final_len(), || problem.final_shape())?;
    }
    let (t_len, n) = (problem.len, problem.n);
    let total = problem.output_len();
    // Step t of the adjoint: the transpose of forward step t + 1.
    let mut perm_t = try_vec("perm_transposed", total, 0u32)?;
    let mut d_t = try_vec("d_transposed", total, S::default())?;
    let one = S::store(S::Compute::one());
    cpu.install_for::<S, _>(|| {
        perm_t
            .par_chunks_mut(n)
            .zip(d_t.par_chunks_mut(n))
            .enumerate()
            .for_each(|(s, (pt, dt))| {
                if s % t_len == t_len - 1 {
                    for (j, (p, d)) in pt.iter_mut().zip(dt.iter_mut()).enumerate() {
                        *p = j as u32;
                        *d = one;
                    }
                    return;
                }
                let next = (s + 1) * n;
                let perm = &problem.perm[next..next + n];
                let d = &problem.d[next..next + n];
                for (i, pi) in perm.iter().enumerate() {
                    // Slot π(i) of the transpose reads slot i, scaled by d_i.
                    let j = pi.index();
                    pt[j] = i as u32;
                    dt[j] = d[i];
                }
            })
    });
    let adjoint = PermDiagonal::<S, u32> {
        perm: &perm_t,
        d: &d_t,
        b: d_out,
        h0: d_h_last,
        batch: problem.batch,
        len: t_len,
        n,
    };
    let run = cpu.scan_reverse(&adjoint, request)?;
    drop((perm_t, d_t));
    let g = run.out;

    let mut dd = try_vec("d_d", total, S::default())?;
    let mut dh0 = try_vec("d_h0", problem.final_len(), S::default())?;
    let zero = S::Compute::zero();
    cpu.install_for::<S, _>(|| {
        dd.par_chunks_mut(n).enumerate().for_each(|(s, dd_t)| {
            let (b, t) = (s / t_len, s % t_len);
            let perm = &problem.perm[s * n..(s + 1) * n];
            for (i, out) in dd_t.iter_mut().enumerate() {
                let src = perm[i].index();
                let hp = if t > 0 {
                    states[(s - 1) * n + src].load()
                } else {
                    problem.h0.map_or(zero, |h0| h0[b * n + src].load())
                };
                *out = S::store(g[s * n + i].load() * hp);
            }
        });
        dh0.par_chunks_mut(n).enumerate().for_each(|(b, dst)| {
            let s = b * t_len * n;
            for i in 0..n {
                let j = problem.perm[s + i].index();
                dst[j] = S::store(problem.d[s + i].load() * g[s + i].load());
            }
        });
    });
    Ok(PermDiagonalGrads {
        d: dd,
        b: g,
        h0: dh0,
        plan: run.plan,
    })
}
