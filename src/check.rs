//! `parascan check`: every family × dtype × plan on every available backend
//! against the f64 sequential oracle ([`crate::oracle`]).
//!
//! Inputs are random ([`crate::sweep::cases`]) with `T = 1`, odd lengths
//! and lengths that are not a multiple of the chunk, each with and without
//! `h_0`. The oracle runs on the same already-rounded inputs, so half
//! precision storage is judged only on what the engine adds: compute
//! rounding and one rounding per stored output. Output buffers are
//! poisoned with NaN before every run, so an element the engine forgets to
//! write makes the error NaN, which fails.
//!
//! Families with kernels ([`Family::has_kernels`]) also run on them through
//! [`KernelScan`]: in the SIMT emulator always (lengths up to
//! [`EMU_CHECK_MAX_T`], rotating forward, reverse and shuffled fiber orders
//! from case to case, plus [`KERNEL_P3_CASE`] and [`KERNEL_P4_CASE`] for Diagonal), and on the GPU when a
//! device opens (else the report says `cuda: not checked: <reason>`).

use std::fmt::Write as _;

use half::{bf16, f16};
use indicatif::ProgressBar;

use crate::backend::cuda::CudaBackend;
use crate::backend::emu::{EmuBackend, FiberOrder};
use crate::backend::launch::KernelRunner;
use crate::backend::{BackendKind, Cpu};
use crate::dtype::{DType, Storage};
use crate::family::dplr::DplrOutput;
use crate::family::{Layout, LinearProblem};
use crate::kernels::{KernelOutputs, KernelScan};
use crate::oracle::rel_l2;
use crate::scan::PlanRequest;
use crate::sweep::cases::{mix_seed, Inputs, KernelVisitor};
use crate::sweep::config::{invalid, Family, Shape};
use crate::sweep::Result;

/// The largest relative L2 error accepted for a scan of `len` steps stored
/// as `dtype`, against the f64 oracle on the same (rounded) inputs.
///
/// - `f64`: `1e-12 · log2 T`; `f32`: `1e-5 · log2 T` (compute rounding
///   grows with the depth of the combine tree, about `log2 T`, with
///   margin for sequential chains of contractions);
/// - `bf16`: `8e-3`, `f16`: `1e-3` (one rounding of each stored output,
///   `2^-9` and `2^-12` relative at worst, dominates everything else).
///
/// `log2 T` is taken as at least 1, so `T = 1` gets the `T = 2` bound.
pub fn tolerance(dtype: DType, len: usize) -> f64 {
    let log_t = (len.max(2) as f64).log2();
    match dtype {
        DType::F64 => 1e-12 * log_t,
        DType::F32 => 1e-5 * log_t,
        DType::Bf16 => 8e-3,
        DType::F16 => 1e-3,
    }
}

/// What `check` runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckConfig {
    /// Families (each expands to its [`check_shapes`]).
    pub families: Vec<Family>,
    /// Storage dtypes.
    pub dtypes: Vec<DType>,
    /// Plans each case runs under.
    pub plans: Vec<PlanRequest>,
    /// Sequence lengths.
    pub lengths: Vec<usize>,
    /// Engine threads (all cores when `None`).
    pub threads: Option<usize>,
    /// Base seed; the report prints it so a failure can be replayed.
    pub seed: u64,
    /// Backends to check. `None`: the CPU engine, the emulated kernels, and
    /// the GPU when a device opens (else the report says why not).
    /// `Some(list)`: exactly those, and a `cuda` that does not open is an
    /// error (`parascan check --backends cuda` on a GPU machine).
    pub backends: Option<Vec<BackendKind>>,
    /// Refuse a configuration whose largest case would need more memory
    /// than this (inputs, outputs, the f64 oracle and the engine's chunk
    /// aggregates, estimated): a `check` skips nothing silently.
    pub max_case_bytes: usize,
}

/// Default of [`CheckConfig::max_case_bytes`]: 1 GiB.
pub const DEFAULT_CHECK_MAX_CASE_BYTES: usize = 1 << 30;

