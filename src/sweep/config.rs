//! What a sweep runs: families, shapes, plans, dtypes, the length grid and
//! the timing budget.
//!
//! The default shapes are fixed per family (the batch never shrinks as `T`
//! grows, so every point of a curve is the same problem, only longer); they
//! are chosen so one case at `T = 2^20` moves a few hundred MB at most. A
//! case whose estimated memory exceeds [`SweepConfig::max_case_bytes`] is
//! skipped and reported as skipped, never silently reshaped.

use std::str::FromStr;
use std::time::Duration;

use super::{Result, SweepError};
use crate::dtype::DType;
use crate::error::Error;
use crate::family::dplr::DplrOutput;
use crate::family::Layout;
use crate::scan::PlanRequest;

/// A transition family as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// `diag(a_t)`.
    Diagonal,
    /// Permutation times diagonal.
    PermDiagonal,
    /// `nb` dense `k×k` blocks with `1 < k < n`.
    BlockDiagonal,
    /// One dense `n×n` block (block-diagonal with `k = n`).
    Dense,
    /// Diagonal plus low rank on a matrix state.
    Dplr,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 5] = [
        Family::Diagonal,
        Family::PermDiagonal,
        Family::BlockDiagonal,
        Family::Dense,
        Family::Dplr,
    ];

    /// Whether the family has kernels in `kernels/*.cu` (it then runs on
    /// them under `--backend cuda|emu` and in `check`).
    pub fn has_kernels(self) -> bool {
        // Every family has kernels; kept as a function so a future family
        // can start CPU-only.
        matches!(
            self,
            Family::Diagonal
                | Family::PermDiagonal
                | Family::BlockDiagonal
                | Family::Dense
                | Family::Dplr
        )
    }

    /// The command-line name (`diagonal`, `perm-diagonal`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Family::Diagonal => "diagonal",
            Family::PermDiagonal => "perm-diagonal",
            Family::BlockDiagonal => "block-diagonal",
            Family::Dense => "dense",
            Family::Dplr => "dplr",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .or(match s.as_str() {
                "pd" | "perm" => Some(Family::PermDiagonal),
                "block" | "bd" => Some(Family::BlockDiagonal),
                _ => None,
            })
            .ok_or_else(|| {
                invalid(
                    "families",
                    format!(
                        "one of diagonal, perm-diagonal, block-diagonal, dense, dplr; got `{s}`"
                    ),
                )
            })
    }
}

/// Which backend to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// [`crate::backend::BackendKind::auto`]: CUDA when a device with scan
    /// kernels works, else the CPU.
    Auto,
    /// The native rayon engine.
    Cpu,
    /// The CUDA backend (an error when no device opens); families with
    /// kernels run on them, the others on the CPU engine.
    Cuda,
    /// The SIMT emulator of the CUDA kernels (small sizes only); families
    /// with kernels run on the emulated kernels, the others on the CPU engine.
    Emu,
}

impl FromStr for BackendChoice {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" | "gpu" => Ok(BackendChoice::Cuda),
            "emu" => Ok(BackendChoice::Emu),
            other => Err(invalid(
                "backend",
                format!("auto, cpu, cuda or emu; got `{other}`"),
            )),
        }
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::Emu => "emu",
        })
    }
}

/// One family instance with fixed sizes; `T` is the only thing a sweep
/// varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Shape {
    /// `a, b: [B,T,D]` or `[B,D,T]`.
    Diagonal {
        /// `B`.
        batch: usize,
        /// `D`.
        dim: usize,
        /// Memory layout.
        layout: Layout,
    },
    /// `perm (u8), d, b: [B,T,n]`.
    PermDiagonal {
        /// `B`.
        batch: usize,
        /// `n` (at most 256: permutations are stored as `u8`).
        n: usize,
    },
    /// `A: [B,T,nb,k,k]`, `b: [B,T,n]` with `n = nb·k`; `nb = 1` is dense.
    BlockDiagonal {
        /// `B`.
        batch: usize,
        /// `nb`.
        blocks: usize,
        /// `k`.
        block: usize,
    },
    /// `w, k, q: [B,T,n]`, `u, v: [B,T,R,n]`, `x: [B,T,m]`.
    Dplr {
        /// `B`.
        batch: usize,
        /// State rows `n`.
        n: usize,
        /// State columns `m`.
        m: usize,
        /// Rank `R`.
        rank: usize,
        /// Readout `y_t = H_tᵀ q_t` or every state.
        output: DplrOutput,
    },
}

