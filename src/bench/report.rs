//! `parascan bench` results: one [`BenchRow`] per (shape, plan), the
//! markdown tables for `BENCHMARKS.md`, and the CSV and JSON files.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::cases::BenchFamily;
use super::timing::RepPolicy;
use crate::dtype::DType;
use crate::error::Error;
use crate::sweep::report::{csv_field, format_ms, write_file};
use crate::sweep::{Result, SweepError};

/// One measured (shape, plan).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// The `--shapes` group.
    pub family: BenchFamily,
    /// The family instance: `diagonal`, `perm-diagonal n=5`,
    /// `dplr 64x64 r1`, `diag-gru`, or `diagonal scan` (the Newton
    /// reference scan).
    pub case: String,
    /// The shape with `T` filled in, e.g. `[B,D,T]=[8,1536,65536]`.
    pub shape: String,
    /// Storage type.
    pub dtype: DType,
    /// `B`.
    pub batch: usize,
    /// State scalars per sequence and step (`D`, `n`, `n·m`).
    pub lanes: usize,
    /// `T`.
    pub len: usize,
    /// The plan asked for (`sequential`, `auto`, `chunk=64`, ...).
    pub plan: String,
    /// The GPU plan kind it resolved to (`P2 one-level`, ...; Newton rows:
    /// the solver, e.g. `newton` or `sequential kernel`).
    pub kind: String,
    /// Steps per chunk (`T` for single-pass and sequential plans).
    pub chunk: usize,
    /// Chunks per sequence.
    pub chunks: usize,
    /// Combines on the critical path (Newton: summed over iterations, plus
    /// the parallel steps of evaluations and checks).
    pub depth: u64,
    /// Whether `depth` was measured (depth-counting kernels, or the Newton
    /// report) rather than the plan's formula.
    pub depth_measured: bool,
    /// Timed runs.
    pub reps: usize,
    /// Median milliseconds per run.
    pub median_ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
    /// Bytes one pass must move (read inputs once, write outputs once;
    /// Newton: one sequential pass, `x` read and `h` written).
    pub bytes_moved: usize,
    /// `bytes_moved` per median time, 1e9 bytes/s.
    pub gb_per_s: f64,
    /// Bytes per element (`B·T·lanes` of them) the chosen plan moves, as its
    /// planner counts them ([`KernelPlanSummary::plan_bytes`](crate::kernels::KernelPlanSummary):
    /// chunked plans read their inputs twice; scratch traffic included).
    /// Newton rows: none.
    pub plan_bytes_per_elem: Option<f64>,
    /// `gb_per_s` as a percentage of the copy bandwidth of the same run.
    pub pct_copy_bw: f64,
    /// Median nanoseconds per token (`B·T` tokens per run).
    pub ns_per_token: f64,
    /// The sequential plan's median time over this one's, when that plan
    /// ran for the same shape (Newton: the cell's sequential kernel).
    pub speedup_vs_seq: Option<f64>,
    /// Whether the final states of the last timed run are all finite.
    pub finite: bool,
    /// Newton iterations (linear solves).
    pub iterations: Option<usize>,
    /// Newton milliseconds per iteration (median time / iterations; the
    /// initial guess and the last check included).
    pub ms_per_iter: Option<f64>,
    /// `ms_per_iter` over one Diagonal scan of the same `[B,T,n]` shape
    /// under the same plan.
    pub iter_over_scan: Option<f64>,
    /// Backward rows (the reverse scan of a Diagonal or PermDiagonal backward pass, a
    /// Newton backward): this row's median time over the forward row's of
    /// the same shape and plan, measured in the same run.
    pub backward_over_forward: Option<f64>,
}

/// A (shape, plan) that did not produce a row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The case, as [`BenchRow::case`] and [`BenchRow::shape`] name it.
    pub case: String,
    /// The plan (`*` for every plan of the case).
    pub plan: String,
    /// Why, in words.
    pub reason: String,
    /// Whether it is a failure (an error), not a deliberate skip (the time
    /// limit).
    pub failed: bool,
}

