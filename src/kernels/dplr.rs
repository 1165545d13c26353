//! The DPLR family on the kernels of `kernels/dplr.cu`: planner, scratch
//! workspace and launch sequences, for any [`KernelRunner`].
//!
//! This module implements the *launch contract* written at the top of
//! `kernels/dplr.cu` (kernel names, argument lists, launch shapes, the
//! plans, scratch sizes and the measured-depth formula). The recurrence is
//! `H_t = (diag(w_t) + Σ_r u_{t,r} v_{t,r}ᵀ) H_{t-1} + k_t x_tᵀ` on a state
//! `H ∈ R^{n×m}` (row-major), with readout `y_t = H_tᵀ q_t`; see
//! [`Dplr`] for shapes.
//!
//! # Layers
//!
//! - [`plan_dplr`] resolves a [`PlanRequest`] into a [`DplrPlan`]: kind,
//!   chunk `C`, chunk count `NC`, register width `NMAX`, the exact launches
//!   (with dynamic shared memory), scratch bytes and the depth the `_depth`
//!   kernels will measure. Pure, cheap, no device.
//! - [`DplrPlan`] implements [`FamilyPlan`]: the shared entry points of
//!   [`face`](super::face) run it on typed memory ([`DplrBuffers`]), on raw
//!   addresses ([`DplrIo`], `unsafe`), on the `_depth` instantiation, and on
//!   host slices; no allocation once the [`DplrWorkspace`] is warm.
//!
//! Limits of the kernels: `1 ≤ n, m ≤ 128` ([`MAX_DIM`]), rank
//! `1 ≤ R ≤ 4` ([`MAX_RANK`]); the CPU engine has none. Every violation is a
//! typed [`Error`] naming the argument, returned before the first launch.
//!
//! # Plans
//!
//! - `P0 sequential`: one pass over all `T` (one block per problem and
//!   column tile; depth `T`): the baseline.
//! - `P1 single-pass`: the rescan kernel with one chunk (`C ≥ T`), the same
//!   work as P0.
//! - `P2 chunked` (`NC ≥ 2`): fold every chunk into a dense aggregate
//!   `(M, N)`, a Blelloch up-sweep over the aggregates (one launch per
//!   level), a down-sweep that carries states (`h_0` folded in at the root,
//!   one launch per level), and a rescan of every chunk from its carry:
//!   `2·⌈log2 NC⌉ + 1` launches. Depth `max_c D(c) + len(c)` with
//!   `D(0) = 0`, `D(c) = C + hb(c) + pc(c)` (about `2C + 2 log2 NC`).
//!
//! # Planner rules
//!
//! - `Sequential` → P0. `Chunk(C)` → P1 when `C ≥ T`, else P2 (error above
//!   [`MAX_CHUNKS`] chunks).
//! - `Auto`: P1 when `B·⌈m/CB⌉·CB` column threads reach
//!   `sm_count × AUTO_THREADS_PER_SM`; otherwise enough chunks to get
//!   there, `C = ⌈T / NC⌉` rounded down to whole staged batches, at least
//!   [`AUTO_MIN_CHUNK`].
//! - `MinDepth`: the chunk among `T` and the powers of two below it with the
//!   least formula depth (ties to the longer chunk), among those whose
//!   scratch stays under [`MIN_DEPTH_MAX_SCRATCH`] (the shortest chunk that
//!   does otherwise).

use std::fmt;

use super::common::{
    ceil_log2, check_int, highest_bit, i32_arg, launch_config, max_hb_pc, name_table, plan_kinds,
    KernelType, NameTable,
};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::face::{
    BindInputs, EndBuffers, Ends, FamilyPlan, IoArg, KernelLaunch, ScratchLayout, Workspace,
};
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::dplr::{Dplr, DplrOutput};
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// Largest `n` and `m` the kernels take (their widest register column).
pub const MAX_DIM: usize = 128;
/// Largest rank `R` the kernels take.
pub const MAX_RANK: usize = 4;
/// Step slots of a chunk block's stage area in shared memory (`SB`): two
/// buffers of `SB / 2` steps, one filled while the other is computed on.
pub const STAGE_STEPS: usize = 8;
/// Column threads per SM that `Auto` aims for.
pub const AUTO_THREADS_PER_SM: usize = 1024;
/// Shortest chunk `Auto` picks (below it the dense aggregates cost more
/// memory traffic than the chunk's inputs).
pub const AUTO_MIN_CHUNK: usize = 32;
/// Most chunks per problem any plan takes.
pub const MAX_CHUNKS: usize = 1 << 24;
/// Scratch above which `MinDepth` prefers a longer chunk (bytes).
pub const MIN_DEPTH_MAX_SCRATCH: usize = 1 << 30;
/// The register widths `NMAX` the kernels are instantiated for.
const WIDTHS: [usize; 3] = [32, 64, 128];

// ---------------------------------------------------------------------------
// Shapes and kernel names
// ---------------------------------------------------------------------------

/// `(B, T, n, m, R)` of a DPLR problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DplrShape {
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// State rows `n`.
    pub n: usize,
    /// State columns `m`.
    pub m: usize,
    /// Rank `R`.
    pub rank: usize,
}

impl DplrShape {
    /// `(B, T, n, m, R)`.
    pub fn new(batch: usize, len: usize, n: usize, m: usize, rank: usize) -> Self {
        DplrShape {
            batch,
            len,
            n,
            m,
            rank,
        }
    }

    /// The shape of a problem.
    pub fn of<S>(p: &Dplr<'_, S>) -> Self {
        DplrShape::new(p.batch, p.len, p.n, p.m, p.rank)
    }

    /// Elements of the output: `B·T·m` (readout) or `B·T·n·m` (states).
    pub fn out_elements(&self, output: DplrOutput) -> usize {
        match output {
            DplrOutput::Readout => self.batch * self.len * self.m,
            DplrOutput::States => self.batch * self.len * self.n * self.m,
        }
    }

