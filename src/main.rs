//! `parascan`: the depth-versus-length sweep (default), `check` against the
//! f64 oracle, `info` about the machine, and `bench`, the GPU benchmark on
//! the `GPU.md` shapes.
//!
//! `cargo run --release` with no arguments runs the default sweep (SPEC §5)
//! and writes its CSV, JSON and plots to `sweep-out/`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use parascan::backend::cuda::{cuda_status, ptx_fingerprint as cuda_fingerprint, CudaBackend};
use parascan::backend::{BackendKind, Cpu, HAS_SCAN_KERNELS};
use parascan::bench;
use parascan::check::{self, CheckConfig};
use parascan::ptx;
use parascan::sweep::{self, config, Event, RowKind, SweepConfig};

#[derive(Parser, Debug)]
#[command(
    name = "parascan",
    version,
    about = "Parallel-over-time linear recurrences: measured depth and speed versus sequence length",
    long_about = "Runs chunked Blelloch scans of linear recurrences and measures how deep \
                  (combines on the critical path) and how fast they are as T grows.\n\n\
                  With no subcommand, runs `sweep` with its defaults.\n\n\
                  Exit status: 0 on success, 1 when `check` finds a failing case or \
                  `bench` a case that failed or wrote non-finite states (its outputs are \
                  still written), 2 on bad arguments or a run that could not complete.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    sweep: SweepArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Depth, work and time versus sequence length for every family (the default).
    Sweep(Box<SweepArgs>),
    /// Every family × dtype × plan on every available backend against the f64 oracle.
    Check(CheckArgs),
    /// Backend choice, devices, PTX build and copy bandwidth.
    Info(InfoArgs),
    /// Every family on the GPU.md shapes under every plan, timed on the kernels
    /// (CUDA events on a GPU); writes bench.md (for BENCHMARKS.md), bench.csv, bench.json.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct SweepArgs {
    /// Families, comma-separated: diagonal, perm-diagonal, block-diagonal, dense, dplr (or all).
    #[arg(long, default_value = "all")]
    families: String,
    /// Plans, comma-separated: sequential, min-depth, auto, chunk=C, look-back (Diagonal
    /// kernels only; skipped elsewhere).
    #[arg(long, default_value = "sequential,auto,chunk=64")]
    plans: String,
    /// Storage dtypes, comma-separated: f32, bf16, f16, f64 (or all).
    #[arg(long, default_value = "f32")]
    dtypes: String,
    /// Layouts of the diagonal family, comma-separated: btd ([B,T,D]), bdt ([B,D,T]).
    #[arg(long, default_value = "btd")]
    layouts: String,
    /// Backend: auto (CUDA when a device opens, else CPU), cpu, cuda, emu (SIMT emulator
    /// of the kernels, small T: default grid capped at 2^14). On cuda/emu every family with
    /// kernels runs on them, the rest on the CPU engine (rows say which).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Shortest T of the grid (e.g. 256 or 2^8) [default: 2^8, --quick: 64].
    #[arg(long, value_parser = parse_len)]
    min_t: Option<usize>,
    /// Longest T of the grid [default: 2^20, --quick: 1024].
    #[arg(long, value_parser = parse_len)]
    max_t: Option<usize>,
    /// Growth factor between grid points [default: 4].
    #[arg(long)]
    step: Option<usize>,
    /// A tiny grid and timing budget (seconds, for tests and CI).
    #[arg(long)]
    quick: bool,
    /// Output folder for sweep.csv, sweep.json, depth_vs_t.svg, time_vs_t.svg.
    #[arg(long, default_value = "sweep-out")]
    out: PathBuf,
    /// Skip cases whose estimated memory exceeds this many MiB [default: 640].
    #[arg(long)]
    max_case_mb: Option<usize>,
    /// Minimum timed milliseconds per case (after at least 3 runs) [default: 50].
    #[arg(long)]
    min_time_ms: Option<u64>,
    /// Skip the separate large-diagonal bandwidth line.
    #[arg(long)]
    no_bandwidth_case: bool,
    /// Seed of the random inputs.
    #[arg(long)]
    seed: Option<u64>,
    /// Nonlinear cells, comma-separated: diag-gru, diag-lstm, elman, parity (the hard
    /// cell), all or none. Plan `sequential` is each cell's sequential loop, every other
    /// plan a Newton solve whose scans use that plan.
    #[arg(long, default_value = "diag-gru,parity")]
    cells: String,
    /// Longest T of the contractive cells' rows [default: 2^16].
    #[arg(long, value_parser = parse_len)]
    newton_max_t: Option<usize>,
    /// Longest T of the hard cell's rows (Newton needs ~T iterations) [default: 2^12].
    #[arg(long, value_parser = parse_len)]
    hard_max_t: Option<usize>,
    /// Sequences per nonlinear case [default: 1].
    #[arg(long)]
    cell_batch: Option<usize>,
    /// Units of every nonlinear cell [default: 16 diag-gru/elman, 8 diag-lstm, 4 parity].
    #[arg(long)]
    cell_units: Option<usize>,
    /// Families that also get backward rows (the gradient pass under the same plan,
    /// after each forward row), comma-separated, all or none.
    #[arg(long, default_value = "diagonal,perm-diagonal")]
    backward: String,
    /// Longest T of the backward rows [default: 2^16].
    #[arg(long, value_parser = parse_len)]
    backward_max_t: Option<usize>,
    /// Families that also get varlen rows (CPU engine): after each forward row, the
    /// same B·T tokens as 4·B packed sequences of random lengths (cu_seqlens) and as
    /// the same sequences padded to an equal-length batch, comma-separated, all or none.
    #[arg(long, default_value = "none")]
    varlen: String,
    /// Longest T of the varlen rows [default: 2^16].
    #[arg(long, value_parser = parse_len)]
    varlen_max_t: Option<usize>,
    /// The depth-hierarchy preset: diagonal, perm-diagonal and dplr scans (min-depth),
    /// Newton on diag-gru and parity, and the sequential loops, T = 2^6..2^14 (x2);
    /// writes hierarchy.svg. Overrides --families, --plans, --cells and the grid unless
    /// --min-t/--max-t/--step are given.
    #[arg(long)]
    hierarchy: bool,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Families, comma-separated (or all).
    #[arg(long, default_value = "all")]
    families: String,
    /// Storage dtypes, comma-separated (or all).
    #[arg(long, default_value = "all")]
    dtypes: String,
    /// Plans, comma-separated.
    #[arg(long, default_value = "sequential,min-depth,auto,chunk=7")]
    plans: String,
    /// Sequence lengths, comma-separated [default: 1,2,37,1000,10007; --quick: 1,37,300].
    #[arg(long)]
    lengths: Option<String>,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Seed of the random inputs.
    #[arg(long)]
    seed: Option<u64>,
    /// Shorter lengths.
    #[arg(long)]
    quick: bool,
    /// Print every case, not only the summary and the failures.
    #[arg(long, short)]
    verbose: bool,
    /// Backends, comma-separated: cpu, emu, cuda, or all (cuda when a device opens).
    /// Named backends must open: `--backends cuda` fails without a GPU.
    #[arg(long, default_value = "all")]
    backends: String,
    /// Refuse lengths whose largest case needs more than this many MiB (estimated).
    #[arg(long, default_value_t = parascan::check::DEFAULT_CHECK_MAX_CASE_BYTES >> 20)]
    max_case_mb: usize,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Worker threads of the copy probe (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Buffer size of the copy probes, MiB.
    #[arg(long, default_value_t = 256)]
    copy_mb: usize,
    /// Write every embedded PTX module to DIR/<module>.ptx, with its fingerprint in
    /// DIR/<module>.ptx-fnv (for compiling cubins ahead of time), and exit.
    #[arg(long, value_name = "DIR")]
    write_ptx: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Backend: auto (cuda when a GPU opens, else the emulator), cuda, emu (the SIMT
    /// emulator: use --scale, default 12, so T shrinks to what a CPU can run).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Shape groups, comma-separated: diagonal, perm-diagonal, dplr, newton (or all).
    #[arg(long, default_value = "all")]
    shapes: String,
    /// One T per length list (DPLR 2^13, Newton 2^16) and fewer, shorter reps.
    #[arg(long)]
    quick: bool,
    /// Divide every T by 2^N (at least 1) [default: 0 on cuda, 12 on emu].
    #[arg(long)]
    scale: Option<u32>,
    /// Output folder for bench.md, bench.csv (written row by row) and bench.json.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Start no new case after this many seconds (the rest is listed as skipped).
    #[arg(long)]
    time_limit: Option<f64>,
    /// Buffer size of the copy-bandwidth probe, MiB.
    #[arg(long, default_value_t = 256)]
    copy_mb: usize,
    /// Seed of the inputs.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the cases, their plans and the bytes they move, and exit.
    #[arg(long)]
    list: bool,
}

/// `1024`, `2^10` or `1k`/`1M` (binary multiples).
fn parse_len(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let parsed = if let Some(exp) = s.strip_prefix("2^") {
        exp.parse::<u32>()
            .ok()
            .and_then(|e| 1usize.checked_shl(e).filter(|_| e < usize::BITS))
    } else if let Some(k) = s.strip_suffix(['k', 'K']) {
        k.parse::<usize>().ok().and_then(|v| v.checked_mul(1 << 10))
    } else if let Some(m) = s.strip_suffix(['m', 'M']) {
        m.parse::<usize>().ok().and_then(|v| v.checked_mul(1 << 20))
    } else {
        s.parse::<usize>().ok()
    };
    match parsed {
        Some(v) if v >= 1 => Ok(v),
        _ => Err(format!(
            "a length ≥ 1 such as 4096, 2^12, 4k or 1M; got `{s}`"
        )),
    }
}

/// Set once a write to stdout failed (a closed pipe: `parascan … | head`).
/// From then on output is dropped, but the run goes on and still writes
/// its files; the exit status is the run's own.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout, dropping the text once stdout is closed (Rust ignores
/// SIGPIPE, so `println!` would panic on the broken pipe instead).
fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// `println!` that survives a closed stdout (see [`write_stdout`]).
macro_rules! say {
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed stdout.
macro_rules! say_raw {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

/// Creates the output folder and checks that a file can be written in it,
/// before any work, so an unwritable `--out` fails at once.
fn prepare_out_dir(dir: &std::path::Path) -> Result<()> {
    let fail =
        |e: std::io::Error| anyhow::anyhow!("output folder {} is not writable: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".parascan-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    // Best effort: the probe is empty and hidden if it cannot be removed.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Exit status of a run that could not complete (bad flag values, an
/// unavailable backend, an unwritable output folder); clap uses the same
/// for malformed command lines. `check` and `bench` exit with 1 when a
/// case fails.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_sweep(cli.sweep),
        Some(Command::Sweep(args)) => run_sweep(*args),
        Some(Command::Check(args)) => run_check(args),
        Some(Command::Info(args)) => run_info(args),
        Some(Command::Bench(args)) => run_bench(args),
    };
    result.unwrap_or_else(|e| {
        // `{:#}` prints the whole context chain on one line; no backtrace,
        // which is noise for a user error.
        eprintln!("error: {e:#}");
        ExitCode::from(EXIT_ERROR)
    })
}

/// A progress bar on stderr, hidden when stderr is not a terminal (CI
/// logs, pipes) so it never mixes with captured output.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed}<{eta}] {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// `mb` MiB in bytes, refused (naming `arg`) when `copies` buffers of that
/// size would not fit in this machine's memory: such a flag would only end
/// in an allocation failure later.
fn mib_within_memory(arg: &'static str, mb: usize, copies: usize) -> Result<usize> {
    let budget_mb = (parascan::mem::host_budget() / copies.max(1)) >> 20;
    match mb.checked_mul(1 << 20) {
        Some(bytes) if mb <= budget_mb => Ok(bytes),
        _ => Err(sweep::SweepError::Invalid {
            arg,
            expected: format!(
                "at most {budget_mb} MiB ({} this machine's memory); got {mb}",
                if copies > 1 {
                    format!("{copies} buffers of it must fit in")
                } else {
                    "the size of".to_string()
                }
            ),
        }
        .into()),
    }
}

fn sweep_config(args: &SweepArgs) -> Result<SweepConfig> {
    let mut cfg = if args.hierarchy {
        SweepConfig::hierarchy()
    } else if args.quick {
        SweepConfig::quick()
    } else {
        SweepConfig::default()
    };
    if !args.hierarchy {
        cfg.families = config::parse_families(&args.families)?;
        cfg.plans = config::parse_plans(&args.plans)?;
        cfg.cells = parascan::sweep::cells::parse_cells(&args.cells)?;
    }
    if let Some(t) = args.newton_max_t {
        cfg.newton_max_t = t;
    }
    if let Some(t) = args.hard_max_t {
        cfg.hard_max_t = t;
    }
    if !args.hierarchy {
        cfg.backward = config::parse_backward(&args.backward)?;
    }
    if let Some(t) = args.backward_max_t {
        cfg.backward_max_t = t;
    }
    cfg.varlen = config::parse_varlen(&args.varlen)?;
    if let Some(t) = args.varlen_max_t {
        cfg.varlen_max_t = t;
    }
    if let Some(b) = args.cell_batch {
        cfg.cell_batch = b;
    }
    if args.cell_units.is_some() {
        cfg.cell_units = args.cell_units;
    }
    cfg.dtypes = config::parse_dtypes(&args.dtypes)?;
    cfg.diagonal_layouts = config::parse_layouts(&args.layouts)?;
    cfg.backend = args.backend.parse()?;
    cfg.threads = args.threads;
    if cfg.backend == config::BackendChoice::Emu && args.max_t.is_none() {
        // The emulator is slow: keep the default grid small.
        cfg.lengths.retain(|&t| t <= config::EMU_MAX_T);
        if cfg.lengths.is_empty() {
            cfg.lengths.push(
                args.min_t
                    .unwrap_or(config::EMU_MAX_T)
                    .min(config::EMU_MAX_T),
            );
        }
    }
    if args.min_t.is_some() || args.max_t.is_some() || args.step.is_some() {
        let min_t = args.min_t.unwrap_or(cfg.lengths[0]);
        let max_t = args
            .max_t
            .unwrap_or_else(|| cfg.lengths.last().copied().unwrap_or(min_t).max(min_t));
        cfg.lengths = config::log_grid(min_t, max_t, args.step.unwrap_or(config::DEFAULT_STEP))?;
    }
    if let Some(mb) = args.max_case_mb {
        cfg.max_case_bytes = mib_within_memory("max-case-mb", mb, 1)?;
    }
    if let Some(ms) = args.min_time_ms {
        cfg.timing.min_time = std::time::Duration::from_millis(ms);
    }
    if args.no_bandwidth_case {
        cfg.bandwidth_case = None;
    }
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn run_sweep(args: SweepArgs) -> Result<ExitCode> {
    let cfg = sweep_config(&args)?;
    // Fail before printing anything when the backend cannot run or the
    // results could not be written.
    sweep::select_backend(cfg.backend)?;
    prepare_out_dir(&args.out)?;
    let pb = progress_bar();
    let grid: Vec<String> = cfg.lengths.iter().map(|t| t.to_string()).collect();
    say!(
        "parascan sweep: families {}, plans {}, dtypes {}, T = {}",
        cfg.families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.plans
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
        cfg.dtypes
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(","),
        grid.join(", ")
    );
    let report = sweep::run(&cfg, &pb, &mut |event| {
        let line = match event {
            Event::Backend(b) => format!("backend: {} — {}", b.kind, b.reason),
            Event::CopyBandwidth { gbs, threads } => format!(
                "copy bandwidth: {gbs:.2} GB/s (read + written, {threads} threads, {} MiB buffers)\n\n{}",
                cfg.copy_bytes >> 20,
                sweep::report::table_header()
            ),
            Event::Row(r) if r.kind == RowKind::Bandwidth => format!(
                "\nbandwidth case ({} {}, plan {}; target ≥ 70% of copy bandwidth):\n{}",
                r.shape,
                r.dtype,
                r.plan,
                sweep::report::table_row(r)
            ),
            Event::Row(r) => sweep::report::table_row(r),
            Event::Skipped(s) => sweep::report::skipped_line(s),
        };
        pb.suspend(|| say!("{line}"));
    })?;
    pb.finish_and_clear();
    let out = sweep::write_outputs(&report, &args.out).context("writing the results")?;
    say!(
        "\n{} cases in {:.1} s; wrote {}, {}, {}, {}, {}",
        report.rows.len() + usize::from(report.bandwidth.is_some()),
        report.meta.wall_s,
        out.csv.display(),
        out.json.display(),
        out.depth_plot.display(),
        out.time_plot.display(),
        out.hierarchy_plot.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    let mut cfg = if args.quick {
        CheckConfig::quick()
    } else {
        CheckConfig::default()
    };
    cfg.families = config::parse_families(&args.families)?;
    cfg.dtypes = config::parse_dtypes(&args.dtypes)?;
    cfg.plans = config::parse_plans(&args.plans)?;
    if let Some(lengths) = &args.lengths {
        cfg.lengths = config::parse_list("lengths", lengths, |s| {
            parse_len(s).map_err(|expected| sweep::SweepError::Invalid {
                arg: "lengths",
                expected,
            })
        })?;
    }
    cfg.threads = args.threads;
    cfg.max_case_bytes = mib_within_memory("max-case-mb", args.max_case_mb, 1)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    if !args.backends.trim().eq_ignore_ascii_case("all") {
        cfg.backends = Some(config::parse_list("backends", &args.backends, |s| {
            s.parse::<BackendKind>()
                .map_err(|_| sweep::SweepError::Invalid {
                    arg: "backends",
                    expected: format!("cpu, emu, cuda or all; got `{s}`"),
                })
        })?);
    }
    let pb = progress_bar();
    let start = Instant::now();
    let verbose = args.verbose;
    let report = check::run(&cfg, &pb, &mut |row| {
        if verbose || !row.pass {
            let line = format!(
                "{} {} {} {} T={} h0={} {}: out {:.3e}, h_T {:.3e}, tol {:.1e}",
                if row.pass { "PASS" } else { "FAIL" },
                row.backend,
                row.label,
                row.dtype,
                row.len,
                row.h0,
                row.plan,
                row.err_out,
                row.err_last,
                row.tol
            );
            pb.suspend(|| say!("{line}"));
        }
    })?;
    pb.finish_and_clear();
    say!("{}", report.summary_table());
    let fails = report.failures().count();
    say!(
        "{} cases, {} failed, in {:.1} s (seed {:#x}; tolerance: f32 1e-5·log2 T, f64 1e-12·log2 T, bf16 8e-3, f16 1e-3 relative L2)",
        report.rows.len(),
        fails,
        start.elapsed().as_secs_f64(),
        cfg.seed
    );
    if report.passed() {
        say!("PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        if fails > 0 {
            say!("\nfailures:\n{}", report.failure_lines());
        }
        say!("FAIL");
        Ok(ExitCode::FAILURE)
    }
}

fn run_info(args: InfoArgs) -> Result<ExitCode> {
    // Two buffers of this size (source and destination); refused before
    // anything is printed.
    let bytes = mib_within_memory("copy-mb", args.copy_mb.max(1), 2)?;
    if let Some(dir) = &args.write_ptx {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (module, text) in ptx::MODULES {
            let path = dir.join(format!("{module}.ptx"));
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            let key = dir.join(format!("{module}.ptx-fnv"));
            std::fs::write(&key, format!("{}\n", cuda_fingerprint(text)))
                .with_context(|| format!("writing {}", key.display()))?;
        }
        say!(
            "wrote {} PTX module(s) for {} to {}",
            ptx::MODULES.len(),
            ptx::CUDA_ARCH,
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    say!("parascan {}", env!("CARGO_PKG_VERSION"));
    let (kind, reason) = BackendKind::auto();
    say!("backend (auto): {kind} — {reason}");

    let cpu = match args.threads {
        Some(n) => Cpu::with_threads(n)?,
        None => Cpu::new(),
    };
    let threads = cpu.threads();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    say!(
        "cpu: {} — {threads} engine threads ({cores} available)",
        sweep::cpu_model().unwrap_or_else(|| "unknown model".into())
    );
    say!("cuda: {}", cuda_status());
    if ptx::PTX_BUILT {
        let modules: Vec<&str> = ptx::MODULES.iter().map(|(name, _)| *name).collect();
        say!(
            "ptx: built for {} by nvcc {} (modules: {})",
            ptx::CUDA_ARCH,
            ptx::NVCC_VERSION,
            modules.join(", ")
        );
    } else {
        say!(
            "ptx: not built (no nvcc at build time; target would be {})",
            ptx::CUDA_ARCH
        );
    }
    // The kernels run only where their PTX was embedded at build time.
    say!(
        "cuda scan kernels: {}",
        match (HAS_SCAN_KERNELS, ptx::PTX_BUILT) {
            (true, true) => "yes",
            (true, false) => "no (this build has no PTX: nvcc was not found at build time)",
            (false, _) => "not in this build",
        }
    );

    let pool = sweep::thread_pool(threads)?;
    let gbs = sweep::bandwidth::cpu_copy_gbs(&pool, bytes, 7)?;
    say!(
        "cpu copy bandwidth: {gbs:.2} GB/s (read + written, {threads} threads, {} MiB buffers, median of 7)",
        bytes >> 20
    );
    match CudaBackend::new(0) {
        Ok(dev) if dev.is_emulated() => match dev.copy_bandwidth_gbs(bytes.min(16 << 20), 20) {
            Ok(g) => say!(
                "emulated cuda copy bandwidth: {g:.2} GB/s ({}, {} MiB buffers, median of 20; \
                 the SIMT emulator on the CPU, not a GPU result)",
                dev.device_name(),
                bytes.min(16 << 20) >> 20
            ),
            Err(e) => say!("emulated cuda copy bandwidth: failed ({e})"),
        },
        Ok(dev) => match dev.copy_bandwidth_gbs(bytes, 20) {
            Ok(g) => say!(
                "gpu copy bandwidth: {g:.1} GB/s ({}, {} MiB buffers, median of 20)",
                dev.device_name(),
                bytes >> 20
            ),
            Err(e) => say!("gpu copy bandwidth: failed ({e})"),
        },
        Err(e) => say!("gpu copy bandwidth: no device ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_config(args: &BenchArgs) -> Result<bench::BenchConfig> {
    let mut cfg = if args.quick {
        bench::BenchConfig::quick()
    } else {
        bench::BenchConfig::default()
    };
    cfg.backend = args.backend.parse()?;
    cfg.families = bench::cases::parse_families(&args.shapes)?;
    cfg.scale = args.scale;
    cfg.copy_bytes = mib_within_memory("copy-mb", args.copy_mb, 2)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    if let Some(secs) = args.time_limit {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(sweep::SweepError::Invalid {
                arg: "time-limit",
                expected: format!("`{secs}`: a number of seconds > 0"),
            }
            .into());
        }
        cfg.time_limit = Some(std::time::Duration::from_secs_f64(secs));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    cfg.command = format!("parascan {}", args.join(" "));
    cfg.validate()?;
    Ok(cfg)
}

fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    let cfg = bench_config(&args)?;
    if args.list {
        say_raw!("{}", bench::list_cases(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    prepare_out_dir(&args.out)?;
    // Created with the first row, so that a backend that fails to open
    // leaves no header-only bench.csv behind.
    let csv_path = args.out.join("bench.csv");
    let mut sink: Option<bench::CsvSink> = None;
    let mut sink_error = None;
    let report = bench::run(&cfg, &mut |event| match event {
        bench::Event::Started(m) => say!(
            "parascan bench on {} ({}; opened in {:.1} s); copy bandwidth {:.1} GB/s ({}){}\n{}",
            m.device,
            m.backend_reason,
            m.device_open_s,
            m.copy_gbs,
            m.copy_method,
            if m.scale > 0 {
                format!("; T / 2^{}", m.scale)
            } else {
                String::new()
            },
            m.timing
        ),
        bench::Event::Case(name) => say!("-- {name}"),
        bench::Event::Row(row) => {
            say!("{}", bench::report::progress_line(row));
            if sink_error.is_none() {
                let pushed = match &mut sink {
                    Some(s) => s.push(row),
                    None => bench::CsvSink::create(&csv_path).and_then(|mut s| {
                        let r = s.push(row);
                        sink = Some(s);
                        r
                    }),
                };
                if let Err(e) = pushed {
                    sink_error = Some(e);
                }
            }
        }
        bench::Event::Skipped(s) => say!(
            "{} {} {}: {}",
            if s.failed { "FAILED" } else { "skipped" },
            s.case,
            s.plan,
            s.reason
        ),
    })?;
    if let Some(e) = sink_error {
        return Err(e.into());
    }
    let out = bench::write_outputs(&report, &args.out).context("writing the results")?;
    let failures = report.failures();
    say!(
        "\n{} rows, {} skipped ({} failed) in {:.1} s; wrote {}, {}, {}",
        report.rows.len(),
        report.skipped.len(),
        failures,
        report.meta.wall_s,
        out.markdown.display(),
        out.csv.display(),
        out.json.display()
    );
    Ok(if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
