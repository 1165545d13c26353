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

use std::fmt::Write as _;

use half::{bf16, f16};
use indicatif::ProgressBar;

use crate::backend::cuda::CudaBackend;
use crate::backend::{Cpu, HAS_SCAN_KERNELS};
use crate::dtype::{DType, Storage};
use crate::family::dplr::DplrOutput;
use crate::family::{Layout, LinearProblem};
use crate::oracle::rel_l2;
use crate::scan::PlanRequest;
use crate::sweep::cases::{mix_seed, Inputs};
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
}

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
    /// Backend that ran (`cpu`).
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
        for (backend, why) in &self.skipped_backends {
            let _ = writeln!(s, "{backend:<7} not checked: {why}");
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

/// Number of cases `run` will check on one backend.
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
    let cpu = match cfg.threads {
        Some(n) => Cpu::with_threads(n)?,
        None => Cpu::new(),
    };
    let mut report = CheckReport::default();
    // The CUDA backend is listed with the reason it was not checked, so a
    // GPU machine's `check` says so instead of silently checking less.
    let cuda_reason = match CudaBackend::new(0) {
        Err(e) => e.to_string(),
        Ok(dev) if !HAS_SCAN_KERNELS => format!(
            "{} found, but this build has no CUDA scan kernels yet",
            dev.device_name()
        ),
        Ok(dev) => format!(
            "{} found, but `check` has no CUDA scan path yet",
            dev.device_name()
        ),
    };
    report.skipped_backends.push(("cuda".into(), cuda_reason));
    report.skipped_backends.push((
        "emu".into(),
        "the emulated kernels have no family-level scan entry point yet \
         (their own self-tests run the kernels)"
            .into(),
    ));

    progress.set_length(case_count(cfg) as u64);
    for &family in &cfg.families {
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
