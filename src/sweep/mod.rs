//! The main job (SPEC §5): depth and time versus sequence length.
//!
//! For every family instance ([`config::default_shapes`]), dtype, length
//! `T` on a log grid and plan, a sweep
//! 1. draws bounded random inputs ([`cases`]),
//! 2. resolves the plan for the problem's shape and measures its depth and
//!    work by running the same engine over depth counters
//!    ([`crate::scan::depth::measure`]),
//! 3. times the engine (warm-up, then median of repeated runs,
//!    [`timing`]),
//! 4. compares the bytes the scan moves per second with the machine's copy
//!    bandwidth measured at the start of the same run ([`bandwidth`]).
//!
//! Results come back as a [`SweepReport`] (table, CSV, JSON) and
//! [`write_outputs`] also draws two SVG plots ([`plot`]).
//!
//! What is timed is one call of the public entry point
//! [`crate::backend::Cpu::scan_into`] on buffers allocated once per case:
//! shape validation (for permutations, a pass over every index, which any
//! backend must make) plus the scan on the backend's own worker pool.
//! Input generation, allocation and the depth measurement are not timed.
//!
//! Under `--backend cuda` or `--backend emu` every family with kernels
//! ([`Family::has_kernels`]) runs on them through
//! [`KernelScan`] on that runner: the plan
//! column adds the GPU plan kind (`auto [P2]`), the chunk column is the GPU
//! plan's chunk, the depth is measured by the plan's own launches on the
//! depth-counting kernels (work is not counted there and reads 0), and the
//! time covers the launches plus a `synchronize` on inputs uploaded once
//! (`timed = launches+sync`). Families without kernels run on the CPU
//! engine, rows labelled `cpu` (the bandwidth line too: it is quoted
//! against the CPU copy bandwidth). Nonlinear cells run on the Newton
//! kernels ([`crate::newton::solve_kernels`], `timed = solve`) except the
//! parity machine, which is CPU-only.

pub mod backward;
pub mod bandwidth;
pub mod cases;
pub mod cells;
pub mod config;
pub mod plot;
pub mod report;
pub mod timing;
pub mod varlen;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::{bf16, f16};
use indicatif::ProgressBar;

pub use config::{BackendChoice, Family, Shape, SweepConfig, TimingPolicy};
pub use report::{Row, RowKind, Skipped, SweepReport};

use crate::backend::cuda::CudaBackend;
use crate::backend::emu::EmuBackend;
use crate::backend::launch::KernelRunner;
use crate::backend::{BackendKind, Cpu};
use crate::dtype::{DType, Storage};
use crate::error::Error;
use crate::family::{Layout, LinearProblem};
use crate::kernels::KernelScan;
use crate::scan::depth::{measure, Measured};
use crate::scan::PlanRequest;
use cases::{mix_seed, Inputs, KernelVisitor};

/// Errors of the sweep and `check` drivers.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A configuration value or command-line argument is invalid.
    #[error("argument `{arg}`: expected {expected}")]
    Invalid {
        /// The argument's name, e.g. `families`.
        arg: &'static str,
        /// What was expected, in words.
        expected: String,
    },
    /// Writing or drawing an output failed (not an I/O error as such).
    #[error("{0}")]
    Output(String),
    /// An error from the library proper (shapes, plans, backends, I/O).
    #[error(transparent)]
    Core(#[from] crate::Error),
}

/// Result alias of the drivers.
pub type Result<T, E = SweepError> = std::result::Result<T, E>;

/// The backend a run uses and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackendSelection {
    /// The engine that runs the scans.
    pub kind: BackendKind,
    /// Why, in words (for the first line of the output).
    pub reason: String,
}