impl Default for CheckConfig {
    /// Every family and dtype; plans `sequential, min-depth, auto,
    /// chunk=7`; `T = 1, 2, 37, 1000, 10007` (odd, prime or not a multiple
    /// of 7; 10007 is long enough for `auto` to split on few sequences).
    fn default() -> Self {
        CheckConfig {
            families: Family::ALL.to_vec(),
            dtypes: vec![DType::F32, DType::F64, DType::Bf16, DType::F16],
            plans: vec![
                PlanRequest::Sequential,
                PlanRequest::MinDepth,
                PlanRequest::Auto,
                PlanRequest::Chunk(7),
            ],
            lengths: vec![1, 2, 37, 1000, 10007],
            threads: None,
            seed: 0xc4ec,
            backends: None,
            max_case_bytes: DEFAULT_CHECK_MAX_CASE_BYTES,
        }
    }
}

impl CheckConfig {
    /// A small configuration for tests: `T = 1, 37, 300`.
    pub fn quick() -> Self {
        CheckConfig {
            lengths: vec![1, 37, 300],
            ..CheckConfig::default()
        }
    }
}

/// Small shapes of each family for `check` (every one exercises something:
/// both diagonal layouts, odd widths, `n = 64` permutations, several
/// blocks, a dense `16×16`, DPLR of rank 2 with readout and with all
/// states).
pub fn check_shapes(family: Family) -> Vec<Shape> {
    match family {
        Family::Diagonal => vec![
            Shape::Diagonal {
                batch: 2,
                dim: 5,
                layout: Layout::Btd,
            },
            Shape::Diagonal {
                batch: 2,
                dim: 3,
                layout: Layout::Bdt,
            },
        ],
        Family::PermDiagonal => vec![
            Shape::PermDiagonal { batch: 2, n: 5 },
            Shape::PermDiagonal { batch: 1, n: 64 },
        ],
        Family::BlockDiagonal => vec![Shape::BlockDiagonal {
            batch: 2,
            blocks: 3,
            block: 4,
        }],
        Family::Dense => vec![Shape::BlockDiagonal {
            batch: 1,
            blocks: 1,
            block: 16,
        }],
        Family::Dplr => vec![
            Shape::Dplr {
                batch: 2,
                n: 8,
                m: 4,
                rank: 2,
                output: DplrOutput::Readout,
            },
            Shape::Dplr {
                batch: 1,
                n: 4,
                m: 3,
                rank: 1,
                output: DplrOutput::States,
            },
        ],
    }
}

/// One checked case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckRow {
    /// Backend that ran (`cpu`, `emu`, `cuda`).
    pub backend: String,
    /// Family instance label.
    pub label: String,
    /// Input shape with `T` symbolic.
    pub shape: String,
    /// Storage dtype.
    pub dtype: DType,
    /// Sequence length.
    pub len: usize,
    /// Whether `h_0` was given.
    pub h0: bool,
    /// Plan asked for.
    pub plan: String,
    /// Chunk the plan resolved to.
    pub chunk: usize,
    /// Relative L2 error of all outputs (NaN when an output was unwritten).
    pub err_out: f64,
    /// Relative L2 error of the final states.
    pub err_last: f64,
    /// The tolerance ([`tolerance`]).
    pub tol: f64,
    /// Both errors within the tolerance.
    pub pass: bool,
    /// The seed of the inputs.
    pub seed: u64,
}

/// Everything `check` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// Every case.
    pub rows: Vec<CheckRow>,
    /// Backends not checked, with the reason.
    pub skipped_backends: Vec<(String, String)>,
    /// The CUDA device the `cuda` rows ran on (e.g. the emulated driver's
    /// `parascan emulated CUDA driver (H100 geometry ...)`), if any.
    pub cuda_device: Option<String>,
}