impl Shape {
    /// The family this shape belongs to (`BlockDiagonal` with one block is
    /// reported as `dense`).
    pub fn family(&self) -> Family {
        match *self {
            Shape::Diagonal { .. } => Family::Diagonal,
            Shape::PermDiagonal { .. } => Family::PermDiagonal,
            Shape::BlockDiagonal { blocks: 1, .. } => Family::Dense,
            Shape::BlockDiagonal { .. } => Family::BlockDiagonal,
            Shape::Dplr { .. } => Family::Dplr,
        }
    }

    /// `B`.
    pub fn batch(&self) -> usize {
        match *self {
            Shape::Diagonal { batch, .. }
            | Shape::PermDiagonal { batch, .. }
            | Shape::BlockDiagonal { batch, .. }
            | Shape::Dplr { batch, .. } => batch,
        }
    }

    /// State scalars per sequence and step (`D`, `n`, `n`, `n·m`): the
    /// "lanes" of the throughput column, elements = `B·T·lanes`.
    pub fn lanes(&self) -> usize {
        match *self {
            Shape::Diagonal { dim, .. } => dim,
            Shape::PermDiagonal { n, .. } => n,
            Shape::BlockDiagonal { blocks, block, .. } => blocks * block,
            Shape::Dplr { n, m, .. } => n * m,
        }
    }

    /// A short name that tells instances of one family apart, e.g.
    /// `perm-diagonal n=5` (the plots' series names start with it).
    pub fn label(&self) -> String {
        match *self {
            Shape::Diagonal {
                layout: Layout::Btd,
                ..
            } => "diagonal".into(),
            Shape::Diagonal {
                layout: Layout::Bdt,
                ..
            } => "diagonal [B,D,T]".into(),
            Shape::PermDiagonal { n, .. } => format!("perm-diagonal n={n}"),
            Shape::BlockDiagonal {
                blocks: 1, block, ..
            } => format!("dense n={block}"),
            Shape::BlockDiagonal { blocks, block, .. } => {
                format!("block-diagonal {blocks}x{block}")
            }
            Shape::Dplr { n, m, rank, .. } => format!("dplr {n}x{m} r{rank}"),
        }
    }

    /// The input shape with `T` left symbolic, e.g. `[B,T,D]=[2,T,16]`.
    pub fn describe(&self) -> String {
        match *self {
            Shape::Diagonal {
                batch,
                dim,
                layout: Layout::Btd,
            } => format!("[B,T,D]=[{batch},T,{dim}]"),
            Shape::Diagonal {
                batch,
                dim,
                layout: Layout::Bdt,
            } => format!("[B,D,T]=[{batch},{dim},T]"),
            Shape::PermDiagonal { batch, n } => format!("[B,T,n]=[{batch},T,{n}] u8"),
            Shape::BlockDiagonal {
                batch,
                blocks,
                block,
            } => format!("[B,T,nb,k,k]=[{batch},T,{blocks},{block},{block}]"),
            Shape::Dplr {
                batch,
                n,
                m,
                rank,
                output,
            } => {
                let out = match output {
                    DplrOutput::Readout => "readout",
                    DplrOutput::States => "states",
                };
                format!("B={batch} n={n} m={m} R={rank} {out}")
            }
        }
    }

    /// Storage scalars per batch row and step: `(inputs, outputs)`, not
    /// counting `u8` permutation indices (see [`Shape::index_bytes_per_step`]).
    pub fn scalars_per_step(&self) -> (usize, usize) {
        match *self {
            Shape::Diagonal { dim, .. } => (2 * dim, dim),
            Shape::PermDiagonal { n, .. } => (2 * n, n),
            Shape::BlockDiagonal { blocks, block, .. } => {
                (blocks * block * block + blocks * block, blocks * block)
            }
            Shape::Dplr {
                n, m, rank, output, ..
            } => {
                let inputs = n + 2 * rank * n + n + m + n; // w, u, v, k, x, q
                let outputs = match output {
                    DplrOutput::Readout => m,
                    DplrOutput::States => n * m,
                };
                (inputs, outputs)
            }
        }
    }

