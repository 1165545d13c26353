//! Newton-iteration parallel solver for nonlinear RNNs `h_t = f(h_{t-1}, x_t)`.
//!
//! Iteration `k` evaluates `f` and its Jacobian `J_t = ∂f/∂h` at the current
//! guess of every state in parallel, then solves the linear recurrence
//! `h^{k+1}_t = A_t h^{k+1}_{t-1} + (f(h^k_{t-1}, x_t) − A_t h^k_{t-1})` with
//! the scan of `A_t`'s family ([`Mode`] picks `A_t`). After `k` undamped
//! iterations the first `k` states are exact, so at most `T` iterations are
//! ever needed; contractive cells need a handful.
//!
//! ```
//! use parascan::backend::Cpu;
//! use parascan::newton::{solve, sequential, DiagGru, NewtonOptions, NonlinearProblem};
//!
//! let n = 4;
//! let cell = DiagGru::new(vec![0.5f32; n], vec![0.5; n], vec![0.5; n])?;
//! let (batch, len) = (2, 1000);
//! let x: Vec<f32> = (0..batch * len * 3 * n).map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0).collect();
//! let problem = NonlinearProblem { x: &x, h0: None, batch, len };
//! let cpu = Cpu::new();
//! let sol = solve(&cpu, &cell, &problem, &NewtonOptions::default())?;
//! assert!(sol.report.converged && sol.report.iterations <= 8);
//! let reference = sequential(&cpu, &cell, &problem)?;
//! let worst = sol.states.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
//! assert!(worst < 1e-4);
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! On the kernels: [`solve_kernels`] (host memory in and out) and
//! [`solve_device`] (device memory, a reusable [`NewtonWorkspace`],
//! adaptive or fixed [`Iterations`]; see [`device`]). Every path returns
//! the final states `h_T` ([`Solution::h_t`], [`DeviceStates::h_t`]).

pub mod backward;
pub mod cell;
pub mod device;
pub mod gpu;
pub mod gru_avx2;
pub mod report;
pub mod solver;
mod vjp;

pub use backward::{backward, backward_block_kernels, backward_kernels, NewtonGrads};
pub use cell::{Cell, DiagGru, DiagLstm, Elman, Parity, Structure};
pub use device::{
    residual_device, solve_device, DeviceCell, DeviceOptions, DeviceProblem, DeviceStates, Residual,
};
pub use gpu::{sequential_kernels, solve_kernels, GpuCell, Iterations, NewtonWorkspace};
pub use report::{Diverged, Mode, SolveReport, StopReason};
pub use solver::{sequential, solve, solve_varlen, Solution, VarlenSolution};

use rayon::prelude::*;

use crate::dtype::Real;
use crate::error::{Error, Result};
use crate::mem::checked_product;
use crate::scan::PlanRequest;

/// A batch of nonlinear recurrences to solve.
#[derive(Clone, Copy, Debug)]
pub struct NonlinearProblem<'a, T> {
    /// Pre-projected inputs, `[B, T, input_dim]`.
    pub x: &'a [T],
    /// Initial states `[B, n]`; zeros when `None`.
    pub h0: Option<&'a [T]>,
    /// `B`.
    pub batch: usize,
    /// `T ≥ 1`.
    pub len: usize,
}

impl<T: Real> NonlinearProblem<'_, T> {
    /// Checks the shapes against `cell` (a state of at least one scalar, a
    /// Jacobian block size that divides it, every size product in range)
    /// and that every input is finite.
    pub fn validate<C: cell::Cell<T> + ?Sized>(&self, cell: &C) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::size("batch", 0, "B ≥ 1"));
        }
        if self.len == 0 {
            return Err(Error::size("len", 0, "T ≥ 1"));
        }
        let (n, din) = (cell.state_dim(), cell.input_dim());
        check_structure(cell.structure(), n)?;
        let (b, t) = (self.batch, self.len);
        let want = checked_product("x", &[("batch", b), ("len", t), ("input_dim", din)])?;
        // The states `[B, T, n]` are the solver's output: their element and
        // byte counts must exist before anything is allocated.
        let states = checked_product("states", &[("batch", b), ("len", t), ("state_dim", n)])?;
        crate::mem::bytes_of::<T>("states", states)?;
        if self.x.len() != want {
            return Err(Error::shape(
                "x",
                format!("[{}, {}, {din}]", self.batch, self.len),
                want,
                self.x.len(),
            ));
        }
        if let Some(h0) = self.h0 {
            let want = checked_product("h0", &[("batch", b), ("state_dim", n)])?;
            if h0.len() != want {
                return Err(Error::shape(
                    "h0",
                    format!("[{}, {n}]", self.batch),
                    want,
                    h0.len(),
                ));
            }
            finite("h0", h0)?;
        }
        finite("x", self.x)
    }
}