/// How a run was made.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Meta {
    /// Crate version.
    pub version: String,
    /// The commit the binary was built from (see [`super::commit`]).
    pub commit: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: u64,
    /// The command line.
    pub command: String,
    /// `cuda` or `emu`.
    pub backend: String,
    /// Why that backend.
    pub backend_reason: String,
    /// Device name (the emulator: its worker count).
    pub device: String,
    /// SMs the planners were given.
    pub sm_count: usize,
    /// The yardstick: copy bandwidth, 1e9 bytes read + written per second.
    pub copy_gbs: f64,
    /// How the copy bandwidth was measured.
    pub copy_method: String,
    /// How the rows were timed.
    pub timing: String,
    /// Repetitions of every scan case.
    pub reps: RepPolicy,
    /// `T` divided by `2^scale`.
    pub scale: u32,
    /// One `T` per length list, fewer reps.
    pub quick: bool,
    /// The families run.
    pub families: Vec<BenchFamily>,
    /// Seconds to open the device (on CUDA: loading every PTX module,
    /// which JIT-compiles it unless the driver's cache has it).
    pub device_open_s: f64,
    /// Wall seconds of the whole run.
    pub wall_s: f64,
}

/// Everything one `parascan bench` run measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// How it was made.
    pub meta: Meta,
    /// One row per (shape, plan), in run order.
    pub rows: Vec<BenchRow>,
    /// Cases that did not produce a row.
    pub skipped: Vec<Skipped>,
}

