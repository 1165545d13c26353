//! The Newton rows of `parascan bench`: `DiagGru` solved by Newton on the
//! kernels ([`solve_kernels`]) against the cell's sequential kernel, next
//! to one Diagonal scan of the same `[B,T,n]` shape per plan, so that the
//! cost of an iteration can be quoted in scans.
//!
//! A solve's time is its report's device-side total
//! ([`SolveReport::total_s`](crate::newton::SolveReport::total_s): the
//! cell and Jacobian evaluations, the scans and the residual checks, each
//! waited for; the upload of `x`, the download of the states and the depth
//! measurement are outside it). One warm-up solve, then as many solves as
//! fit [`BenchConfig::newton_budget`](super::BenchConfig) (at least one);
//! a first solve longer than the scan policy's `slow` is the measurement.
//!
//! `plan B/elem` of a Newton row is what one iteration's scan moves as
//! its planner counts it ([`plan_diagonal`]'s `plan_bytes` for the
//! `[B,T,n]` f32 plan, over `B·T·n`: the same count as the reference scan
//! row of that plan; a fused iteration reads `x` and `h` in place of `a`
//! and `b`, which the count does not model); the sequential kernel's row
//! counts its one pass (`x` read, `h` written: 16 B per element).
//!
//! After each Newton plan, a `diag-gru backward` row times
//! [`backward_kernels`] at the solution (wall clock: the Jacobians and the
//! VJPs on the host, the reverse Diagonal scan on the runner, uploads and
//! downloads included), with the reverse scan's measured depth and its
//! time over the solve's.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::cases::{self, BenchFamily, NewtonCase};
use super::timing::Timing;
use super::{fnv1a, upload, Bench, BenchRow, CaseInfo};
use crate::backend::launch::KernelRunner;
use crate::dtype::DType;
use crate::family::{Layout, LinearProblem};
use crate::kernels::diagonal::DiagonalWorkspace;
use crate::kernels::diagonal::{plan_diagonal, DiagShape};
use crate::newton::{
    backward_kernels, solve_kernels, DiagGru, GpuCell, Mode, NewtonOptions, NonlinearProblem,
    Solution,
};
use crate::scan::PlanRequest;
use crate::sweep::cases::{mix_seed, uniform, Inputs};
use crate::sweep::config::Shape;
use crate::sweep::{Result, SweepError};

/// Label of the reference scan rows.
const SCAN_CASE: &str = "diagonal scan";

impl<R: KernelRunner> Bench<'_, '_, R> {
    /// Every plan of one Newton case (see the module docs).
    pub(super) fn newton_case(&mut self, case: NewtonCase) {
        let name = format!(
            "diag-gru [B,T,n]=[{},{},{}]",
            case.batch, case.len, case.units
        );
        if self.deadline_skip(&name) {
            return;
        }
        if let Err(e) = self.newton_case_in(case, &name) {
            self.skip(&name, "*", e.to_string(), true);
        }
    }