/// Checks a cell's declared sizes: a state of at least one scalar and a
/// Jacobian block size `k ≥ 1` dividing it (a user's [`Cell`] can declare
/// anything; the built-in cells check this on construction).
pub(crate) fn check_structure(s: Structure, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::size(
            "cell.state_dim",
            0,
            "a state of at least one scalar",
        ));
    }
    let k = s.block(n);
    if k == 0 || n % k != 0 {
        return Err(Error::size(
            "cell.structure",
            k,
            format!("a block size k ≥ 1 that divides the state size {n}"),
        ));
    }
    checked_product("jacobian", &[("state_dim", n), ("block", k)])?;
    Ok(())
}

fn finite<T: Real>(arg: &'static str, v: &[T]) -> Result<()> {
    // In parallel: `x` of a long batched problem is gigabytes.
    // Blocks tested branch-free (the loop vectorizes; a per-element early
    // exit would not), and the first bad block searched element by element.
    const BLOCK: usize = 1 << 14;
    let first_bad = v
        .par_chunks(BLOCK)
        .position_first(|c| !c.iter().fold(true, |ok, x| ok & x.is_finite()))
        .and_then(|blk| {
            let c = &v[blk * BLOCK..v.len().min((blk + 1) * BLOCK)];
            c.iter()
                .position(|x| !x.is_finite())
                .map(|i| blk * BLOCK + i)
        });
    match first_bad {
        Some(i) => Err(Error::NonFinite {
            arg,
            index: i,
            value: format!("{:?}", v[i]),
        }),
        None => Ok(()),
    }
}

/// The first guess of every state.
#[derive(Clone, Copy, Debug, Default)]
pub enum InitialGuess<'a, T> {
    /// `h_t = 0`.
    Zeros,
    /// `h_t = f(0, x_t)` (ParaRNN's warm start).
    #[default]
    FirstStep,
    /// A given guess, `[B, T, n]`.
    Given(&'a [T]),
}

/// What to do when the iteration diverges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Return [`Error::Diverged`] with the residual history and best iterate.
    #[default]
    Error,
    /// Run the sequential loop instead (reported as `fell_back`).
    FallbackSequential,
}

/// Solver settings.
#[derive(Clone, Copy, Debug)]
pub struct NewtonOptions<'a, T> {
    /// How `A_t` is built.
    pub mode: Mode,
    /// First guess.
    pub initial: InitialGuess<'a, T>,
    /// Stop when `max |h_t − f(h_{t-1}, x_t)| ≤ atol + rtol·max|h|`.
    pub atol: f64,
    /// See `atol`.
    pub rtol: f64,
    /// Most linear solves; the solver also never needs more than `T`
    /// undamped ones (after `k` iterations the first `k` states are exact).
    pub max_iters: usize,
    /// Divergence: the residual grew this many iterations in a row (`None`:
    /// only non-finite values count as divergence).
    pub growth_patience: Option<usize>,
    /// What divergence does.
    pub policy: Policy,
    /// Plan of every scan.
    pub plan: PlanRequest,
}

impl<T: Real> Default for NewtonOptions<'_, T> {
    /// Newton from `f(0, x_t)`, `atol = rtol =`
    /// [`default_tolerance::<T>()`](default_tolerance) (`1e-5` for f32,
    /// `1e-12` for f64), `max_iters = 100`, growth patience 8, error on
    /// divergence, auto plan.
    fn default() -> Self {
        let tol = default_tolerance::<T>();
        Self {
            mode: Mode::Newton,
            initial: InitialGuess::FirstStep,
            atol: tol,
            rtol: tol,
            max_iters: 100,
            growth_patience: Some(8),
            policy: Policy::Error,
            plan: PlanRequest::Auto,
        }
    }
}

/// The default `atol` and `rtol` of [`NewtonOptions`] for states of `T`,
/// scaled with its precision: `1e-5` for `f32` (about 80 ulps at 1) and
/// `1e-12` for `f64` (about 4500 ulps at 1: headroom for the rounding of
/// the cell and of the scan's combines over long sequences, still far
/// below what f32 can reach), so an f64 solve is f64-accurate by default.
pub fn default_tolerance<T: Real>() -> f64 {
    let eps = num_traits::ToPrimitive::to_f64(&T::epsilon()).unwrap_or(f64::from(f32::EPSILON));
    if eps < f64::from(f32::EPSILON) / 2.0 {
        1e-12
    } else {
        1e-5
    }
}

