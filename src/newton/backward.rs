//! The backward pass of a Newton solve on the CPU engine (implicit
//! differentiation at the solution).
//!
//! At converged states `h*` of `h_t = f(h_{t-1}, x_t)`, the adjoint
//! `g_t = ∂L/∂h_t` (total) obeys `g_t = J_{t+1}ᵀ g_{t+1} + ∂L/∂h_t`
//! (direct), with `J_t = ∂f/∂h` at `(h*_{t-1}, x_t)`: one reverse linear
//! scan in the Jacobian's structure (a Diagonal scan for a diagonal
//! Jacobian, a BlockDiagonal scan of the transposed blocks otherwise).
//! Then each step's vector-Jacobian product ([`Cell::step_vjp`]) gives
//! `∂L/∂x_t` and the step's share of `∂L/∂θ`, and `∂L/∂h_0 = J_0ᵀ g_0`.
//! So training costs the forward solve plus one scan, not `T` sequential
//! steps.
//!
//! A solve that did not converge has no trajectory to differentiate: the
//! backward returns [`Error::NotConverged`] instead of gradients.
//!
//! Memory beyond the inputs and the returned gradients: the transposed
//! Jacobians (`B·T·n·k` scalars for block size `k`) and the adjoint states
//! (`B·T·n`).
//!
//! [`backward`] runs the reverse scan on the CPU engine;
//! [`backward_kernels`] runs it on any [`KernelRunner`] (the Diagonal
//! `_rev_` kernels, for cells with a diagonal Jacobian) and
//! [`backward_block_kernels`] for any Jacobian structure (the
//! BlockDiagonal `_rev_` kernels on the transposed blocks: `DiagLstm`'s
//! 2×2 blocks, `Elman`'s dense `n×n`), the Jacobians and the per-step VJPs
//! staying on the host.

use rayon::prelude::*;

use super::cell::Cell;
use super::solver::Solution;
use super::NonlinearProblem;
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::{Real, Storage};
use crate::error::{Error, Result};
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::diagonal::Diagonal;
use crate::family::Layout;
use crate::kernels::block_diagonal::{
    scan_block_diagonal_reverse, BlockDiagonalWorkspace, BlockPlan,
};
use crate::kernels::diagonal::{scan_diagonal_reverse, DiagonalWorkspace, GpuPlan};
use crate::kernels::measure_depth;
use crate::mem::{checked_product, try_vec};
use crate::scan::depth::measure_reverse;
use crate::scan::{Plan, PlanRequest};

/// Gradients of a Newton solve's inputs and of the cell's weights. `P` is
/// the plan of the reverse scan: [`Plan`] on the CPU engine, [`GpuPlan`]
/// on the kernels.
#[derive(Clone, Debug)]
pub struct NewtonGrads<T, P = Plan> {
    /// `∂L/∂x`: `[B, T, input_dim]`, like the problem's `x`.
    pub x: Vec<T>,
    /// `∂L/∂h_0`: `[B, n]` (also when `h0` was `None`).
    pub h0: Vec<T>,
    /// `∂L/∂θ`: `[param_count]`, summed over the batch, in the cell's
    /// weight order ([`Cell::param_count`]).
    pub params: Vec<T>,
    /// The plan of the reverse scan.
    pub plan: P,
    /// Measured depth of the reverse scan (the engine or the `_depth`
    /// kernels run over depth counters), equal to `plan.depth`.
    pub depth: u64,
}

/// Steps per parallel task of the per-step passes.
const STEPS: usize = 512;

/// Differentiates the solve `solution` of `problem` for `cell`.
///
/// - `d_states`: `∂L/∂h_t` for every state, `[B, T, n]`;
/// - `d_h_last`: an extra `∂L/∂h_T`, `[B, n]` (added to the last step's;
///   `None` for none);
/// - `request`: the plan of the reverse scan.
///
/// Errors: [`Error::NotConverged`] if the solve did not converge; the
/// cell's [`Error::Unsupported`] if it has no [`Cell::step_vjp`]; shape
/// errors naming `solution.states`, `d_states` or `d_h_last`.
pub fn backward<T, C>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    solution: &Solution<T>,
    d_states: &[T],
    d_h_last: Option<&[T]>,
    request: PlanRequest,
) -> Result<NewtonGrads<T>>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
{
    backward_with(
        cpu,
        cell,
        problem,
        solution,
        d_states,
        d_h_last,
        |k, jac_t, batch, len, n| {
            let run = if k == 1 {
                let p = Diagonal {
                    a: jac_t,
                    b: d_states,
                    h0: d_h_last,
                    batch,
                    len,
                    dim: n,
                    layout: Layout::Btd,
                };
                cpu.scan_reverse(&p, request)?
            } else {
                let p = BlockDiagonal {
                    a: jac_t,
                    b: d_states,
                    h0: d_h_last,
                    batch,
                    len,
                    blocks: n / k,
                    block: k,
                };
                cpu.scan_reverse(&p, request)?
            };
            let depth = cpu.install(|| measure_reverse(len, &run.plan)).depth;
            Ok((run.out, run.plan, depth))
        },
    )
}