impl CheckReport {
    /// Whether every case passed (and at least one ran).
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.pass)
    }

    /// The failing cases.
    pub fn failures(&self) -> impl Iterator<Item = &CheckRow> {
        self.rows.iter().filter(|r| !r.pass)
    }

    /// One line per (backend, family instance, dtype): cases run, failures,
    /// and the worst case's error next to its tolerance.
    pub fn summary_table(&self) -> String {
        let mut s = format!(
            "{:<7} {:<22} {:<36} {:<5} {:>5} {:>10} {:>9}  {:<28} {}\n",
            "backend",
            "family",
            "shape",
            "dtype",
            "cases",
            "worst err",
            "tol",
            "worst case",
            "result"
        );
        s.push_str(&"-".repeat(s.trim_end().chars().count()));
        s.push('\n');
        let mut groups: Vec<(String, String, DType)> = Vec::new();
        for r in &self.rows {
            let key = (r.backend.clone(), r.label.clone(), r.dtype);
            if !groups.contains(&key) {
                groups.push(key);
            }
        }
        for (backend, label, dtype) in groups {
            let rows: Vec<&CheckRow> = self
                .rows
                .iter()
                .filter(|r| r.backend == backend && r.label == label && r.dtype == dtype)
                .collect();
            let fails = rows.iter().filter(|r| !r.pass).count();
            // The worst case: a failure first, else the largest err/tol.
            let worst = rows
                .iter()
                .max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
                .copied();
            if let Some(w) = worst {
                let result = if fails == 0 {
                    "PASS".to_string()
                } else {
                    format!("FAIL ({fails})")
                };
                let _ = writeln!(
                    s,
                    "{:<7} {:<22} {:<36} {:<5} {:>5} {:>10.3e} {:>9.1e}  {:<28} {}",
                    backend,
                    label,
                    w.shape,
                    dtype.name(),
                    rows.len(),
                    w.err_out.max(w.err_last),
                    w.tol,
                    format!("T={} {} h0={}", w.len, w.plan, if w.h0 { "y" } else { "n" }),
                    result
                );
            }
        }
        if let Some(device) = &self.cuda_device {
            let _ = writeln!(s, "cuda: device 0 is {device}");
        }
        for (backend, why) in &self.skipped_backends {
            let _ = writeln!(s, "{backend}: not checked: {why}");
        }
        s
    }

    /// Every failing case, one line each.
    pub fn failure_lines(&self) -> String {
        let mut s = String::new();
        for r in self.failures() {
            let _ = writeln!(s, "{}", row_line(r));
        }
        s
    }

    /// Every case, one line each.
    pub fn full_table(&self) -> String {
        let mut s = String::new();
        for r in &self.rows {
            let _ = writeln!(s, "{}", row_line(r));
        }
        s
    }
}

/// `err / tol` with NaN (an unwritten output) ranked worst.
fn ratio(r: &CheckRow) -> f64 {
    let e = r.err_out.max(r.err_last);
    if r.err_out.is_nan() || r.err_last.is_nan() {
        f64::INFINITY
    } else {
        e / r.tol
    }
}

fn row_line(r: &CheckRow) -> String {
    format!(
        "{} {} {} {} T={} h0={} {} (chunk {}): out {:.3e}, h_T {:.3e}, tol {:.1e}: {} [seed {:#x}]",
        if r.pass { "PASS" } else { "FAIL" },
        r.backend,
        r.label,
        r.dtype.name(),
        r.len,
        r.h0,
        r.plan,
        r.chunk,
        r.err_out,
        r.err_last,
        r.tol,
        r.shape,
        r.seed
    )
}

/// Number of cases `run` will check on the CPU engine.
pub fn case_count(cfg: &CheckConfig) -> usize {
    let shapes: usize = cfg.families.iter().map(|&f| check_shapes(f).len()).sum();
    shapes * cfg.dtypes.len() * cfg.lengths.len() * 2 * cfg.plans.len()
}