/// Resolves `choice` to a backend the drivers can run scans on.
///
/// `Cuda` opens the device (an error, with the reason, when none opens);
/// `Emu` always works; `Auto` follows [`BackendKind::auto`]. On `cuda` and
/// `emu` every family with kernels runs on them and the others on the CPU
/// engine, each row labelled with the backend that ran it.
pub fn select_backend(choice: BackendChoice) -> Result<BackendSelection> {
    const FALLBACK: &str =
        "families with kernels run on them; the rest on the CPU engine (rows say which)";
    match choice {
        BackendChoice::Cpu => Ok(BackendSelection {
            kind: BackendKind::Cpu,
            reason: "cpu (requested with --backend cpu)".into(),
        }),
        BackendChoice::Cuda => {
            // Opening the device gives the precise reason when there is
            // none (no PTX, no driver, no device).
            let dev = CudaBackend::new(0)?;
            Ok(BackendSelection {
                kind: BackendKind::Cuda,
                reason: format!("cuda: {}; {FALLBACK}", dev.device_name()),
            })
        }
        BackendChoice::Emu => Ok(BackendSelection {
            kind: BackendKind::Emu,
            reason: format!(
                "emu: SIMT emulator of kernels/*.cu on the CPU ({} workers, forward fiber order; \
                 slow: small T only); {FALLBACK}",
                EmuBackend::default_workers()
            ),
        }),
        BackendChoice::Auto => {
            let (kind, reason) = BackendKind::auto();
            Ok(match kind {
                BackendKind::Cuda => BackendSelection {
                    kind,
                    reason: format!("{reason}; {FALLBACK}"),
                },
                _ => BackendSelection { kind, reason },
            })
        }
    }
}

/// A kernel runner the sweep drives the families with kernels on.
enum Device {
    Cuda(CudaBackend),
    Emu(EmuBackend),
}

/// Worker threads: `threads`, or every core the OS reports.
pub fn resolve_threads(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// A rayon pool of `threads` workers, for the copy probe, input generation
/// and depth measurement (the scans run on the [`Cpu`] backend's own pool
/// of the same size).
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    if threads == 0 {
        return Err(crate::Error::size("threads", 0, "≥ 1").into());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| {
            crate::Error::BackendUnavailable {
                backend: "cpu",
                reason: format!("starting {threads} worker threads: {e}"),
            }
            .into()
        })
}

