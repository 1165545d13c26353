//! The plan: how a scan is split into chunks, and what that costs in depth
//! and work, stated before anything runs.
//!
//! Definitions (SPEC §2): **depth** is the number of combines on the longest
//! dependency chain from any input to any output of one sequence; **work**
//! is the total number of combines for one sequence. A combine is any of:
//! folding a step into an aggregate, combining two aggregates, applying an
//! aggregate to a state, or advancing a state by one step.
//!
//! For `T` steps in `N = ⌈T/C⌉` chunks (`N ≥ 2`), with `P` the next power of
//! two ≥ `N` and `len_i` the length of chunk `i`:
//!
//! - reduce: chunk `i` folds its `len_i` steps, depth `C − 1`;
//! - Blelloch over the `N` aggregates: the exclusive prefix of chunk
//!   `i ≥ 1` has depth `C − 1 + hb(i) + popcount(i)`, where `hb(i)` is the
//!   index of `i`'s highest set bit (each right turn on the root-to-leaf
//!   path adds one combine; the first also waits for its left subtree's
//!   up-sweep, of height `hb(i)`);
//! - carry-in: one more combine (prefix applied to `h_0`);
//! - rescan: `len_i` more.
//!
//! So `depth = max_{1≤i<N} (C + hb(i) + popcount(i) + len_i)`, which for
//! `T = N·C` with `N` a power of two is `2C + 2·log2 N − 1`, and
//! `work = (T − N) + 2(P − 1) + (N − 1) + T = 2T + 2P − 3`. With `N = 1` the
//! scan is the sequential loop: depth `T`, work `T`.

use crate::error::{Error, Result};

/// What the caller asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum PlanRequest {
    /// One chunk: the plain sequential loop (depth `T`, least work).
    Sequential,
    /// Chunks of exactly this many steps.
    Chunk(usize),
    /// Chunks of one step: Blelloch over all `T` elements (least depth).
    MinDepth,
    /// Let the planner choose from the shape and the machine.
    Auto,
    /// One pass over the data with a decoupled look-back between chunks (the
    /// Diagonal kernels' plan P4): every input is read once, but the carries
    /// form a chain, so depth grows by one per chunk. Only the Diagonal
    /// kernels have it; elsewhere it is an [`Error::Plan`].
    LookBack,
}

impl std::fmt::Display for PlanRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanRequest::Sequential => f.write_str("sequential"),
            PlanRequest::Chunk(c) => write!(f, "chunk={c}"),
            PlanRequest::MinDepth => f.write_str("min-depth"),
            PlanRequest::Auto => f.write_str("auto"),
            PlanRequest::LookBack => f.write_str("look-back"),
        }
    }
}

impl std::str::FromStr for PlanRequest {
    type Err = Error;
    /// Parses `sequential`, `min-depth`, `auto`, `look-back` or `chunk=C`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "sequential" | "seq" => Ok(PlanRequest::Sequential),
            "min-depth" => Ok(PlanRequest::MinDepth),
            "auto" => Ok(PlanRequest::Auto),
            "look-back" | "lookback" => Ok(PlanRequest::LookBack),
            _ => {
                let c = s
                    .strip_prefix("chunk=")
                    .and_then(|c| c.parse::<usize>().ok())
                    .ok_or_else(|| {
                        Error::Plan(format!(
                            "expected sequential, min-depth, auto, look-back or chunk=C with C ≥ 1; got `{s}`"
                        ))
                    })?;
                if c == 0 {
                    return Err(Error::Plan(
                        "expected chunk=C with C ≥ 1; got chunk=0".into(),
                    ));
                }
                Ok(PlanRequest::Chunk(c))
            }
        }
    }
}

/// The shape facts a planner needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanShape {
    /// Independent sequences the engine scans (e.g. `B`, or `B·D` for a
    /// `[B,D,T]` diagonal problem).
    pub problems: usize,
    /// Sequence length `T`.
    pub len: usize,
    /// Cost of folding one step into a chunk aggregate, relative to
    /// advancing a state by one step (the family's price of chunking:
    /// about 0.7 for memory-bound diagonal scans, `k` for `k×k` blocks).
    pub fold_cost: f64,
}

impl ScanShape {
    /// `problems` sequences of `len` steps with a fold as dear as a step.
    pub fn new(problems: usize, len: usize) -> Self {
        ScanShape {
            problems,
            len,
            fold_cost: 1.0,
        }
    }
}