    /// Elements of `h_0` and `h_T`: `B·n·m`.
    pub fn state_elements(&self) -> usize {
        self.batch * self.n * self.m
    }

    /// `NMAX`: the smallest register width that holds `n`.
    pub fn width(&self) -> usize {
        WIDTHS
            .iter()
            .copied()
            .find(|&w| w >= self.n)
            .unwrap_or(MAX_DIM)
    }

    /// Checks the kernels' limits and that every size fits a C `int` and
    /// memory.
    pub fn validate(&self) -> Result<()> {
        check_int("batch", self.batch)?;
        check_int("len", self.len)?;
        let dim = |arg: &'static str, v: usize| {
            if (1..=MAX_DIM).contains(&v) {
                Ok(())
            } else {
                Err(Error::size(
                    arg,
                    v,
                    format!("1 ≤ {arg} ≤ {MAX_DIM} (the DPLR kernels' limit)"),
                ))
            }
        };
        dim("n", self.n)?;
        dim("m", self.m)?;
        if !(1..=MAX_RANK).contains(&self.rank) {
            return Err(Error::size(
                "rank",
                self.rank,
                format!("1 ≤ rank ≤ {MAX_RANK} (the DPLR kernels' limit)"),
            ));
        }
        self.batch
            .checked_mul(self.len)
            .and_then(|x| x.checked_mul(self.n.max(self.m)))
            .and_then(|x| x.checked_mul(self.n.max(self.rank)))
            .and_then(|x| x.checked_mul(16))
            .ok_or_else(|| {
                Error::size(
                    "len",
                    self.len,
                    format!(
                        "B·T·n·m = {}·{}·{}·{} elements that fit in memory",
                        self.batch, self.len, self.n, self.m
                    ),
                )
            })?;
        Ok(())
    }
}

/// The five `extern "C"` kernels of one (type, `NMAX`) instantiation.
struct Names {
    reduce: &'static str,
    rescan: &'static str,
    sequential: &'static str,
    up: &'static str,
    down: &'static str,
}

// `$dir` = "rev_": the reverse kernels (the contract's REVERSE section);
// the level kernels (up, down) are the same for both directions.
macro_rules! names {
    ($nm:literal, $sfx:literal, $dir:literal) => {
        Names {
            reduce: concat!("dplr_reduce_", $dir, "n", $nm, "_", $sfx),
            rescan: concat!("dplr_rescan_", $dir, "n", $nm, "_", $sfx),
            sequential: concat!("dplr_sequential_", $dir, "n", $nm, "_", $sfx),
            up: concat!("dplr_up_n", $nm, "_", $sfx),
            down: concat!("dplr_down_n", $nm, "_", $sfx),
        }
    };
}

macro_rules! widths {
    ($sfx:literal) => {
        widths!($sfx, "")
    };
    ($sfx:literal, $dir:literal) => {
        [
            names!("32", $sfx, $dir),
            names!("64", $sfx, $dir),
            names!("128", $sfx, $dir),
        ]
    };
}

static NAMES: NameTable<[Names; 3]> = name_table!(widths);

/// The kernels of one instantiation, `NMAX = width` and direction.
fn names(kt: KernelType, width: usize, reverse: bool) -> &'static Names {
    let w = WIDTHS.iter().position(|&x| x == width).unwrap_or(2);
    &NAMES.get(kt, reverse)[w]
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

plan_kinds! {
    /// Which launch sequence of the contract a plan uses.
    pub enum DplrPlanKind {
        /// P0: `dplr_sequential`, one pass over all `T`.
        Sequential = ("P0", "sequential"),
        /// P1: one `dplr_rescan` with `C = T` and no carries.
        SinglePass = ("P1", "single-pass"),
        /// P2: reduce, Blelloch up-sweep and down-sweep levels, rescan.
        Chunked = ("P2", "chunked"),
    }
}

/// What one launch of a plan does (it decides the argument list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DplrRole {
    /// P0: `dplr_sequential(w, u, v, k, x, q, y, states, hT, h0, B, T, n, m, R)`.
    Sequential,
    /// `dplr_reduce(w, u, v, k, x, agg, B, T, n, m, R, C)`.
    Reduce,
    /// Up-sweep level `dplr_up(agg, B, NC, n, m, half)`.
    Up {
        /// Half the node size, `2^(k-1)` for level `k ≥ 1`.
        half: usize,
    },
    /// Down-sweep level `dplr_down(agg, carry, h0, B, NC, n, m, half)`.
    Down {
        /// The left child's size, `2^k`.
        half: usize,
    },
    /// `dplr_rescan(w, u, v, k, x, q, y, states, hT, carry, h0, B, T, n, m, R, C)`.
    Rescan,
}

/// One kernel launch of a plan.
pub type DplrLaunch = KernelLaunch<DplrRole>;

/// Scratch a plan needs, in bytes per buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DplrScratch {
    /// Chunk aggregates `(M, N)`: `B·NC·n·(n+m)` compute values.
    pub agg: usize,
    /// Chunk carries: `B·NC·n·m` compute values.
    pub carry: usize,
}

impl DplrScratch {
    /// Sum of both buffers.
    pub fn total(&self) -> usize {
        self.agg + self.carry
    }
}

impl ScratchLayout for DplrScratch {
    const SLOTS: usize = 2;
    fn slot_bytes(&self, slot: usize) -> usize {
        [self.agg, self.carry][slot]
    }
    fn from_slots(bytes: impl Fn(usize) -> usize) -> Self {
        DplrScratch {
            agg: bytes(0),
            carry: bytes(1),
        }
    }
}

