//! The Newton solver on device memory: inputs and outputs stay where the
//! model keeps them, and a reused [`NewtonWorkspace`] makes a warm solve
//! allocate nothing.
//!
//! ```no_run
//! # use parascan::backend::emu::EmuBackend;
//! # use parascan::kernels::DeviceTensor;
//! # use parascan::newton::*;
//! # fn main() -> parascan::Result<()> {
//! let runner = EmuBackend::default();
//! let (batch, len, n) = (2, 64, 8);
//! let gru = DiagGru::new(vec![0.5f32; n], vec![0.5; n], vec![0.5; n])?;
//! let cell = DeviceCell::new(&runner, &gru)?; // parameters uploaded once
//! let x = DeviceTensor::upload(&runner, &vec![0.1f32; batch * len * 3 * n])?;
//! let mut h = DeviceTensor::<f32>::alloc(&runner, batch * len * n)?;
//! let mut h_t = DeviceTensor::<f32>::alloc(&runner, batch * n)?;
//! let mut ws = NewtonWorkspace::new();
//! let options = DeviceOptions { iterations: Iterations::Fixed(4), ..Default::default() };
//! let report = solve_device(
//!     &runner,
//!     &mut ws,
//!     &cell,
//!     &DeviceProblem { x: x.as_ref(), h0: None, batch, len },
//!     DeviceStates { h: h.as_mut(), h_t: h_t.as_mut() },
//!     &options,
//! )?;
//! assert_eq!(report.iterations, 4);
//! # Ok(()) }
//! ```

use super::gpu::{residual_of, run, GpuCell, Iterations, Job, NewtonWorkspace};
use super::report::SolveReport;
use super::{InitialGuess, NewtonOptions, NonlinearProblem};
use crate::backend::launch::{DeviceBuffer, KernelRunner};
use crate::error::{Error, Result};
use crate::kernels::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use crate::mem::checked_product;

/// A built-in cell with its parameters on the device (uploaded once, like
/// a model's weights), for [`solve_device`].
#[derive(Debug)]
pub struct DeviceCell<'a> {
    cell: GpuCell<'a>,
    params: DeviceBuffer,
}

impl<'a> DeviceCell<'a> {
    /// Uploads the parameters of `cell` (f32) to `runner` (one allocation).
    pub fn new<R: KernelRunner>(runner: &R, cell: impl Into<GpuCell<'a>>) -> Result<Self> {
        let cell = cell.into();
        let params = runner.upload(&cell.params())?;
        Ok(DeviceCell { cell, params })
    }

    /// The cell (its CPU twin through [`GpuCell::as_cell`]).
    pub fn cell(&self) -> GpuCell<'a> {
        self.cell
    }
}

/// The inputs of a batch of recurrences, on the device (f32).
#[derive(Debug)]
pub struct DeviceProblem<'a> {
    /// Pre-projected inputs `[B, T, input_dim]` (`input_dim = 3n` for
    /// [`DiagGru`](super::DiagGru)), row-major.
    pub x: DeviceRef<'a>,
    /// Initial states `[B, n]`; zeros when `None`.
    pub h0: Option<DeviceRef<'a>>,
    /// `B ≥ 1`.
    pub batch: usize,
    /// `T ≥ 1`.
    pub len: usize,
}

/// Where [`solve_device`] writes (f32).
#[derive(Debug)]
pub struct DeviceStates<'a> {
    /// All states `[B, T, n]`: `h_t` for `t = 1..T`.
    pub h: DeviceMut<'a>,
    /// The final states `[B, n]` (`h_T`: the next chunk's `h0`).
    pub h_t: DeviceMut<'a>,
}

/// Settings of [`solve_device`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceOptions<'a> {
    /// Mode, tolerances, iteration cap, divergence policy and plan, as for
    /// the CPU solver. The initial guess must be `Zeros` or `FirstStep`
    /// (a `Given` guess is host memory).
    pub newton: NewtonOptions<'a, f32>,
    /// Adaptive (the default: reads the 8-byte residual back every
    /// iteration) or a fixed count with no read-back at all.
    pub iterations: Iterations,
    /// Whether to measure the scans' depth on the depth-counting kernels
    /// (allocates a `[B,T,n]` u32 counter buffer per solve and reads it
    /// back). Off by default: the report's `depth` is then 0 and its
    /// `scan_depths` empty.
    pub measure_depth: bool,
}

impl Default for DeviceOptions<'_> {
    /// [`NewtonOptions::default`] (f32 tolerances), adaptive, no depth.
    fn default() -> Self {
        DeviceOptions {
            newton: NewtonOptions::default(),
            iterations: Iterations::Adaptive,
            measure_depth: false,
        }
    }
}

/// Solves the recurrences of `problem` for `cell` on `runner`'s kernels,
/// on device memory: no upload, and no allocation once `ws` has seen a
/// shape at least this large (and `measure_depth` is off). Writes every
/// state into `out.h` and the final states into `out.h_t`, on every path
/// (converged, fixed count, sequential fallback, [`Mode::Sequential`](super::Mode::Sequential)).
///
/// Reads back: with [`Iterations::Adaptive`], two device words per
/// iteration (which waits for the runner), and the best iterate if the
/// solve diverges under [`Policy::Error`](super::Policy::Error); with
/// [`Iterations::Fixed`], nothing: the work is queued on the runner and
/// the call may return before it is done (synchronize, or read `out` with
/// a stream-ordered copy, before using it on the host).
///
/// Errors, before any launch: a shape, element type (f32), owner or size
/// mismatch of any argument, an output overlapping another argument, a
/// `Given` initial guess, or invalid options. Inputs are not checked for
/// NaN/∞ (that would need a read-back): a non-finite input makes the
/// residual non-finite, which an adaptive solve reports as divergence.
pub fn solve_device<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    cell: &DeviceCell<'_>,
    problem: &DeviceProblem<'_>,
    out: DeviceStates<'_>,
    options: &DeviceOptions<'_>,
) -> Result<SolveReport> {
    if let InitialGuess::Given(_) = options.newton.initial {
        return Err(Error::Plan(
            "solve_device: initial guess `Given` is host memory; use Zeros or FirstStep \
             (or the host entry point solve_kernels)"
                .into(),
        ));
    }
    let c = cell.cell.as_cell();
    // The options' checks need only the shape.
    let shape_only = NonlinearProblem::<f32> {
        x: &[],
        h0: None,
        batch: problem.batch,
        len: problem.len,
    };
    options.newton.validate(c, &shape_only)?;
    let job = check_job(runner, cell, problem, Some(&out.h), &out.h_t)?;
    run(
        runner,
        ws,
        &job,
        &options.newton,
        options.iterations,
        options.measure_depth,
    )
}