impl BenchReport {
    /// Rows whose final states were not all finite, and failed cases.
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| !r.finite).count()
            + self.skipped.iter().filter(|s| s.failed).count()
    }

    /// The markdown section for `BENCHMARKS.md`: a heading with device,
    /// date and commit, how it was measured, one table per family group,
    /// and what was skipped.
    pub fn markdown(&self) -> String {
        let m = &self.meta;
        let mut s = String::new();
        let _ = writeln!(s, "### {} — {} — commit `{}`\n", m.device, m.date, m.commit);
        let _ = writeln!(
            s,
            "`{}` (parascan {}; backend {}, {} SMs to the planners{}). Copy bandwidth \
             **{:.1} GB/s** ({}). {} Depth: measured on the depth-counting kernels, \
             or the plan's formula where marked (f). Wall time of the run: {:.0} s \
             (opening the device: {:.1} s).\n",
            m.command,
            m.version,
            m.backend,
            m.sm_count,
            if m.scale > 0 {
                format!(", every T divided by 2^{}", m.scale)
            } else {
                String::new()
            },
            m.copy_gbs,
            m.copy_method,
            m.timing,
            m.wall_s,
            m.device_open_s
        );
        let scans: Vec<&BenchRow> = self
            .rows
            .iter()
            .filter(|r| matches!(r.family, BenchFamily::Diagonal | BenchFamily::PermDiagonal))
            .filter(|r| r.backward_over_forward.is_none())
            .collect();
        if !scans.is_empty() {
            s.push_str(
                "| family | shape | dtype | plan | kind | chunk | plan B/elem | depth | median ms | GB/s | % copy BW | × seq |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            );
            for r in scans {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} |",
                    r.case,
                    r.shape,
                    r.dtype.name(),
                    r.plan,
                    r.kind,
                    r.chunk,
                    bytes_text(r.plan_bytes_per_elem),
                    depth_text(r),
                    format_ms(r.median_ms),
                    r.gb_per_s,
                    r.pct_copy_bw,
                    ratio_text(r.speedup_vs_seq)
                );
            }
            s.push('\n');
        }
        let backward: Vec<&BenchRow> = self
            .rows
            .iter()
            .filter(|r| r.backward_over_forward.is_some())
            .collect();
        if !backward.is_empty() {
            s.push_str(
                "| backward | shape | dtype | plan | kind | plan B/elem | depth | median ms | GB/s | % copy BW | ÷ forward |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|\n",
            );
            for r in backward {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} |",
                    r.case,
                    r.shape,
                    r.dtype.name(),
                    r.plan,
                    r.kind,
                    bytes_text(r.plan_bytes_per_elem),
                    depth_text(r),
                    format_ms(r.median_ms),
                    r.gb_per_s,
                    r.pct_copy_bw,
                    ratio_text(r.backward_over_forward)
                );
            }
            s.push('\n');
        }
        let dplr: Vec<&BenchRow> = self
            .rows
            .iter()
            .filter(|r| r.family == BenchFamily::Dplr)
            .collect();
        if !dplr.is_empty() {
            s.push_str(
                "| DPLR | T | plan | kind | chunk | plan B/elem | depth | median ms | ns/token | × seq | GB/s | % copy BW |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            );
            for r in dplr {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.1} |",
                    r.shape,
                    r.len,
                    r.plan,
                    r.kind,
                    r.chunk,
                    bytes_text(r.plan_bytes_per_elem),
                    depth_text(r),
                    format_ms(r.median_ms),
                    r.ns_per_token,
                    ratio_text(r.speedup_vs_seq),
                    r.gb_per_s,
                    r.pct_copy_bw
                );
            }
            s.push('\n');
        }
        let newton: Vec<&BenchRow> = self
            .rows
            .iter()
            .filter(|r| r.family == BenchFamily::Newton && r.backward_over_forward.is_none())
            .collect();
        if !newton.is_empty() {
            s.push_str(
                "| Newton | shape | plan | plan B/elem | iterations | depth | median ms | ms / iteration | iteration ÷ scan | × seq |\n\
                 |---|---|---|---|---|---|---|---|---|---|\n",
            );
            for r in newton {
                let _ = writeln!(
                    s,
                    "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.case,
                    r.shape,
                    r.plan,
                    bytes_text(r.plan_bytes_per_elem),
                    r.iterations.map_or("–".into(), |i| i.to_string()),
                    depth_text(r),
                    format_ms(r.median_ms),
                    r.ms_per_iter.map_or("–".into(), format_ms),
                    ratio_text(r.iter_over_scan),
                    ratio_text(r.speedup_vs_seq)
                );
            }
            s.push('\n');
        }
        let bad: Vec<&BenchRow> = self.rows.iter().filter(|r| !r.finite).collect();
        if !bad.is_empty() || !self.skipped.is_empty() {
            s.push_str("Not measured or suspect:\n\n");
            for r in bad {
                let _ = writeln!(
                    s,
                    "- {} `{}` {} {}: final states not all finite",
                    r.case,
                    r.shape,
                    r.dtype.name(),
                    r.plan
                );
            }
            for k in &self.skipped {
                let _ = writeln!(
                    s,
                    "- {} {}: {}{}",
                    k.case,
                    k.plan,
                    if k.failed { "FAILED: " } else { "" },
                    k.reason
                );
            }
            s.push('\n');
        }
        s
    }

    /// Every row as CSV with a header ([`CSV_HEADER`]).
    pub fn csv(&self) -> String {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for r in &self.rows {
            s.push_str(&csv_row(r));
            s.push('\n');
        }
        s
    }

    /// The whole report as pretty JSON.
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| SweepError::Output(format!("serializing the report: {e}")))
    }
}

fn depth_text(r: &BenchRow) -> String {
    if r.depth_measured {
        r.depth.to_string()
    } else {
        format!("{} (f)", r.depth)
    }
}

