//! Backward pass of the Diagonal family.
//!
//! `h_t = a_t ⊙ h_{t-1} + b_t` is its own transpose, so the adjoint is a
//! reverse Diagonal scan of `(a_{t+1}, d_out_t)` (with `a_T := 1`):
//! `∂L/∂b_t = g_t`, `∂L/∂a_t = g_t ⊙ h_{t-1}`, `∂L/∂h0 = a_0 ⊙ g_0`.
//!
//! Memory beyond the inputs and the returned gradients: one shifted copy
//! of `a` (`B·T·D` scalars of `S`).
//!
//! [`diagonal`] runs the reverse scan on the CPU engine; [`diagonal_kernels`]
//! runs it on any [`KernelRunner`] (the `_rev_` kernels of
//! `kernels/diagonal.cu`, every plan including the look-back), with the
//! shift and the elementwise products on the host.

use rayon::prelude::*;

use super::check_buf;
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::Result;
use crate::family::diagonal::Diagonal;
use crate::family::{Layout, LinearProblem};
use crate::kernels::diagonal::{scan_diagonal_reverse, DiagonalWorkspace, GpuPlan};
use crate::mem::try_vec;
use crate::scan::{Plan, PlanRequest};
use num_traits::{One, Zero};

/// Gradients of a Diagonal scan's inputs, in the problem's layout. `P` is
/// the plan of the reverse scan: [`Plan`] on the CPU engine, [`GpuPlan`]
/// on the kernels.
#[derive(Clone, Debug)]
pub struct DiagonalGrads<S, P = Plan> {
    /// `∂L/∂a`: like `a` (`[B,T,D]` or `[B,D,T]`).
    pub a: Vec<S>,
    /// `∂L/∂b`: like `b`; equal to the adjoint states `g_t`.
    pub b: Vec<S>,
    /// `∂L/∂h0`: `[B,D]` (returned also when `h0` was `None`, i.e. zeros).
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: P,
}

/// The backward pass of `problem`.
///
/// - `states`: the forward outputs `h_t` (what [`Cpu::scan`] returned in
///   `out`), in the problem's layout;
/// - `d_out`: `∂L/∂h_t` for every output, same shape;
/// - `d_h_last`: `∂L/∂h_T`, `[B,D]` (zeros when `None`);
/// - `request`: the plan of the reverse scan (any CPU plan).
///
/// Errors: the problem's own validation errors, and a shape error naming
/// `states`, `d_out` or `d_h_last`.
pub fn diagonal<S: Storage>(
    cpu: &Cpu,
    problem: &Diagonal<'_, S>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<DiagonalGrads<S>> {
    check_args(problem, states, d_out, d_h_last)?;
    let a_next = shifted_a(cpu, problem)?;
    let adjoint = Diagonal {
        a: &a_next,
        b: d_out,
        h0: d_h_last,
        ..*problem
    };
    let run = cpu.scan_reverse(&adjoint, request)?;
    drop(a_next);
    let (da, dh0) = param_grads(cpu, problem, states, &run.out)?;
    Ok(DiagonalGrads {
        a: da,
        b: run.out,
        h0: dh0,
        plan: run.plan,
    })
}

/// [`diagonal`] with the reverse scan on `runner` ([`scan_diagonal_reverse`]:
/// any kernel plan, the look-back included); the shifted `a` and the
/// products `g_t ⊙ h_{t-1}`, `a_0 ⊙ g_0` are formed on the host (rayon's
/// global pool). `ws` holds the scan's device scratch between calls.
///
/// Errors: as [`diagonal`], plus the kernels' plan and launch errors.
pub fn diagonal_kernels<R, S>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    problem: &Diagonal<'_, S>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<DiagonalGrads<S, GpuPlan>>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    check_args(problem, states, d_out, d_h_last)?;
    let cpu = Cpu::new();
    let a_next = shifted_a(&cpu, problem)?;
    let adjoint = Diagonal {
        a: &a_next,
        b: d_out,
        h0: d_h_last,
        ..*problem
    };
    let (g, _, plan) = scan_diagonal_reverse(runner, ws, &adjoint, request)?;
    drop(a_next);
    let (da, dh0) = param_grads(&cpu, problem, states, &g)?;
    Ok(DiagonalGrads {
        a: da,
        b: g,
        h0: dh0,
        plan,
    })
}

