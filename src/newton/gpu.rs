//! The Newton solver on the kernels (`kernels/newton.cu` plus the scan
//! kernels), on any [`KernelRunner`]: the CUDA backend on a GPU, the SIMT
//! emulator everywhere else.
//!
//! The whole iteration stays on the device: the assemble kernel evaluates
//! the cell, writes the scan inputs and reduces the residual into two
//! device words; the scan writes the next guess. Per iteration an
//! adaptive solve reads back those two words (8 bytes) and nothing else; a
//! fixed-iteration solve ([`Iterations::Fixed`]) reads nothing back. f32
//! only.
//!
//! [`solve_kernels`] is the host entry point (uploads, a fresh workspace,
//! depth measured); [`solve_device`](super::device::solve_device) runs the
//! same loop on the caller's device memory with a reused
//! [`NewtonWorkspace`].

use std::time::Instant;

use super::cell::{Cell, DiagGru, DiagLstm, Elman, Structure};
use super::report::{Diverged, Mode, SolveReport, StopReason};
use super::solver::Solution;
use super::{
    parallel_steps, InitialGuess, NewtonOptions, NonlinearProblem, Policy, Verdict, Watch,
};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::family::Layout;
use crate::kernels::block_diagonal::{
    plan_block_diagonal, BlockDiagonalIo, BlockDiagonalWorkspace, BlockPlan, BlockShape,
};
use crate::kernels::diagonal::{
    lookback_parts, plan_diagonal, DiagShape, DiagonalIo, DiagonalWorkspace, GpuPlan, GpuPlanKind,
    LookBackParts,
};
use crate::kernels::{launch_scan, measure_depth as measure_scan_depth, Ends};

/// A built-in cell the kernels implement (f32 parameters).
#[derive(Clone, Copy, Debug)]
pub enum GpuCell<'a> {
    /// [`DiagGru`]: diagonal Jacobian.
    DiagGru(&'a DiagGru<f32>),
    /// [`DiagLstm`]: 2×2-block Jacobian.
    DiagLstm(&'a DiagLstm<f32>),
    /// [`Elman`]: dense Jacobian.
    Elman(&'a Elman<f32>),
}

impl<'a> From<&'a DiagGru<f32>> for GpuCell<'a> {
    fn from(c: &'a DiagGru<f32>) -> Self {
        GpuCell::DiagGru(c)
    }
}
impl<'a> From<&'a DiagLstm<f32>> for GpuCell<'a> {
    fn from(c: &'a DiagLstm<f32>) -> Self {
        GpuCell::DiagLstm(c)
    }
}
impl<'a> From<&'a Elman<f32>> for GpuCell<'a> {
    fn from(c: &'a Elman<f32>) -> Self {
        GpuCell::Elman(c)
    }
}

impl GpuCell<'_> {
    /// The CPU twin (same formulas), for validation and shapes.
    pub fn as_cell(&self) -> &dyn Cell<f32> {
        match *self {
            GpuCell::DiagGru(c) => c,
            GpuCell::DiagLstm(c) => c,
            GpuCell::Elman(c) => c,
        }
    }

    fn prefix(&self) -> &'static str {
        match self {
            GpuCell::DiagGru(_) => "newton_gru",
            GpuCell::DiagLstm(_) => "newton_lstm",
            GpuCell::Elman(_) => "newton_elman",
        }
    }

    /// Units the kernels' `n` argument counts (`n` of `[B,T,n]` threads).
    fn units(&self) -> usize {
        match *self {
            GpuCell::DiagGru(c) => c.a_z().len(),
            GpuCell::DiagLstm(c) => c.a_f().len(),
            GpuCell::Elman(c) => c.n(),
        }
    }

    pub(crate) fn params(&self) -> Vec<f32> {
        match *self {
            GpuCell::DiagGru(c) => [c.a_z(), c.a_r(), c.a_c()].concat(),
            GpuCell::DiagLstm(c) => [c.a_f(), c.a_o(), c.a_g()].concat(),
            GpuCell::Elman(c) => c.w().to_vec(),
        }
    }
}

/// Threads per block of the element-wise Newton kernels.
const BLOCK: u32 = 256;

fn grid_for<R: KernelRunner>(runner: &R, items: usize) -> u32 {
    // Enough blocks to fill the device several times; grid-stride loops do the rest.
    let cap = (runner.sm_count().max(1) * 32) as u64;
    (items as u64).div_ceil(u64::from(BLOCK)).clamp(1, cap) as u32
}