/// Runs every case of `cfg` on every available backend, advancing
/// `progress` once per case and calling `on_row` as each finishes.
pub fn run(
    cfg: &CheckConfig,
    progress: &ProgressBar,
    on_row: &mut dyn FnMut(&CheckRow),
) -> Result<CheckReport> {
    if cfg.families.is_empty() || cfg.dtypes.is_empty() || cfg.plans.is_empty() {
        return Err(invalid(
            "check",
            "at least one family, dtype and plan".into(),
        ));
    }
    if cfg.lengths.is_empty() || cfg.lengths.contains(&0) {
        return Err(invalid("lengths", "T values ≥ 1".into()));
    }
    for &family in &cfg.families {
        for shape in check_shapes(family) {
            for &len in &cfg.lengths {
                // Chunks of one step: the most aggregates any plan holds;
                // the f64 oracle about doubles it.
                let need = shape.estimate_bytes(len, 1, DType::F64).saturating_mul(2);
                if need > cfg.max_case_bytes {
                    return Err(invalid(
                        "lengths",
                        format!(
                            "lengths whose cases fit in {} MiB (--max-case-mb); T = {len} needs ~{} MiB for {}",
                            cfg.max_case_bytes >> 20,
                            need >> 20,
                            shape.label()
                        ),
                    ));
                }
            }
        }
    }
    if cfg.backends.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid("backends", "at least one of cpu, emu, cuda".into()));
    }
    let wants = |kind| cfg.backends.as_ref().map_or(true, |b| b.contains(&kind));
    let cpu = match cfg.threads {
        Some(n) => Cpu::with_threads(n)?,
        None => Cpu::new(),
    };
    let mut report = CheckReport::default();
    // The kernels run under the emulator always and on the GPU when a
    // device opens; otherwise the CUDA backend is listed with the reason it
    // was not checked (never silently checking less), or, when it was asked
    // for by name, the run fails.
    let cuda = if wants(BackendKind::Cuda) {
        match CudaBackend::new(0) {
            Ok(dev) => {
                report.cuda_device = Some(dev.device_name());
                Some(dev)
            }
            Err(e) if cfg.backends.is_some() => return Err(e.into()),
            Err(e) => {
                report.skipped_backends.push(("cuda".into(), e.to_string()));
                None
            }
        }
    } else {
        None
    };
    let emu: Vec<(EmuBackend, String)> = if wants(BackendKind::Emu) {
        FiberOrder::ALL
            .into_iter()
            .map(|order| (EmuBackend::new(order, cfg.seed), format!(" {order}")))
            .collect()
    } else {
        Vec::new()
    };
    let kernel_families = cfg.families.iter().any(|f| f.has_kernels());
    let cpu_cases = if wants(BackendKind::Cpu) {
        case_count(cfg)
    } else {
        0
    };
    let emu_cases = if emu.is_empty() {
        0
    } else {
        kernel_case_count(cfg, &emu_lengths(cfg))
    };
    let cuda_cases = if cuda.is_some() {
        kernel_case_count(cfg, &cfg.lengths)
    } else {
        0
    };

    progress.set_length((cpu_cases + emu_cases + cuda_cases) as u64);
    let cpu_families: &[Family] = if wants(BackendKind::Cpu) {
        &cfg.families
    } else {
        &[]
    };
    for &family in cpu_families {
        for shape in check_shapes(family) {
            for &dtype in &cfg.dtypes {
                let rows = match dtype {
                    DType::F32 => check_shape::<f32>(&cpu, cfg, shape, progress, on_row)?,
                    DType::F64 => check_shape::<f64>(&cpu, cfg, shape, progress, on_row)?,
                    DType::Bf16 => check_shape::<bf16>(&cpu, cfg, shape, progress, on_row)?,
                    DType::F16 => check_shape::<f16>(&cpu, cfg, shape, progress, on_row)?,
                };
                report.rows.extend(rows);
            }
        }
    }
    if kernel_families {
        let emu_lengths = emu_lengths(cfg);
        if !emu.is_empty() {
            report
                .rows
                .extend(check_kernels(&emu, cfg, &emu_lengths, progress, on_row)?);
        }
        if let Some(dev) = cuda {
            let cuda = [(dev, String::new())];
            report
                .rows
                .extend(check_kernels(&cuda, cfg, &cfg.lengths, progress, on_row)?);
        }
    }
    Ok(report)
}

