//! Sweep results: one [`Row`] per measured case, the printed table, and the
//! CSV / JSON files.

use std::fmt::Write as _;
use std::path::Path;

use super::config::SweepConfig;
use super::Result;
use crate::dtype::DType;
use crate::error::Error;

/// Which part of the sweep a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// A point of the depth-versus-length grid.
    Sweep,
    /// The separate large diagonal case quoted against copy bandwidth.
    Bandwidth,
    /// The backward pass (gradients of every input) of a grid point, under
    /// the same plan (see [`super::backward`]).
    Backward,
    /// A grid point's tokens as packed variable-length sequences, or the
    /// same sequences padded to an equal-length batch (see
    /// [`super::varlen`]).
    Varlen,
}

/// One measured case: `(family instance, dtype, T, plan)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// Grid point or the bandwidth line.
    pub kind: RowKind,
    /// Backend that ran the case: `cpu` (the native engine, also the
    /// fallback of families without kernels under `--backend cuda|emu`),
    /// `cuda` or `emu` (the Diagonal kernels).
    pub backend: String,
    /// What the time covers: `host-call` (one [`crate::backend::Cpu::scan_into`]
    /// call) or `launches+sync` (the plan's kernel launches and a
    /// `synchronize`, data already on the device).
    pub timed: String,
    /// Family name (`diagonal`, `perm-diagonal`, `block-diagonal`,
    /// `dense`, `dplr`).
    pub family: String,
    /// Family instance (e.g. `perm-diagonal n=5`); with `plan` it names a
    /// plot series.
    pub label: String,
    /// Storage dtype.
    pub dtype: DType,
    /// Input shape with `T` symbolic, e.g. `[B,T,D]=[2,T,16]`.
    pub shape: String,
    /// `B`.
    pub batch: usize,
    /// State scalars per sequence and step.
    pub lanes: usize,
    /// Sequence length `T`.
    pub len: usize,
    /// The plan asked for (`sequential`, `auto`, `chunk=64`, ...); kernel
    /// rows add the GPU plan kind, e.g. `auto [P2]`.
    pub plan: String,
    /// Steps per chunk `C` the plan resolved to (`T` = sequential loop).
    pub chunk: usize,
    /// Chunks per sequence `⌈T/C⌉`.
    pub chunks: usize,
    /// Depth measured by running the engine over depth counters
    /// (combines on the critical path of one sequence).
    pub depth: u64,
    /// Work measured the same way (combines per sequence); 0 on kernel
    /// rows (the `_depth` kernels count depth only).
    pub work: u64,
    /// The plan's depth formula (equal to `depth` when the engine is the
    /// algorithm the planner describes).
    pub depth_formula: u64,
    /// The plan's work formula (0 on kernel rows).
    pub work_formula: u64,
    /// Timed runs.
    pub reps: usize,
    /// Median wall time per run, milliseconds.
    pub median_ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
    /// Elements `B·T·lanes` per run.
    pub elements: usize,
    /// Millions of elements per second (at the median time).
    pub melem_per_s: f64,
    /// Bytes one pass moves (the family's `bytes_moved`).
    pub bytes_moved: usize,
    /// `bytes_moved / median time`, GB/s (1e9 B/s).
    pub gb_per_s: f64,
    /// `gb_per_s` as a percentage of this run's measured copy bandwidth.
    pub pct_copy_bw: f64,
    /// Newton iterations (linear solves) of nonlinear rows; `None` for
    /// the linear families.
    #[serde(default)]
    pub iterations: Option<usize>,
    /// Floating-point operations of one pass by the family's per-step
    /// count ([`super::config::Shape::flops_per_step`] times `B·T`); 0 on
    /// nonlinear rows.
    #[serde(default)]
    pub flops: u64,
    /// `flops / median time` as a percentage of this run's measured FMA
    /// peak ([`Meta::fma_gflops`]): the yardstick of dense, block and DPLR
    /// rows (for the bandwidth-bound families it stays small).
    #[serde(default)]
    pub pct_fma_peak: f64,
    /// Backward rows: this row's median time over the median of the
    /// forward row with the same family instance, dtype, `T` and plan
    /// (measured in the same run); `None` on forward rows.
    #[serde(default)]
    pub backward_over_forward: Option<f64>,
}