/// Runs the sequential kernel of `cell` (depth `T`): `[B, T, n]` states.
pub fn sequential_kernels<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    problem: &NonlinearProblem<'_, f32>,
) -> Result<Vec<f32>> {
    problem.validate(cell.as_cell())?;
    let n_state = cell.as_cell().state_dim();
    let x = runner.upload(problem.x)?;
    let params = runner.upload(&cell.params())?;
    let h0 = problem.h0.map(|h| runner.upload(h)).transpose()?;
    let h = runner.alloc(problem.batch * problem.len * n_state * 4)?;
    runner.fill(&h, 0xFF)?;
    let job = Job {
        cell,
        batch: problem.batch,
        len: problem.len,
        x: x.ptr(),
        params: params.ptr(),
        h0: h0.as_ref().map_or(0, DeviceBuffer::ptr),
        h: h.ptr(),
        h_t: 0,
    };
    launch_sequential(runner, &job, job.h)?;
    runner.synchronize()?;
    let mut out = crate::mem::try_vec("states", problem.batch * problem.len * n_state, 0f32)?;
    runner.download(&h, &mut out)?;
    Ok(out)
}

/// The sequential kernel of `job.cell` on `job`'s inputs, writing all
/// states into `into` (`[B,T,n]` f32).
fn launch_sequential<R: KernelRunner>(runner: &R, job: &Job<'_>, into: u64) -> Result<()> {
    let (batch, len, units) = (job.batch, job.len, job.cell.units());
    let cfg = match job.cell {
        GpuCell::Elman(_) => {
            let threads = units.div_ceil(32) * 32;
            if threads > 1024 {
                return Err(Error::size(
                    "n",
                    units,
                    "n ≤ 1024 for the sequential Elman kernel (one block per sequence)",
                ));
            }
            let grid = batch.min(65_535) as u32;
            LaunchConfig::linear(grid, threads as u32).with_shared_bytes((2 * units * 4) as u32)
        }
        _ => LaunchConfig::linear(grid_for(runner, batch * units), BLOCK),
    };
    // SAFETY: `Job`'s contract: `x`, `h0` (or 0), `params` and `into` hold
    // the `[B,T,·]` shapes and the cell's parameter block, as
    // `kernels/newton.cu`'s sequential kernel reads and writes them.
    unsafe {
        runner.launch(
            &format!("{}_sequential", job.cell.prefix()),
            cfg,
            &[
                KernelArg::Ptr(job.x),
                KernelArg::Ptr(job.h0),
                KernelArg::Ptr(job.params),
                KernelArg::Ptr(into),
                KernelArg::U64(batch as u64),
                KernelArg::U64(len as u64),
                KernelArg::U64(units as u64),
            ],
        )
    }
}

/// How many iterations a kernel solve runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Iterations {
    /// Iterate until the residual meets the tolerance, the iteration cap
    /// or divergence, as [`NewtonOptions`] says. Every iteration reads two
    /// device words back (residual and `max|h|`, 8 bytes), which waits for
    /// the device.
    #[default]
    Adaptive,
    /// Exactly `k` linear solves (ParaRNN's fixed small count), from the
    /// initial guess, and never a read-back: the whole solve is queued on
    /// the runner without waiting for it. What the caller gives up: the
    /// convergence verdict (the report has no residuals and
    /// `converged = false`, stop [`StopReason::Fixed`]), divergence
    /// detection and so the sequential fallback, and the tolerance and
    /// `max_iters` of [`NewtonOptions`] (ignored). To check the answer
    /// afterwards, [`residual_device`](super::device::residual_device)
    /// evaluates it once (one 8-byte read). Undamped Newton makes the
    /// first `k` states of every sequence exact, so `k ≥ T` is always exact.
    Fixed(usize),
}

/// Device scratch of the kernel Newton solver, reused across solves: the
/// scan offsets `b`, the transitions `a` (when the iteration scans one
/// that the cell kernel does not fuse), a best-iterate copy, the relaxation
/// buffer of damped mode, two residual words, and the scans' own
/// workspaces. Every buffer grows to the largest shape seen and never
/// shrinks, so a warm workspace makes a solve allocate nothing.
///
/// One workspace per stream: a solve overwrites its buffers. A workspace
/// used with another runner kind reallocates.
#[derive(Debug, Default)]
pub struct NewtonWorkspace {
    /// `[B,T,n]` f32: scan offsets (and a rotation slot of the fused path).
    b: Option<DeviceBuffer>,
    /// `[B,T,n]` f32: the best iterate so far (and a rotation slot).
    best: Option<DeviceBuffer>,
    /// `[B,T,·]` f32: transitions of the linear recurrence.
    a: Option<DeviceBuffer>,
    /// `[B,T,n]` f32: the scan's output before relaxation (damped mode).
    h_new: Option<DeviceBuffer>,
    /// Two u32 words: residual and `max|h|` (f32 bits), exactly 8 bytes.
    stats: Option<DeviceBuffer>,
    diag: DiagonalWorkspace,
    block: BlockDiagonalWorkspace,
    allocations: usize,
}