fn check_shape<S: Storage>(
    cpu: &Cpu,
    cfg: &CheckConfig,
    shape: Shape,
    progress: &ProgressBar,
    on_row: &mut dyn FnMut(&CheckRow),
) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let label = shape.label();
    let poison = S::from_f64(f64::NAN);
    for &len in &cfg.lengths {
        for with_h0 in [false, true] {
            let seed = mix_seed(
                cfg.seed,
                ((len as u64) << 8) ^ u64::from(with_h0) ^ label_salt(&label, S::DTYPE),
            );
            let inputs = Inputs::<S>::generate(shape, len, with_h0, seed)?;
            let (want, want_last) = inputs.oracle();
            let problem = inputs.problem();
            let mut out = vec![poison; problem.output_len()];
            let mut h_last = vec![poison; problem.final_len()];
            for &request in &cfg.plans {
                progress.set_message(format!("{label} {} T={len} {request}", S::DTYPE));
                out.fill(poison);
                h_last.fill(poison);
                let plan = cpu.scan_into(&problem, request, &mut out, &mut h_last)?;
                let err_out = rel_l2(&out, &want);
                let err_last = rel_l2(&h_last, &want_last);
                let tol = tolerance(S::DTYPE, len);
                // `<=` is false for NaN: an unwritten element fails.
                let pass = err_out <= tol && err_last <= tol;
                let row = CheckRow {
                    backend: "cpu".into(),
                    label: label.clone(),
                    shape: shape.describe(),
                    dtype: S::DTYPE,
                    len,
                    h0: with_h0,
                    plan: request.to_string(),
                    chunk: plan.chunk,
                    err_out,
                    err_last,
                    tol,
                    pass,
                    seed,
                };
                progress.inc(1);
                on_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// Longest `T` the emulated kernels are checked at (the emulator is slow;
/// longer configured lengths run on the CPU engine and the GPU only).
pub const EMU_CHECK_MAX_T: usize = 4096;

/// The configured lengths the emulated kernels are checked at.
fn emu_lengths(cfg: &CheckConfig) -> Vec<usize> {
    cfg.lengths
        .iter()
        .copied()
        .filter(|&t| t <= EMU_CHECK_MAX_T)
        .collect()
}

/// The extra kernel case that reaches the Diagonal two-level plan P3
/// (`NC > 2048` chunks per lane): `T = 4099` under `chunk=2`, on every
/// Diagonal check shape, dtype and with/without `h_0`.
pub const KERNEL_P3_CASE: (usize, PlanRequest) = (4099, PlanRequest::Chunk(2));

/// The extra kernel case for the Diagonal single-pass look-back P4 across
/// several chunks: `T = 9000` (3 chunks of 4096 on `[B,D,T]`, 71 of 128 on
/// `[B,T,D]`) under `look-back`.
pub const KERNEL_P4_CASE: (usize, PlanRequest) = (9000, PlanRequest::LookBack);

/// `(T, plans)` of the kernel cases of one family at `lengths`.
fn kernel_cases(
    cfg: &CheckConfig,
    family: Family,
    lengths: &[usize],
) -> Vec<(usize, Vec<PlanRequest>)> {
    let mut cases: Vec<(usize, Vec<PlanRequest>)> =
        lengths.iter().map(|&t| (t, cfg.plans.clone())).collect();
    if family == Family::Diagonal {
        cases.push((KERNEL_P3_CASE.0, vec![KERNEL_P3_CASE.1]));
        cases.push((KERNEL_P4_CASE.0, vec![KERNEL_P4_CASE.1]));
    }
    cases
}

/// Cases of `check_kernels` at `lengths`: for every configured family
/// with kernels, every check shape × dtype × with/without `h_0` × length ×
/// plan (plus [`KERNEL_P3_CASE`] and [`KERNEL_P4_CASE`] for Diagonal).
pub fn kernel_case_count(cfg: &CheckConfig, lengths: &[usize]) -> usize {
    cfg.families
        .iter()
        .filter(|f| f.has_kernels())
        .map(|&f| {
            let per_shape: usize = kernel_cases(cfg, f, lengths)
                .iter()
                .map(|(_, plans)| plans.len())
                .sum();
            check_shapes(f).len() * cfg.dtypes.len() * 2 * per_shape
        })
        .sum()
}

/// Every configured family that has kernels, through [`KernelScan`], against
/// the same oracle and tolerances as the CPU engine. Case `i` runs on
/// `runners[i % runners.len()]` (the emulator passes one runner per fiber
/// order, so consecutive cases rotate through forward, reverse and shuffled
/// schedules); each runner's suffix is appended to the plan column.
fn check_kernels<R: KernelRunner>(
    runners: &[(R, String)],
    cfg: &CheckConfig,
    lengths: &[usize],
    progress: &ProgressBar,
    on_row: &mut dyn FnMut(&CheckRow),
) -> Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let mut case = 0usize;
    for &family in cfg.families.iter().filter(|f| f.has_kernels()) {
        for shape in check_shapes(family) {
            for &dtype in &cfg.dtypes {
                let mut k = KernelCheck {
                    runners,
                    case: &mut case,
                    cfg,
                    cases: kernel_cases(cfg, family, lengths),
                    progress,
                    on_row: &mut *on_row,
                };
                let r = match dtype {
                    DType::F32 => k.shape::<f32>(shape)?,
                    DType::F64 => k.shape::<f64>(shape)?,
                    DType::Bf16 => k.shape::<bf16>(shape)?,
                    DType::F16 => k.shape::<f16>(shape)?,
                };
                rows.extend(r);
            }
        }
    }
    Ok(rows)
}

/// State of [`check_kernels`] for one shape and dtype.
struct KernelCheck<'a, 'r, R> {
    runners: &'a [(R, String)],
    case: &'a mut usize,
    cfg: &'a CheckConfig,
    cases: Vec<(usize, Vec<PlanRequest>)>,
    progress: &'a ProgressBar,
    on_row: &'a mut (dyn FnMut(&CheckRow) + 'r),
}

impl<R: KernelRunner> KernelCheck<'_, '_, R> {
    fn shape<S: Storage + bytemuck::Pod>(&mut self, shape: Shape) -> Result<Vec<CheckRow>> {
        let mut rows = Vec::new();
        let label = shape.label();
        for (len, plans) in std::mem::take(&mut self.cases) {
            for with_h0 in [false, true] {
                let seed = mix_seed(
                    self.cfg.seed,
                    ((len as u64) << 8) ^ u64::from(with_h0) ^ label_salt(&label, S::DTYPE),
                );
                let inputs = Inputs::<S>::generate(shape, len, with_h0, seed)?;
                let (want, want_last) = inputs.oracle();
                for &request in &plans {
                    let i = *self.case % self.runners.len();
                    *self.case += 1;
                    let (runner, suffix) = &self.runners[i];
                    self.progress.set_message(format!(
                        "{} {label} {} T={len} {request}{suffix}",
                        runner.backend_name(),
                        S::DTYPE
                    ));
                    // `kernel_scan` poisons its outputs with NaN first.
                    let Some(outputs) = inputs.view().visit_kernels(ScanVisit { runner, request })
                    else {
                        return Err(invalid(
                            "families",
                            format!("{label}: a family with kernels"),
                        ));
                    };
                    let outputs = outputs?;
                    let err_out = rel_l2(&outputs.out, &want);
                    let err_last = rel_l2(&outputs.h_last, &want_last);
                    let tol = tolerance(S::DTYPE, len);
                    let pass = err_out <= tol && err_last <= tol;
                    let row = CheckRow {
                        backend: runner.backend_name().into(),
                        label: label.clone(),
                        shape: shape.describe(),
                        dtype: S::DTYPE,
                        len,
                        h0: with_h0,
                        plan: format!("{request} [{}]{suffix}", outputs.plan.kind),
                        chunk: outputs.plan.chunk,
                        err_out,
                        err_last,
                        tol,
                        pass,
                        seed,
                    };
                    self.progress.inc(1);
                    (self.on_row)(&row);
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }
}

/// Runs [`KernelScan::kernel_scan`] on a visited problem.
struct ScanVisit<'a, R> {
    runner: &'a R,
    request: PlanRequest,
}

impl<R: KernelRunner, S> KernelVisitor<S> for ScanVisit<'_, R> {
    type Out = crate::error::Result<KernelOutputs<S>>;
    fn visit<P: KernelScan<Elem = S>>(self, problem: &P) -> Self::Out {
        problem.kernel_scan(self.runner, self.request)
    }
}

fn label_salt(label: &str, dtype: DType) -> u64 {
    format!("{label}/{}", dtype.name())
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_rule() {
        assert_eq!(tolerance(DType::F32, 1), 1e-5);
        assert_eq!(tolerance(DType::F32, 1024), 1e-4);
        assert_eq!(tolerance(DType::F64, 4), 2e-12);
        assert_eq!(tolerance(DType::Bf16, 1 << 20), 8e-3);
        assert_eq!(tolerance(DType::F16, 3), 1e-3);
    }
}
