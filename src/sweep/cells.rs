//! Nonlinear rows of the sweep: each cell solved by Newton (iterations and
//! measured depth versus `T`) next to its sequential loop (depth `T`).
//!
//! Cells get fixed random weights in the contractive regime (`DiagGru`,
//! `DiagLstm`, `Elman`) and the steep parity machine as the hard case
//! ([`crate::newton::Parity`]), whose Newton iteration count grows with `T`.
//! Under `--backend cuda|emu` a cell runs on the Newton kernels when they
//! implement its mode, otherwise on the CPU solver (each row names its
//! backend).

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::invalid;
use super::report::{Row, RowKind};
use super::{timing, Device, Result, Runner, SweepError, TIMED_HOST_CALL};
use crate::backend::launch::KernelRunner;
use crate::dtype::DType;
use crate::newton::{
    solve, solve_kernels, Cell, DiagGru, DiagLstm, Elman, GpuCell, Mode, NewtonOptions,
    NonlinearProblem, Parity, Solution,
};
use crate::scan::PlanRequest;

/// A nonlinear cell of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    /// [`DiagGru`], 16 units (default), contractive weights `|a| < 0.5`.
    DiagGru,
    /// [`DiagLstm`], 8 units (state 16), contractive weights.
    DiagLstm,
    /// [`Elman`], 16 units, `W` with spectral radius about 0.5.
    Elman,
    /// [`Parity`], 4 units, `β = 20`, random input bits: the hard case.
    Parity,
}

impl CellKind {
    /// Every cell, in report order.
    pub const ALL: [CellKind; 4] = [
        CellKind::DiagGru,
        CellKind::DiagLstm,
        CellKind::Elman,
        CellKind::Parity,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::DiagGru => "diag-gru",
            CellKind::DiagLstm => "diag-lstm",
            CellKind::Elman => "elman",
            CellKind::Parity => "parity",
        }
    }

    /// Default units of the cell (the kernels' `n`).
    pub fn default_units(self) -> usize {
        match self {
            CellKind::DiagGru | CellKind::Elman => 16,
            CellKind::DiagLstm => 8,
            CellKind::Parity => 4,
        }
    }

    /// Estimated peak bytes of one case of `units` units, `batch`
    /// sequences of `len` steps (f32): the weights, the inputs
    /// `[B,T,input]`, and the Newton solver's buffers, the transitions
    /// `[B,T,n·k]` and about five `[B,T,n]` (offsets, iterate, scan output,
    /// best iterate, result). `Err` names the factors of a product that
    /// overflows usize.
    pub fn case_bytes(self, units: usize, batch: usize, len: usize) -> crate::Result<usize> {
        use crate::mem::checked_product as prod;
        let u = units;
        let (n, din, k, params) = match self {
            CellKind::DiagGru => (u, prod("x", &[("3", 3), ("units", u)])?, 1, 3 * u),
            CellKind::DiagLstm => (
                prod("states", &[("2", 2), ("units", u)])?,
                prod("x", &[("3", 3), ("units", u)])?,
                2,
                3 * u,
            ),
            CellKind::Elman => (u, u, u, prod("w", &[("units", u), ("units", u)])?),
            CellKind::Parity => (u, u, 1, 0),
        };
        let steps = prod("x", &[("batch", batch), ("len", len)])?;
        let per_step = prod("a", &[("state", n), ("block", k)])?
            .checked_add(din)
            .and_then(|s| s.checked_add(n.checked_mul(5)?))
            .ok_or(crate::Error::Overflow {
                arg: "states",
                factors: vec![("state", n), ("block + 5", k.saturating_add(5))],
            })?;
        let scalars = prod(
            "states",
            &[
                ("batch", batch),
                ("len", len),
                ("scalars per step", per_step),
            ],
        )?;
        let total = scalars.checked_add(params).ok_or(crate::Error::Overflow {
            arg: "weights",
            factors: vec![("steps", steps), ("scalars per step", per_step)],
        })?;
        prod("bytes", &[("scalars", total), ("bytes per f32", 4)])
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CellKind {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        CellKind::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .or(match s.as_str() {
                "gru" => Some(CellKind::DiagGru),
                "lstm" => Some(CellKind::DiagLstm),
                "hard" => Some(CellKind::Parity),
                _ => None,
            })
            .ok_or_else(|| {
                invalid(
                    "cells",
                    format!("one of diag-gru, diag-lstm, elman, parity, none; got `{s}`"),
                )
            })
    }
}

/// Parses `diag-gru,parity`; `all` is every cell, `none` no cell.
pub fn parse_cells(s: &str) -> Result<Vec<CellKind>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "all" => Ok(CellKind::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        _ => super::config::parse_list("cells", s, CellKind::from_str),
    }
}