/// A resolved plan: chunk size and the depth and work it implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Plan {
    /// What was asked for.
    pub request: PlanRequest,
    /// Steps per chunk `C` (`= T` for the sequential loop).
    pub chunk: usize,
    /// Number of chunks per sequence `N = ⌈T/C⌉`.
    pub chunks: usize,
    /// Combines on the critical path of one sequence (formula above).
    pub depth: u64,
    /// Combines in total for one sequence.
    pub work: u64,
}

/// Shortest chunk the CPU auto planner will use: below this the per-chunk
/// overhead (an aggregate, a task) costs more than the parallelism gives.
pub const CPU_MIN_CHUNK: usize = 4096;

impl Plan {
    /// Resolves `request` for `shape` on a machine with `threads` workers.
    ///
    /// `Chunk(C)` with `C ≥ T` becomes the sequential loop. `Auto` compares
    /// predicted times: one chunk per sequence takes `⌈P/threads⌉·T` step
    /// costs; chunking takes `(1 + fold_cost)·P·T/threads` (every step is
    /// folded once and advanced once). It chunks only when that is faster,
    /// i.e. when there are fewer sequences than workers and the family's
    /// fold is cheap, using enough chunks of at least [`CPU_MIN_CHUNK`]
    /// steps to give about four tasks per worker.
    pub fn resolve(request: PlanRequest, shape: ScanShape, threads: usize) -> Result<Plan> {
        if shape.len == 0 {
            return Err(Error::size("len", 0, "T ≥ 1"));
        }
        let t = shape.len;
        let chunk = match request {
            PlanRequest::Sequential => t,
            PlanRequest::Chunk(0) => {
                return Err(Error::Plan(
                    "expected chunk=C with C ≥ 1; got chunk=0".into(),
                ))
            }
            PlanRequest::Chunk(c) => c.min(t),
            PlanRequest::MinDepth => 1,
            PlanRequest::LookBack => return Err(look_back_unsupported("the CPU engine")),
            PlanRequest::Auto => {
                let threads = threads.max(1);
                let problems = shape.problems.max(1);
                let tasks_wanted = 4 * threads;
                let sequential_time = problems.div_ceil(threads) as f64;
                let chunked_time = (1.0 + shape.fold_cost) * problems as f64 / threads as f64;
                if chunked_time >= sequential_time || t < 2 * CPU_MIN_CHUNK {
                    t
                } else {
                    let per_seq = tasks_wanted.div_ceil(problems);
                    t.div_ceil(per_seq).max(CPU_MIN_CHUNK).min(t)
                }
            }
        };
        Ok(Plan::with_chunk(request, t, chunk))
    }

    /// The plan with chunks of `chunk` steps over `len` steps (no checks
    /// beyond clamping `chunk` into `1..=len`).
    pub fn with_chunk(request: PlanRequest, len: usize, chunk: usize) -> Plan {
        let chunk = chunk.clamp(1, len.max(1));
        let chunks = len.div_ceil(chunk);
        Plan {
            request,
            chunk,
            chunks,
            depth: depth_formula(len, chunk),
            work: work_formula(len, chunk),
        }
    }
}

/// Critical-path length of the chunked scan of `len` steps in chunks of
/// `chunk` (see the module docs for the derivation).
pub fn depth_formula(len: usize, chunk: usize) -> u64 {
    let chunk = chunk.clamp(1, len.max(1));
    let n = len.div_ceil(chunk);
    if n <= 1 {
        return len as u64;
    }
    (1..n)
        .map(|i| {
            let hb = usize::BITS - 1 - i.leading_zeros();
            let len_i = if i == n - 1 {
                len - (n - 1) * chunk
            } else {
                chunk
            };
            (chunk + hb as usize + i.count_ones() as usize + len_i) as u64
        })
        .max()
        .unwrap_or(len as u64)
}

/// Total combines of the chunked scan of `len` steps in chunks of `chunk`.
pub fn work_formula(len: usize, chunk: usize) -> u64 {
    let chunk = chunk.clamp(1, len.max(1));
    let n = len.div_ceil(chunk);
    if n <= 1 {
        return len as u64;
    }
    let p = n.next_power_of_two();
    (2 * len + 2 * p - 3) as u64
}

/// The error for [`PlanRequest::LookBack`] on an engine or family without it.
pub fn look_back_unsupported(what: &str) -> Error {
    Error::Plan(format!(
        "look-back is a plan of the Diagonal kernels only, not of {what}; \
         expected sequential, chunk=C, min-depth or auto"
    ))
}