/// The CPU model name from `/proc/cpuinfo`, when there is one.
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// What a running sweep reports as it goes (for live output).
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The backend was chosen.
    Backend(&'a BackendSelection),
    /// The copy bandwidth was measured (GB/s, threads).
    CopyBandwidth {
        /// Read + written bytes per second, 1e9.
        gbs: f64,
        /// Threads of the probe (= the engine's).
        threads: usize,
    },
    /// A case finished.
    Row(&'a Row),
    /// A case was skipped.
    Skipped(&'a Skipped),
}

/// Number of progress steps a sweep takes (one per case and plan, plus the
/// bandwidth line).
pub fn case_count(config: &SweepConfig) -> usize {
    let shapes: usize = config
        .families
        .iter()
        .map(|&f| config::default_shapes(f, &config.diagonal_layouts).len())
        .sum();
    shapes * config.dtypes.len() * config.lengths.len() * config.plans.len()
        + Runner::cell_steps(config)
        + Runner::backward_steps(config)
        + Runner::varlen_steps(config)
        + usize::from(config.bandwidth_case.is_some())
}

/// Runs the sweep described by `config`, advancing `progress` once per
/// case and calling `on_event` as results arrive.
pub fn run(
    config: &SweepConfig,
    progress: &ProgressBar,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<SweepReport> {
    config.validate()?;
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let backend = select_backend(config.backend)?;
    on_event(Event::Backend(&backend));
    let device = match backend.kind {
        BackendKind::Cpu => None,
        BackendKind::Cuda => Some(Device::Cuda(CudaBackend::new(0)?)),
        BackendKind::Emu => Some(Device::Emu(EmuBackend::default())),
    };

    let cpu = match config.threads {
        Some(n) => Cpu::with_threads(n)?,
        None => Cpu::new(),
    };
    let threads = cpu.threads();
    let pool = thread_pool(threads)?;
    progress.set_message("measuring copy bandwidth");
    let copy_gbs = bandwidth::cpu_copy_gbs(&pool, config.copy_bytes, config.copy_reps)?;
    on_event(Event::CopyBandwidth {
        gbs: copy_gbs,
        threads,
    });
    progress.set_message("measuring the FMA peak");
    let fma_gflops = bandwidth::cpu_fma_gflops(&pool, FMA_PROBE_ITERS, config.copy_reps)?;

    progress.set_length(case_count(config) as u64);
    let mut ctx = Runner {
        config,
        cpu: &cpu,
        pool: &pool,
        copy_gbs,
        fma_gflops,
        progress,
        on_event,
        depth_cache: HashMap::new(),
        reverse_depth_cache: HashMap::new(),
        device: device.as_ref(),
        gpu_depth_cache: HashMap::new(),
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    for &family in &config.families {
        for shape in config::default_shapes(family, &config.diagonal_layouts) {
            for &dtype in &config.dtypes {
                match dtype {
                    DType::F32 => ctx.run_shape::<f32>(shape)?,
                    DType::F64 => ctx.run_shape::<f64>(shape)?,
                    DType::Bf16 => ctx.run_shape::<bf16>(shape)?,
                    DType::F16 => ctx.run_shape::<f16>(shape)?,
                }
            }
        }
    }
    for &cell in &config.cells {
        ctx.run_cell(cell)?;
    }
    let bandwidth = match config.bandwidth_case {
        Some(bw) => {
            let shape = Shape::Diagonal {
                batch: bw.batch,
                dim: bw.dim,
                layout: Layout::Btd,
            };
            progress.set_message(format!("bandwidth case {}", shape.describe()));
            let inputs = pool.install(|| {
                Inputs::<f32>::generate(shape, bw.len, false, mix_seed(config.seed, 0xb4d))
            })?;
            let mut bufs = Buffers::new(&inputs);
            let row =
                ctx.measure_case(&inputs, &mut bufs, PlanRequest::Auto, RowKind::Bandwidth)?;
            progress.inc(1);
            (ctx.on_event)(Event::Row(&row));
            Some(row)
        }
        None => None,
    };

    Ok(SweepReport {
        meta: report::Meta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.kind.to_string(),
            backend_reason: backend.reason,
            threads,
            cpu: cpu_model(),
            copy_gbs,
            fma_gflops,
            copy_bytes: config.copy_bytes,
            started_unix_s,
            wall_s: started.elapsed().as_secs_f64(),
            config: config.clone(),
        },
        rows: ctx.rows,
        bandwidth,
        skipped: ctx.skipped,
    })
}

/// Rounds of the FMA probe per worker: 96 chains × 2 flops × 2^18 rounds ≈
/// 50 MFLOP, a few milliseconds per run.
const FMA_PROBE_ITERS: usize = 1 << 18;

/// The state of one sweep while it runs.
struct Runner<'c, 'e> {
    config: &'c SweepConfig,
    cpu: &'c Cpu,
    pool: &'c rayon::ThreadPool,
    copy_gbs: f64,
    /// The FMA peak measured at the start, GFLOP/s.
    fma_gflops: f64,
    progress: &'c ProgressBar,
    on_event: &'e mut dyn FnMut(Event<'_>),
    /// Depth and work depend only on `(T, C)`: measure each pair once.
    depth_cache: HashMap<(usize, usize), Measured>,
    /// The same for the reverse engine of the backward rows.
    reverse_depth_cache: HashMap<(usize, usize), Measured>,
    /// The kernel runner of `cuda` / `emu`, if any.
    device: Option<&'c Device>,
    /// Kernel-measured depth by [`KernelPlanSummary::depth_key`](crate::kernels::KernelPlanSummary).
    gpu_depth_cache: HashMap<String, u64>,
    rows: Vec<Row>,
    skipped: Vec<Skipped>,
}

impl Runner<'_, '_> {
    /// Every `T` and plan of one family instance in storage type `S`.
    fn run_shape<S: Storage + bytemuck::Pod>(&mut self, shape: Shape) -> Result<()> {
        let cfg = self.config;
        let label = shape.label();
        for &len in &cfg.lengths {
            // Inputs and outputs alone (the sequential loop needs no more).
            let io = shape.estimate_bytes(len, len, S::DTYPE);
            if io > cfg.max_case_bytes {
                self.skip(
                    &label,
                    S::DTYPE,
                    len,
                    "*".into(),
                    format!(
                        "needs ~{} MiB > cap {} MiB",
                        io >> 20,
                        cfg.max_case_bytes >> 20
                    ),
                    cfg.plans.len(),
                );
                if self.wants_backward(shape, len) {
                    self.progress.inc(cfg.plans.len() as u64);
                }
                continue;
            }
            self.progress
                .set_message(format!("{label} {} T={len}: inputs", S::DTYPE));
            let seed = mix_seed(
                cfg.seed,
                fnv1a(&format!("{label}/{}/{len}", S::DTYPE.name())),
            );
            let inputs = self
                .pool
                .install(|| Inputs::<S>::generate(shape, len, false, seed))?;
            // One set of output buffers for every plan of this length: the
            // first warm-up faults its pages in, later plans reuse them.
            let mut bufs = Buffers::new(&inputs);
            // `∂L/∂out` of the backward rows, drawn once per length.
            let d_out = self
                .wants_backward(shape, len)
                .then(|| self.backward_d_out(&inputs));
            if let Some(device) = self.device {
                if self.kernel_rows(device, &inputs, &mut bufs, d_out.as_deref())? {
                    if self.wants_varlen(shape, len) {
                        let label = format!("{label} varlen");
                        let why = "varlen rows run on the CPU backend only".to_string();
                        let steps = 2 * cfg.plans.len();
                        self.skip(&label, S::DTYPE, len, "*".into(), why, steps);
                    }
                    continue;
                }
            }
            // The packed and padded inputs of the varlen rows, once per length.
            let vcase = if self.wants_varlen(shape, len) {
                self.varlen_case::<S>(shape, len)?
            } else {
                None
            };
            let vsteps = 2 * u64::from(vcase.is_some());
            for &request in &cfg.plans {
                let plan = match self.cpu.plan(&inputs.problem(), request) {
                    // A plan only some engines have (look-back) is skipped, not fatal.
                    Err(Error::Plan(why)) if request == PlanRequest::LookBack => {
                        self.skip(&label, S::DTYPE, len, request.to_string(), why, 1);
                        self.progress.inc(u64::from(d_out.is_some()) + vsteps);
                        continue;
                    }
                    r => r?,
                };
                let need = shape.estimate_bytes(len, plan.chunk, S::DTYPE);
                if need > cfg.max_case_bytes {
                    self.skip(
                        &label,
                        S::DTYPE,
                        len,
                        request.to_string(),
                        format!(
                            "needs ~{} MiB with {} chunks > cap {} MiB",
                            need >> 20,
                            plan.chunks,
                            cfg.max_case_bytes >> 20
                        ),
                        1,
                    );
                    self.progress.inc(u64::from(d_out.is_some()) + vsteps);
                    continue;
                }
                self.progress
                    .set_message(format!("{label} {} T={len} {request}", S::DTYPE));
                let row = self.measure_case(&inputs, &mut bufs, request, RowKind::Sweep)?;
                self.progress.inc(1);
                (self.on_event)(Event::Row(&row));
                self.rows.push(row.clone());
                if let Some(d_out) = &d_out {
                    self.backward_cpu(&inputs, &bufs.out, d_out, request, &row)?;
                }
                if let Some(vcase) = &vcase {
                    self.varlen_rows(vcase, request, &row)?;
                }
            }
        }
        Ok(())
    }

    fn skip(
        &mut self,
        label: &str,
        dtype: DType,
        len: usize,
        plan: String,
        reason: String,
        steps: usize,
    ) {
        let s = Skipped {
            label: label.to_string(),
            dtype,
            len,
            plan,
            reason,
        };
        self.progress.inc(steps as u64);
        (self.on_event)(Event::Skipped(&s));
        self.skipped.push(s);
    }

    /// Every plan of one input set on the device's kernels, when the
    /// family has kernels (`false` otherwise: the CPU engine runs it).
    ///
    /// With `d_out` (the grid point has backward rows), each forward row is
    /// followed by the backward row on the same runner; the saved states
    /// are the forward outputs, computed once on the CPU engine into `bufs`.
    fn kernel_rows<S: Storage + bytemuck::Pod>(
        &mut self,
        device: &Device,
        inputs: &Inputs<S>,
        bufs: &mut Buffers<S>,
        d_out: Option<&[S]>,
    ) -> Result<bool> {
        let cfg = self.config;
        let shape = inputs.shape();
        let label = shape.label();
        let view = inputs.view();
        let bytes = inputs.problem().bytes_moved();
        let mut states_ready = false;
        for &request in &cfg.plans {
            self.progress
                .set_message(format!("{label} {} T={} {request}", S::DTYPE, inputs.len()));
            let row = match device {
                Device::Cuda(r) => view.visit_kernels(KernelRow {
                    ctx: self,
                    runner: r,
                    shape,
                    len: inputs.len(),
                    bytes,
                    request,
                }),
                Device::Emu(r) => view.visit_kernels(KernelRow {
                    ctx: self,
                    runner: r,
                    shape,
                    len: inputs.len(),
                    bytes,
                    request,
                }),
            };
            let Some(row) = row else {
                return Ok(false);
            };
            let Some(row) = row? else {
                self.progress.inc(u64::from(d_out.is_some()));
                continue;
            };
            self.progress.inc(1);
            (self.on_event)(Event::Row(&row));
            self.rows.push(row.clone());
            if let Some(d_out) = d_out {
                if !states_ready {
                    let problem = inputs.problem();
                    self.cpu.scan_into(
                        &problem,
                        PlanRequest::Auto,
                        &mut bufs.out,
                        &mut bufs.h_last,
                    )?;
                    states_ready = true;
                }
                match device {
                    Device::Cuda(r) => {
                        self.backward_kernels(r, inputs, &bufs.out, d_out, request, &row)?
                    }
                    Device::Emu(r) => {
                        self.backward_kernels(r, inputs, &bufs.out, d_out, request, &row)?
                    }
                }
            }
        }
        Ok(true)
    }

    /// One case on a family's kernels through `runner`: plans on the
    /// runner's SM count, measures the depth by running the plan's launches
    /// on the depth-counting kernels, and times the launches only (inputs
    /// uploaded once, outputs allocated once; each timed run issues the
    /// plan's launches and waits with `synchronize`). `None` when the case
    /// exceeds the memory cap (reported as skipped).
    fn kernel_case<R: KernelRunner, P: KernelScan>(
        &mut self,
        runner: &R,
        shape: Shape,
        len: usize,
        bytes: usize,
        problem: &P,
        request: PlanRequest,
    ) -> Result<Option<Row>> {
        let label = shape.label();
        let dtype = <P::Elem as Storage>::DTYPE;
        let plan = match problem.kernel_plan(runner.sm_count(), request) {
            Err(Error::Plan(why)) if request == PlanRequest::LookBack => {
                self.skip(&label, dtype, len, request.to_string(), why, 1);
                return Ok(None);
            }
            r => r?,
        };
        let need = shape
            .estimate_bytes(len, len, dtype)
            .saturating_add(plan.scratch_bytes);
        if need > self.config.max_case_bytes {
            self.skip(
                &label,
                dtype,
                len,
                request.to_string(),
                format!(
                    "needs ~{} MiB with {} chunks > cap {} MiB",
                    need >> 20,
                    plan.chunks,
                    self.config.max_case_bytes >> 20
                ),
                1,
            );
            return Ok(None);
        }
        let depth = match self.gpu_depth_cache.get(&plan.depth_key) {
            Some(&d) => d,
            None => {
                let d = problem.kernel_depth(runner, request)?;
                self.gpu_depth_cache.insert(plan.depth_key.clone(), d);
                d
            }
        };

        let (plan, mut launches) = problem.kernel_prepare(runner, request)?;
        let timing = timing::time_runs(&self.config.timing, || {
            launches()?;
            runner.synchronize()
        })?;
        drop(launches);

        let elements = shape.batch() * len * shape.lanes();
        let secs = timing.median_s.max(1e-12);
        let gb_per_s = bytes as f64 / secs / 1e9;
        Ok(Some(Row {
            kind: RowKind::Sweep,
            backend: runner.backend_name().to_string(),
            timed: TIMED_LAUNCHES.to_string(),
            family: shape.family().name().to_string(),
            label,
            dtype,
            shape: shape.describe(),
            batch: shape.batch(),
            lanes: shape.lanes(),
            len,
            plan: format!("{request} [{}]", plan.kind),
            chunk: plan.chunk,
            chunks: plan.chunks,
            depth,
            work: 0,
            depth_formula: plan.depth_formula,
            work_formula: 0,
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            elements,
            melem_per_s: elements as f64 / secs / 1e6,
            bytes_moved: bytes,
            gb_per_s,
            pct_copy_bw: 100.0 * gb_per_s / self.copy_gbs,
            iterations: None,
            flops: flops_of(shape, len),
            pct_fma_peak: pct_fma(flops_of(shape, len), secs, self.fma_gflops),
            backward_over_forward: None,
        }))
    }

    /// Depth and work of `plan` over `len` steps, measured by running the
    /// engine over depth counters once per `(T, chunk)`.
    fn measured(&mut self, len: usize, plan: &crate::scan::Plan) -> Measured {
        let pool = self.pool;
        *self
            .depth_cache
            .entry((len, plan.chunk))
            .or_insert_with(|| pool.install(|| measure(len, plan)))
    }

    /// Reports and keeps a row that follows a forward row (backward,
    /// varlen): one progress step, one event.
    fn push_row(&mut self, row: Row) {
        self.progress.inc(1);
        (self.on_event)(Event::Row(&row));
        self.rows.push(row);
    }

    /// Plans, measures depth, times, and builds the row of one case.
    fn measure_case<S: Storage>(
        &mut self,
        inputs: &Inputs<S>,
        bufs: &mut Buffers<S>,
        request: PlanRequest,
        kind: RowKind,
    ) -> Result<Row> {
        let shape = inputs.shape();
        let len = inputs.len();
        let problem = inputs.problem();
        let cpu = self.cpu;
        let plan = cpu.plan(&problem, request)?;
        let measured = self.measured(len, &plan);

        let Buffers { out, h_last } = bufs;
        let timing = timing::time_runs(&self.config.timing, || {
            cpu.scan_into(&problem, request, out, h_last).map(|_| ())
        })?;
        std::hint::black_box((&out, &h_last));

        let elements = shape.batch() * len * shape.lanes();
        let bytes = problem.bytes_moved();
        let secs = timing.median_s.max(1e-12);
        let gb_per_s = bytes as f64 / secs / 1e9;
        Ok(Row {
            kind,
            backend: "cpu".to_string(),
            timed: TIMED_HOST_CALL.to_string(),
            family: shape.family().name().to_string(),
            label: shape.label(),
            dtype: S::DTYPE,
            shape: shape.describe(),
            batch: shape.batch(),
            lanes: shape.lanes(),
            len,
            plan: request.to_string(),
            chunk: plan.chunk,
            chunks: plan.chunks,
            depth: measured.depth,
            work: measured.work,
            depth_formula: plan.depth,
            work_formula: plan.work,
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            elements,
            melem_per_s: elements as f64 / secs / 1e6,
            bytes_moved: bytes,
            gb_per_s,
            pct_copy_bw: 100.0 * gb_per_s / self.copy_gbs,
            iterations: None,
            flops: flops_of(shape, len),
            pct_fma_peak: pct_fma(flops_of(shape, len), secs, self.fma_gflops),
            backward_over_forward: None,
        })
    }
}

/// Flops of one pass of `shape` at length `len` (saturating: a report
/// field, never an allocation size).
fn flops_of(shape: Shape, len: usize) -> u64 {
    (shape.flops_per_step() as u64)
        .saturating_mul(shape.batch() as u64)
        .saturating_mul(len as u64)
}

/// `flops` in `secs` as a percentage of `peak_gflops`.
fn pct_fma(flops: u64, secs: f64, peak_gflops: f64) -> f64 {
    100.0 * flops as f64 / secs / 1e9 / peak_gflops.max(1e-12)
}

/// Visits a problem with [`Runner::kernel_case`].
struct KernelRow<'x, 'c, 'e, R> {
    ctx: &'x mut Runner<'c, 'e>,
    runner: &'x R,
    shape: Shape,
    len: usize,
    bytes: usize,
    request: PlanRequest,
}

impl<R: KernelRunner, S> KernelVisitor<S> for KernelRow<'_, '_, '_, R> {
    type Out = Result<Option<Row>>;
    fn visit<P: KernelScan<Elem = S>>(self, problem: &P) -> Self::Out {
        self.ctx.kernel_case(
            self.runner,
            self.shape,
            self.len,
            self.bytes,
            problem,
            self.request,
        )
    }
}