/// The problem's own checks and the gradient buffers' lengths.
fn check_args<S: Storage>(
    problem: &Diagonal<'_, S>,
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

/// `a_{t+1}` at step `t` and `1` at the last step, in the problem's layout.
fn shifted_a<S: Storage>(cpu: &Cpu, problem: &Diagonal<'_, S>) -> Result<Vec<S>> {
    let (t_len, dim) = (problem.len, problem.dim);
    // `a_{t+1}` at step t, `1` at the last step.
    let mut a_next = try_vec("a_next", problem.output_len(), S::default())?;
    let one = S::store(S::Compute::one());
    cpu.install_for::<S, _>(|| match problem.layout {
        Layout::Btd => a_next
            .par_chunks_mut(t_len * dim)
            .zip(problem.a.par_chunks(t_len * dim))
            .for_each(|(dst, a)| {
                let cut = (t_len - 1) * dim;
                dst[..cut].copy_from_slice(&a[dim..]);
                dst[cut..].fill(one);
            }),
        Layout::Bdt => a_next
            .par_chunks_mut(t_len)
            .zip(problem.a.par_chunks(t_len))
            .for_each(|(dst, a)| {
                dst[..t_len - 1].copy_from_slice(&a[1..]);
                dst[t_len - 1] = one;
            }),
    });
    Ok(a_next)
}

/// `(∂L/∂a, ∂L/∂h0)` from the adjoint states `g`: `g_t ⊙ h_{t-1}` and
/// `a_0 ⊙ g_0`.
fn param_grads<S: Storage>(
    cpu: &Cpu,
    problem: &Diagonal<'_, S>,
    states: &[S],
    g: &[S],
) -> Result<(Vec<S>, Vec<S>)> {
    let (t_len, dim) = (problem.len, problem.dim);
    let mut da = try_vec("d_a", problem.output_len(), S::default())?;
    let mut dh0 = try_vec("d_h0", problem.final_len(), S::default())?;
    let zero = S::Compute::zero();
    let h0 = |b: usize, c: usize| problem.h0.map_or(zero, |h0| h0[b * dim + c].load());
    cpu.install_for::<S, _>(|| match problem.layout {
        Layout::Btd => {
            da.par_chunks_mut(dim).enumerate().for_each(|(s, da_t)| {
                let (b, t) = (s / t_len, s % t_len);
                for (c, out) in da_t.iter_mut().enumerate() {
                    let hp = if t == 0 {
                        h0(b, c)
                    } else {
                        states[(s - 1) * dim + c].load()
                    };
                    *out = S::store(g[s * dim + c].load() * hp);
                }
            });
            dh0.par_chunks_mut(dim).enumerate().for_each(|(b, dst)| {
                let s = b * t_len;
                for (c, out) in dst.iter_mut().enumerate() {
                    *out = S::store(problem.a[s * dim + c].load() * g[s * dim + c].load());
                }
            });
        }
        Layout::Bdt => {
            da.par_chunks_mut(t_len)
                .enumerate()
                .for_each(|(lane, da_l)| {
                    let (b, c) = (lane / dim, lane % dim);
                    let base = lane * t_len;
                    for (t, out) in da_l.iter_mut().enumerate() {
                        let hp = if t == 0 {
                            h0(b, c)
                        } else {
                            states[base + t - 1].load()
                        };
                        *out = S::store(g[base + t].load() * hp);
                    }
                });
            dh0.par_iter_mut().enumerate().for_each(|(lane, out)| {
                let i = lane * t_len;
                *out = S::store(problem.a[i].load() * g[i].load());
            });
        }
    });
    Ok((da, dh0))
}