/// One cell with its weights.
enum AnyCell {
    Gru(DiagGru<f32>),
    Lstm(DiagLstm<f32>),
    Elman(Elman<f32>),
    Parity(Parity<f32>),
}

impl AnyCell {
    fn new(kind: CellKind, units: Option<usize>, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = units.unwrap_or(kind.default_units());
        let mut w =
            |len: usize, s: f32| -> Vec<f32> { (0..len).map(|_| rng.gen_range(-s..s)).collect() };
        Ok(match kind {
            CellKind::DiagGru => AnyCell::Gru(DiagGru::new(w(n, 0.5), w(n, 0.5), w(n, 0.5))?),
            CellKind::DiagLstm => AnyCell::Lstm(DiagLstm::new(w(n, 0.5), w(n, 0.5), w(n, 0.5))?),
            CellKind::Elman => {
                // Entries ±s/√n give a spectral radius of about s·/√3.
                AnyCell::Elman(Elman::new(n, w(n * n, 0.9 / (n as f32).sqrt()))?)
            }
            CellKind::Parity => AnyCell::Parity(Parity::new(n, 20.0)?),
        })
    }

    fn cell(&self) -> &dyn Cell<f32> {
        match self {
            AnyCell::Gru(c) => c,
            AnyCell::Lstm(c) => c,
            AnyCell::Elman(c) => c,
            AnyCell::Parity(c) => c,
        }
    }

    /// The kernels' cell (the parity machine is CPU-only).
    fn gpu(&self) -> Option<GpuCell<'_>> {
        match self {
            AnyCell::Gru(c) => Some(GpuCell::DiagGru(c)),
            AnyCell::Lstm(c) => Some(GpuCell::DiagLstm(c)),
            AnyCell::Elman(c) => Some(GpuCell::Elman(c)),
            AnyCell::Parity(_) => None,
        }
    }

    /// Random inputs: uniform pre-activations, or bits (1 with
    /// probability 1/3) for the parity machine.
    fn inputs(&self, batch: usize, len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let count = batch * len * self.cell().input_dim();
        match self {
            AnyCell::Parity(_) => (0..count)
                .map(|_| if rng.gen_range(0..3) == 0 { 1.0 } else { 0.0 })
                .collect(),
            _ => (0..count).map(|_| rng.gen_range(-1.0f32..1.0)).collect(),
        }
    }
}

impl Runner<'_, '_> {
    /// Number of progress steps of the nonlinear rows.
    pub(super) fn cell_steps(config: &super::SweepConfig) -> usize {
        config.cells.len() * config.lengths.len() * config.plans.len()
    }

    /// Every `T` and plan of one cell: `sequential` is the cell's
    /// sequential loop, every other plan a Newton solve whose scans use it.
    pub(super) fn run_cell(&mut self, kind: CellKind) -> Result<()> {
        let cfg = self.config;
        let units = cfg.cell_units.unwrap_or(kind.default_units());
        // Built on the first length that fits the memory cap: the weights
        // alone can be huge (`--cell-units`).
        let mut cell: Option<AnyCell> = None;
        let batch = cfg.cell_batch;
        let cap = match kind {
            CellKind::Parity => cfg.hard_max_t,
            _ => cfg.newton_max_t,
        };
        for &len in &cfg.lengths {
            let label = kind.name().to_string();
            if len > cap {
                self.skip(
                    &label,
                    DType::F32,
                    len,
                    "*".into(),
                    format!("T above the nonlinear cap {cap} (--newton-max-t / --hard-max-t)"),
                    cfg.plans.len(),
                );
                continue;
            }
            let too_big = match kind.case_bytes(units, batch, len) {
                Ok(need) if need <= cfg.max_case_bytes => None,
                Ok(need) => Some(format!(
                    "needs ~{} MiB > cap {} MiB",
                    need >> 20,
                    cfg.max_case_bytes >> 20
                )),
                Err(e) => Some(format!("size out of range: {e}")),
            };
            if let Some(reason) = too_big {
                self.skip(&label, DType::F32, len, "*".into(), reason, cfg.plans.len());
                continue;
            }
            let cell = match &mut cell {
                Some(c) => &*c,
                None => cell.insert(AnyCell::new(
                    kind,
                    Some(units),
                    super::mix_seed(cfg.seed, 0xce11 ^ kind as u64),
                )?),
            };
            let x = cell.inputs(batch, len, super::mix_seed(cfg.seed, len as u64));
            let problem = NonlinearProblem {
                x: &x,
                h0: None,
                batch,
                len,
            };
            for &request in &cfg.plans {
                let mode = if request == PlanRequest::Sequential {
                    Mode::Sequential
                } else {
                    Mode::Newton
                };
                let options = NewtonOptions {
                    mode,
                    // The exact-prefix bound: never more than T iterations.
                    max_iters: len,
                    growth_patience: None,
                    plan: request,
                    ..Default::default()
                };
                self.progress
                    .set_message(format!("{label} T={len} {request}"));
                let row = match self.cell_case(cell, &problem, &options) {
                    // A plan only some engines have (look-back) is skipped, not fatal.
                    Err(SweepError::Core(crate::Error::Plan(why)))
                        if request == PlanRequest::LookBack =>
                    {
                        self.skip(&label, DType::F32, len, request.to_string(), why, 1);
                        continue;
                    }
                    r => r?,
                };
                self.progress.inc(1);
                (self.on_event)(super::Event::Row(&row));
                self.rows.push(row);
            }
        }
        Ok(())
    }