/// [`Row::timed`] of CPU rows: one call of [`Cpu::scan_into`].
pub const TIMED_HOST_CALL: &str = "host-call";
/// [`Row::timed`] of kernel rows: the plan's launches plus `synchronize`.
pub const TIMED_LAUNCHES: &str = "launches+sync";

/// Output buffers of one problem (all outputs and the final states).
struct Buffers<S> {
    out: Vec<S>,
    h_last: Vec<S>,
}

impl<S: Storage> Buffers<S> {
    fn new(inputs: &Inputs<S>) -> Self {
        let p = inputs.problem();
        Buffers {
            out: vec![S::default(); p.output_len()],
            h_last: vec![S::default(); p.final_len()],
        }
    }
}

/// FNV-1a, to turn a case's name into a seed salt.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The files [`write_outputs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// `sweep.csv`: one line per row.
    pub csv: PathBuf,
    /// `sweep.json`: the whole [`SweepReport`].
    pub json: PathBuf,
    /// `depth_vs_t.svg`.
    pub depth_plot: PathBuf,
    /// `time_vs_t.svg`.
    pub time_plot: PathBuf,
    /// `hierarchy.svg`: see [`plot::hierarchy_plot`].
    pub hierarchy_plot: PathBuf,
}

/// Writes the CSV, the JSON and the two plots into `dir` (created if
/// missing).
pub fn write_outputs(report: &SweepReport, dir: &Path) -> Result<Outputs> {
    std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let out = Outputs {
        csv: dir.join("sweep.csv"),
        json: dir.join("sweep.json"),
        depth_plot: dir.join("depth_vs_t.svg"),
        time_plot: dir.join("time_vs_t.svg"),
        hierarchy_plot: dir.join("hierarchy.svg"),
    };
    report::write_file(&out.csv, &report.csv())?;
    report::write_file(&out.json, &report.json()?)?;
    plot::depth_plot(&report.rows, &out.depth_plot)?;
    plot::time_plot(&report.rows, &out.time_plot)?;
    plot::hierarchy_plot(&report.rows, &out.hierarchy_plot)?;
    Ok(out)
}