fn ratio_text(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

/// One line per row for the terminal, as rows arrive.
pub fn progress_line(r: &BenchRow) -> String {
    let mut line = format!(
        "{:<18} {:<36} {:<4} {:<10} {:<16} C={:<8} {:>6} B/el depth {:<10} {:>10} ms {:>8.1} GB/s {:>5.1}%",
        r.case,
        r.shape,
        r.dtype.name(),
        r.plan,
        r.kind,
        r.chunk,
        bytes_text(r.plan_bytes_per_elem),
        depth_text(r),
        format_ms(r.median_ms),
        r.gb_per_s,
        r.pct_copy_bw
    );
    if let Some(v) = r.speedup_vs_seq {
        let _ = write!(line, "  ×seq {}", ratio_text(Some(v)));
    }
    if let (Some(it), Some(per)) = (r.iterations, r.ms_per_iter) {
        let _ = write!(line, "  {it} it, {} ms/it", format_ms(per));
    }
    if let Some(v) = r.iter_over_scan {
        let _ = write!(line, " = {} scans", ratio_text(Some(v)));
    }
    if let Some(v) = r.backward_over_forward {
        let _ = write!(line, "  ÷fwd {}", ratio_text(Some(v)));
    }
    if !r.finite {
        line.push_str("  NON-FINITE");
    }
    line
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "family,case,shape,dtype,batch,lanes,T,plan,kind,chunk,chunks,\
depth,depth_measured,reps,median_ms,min_ms,bytes_moved,gb_per_s,pct_copy_bw,ns_per_token,\
speedup_vs_seq,finite,iterations,ms_per_iter,iter_over_scan,plan_bytes_per_elem,\
backward_over_forward";

/// A plan's bytes per element with two decimals, `–` when not counted.
fn bytes_text(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}"))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

fn csv_row(r: &BenchRow) -> String {
    [
        r.family.name().to_string(),
        csv_field(&r.case),
        csv_field(&r.shape),
        r.dtype.name().to_string(),
        r.batch.to_string(),
        r.lanes.to_string(),
        r.len.to_string(),
        csv_field(&r.plan),
        csv_field(&r.kind),
        r.chunk.to_string(),
        r.chunks.to_string(),
        r.depth.to_string(),
        r.depth_measured.to_string(),
        r.reps.to_string(),
        format!("{:.6}", r.median_ms),
        format!("{:.6}", r.min_ms),
        r.bytes_moved.to_string(),
        format!("{:.3}", r.gb_per_s),
        format!("{:.3}", r.pct_copy_bw),
        format!("{:.4}", r.ns_per_token),
        opt(r.speedup_vs_seq.map(|v| format!("{v:.4}"))),
        r.finite.to_string(),
        opt(r.iterations),
        opt(r.ms_per_iter.map(|v| format!("{v:.6}"))),
        opt(r.iter_over_scan.map(|v| format!("{v:.4}"))),
        opt(r.plan_bytes_per_elem.map(|v| format!("{v:.4}"))),
        opt(r.backward_over_forward.map(|v| format!("{v:.4}"))),
    ]
    .join(",")
}

/// A CSV file that gets each row as soon as it is measured, so a run cut
/// short (a device time limit) still leaves its rows behind.
pub struct CsvSink {
    path: PathBuf,
    file: std::fs::File,
}

impl CsvSink {
    /// Creates (truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::create(path).map_err(io)?;
        writeln!(file, "{CSV_HEADER}").map_err(io)?;
        Ok(CsvSink {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one row (written through, no buffering).
    pub fn push(&mut self, row: &BenchRow) -> Result<()> {
        writeln!(self.file, "{}", csv_row(row)).map_err(|source| {
            Error::Io {
                path: self.path.display().to_string(),
                source,
            }
            .into()
        })
    }
}

/// The files [`write_outputs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// `bench.md`: [`BenchReport::markdown`].
    pub markdown: PathBuf,
    /// `bench.csv`: [`BenchReport::csv`].
    pub csv: PathBuf,
    /// `bench.json`: [`BenchReport::json`].
    pub json: PathBuf,
}

/// Writes `bench.md`, `bench.csv` and `bench.json` into `dir` (created if
/// missing).
pub fn write_outputs(report: &BenchReport, dir: &Path) -> Result<Outputs> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let out = Outputs {
        markdown: dir.join("bench.md"),
        csv: dir.join("bench.csv"),
        json: dir.join("bench.json"),
    };
    write_file(&out.markdown, &report.markdown())?;
    write_file(&out.csv, &report.csv())?;
    write_file(&out.json, &report.json()?)?;
    Ok(out)
}

/// `YYYY-MM-DD` (UTC) of a Unix time, by the proleptic Gregorian calendar.
pub fn utc_date(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    // Shift the epoch to 0000-03-01 so leap days end each 4/100/400-year
    // cycle; then split into 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_709_210_096), "2024-02-29");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31");
        assert_eq!(utc_date(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_text(None), "–");
        assert_eq!(ratio_text(Some(2.345)), "2.35");
        assert_eq!(ratio_text(Some(123.4)), "123");
    }
}
