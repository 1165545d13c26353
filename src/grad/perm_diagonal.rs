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
//! steps, `B·T·n` `u32` indices and `B·T·n` scalars of `S` (the kernels'
//! upload narrows the indices to `u8`: `B·T·n` more bytes on the host).
//!
//! [`perm_diagonal`] runs the reverse scan on the CPU engine;
//! [`perm_diagonal_kernels`] runs it on any [`KernelRunner`] (the `_rev_`
//! kernels of `kernels/perm_diagonal.cu`, every plan including the
//! look-back), with the transposition and the contractions on the host.

use rayon::prelude::*;

use super::check_buf;
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::Result;
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};
use crate::family::LinearProblem;
use crate::kernels::perm_diagonal::{scan_perm_diagonal_reverse, PdGpuPlan, PdWorkspace};
use crate::mem::try_vec;
use crate::scan::{Plan, PlanRequest};
use num_traits::{One, Zero};

/// Gradients of a PermDiagonal scan's inputs. `P` is the plan of the
/// reverse scan: [`Plan`] on the CPU engine, [`PdGpuPlan`] on the kernels.
#[derive(Clone, Debug)]
pub struct PermDiagonalGrads<S, P = Plan> {
    /// `∂L/∂d`: `[B,T,n]`.
    pub d: Vec<S>,
    /// `∂L/∂b`: `[B,T,n]`; equal to the adjoint states `g_t`.
    pub b: Vec<S>,
    /// `∂L/∂h0`: `[B,n]`.
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: P,
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
    check_args(problem, states, d_out, d_h_last)?;
    let (perm_t, d_t) = transposed(cpu, problem)?;
    let adjoint = PermDiagonal::<S, u32> {
        perm: &perm_t,
        d: &d_t,
        b: d_out,
        h0: d_h_last,
        batch: problem.batch,
        len: problem.len,
        n: problem.n,
    };
    let run = cpu.scan_reverse(&adjoint, request)?;
    drop((perm_t, d_t));
    let g = run.out;
    let (dd, dh0) = param_grads(cpu, problem, states, &g)?;
    Ok(PermDiagonalGrads {
        d: dd,
        b: g,
        h0: dh0,
        plan: run.plan,
    })
}

/// [`perm_diagonal`] with the reverse PD scan on `runner`
/// ([`scan_perm_diagonal_reverse`]: any kernel plan, the look-back
/// included); the transposed steps and the products `g_t[i]·h_{t-1}[π_t(i)]`,
/// `d_0[i]·g_0[i]` are formed on the host (rayon's global pool): they are
/// one elementwise pass each, and the scan dominates the bytes. `ws` holds
/// the scan's device scratch between calls.
///
/// Errors: as [`perm_diagonal`], plus the kernels' plan and launch errors
/// (`n > 256` is a typed size error of the kernels).
pub fn perm_diagonal_kernels<R, S, P>(
    runner: &R,
    ws: &mut PdWorkspace,
    problem: &PermDiagonal<'_, S, P>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<PermDiagonalGrads<S, PdGpuPlan>>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
    P: PermIndex,
{
    check_args(problem, states, d_out, d_h_last)?;
    let cpu = Cpu::new();
    let (perm_t, d_t) = transposed(&cpu, problem)?;
    let adjoint = PermDiagonal::<S, u32> {
        perm: &perm_t,
        d: &d_t,
        b: d_out,
        h0: d_h_last,
        batch: problem.batch,
        len: problem.len,
        n: problem.n,
    };
    let (g, _, plan) = scan_perm_diagonal_reverse(runner, ws, &adjoint, request)?;
    drop((perm_t, d_t));
    let (dd, dh0) = param_grads(&cpu, problem, states, &g)?;
    Ok(PermDiagonalGrads {
        d: dd,
        b: g,
        h0: dh0,
        plan,
    })
}

/// The problem's own checks and the gradient buffers' lengths.
fn check_args<S: Storage, P: PermIndex>(
    problem: &PermDiagonal<'_, S, P>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
) -> Result<()> {
    problem.validate()?;
    let shape = || problem.output_shape();
    check_buf("states", states, problem.output_len(), shape)?;
    check_buf("d_out", d_out, problem.output_len(), shape)?;
    if let Some(g) = d_h_last {
        check_buf("d_h_last", g, problem.final_len(), || problem.final_shape())?;
    }
    Ok(())
}

/// The adjoint's steps: at step `t` the transpose of forward step `t + 1`
/// (`π⁻¹_{t+1}`, `d_{t+1}∘π⁻¹_{t+1}`), the identity at the last step.
fn transposed<S: Storage, P: PermIndex>(
    cpu: &Cpu,
    problem: &PermDiagonal<'_, S, P>,
) -> Result<(Vec<u32>, Vec<S>)> {
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
    Ok((perm_t, d_t))
}

/// `(∂L/∂d, ∂L/∂h0)` from the adjoint states `g`: `g_t[i]·h_{t-1}[π_t(i)]`
/// and `∂L/∂h0[π_0(i)] = d_0[i]·g_0[i]`.
fn param_grads<S: Storage, P: PermIndex>(
    cpu: &Cpu,
    problem: &PermDiagonal<'_, S, P>,
    states: &[S],
    g: &[S],
) -> Result<(Vec<S>, Vec<S>)> {
    let (t_len, n) = (problem.len, problem.n);
    let total = problem.output_len();
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
    Ok((dd, dh0))
}