/// [`backward`] with the reverse scan on `runner`: the Diagonal `_rev_`
/// kernels with plan `request` (any kernel plan, the look-back included),
/// and the measured depth from the `_depth` kernels. The Jacobians, the
/// per-step VJPs and `∂L/∂h_0` are computed on the host (rayon's global
/// pool); `ws` holds the scan's device scratch between calls.
///
/// Errors: as [`backward`]; [`Error::Unsupported`] for a cell whose
/// Jacobian is not diagonal (use [`backward_block_kernels`]); the kernels'
/// plan and launch errors.
#[allow(clippy::too_many_arguments)]
pub fn backward_kernels<R, T, C>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    solution: &Solution<T>,
    d_states: &[T],
    d_h_last: Option<&[T]>,
    request: PlanRequest,
) -> Result<NewtonGrads<T, GpuPlan>>
where
    R: KernelRunner,
    T: Real + Storage<Compute = T> + bytemuck::Pod,
    C: Cell<T> + ?Sized,
{
    let n = cell.state_dim();
    if cell.structure().block(n) != 1 {
        return Err(Error::Unsupported {
            what: "newton::backward_kernels",
            by: cell.name().to_string(),
            hint: "its Jacobian is not diagonal: use newton::backward_block_kernels (the \
                   BlockDiagonal reverse kernels) or newton::backward (the CPU engine)"
                .into(),
        });
    }
    backward_with(
        &Cpu::new(),
        cell,
        problem,
        solution,
        d_states,
        d_h_last,
        |_, jac_t, batch, len, n| {
            let p = Diagonal {
                a: jac_t,
                b: d_states,
                h0: d_h_last,
                batch,
                len,
                dim: n,
                layout: Layout::Btd,
            };
            let (g, _, plan) = scan_diagonal_reverse(runner, ws, &p, request)?;
            let depth = measure_depth(runner, ws, &plan)?;
            Ok((g, plan, depth))
        },
    )
}

/// [`backward`] with the reverse scan on `runner` for any Jacobian
/// structure: the BlockDiagonal `_rev_` kernels on the transposed `k×k`
/// blocks (`k` = the cell's block size: 1 diagonal, 2 for `DiagLstm`, `n`
/// for a dense Jacobian) with plan `request`, and the measured depth from
/// the `_depth` kernels. The Jacobians, the per-step VJPs and `∂L/∂h_0`
/// are computed on the host (rayon's global pool); `ws` holds the scan's
/// device scratch between calls.
///
/// Errors: as [`backward`]; a block size the BlockDiagonal kernels do not
/// have (a typed plan error naming the supported sizes); the kernels'
/// plan and launch errors.
#[allow(clippy::too_many_arguments)]
pub fn backward_block_kernels<R, T, C>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    solution: &Solution<T>,
    d_states: &[T],
    d_h_last: Option<&[T]>,
    request: PlanRequest,
) -> Result<NewtonGrads<T, BlockPlan>>
where
    R: KernelRunner,
    T: Real + Storage<Compute = T> + bytemuck::Pod,
    C: Cell<T> + ?Sized,
{
    backward_with(
        &Cpu::new(),
        cell,
        problem,
        solution,
        d_states,
        d_h_last,
        |k, jac_t, batch, len, n| {
            let p = BlockDiagonal {
                a: jac_t,
                b: d_states,
                h0: d_h_last,
                batch,
                len,
                blocks: n / k,
                block: k,
            };
            let (g, _, plan) = scan_block_diagonal_reverse(runner, ws, &p, request)?;
            let depth = measure_depth(runner, ws, &plan)?;
            Ok((g, plan, depth))
        },
    )
}