    /// Floating-point operations (multiplies and adds, each counted once)
    /// of applying one step to one batch row's state, as the sequential
    /// loop does: `2·D` (diagonal), `2·n` (perm-diagonal), `2·nb·k²`
    /// (block matrix-vector product), and for DPLR `n·m·(3 + 4R)` (scale,
    /// `R` rank-one updates `H += u (vᵀH)`, `k xᵀ`) plus `2·n·m` for the
    /// readout `qᵀH`. Chunked plans do more work per step (folds and
    /// combines); the FMA-peak ratio of a row uses this count.
    pub fn flops_per_step(&self) -> usize {
        match *self {
            Shape::Diagonal { dim, .. } => 2 * dim,
            Shape::PermDiagonal { n, .. } => 2 * n,
            Shape::BlockDiagonal { blocks, block, .. } => 2 * blocks * block * block,
            Shape::Dplr {
                n, m, rank, output, ..
            } => {
                let readout = match output {
                    DplrOutput::Readout => 2,
                    DplrOutput::States => 0,
                };
                n * m * (3 + 4 * rank + readout)
            }
        }
    }

    /// Bytes of integer indices per batch row and step (`perm` as `u8`).
    pub fn index_bytes_per_step(&self) -> usize {
        match *self {
            Shape::PermDiagonal { n, .. } => n,
            _ => 0,
        }
    }

    /// Scalars of one scan aggregate for one sequence of the engine (what
    /// a chunk folds into), used to estimate scratch memory.
    fn agg_scalars(&self) -> usize {
        match *self {
            Shape::Diagonal { dim, .. } => 2 * dim,
            // (π as usize = 2 scalars' worth, d, b).
            Shape::PermDiagonal { n, .. } => 4 * n,
            Shape::BlockDiagonal { blocks, block, .. } => blocks * block * block + blocks * block,
            // Chunk products are dense n×n plus the n×m offset.
            Shape::Dplr { n, m, .. } => n * n + n * m,
        }
    }

    /// Estimated peak bytes of one run of `len` steps under chunks of
    /// `chunk` (`chunk ≥ len` is the sequential loop) with `dtype` storage:
    /// inputs, outputs, final states, and the engine's aggregates (held
    /// about three times: the chunk aggregates, the Blelloch tree and the
    /// carries, each with a small per-element heap overhead).
    pub fn estimate_bytes(&self, len: usize, chunk: usize, dtype: DType) -> usize {
        let b = self.batch();
        let (ins, outs) = self.scalars_per_step();
        let io = b
            .saturating_mul(len)
            .saturating_mul((ins + outs) * dtype.size() + self.index_bytes_per_step());
        let chunks = len.div_ceil(chunk.clamp(1, len.max(1)));
        let scratch = if chunks <= 1 {
            0
        } else {
            let compute = if dtype == DType::F64 { 8 } else { 4 };
            // [B,D,T] diagonal runs B·D scalar sequences: same total.
            let per = self.agg_scalars() * compute + 64;
            b.saturating_mul(chunks)
                .saturating_mul(per)
                .saturating_mul(3)
        };
        io.saturating_add(scratch)
    }

    /// Checks the sizes (every dimension ≥ 1, `n ≤ 256` for `u8` perms).
    pub fn validate(&self) -> Result<()> {
        let positive = |arg: &'static str, v: usize| {
            if v == 0 {
                Err(Error::size(arg, v, "≥ 1").into())
            } else {
                Ok(())
            }
        };
        match *self {
            Shape::Diagonal { batch, dim, .. } => {
                positive("batch", batch)?;
                positive("dim", dim)
            }
            Shape::PermDiagonal { batch, n } => {
                positive("batch", batch)?;
                positive("n", n)?;
                if n > 256 {
                    return Err(Error::size("n", n, "≤ 256 (u8 permutation indices)").into());
                }
                Ok(())
            }
            Shape::BlockDiagonal {
                batch,
                blocks,
                block,
            } => {
                positive("batch", batch)?;
                positive("blocks", blocks)?;
                positive("block", block)
            }
            Shape::Dplr {
                batch, n, m, rank, ..
            } => {
                positive("batch", batch)?;
                positive("n", n)?;
                positive("m", m)?;
                positive("rank", rank)
            }
        }
    }
}

