//! `parascan bench`: every family on the `GPU.md` shapes under every plan
//! its planner considers, on the CUDA kernels (or their emulator), in one
//! run with its own copy-bandwidth yardstick.
//!
//! A run
//! 1. opens the backend ([`BenchConfig::backend`]: `cuda`, `emu`, or `auto`,
//!    which is cuda when a device opens and the emulator otherwise) and
//!    measures the device copy bandwidth;
//! 2. for every scan shape ([`cases::scan_cases`]) draws inputs on the host
//!    (in parallel, a counter-based hash; `|a| < 1` so states stay
//!    bounded), uploads them once ([`crate::kernels::resident`]), runs
//!    every plan of the family ([`cases::plans`]) on those buffers, and
//!    frees them before the next shape;
//! 3. times each plan's launches ([`timing::time_launches`]: CUDA events on
//!    the GPU, warm-up, median of as many runs as fit the case's budget),
//!    checks that the final states are finite, and takes the depth from
//!    the depth-counting kernels when the outputs are small enough
//!    ([`BenchConfig::depth_measure_max`]), else from the plan's formula;
//! 4. runs Newton on `DiagGru` (`bench::newton`) against the cell's sequential
//!    kernel, next to one Diagonal scan of the same shape per plan;
//! 5. returns a [`BenchReport`] (markdown for `BENCHMARKS.md`, CSV, JSON).
//!
//! Rows come out as they are measured ([`Event::Row`]); a case that fails
//! is recorded ([`report::Skipped`]) and the run goes on, so one bad kernel
//! does not cost a device session its other numbers.

pub mod cases;
mod newton;
pub mod report;
pub mod timing;

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use cases::{BenchFamily, NewtonCase, ScanCase};
pub use report::{write_outputs, BenchReport, BenchRow, CsvSink, Meta, Outputs, Skipped};
pub use timing::RepPolicy;

use crate::backend::cuda::CudaBackend;
use crate::backend::emu::EmuBackend;
use crate::backend::launch::KernelRunner;
use crate::dtype::{DType, Storage};
use crate::family::{Layout, LinearProblem};
use crate::kernels::resident::{KernelResident, Resident};
use crate::scan::PlanRequest;
use crate::sweep::cases::{mix_seed, Inputs, View};
use crate::sweep::config::{invalid, BackendChoice, Shape};
use crate::sweep::Result;

/// `--scale` under the emulator when none is given: `T / 4096`.
pub const EMU_DEFAULT_SCALE: u32 = 12;
/// Largest `--scale` (every `T` is 1 by then).
pub const MAX_SCALE: u32 = 40;

/// What `parascan bench` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// `Cuda`, `Emu`, or `Auto` (cuda when a device opens, else the
    /// emulator); `Cpu` is rejected (the bench times the kernels).
    pub backend: BackendChoice,
    /// The shape groups to run, in order.
    pub families: Vec<BenchFamily>,
    /// One `T` per length list and [`RepPolicy::quick`].
    pub quick: bool,
    /// Divide every `T` by `2^scale` (at least 1); `None`: 0 on a GPU,
    /// [`EMU_DEFAULT_SCALE`] on the emulator.
    pub scale: Option<u32>,
    /// Repetitions of every scan case.
    pub reps: RepPolicy,
    /// Wall time the Newton solves of one (`T`, plan) may take in all
    /// (at least one timed solve after one warm-up).
    pub newton_budget: Duration,
    /// Bytes per buffer of the copy probe.
    pub copy_bytes: usize,
    /// Seed of the inputs (each case derives its own).
    pub seed: u64,
    /// Measure depth on the depth-counting kernels when a case has at most
    /// this many outputs (the measurement allocates and downloads one `u32`
    /// per output); larger cases report the plan's formula.
    pub depth_measure_max: usize,
    /// Stop starting new cases after this long (the rest is listed as
    /// skipped); `None`: no limit.
    pub time_limit: Option<Duration>,
    /// The command line, for the report's header.
    pub command: String,
}

impl Default for BenchConfig {
    /// Every family, full reps, auto backend, no scale override.
    fn default() -> Self {
        BenchConfig {
            backend: BackendChoice::Auto,
            families: BenchFamily::ALL.to_vec(),
            quick: false,
            scale: None,
            reps: RepPolicy::full(),
            newton_budget: Duration::from_millis(1000),
            copy_bytes: 256 << 20,
            seed: 0xbe4c,
            depth_measure_max: 1 << 24,
            time_limit: None,
            command: "parascan bench".into(),
        }
    }
}