    fn cell_case(
        &mut self,
        cell: &AnyCell,
        problem: &NonlinearProblem<'_, f32>,
        options: &NewtonOptions<'_, f32>,
    ) -> Result<Row> {
        let gpu = cell.gpu();
        let (backend, timed, (timing, sol)) = match (self.device, gpu) {
            (Some(Device::Cuda(r)), Some(g)) => (
                r.backend_name(),
                "solve",
                time_solve(&self.config.timing, || {
                    solve_kernels(r, g, problem, options)
                })?,
            ),
            (Some(Device::Emu(r)), Some(g)) => (
                r.backend_name(),
                "solve",
                time_solve(&self.config.timing, || {
                    solve_kernels(r, g, problem, options)
                })?,
            ),
            _ => {
                let cpu = self.cpu;
                (
                    "cpu",
                    TIMED_HOST_CALL,
                    time_solve(&self.config.timing, || {
                        solve(cpu, cell.cell(), problem, options)
                    })?,
                )
            }
        };
        let rep = &sol.report;
        let c = cell.cell();
        let (len, n) = (problem.len, c.state_dim());
        let elements = problem.batch * len * n;
        let bytes = 4 * problem.batch * len * (c.input_dim() + n);
        let secs = timing.median_s.max(1e-12);
        let gb_per_s = bytes as f64 / secs / 1e9;
        if !rep.converged {
            return Err(SweepError::Output(format!(
                "{} T={len} {}: Newton did not converge in {} iterations (residual {:.3e})",
                c.name(),
                options.plan,
                rep.iterations,
                rep.residuals.last().copied().unwrap_or(f64::NAN)
            )));
        }
        let plan = match options.mode {
            Mode::Sequential => "sequential".to_string(),
            m => format!("{m} {}", options.plan),
        };
        Ok(Row {
            kind: RowKind::Sweep,
            backend: backend.to_string(),
            timed: timed.to_string(),
            family: "newton".to_string(),
            label: c.name().to_string(),
            dtype: DType::F32,
            shape: format!("[B,T,n]=[{},T,{n}]", problem.batch),
            batch: problem.batch,
            lanes: n,
            len,
            plan,
            chunk: 0,
            chunks: 0,
            depth: rep.depth,
            work: 0,
            depth_formula: 0,
            work_formula: 0,
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            elements,
            melem_per_s: elements as f64 / secs / 1e6,
            bytes_moved: bytes,
            gb_per_s,
            pct_copy_bw: 100.0 * gb_per_s / self.copy_gbs,
            iterations: (options.mode != Mode::Sequential).then_some(rep.iterations),
            flops: 0,
            pct_fma_peak: 0.0,
            backward_over_forward: None,
        })
    }
}

/// A first run slower than this is the measurement (one rep): the hard
/// cell's Newton solves take seconds at long `T`.
const SLOW_SOLVE_S: f64 = 1.0;

/// Times `solve` under `policy`; returns the timing and the last solution.
fn time_solve(
    policy: &super::TimingPolicy,
    mut solve: impl FnMut() -> crate::Result<Solution<f32>>,
) -> Result<(timing::Timing, Solution<f32>)> {
    let start = std::time::Instant::now();
    let first = solve()?;
    let s = start.elapsed().as_secs_f64();
    if s > SLOW_SOLVE_S {
        let t = timing::Timing {
            reps: 1,
            median_s: s,
            min_s: s,
        };
        return Ok((t, first));
    }
    let policy = super::TimingPolicy {
        // The first run was the warm-up.
        warmup: policy.warmup.saturating_sub(1),
        ..*policy
    };
    let mut last = None;
    let t = timing::time_runs(&policy, || {
        last = Some(solve()?);
        Ok::<(), crate::Error>(())
    })?;
    let sol = last.ok_or_else(|| SweepError::Output("the timed solve never ran".into()))?;
    Ok((t, sol))
}
