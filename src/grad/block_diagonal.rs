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

use rayon::prelude::*;

use super::check_buf;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::Result;
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::LinearProblem;
use crate::mem::try_vec;
use crate::scan::{Plan, PlanRequest};
use num_traits::{One, Zero};

/// Gradients of a BlockDiagonal scan's inputs.
#[derive(Clone, Debug)]
pub struct BlockDiagonalGrads<S> {
    /// `∂L/∂a`: `[B,T,nb,k,k]`, row-major blocks like `a`.
    pub a: Vec<S>,
    /// `∂L/∂b`: `[B,T,n]`; equal to the adjoint states `g_t`.
    pub b: Vec<S>,
    /// `∂L/∂h0`: `[B,n]`.
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: Plan,
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
    problem.validate()?;
    let shape = || problem.output_shape();
    check_buf("states", states, problem.output_len(), shape)?;
    check_buf("d_out", d_out, problem.output_len(), shape)?;
    if let Some(g) = d_h_last {
        check_buf("d_h_last", g, problem.final_len(), || problem.final_shape())?;
    }
    let (t_len, k, n) = (problem.len, problem.block, problem.n());
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
    let adjoint = BlockDiagonal {
        a: &a_t,
        b: d_out,
        h0: d_h_last,
        ..*problem
    };
    let run = cpu.scan_reverse(&adjoint, request)?;
    drop(a_t);
    let g = run.out;

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
    Ok(BlockDiagonalGrads {
        a: da,
        b: g,
        h0: dh0,
        plan: run.plan,
    })
}