/// A resolved GPU plan for the DPLR kernels: everything that will be
/// launched, and what it costs, before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DplrPlan {
    /// What was asked for.
    pub request: PlanRequest,
    /// P0–P2.
    pub kind: DplrPlanKind,
    /// Storage type of inputs and outputs.
    pub dtype: DType,
    /// Readout `y` or every state.
    pub output: DplrOutput,
    /// `(B, T, n, m, R)`.
    pub shape: DplrShape,
    /// Steps per chunk `C` (`T` for P0 and P1).
    pub chunk: usize,
    /// Chunks per problem `NC = ⌈T/C⌉`.
    pub chunks: usize,
    /// `⌈log2 NC⌉`: up-sweep levels + 1 = down-sweep levels.
    pub levels: usize,
    /// Register width `NMAX` of the kernels (32, 64 or 128).
    pub width: usize,
    /// Threads per block of the chunk kernels (`CB`, one column each).
    pub col_block: u32,
    /// The launches, in order, for [`DplrPlan::dtype`].
    pub launches: Vec<DplrLaunch>,
    /// Scratch for [`DplrPlan::dtype`].
    pub scratch: DplrScratch,
    /// The depth the `_depth` instantiation measures (maximum over outputs).
    pub depth: u64,
    /// Right to left ([`DplrPlan::reversed`]):
    /// `H_t = A_t H_{t+1} + k_t x_tᵀ` from `h0` at `t = T − 1` down to
    /// `t = 0`, `y_t = H_tᵀ q_t`, `h_T` = the state at `t = 0`. Same
    /// launches (the chunk kernels are the `_rev_` ones; the level kernels
    /// are shared), scratch and depth as the forward plan, with step `t` at
    /// the forward position `T − 1 − t`.
    pub reverse: bool,
}

/// The dtype-independent part of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    kind: DplrPlanKind,
    shape: DplrShape,
    chunk: usize,
    chunks: usize,
    /// The `_rev_` chunk kernels (only the names differ).
    reverse: bool,
}

impl Geometry {
    fn sequential(shape: DplrShape) -> Geometry {
        Geometry {
            kind: DplrPlanKind::Sequential,
            shape,
            chunk: shape.len,
            chunks: 1,
            reverse: false,
        }
    }

    fn chunked(shape: DplrShape, c: usize) -> Result<Geometry> {
        let t = shape.len;
        let c = c.clamp(1, t);
        let nc = t.div_ceil(c);
        if nc > MAX_CHUNKS {
            return Err(Error::Plan(format!(
                "chunk={c} gives {nc} chunks per problem for T = {t}; at most {MAX_CHUNKS}: use \
                 chunk ≥ {}",
                t.div_ceil(MAX_CHUNKS)
            )));
        }
        Ok(if nc == 1 {
            Geometry {
                kind: DplrPlanKind::SinglePass,
                shape,
                chunk: t,
                chunks: 1,
                reverse: false,
            }
        } else {
            Geometry {
                kind: DplrPlanKind::Chunked,
                shape,
                chunk: c,
                chunks: nc,
                reverse: false,
            }
        })
    }

    fn levels(&self) -> usize {
        ceil_log2(self.chunks) as usize
    }

    /// `CB`: 32 columns per block for narrow states, else 64.
    fn col_block(&self) -> u32 {
        if self.shape.m <= 32 {
            32
        } else {
            64
        }
    }

    fn scratch(&self, kt: KernelType) -> Result<DplrScratch> {
        if self.kind != DplrPlanKind::Chunked {
            return Ok(DplrScratch::default());
        }
        let s = self.shape;
        let too_big = || {
            Error::Plan(format!(
                "{} chunks of a {}x{} state need more scratch than fits in memory",
                self.chunks, s.n, s.m
            ))
        };
        let per = s.batch.checked_mul(self.chunks).ok_or_else(too_big)?;
        let agg = per
            .checked_mul(s.n * (s.n + s.m) * kt.value_bytes())
            .ok_or_else(too_big)?;
        let carry = per
            .checked_mul(s.n * s.m * kt.value_bytes())
            .ok_or_else(too_big)?;
        Ok(DplrScratch { agg, carry })
    }

