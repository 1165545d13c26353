//! The Newton solver on the kernels (`kernels/newton.cu` plus the scan
//! kernels), on any [`KernelRunner`]: the CUDA backend on a GPU, the SIMT
//! emulator everywhere else.
//!
//! The whole iteration stays on the device: the assemble kernel evaluates
//! the cell, writes the scan inputs and reduces the residual into two
//! device words; the scan writes the next guess. Per iteration the host
//! reads back those two words (8 bytes) and nothing else. f32 only.

use std::time::Instant;

use super::cell::{Cell, DiagGru, DiagLstm, Elman, Structure};
use super::report::{Diverged, Mode, SolveReport, StopReason};
use super::solver::Solution;
use super::{InitialGuess, NewtonOptions, NonlinearProblem, Policy, Verdict, Watch};
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
use crate::kernels::{launch_scan, measure_depth};

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

    fn params(&self) -> Vec<f32> {
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
    launch_sequential(runner, cell, problem, &x, h0.as_ref(), &params, &h)?;
    runner.synchronize()?;
    let mut out = crate::mem::try_vec("states", problem.batch * problem.len * n_state, 0f32)?;
    runner.download(&h, &mut out)?;
    Ok(out)
}

fn launch_sequential<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    problem: &NonlinearProblem<'_, f32>,
    x: &DeviceBuffer,
    h0: Option<&DeviceBuffer>,
    params: &DeviceBuffer,
    h: &DeviceBuffer,
) -> Result<()> {
    let (batch, len, units) = (problem.batch, problem.len, cell.units());
    let cfg = match cell {
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
    // SAFETY: `x`, `h0`, `params` and `h` were allocated by this solve for
    // `problem`'s `[B,T,·]` shapes and the cell's parameter block, as
    // `kernels/newton.cu`'s sequential kernel reads and writes them.
    unsafe {
        runner.launch(
            &format!("{}_sequential", cell.prefix()),
            cfg,
            &[
                x.into(),
                ptr_or_null(h0),
                params.into(),
                h.into(),
                KernelArg::U64(batch as u64),
                KernelArg::U64(len as u64),
                KernelArg::U64(units as u64),
            ],
        )
    }
}

fn ptr_or_null(b: Option<&DeviceBuffer>) -> KernelArg {
    KernelArg::Ptr(b.map_or(0, DeviceBuffer::ptr))
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

/// Device buffers of one solve.
struct Buffers {
    x: DeviceBuffer,
    params: DeviceBuffer,
    h0: Option<DeviceBuffer>,
    h: DeviceBuffer,
    a: Option<DeviceBuffer>,
    b: DeviceBuffer,
    h_new: Option<DeviceBuffer>,
    h_t: DeviceBuffer,
    best: DeviceBuffer,
    stats: DeviceBuffer,
}

/// Solves `problem` for a built-in `cell` on `runner`'s kernels, with the
/// same options, stopping rules, divergence policy and report as the CPU
/// [`solve`](super::solve). f32 only.
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
    let mut report = SolveReport::new(c.name(), options.mode, batch, len, n);

    let x = runner.upload(problem.x)?;
    let params = runner.upload(&cell.params())?;
    let h0 = problem.h0.map(|h| runner.upload(h)).transpose()?;
    if options.mode == Mode::Sequential {
        let h = runner.alloc(states * 4)?;
        let t0 = Instant::now();
        launch_sequential(runner, cell, problem, &x, h0.as_ref(), &params, &h)?;
        runner.synchronize()?;
        report.cell_s = t0.elapsed().as_secs_f64();
        report.depth = len as u64;
        report.converged = true;
        report.stop = StopReason::Sequential;
        let mut out = crate::mem::try_vec("states", states, 0f32)?;
        runner.download(&h, &mut out)?;
        return Ok(Solution {
            states: out,
            report,
        });
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
    let fused = match (&scan, cell) {
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
    let bufs = Buffers {
        x,
        params,
        h0,
        h: runner.alloc(states * 4)?,
        a: (a_len > 0).then(|| runner.alloc(a_len * 4)).transpose()?,
        b: runner.alloc(states * 4)?,
        h_new: relax.map(|_| runner.alloc(states * 4)).transpose()?,
        h_t: runner.alloc(batch * n * 4)?,
        best: runner.alloc(states * 4)?,
        stats: runner.alloc(8)?,
    };
    let mut ws = DiagonalWorkspace::new();
    let mut block_ws = BlockDiagonalWorkspace::new();

    // Initial guess.
    let t0 = Instant::now();
    match options.initial {
        InitialGuess::Zeros => runner.fill(&bufs.h, 0)?,
        InitialGuess::Given(g) => {
            let g = runner.upload(g)?;
            copy(runner, &g, &bufs.h, states)?;
        }
        InitialGuess::FirstStep => {
            // f(0, x_t) at every t: Picard's assemble on an all-zero guess
            // with no h_0, then b → h.
            runner.fill(&bufs.h, 0)?;
            assemble(runner, cell, problem, &bufs, None, 0, 1.0)?;
            copy(runner, &bufs.b, &bufs.h, states)?;
        }
    }
    runner.synchronize()?;
    report.cell_s += t0.elapsed().as_secs_f64();

    if let Some(plan) = fused {
        return fused_gru_iterations(
            runner,
            cell,
            problem,
            options,
            &bufs,
            (&plan, &mut ws),
            scale,
            report,
        );
    }

    let mut scan_depth: Option<u64> = None;
    let mut watch = Watch::new();
    loop {
        let t0 = Instant::now();
        runner.fill(&bufs.stats, 0)?;
        assemble(runner, cell, problem, &bufs, bufs.h0.as_ref(), form, scale)?;
        runner.synchronize()?;
        let t1 = Instant::now();
        let (residual, hmax) = read_stats(runner, &bufs.stats)?;
        report.cell_s += (t1 - t0).as_secs_f64();
        report.check_s += t1.elapsed().as_secs_f64();
        let (verdict, improved) = watch.observe(&mut report, residual, hmax, options);
        if improved {
            copy(runner, &bufs.h, &bufs.best, states)?;
        }
        match verdict {
            Verdict::Converged => break,
            Verdict::Continue => {}
            Verdict::Diverged(why) => {
                let iterate = if watch.best().is_some() {
                    &bufs.best
                } else {
                    &bufs.h
                };
                let ctx = (cell, problem, options, &bufs);
                on_diverged(runner, ctx, why, &mut report, &watch, iterate, &bufs.h)?;
                break;
            }
        }
        if report.iterations >= options.max_iters {
            report.stop = StopReason::MaxIters;
            break;
        }

        let t0 = Instant::now();
        let out = bufs.h_new.as_ref().unwrap_or(&bufs.h);
        let mut depth = match &scan {
            LinearScan::Copy => {
                copy(runner, &bufs.b, &bufs.h, states)?;
                1
            }
            LinearScan::Diagonal(plan) => {
                let a = bufs.a.as_ref().map_or(0, DeviceBuffer::ptr);
                // SAFETY: every buffer of `bufs` was allocated by this solve
                // with the state shape `[B,T,n]` (or `[B,n]`) the plan was made for.
                unsafe {
                    launch_scan(
                        runner,
                        &mut ws,
                        &**plan,
                        DiagonalIo {
                            a,
                            b: bufs.b.ptr(),
                            h0: bufs.h0.as_ref().map(DeviceBuffer::ptr),
                            h: Some(out.ptr()),
                            h_t: bufs.h_t.ptr(),
                        },
                    )
                }?;
                0
            }
            LinearScan::Block(plan) => {
                let a = bufs.a.as_ref().map_or(0, DeviceBuffer::ptr);
                // SAFETY: every buffer of `bufs` was allocated by this solve
                // with the state shape `[B,T,n]` (or `[B,n]`) the plan was made for.
                unsafe {
                    launch_scan(
                        runner,
                        &mut block_ws,
                        &**plan,
                        BlockDiagonalIo {
                            a,
                            b: bufs.b.ptr(),
                            h0: bufs.h0.as_ref().map(DeviceBuffer::ptr),
                            h: Some(out.ptr()),
                            h_t: bufs.h_t.ptr(),
                        },
                    )
                }?;
                0
            }
        };
        if let (Some(w), Some(h_new)) = (relax, bufs.h_new.as_ref()) {
            if !matches!(scan, LinearScan::Copy) {
                // SAFETY: `h` and `h_new` hold `states` f32 values each.
                unsafe {
                    runner.launch(
                        "newton_relax",
                        LaunchConfig::linear(grid_for(runner, states), BLOCK),
                        &[
                            (&bufs.h).into(),
                            h_new.into(),
                            KernelArg::F32(w),
                            KernelArg::U64(states as u64),
                        ],
                    )
                }?;
                depth += 1;
            }
        }
        runner.synchronize()?;
        report.scan_s += t0.elapsed().as_secs_f64();
        // The scan's depth, measured once per solve on the depth-counting
        // kernels, outside the timed region (it is not part of the solve).
        depth += match (&scan, scan_depth) {
            (LinearScan::Copy, _) => 0,
            (_, Some(d)) => d,
            (LinearScan::Diagonal(plan), None) => {
                let d = measure_depth(runner, &mut ws, &**plan)?;
                scan_depth = Some(d);
                d
            }
            (LinearScan::Block(plan), None) => {
                let d = measure_depth(runner, &mut block_ws, &**plan)?;
                scan_depth = Some(d);
                d
            }
        };
        report.depth += depth;
        report.scan_depths.push(depth);
        report.iterations += 1;
    }
    runner.synchronize()?;
    let mut out = crate::mem::try_vec("states", states, 0f32)?;
    runner.download(&bufs.h, &mut out)?;
    Ok(Solution {
        states: out,
        report,
    })
}

/// The iterations of [`solve_kernels`] for gru on a `[B,T,n]` look-back
/// plan: one `newton_gru_lookback` pass per iteration evaluates the cell at
/// the guess, reduces its residual and writes the next guess. The guess,
/// the next guess and the best iterate rotate among three buffers (`h`,
/// `b`, `best`) instead of being copied. The pass that meets the tolerance
/// (or the iteration cap) also computed a next guess, which is dropped: the
/// answer and the report are those of the unfused loop.
#[allow(clippy::too_many_arguments)]
fn fused_gru_iterations<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    problem: &NonlinearProblem<'_, f32>,
    options: &NewtonOptions<'_, f32>,
    bufs: &Buffers,
    (plan, ws): (&GpuPlan, &mut DiagonalWorkspace),
    scale: f32,
    mut report: SolveReport,
) -> Result<Solution<f32>> {
    let c = cell.as_cell();
    let (batch, len, n) = (problem.batch, problem.len, c.state_dim());
    let states = batch * len * n;
    let slots = [&bufs.h, &bufs.b, &bufs.best];
    let (mut cur, mut best): (usize, Option<usize>) = (0, None);
    let scan_depth = measure_depth(runner, ws, plan)?;
    ws.reserve(runner, plan.scratch)?;
    report.fused = true;
    let parts: LookBackParts = lookback_parts(plan, ws)
        .ok_or_else(|| Error::Plan(format!("{plan} is not a [B,T,D] look-back plan")))?;
    let int = |v: usize| KernelArg::I32(i32::try_from(v).unwrap_or(i32::MAX));
    let mut watch = Watch::new();
    loop {
        let next = (0..3)
            .find(|&i| i != cur && Some(i) != best)
            .unwrap_or((cur + 1) % 3);
        let t0 = Instant::now();
        runner.fill(&bufs.stats, 0)?;
        // SAFETY: the status words and scratch come from `ws`, reserved for
        // this plan; `x`, the slots, `params` and `h_t` were allocated by this
        // solve with the shapes the fused kernel's contract names.
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
                    (&bufs.x).into(),
                    slots[cur].into(),
                    ptr_or_null(bufs.h0.as_ref()),
                    (&bufs.params).into(),
                    slots[next].into(),
                    (&bufs.h_t).into(),
                    (&bufs.stats).into(),
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
        runner.synchronize()?;
        let t1 = Instant::now();
        let (residual, hmax) = read_stats(runner, &bufs.stats)?;
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
                let ctx = (cell, problem, options, bufs);
                on_diverged(runner, ctx, why, &mut report, &watch, iterate, slots[cur])?;
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
    let mut out = crate::mem::try_vec("states", states, 0f32)?;
    runner.download(slots[cur], &mut out)?;
    Ok(Solution {
        states: out,
        report,
    })
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
/// guess so far, else the current one); `Policy::FallbackSequential` runs
/// the cell's sequential kernel into `into` and marks the report.
fn on_diverged<R: KernelRunner>(
    runner: &R,
    (cell, problem, options, bufs): (
        GpuCell<'_>,
        &NonlinearProblem<'_, f32>,
        &NewtonOptions<'_, f32>,
        &Buffers,
    ),
    why: String,
    report: &mut SolveReport,
    watch: &Watch,
    iterate: &DeviceBuffer,
    into: &DeviceBuffer,
) -> Result<()> {
    match options.policy {
        Policy::Error => {
            let mut host = vec![0f32; iterate.len_bytes() / 4];
            runner.synchronize()?;
            runner.download(iterate, &mut host)?;
            Err(Error::Diverged(Box::new(Diverged {
                cell: cell.as_cell().name().to_string(),
                mode: options.mode,
                reason: why,
                residuals: std::mem::take(&mut report.residuals),
                best_residual: watch.best().unwrap_or(f64::NAN),
                best_iterate: host.iter().map(|&v| f64::from(v)).collect(),
            })))
        }
        Policy::FallbackSequential => {
            let t0 = Instant::now();
            launch_sequential(
                runner,
                cell,
                problem,
                &bufs.x,
                bufs.h0.as_ref(),
                &bufs.params,
                into,
            )?;
            runner.synchronize()?;
            report.cell_s += t0.elapsed().as_secs_f64();
            report.depth += problem.len as u64;
            report.converged = true;
            report.fell_back = true;
            report.stop = StopReason::Fallback(why);
            Ok(())
        }
    }
}

fn assemble<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    problem: &NonlinearProblem<'_, f32>,
    bufs: &Buffers,
    h0: Option<&DeviceBuffer>,
    form: i32,
    scale: f32,
) -> Result<()> {
    let units = cell.units();
    let items = problem.batch * problem.len * units;
    // SAFETY: `bufs` was allocated by this solve for `problem`'s shapes
    // (`a` and `b` with the cell's Jacobian structure), as the assemble
    // kernel's contract in `kernels/newton.cu` needs.
    unsafe {
        runner.launch(
            &format!("{}_assemble", cell.prefix()),
            LaunchConfig::linear(grid_for(runner, items), BLOCK),
            &[
                (&bufs.x).into(),
                (&bufs.h).into(),
                ptr_or_null(h0),
                (&bufs.params).into(),
                ptr_or_null(bufs.a.as_ref()),
                (&bufs.b).into(),
                (&bufs.stats).into(),
                KernelArg::U64(problem.batch as u64),
                KernelArg::U64(problem.len as u64),
                KernelArg::U64(units as u64),
                KernelArg::I32(form),
                KernelArg::F32(scale),
            ],
        )
    }
}

fn copy<R: KernelRunner>(
    runner: &R,
    src: &DeviceBuffer,
    dst: &DeviceBuffer,
    count: usize,
) -> Result<()> {
    // SAFETY: the callers pass two buffers of at least `count` f32 values.
    unsafe {
        runner.launch(
            "copy_f32",
            LaunchConfig::linear(grid_for(runner, count.div_ceil(4)), BLOCK),
            &[src.into(), dst.into(), KernelArg::U64(count as u64)],
        )
    }
}