/// `max_t |h_t − f(h_{t-1}, x_t)|` over every sequence and step, and
/// `max |h_t|`, of given states: what an adaptive solve checks against
/// `atol + rtol·max|h|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Residual {
    /// The largest residual.
    pub residual: f64,
    /// The largest state magnitude.
    pub max_abs: f64,
}

/// The residual of states `h` (`[B, T, n]` f32 on the device, e.g. the
/// output of a [`Iterations::Fixed`] solve) for `problem`: one cell
/// evaluation into `ws` and one 8-byte read-back (which waits for the
/// runner). No allocation once `ws` is warm for this shape.
pub fn residual_device<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    cell: &DeviceCell<'_>,
    problem: &DeviceProblem<'_>,
    h: DeviceRef<'_>,
) -> Result<Residual> {
    let mut job = check_job(runner, cell, problem, None, &DeviceMut(h))?;
    // `check_job` sized the last argument as `h_t`; it is `h` here.
    job.h = job.h_t;
    job.h_t = 0;
    let (residual, max_abs) = residual_of(runner, ws, &job)?;
    Ok(Residual { residual, max_abs })
}

/// Checks every argument of a device solve and returns its addresses.
/// With `h = None`, `last` is the all-states argument `h` (the residual of
/// given states); else `last` is `h_t`.
fn check_job<'c, R: KernelRunner>(
    runner: &R,
    cell: &DeviceCell<'c>,
    problem: &DeviceProblem<'_>,
    h: Option<&DeviceMut<'_>>,
    last: &DeviceMut<'_>,
) -> Result<Job<'c>> {
    let c = cell.cell.as_cell();
    let (batch, len) = (problem.batch, problem.len);
    if batch == 0 {
        return Err(Error::size("batch", 0, "B ≥ 1"));
    }
    if len == 0 {
        return Err(Error::size("len", 0, "T ≥ 1"));
    }
    let (n, din) = (c.state_dim(), c.input_dim());
    super::check_structure(c.structure(), n)?;
    let x_len = checked_product("x", &[("batch", batch), ("len", len), ("input_dim", din)])?;
    let states = checked_product("h", &[("batch", batch), ("len", len), ("state_dim", n)])?;
    crate::mem::bytes_of::<f32>("h", states)?;
    let lanes = checked_product("h_t", &[("batch", batch), ("state_dim", n)])?;
    let f32e = ElemType::of::<f32>();
    let bt = |d: usize| move || format!("[{batch}, {len}, {d}]");
    let bn = || format!("[{batch}, {n}]");
    check_arg(runner, "x", &problem.x, x_len, f32e, bt(din))?;
    if let Some(h0) = &problem.h0 {
        check_arg(runner, "h0", h0, lanes, f32e, bn)?;
    }
    let params = DeviceRef::from(&cell.params);
    let p_len = cell.params.len_bytes() / 4;
    check_arg(runner, "cell", &params, p_len, f32e, || {
        format!("[{p_len}] parameters")
    })?;
    let mut outputs: Vec<(&'static str, &DeviceRef<'_>)> = Vec::new();
    match h {
        Some(h) => {
            check_arg(runner, "h", &h.0, states, f32e, bt(n))?;
            check_arg(runner, "h_t", &last.0, lanes, f32e, bn)?;
            outputs.push(("h", &h.0));
            outputs.push(("h_t", &last.0));
        }
        None => check_arg(runner, "h", &last.0, states, f32e, bt(n))?,
    }
    let mut inputs: Vec<(&'static str, &DeviceRef<'_>)> = vec![("x", &problem.x)];
    if let Some(h0) = &problem.h0 {
        inputs.push(("h0", h0));
    }
    inputs.push(("cell", &params));
    // Every output must be disjoint from every other argument (inputs may
    // share memory with each other: they are only read).
    for (i, (name, out)) in outputs.iter().enumerate() {
        let others = outputs[..i].iter().chain(&inputs);
        for (other, mem) in others {
            if overlaps(out, mem) {
                return Err(Error::size(
                    name,
                    out.addr as usize,
                    format!("device memory that does not overlap `{other}`"),
                ));
            }
        }
    }
    Ok(Job {
        cell: cell.cell,
        batch,
        len,
        x: problem.x.addr,
        params: cell.params.ptr(),
        h0: problem.h0.as_ref().map_or(0, |m| m.addr),
        h: h.map_or(0, |m| m.0.addr),
        h_t: last.0.addr,
    })
}

fn overlaps(a: &DeviceRef<'_>, b: &DeviceRef<'_>) -> bool {
    let end = |m: &DeviceRef<'_>| m.addr.saturating_add(m.bytes as u64);
    a.bytes > 0 && b.bytes > 0 && a.addr < end(b) && b.addr < end(a)
}