    /// The launch sequence for instantiation `kt`.
    fn launches(&self, kt: KernelType) -> Result<Vec<DplrLaunch>> {
        let s = self.shape;
        let width = s.width();
        let names = names(kt, width, self.reverse);
        let acc = kt.value_bytes() as u64;
        let b = s.batch as u64;
        let nc = self.chunks as u64;
        let cb = self.col_block();
        let cbu = u64::from(cb);
        let chunk_shared = acc
            * ((STAGE_STEPS * (2 * s.rank + 3) * width) as u64
                + STAGE_STEPS as u64 * cbu
                + MAX_RANK as u64 * cbu);
        let dense_shared = acc * (s.n * width) as u64;
        let m_tiles = (s.m as u64).div_ceil(cbu);
        let nm_tiles = ((s.n + s.m) as u64).div_ceil(cbu);
        let round32 = |x: usize, hi: usize| (x.next_multiple_of(32)).clamp(32, hi) as u32;
        let up_block = round32(s.n + s.m, 256);
        let down_block = round32(s.m, 128);
        let mut out = Vec::new();
        let mut push = |role, kernel: &'static str, grid: u64, block: u32, shared: u64| {
            out.push(DplrLaunch {
                role,
                kernel,
                cfg: launch_config(kernel, [grid, 1, 1], block, shared)?,
            });
            Ok::<(), Error>(())
        };
        match self.kind {
            DplrPlanKind::Sequential => push(
                DplrRole::Sequential,
                names.sequential,
                b * m_tiles,
                cb,
                chunk_shared,
            )?,
            DplrPlanKind::SinglePass => push(
                DplrRole::Rescan,
                names.rescan,
                b * m_tiles,
                cb,
                chunk_shared,
            )?,
            DplrPlanKind::Chunked => {
                push(
                    DplrRole::Reduce,
                    names.reduce,
                    b * nc * nm_tiles,
                    cb,
                    chunk_shared,
                )?;
                let lv = self.levels();
                for k in 1..lv {
                    let half = 1usize << (k - 1);
                    let pairs = nc / (2 * half as u64);
                    push(
                        DplrRole::Up { half },
                        names.up,
                        b * pairs,
                        up_block,
                        dense_shared,
                    )?;
                }
                for k in (0..lv).rev() {
                    let half = 1usize << k;
                    let h = half as u64;
                    let count = (nc - 1 - h) / (2 * h) + 1;
                    push(
                        DplrRole::Down { half },
                        names.down,
                        b * count,
                        down_block,
                        dense_shared,
                    )?;
                }
                push(
                    DplrRole::Rescan,
                    names.rescan,
                    b * nc * m_tiles,
                    cb,
                    chunk_shared,
                )?;
            }
        }
        Ok(out)
    }

    /// `D(c)`: depth of the carry entering chunk `c`.
    fn carry_depth(&self, c: u64) -> u64 {
        if c == 0 {
            0
        } else {
            self.chunk as u64 + highest_bit(c) + u64::from(c.count_ones())
        }
    }

    /// Measured depth of output step `t` (0-based).
    fn depth_at(&self, t: u64) -> u64 {
        if self.kind != DplrPlanKind::Chunked {
            return t + 1;
        }
        let c_len = self.chunk as u64;
        self.carry_depth(t / c_len) + t % c_len + 1
    }

    /// The maximum of [`Geometry::depth_at`], in O(log NC): the last chunk on
    /// its own, the full chunks by their deepest carry.
    fn depth(&self) -> u64 {
        let t = self.shape.len as u64;
        if self.kind != DplrPlanKind::Chunked {
            return t;
        }
        let c_len = self.chunk as u64;
        let nc = self.chunks as u64;
        let last = self.carry_depth(nc - 1) + (t - (nc - 1) * c_len);
        let full = if nc >= 3 {
            c_len + max_hb_pc(nc - 2) + c_len
        } else {
            c_len
        };
        last.max(full)
    }
}

/// Resolves `request` for a DPLR problem of `shape` writing `output`,
/// stored as `dtype`, on a device with `sm_count` SMs (see the module docs
/// for the rules). Errors: sizes outside the kernels' limits, `Chunk(0)`,
/// too many chunks, launch shapes outside CUDA's limits.
pub fn plan_dplr(
    shape: DplrShape,
    output: DplrOutput,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<DplrPlan> {
    shape.validate()?;
    let sm = sm_count.max(1);
    let kt = KernelType::Data(dtype);
    let g = match request {
        PlanRequest::Sequential => Geometry::sequential(shape),
        PlanRequest::Chunk(0) => return Err(Error::Plan("chunk=0: expected C ≥ 1".into())),
        PlanRequest::Chunk(c) => Geometry::chunked(shape, c)?,
        PlanRequest::Auto => Geometry::chunked(shape, auto_chunk(shape, sm))?,
        PlanRequest::LookBack => {
            return Err(crate::scan::plan::look_back_unsupported("the DPLR kernels"))
        }
        PlanRequest::MinDepth => min_depth_geometry(shape, kt)?,
    };
    make_plan(g, request, dtype, output)
}

fn make_plan(
    g: Geometry,
    request: PlanRequest,
    dtype: DType,
    output: DplrOutput,
) -> Result<DplrPlan> {
    let kt = KernelType::Data(dtype);
    // Launch shapes of the depth instantiation are the same but for shared
    // bytes; check both so a depth measurement never fails where a run works.
    g.launches(KernelType::Depth)?;
    Ok(DplrPlan {
        request,
        kind: g.kind,
        dtype,
        output,
        shape: g.shape,
        chunk: g.chunk,
        chunks: g.chunks,
        levels: g.levels(),
        width: g.shape.width(),
        col_block: g.col_block(),
        launches: g.launches(kt)?,
        scratch: g.scratch(kt)?,
        depth: g.depth(),
        reverse: g.reverse,
    })
}

/// The `Auto` chunk (`T` for a single pass).
fn auto_chunk(shape: DplrShape, sm: usize) -> usize {
    let t = shape.len;
    let cb = if shape.m <= 32 { 32 } else { 64 };
    let threads = shape.batch.saturating_mul(shape.m.next_multiple_of(cb));
    let target = sm.saturating_mul(AUTO_THREADS_PER_SM);
    if threads >= target {
        return t;
    }
    let want = target.div_ceil(threads);
    // Rounded down to whole staged batches, so at least `want` chunks.
    (t.div_ceil(want) / STAGE_STEPS * STAGE_STEPS)
        .max(AUTO_MIN_CHUNK)
        .max(t.div_ceil(MAX_CHUNKS))
        .min(t)
}

/// The least-depth geometry among `T` and the powers of two below it
/// (module docs).
fn min_depth_geometry(shape: DplrShape, kt: KernelType) -> Result<Geometry> {
    let t = shape.len;
    let c_min = t.div_ceil(MAX_CHUNKS).max(1);
    let mut candidates = vec![t, c_min];
    candidates.extend(
        (0..usize::BITS)
            .map(|k| 1usize << k)
            .take_while(|&c| c < t)
            .filter(|&c| c >= c_min),
    );
    let mut best: Option<Geometry> = None;
    let mut fallback: Option<Geometry> = None;
    for c in candidates {
        let g = Geometry::chunked(shape, c)?;
        let fits = g
            .scratch(kt)
            .is_ok_and(|s| s.total() <= MIN_DEPTH_MAX_SCRATCH);
        if !fits {
            continue;
        }
        if fallback.map_or(true, |f| g.chunk < f.chunk) {
            fallback = Some(g);
        }
        let better = best.map_or(true, |b| {
            let (dg, db) = (g.depth(), b.depth());
            dg < db || (dg == db && g.chunk > b.chunk)
        });
        if better {
            best = Some(g);
        }
    }
    // The single pass (C = T) always fits, so `best` is set.
    best.or(fallback)
        .ok_or_else(|| Error::Plan("min-depth: no candidate chunk".into()))
}

impl DplrPlan {
    /// Total scratch bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.total()
    }

    /// The measured depth of output step `t` (0-based, `t < T`) of any
    /// problem and column, by the contract's formula; `h_T` has the depth of
    /// the last step computed (`t = T − 1`, or `t = 0` for a reverse plan).
    /// A reverse plan's step `t` is the forward plan's step `T − 1 − t`.
    pub fn depth_at(&self, t: usize) -> u64 {
        let t = if self.reverse {
            self.shape.len - 1 - t
        } else {
            t
        };
        self.geometry().depth_at(t as u64)
    }

    /// The same plan for the other direction (a forward plan becomes a
    /// reverse one and back): same kind, chunk, scratch and depth; only the
    /// kernel names change. Errors: an edited plan whose launches cannot be
    /// rebuilt.
    pub fn reversed(self) -> Result<DplrPlan> {
        let mut plan = DplrPlan {
            reverse: !self.reverse,
            ..self
        };
        plan.launches = plan.geometry().launches(KernelType::Data(plan.dtype))?;
        Ok(plan)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            kind: self.kind,
            shape: self.shape,
            chunk: self.chunk,
            chunks: self.chunks,
            reverse: self.reverse,
        }
    }

    /// The family-independent summary of this plan.
    pub fn summary(&self) -> KernelPlanSummary {
        // w, k (and q for the readout), u, v (R each) per step and row, x per step
        // and column, read once per pass (P2: the reduce and the rescan); y [B,T,m]
        // or every state [B,T,n,m] written once; scratch written and read once.
        let s = self.dtype.size() as u64;
        let sh = self.shape;
        let steps = (sh.batch * sh.len) as u64;
        let (n, m, r) = (sh.n as u64, sh.m as u64, sh.rank as u64);
        let (vecs, out) = match self.output {
            DplrOutput::Readout => (3, m),
            DplrOutput::States => (2, n * m),
        };
        let inputs = steps * (vecs * n + 2 * r * n + m) * s;
        let passes = if self.kind == DplrPlanKind::Chunked {
            2
        } else {
            1
        };
        KernelPlanSummary {
            plan_bytes: passes * inputs + steps * out * s + 2 * self.scratch_bytes() as u64,
            kind: self.kind.label().to_string(),
            chunk: self.chunk,
            chunks: self.chunks,
            depth_formula: self.depth,
            scratch_bytes: self.scratch_bytes(),
            depth_key: format!(
                "dplr/T={}/C={}/{}",
                self.shape.len,
                self.chunk,
                self.kind.label()
            ),
        }
    }
}