/// The default shapes of the sweep for one family, documented here because
/// the README quotes them. Per `T` step (f32 storage, inputs + outputs):
///
/// | family | shape | bytes per step | at `T = 2^20` |
/// |---|---|---|---|
/// | diagonal | `B=2, D=16` `[B,T,D]` (`[B,D,T]` with `--layouts bdt`) | 384 | 384 MiB |
/// | perm-diagonal | `B=4, n=5` (`u8` perms) | 260 | 260 MiB |
/// | perm-diagonal | `B=1, n=64` (`u8` perms) | 832 | skipped (> 640 MiB) |
/// | block-diagonal | `B=1, nb=8, k=4` (`n=32`) | 768 | skipped (> 640 MiB) |
/// | dense | `B=1, k=n=16` | 1152 | skipped (> 640 MiB) |
/// | dplr | `B=1, n=m=16, R=1`, readout | 448 | 448 MiB (+96 MiB of chunk aggregates under `chunk=64`) |
///
/// Small batches keep a 2-core machine busy through the *time* axis (the
/// point of the sweep) instead of through the batch, and keep the largest
/// case inside a few hundred MB; the three wide families stop at
/// `T = 2^18` under the default [`DEFAULT_MAX_CASE_BYTES`] rather than
/// change shape.
pub fn default_shapes(family: Family, diagonal_layouts: &[Layout]) -> Vec<Shape> {
    match family {
        Family::Diagonal => diagonal_layouts
            .iter()
            .map(|&layout| Shape::Diagonal {
                batch: 2,
                dim: 16,
                layout,
            })
            .collect(),
        Family::PermDiagonal => vec![
            Shape::PermDiagonal { batch: 4, n: 5 },
            Shape::PermDiagonal { batch: 1, n: 64 },
        ],
        Family::BlockDiagonal => vec![Shape::BlockDiagonal {
            batch: 1,
            blocks: 8,
            block: 4,
        }],
        Family::Dense => vec![Shape::BlockDiagonal {
            batch: 1,
            blocks: 1,
            block: 16,
        }],
        Family::Dplr => vec![Shape::Dplr {
            batch: 1,
            n: 16,
            m: 16,
            rank: 1,
            output: DplrOutput::Readout,
        }],
    }
}

/// How long to time one case.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TimingPolicy {
    /// Untimed runs first (page faults, caches, rayon wake-up).
    pub warmup: usize,
    /// Timed runs at least.
    pub min_reps: usize,
    /// Keep timing until this much time has been spent in timed runs
    /// (once `min_reps` is reached).
    pub min_time: Duration,
    /// Never more timed runs than this.
    pub max_reps: usize,
}

impl Default for TimingPolicy {
    /// Warm up once, then at least 3 runs and 50 ms, at most 200 runs.
    fn default() -> Self {
        TimingPolicy {
            warmup: 1,
            min_reps: 3,
            min_time: Duration::from_millis(50),
            max_reps: 200,
        }
    }
}

/// The separate "bandwidth" line: a diagonal f32 `[B,T,D]` scan large
/// enough to stream from DRAM, under `auto`. It moves 12 bytes per element
/// (read `a`, `b`, write `h`) and is not subject to
/// [`SweepConfig::max_case_bytes`]: its size is the point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BandwidthCase {
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `D`.
    pub dim: usize,
}

impl Default for BandwidthCase {
    /// `B=16, T=65536, D=64`: 2^26 elements, 768 MiB moved per pass.
    fn default() -> Self {
        BandwidthCase {
            batch: 16,
            len: 65536,
            dim: 64,
        }
    }
}

