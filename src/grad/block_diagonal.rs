//! Backward pass of the BlockDiagonal (and Dense) family.
//!
//! The adjoint is a reverse BlockDiagonal scan of the transposed blocks of
//! the next step, `(A_{t+1}ᵀ, d_out_t)` (identity blocks at the last
//! step); then `∂L/∂b_t = g_t`,
//! `∂L/∂A_t[j][r][c] = g_t[j·k + r]·h_{t-1}[j·k + c]` and
//! `∂L/∂h0 = A_0ᵀ g_0` blockwise.
//!
//! Memory beyond the inputs and the returned gradients: the transposed
//! blocks, `B·T·nb·k²` scalars of `S` (as much as `a`).
//!
//! [`block_diagonal`] runs the reverse scan on the CPU engine;
//! [`block_diagonal_kernels`] runs it on any [`KernelRunner`] (the `_rev_`
//! kernels of `kernels/block_diagonal.cu`, every plan), with the
//! transposition and the contractions on the host.

use rayon::prelude::*;

use super::check_buf;
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::Result;
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::LinearProblem;
use crate::kernels::block_diagonal::{
    scan_block_diagonal_reverse, BlockDiagonalWorkspace, BlockPlan,
};
use crate::mem::try_vec;
use crate::scan::{Plan, PlanRequest};
use num_traits::{One, Zero};

/// Gradients of a BlockDiagonal scan's inputs. `P` is the plan of the
/// reverse scan: [`Plan`] on the CPU engine, [`BlockPlan`] on the kernels.
#[derive(Clone, Debug)]
pub struct BlockDiagonalGrads<S, P = Plan> {
    /// `∂L/∂a`: `[B,T,nb,k,k]`, row-major blocks like `a`.
    pub a: Vec<S>,
    /// `∂L/∂b`: `[B,T,n]`; equal to the adjoint states `g_t`.
    pub b: Vec<S>,
    /// `∂L/∂h0`: `[B,n]`.
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: P,
}

/// The backward pass of `problem`: `states` are the forward outputs
/// `[B,T,n]`, `d_out = ∂L/∂h_t` `[B,T,n]`, `d_h_last = ∂L/∂h_T` `[B,n]`
/// (zeros when `None`); `request` plans the reverse scan.
pub fn block_diagonal<S: Storage>(
    cpu: &Cpu,
    problem: &BlockDiagonal<'_, S>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<BlockDiagonalGrads<S>> {
    check_args(problem, states, d_out, d_h_last)?;
    let a_t = transposed(cpu, problem)?;
    let adjoint = BlockDiagonal {
        a: &a_t,
        b: d_out,
        h0: d_h_last,
        ..*problem
    };
    let run = cpu.scan_reverse(&adjoint, request)?;
    drop(a_t);
    let g = run.out;
    let (da, dh0) = param_grads(cpu, problem, states, &g)?;
    Ok(BlockDiagonalGrads {
        a: da,
        b: g,
        h0: dh0,
        plan: run.plan,
    })
}

/// [`block_diagonal`] with the reverse scan on `runner`
/// ([`scan_block_diagonal_reverse`]: any kernel plan); the transposed
/// blocks and the products `g_t h_{t-1}ᵀ`, `A_0ᵀ g_0` are formed on the host
/// (rayon's global pool): the outer products write as many bytes as `a`
/// once, which a device kernel would too, and keeping them on the host
/// needs no new kernel. `ws` holds the scan's device scratch.
///
/// Errors: as [`block_diagonal`], plus the kernels' plan and launch errors.
pub fn block_diagonal_kernels<R, S>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    problem: &BlockDiagonal<'_, S>,
    states: &[S],
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<BlockDiagonalGrads<S, BlockPlan>>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    check_args(problem, states, d_out, d_h_last)?;
    let cpu = Cpu::new();
    let a_t = transposed(&cpu, problem)?;
    let adjoint = BlockDiagonal {
        a: &a_t,
        b: d_out,
        h0: d_h_last,
        ..*problem
    };
    let (g, _, plan) = scan_block_diagonal_reverse(runner, ws, &adjoint, request)?;
    drop(a_t);
    let (da, dh0) = param_grads(&cpu, problem, states, &g)?;
    Ok(BlockDiagonalGrads {
        a: da,
        b: g,
        h0: dh0,
        plan,
    })
}

/// The problem's own checks and the gradient buffers' lengths.
fn check_args<S: Storage>(
    problem: &BlockDiagonal<'_, S>,
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

/// The adjoint's blocks: at step `t` the transposed blocks of step `t + 1`,
/// identity blocks at the last step.
fn transposed<S: Storage>(cpu: &Cpu, problem: &BlockDiagonal<'_, S>) -> Result<Vec<S>> {
    let (t_len, k) = (problem.len, problem.block);
    let kk = problem.blocks * k * k;
    let a_len = problem.a.len();
    let mut a_t = try_vec("a_transposed", a_len, S::default())?;
    let (one, zero_s) = (S::store(S::Compute::one()), S::store(S::Compute::zero()));
    cpu.install_for::<S, _>(|| {
        a_t.par_chunks_mut(kk).enumerate().for_each(|(s, dst)| {
            let last = s % t_len == t_len - 1;
            for (blk, d) in dst.chunks_mut(k * k).enumerate() {
                for r in 0..k {
                    for c in 0..k {
                        d[r * k + c] = if last {
                            if r == c {
                                one
                            } else {
                                zero_s
                            }
                        } else {
                            problem.a[(s + 1) * kk + blk * k * k + c * k + r]
                        };
                    }
                }
            }
        })
    });
    Ok(a_t)
}

/// `(∂L/∂a, ∂L/∂h0)` from the adjoint states `g`: `g_t h_{t-1}ᵀ` per block
/// and `A_0ᵀ g_0`.
fn param_grads<S: Storage>(
    cpu: &Cpu,
    problem: &BlockDiagonal<'_, S>,
    states: &[S],
    g: &[S],
) -> Result<(Vec<S>, Vec<S>)> {
    let (t_len, k, n) = (problem.len, problem.block, problem.n());
    let kk = problem.blocks * k * k;
    let a_len = problem.a.len();
    let mut da = try_vec("d_a", a_len, S::default())?;
    let mut dh0 = try_vec("d_h0", problem.final_len(), S::default())?;
    let zero = S::Compute::zero();
    cpu.install_for::<S, _>(|| {
        da.par_chunks_mut(kk).enumerate().for_each(|(s, da_t)| {
            let (b, t) = (s / t_len, s % t_len);
            let hp = |i: usize| {
                if t > 0 {
                    states[(s - 1) * n + i].load()
                } else {
                    problem.h0.map_or(zero, |h0| h0[b * n + i].load())
                }
            };
            for (blk, d) in da_t.chunks_mut(k * k).enumerate() {
                for r in 0..k {
                    let gr = g[s * n + blk * k + r].load();
                    for c in 0..k {
                        d[r * k + c] = S::store(gr * hp(blk * k + c));
                    }
                }
            }
        });
        dh0.par_chunks_mut(n).enumerate().for_each(|(b, dst)| {
            let s = b * t_len;
            for blk in 0..problem.blocks {
                for c in 0..k {
                    let mut acc = zero;
                    for r in 0..k {
                        acc = acc
                            + problem.a[s * kk + blk * k * k + r * k + c].load()
                                * g[s * n + blk * k + r].load();
                    }
                    dst[blk * k + c] = S::store(acc);
                }
            }
        });
    });
    Ok((da, dh0))
}