impl fmt::Display for DplrPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shape;
        write!(
            f,
            "{}{} ({}) {} dplr B={} T={} n={} m={} R={} {:?}: C={} NC={} NMAX={}, {} launch(es), \
             scratch {} B, depth {}",
            self.kind,
            if self.reverse { " reverse" } else { "" },
            self.request,
            self.dtype,
            s.batch,
            s.len,
            s.n,
            s.m,
            s.rank,
            self.output,
            self.chunk,
            self.chunks,
            self.width,
            self.launches.len(),
            self.scratch_bytes(),
            self.depth
        )
    }
}

/// A plan must meet the contract and be internally consistent (its fields
/// are public, so it may have been edited since [`plan_dplr`]).
fn check_plan(plan: &DplrPlan) -> Result<()> {
    plan.shape.validate()?;
    let g = plan.geometry();
    let t = plan.shape.len;
    let split_ok = match plan.kind {
        DplrPlanKind::Sequential | DplrPlanKind::SinglePass => plan.chunk == t && plan.chunks == 1,
        DplrPlanKind::Chunked => {
            plan.chunk >= 1
                && plan.chunk < t
                && plan.chunks == t.div_ceil(plan.chunk)
                && plan.chunks <= MAX_CHUNKS
        }
    };
    let kt = KernelType::Data(plan.dtype);
    if !split_ok
        || plan.levels != g.levels()
        || plan.width != plan.shape.width()
        || plan.col_block != g.col_block()
        || g.launches(kt)? != plan.launches
        || g.scratch(kt)? != plan.scratch
        || g.depth() != plan.depth
    {
        return Err(Error::Plan(format!(
            "the fields of {plan} are inconsistent; make plans with plan_dplr"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------

/// The DPLR kernels' scratch buffers (agg, carry), reused across calls:
/// see [`Workspace`].
pub type DplrWorkspace = Workspace<DplrScratch>;

// ---------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------

/// Device addresses of one DPLR scan (a `CUdeviceptr` on CUDA, a host
/// address in the emulator).
///
/// Sizes, in storage elements: `w, k, q`: `B·T·n`; `u, v`: `B·T·R·n`;
/// `x`: `B·T·m`; `out`: `B·T·m` (`y`, readout) or `B·T·n·m` (every state,
/// `[B,T,n,m]`) as the plan's output says; `h0`, `h_t`: `B·n·m`.
/// `q` is required for the readout and ignored for states; `h0 = None`
/// (or `Some(0)`) means zeros.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DplrIo {
    /// `w: [B,T,n]`.
    pub w: u64,
    /// `u: [B,T,R,n]`.
    pub u: u64,
    /// `v: [B,T,R,n]`.
    pub v: u64,
    /// `k: [B,T,n]`.
    pub k: u64,
    /// `x: [B,T,m]`.
    pub x: u64,
    /// `q: [B,T,n]` (readout only).
    pub q: Option<u64>,
    /// `y: [B,T,m]` or states `[B,T,n,m]` (output).
    pub out: u64,
    /// Initial state and final state (output), `[B,n,m]` each.
    pub ends: Ends,
}

/// The same as [`DplrIo`], as buffers whose sizes are checked.
#[derive(Debug)]
pub struct DplrBuffers<'a> {
    /// `w: [B,T,n]`.
    pub w: DeviceRef<'a>,
    /// `u: [B,T,R,n]`.
    pub u: DeviceRef<'a>,
    /// `v: [B,T,R,n]`.
    pub v: DeviceRef<'a>,
    /// `k: [B,T,n]`.
    pub k: DeviceRef<'a>,
    /// `x: [B,T,m]`.
    pub x: DeviceRef<'a>,
    /// `q: [B,T,n]`, required for the readout.
    pub q: Option<DeviceRef<'a>>,
    /// `y: [B,T,m]` or states `[B,T,n,m]`.
    pub out: DeviceMut<'a>,
    /// `h0` (or zeros) and `h_t`: `[B,n,m]` each.
    pub ends: EndBuffers<'a>,
}

impl FamilyPlan for DplrPlan {
    type Io = DplrIo;
    type Buffers<'a> = DplrBuffers<'a>;
    type Scratch = DplrScratch;

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn summary(&self) -> KernelPlanSummary {
        DplrPlan::summary(self)
    }

    fn check(&self) -> Result<()> {
        check_plan(self)
    }

    fn scratch(&self, depth: bool) -> Result<DplrScratch> {
        if depth {
            self.geometry().scratch(KernelType::Depth)
        } else {
            Ok(self.scratch)
        }
    }

    fn output_elements(&self) -> (usize, usize) {
        let s = self.shape;
        (s.out_elements(self.output), s.state_elements())
    }

    fn io_args(&self, io: &DplrIo) -> Vec<IoArg> {
        let s = self.shape;
        let size = self.dtype.size();
        let btn = s.batch * s.len * s.n;
        let btm = s.batch * s.len * s.m;
        let state = s.state_elements();
        let readout = self.output == DplrOutput::Readout;
        let q = if readout { io.q.unwrap_or(0) } else { 0 };
        let [h0, h_t] = io.ends.args(state, size);
        vec![
            IoArg::new("w", io.w, btn, size, true),
            IoArg::new("u", io.u, btn * s.rank, size, true),
            IoArg::new("v", io.v, btn * s.rank, size, true),
            IoArg::new("k", io.k, btn, size, true),
            IoArg::new("x", io.x, btm, size, true),
            IoArg::new("q", q, btn, size, readout),
            h0,
            IoArg::new("out", io.out, s.out_elements(self.output), size, true),
            h_t,
        ]
    }

    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &DplrBuffers<'_>) -> Result<DplrIo> {
        let s = self.shape;
        let size = ElemType::of_dtype(self.dtype);
        let (b, t, n, m, r) = (s.batch, s.len, s.n, s.m, s.rank);
        let btn = || format!("[B,T,n] = [{b},{t},{n}]");
        let btrn = || format!("[B,T,R,n] = [{b},{t},{r},{n}]");
        let bnm = || format!("[B,n,m] = [{b},{n},{m}]");
        check_arg(runner, "w", &bufs.w, b * t * n, size, btn)?;
        check_arg(runner, "u", &bufs.u, b * t * r * n, size, btrn)?;
        check_arg(runner, "v", &bufs.v, b * t * r * n, size, btrn)?;
        check_arg(runner, "k", &bufs.k, b * t * n, size, btn)?;
        check_arg(runner, "x", &bufs.x, b * t * m, size, || {
            format!("[B,T,m] = [{b},{t},{m}]")
        })?;
        let q = match (self.output, &bufs.q) {
            (DplrOutput::Readout, Some(q)) => {
                check_arg(runner, "q", q, b * t * n, size, btn)?;
                Some(q.addr)
            }
            (DplrOutput::Readout, None) => {
                return Err(Error::shape(
                    "q",
                    format!("{} (required for the Readout output)", btn()),
                    b * t * n,
                    0,
                ))
            }
            (DplrOutput::States, _) => None,
        };
        let out_shape = || match self.output {
            DplrOutput::Readout => format!("[B,T,m] = [{b},{t},{m}]"),
            DplrOutput::States => format!("[B,T,n,m] = [{b},{t},{n},{m}]"),
        };
        check_arg(
            runner,
            "out",
            &bufs.out.0,
            s.out_elements(self.output),
            size,
            out_shape,
        )?;
        Ok(DplrIo {
            w: bufs.w.addr,
            u: bufs.u.addr,
            v: bufs.v.addr,
            k: bufs.k.addr,
            x: bufs.x.addr,
            q,
            out: bufs.out.0.addr,
            ends: bufs.ends.check(runner, s.state_elements(), size, bnm)?,
        })
    }

    fn depth_io(&self, out: u64, last: u64) -> DplrIo {
        DplrIo {
            out,
            ends: Ends::last(last),
            ..DplrIo::default()
        }
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &DplrWorkspace,
        io: DplrIo,
        depth: bool,
    ) -> Result<()> {
        if depth {
            let launches = self.geometry().launches(KernelType::Depth)?;
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &launches, ws, io, true) }
        } else {
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &self.launches, ws, io, false) }
        }
    }
}