/// Everything a sweep needs to know.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepConfig {
    /// Families to run, in order.
    pub families: Vec<Family>,
    /// Layouts of the diagonal family (`Btd` by default).
    pub diagonal_layouts: Vec<Layout>,
    /// Plans each case runs under.
    pub plans: Vec<PlanRequest>,
    /// Storage dtypes.
    pub dtypes: Vec<DType>,
    /// Where to run.
    pub backend: BackendChoice,
    /// Worker threads (engine, copy probe, input generation); all cores
    /// when `None`.
    pub threads: Option<usize>,
    /// The `T` grid, ascending.
    pub lengths: Vec<usize>,
    /// Timing budget per case.
    pub timing: TimingPolicy,
    /// Bytes per buffer of the copy-bandwidth probe (two buffers).
    pub copy_bytes: usize,
    /// Timed repetitions of the copy probe (median reported).
    pub copy_reps: usize,
    /// The separate bandwidth line; `None` skips it.
    pub bandwidth_case: Option<BandwidthCase>,
    /// Cases whose estimated memory ([`Shape::estimate_bytes`]) exceeds
    /// this are skipped and reported.
    pub max_case_bytes: usize,
    /// Base seed of the random inputs (each case derives its own).
    pub seed: u64,
    /// Nonlinear cells: each one's sequential loop (plan `sequential`) and
    /// Newton solves (every other plan) at every `T`.
    pub cells: Vec<super::cells::CellKind>,
    /// Longest `T` of the contractive cells' rows.
    pub newton_max_t: usize,
    /// Longest `T` of the hard cell ([`super::cells::CellKind::Parity`]):
    /// Newton needs about `T` iterations there, so its cost grows as `T²`.
    pub hard_max_t: usize,
    /// Sequences per nonlinear case (`B`).
    pub cell_batch: usize,
    /// Units of every cell; `None`: each cell's default (16, 8, 16, 4).
    pub cell_units: Option<usize>,
    /// Families (among [`SweepConfig::families`]) that also get backward
    /// rows: after each forward row, the family's gradient pass
    /// ([`crate::grad`]) under the same plan ([`super::backward`]).
    pub backward: Vec<Family>,
    /// Longest `T` of the backward rows.
    pub backward_max_t: usize,
    /// Families (among [`SweepConfig::families`]) that also get varlen
    /// rows: after each CPU forward row, the same tokens as packed
    /// `cu_seqlens` sequences and as a padded batch ([`super::varlen`]).
    pub varlen: Vec<Family>,
    /// Longest `T` of the varlen rows.
    pub varlen_max_t: usize,
}

/// Default grid: `2^8 … 2^20` in steps of ×4.
pub const DEFAULT_MIN_T: usize = 1 << 8;
/// Largest default `T`.
pub const DEFAULT_MAX_T: usize = 1 << 20;
/// Default grid factor.
pub const DEFAULT_STEP: usize = 4;
/// Longest `T` of the default grid under `--backend emu` (the emulator is
/// slow; an explicit `--max-t` overrides it).
pub const EMU_MAX_T: usize = 1 << 14;
/// Default per-case memory cap: 640 MiB, the largest default case (DPLR
/// under `chunk=64` at `T = 2^20`, estimated 547 MiB, measured 543 MiB peak
/// RSS) plus a margin.
pub const DEFAULT_MAX_CASE_BYTES: usize = 640 << 20;

impl Default for SweepConfig {
    /// The `cargo run --release` sweep: every family, f32, plans
    /// `sequential,auto,chunk=64`, `T = 2^8 … 2^20` (×4).
    fn default() -> Self {
        SweepConfig {
            families: Family::ALL.to_vec(),
            diagonal_layouts: vec![Layout::Btd],
            plans: default_plans(),
            dtypes: vec![DType::F32],
            backend: BackendChoice::Auto,
            threads: None,
            lengths: log_grid(DEFAULT_MIN_T, DEFAULT_MAX_T, DEFAULT_STEP)
                .unwrap_or_else(|_| vec![DEFAULT_MIN_T]),
            timing: TimingPolicy::default(),
            copy_bytes: 256 << 20,
            copy_reps: 7,
            bandwidth_case: Some(BandwidthCase::default()),
            max_case_bytes: DEFAULT_MAX_CASE_BYTES,
            seed: 0x5eed,
            cells: vec![
                super::cells::CellKind::DiagGru,
                super::cells::CellKind::Parity,
            ],
            newton_max_t: DEFAULT_NEWTON_MAX_T,
            hard_max_t: DEFAULT_HARD_MAX_T,
            cell_batch: 1,
            cell_units: None,
            backward: DEFAULT_BACKWARD.to_vec(),
            backward_max_t: DEFAULT_BACKWARD_MAX_T,
            varlen: Vec::new(),
            varlen_max_t: DEFAULT_VARLEN_MAX_T,
        }
    }
}

/// Default cap on `T` of the varlen rows (`2^16`): the padded batch can
/// hold several times the grid point's tokens.
pub const DEFAULT_VARLEN_MAX_T: usize = 1 << 16;

/// Families with backward rows by default: the two bandwidth-bound ones
/// (the others are opt-in with `--backward`, their backward costs several
/// forward passes of dense work).
pub const DEFAULT_BACKWARD: [Family; 2] = [Family::Diagonal, Family::PermDiagonal];
/// Default cap on `T` of the backward rows (`2^16`): on a 2-core VM the
/// CPU backward costs 3–18 forward passes (it allocates its gradients and
/// makes separate transpose and contraction passes), and the
/// `perm-diagonal n=64` backward at `2^18` alone took about 2.4 s per run,
/// which would double the default sweep's run time.
pub const DEFAULT_BACKWARD_MAX_T: usize = 1 << 16;