/// A case that did not run, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    /// Family instance label.
    pub label: String,
    /// Storage dtype.
    pub dtype: DType,
    /// Sequence length.
    pub len: usize,
    /// Plan, or `*` for every plan.
    pub plan: String,
    /// Why, in words.
    pub reason: String,
}

/// Facts about the run that every number depends on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Meta {
    /// Crate version.
    pub version: String,
    /// Backend selected (`cpu`, `cuda`, `emu`); each row says which
    /// backend ran it.
    pub backend: String,
    /// Why that backend.
    pub backend_reason: String,
    /// Engine worker threads.
    pub threads: usize,
    /// CPU model, when the OS says.
    pub cpu: Option<String>,
    /// Measured copy bandwidth, GB/s (read + written bytes).
    pub copy_gbs: f64,
    /// Measured `f32` multiply-add peak, GFLOP/s, same threads and run
    /// ([`super::bandwidth::cpu_fma_gflops`]): the yardstick of dense and
    /// DPLR rows.
    pub fma_gflops: f64,
    /// Bytes per buffer of the copy probe.
    pub copy_bytes: usize,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: u64,
    /// Wall time of the whole sweep, seconds.
    pub wall_s: f64,
    /// The configuration that ran.
    pub config: SweepConfig,
}

/// Everything a sweep produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepReport {
    /// Run facts.
    pub meta: Meta,
    /// Grid rows in run order.
    pub rows: Vec<Row>,
    /// The bandwidth line, when configured.
    pub bandwidth: Option<Row>,
    /// Cases skipped (memory cap).
    pub skipped: Vec<Skipped>,
}

/// Column headers and widths of the printed table.
const COLUMNS: [(&str, usize); 15] = [
    ("family", 22),
    ("dtype", 5),
    ("backend", 7),
    ("shape", 30),
    ("T", 8),
    ("plan", 15),
    ("chunk", 8),
    ("depth", 8),
    ("work", 8),
    ("median ms", 10),
    ("Melem/s", 9),
    ("GB/s", 7),
    ("% copy BW", 9),
    ("% FMA", 6),
    ("÷ fwd", 6),
];

/// The table's header line and a rule under it.
pub fn table_header() -> String {
    let mut s = String::new();
    for (i, (name, w)) in COLUMNS.iter().enumerate() {
        if i < 4 || i == 5 {
            let _ = write!(s, "{name:<w$} ");
        } else {
            let _ = write!(s, "{name:>w$} ");
        }
    }
    let s = s.trim_end().to_string();
    let rule = "-".repeat(s.chars().count());
    format!("{s}\n{rule}")
}

/// One row of the table, aligned with [`table_header`].
pub fn table_row(r: &Row) -> String {
    let w = |i: usize| COLUMNS[i].1;
    let label = if r.kind == RowKind::Bandwidth {
        format!("{} (bandwidth)", r.label)
    } else {
        r.label.clone()
    };
    format!(
        "{:<w0$} {:<w1$} {:<w2$} {:<w3$} {:>w4$} {:<w5$} {:>w6$} {:>w7$} {:>w8$} {:>w9$} {:>w10$} {:>w11$} {:>w12$} {:>w13$} {:>w14$}",
        label,
        r.dtype.name(),
        r.backend,
        r.shape,
        r.len,
        match r.iterations {
            Some(k) => format!("{} ·{k}it", r.plan),
            None => r.plan.clone(),
        },
        r.chunk,
        r.depth,
        r.work,
        format_ms(r.median_ms),
        format!("{:.1}", r.melem_per_s),
        format!("{:.2}", r.gb_per_s),
        format!("{:.1}", r.pct_copy_bw),
        if r.flops > 0 {
            format!("{:.1}", r.pct_fma_peak)
        } else {
            "-".to_string()
        },
        r.backward_over_forward
            .map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
        w0 = w(0),
        w1 = w(1),
        w2 = w(2),
        w3 = w(3),
        w4 = w(4),
        w5 = w(5),
        w6 = w(6),
        w7 = w(7),
        w8 = w(8),
        w9 = w(9),
        w10 = w(10),
        w11 = w(11),
        w12 = w(12),
        w13 = w(13),
        w14 = w(14),
    )
}