impl BenchConfig {
    /// `--quick`: one `T` per length list, [`RepPolicy::quick`], a short
    /// Newton budget.
    pub fn quick() -> Self {
        BenchConfig {
            quick: true,
            reps: RepPolicy::quick(),
            newton_budget: Duration::from_millis(200),
            ..BenchConfig::default()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.backend == BackendChoice::Cpu {
            return Err(invalid(
                "backend",
                "cuda, emu or auto (the bench times the kernels; `parascan sweep --backend \
                 cpu` times the CPU engine); got `cpu`"
                    .into(),
            ));
        }
        if self.families.is_empty() {
            return Err(invalid("shapes", "at least one family".into()));
        }
        if let Some(s) = self.scale {
            if s > MAX_SCALE {
                return Err(invalid("scale", format!("0 ..= {MAX_SCALE}; got {s}")));
            }
        }
        if self.copy_bytes < 4 {
            return Err(invalid("copy-mb", "at least one f32".into()));
        }
        Ok(())
    }
}

/// What a running bench reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The backend opened and the copy bandwidth was measured.
    Started(&'a Meta),
    /// A case's inputs are being drawn and uploaded.
    Case(&'a str),
    /// A row was measured.
    Row(&'a BenchRow),
    /// A (shape, plan) did not produce a row.
    Skipped(&'a Skipped),
}

/// The commit this binary was built from: `PARASCAN_COMMIT` from the
/// environment when set (the device bundle sets it), else what `git`
/// says about the source folder when it still exists (with `-dirty` for
/// uncommitted changes to tracked files), else what `build.rs` recorded,
/// else `unknown`.
pub fn commit() -> String {
    if let Ok(c) = std::env::var("PARASCAN_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if std::path::Path::new(dir).is_dir() {
        if let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|h| !h.is_empty()) {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            return if dirty { format!("{head}-dirty") } else { head };
        }
    }
    env!("PARASCAN_BUILD_COMMIT").to_string()
}

/// Runs the bench described by `config`, calling `on_event` as results
/// arrive.
pub fn run(config: &BenchConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<BenchReport> {
    config.validate()?;
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (device, reason) = open(config.backend)?;
    let device_open_s = started.elapsed().as_secs_f64();
    match &device {
        Device::Cuda(dev) => {
            // The emulated driver runs the CUDA path on the SIMT emulator:
            // emulator-sized copies and lengths, and a caption that says so.
            let emulated = dev.is_emulated();
            let bytes = if emulated {
                config.copy_bytes.min(EMU_COPY_BYTES)
            } else {
                config.copy_bytes
            };
            let copy_gbs = dev.copy_bandwidth_gbs(bytes, 20)?;
            let timing = if emulated {
                "Times: CUDA events of the emulated CUDA driver (the SIMT emulator on the CPU; \
                 the numbers say nothing about a GPU)."
            } else {
                "Times: CUDA events around each run's launches, inputs already on the \
                 device, median after warm-up."
            };
            let meta = Meta {
                backend: "cuda".into(),
                backend_reason: reason,
                device: dev.device_name(),
                sm_count: KernelRunner::sm_count(dev),
                copy_gbs,
                copy_method: format!(
                    "copy_f32, {} MiB buffers, CUDA events, median of 20",
                    bytes >> 20
                ),
                timing: timing.into(),
                ..meta_base(
                    config,
                    started_unix_s,
                    if emulated { EMU_DEFAULT_SCALE } else { 0 },
                    device_open_s,
                )
            };
            Bench::new(config, dev, meta, started, on_event).run()
        }
        Device::Emu(emu) => {
            let bytes = config.copy_bytes.min(EMU_COPY_BYTES);
            let copy_gbs = timing::copy_bandwidth_gbs(emu, bytes, &config.reps)?;
            let meta = Meta {
                backend: "emu".into(),
                backend_reason: reason,
                device: format!(
                    "SIMT emulator, {} workers on {}",
                    emu.workers(),
                    crate::sweep::cpu_model().unwrap_or_else(|| "an unknown CPU".into())
                ),
                sm_count: emu.sm_count(),
                copy_gbs,
                copy_method: format!("emulated copy_f32, {} MiB buffers", bytes >> 20),
                timing: "Times: wall clock around each run's emulated launches (correctness \
                         backend: the numbers say nothing about a GPU)."
                    .into(),
                ..meta_base(config, started_unix_s, EMU_DEFAULT_SCALE, device_open_s)
            };
            Bench::new(config, emu, meta, started, on_event).run()
        }
    }
}

/// Copy-probe buffers in the emulator (it copies at memcpy speed at best).
const EMU_COPY_BYTES: usize = 16 << 20;

fn meta_base(
    config: &BenchConfig,
    started_unix_s: u64,
    default_scale: u32,
    device_open_s: f64,
) -> Meta {
    Meta {
        version: env!("CARGO_PKG_VERSION").into(),
        commit: commit(),
        date: report::utc_date(started_unix_s),
        started_unix_s,
        command: config.command.clone(),
        backend: String::new(),
        backend_reason: String::new(),
        device: String::new(),
        sm_count: 0,
        copy_gbs: 0.0,
        copy_method: String::new(),
        timing: String::new(),
        reps: config.reps,
        scale: config.scale.unwrap_or(default_scale),
        quick: config.quick,
        families: config.families.clone(),
        device_open_s,
        wall_s: 0.0,
    }
}

enum Device {
    Cuda(CudaBackend),
    Emu(EmuBackend),
}

fn open(choice: BackendChoice) -> Result<(Device, String)> {
    Ok(match choice {
        BackendChoice::Cuda => {
            let dev = CudaBackend::new(0)?;
            let why = format!("cuda (requested): {}", dev.device_name());
            (Device::Cuda(dev), why)
        }
        BackendChoice::Emu => (Device::Emu(EmuBackend::default()), "emu (requested)".into()),
        BackendChoice::Auto | BackendChoice::Cpu => match CudaBackend::new(0) {
            Ok(dev) => {
                let why = format!("cuda: {}", dev.device_name());
                (Device::Cuda(dev), why)
            }
            Err(e) => (
                Device::Emu(EmuBackend::default()),
                format!("emu, the kernels' emulator, because no GPU opened ({e})"),
            ),
        },
    })
}

/// One run on one runner.
struct Bench<'c, 'e, R> {
    config: &'c BenchConfig,
    runner: &'c R,
    meta: Meta,
    started: Instant,
    on_event: &'e mut dyn FnMut(Event<'_>),
    /// Measured depth by the plan's depth key.
    depths: HashMap<String, u64>,
    rows: Vec<BenchRow>,
    skipped: Vec<Skipped>,
}

/// One scan case's identity in rows.
struct CaseInfo {
    family: BenchFamily,
    case: String,
    shape: String,
    dtype: DType,
    batch: usize,
    lanes: usize,
    len: usize,
    bytes: usize,
}

impl<'c, 'e, R: KernelRunner> Bench<'c, 'e, R> {
    fn new(
        config: &'c BenchConfig,
        runner: &'c R,
        meta: Meta,
        started: Instant,
        on_event: &'e mut dyn FnMut(Event<'_>),
    ) -> Self {
        Bench {
            config,
            runner,
            meta,
            started,
            on_event,
            depths: HashMap::new(),
            rows: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn run(mut self) -> Result<BenchReport> {
        (self.on_event)(Event::Started(&self.meta));
        let scale = self.meta.scale;
        for &family in &self.config.families {
            if family == BenchFamily::Newton {
                for case in cases::newton_cases(self.config.quick, scale) {
                    self.newton_case(case);
                }
            } else {
                for case in cases::scan_cases(family, self.config.quick, scale) {
                    self.scan_case(&case);
                }
            }
        }
        self.meta.wall_s = self.started.elapsed().as_secs_f64();
        Ok(BenchReport {
            meta: self.meta,
            rows: self.rows,
            skipped: self.skipped,
        })
    }

    fn past_deadline(&self) -> bool {
        self.config
            .time_limit
            .is_some_and(|limit| self.started.elapsed() >= limit)
    }

    fn push_row(&mut self, row: BenchRow) {
        (self.on_event)(Event::Row(&row));
        self.rows.push(row);
    }

    fn skip(&mut self, case: &str, plan: &str, reason: String, failed: bool) {
        let s = Skipped {
            case: case.to_string(),
            plan: plan.to_string(),
            reason,
            failed,
        };
        (self.on_event)(Event::Skipped(&s));
        self.skipped.push(s);
    }

    /// Skips every plan of a case when the time limit has passed.
    fn deadline_skip(&mut self, case: &str) -> bool {
        if self.past_deadline() {
            let limit = self.config.time_limit.unwrap_or_default().as_secs_f64();
            self.skip(
                case,
                "*",
                format!("time limit of {limit:.0} s reached"),
                false,
            );
            return true;
        }
        false
    }

    fn scan_case(&mut self, case: &ScanCase) {
        let name = format!(
            "{} {} {}",
            case_label(&case.shape),
            shape_text(&case.shape, case.len),
            case.dtype.name()
        );
        if self.deadline_skip(&name) {
            return;
        }
        let result = match case.dtype {
            DType::F32 => self.scan_case_in::<f32>(case, &name),
            DType::Bf16 => self.scan_case_in::<half::bf16>(case, &name),
            DType::F16 => self.scan_case_in::<half::f16>(case, &name),
            DType::F64 => self.scan_case_in::<f64>(case, &name),
        };
        if let Err(e) = result {
            self.skip(&name, "*", e.to_string(), true);
        }
    }

    fn scan_case_in<S: Storage + bytemuck::Pod>(
        &mut self,
        case: &ScanCase,
        name: &str,
    ) -> Result<()> {
        (self.on_event)(Event::Case(name));
        let seed = mix_seed(self.config.seed, fnv1a(name));
        let (resident, bytes) = {
            let inputs = Inputs::<S>::generate(case.shape, case.len, false, seed)?;
            let bytes = inputs.problem().bytes_moved();
            (upload(&inputs.view(), self.runner)?, bytes)
            // The host inputs are freed here; the device copy stays.
        };
        let info = CaseInfo {
            family: case.family,
            case: case_label(&case.shape),
            shape: shape_text(&case.shape, case.len),
            dtype: case.dtype,
            batch: case.shape.batch(),
            lanes: case.shape.lanes(),
            len: case.len,
            bytes,
        };
        self.scan_plans(&resident, &info, &cases::plans(case.family, case.len));
        Ok(())
    }

    /// Every plan in `requests` on one resident problem; returns each
    /// measured request's median milliseconds.
    fn scan_plans(
        &mut self,
        resident: &Resident,
        info: &CaseInfo,
        requests: &[PlanRequest],
    ) -> Vec<(PlanRequest, f64)> {
        let mut medians = Vec::new();
        let mut sequential_ms = None;
        for &request in requests {
            let plan = request.to_string();
            let label = format!("{} {}", info.case, info.shape);
            if self.deadline_skip(&format!("{label} {plan}")) {
                continue;
            }
            match self.scan_plan(resident, info, request) {
                Ok(mut row) => {
                    if request == PlanRequest::Sequential {
                        sequential_ms = Some(row.median_ms);
                    }
                    row.speedup_vs_seq = sequential_ms.map(|s| s / row.median_ms.max(1e-12));
                    medians.push((request, row.median_ms));
                    let forward_ms = row.median_ms;
                    self.push_row(row);
                    // The reverse scan of the family's backward pass (Diagonal:
                    // `a_{t+1}`; PermDiagonal: the inverse permutations) moves
                    // the forward's bytes on the same buffers.
                    if matches!(
                        info.family,
                        BenchFamily::Diagonal | BenchFamily::PermDiagonal
                    ) {
                        match self.backward_plan(resident, info, request, forward_ms) {
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
        medians
    }

    fn scan_plan(
        &mut self,
        resident: &Resident,
        info: &CaseInfo,
        request: PlanRequest,
    ) -> Result<BenchRow> {
        let runner = self.runner;
        resident.poison(runner)?;
        let (plan, mut launches) = resident.prepare(runner, request)?;
        let timing = timing::time_launches(runner, &self.config.reps, &mut launches)?;
        drop(launches);
        let finite = resident.final_states(runner)?.iter().all(|x| x.is_finite());
        let (depth, depth_measured) = if resident.output_elements() <= self.config.depth_measure_max
        {
            let d = match self.depths.get(&plan.depth_key) {
                Some(&d) => d,
                None => {
                    let d = resident.measure_depth(runner, request)?;
                    self.depths.insert(plan.depth_key.clone(), d);
                    d
                }
            };
            (d, true)
        } else {
            (plan.depth_formula, false)
        };
        let mut row = self.row(
            info,
            request.to_string(),
            plan.kind,
            plan.chunk,
            plan.chunks,
            depth,
            depth_measured,
            timing,
            finite,
        );
        let elements = (info.batch * info.len * info.lanes).max(1);
        row.plan_bytes_per_elem = Some(plan.plan_bytes as f64 / elements as f64);
        Ok(row)
    }

    /// The reverse scan of the Diagonal or PermDiagonal backward pass
    /// (`g_t = A_{t+1}ᵀ g_{t+1} + dy_t`, the `_rev_` kernels) under the same
    /// plan, on the same resident buffers (the bytes are the forward's: a
    /// transposed step is a step of the same family); `forward_ms` is the
    /// forward row's median.
    fn backward_plan(
        &mut self,
        resident: &Resident,
        info: &CaseInfo,
        request: PlanRequest,
        forward_ms: f64,
    ) -> Result<BenchRow> {
        let runner = self.runner;
        resident.poison(runner)?;
        let (plan, mut launches) = resident.prepare_reverse(runner, request)?;
        let timing = timing::time_launches(runner, &self.config.reps, &mut launches)?;
        drop(launches);
        let finite = resident.final_states(runner)?.iter().all(|x| x.is_finite());
        let (depth, depth_measured) = if resident.output_elements() <= self.config.depth_measure_max
        {
            let d = match self.depths.get(&plan.depth_key) {
                Some(&d) => d,
                None => {
                    let d = resident.measure_depth_reverse(runner, request)?;
                    self.depths.insert(plan.depth_key.clone(), d);
                    d
                }
            };
            (d, true)
        } else {
            (plan.depth_formula, false)
        };
        let backward = CaseInfo {
            case: format!("{} backward", info.case),
            shape: info.shape.clone(),
            ..*info
        };
        let mut row = self.row(
            &backward,
            request.to_string(),
            plan.kind,
            plan.chunk,
            plan.chunks,
            depth,
            depth_measured,
            timing,
            finite,
        );
        let elements = (info.batch * info.len * info.lanes).max(1);
        row.plan_bytes_per_elem = Some(plan.plan_bytes as f64 / elements as f64);
        row.backward_over_forward = Some(row.median_ms / forward_ms.max(1e-12));
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        info: &CaseInfo,
        plan: String,
        kind: String,
        chunk: usize,
        chunks: usize,
        depth: u64,
        depth_measured: bool,
        timing: timing::Timing,
        finite: bool,
    ) -> BenchRow {
        let secs = timing.median_s.max(1e-12);
        let gb_per_s = info.bytes as f64 / secs / 1e9;
        BenchRow {
            family: info.family,
            case: info.case.clone(),
            shape: info.shape.clone(),
            dtype: info.dtype,
            batch: info.batch,
            lanes: info.lanes,
            len: info.len,
            plan,
            kind,
            chunk,
            chunks,
            depth,
            depth_measured,
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            bytes_moved: info.bytes,
            gb_per_s,
            plan_bytes_per_elem: None,
            pct_copy_bw: 100.0 * gb_per_s / self.meta.copy_gbs.max(1e-12),
            ns_per_token: secs * 1e9 / (info.batch * info.len).max(1) as f64,
            speedup_vs_seq: None,
            finite,
            iterations: None,
            ms_per_iter: None,
            iter_over_scan: None,
            backward_over_forward: None,
        }
    }
}

/// Device bandwidth the `--list` estimate assumes (an H100's HBM3, about).
const LIST_DEVICE_GBS: f64 = 3000.0;
/// Host-to-device bandwidth the `--list` estimate assumes (pageable copies).
const LIST_UPLOAD_GBS: f64 = 20.0;

/// The cases `config` runs (`--list`): one line per shape with its plans,
/// the bytes one pass moves and the bytes uploaded, then a rough device
/// time: uploads, the timed runs each plan's budget allows at
/// 3 TB/s, and the warm-ups. Sequential plans of few-lane shapes are
/// latency-bound, not bandwidth-bound; the slow-run rule caps them at one
/// timed run each, which the estimate counts as one pass.
pub fn list_cases(config: &BenchConfig) -> String {
    use std::fmt::Write as _;
    let scale = config.scale.unwrap_or(0);
    let p = &config.reps;
    let mut s = String::new();
    let (mut total_s, mut uploaded) = (0.0, 0usize);
    // Seconds the timing of one plan takes when a run moves `bytes`.
    let plan_s = |bytes: usize| {
        let run = bytes as f64 / (LIST_DEVICE_GBS * 1e9);
        let reps = p.reps_after(run) as f64;
        run * (p.warmup as f64 + reps)
    };
    for &family in &config.families {
        if family == BenchFamily::Newton {
            for c in cases::newton_cases(config.quick, scale) {
                let plans = cases::newton_plans(c.len);
                let x = 4 * c.batch * c.len * 3 * c.units;
                let scan = 12 * c.batch * c.len * c.units;
                // An iteration reads x and writes the scan's inputs (about
                // two scans' bytes), then scans; about four per solve, and
                // at least two solves (warm-up and one timed) per plan.
                let solve = 4.0 * (x + 2 * scan) as f64 / (LIST_DEVICE_GBS * 1e9);
                let case_s = (plans.len() - 1) as f64 * (plan_s(scan) + 2.0 * solve)
                    + plans.len() as f64 * 2.0 * x as f64 / (LIST_UPLOAD_GBS * 1e9);
                total_s += case_s;
                uploaded += x + 8 * c.batch * c.len * c.units;
                let _ = writeln!(
                    s,
                    "newton diag-gru [B,T,n]=[{},{},{}]: {} ({} MB of x per solve) ≈ {:.1} s",
                    c.batch,
                    c.len,
                    c.units,
                    labels(&plans),
                    x >> 20,
                    case_s
                );
            }
            continue;
        }
        for c in cases::scan_cases(family, config.quick, scale) {
            let plans = cases::plans(family, c.len);
            let pass = c.shape.estimate_bytes(c.len, c.len, c.dtype);
            let (ins, _) = c.shape.scalars_per_step();
            let up =
                c.shape.batch() * c.len * (ins * c.dtype.size() + c.shape.index_bytes_per_step());
            let case_s = up as f64 / (LIST_UPLOAD_GBS * 1e9) + plans.len() as f64 * plan_s(pass);
            total_s += case_s;
            uploaded += up;
            let _ = writeln!(
                s,
                "{} {} {}: {}; {} MB per pass ({:.2} ms at 3 TB/s), {} MB uploaded ≈ {:.1} s",
                case_label(&c.shape),
                shape_text(&c.shape, c.len),
                c.dtype.name(),
                labels(&plans),
                pass >> 20,
                pass as f64 / (LIST_DEVICE_GBS * 1e9) * 1e3,
                up >> 20,
                case_s
            );
        }
    }
    let _ = writeln!(
        s,
        "\nestimate: ≈ {total_s:.0} s of device time plus input generation on the host \
         ({} GB uploaded at ~{LIST_UPLOAD_GBS:.0} GB/s, passes at {:.0} TB/s; \
         latency-bound sequential plans add up to ~0.5 s each){}",
        uploaded >> 30,
        LIST_DEVICE_GBS / 1e3,
        if scale > 0 {
            format!("; T / 2^{scale}")
        } else {
            String::new()
        }
    );
    s
}

fn labels(plans: &[PlanRequest]) -> String {
    plans
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Uploads a problem whose family has resident kernels.
fn upload<S: Storage + bytemuck::Pod, R: KernelRunner>(
    view: &View<'_, S>,
    runner: &R,
) -> Result<Resident> {
    Ok(match view {
        View::Diagonal(p) => p.kernel_upload(runner)?,
        View::PermDiagonal(p) => p.kernel_upload(runner)?,
        View::Dplr(p) => p.kernel_upload(runner)?,
        View::BlockDiagonal(_) => {
            return Err(invalid(
                "shapes",
                "a family the bench does not time (block-diagonal)".into(),
            ))
        }
    })
}

/// The family instance's name in rows: `diagonal` (the shape says the
/// layout), `perm-diagonal n=5`, `dplr 64x64 r1`.
fn case_label(shape: &Shape) -> String {
    match shape {
        Shape::Diagonal { .. } => "diagonal".into(),
        _ => shape.label(),
    }
}

/// The shape with `T` filled in, e.g. `[B,D,T]=[8,1536,65536]`.
pub fn shape_text(shape: &Shape, len: usize) -> String {
    match *shape {
        Shape::Diagonal {
            batch,
            dim,
            layout: Layout::Btd,
        } => format!("[B,T,D]=[{batch},{len},{dim}]"),
        Shape::Diagonal {
            batch,
            dim,
            layout: Layout::Bdt,
        } => format!("[B,D,T]=[{batch},{dim},{len}]"),
        Shape::PermDiagonal { batch, n } => format!("[B,T,n]=[{batch},{len},{n}] u8"),
        Shape::BlockDiagonal {
            batch,
            blocks,
            block,
        } => format!("[B,T,nb,k,k]=[{batch},{len},{blocks},{block},{block}]"),
        Shape::Dplr { .. } => shape.describe().replacen(" n=", &format!(" T={len} n="), 1),
    }
}

/// FNV-1a, to turn a case's name into a seed salt.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