/// Granule the workspace's state-sized buffers are rounded up to (bytes),
/// so that slightly different shapes reuse them.
const GRANULE: usize = 1 << 16;

impl NewtonWorkspace {
    /// An empty workspace (allocates on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Device allocations made so far, including the scans' workspaces
    /// (constant across calls once warm).
    pub fn allocations(&self) -> usize {
        self.allocations + self.diag.allocations() + self.block.allocations()
    }

    /// Bytes held by the Newton buffers (not counting the scans' scratch).
    pub fn bytes(&self) -> usize {
        [&self.b, &self.best, &self.a, &self.h_new, &self.stats]
            .iter()
            .filter_map(|b| b.as_ref().map(DeviceBuffer::len_bytes))
            .sum()
    }

    /// Frees every buffer.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Grows the buffers to `states` f32 values (`b`, `best`), `a_len`
    /// transitions and, when `relax`, a relaxation buffer.
    fn reserve<R: KernelRunner>(
        &mut self,
        runner: &R,
        states: usize,
        a_len: usize,
        relax: bool,
    ) -> Result<()> {
        let bytes = |what: &'static str, n: usize| crate::mem::bytes_of::<f32>(what, n);
        let s = bytes("states", states)?;
        let allocs = &mut self.allocations;
        grow_slot(runner, &mut self.b, s, GRANULE, allocs)?;
        grow_slot(runner, &mut self.best, s, GRANULE, allocs)?;
        grow_slot(runner, &mut self.a, bytes("a", a_len)?, GRANULE, allocs)?;
        if relax {
            grow_slot(runner, &mut self.h_new, s, GRANULE, allocs)?;
        }
        // Exactly 8 bytes: a download reads the whole buffer.
        grow_slot(runner, &mut self.stats, 8, 8, allocs)?;
        Ok(())
    }

    fn stats(&self) -> Result<&DeviceBuffer> {
        self.stats.as_ref().ok_or_else(missing)
    }

    fn best(&self) -> Result<&DeviceBuffer> {
        self.best.as_ref().ok_or_else(missing)
    }

    fn b(&self) -> Result<&DeviceBuffer> {
        self.b.as_ref().ok_or_else(missing)
    }
}

/// Makes `slot` hold at least `bytes` bytes of `runner`'s memory (rounded
/// up to `granule`), counting a new allocation; a buffer that fits is kept.
fn grow_slot<R: KernelRunner>(
    runner: &R,
    slot: &mut Option<DeviceBuffer>,
    bytes: usize,
    granule: usize,
    allocations: &mut usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let fits = slot
        .as_ref()
        .is_some_and(|buf| buf.backend_name() == runner.backend_name() && buf.len_bytes() >= bytes);
    if !fits {
        // Free the old buffer first (stream-ordered on CUDA).
        *slot = None;
        let size = bytes.checked_next_multiple_of(granule).unwrap_or(bytes);
        *slot = Some(runner.alloc(size)?);
        *allocations += 1;
    }
    Ok(())
}

fn missing() -> Error {
    Error::Plan("internal: a Newton workspace buffer was used before it was reserved".into())
}

fn ptr_of(b: &Option<DeviceBuffer>) -> u64 {
    b.as_ref().map_or(0, DeviceBuffer::ptr)
}

/// One solve's inputs and outputs as device addresses (0: absent).
///
/// Contract (checked by the entry points before building one): every
/// address is f32 memory of the runner, `x` of `[B,T,input_dim]`, `h0` of
/// `[B,n]` (or 0), `params` the cell's parameter block, `h` `[B,T,n]` and
/// `h_t` `[B,n]` (outputs, overlapping nothing else), live until the
/// solve's launches are queued.
pub(crate) struct Job<'c> {
    pub(crate) cell: GpuCell<'c>,
    pub(crate) batch: usize,
    pub(crate) len: usize,
    pub(crate) x: u64,
    pub(crate) params: u64,
    pub(crate) h0: u64,
    pub(crate) h: u64,
    pub(crate) h_t: u64,
}

impl Job<'_> {
    fn states(&self) -> usize {
        self.batch * self.len * self.cell.as_cell().state_dim()
    }
}