/// Issues `launches` (the plan's, for one instantiation) with `io`.
/// `depth`: the counters' run (inputs are never read).
///
/// # Safety
/// The addresses address live memory of `runner` of the sizes the plan's
/// shape implies, and the plan passed `check_plan`.
unsafe fn issue<R: KernelRunner>(
    runner: &R,
    plan: &DplrPlan,
    launches: &[DplrLaunch],
    ws: &DplrWorkspace,
    io: DplrIo,
    depth: bool,
) -> Result<()> {
    use KernelArg::Ptr;
    let s = plan.shape;
    let (b, t, n, m, r) = (
        i32_arg(s.batch),
        i32_arg(s.len),
        i32_arg(s.n),
        i32_arg(s.m),
        i32_arg(s.rank),
    );
    let c = i32_arg(plan.chunk);
    let nc = i32_arg(plan.chunks);
    let (w, u, v, k, x) = (Ptr(io.w), Ptr(io.u), Ptr(io.v), Ptr(io.k), Ptr(io.x));
    let readout = plan.output == DplrOutput::Readout;
    let q = Ptr(if readout && !depth {
        io.q.unwrap_or(0)
    } else {
        0
    });
    let (y, states) = if readout {
        (Ptr(io.out), Ptr(0))
    } else {
        (Ptr(0), Ptr(io.out))
    };
    let (h0, ht) = (Ptr(io.ends.h0.unwrap_or(0)), Ptr(io.ends.h_t));
    let (agg, carry) = (Ptr(ws.ptr(0)), Ptr(ws.ptr(1)));
    // P1 runs the rescan without carries: its only chunk starts from h0.
    let rescan_carry = if plan.kind == DplrPlanKind::Chunked {
        carry
    } else {
        Ptr(0)
    };
    for l in launches {
        let (kn, cfg) = (l.kernel, l.cfg);
        // SAFETY: each kernel gets the buffers its launch contract names for
        // this role, sized by the plan's shape (the caller's obligation) and
        // its scratch (reserved in the workspace).
        unsafe {
            match l.role {
                DplrRole::Sequential => runner.launch(
                    kn,
                    cfg,
                    &[w, u, v, k, x, q, y, states, ht, h0, b, t, n, m, r],
                ),
                DplrRole::Reduce => runner.launch(kn, cfg, &[w, u, v, k, x, agg, b, t, n, m, r, c]),
                DplrRole::Up { half } => runner.launch(kn, cfg, &[agg, b, nc, n, m, i32_arg(half)]),
                DplrRole::Down { half } => {
                    runner.launch(kn, cfg, &[agg, carry, h0, b, nc, n, m, i32_arg(half)])
                }
                DplrRole::Rescan => runner.launch(
                    kn,
                    cfg,
                    &[
                        w,
                        u,
                        v,
                        k,
                        x,
                        q,
                        y,
                        states,
                        ht,
                        rescan_carry,
                        h0,
                        b,
                        t,
                        n,
                        m,
                        r,
                        c,
                    ],
                ),
            }
        }?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Host convenience and depth measurement
// ---------------------------------------------------------------------------

/// A DPLR problem's inputs on a runner ([`KernelScan::Inputs`]; also kept
/// resident by `kernels::resident`).
#[derive(Debug)]
pub struct Uploaded {
    w: DeviceBuffer,
    u: DeviceBuffer,
    v: DeviceBuffer,
    k: DeviceBuffer,
    x: DeviceBuffer,
    q: Option<DeviceBuffer>,
    h0: Option<DeviceBuffer>,
}

impl Uploaded {
    pub(crate) fn new<R: KernelRunner, S: Storage + bytemuck::Pod>(
        runner: &R,
        p: &Dplr<'_, S>,
    ) -> Result<Self> {
        let q = match p.output {
            DplrOutput::Readout => p.q.map(|q| runner.upload(q)).transpose()?,
            DplrOutput::States => None,
        };
        Ok(Uploaded {
            w: runner.upload(p.w)?,
            u: runner.upload(p.u)?,
            v: runner.upload(p.v)?,
            k: runner.upload(p.k)?,
            x: runner.upload(p.x)?,
            q,
            h0: p.h0.map(|h0| runner.upload(h0)).transpose()?,
        })
    }
}

fn plan_for<S: Storage>(
    p: &Dplr<'_, S>,
    sm_count: usize,
    request: PlanRequest,
) -> Result<DplrPlan> {
    p.validate()?;
    plan_dplr(DplrShape::of(p), p.output, S::DTYPE, request, sm_count)
}

/// Outputs (`y` or every state) at `out` and `h_T` at `last`.
impl BindInputs<DplrPlan> for Uploaded {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> DplrBuffers<'a> {
        DplrBuffers {
            w: (&self.w).into(),
            u: (&self.u).into(),
            v: (&self.v).into(),
            k: (&self.k).into(),
            x: (&self.x).into(),
            q: self.q.as_ref().map(Into::into),
            out: out.into(),
            ends: EndBuffers::new(self.h0.as_ref().map(Into::into), last.into()),
        }
    }
}

/// Runs a host-side DPLR problem right to left on `runner`
/// ([`scan_host_planned`](super::scan_host_planned) with
/// [`DplrPlan::reversed`]): `H_t = A_t H_{t+1} + k_t x_tᵀ` from `h0` (the
/// state entering `t = T − 1`) down to `t = 0`, writing the problem's
/// output (`y_t = H_tᵀ q_t` or every state). Returns `(out, h_T, plan)`,
/// `h_T` the state at `t = 0`.
pub fn scan_dplr_reverse<R, S>(
    runner: &R,
    ws: &mut DplrWorkspace,
    problem: &Dplr<'_, S>,
    request: PlanRequest,
) -> Result<(Vec<S>, Vec<S>, DplrPlan)>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    problem.validate()?;
    let plan = plan_dplr(
        DplrShape::of(problem),
        problem.output,
        S::DTYPE,
        request,
        runner.sm_count(),
    )
    .and_then(|p| p.reversed())?;
    super::scan_host_planned(runner, ws, problem, plan)
}