/// Default cap on `T` of the contractive cells' rows.
pub const DEFAULT_NEWTON_MAX_T: usize = 1 << 16;
/// Default cap on `T` of the hard cell's rows.
pub const DEFAULT_HARD_MAX_T: usize = 1 << 12;

impl SweepConfig {
    /// A tiny sweep for tests and CI: `T = 64, 256, 1024`, short timing,
    /// a 16 MiB copy probe and a small bandwidth line. Finishes in a few
    /// seconds.
    pub fn quick() -> Self {
        SweepConfig {
            lengths: vec![64, 256, 1024],
            timing: TimingPolicy {
                warmup: 1,
                min_reps: 3,
                min_time: Duration::from_millis(2),
                max_reps: 20,
            },
            copy_bytes: 16 << 20,
            copy_reps: 3,
            bandwidth_case: Some(BandwidthCase {
                batch: 4,
                len: 4096,
                dim: 64,
            }),
            ..SweepConfig::default()
        }
    }

    /// The `--hierarchy` preset: the paper's depth hierarchy in one plot
    /// (`hierarchy.svg`): Diagonal, PermDiagonal and DPLR scans under
    /// `min-depth`, the contractive `DiagGru` and the hard parity machine
    /// under Newton (`min-depth` scans), and every sequential loop, at
    /// `T = 2^6 … 2^14` (×2; the hard cell up to 2^12).
    pub fn hierarchy() -> Self {
        SweepConfig {
            families: vec![Family::Diagonal, Family::PermDiagonal, Family::Dplr],
            plans: vec![PlanRequest::Sequential, PlanRequest::MinDepth],
            lengths: log_grid(1 << 6, 1 << 14, 2).unwrap_or_else(|_| vec![1 << 6]),
            cells: vec![
                super::cells::CellKind::DiagGru,
                super::cells::CellKind::Parity,
            ],
            timing: TimingPolicy {
                warmup: 1,
                min_reps: 3,
                min_time: Duration::from_millis(20),
                max_reps: 50,
            },
            copy_bytes: 64 << 20,
            bandwidth_case: None,
            backward: Vec::new(),
            ..SweepConfig::default()
        }
    }

    /// Checks that every list is non-empty and every size positive.
    pub fn validate(&self) -> Result<()> {
        if self.families.is_empty() {
            return Err(invalid("families", "at least one family".into()));
        }
        if self.plans.is_empty() {
            return Err(invalid("plans", "at least one plan".into()));
        }
        if self.dtypes.is_empty() {
            return Err(invalid("dtypes", "at least one dtype".into()));
        }
        if self.diagonal_layouts.is_empty() && self.families.contains(&Family::Diagonal) {
            return Err(invalid("layouts", "btd and/or bdt".into()));
        }
        if self.lengths.is_empty() || self.lengths.contains(&0) {
            return Err(invalid("lengths", "T values ≥ 1".into()));
        }
        if self.cell_batch == 0 || self.cell_units == Some(0) {
            return Err(invalid("cell-batch/cell-units", "values ≥ 1".into()));
        }
        if !self.backward.is_empty() && self.backward_max_t == 0 {
            return Err(invalid("backward-max-t", "T ≥ 1".into()));
        }
        if !self.varlen.is_empty() && self.varlen_max_t == 0 {
            return Err(invalid("varlen-max-t", "T ≥ 1".into()));
        }
        if self.threads == Some(0) {
            return Err(Error::size("threads", 0, "≥ 1").into());
        }
        if self.timing.min_reps == 0 || self.timing.max_reps < self.timing.min_reps {
            return Err(invalid("timing", "1 ≤ min_reps ≤ max_reps".into()));
        }
        if self.copy_bytes < 8 || self.copy_reps == 0 {
            return Err(invalid(
                "copy_bytes",
                "at least 8 bytes and 1 repetition".into(),
            ));
        }
        if let Some(bw) = self.bandwidth_case {
            if bw.batch == 0 || bw.len == 0 || bw.dim == 0 {
                return Err(invalid("bandwidth_case", "B, T, D ≥ 1".into()));
            }
        }
        for req in &self.plans {
            if *req == PlanRequest::Chunk(0) {
                return Err(Error::Plan("chunk=0: expected C ≥ 1".into()).into());
            }
        }
        Ok(())
    }
}