    fn newton_case_in(&mut self, case: NewtonCase, name: &str) -> Result<()> {
        let requests = cases::newton_plans(case.len);
        let seed = mix_seed(self.config.seed, fnv1a(name));
        let (batch, len, n) = (case.batch, case.len, case.units);

        // One Diagonal scan of the same shape per Newton plan.
        (self.on_event)(super::Event::Case(name));
        let scans: Vec<PlanRequest> = requests
            .iter()
            .copied()
            .filter(|&r| r != PlanRequest::Sequential)
            .collect();
        let shape = Shape::Diagonal {
            batch,
            dim: n,
            layout: Layout::Btd,
        };
        let scan_ms = {
            let inputs = Inputs::<f32>::generate(shape, len, false, mix_seed(seed, 1))?;
            let bytes = inputs.problem().bytes_moved();
            let resident = upload(&inputs.view(), self.runner)?;
            drop(inputs);
            let info = CaseInfo {
                family: BenchFamily::Newton,
                case: SCAN_CASE.into(),
                shape: super::shape_text(&shape, len),
                dtype: DType::F32,
                batch,
                lanes: n,
                len,
                bytes,
            };
            self.scan_plans(&resident, &info, &scans)
        };

        let cell = diag_gru(n, mix_seed(seed, 2))?;
        let x: Vec<f32> = uniform(batch * len * 3 * n, -1.0, 1.0, seed, 3);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch,
            len,
        };
        let info = CaseInfo {
            family: BenchFamily::Newton,
            case: "diag-gru".into(),
            shape: format!("[B,T,n]=[{batch},{len},{n}]"),
            dtype: DType::F32,
            batch,
            lanes: n,
            len,
            // One sequential pass: read x [B,T,3n], write h [B,T,n].
            bytes: 4 * batch * len * 4 * n,
        };
        let mut sequential_ms = None;
        for request in requests {
            let plan = request.to_string();
            let label = format!("{} {}", info.case, info.shape);
            if self.deadline_skip(&format!("{label} {plan}")) {
                continue;
            }
            match self.newton_plan(&cell, &problem, &info, request) {
                Ok((mut row, sol)) => {
                    if request == PlanRequest::Sequential {
                        sequential_ms = Some(row.median_ms);
                    }
                    row.speedup_vs_seq = sequential_ms.map(|s| s / row.median_ms.max(1e-12));
                    row.iter_over_scan = scan_ms
                        .iter()
                        .find(|(r, _)| *r == request)
                        .zip(row.ms_per_iter)
                        .map(|((_, scan), per)| per / scan.max(1e-12));
                    let solve_ms = row.median_ms;
                    self.push_row(row);
                    if request != PlanRequest::Sequential {
                        match self.newton_backward(&cell, &problem, &info, request, &sol, solve_ms)
                        {
                            Ok(row) => self.push_row(row),
                            Err(e) => {
                                self.skip(&format!("{label} backward"), &plan, e.to_string(), true)
                            }
                        }
                    }
                }
                Err(e) => self.skip(&label, &plan, e.to_string(), true),
            }
        }
        Ok(())
    }

    /// One plan: the sequential kernel, or Newton with that scan plan.
    fn newton_plan(
        &mut self,
        cell: &DiagGru<f32>,
        problem: &NonlinearProblem<'_, f32>,
        info: &CaseInfo,
        request: PlanRequest,
    ) -> Result<(BenchRow, Solution<f32>)> {
        let sequential = request == PlanRequest::Sequential;
        let options = NewtonOptions {
            mode: if sequential {
                Mode::Sequential
            } else {
                Mode::Newton
            },
            // The exact-prefix bound: never more than T iterations.
            max_iters: problem.len,
            growth_patience: None,
            plan: request,
            ..Default::default()
        };
        let runner = self.runner;
        let (timing, sol) =
            self.time_solves(|| solve_kernels(runner, GpuCell::DiagGru(cell), problem, &options))?;
        let rep = &sol.report;
        if !rep.converged {
            return Err(SweepError::Output(format!(
                "Newton did not converge in {} iterations (residual {:.3e})",
                rep.iterations,
                rep.residuals.last().copied().unwrap_or(f64::NAN)
            )));
        }
        let finite = sol.states.par_iter().all(|v| v.is_finite());
        let elements = (info.batch * info.len * info.lanes).max(1);
        let (kind, chunk, chunks, plan_bytes) = if sequential {
            // One pass of the cell's sequential kernel: `x` read, `h` written.
            ("sequential kernel".to_string(), info.len, 1, info.bytes)
        } else {
            let plan = plan_diagonal(
                DiagShape::new(info.batch, info.len, info.lanes),
                Layout::Btd,
                DType::F32,
                request,
                runner.sm_count(),
            )?
            .summary();
            let bytes = usize::try_from(plan.plan_bytes).unwrap_or(usize::MAX);
            (
                format!("newton [{}]", plan.kind),
                plan.chunk,
                plan.chunks,
                bytes,
            )
        };
        let mut row = self.row(
            info,
            request.to_string(),
            kind,
            chunk,
            chunks,
            rep.depth,
            true,
            timing,
            finite,
        );
        if !sequential {
            row.iterations = Some(rep.iterations);
            row.ms_per_iter = Some(row.median_ms / rep.iterations.max(1) as f64);
        }
        row.plan_bytes_per_elem = Some(plan_bytes as f64 / elements as f64);
        Ok((row, sol))
    }

    /// The backward of the solve `sol` under the same plan (module docs);
    /// `solve_ms` is the solve row's median. `∂L/∂h_t = 1` for every state.
    fn newton_backward(
        &mut self,
        cell: &DiagGru<f32>,
        problem: &NonlinearProblem<'_, f32>,
        info: &CaseInfo,
        request: PlanRequest,
        sol: &Solution<f32>,
        solve_ms: f64,
    ) -> Result<BenchRow> {
        let runner = self.runner;
        let d_states = vec![1.0f32; sol.states.len()];
        let mut ws = DiagonalWorkspace::new();
        let mut once = || {
            let start = Instant::now();
            let g = backward_kernels(
                runner, &mut ws, cell, problem, sol, &d_states, None, request,
            )?;
            Ok::<_, crate::Error>((start.elapsed().as_secs_f64(), g))
        };
        let (first_s, mut g) = once()?;
        let mut samples = vec![first_s];
        if first_s < self.config.reps.slow.as_secs_f64() {
            let fit = self.config.newton_budget.as_secs_f64() / first_s.max(1e-9);
            let reps = (fit.min(1e9) as usize).clamp(1, self.config.reps.max_reps.max(1));
            samples.clear();
            for _ in 0..reps {
                let (s, last) = once()?;
                samples.push(s);
                g = last;
            }
        }
        let timing = Timing::of(samples)?;
        let finite = g.x.iter().chain(&g.params).all(|v| v.is_finite());
        let backward = CaseInfo {
            case: "diag-gru backward".into(),
            shape: info.shape.clone(),
            ..*info
        };
        let mut row = self.row(
            &backward,
            request.to_string(),
            format!("reverse [{}]", g.plan.kind.label()),
            g.plan.chunk,
            g.plan.chunks,
            g.depth,
            true,
            timing,
            finite,
        );
        let elements = (info.batch * info.len * info.lanes).max(1);
        row.plan_bytes_per_elem = Some(g.plan.summary().plan_bytes as f64 / elements as f64);
        row.backward_over_forward = Some(row.median_ms / solve_ms.max(1e-12));
        Ok(row)
    }

    /// Times `solve` by its reports' totals (module docs); returns the
    /// timing and the last solution.
    fn time_solves(
        &self,
        mut solve: impl FnMut() -> crate::Result<Solution<f32>>,
    ) -> Result<(Timing, Solution<f32>)> {
        let start = Instant::now();
        let first = solve()?;
        let wall = start.elapsed().as_secs_f64();
        let first_s = first.report.total_s();
        if first_s >= self.config.reps.slow.as_secs_f64() {
            return Ok((Timing::of(vec![first_s])?, first));
        }
        let fit = self.config.newton_budget.as_secs_f64() / wall.max(1e-9);
        let reps = (fit.min(1e9) as usize).clamp(1, self.config.reps.max_reps.max(1));
        let mut samples = Vec::with_capacity(reps);
        let mut last = first;
        for _ in 0..reps {
            last = solve()?;
            samples.push(last.report.total_s());
        }
        Ok((Timing::of(samples)?, last))
    }
}

/// A contractive `DiagGru` (recurrent weights uniform in `(−0.5, 0.5)`), as
/// the sweep's nonlinear rows use.
fn diag_gru(n: usize, seed: u64) -> Result<DiagGru<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = || -> Vec<f32> { (0..n).map(|_| rng.gen_range(-0.5f32..0.5)).collect() };
    Ok(DiagGru::new(w(), w(), w())?)
}