/// The scan an iteration runs, planned once per solve.
enum LinearScan {
    /// `A_t = 0`: the next guess is `b` (a copy).
    Copy,
    /// A Diagonal scan over `[B, T, N]`.
    Diagonal(Box<GpuPlan>),
    /// A BlockDiagonal(k) scan (`A: [B, T, N/k, k, k]`).
    Block(Box<BlockPlan>),
}

/// Solves `problem` for a built-in `cell` on `runner`'s kernels, with the
/// same options, stopping rules, divergence policy and report as the CPU
/// [`solve`](super::solve). f32 only. Host memory in and out: uploads the
/// inputs, makes a fresh workspace and measures the scans' depth every
/// call; [`solve_device`](super::device::solve_device) is the entry point
/// on device memory with a reused workspace.
///
/// Full-Jacobian Newton (and damped Newton) for [`DiagLstm`] and [`Elman`]
/// runs the BlockDiagonal scan kernels (2×2 blocks, or one dense block);
/// an Elman size the dense kernels do not support is a typed error before
/// any launch (quasi-Newton and Picard work for every size).
pub fn solve_kernels<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    problem: &NonlinearProblem<'_, f32>,
    options: &NewtonOptions<'_, f32>,
) -> Result<Solution<f32>> {
    let c = cell.as_cell();
    problem.validate(c)?;
    options.validate(c, problem)?;
    let (batch, len, n) = (problem.batch, problem.len, c.state_dim());
    let states = batch * len * n;
    let x = runner.upload(problem.x)?;
    let params = runner.upload(&cell.params())?;
    let h0 = problem.h0.map(|h| runner.upload(h)).transpose()?;
    let h = runner.alloc(states * 4)?;
    let h_t = runner.alloc(batch * n * 4)?;
    let job = Job {
        cell,
        batch,
        len,
        x: x.ptr(),
        params: params.ptr(),
        h0: h0.as_ref().map_or(0, DeviceBuffer::ptr),
        h: h.ptr(),
        h_t: h_t.ptr(),
    };
    let mut ws = NewtonWorkspace::new();
    let report = run(runner, &mut ws, &job, options, Iterations::Adaptive, true)?;
    runner.synchronize()?;
    let mut out = crate::mem::try_vec("states", states, 0f32)?;
    runner.download(&h, &mut out)?;
    let mut last = crate::mem::try_vec("h_t", batch * n, 0f32)?;
    runner.download(&h_t, &mut last)?;
    Ok(Solution {
        states: out,
        h_t: last,
        report,
    })
}