impl<T: Real> NewtonOptions<'_, T> {
    /// Checks the settings against `cell` and `problem`.
    pub fn validate<C: cell::Cell<T> + ?Sized>(
        &self,
        cell: &C,
        problem: &NonlinearProblem<'_, T>,
    ) -> Result<()> {
        if !(self.atol >= 0.0 && self.rtol >= 0.0 && (self.atol + self.rtol).is_finite()) {
            return Err(Error::size(
                "atol/rtol",
                0,
                "finite tolerances ≥ 0".to_string(),
            ));
        }
        // Checked here, not only by the scan: a solve that converges before
        // its first scan must not accept an invalid plan either.
        if self.plan == PlanRequest::Chunk(0) {
            return Err(Error::Plan(
                "expected chunk=C with C ≥ 1; got chunk=0".into(),
            ));
        }
        if let Mode::Damped { shrink, relax } = self.mode {
            if !(shrink >= 0.0 && shrink.is_finite()) {
                return Err(Error::Plan(format!(
                    "damped mode: shrink = {shrink}, expected a finite value ≥ 0"
                )));
            }
            if !(relax > 0.0 && relax <= 1.0) {
                return Err(Error::Plan(format!(
                    "damped mode: relax = {relax}, expected a value in (0, 1]"
                )));
            }
        }
        let n = cell.state_dim();
        check_structure(cell.structure(), n)?;
        if let InitialGuess::Given(h) = self.initial {
            let want = checked_product(
                "initial",
                &[
                    ("batch", problem.batch),
                    ("len", problem.len),
                    ("state_dim", n),
                ],
            )?;
            if h.len() != want {
                return Err(Error::shape(
                    "initial",
                    format!("[{}, {}, {n}]", problem.batch, problem.len),
                    want,
                    h.len(),
                ));
            }
            finite("initial", h)?;
        }
        Ok(())
    }
}

/// What the solver does after a residual check (see [`Watch`]).
pub(crate) enum Verdict {
    /// The residual met the tolerance.
    Converged,
    /// Iterate again.
    Continue,
    /// Divergence detected, with the reason.
    Diverged(String),
}

/// Convergence bookkeeping of one solve, shared by the CPU solver and the
/// kernel-driven one: records every residual in the report and applies the
/// stopping and divergence rules of [`NewtonOptions`].
pub(crate) struct Watch {
    /// Consecutive iterations whose residual grew.
    growth: usize,
    /// The smallest finite residual so far.
    best: Option<f64>,
}

impl Watch {
    pub(crate) fn new() -> Self {
        Self {
            growth: 0,
            best: None,
        }
    }

    /// The smallest finite residual seen (its iterate is the caller's).
    pub(crate) fn best(&self) -> Option<f64> {
        self.best
    }

    /// Records one evaluate-and-check pass over `T` steps (residual, max|h|)
    /// in `report` (residual history, tolerance, depth of the pass) and says
    /// what to do next; `improved` is whether the current iterate is the
    /// best so far (the caller keeps a copy of it).
    pub(crate) fn observe<T>(
        &mut self,
        report: &mut SolveReport,
        residual: f64,
        hmax: f64,
        options: &NewtonOptions<'_, T>,
    ) -> (Verdict, bool) {
        report.depth += parallel_steps(report.shape.1);
        report.residuals.push(residual);
        let tol = options.atol + options.rtol * hmax;
        report.tolerance = tol;
        if residual <= tol {
            report.converged = true;
            report.stop = StopReason::Tolerance;
            return (Verdict::Converged, false);
        }
        let finite = residual.is_finite();
        let improved = finite && self.best.map_or(true, |r| residual < r);
        if improved {
            self.best = Some(residual);
        }
        let k = report.residuals.len();
        if k >= 2 && residual > report.residuals[k - 2] {
            self.growth += 1;
        } else {
            self.growth = 0;
        }
        let verdict = if !finite {
            Verdict::Diverged("the residual is not finite".to_string())
        } else if options.growth_patience.is_some_and(|p| self.growth >= p) {
            Verdict::Diverged(format!(
                "the residual grew for {} iterations in a row",
                self.growth
            ))
        } else {
            Verdict::Continue
        };
        (verdict, improved)
    }
}

/// Parallel steps of one evaluate-and-check pass over `T` steps, counted in
/// the reported depth: 1 for evaluating the cell at every step at once,
/// plus `⌈log2 T⌉` for the max-reduction of the residual over time.
pub fn parallel_steps(len: usize) -> u64 {
    1 + u64::from(len.max(1).next_power_of_two().trailing_zeros())
}