impl<S: Storage + bytemuck::Pod> KernelScan for Dplr<'_, S> {
    type Elem = S;
    type Plan = DplrPlan;
    type Inputs = Uploaded;

    /// Validates the problem and the kernels' limits, then plans.
    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<DplrPlan> {
        plan_for(self, sm_count, request)
    }

    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Uploaded> {
        Uploaded::new(runner, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(b: usize, t: usize, n: usize, m: usize, r: usize, req: PlanRequest) -> DplrPlan {
        plan_dplr(
            DplrShape::new(b, t, n, m, r),
            DplrOutput::Readout,
            DType::F32,
            req,
            2,
        )
        .unwrap()
    }

    fn brute_depth(p: &DplrPlan) -> u64 {
        (0..p.shape.len).map(|t| p.depth_at(t)).max().unwrap()
    }

    /// An independent evaluation of the Blelloch level structure: simulate
    /// the launches on per-chunk counters.
    fn simulated_depth(p: &DplrPlan) -> u64 {
        if p.kind != DplrPlanKind::Chunked {
            return p.shape.len as u64;
        }
        let nc = p.chunks;
        let t = p.shape.len;
        let mut agg: Vec<u64> = (0..nc)
            .map(|i| (t - i * p.chunk).min(p.chunk) as u64)
            .collect();
        let mut carry = vec![0u64; nc];
        for l in &p.launches {
            match l.role {
                DplrRole::Up { half } => {
                    let span = 2 * half;
                    for q in 0..nc / span {
                        let (ai, bi) = (q * span + half - 1, q * span + span - 1);
                        agg[bi] = agg[ai].max(agg[bi]) + 1;
                    }
                }
                DplrRole::Down { half } => {
                    let span = 2 * half;
                    let mut q = 0;
                    while q * span + half < nc {
                        let (src, r) = (q * span, q * span + half);
                        carry[r] = agg[r - 1].max(carry[src]) + 1;
                        q += 1;
                    }
                }
                _ => {}
            }
        }
        (0..t)
            .map(|s| carry[s / p.chunk] + (s % p.chunk) as u64 + 1)
            .max()
            .unwrap()
    }

    #[test]
    fn depth_formula_matches_brute_force_and_simulation() {
        for t in [1usize, 2, 3, 7, 8, 9, 33, 100, 257, 1000, 4097] {
            for req in [
                PlanRequest::Sequential,
                PlanRequest::Chunk(1),
                PlanRequest::Chunk(2),
                PlanRequest::Chunk(3),
                PlanRequest::Chunk(8),
                PlanRequest::Chunk(64),
                PlanRequest::Chunk(5000),
                PlanRequest::MinDepth,
                PlanRequest::Auto,
            ] {
                let p = plan(2, t, 5, 3, 2, req);
                assert_eq!(p.depth, brute_depth(&p), "{p}");
                assert_eq!(p.depth, simulated_depth(&p), "{p}");
            }
        }
    }

    #[test]
    fn worked_example_and_launch_counts() {
        let p = plan(64, 8192, 64, 64, 1, PlanRequest::Chunk(256));
        assert_eq!((p.kind, p.chunks, p.levels), (DplrPlanKind::Chunked, 32, 5));
        assert_eq!(p.depth, 256 + 4 + 5 + 256);
        assert_eq!(p.launches.len(), 2 * 5 + 1);
        let p = plan(1, 100, 4, 3, 1, PlanRequest::Chunk(50));
        assert_eq!(p.launches.len(), 3);
        let p = plan(1, 100, 4, 3, 1, PlanRequest::Chunk(100));
        assert_eq!((p.kind, p.launches.len()), (DplrPlanKind::SinglePass, 1));
        let p = plan(1, 100, 4, 3, 1, PlanRequest::Sequential);
        assert_eq!((p.kind, p.depth), (DplrPlanKind::Sequential, 100));
        assert!(p.launches[0].kernel.starts_with("dplr_sequential_n32_"));
    }

    #[test]
    fn min_depth_is_minimal() {
        for t in [1usize, 5, 100, 3000] {
            let best = plan(1, t, 4, 4, 1, PlanRequest::MinDepth);
            for k in 0..13 {
                let p = plan(1, t, 4, 4, 1, PlanRequest::Chunk(1 << k));
                assert!(best.depth <= p.depth, "{best} vs {p}");
            }
        }
    }

    #[test]
    fn limits_are_typed_errors() {
        let bad = |b, t, n, m, r| {
            plan_dplr(
                DplrShape::new(b, t, n, m, r),
                DplrOutput::Readout,
                DType::F32,
                PlanRequest::Auto,
                2,
            )
        };
        for (shape, arg) in [
            ((1, 4, 129, 4, 1), "n"),
            ((1, 4, 4, 129, 1), "m"),
            ((1, 4, 4, 4, 5), "rank"),
            ((1, 4, 4, 4, 0), "rank"),
            ((1, 0, 4, 4, 1), "len"),
        ] {
            let (b, t, n, m, r) = shape;
            match bad(b, t, n, m, r) {
                Err(Error::Size { arg: got, .. }) => assert_eq!(got, arg, "{shape:?}"),
                other => panic!("{shape:?}: expected a size error on {arg}, got {other:?}"),
            }
        }
        assert!(matches!(
            plan_dplr(
                DplrShape::new(1, 9, 4, 4, 1),
                DplrOutput::Readout,
                DType::F32,
                PlanRequest::Chunk(0),
                2
            ),
            Err(Error::Plan(_))
        ));
        // The widest shape fits the launch limits, with opt-in shared memory.
        let p = plan(1, 40, 128, 128, 4, PlanRequest::Chunk(8));
        assert!(p.launches.iter().all(|l| l.cfg.validate().is_ok()));
        assert_eq!(p.width, 128);
    }

    #[test]
    fn auto_splits_few_problems() {
        let auto = |shape, dtype| {
            plan_dplr(shape, DplrOutput::Readout, dtype, PlanRequest::Auto, 132).unwrap()
        };
        let p = auto(DplrShape::new(64, 8192, 64, 64, 1), DType::Bf16);
        assert_eq!(p.kind, DplrPlanKind::Chunked);
        assert!(64 * 64 * p.chunks >= 132 * AUTO_THREADS_PER_SM, "{p}");
        let p = auto(DplrShape::new(8192, 1000, 16, 16, 1), DType::F32);
        assert_eq!(p.kind, DplrPlanKind::SinglePass);
    }
}