/// The solve itself, on the addresses of `job` (whose contract the caller
/// checked) and the buffers of `ws`. Writes every state into `job.h` and
/// the last one into `job.h_t`. Reads back only the residual words of an
/// [`Iterations::Adaptive`] solve (and the iterate of a divergence error);
/// allocates only where `ws` is too small and, when `measure_depth`, the
/// depth-counting scans' buffers.
pub(crate) fn run<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    job: &Job<'_>,
    options: &NewtonOptions<'_, f32>,
    iterations: Iterations,
    measure_depth: bool,
) -> Result<SolveReport> {
    let c = job.cell.as_cell();
    let (batch, len, n) = (job.batch, job.len, c.state_dim());
    let states = job.states();
    let fixed = match iterations {
        Iterations::Fixed(k) => Some(k),
        Iterations::Adaptive => None,
    };
    // A fixed solve never waits for the device; an adaptive one waits at
    // every residual read anyway, and synchronizes to split its times.
    let sync = |runner: &R| {
        if fixed.is_none() {
            runner.synchronize()
        } else {
            Ok(())
        }
    };
    let mut report = SolveReport::new(c.name(), options.mode, batch, len, n);
    if options.mode == Mode::Sequential {
        let t0 = Instant::now();
        launch_sequential(runner, job, job.h)?;
        gather_last(runner, job)?;
        sync(runner)?;
        report.cell_s = t0.elapsed().as_secs_f64();
        report.depth = len as u64;
        report.converged = true;
        report.stop = StopReason::Sequential;
        return Ok(report);
    }

    // Which A_t: form 0 (none), 1 (diagonal), 2 (the cell's full structure).
    let full = matches!(options.mode, Mode::Newton | Mode::Damped { .. });
    let form: i32 = match options.mode {
        Mode::Picard => 0,
        _ if full && c.structure() != Structure::Diagonal => 2,
        _ => 1,
    };
    let scan = match form {
        0 => LinearScan::Copy,
        1 => LinearScan::Diagonal(Box::new(plan_diagonal(
            DiagShape::new(batch, len, n),
            Layout::Btd,
            DType::F32,
            options.plan,
            runner.sm_count(),
        )?)),
        _ => {
            let k = c.structure().block(n);
            LinearScan::Block(Box::new(plan_block_diagonal(
                BlockShape::new(batch, len, n / k, k),
                DType::F32,
                options.plan,
                runner.sm_count(),
            )?))
        }
    };
    let relax = match options.mode {
        Mode::Damped { relax, .. } if relax != 1.0 => Some(relax as f32),
        _ => None,
    };
    // gru's diagonal iterations fuse the assemble into a [B,T,n] look-back
    // scan (one pass per iteration) whenever the plan is P4 there.
    let fused = match (&scan, job.cell) {
        (LinearScan::Diagonal(plan), GpuCell::DiagGru(_))
            if form == 1
                && relax.is_none()
                && plan.kind == GpuPlanKind::LookBack
                && plan.kernel_layout == Layout::Btd =>
        {
            Some(plan.as_ref().clone())
        }
        _ => None,
    };
    let a_len = match form {
        _ if fused.is_some() => 0,
        0 => 0,
        1 => states,
        _ => batch * len * c.structure().len(n),
    };
    let scale = match options.mode {
        Mode::Damped { shrink, .. } => (1.0 / (1.0 + shrink)) as f32,
        _ => 1.0,
    };
    ws.reserve(runner, states, a_len, relax.is_some())?;
    let io = Io {
        b: ptr_of(&ws.b),
        best: ptr_of(&ws.best),
        a: if a_len > 0 { ptr_of(&ws.a) } else { 0 },
        h_new: ptr_of(&ws.h_new),
        stats: ptr_of(&ws.stats),
    };

    // Initial guess, into `h`.
    let t0 = Instant::now();
    match options.initial {
        InitialGuess::Zeros => {
            runner.fill(ws.b()?, 0)?;
            copy(runner, io.b, job.h, states)?;
        }
        InitialGuess::Given(g) => {
            // Host memory: only the host entry point lets this through.
            let g = runner.upload(g)?;
            copy(runner, g.ptr(), job.h, states)?;
        }
        InitialGuess::FirstStep => {
            // f(0, x_t) at every t: Picard's assemble on an all-zero guess
            // (`best`, zeroed) with no h_0, then b → h.
            runner.fill(ws.best()?, 0)?;
            assemble(runner, job, &io, io.best, 0, 0, 1.0)?;
            copy(runner, io.b, job.h, states)?;
        }
    }
    sync(runner)?;
    report.cell_s += t0.elapsed().as_secs_f64();

    if let Some(plan) = fused {
        return fused_gru_iterations(
            runner,
            ws,
            job,
            &io,
            options,
            &plan,
            scale,
            (fixed, measure_depth),
            report,
        );
    }

    let mut scan_depth: Option<u64> = None;
    let mut watch = Watch::new();
    // Whether `h_t` holds the last state of `h` (the scan writes both).
    let mut h_t_fresh = false;
    loop {
        let t0 = Instant::now();
        match fixed {
            Some(k) => {
                if report.iterations >= k {
                    report.stop = StopReason::Fixed;
                    break;
                }
                // The residual words are reduced but never read.
                assemble(runner, job, &io, job.h, job.h0, form, scale)?;
                report.cell_s += t0.elapsed().as_secs_f64();
                if measure_depth {
                    report.depth += parallel_steps(len);
                }
            }
            None => {
                runner.fill(ws.stats()?, 0)?;
                assemble(runner, job, &io, job.h, job.h0, form, scale)?;
                runner.synchronize()?;
                let t1 = Instant::now();
                let (residual, hmax) = read_stats(runner, ws.stats()?)?;
                report.cell_s += (t1 - t0).as_secs_f64();
                report.check_s += t1.elapsed().as_secs_f64();
                let (verdict, improved) = watch.observe(&mut report, residual, hmax, options);
                if improved {
                    copy(runner, job.h, io.best, states)?;
                }
                match verdict {
                    Verdict::Converged => break,
                    Verdict::Continue => {}
                    Verdict::Diverged(why) => {
                        let iterate = if watch.best().is_some() {
                            io.best
                        } else {
                            job.h
                        };
                        on_diverged(
                            runner,
                            ws,
                            job,
                            options,
                            why,
                            &mut report,
                            &watch,
                            iterate,
                            job.h,
                        )?;
                        h_t_fresh = false;
                        break;
                    }
                }
                if report.iterations >= options.max_iters {
                    report.stop = StopReason::MaxIters;
                    break;
                }
            }
        }

        let t0 = Instant::now();
        let out = if relax.is_some() { io.h_new } else { job.h };
        let mut depth = match &scan {
            LinearScan::Copy => {
                copy(runner, io.b, job.h, states)?;
                h_t_fresh = false;
                1
            }
            LinearScan::Diagonal(plan) => {
                // SAFETY: `b`, `a` come from `ws`, reserved above for this
                // shape; `h0`, `out` and `h_t` are `job`'s (its contract).
                unsafe {
                    launch_scan(
                        runner,
                        &mut ws.diag,
                        &**plan,
                        DiagonalIo {
                            a: io.a,
                            b: io.b,
                            h: Some(out),
                            ends: Ends::new((job.h0 != 0).then_some(job.h0), job.h_t),
                        },
                    )
                }?;
                h_t_fresh = relax.is_none();
                0
            }
            LinearScan::Block(plan) => {
                // SAFETY: as for the Diagonal scan above.
                unsafe {
                    launch_scan(
                        runner,
                        &mut ws.block,
                        &**plan,
                        BlockDiagonalIo {
                            a: io.a,
                            b: io.b,
                            h: Some(out),
                            ends: Ends::new((job.h0 != 0).then_some(job.h0), job.h_t),
                        },
                    )
                }?;
                h_t_fresh = relax.is_none();
                0
            }
        };
        if let Some(w) = relax {
            if !matches!(scan, LinearScan::Copy) {
                // SAFETY: `h` and `h_new` hold `states` f32 values each.
                unsafe {
                    runner.launch(
                        "newton_relax",
                        LaunchConfig::linear(grid_for(runner, states), BLOCK),
                        &[
                            KernelArg::Ptr(job.h),
                            KernelArg::Ptr(io.h_new),
                            KernelArg::F32(w),
                            KernelArg::U64(states as u64),
                        ],
                    )
                }?;
                depth += 1;
            }
        }
        sync(runner)?;
        report.scan_s += t0.elapsed().as_secs_f64();
        // The scan's depth, measured once per solve on the depth-counting
        // kernels, outside the timed region (it is not part of the solve),
        // and only when asked (it allocates a `[B,T,n]` counter buffer).
        if measure_depth {
            depth += match (&scan, scan_depth) {
                (LinearScan::Copy, _) => 0,
                (_, Some(d)) => d,
                (LinearScan::Diagonal(plan), None) => {
                    let d = measure_scan_depth(runner, &mut ws.diag, &**plan)?;
                    scan_depth = Some(d);
                    d
                }
                (LinearScan::Block(plan), None) => {
                    let d = measure_scan_depth(runner, &mut ws.block, &**plan)?;
                    scan_depth = Some(d);
                    d
                }
            };
            report.depth += depth;
            report.scan_depths.push(depth);
        }
        report.iterations += 1;
    }
    if !h_t_fresh {
        gather_last(runner, job)?;
    }
    finish_depth(&mut report, measure_depth);
    sync(runner)?;
    Ok(report)
}