/// The engine-independent part of the backward: checks, transposed
/// Jacobians, then `scan(k, jacᵀ, B, T, n)` → `(g, plan, measured depth)`
/// (the reverse scan of `(jacᵀ, d_states)` from `d_h_last`), then the VJPs.
#[allow(clippy::type_complexity)]
fn backward_with<T, C, P>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    solution: &Solution<T>,
    d_states: &[T],
    d_h_last: Option<&[T]>,
    scan: impl FnOnce(usize, &[T], usize, usize, usize) -> Result<(Vec<T>, P, u64)>,
) -> Result<NewtonGrads<T, P>>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
{
    problem.validate(cell)?;
    let report = &solution.report;
    if !report.converged {
        return Err(Error::NotConverged {
            cell: cell.name().to_string(),
            stop: format!("{:?}", report.stop),
            residual: report.residuals.last().copied().unwrap_or(f64::NAN),
            tolerance: report.tolerance,
        });
    }
    let (batch, len, n, din) = (
        problem.batch,
        problem.len,
        cell.state_dim(),
        cell.input_dim(),
    );
    let states = &solution.states;
    let nstates = batch * len * n;
    let shape = || format!("[{batch}, {len}, {n}]");
    if states.len() != nstates {
        return Err(Error::shape(
            "solution.states",
            shape(),
            nstates,
            states.len(),
        ));
    }
    if d_states.len() != nstates {
        return Err(Error::shape("d_states", shape(), nstates, d_states.len()));
    }
    if let Some(g) = d_h_last {
        if g.len() != batch * n {
            return Err(Error::shape(
                "d_h_last",
                format!("[{batch}, {n}]"),
                batch * n,
                g.len(),
            ));
        }
    }
    let np = cell.param_count();
    let zero_h = vec![T::zero(); n];
    let h_prev = |s: usize| -> &[T] {
        let (b, t) = (s / len, s % len);
        if t > 0 {
            &states[(s - 1) * n..s * n]
        } else {
            match problem.h0 {
                Some(h0) => &h0[b * n..(b + 1) * n],
                None => &zero_h,
            }
        }
    };
    let x_at = |s: usize| &problem.x[s * din..(s + 1) * din];
    // Refuse a cell without a VJP before any pass over the data.
    {
        let (mut dx, mut dp) = (vec![T::zero(); din], vec![T::zero(); np]);
        cell.step_vjp(h_prev(0), x_at(0), &d_states[..n], &mut dx, &mut dp)?;
    }

    // Step t of the adjoint scan: J_{t+1}ᵀ (the identity at the last step).
    let k = cell.structure().block(n);
    let alen = n * k;
    let jac_len = checked_product(
        "jacobians",
        &[
            ("batch", batch),
            ("len", len),
            ("state_dim", n),
            ("block", k),
        ],
    )?;
    let mut jac_t = try_vec("jacobians", jac_len, T::zero())?;
    cpu.install_for::<T, _>(|| {
        jac_t
            .par_chunks_mut(STEPS * alen)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let (mut out, mut jac) = (vec![T::zero(); n], vec![T::zero(); alen]);
                for (j, dst) in chunk.chunks_mut(alen).enumerate() {
                    let s = ci * STEPS + j;
                    if s % len == len - 1 {
                        identity_blocks(k, dst);
                        continue;
                    }
                    cell.step_jacobian(
                        &states[s * n..(s + 1) * n],
                        x_at(s + 1),
                        &mut out,
                        &mut jac,
                    );
                    transpose_blocks(k, &jac, dst);
                }
            })
    });
    let (g, plan, depth) = scan(k, &jac_t, batch, len, n)?;
    drop(jac_t);

    // Per-step VJPs; weight gradients summed per task, then in task order.
    let mut dx = try_vec("d_x", batch * len * din, T::zero())?;
    let partial: Vec<Vec<T>> = cpu.install_for::<T, _>(|| {
        dx.par_chunks_mut(STEPS * din)
            .enumerate()
            .map(|(ci, chunk)| {
                let mut dp = vec![T::zero(); np];
                for (j, dst) in chunk.chunks_mut(din).enumerate() {
                    let s = ci * STEPS + j;
                    cell.step_vjp(h_prev(s), x_at(s), &g[s * n..(s + 1) * n], dst, &mut dp)?;
                }
                Ok(dp)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut params = vec![T::zero(); np];
    for dp in &partial {
        for (a, &b) in params.iter_mut().zip(dp) {
            *a = *a + b;
        }
    }

    // ∂L/∂h_0 = J_0ᵀ g_0.
    let mut dh0 = try_vec("d_h0", batch * n, T::zero())?;
    let (mut out, mut jac) = (vec![T::zero(); n], vec![T::zero(); alen]);
    for (b, dst) in dh0.chunks_mut(n).enumerate() {
        let s = b * len;
        cell.step_jacobian(h_prev(s), x_at(s), &mut out, &mut jac);
        let g0 = &g[s * n..(s + 1) * n];
        for blk in 0..n / k {
            for c in 0..k {
                let mut acc = T::zero();
                for r in 0..k {
                    acc = acc + jac[blk * k * k + r * k + c] * g0[blk * k + r];
                }
                dst[blk * k + c] = acc;
            }
        }
    }
    Ok(NewtonGrads {
        x: dx,
        h0: dh0,
        params,
        plan,
        depth,
    })
}

/// Writes identity `k×k` blocks (or ones for `k = 1`) into `dst`.
fn identity_blocks<T: Real>(k: usize, dst: &mut [T]) {
    for (i, v) in dst.iter_mut().enumerate() {
        let (r, c) = ((i / k) % k, i % k);
        *v = if r == c { T::one() } else { T::zero() };
    }
}

/// Transposes every `k×k` block of `src` into `dst`.
fn transpose_blocks<T: Real>(k: usize, src: &[T], dst: &mut [T]) {
    for (s, d) in src.chunks(k * k).zip(dst.chunks_mut(k * k)) {
        for r in 0..k {
            for c in 0..k {
                d[r * k + c] = s[c * k + r];
            }
        }
    }
}