/// The default plans: `sequential` (depth `T`), `auto` (fastest here) and
/// `chunk=64` (depth about `2·64 + 2·log2(T/64)`).
pub fn default_plans() -> Vec<PlanRequest> {
    vec![
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::Chunk(64),
    ]
}

/// `min_t, min_t·step, min_t·step², …` up to `max_t` inclusive.
pub fn log_grid(min_t: usize, max_t: usize, step: usize) -> Result<Vec<usize>> {
    if min_t == 0 {
        return Err(Error::size("min-t", 0, "≥ 1").into());
    }
    if max_t < min_t {
        return Err(Error::size("max-t", max_t, format!("≥ min-t = {min_t}")).into());
    }
    if step < 2 {
        return Err(Error::size("step", step, "≥ 2 (a growth factor)").into());
    }
    let mut grid = vec![min_t];
    let mut t = min_t;
    while let Some(next) = t.checked_mul(step) {
        if next > max_t {
            break;
        }
        grid.push(next);
        t = next;
    }
    Ok(grid)
}

/// Parses a comma-separated list with `parse`, naming `arg` in errors.
pub fn parse_list<T>(
    arg: &'static str,
    s: &str,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<Vec<T>> {
    let items: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse)
        .collect::<Result<_>>()?;
    if items.is_empty() {
        return Err(invalid(
            arg,
            "expected a non-empty comma-separated list".into(),
        ));
    }
    Ok(items)
}

/// Parses `sequential,auto,chunk=64`.
pub fn parse_plans(s: &str) -> Result<Vec<PlanRequest>> {
    parse_list("plans", s, |x| Ok(PlanRequest::from_str(x)?))
}

/// Parses `diagonal,dplr`; `all` means every family.
pub fn parse_families(s: &str) -> Result<Vec<Family>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Family::ALL.to_vec());
    }
    parse_list("families", s, Family::from_str)
}

/// Parses the `--backward` list: families as [`parse_families`], or
/// `none` (no backward rows).
pub fn parse_backward(s: &str) -> Result<Vec<Family>> {
    parse_optional_families("backward", s)
}

/// Parses the `--varlen` list: families as [`parse_families`], or `none`.
pub fn parse_varlen(s: &str) -> Result<Vec<Family>> {
    parse_optional_families("varlen", s)
}

/// A family list that may be `none`; errors name `arg`.
fn parse_optional_families(arg: &'static str, s: &str) -> Result<Vec<Family>> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    parse_families(s).map_err(|_| {
        invalid(
            arg,
            format!("families (diagonal, perm-diagonal, block-diagonal, dense, dplr), all or none; got `{s}`"),
        )
    })
}

/// Cases of the rows that follow forward rows for the families in
/// `extra` up to `max_t` (one per family instance, dtype, such length and
/// plan): the progress steps of backward and varlen rows, per row kind.
pub(crate) fn follow_up_cases(config: &SweepConfig, extra: &[Family], max_t: usize) -> usize {
    let lengths = config.lengths.iter().filter(|&&t| t <= max_t).count();
    let shapes: usize = config
        .families
        .iter()
        .filter(|f| extra.contains(f))
        .map(|&f| default_shapes(f, &config.diagonal_layouts).len())
        .sum();
    shapes * config.dtypes.len() * lengths * config.plans.len()
}

/// Parses `f32,bf16`; `all` means every dtype.
pub fn parse_dtypes(s: &str) -> Result<Vec<DType>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(vec![DType::F32, DType::F64, DType::Bf16, DType::F16]);
    }
    parse_list("dtypes", s, |x| {
        DType::from_str(x)
            .map_err(|_| invalid("dtypes", format!("f32, f64, f16 or bf16; got `{x}`")))
    })
}

/// Parses `btd,bdt`.
pub fn parse_layouts(s: &str) -> Result<Vec<Layout>> {
    parse_list("layouts", s, |x| Ok(Layout::from_str(x)?))
}

/// An invalid-argument error naming the argument and what was expected.
pub(crate) fn invalid(arg: &'static str, expected: String) -> SweepError {
    SweepError::Invalid { arg, expected }
}