/// Without depth measurement the report's depth is 0 (not a partial count).
fn finish_depth(report: &mut SolveReport, measured: bool) {
    if !measured {
        report.depth = 0;
        report.scan_depths.clear();
    }
}

/// Workspace addresses of one solve (0: not used).
struct Io {
    b: u64,
    best: u64,
    a: u64,
    h_new: u64,
    stats: u64,
}

/// The iterations of [`run`] for gru on a `[B,T,n]` look-back plan: one
/// `newton_gru_lookback` pass per iteration evaluates the cell at the
/// guess, reduces its residual and writes the next guess. The guess, the
/// next guess and the best iterate rotate among three buffers (`h`, `b`,
/// `best`) instead of being copied; the answer is copied into `h` at the
/// end if it lies elsewhere. In adaptive mode the pass that meets the
/// tolerance (or the iteration cap) also computed a next guess, which is
/// dropped: the answer and the report are those of the unfused loop.
#[allow(clippy::too_many_arguments)]
fn fused_gru_iterations<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    job: &Job<'_>,
    io: &Io,
    options: &NewtonOptions<'_, f32>,
    plan: &GpuPlan,
    scale: f32,
    (fixed, measure_depth): (Option<usize>, bool),
    mut report: SolveReport,
) -> Result<SolveReport> {
    let (batch, len, n) = (job.batch, job.len, job.cell.units());
    let states = job.states();
    let slots = [job.h, io.b, io.best];
    let (mut cur, mut best): (usize, Option<usize>) = (0, None);
    let scan_depth = if measure_depth {
        measure_scan_depth(runner, &mut ws.diag, plan)?
    } else {
        0
    };
    ws.diag.reserve(runner, plan.scratch)?;
    report.fused = true;
    let parts: LookBackParts = lookback_parts(plan, &ws.diag)
        .ok_or_else(|| Error::Plan(format!("{plan} is not a [B,T,D] look-back plan")))?;
    let int = |v: usize| KernelArg::I32(i32::try_from(v).unwrap_or(i32::MAX));
    let mut watch = Watch::new();
    // Whether `h_t` holds the last state of `slots[cur]`.
    let mut h_t_fresh = false;
    loop {
        if fixed.is_some_and(|k| report.iterations >= k) {
            report.stop = StopReason::Fixed;
            break;
        }
        let next = (0..3)
            .find(|&i| i != cur && Some(i) != best)
            .unwrap_or((cur + 1) % 3);
        let t0 = Instant::now();
        if fixed.is_none() {
            runner.fill(ws.stats()?, 0)?;
        }
        // SAFETY: the status words and scratch come from `ws.diag`, reserved
        // for this plan; the slots and `stats` from `ws`, reserved for this
        // shape; `x`, `h0`, `params` and `h_t` are `job`'s (its contract).
        unsafe {
            runner.launch(
                parts.clear.kernel,
                parts.clear.cfg,
                &[KernelArg::Ptr(parts.status), int(parts.words)],
            )
        }?;
        // SAFETY: as for the clearing launch above.
        unsafe {
            runner.launch(
                "newton_gru_lookback",
                parts.cfg,
                &[
                    KernelArg::Ptr(job.x),
                    KernelArg::Ptr(slots[cur]),
                    KernelArg::Ptr(job.h0),
                    KernelArg::Ptr(job.params),
                    KernelArg::Ptr(slots[next]),
                    KernelArg::Ptr(job.h_t),
                    KernelArg::Ptr(io.stats),
                    KernelArg::F32(scale),
                    KernelArg::Ptr(parts.status),
                    KernelArg::Ptr(parts.agg),
                    KernelArg::Ptr(parts.pre),
                    int(batch),
                    int(len),
                    int(n),
                    int(plan.chunk),
                    int(plan.lookback_prefix_every as usize),
                ],
            )
        }?;
        if fixed.is_some() {
            // No read-back: the pass's next guess is the iterate.
            report.scan_s += t0.elapsed().as_secs_f64();
            if measure_depth {
                report.depth += parallel_steps(len) + scan_depth;
                report.scan_depths.push(scan_depth);
            }
            report.iterations += 1;
            cur = next;
            h_t_fresh = true;
            continue;
        }
        runner.synchronize()?;
        let t1 = Instant::now();
        let (residual, hmax) = read_stats(runner, ws.stats()?)?;
        // One pass both evaluates the cell and scans: its time counts as scan time.
        report.scan_s += (t1 - t0).as_secs_f64();
        report.check_s += t1.elapsed().as_secs_f64();
        let (verdict, improved) = watch.observe(&mut report, residual, hmax, options);
        if improved {
            best = Some(cur);
        }
        match verdict {
            Verdict::Converged => break,
            Verdict::Continue => {}
            Verdict::Diverged(why) => {
                let iterate = slots[best.unwrap_or(cur)];
                on_diverged(
                    runner,
                    ws,
                    job,
                    options,
                    why,
                    &mut report,
                    &watch,
                    iterate,
                    slots[cur],
                )?;
                break;
            }
        }
        if report.iterations >= options.max_iters {
            report.stop = StopReason::MaxIters;
            break;
        }
        report.depth += scan_depth;
        report.scan_depths.push(scan_depth);
        report.iterations += 1;
        cur = next;
    }
    if slots[cur] != job.h {
        copy(runner, slots[cur], job.h, states)?;
    }
    if !h_t_fresh {
        gather_last(runner, job)?;
    }
    finish_depth(&mut report, measure_depth);
    if fixed.is_none() {
        runner.synchronize()?;
    }
    Ok(report)
}