/// A skipped case as a table line.
pub fn skipped_line(s: &Skipped) -> String {
    format!(
        "{:<22} {:<5} T={} plan={}: skipped ({})",
        s.label,
        s.dtype.name(),
        s.len,
        s.plan,
        s.reason
    )
}

pub(crate) fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.4}")
    }
}

impl SweepReport {
    /// The whole table: header, grid rows, skipped cases, the bandwidth
    /// line, and the copy-bandwidth and FMA-peak yardsticks.
    pub fn table(&self) -> String {
        let mut s = table_header();
        s.push('\n');
        for r in &self.rows {
            s.push_str(&table_row(r));
            s.push('\n');
        }
        for k in &self.skipped {
            s.push_str(&skipped_line(k));
            s.push('\n');
        }
        if let Some(bw) = &self.bandwidth {
            s.push('\n');
            s.push_str(&table_row(bw));
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\ncopy bandwidth: {:.2} GB/s (read + written, {} threads, {} MiB buffers)",
            self.meta.copy_gbs,
            self.meta.threads,
            self.meta.copy_bytes >> 20
        );
        let _ = writeln!(
            s,
            "FMA peak: {:.1} GFLOP/s (f32 multiply-adds, {} threads, same run)",
            self.meta.fma_gflops, self.meta.threads
        );
        s
    }

    /// Every row (grid rows, then the bandwidth line) as CSV with a header;
    /// fields with commas or quotes are quoted (RFC 4180).
    pub fn csv(&self) -> String {
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for r in self.rows.iter().chain(self.bandwidth.iter()) {
            s.push_str(&csv_row(r));
            s.push('\n');
        }
        s
    }

    /// The whole report as pretty JSON.
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| super::SweepError::Output(format!("serializing the report: {e}")))
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str =
    "kind,backend,timed,family,label,dtype,shape,batch,lanes,T,plan,chunk,chunks,\
depth,work,depth_formula,work_formula,reps,median_ms,min_ms,elements,melem_per_s,bytes_moved,\
gb_per_s,pct_copy_bw,iterations,flops,pct_fma_peak,backward_over_forward";

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_row(r: &Row) -> String {
    let kind = match r.kind {
        RowKind::Sweep => "sweep",
        RowKind::Bandwidth => "bandwidth",
        RowKind::Backward => "backward",
        RowKind::Varlen => "varlen",
    };
    [
        kind.to_string(),
        csv_field(&r.backend),
        csv_field(&r.timed),
        csv_field(&r.family),
        csv_field(&r.label),
        r.dtype.name().to_string(),
        csv_field(&r.shape),
        r.batch.to_string(),
        r.lanes.to_string(),
        r.len.to_string(),
        csv_field(&r.plan),
        r.chunk.to_string(),
        r.chunks.to_string(),
        r.depth.to_string(),
        r.work.to_string(),
        r.depth_formula.to_string(),
        r.work_formula.to_string(),
        r.reps.to_string(),
        format!("{:.6}", r.median_ms),
        format!("{:.6}", r.min_ms),
        r.elements.to_string(),
        format!("{:.3}", r.melem_per_s),
        r.bytes_moved.to_string(),
        format!("{:.4}", r.gb_per_s),
        format!("{:.3}", r.pct_copy_bw),
        r.iterations.map_or(String::new(), |i| i.to_string()),
        r.flops.to_string(),
        format!("{:.3}", r.pct_fma_peak),
        r.backward_over_forward
            .map_or(String::new(), |v| format!("{v:.4}")),
    ]
    .join(",")
}

/// Writes `contents` to `path`, naming the path in the error.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
        .into()
    })
}