/// The residual and max|h| words the cell kernels reduced (`stats`).
fn read_stats<R: KernelRunner>(runner: &R, stats: &DeviceBuffer) -> Result<(f64, f64)> {
    let mut words = [0u32; 2];
    runner.download(stats, &mut words)?;
    let value = |w: u32| f64::from(f32::from_bits(w));
    Ok((value(words[0]), value(words[1])))
}

/// A divergence under `options.policy`: `Policy::Error` returns
/// [`Error::Diverged`] carrying the residual history and `iterate` (the best
/// guess so far, else the current one; read back through `ws.best`);
/// `Policy::FallbackSequential` runs the cell's sequential kernel into
/// `into` and marks the report.
#[allow(clippy::too_many_arguments)]
fn on_diverged<R: KernelRunner>(
    runner: &R,
    ws: &NewtonWorkspace,
    job: &Job<'_>,
    options: &NewtonOptions<'_, f32>,
    why: String,
    report: &mut SolveReport,
    watch: &Watch,
    iterate: u64,
    into: u64,
) -> Result<()> {
    match options.policy {
        Policy::Error => {
            let states = job.states();
            let best = ws.best()?;
            if iterate != best.ptr() {
                copy(runner, iterate, best.ptr(), states)?;
            }
            let mut host = crate::mem::try_vec("best_iterate", best.len_bytes() / 4, 0f32)?;
            runner.synchronize()?;
            runner.download(best, &mut host)?;
            host.truncate(states);
            Err(Error::Diverged(Box::new(Diverged {
                cell: job.cell.as_cell().name().to_string(),
                mode: options.mode,
                reason: why,
                residuals: std::mem::take(&mut report.residuals),
                best_residual: watch.best().unwrap_or(f64::NAN),
                best_iterate: host.iter().map(|&v| f64::from(v)).collect(),
            })))
        }
        Policy::FallbackSequential => {
            let t0 = Instant::now();
            launch_sequential(runner, job, into)?;
            runner.synchronize()?;
            report.cell_s += t0.elapsed().as_secs_f64();
            report.depth += job.len as u64;
            report.converged = true;
            report.fell_back = true;
            report.stop = StopReason::Fallback(why);
            Ok(())
        }
    }
}

/// The cell kernel at the guess `h` (with initial states `h0`, 0 for
/// zeros): writes the scan inputs `b` (and `a` unless `form == 0`) of `io`
/// and reduces the residual into `io.stats`.
fn assemble<R: KernelRunner>(
    runner: &R,
    job: &Job<'_>,
    io: &Io,
    h: u64,
    h0: u64,
    form: i32,
    scale: f32,
) -> Result<()> {
    let units = job.cell.units();
    let items = job.batch * job.len * units;
    // SAFETY: `io`'s buffers were reserved for `job`'s shape (`a` with the
    // cell's Jacobian structure when `form != 0`), `h` holds `[B,T,n]`
    // states, and `job`'s addresses meet its contract, as the assemble
    // kernel's contract in `kernels/newton.cu` needs.
    unsafe {
        runner.launch(
            &format!("{}_assemble", job.cell.prefix()),
            LaunchConfig::linear(grid_for(runner, items), BLOCK),
            &[
                KernelArg::Ptr(job.x),
                KernelArg::Ptr(h),
                KernelArg::Ptr(h0),
                KernelArg::Ptr(job.params),
                KernelArg::Ptr(if form == 0 { 0 } else { io.a }),
                KernelArg::Ptr(io.b),
                KernelArg::Ptr(io.stats),
                KernelArg::U64(job.batch as u64),
                KernelArg::U64(job.len as u64),
                KernelArg::U64(units as u64),
                KernelArg::I32(form),
                KernelArg::F32(scale),
            ],
        )
    }
}

/// The residual `max_t |h_t − f(h_{t-1}, x_t)|` and `max|h|` of the states
/// at `job.h`, through the Picard assemble into the workspace (8 bytes
/// read back).
pub(crate) fn residual_of<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    job: &Job<'_>,
) -> Result<(f64, f64)> {
    ws.reserve(runner, job.states(), 0, false)?;
    let io = Io {
        b: ptr_of(&ws.b),
        best: ptr_of(&ws.best),
        a: 0,
        h_new: 0,
        stats: ptr_of(&ws.stats),
    };
    runner.fill(ws.stats()?, 0)?;
    assemble(runner, job, &io, job.h, job.h0, 0, 1.0)?;
    read_stats(runner, ws.stats()?)
}

/// Copies the last state of every sequence of `job.h` into `job.h_t` (one
/// copy launch per sequence; on the device, no read-back).
fn gather_last<R: KernelRunner>(runner: &R, job: &Job<'_>) -> Result<()> {
    let n = job.cell.as_cell().state_dim();
    for b in 0..job.batch {
        let src = job.h + (((b * job.len + job.len - 1) * n * 4) as u64);
        let dst = job.h_t + ((b * n * 4) as u64);
        copy(runner, src, dst, n)?;
    }
    Ok(())
}

/// Copies `count` f32 values from `src` to `dst` on the device.
fn copy<R: KernelRunner>(runner: &R, src: u64, dst: u64, count: usize) -> Result<()> {
    // SAFETY: the callers pass two addresses of at least `count` f32 values
    // of this runner's memory.
    unsafe {
        runner.launch(
            "copy_f32",
            LaunchConfig::linear(grid_for(runner, count.div_ceil(4)), BLOCK),
            &[
                KernelArg::Ptr(src),
                KernelArg::Ptr(dst),
                KernelArg::U64(count as u64),
            ],
        )
    }
}
