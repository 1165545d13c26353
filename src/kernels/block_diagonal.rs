//! The BlockDiagonal(k) family (and Dense, `k = n`) on the kernels of
//! `kernels/block_diagonal.cu`: planner, scratch workspace and launch
//! sequences, for any [`KernelRunner`].
//!
//! This module implements the launch contract written at the top of
//! `kernels/block_diagonal.cu`: kernel names, argument lists, launch shapes,
//! the plans P0 (sequential), P1 (single pass) and P2 (chunked, with the
//! chunk aggregates scanned by a radix-`R` tree of the same kernels), the
//! scratch layout and the measured-depth formula.
//!
//! # Layers
//!
//! - [`plan_block_diagonal`]: a [`BlockPlan`] (kind, chunk `C`, radix `R`,
//!   the levels of the tree, the exact launches, scratch bytes, the depth
//!   the `_depth` kernels will measure). Pure, no device.
//! - [`BlockPlan`] implements [`FamilyPlan`]: the shared entry points of
//!   [`face`](super::face) run it on typed memory ([`BlockDiagonalBuffers`];
//!   the entry point for callers that assemble `A` on the device, such as
//!   the Newton solver's Jacobians), on raw addresses ([`BlockDiagonalIo`],
//!   `unsafe`), on the `_depth` kernels, and on host slices; no allocation
//!   once the [`BlockDiagonalWorkspace`] is warm.
//!
//! # Planner rules
//!
//! - `Sequential` → P0 (depth `T`).
//! - `Chunk(C)` → P1 when `C ≥ T`, else P2 with radix [`TREE_RADIX`] (2: the
//!   tree is Blelloch's up-sweep and down-sweep, one level per launch pair).
//! - `MinDepth` → the least formula depth among `C = T` and the powers of
//!   two below `T`, radix 2; ties go to the longer chunk (less work).
//! - `Auto` → P1 when the `B·nb` (row, block) pairs alone give
//!   `sm_count × 2048` rescan threads; otherwise about that many threads
//!   from chunks along `T` (`C ≥` [`AUTO_MIN_CHUNK`]), radix [`AUTO_RADIX`]
//!   (fewer launches), and no more than [`AUTO_SCRATCH_BYTES`] of scratch.

use std::fmt;

use super::common::{check_int, i32_arg, plan_kinds, KernelType};
use super::device::ElemType;
use super::face::{
    AffineBuffers, AffineIo, AffineSizes, BindInputs, EndBuffers, FamilyPlan, IoArg, Workspace,
};
use super::packed::Steps;
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// Block sizes `k` the kernels are instantiated for.
pub const SUPPORTED_BLOCKS: [usize; 8] = [1, 2, 3, 4, 8, 16, 32, 64];
/// Threads per block of every launch.
pub const THREADS_PER_BLOCK: u32 = 128;
/// Radix of the aggregate tree for `Chunk` and `MinDepth` plans.
pub const TREE_RADIX: usize = 2;
/// Radix of the aggregate tree for `Auto` plans.
pub const AUTO_RADIX: usize = 8;
/// Shortest chunk `Auto` picks.
pub const AUTO_MIN_CHUNK: usize = 16;
/// Most scratch an `Auto` plan asks for, in bytes.
pub const AUTO_SCRATCH_BYTES: usize = 256 << 20;
/// Resident threads per SM that `Auto` aims to fill with rescan threads.
const THREADS_PER_SM: usize = 2048;
/// Alignment of each scratch array inside the workspace.
const SCRATCH_ALIGN: usize = 256;

// ---------------------------------------------------------------------------
// Shape
// ---------------------------------------------------------------------------

/// `(B, T, nb, k)` of a BlockDiagonal problem: batch, length, number of
/// blocks, block size; the state has `n = nb·k` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockShape {
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `nb`.
    pub blocks: usize,
    /// `k`.
    pub block: usize,
}

impl BlockShape {
    /// `(B, T, nb, k)`.
    pub fn new(batch: usize, len: usize, blocks: usize, block: usize) -> Self {
        BlockShape {
            batch,
            len,
            blocks,
            block,
        }
    }

    /// State size `n = nb·k`.
    pub fn n(&self) -> usize {
        self.blocks * self.block
    }

    /// Elements of `A`: `B·T·nb·k·k`.
    pub fn a_elements(&self) -> usize {
        self.batch * self.len * self.blocks * self.block * self.block
    }

    /// Elements of `b` and `h`: `B·T·n`.
    pub fn elements(&self) -> usize {
        self.batch * self.len * self.n()
    }

    /// Elements of `h0` and `h_T`: `B·n`.
    pub fn state_elements(&self) -> usize {
        self.batch * self.n()
    }

    pub(crate) fn describe_a(&self) -> String {
        let (b, t, nb, k) = (self.batch, self.len, self.blocks, self.block);
        format!("[B,T,nb,k,k] = [{b},{t},{nb},{k},{k}]")
    }

    fn describe(&self) -> String {
        format!("[B,T,n] = [{},{},{}]", self.batch, self.len, self.n())
    }

    fn describe_state(&self) -> String {
        format!("[B,n] = [{},{}]", self.batch, self.n())
    }

    /// `B, T, nb` are C `int`s ≥ 1, `k` is a supported block size, and
    /// every byte size fits a `usize`.
    pub fn validate(&self) -> Result<()> {
        check_int("batch", self.batch)?;
        check_int("len", self.len)?;
        check_int("blocks", self.blocks)?;
        if !SUPPORTED_BLOCKS.contains(&self.block) {
            return Err(Error::size(
                "block",
                self.block,
                format!("a block size the kernels support: one of {SUPPORTED_BLOCKS:?}"),
            ));
        }
        check_int("blocks", self.n())
            .map_err(|_| Error::size("blocks", self.blocks, "nb·k ≤ 2^31 − 1"))?;
        self.batch
            .checked_mul(self.len)
            .and_then(|x| x.checked_mul(self.n()))
            .and_then(|x| x.checked_mul(self.block + 2))
            .and_then(|x| x.checked_mul(16))
            .ok_or_else(|| {
                Error::size(
                    "len",
                    self.len,
                    format!(
                        "B·T·nb·k·k = {} elements that fit in memory",
                        self.describe_a()
                    ),
                )
            })?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

plan_kinds! {
    /// Which launch sequence of the contract a plan uses.
    pub enum BlockPlanKind {
        /// P0: `bd<k>_sequential`, one thread per (row, block) over all `T`.
        Sequential = ("P0", "sequential"),
        /// P1: one `bd<k>_rescan` with `C = T` and no carries.
        SinglePass = ("P1", "single-pass"),
        /// P2: reduce levels up a radix-`R` tree of chunk aggregates, then
        /// rescans down it.
        Tree = ("P2", "tree"),
    }
}

/// What one launch does (it decides the argument list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockLaunchRole {
    /// P0: `bd<k>_sequential(A, b, h, hT, h0, B, T, nb)`.
    Sequential,
    /// Level `l` → aggregates of level `l + 1`: `bd<k>_reduce[_up]`.
    Reduce,
    /// Rescan of level `l` from the states of level `l + 1` (or `h0`):
    /// `bd<k>_rescan[_up]`.
    Rescan,
}

/// One kernel launch of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLaunch {
    /// What it does.
    pub role: BlockLaunchRole,
    /// The tree level it works on (0 = the problem itself).
    pub level: usize,
    /// The `extern "C"` kernel name.
    pub kernel: String,
    /// Grid and block (no dynamic shared memory).
    pub cfg: LaunchConfig,
}

/// One level of the tree: level 0 is the problem, level `l + 1` the
/// sequence of level `l`'s chunk aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockLevel {
    /// Steps `T_l` of this level.
    pub len: usize,
    /// Chunk `C_l` (`= T_l` on the top level).
    pub chunk: usize,
}

impl BlockLevel {
    /// Chunks `⌈T_l / C_l⌉` (= `T_{l+1}`).
    pub fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }
}

/// Byte offsets of one level's scratch arrays inside the workspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LevelScratch {
    agg_a: usize,
    agg_b: usize,
    states: usize,
}

/// A resolved GPU plan for the BlockDiagonal kernels: everything that will
/// be launched, and what it costs, before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPlan {
    /// What was asked for.
    pub request: PlanRequest,
    /// P0–P2.
    pub kind: BlockPlanKind,
    /// Storage type of `A`, `b`, `h0`, `h`, `h_T`.
    pub dtype: DType,
    /// `(B, T, nb, k)`.
    pub shape: BlockShape,
    /// Steps per chunk `C` at level 0 (`T` for P0 and P1).
    pub chunk: usize,
    /// Chunks per sequence at level 0, `⌈T/C⌉`.
    pub chunks: usize,
    /// Chunk of the levels above 0 (`R`); 0 for P0 and P1.
    pub radix: usize,
    /// Levels `0..=m` (one for P0 and P1).
    pub levels: Vec<BlockLevel>,
    /// The launches, in order.
    pub launches: Vec<BlockLaunch>,
    /// Device scratch in bytes (levels `1..=m`).
    pub scratch_bytes: usize,
    /// The depth the `_depth` instantiation measures (maximum over all
    /// outputs of the contract's formula, [`BlockPlan::depth_at`]).
    pub depth: u64,
    /// Right to left ([`BlockPlan::reversed`]):
    /// `h_t = A_t h_{t+1} + b_t` from `h0` at `t = T − 1` down to `t = 0`,
    /// `h_T` = the state at `t = 0`. Same launches (the level-0 kernels are
    /// the `_rev_` ones; the levels above are shared), scratch and depth as
    /// the forward plan, with step `t` at the forward position `T − 1 − t`.
    pub reverse: bool,
}

impl fmt::Display for BlockPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} ({}) {} k={} {}: C={} NC={}",
            self.kind,
            if self.reverse { " reverse" } else { "" },
            self.request,
            self.dtype,
            self.shape.block,
            self.shape.describe(),
            self.chunk,
            self.chunks
        )?;
        if self.kind == BlockPlanKind::Tree {
            write!(f, " R={} levels={}", self.radix, self.levels.len())?;
        }
        write!(
            f,
            ", {} launch(es), scratch {} B, depth {}",
            self.launches.len(),
            self.scratch_bytes,
            self.depth
        )
    }
}

impl BlockPlan {
    /// The same plan for the other direction (a forward plan becomes a
    /// reverse one and back): same kind, chunk, scratch and depth; only the
    /// kernel names change. Errors: an edited plan whose launches cannot be
    /// rebuilt.
    pub fn reversed(self) -> Result<BlockPlan> {
        let reverse = !self.reverse;
        let kt = KernelType::Data(self.dtype);
        let launches = launches(self.kind, self.shape, &self.levels, kt, reverse)?;
        Ok(BlockPlan {
            reverse,
            launches,
            ..self
        })
    }

    /// Number of launches.
    pub fn launch_count(&self) -> usize {
        self.launches.len()
    }

    /// The measured depth of output step `t` (0-based, `t < T`) of any
    /// state entry; `h_T` has the depth of the last step computed
    /// (`t = T − 1`, or `t = 0` for a reverse plan). A reverse plan's step
    /// `t` is the forward plan's step `T − 1 − t`.
    pub fn depth_at(&self, t: usize) -> u64 {
        let t = if self.reverse {
            self.shape.len - 1 - t
        } else {
            t
        };
        DepthModel::new(self.kind, &self.levels).state(0, t as u64)
    }

    /// The family-independent summary of this plan.
    /// The family-independent summary of this plan.
    pub fn summary(&self) -> KernelPlanSummary {
        // A (nb·k² per step) and b (n per step) read once per pass (the tree's
        // reduce and rescan: twice), h (n per step) written once, scratch written
        // and read once.
        let s = self.dtype.size() as u64;
        let steps = (self.shape.batch * self.shape.len) as u64;
        let (nb, k) = (self.shape.blocks as u64, self.shape.block as u64);
        let n = nb * k;
        let inputs = steps * (nb * k * k + n) * s;
        let passes = if self.kind == BlockPlanKind::Tree {
            2
        } else {
            1
        };
        KernelPlanSummary {
            plan_bytes: passes * inputs + steps * n * s + 2 * self.scratch_bytes as u64,
            kind: self.kind.label().to_string(),
            chunk: self.chunk,
            chunks: self.chunks,
            depth_formula: self.depth,
            scratch_bytes: self.scratch_bytes,
            depth_key: format!(
                "block-diagonal/T={}/C={}/R={}/{}",
                self.shape.len,
                self.chunk,
                self.radix,
                self.kind.label()
            ),
        }
    }
}

/// Resolves `request` for a problem of `shape` stored as `dtype` on a
/// device with `sm_count` SMs (module docs). Errors: sizes that are not C
/// `int`s ≥ 1, an unsupported block size `k` (listing the supported ones),
/// `Chunk(0)`, launch shapes outside CUDA's limits.
pub fn plan_block_diagonal(
    shape: BlockShape,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<BlockPlan> {
    shape.validate()?;
    let t = shape.len;
    let sm = sm_count.max(1);
    let (kind, chunk, radix) = match request {
        PlanRequest::Sequential => (BlockPlanKind::Sequential, t, 0),
        PlanRequest::Chunk(0) => return Err(Error::Plan("chunk=0: expected C ≥ 1".into())),
        PlanRequest::Chunk(c) => chunked(t, c, TREE_RADIX),
        PlanRequest::Auto => match auto_chunk(shape, dtype, sm) {
            Some(c) => chunked(t, c, AUTO_RADIX),
            None => (BlockPlanKind::SinglePass, t, 0),
        },
        PlanRequest::LookBack => {
            return Err(crate::scan::plan::look_back_unsupported(
                "the BlockDiagonal kernels",
            ))
        }
        PlanRequest::MinDepth => min_depth(t),
    };
    build_directed(request, kind, dtype, shape, chunk, radix, false)
}

fn chunked(t: usize, c: usize, radix: usize) -> (BlockPlanKind, usize, usize) {
    if c >= t {
        (BlockPlanKind::SinglePass, t, 0)
    } else {
        (BlockPlanKind::Tree, c, radix)
    }
}

/// The `Auto` chunk, or `None` for the single pass.
fn auto_chunk(shape: BlockShape, dtype: DType, sm: usize) -> Option<usize> {
    let lanes = shape.batch * shape.blocks;
    let target = sm.saturating_mul(THREADS_PER_SM);
    if lanes >= target {
        return None;
    }
    let (k, n) = (shape.block, shape.n());
    // Scratch per level-1 chunk (all rows), with the geometric series of the
    // levels above bounded by 2×.
    let per_chunk =
        2 * shape.batch * (shape.blocks * k * k + 2 * n) * KernelType::Data(dtype).value_bytes();
    let budget_chunks = (AUTO_SCRATCH_BYTES / per_chunk.max(1)).max(1);
    let want = target.div_ceil(lanes).min(budget_chunks).max(1);
    let c = shape.len.div_ceil(want).max(AUTO_MIN_CHUNK);
    (c < shape.len).then_some(c)
}

fn min_depth(t: usize) -> (BlockPlanKind, usize, usize) {
    let mut best = (BlockPlanKind::SinglePass, t, 0usize);
    let mut best_depth = t as u64;
    let mut c = 1usize;
    while c < t {
        let levels = tree_levels(t, c, TREE_RADIX);
        let d = DepthModel::new(BlockPlanKind::Tree, &levels).max_depth();
        // Ties go to the longer chunk (less work and scratch); the single
        // pass (C = T) is the longest of all.
        if d < best_depth || (d == best_depth && c > best.1) {
            best = (BlockPlanKind::Tree, c, TREE_RADIX);
            best_depth = d;
        }
        c *= 2;
    }
    best
}

/// Levels `0..=m` of a tree with level-0 chunk `c < t` and radix `r ≥ 2`.
fn tree_levels(t: usize, c: usize, r: usize) -> Vec<BlockLevel> {
    let mut levels = vec![BlockLevel { len: t, chunk: c }];
    let mut len = t.div_ceil(c);
    while len > r {
        levels.push(BlockLevel { len, chunk: r });
        len = len.div_ceil(r);
    }
    levels.push(BlockLevel { len, chunk: len });
    levels
}

fn build_directed(
    request: PlanRequest,
    kind: BlockPlanKind,
    dtype: DType,
    shape: BlockShape,
    chunk: usize,
    radix: usize,
    reverse: bool,
) -> Result<BlockPlan> {
    let t = shape.len;
    let levels = match kind {
        BlockPlanKind::Tree => tree_levels(t, chunk, radix),
        _ => vec![BlockLevel { len: t, chunk: t }],
    };
    let kt = KernelType::Data(dtype);
    let launches = launches(kind, shape, &levels, kt, reverse)?;
    let (_, scratch_bytes) = scratch_layout(shape, &levels, kt)?;
    let depth = DepthModel::new(kind, &levels).max_depth();
    Ok(BlockPlan {
        request,
        kind,
        dtype,
        shape,
        chunk: levels[0].chunk,
        chunks: levels[0].chunks(),
        radix,
        levels,
        launches,
        scratch_bytes,
        depth,
        reverse,
    })
}

/// `up`: a level above 0 (chunk aggregates, the same kernels for both
/// directions); `reverse` names the `_rev_` kernels of level 0.
fn kernel_name(k: usize, role: &str, up: bool, kt: KernelType, reverse: bool) -> String {
    let dir = if reverse && !up { "_rev" } else { "" };
    // Levels above 0 need their own ("up") kernels only when storage and
    // compute types differ.
    let up = if up && kt.is_16bit() { "_up" } else { "" };
    format!("bd{k}_{role}{up}{dir}_{}", kt.suffix())
}

fn grid_for(kernel: &str, threads: u64) -> Result<LaunchConfig> {
    let blocks = threads.div_ceil(u64::from(THREADS_PER_BLOCK));
    let gx = u32::try_from(blocks).map_err(|_| {
        Error::Plan(format!(
            "{kernel}: a grid of {blocks} blocks exceeds CUDA's limits (shape too large for this plan)"
        ))
    })?;
    let cfg = LaunchConfig::linear(gx, THREADS_PER_BLOCK);
    cfg.validate()
        .map_err(|e| Error::Plan(format!("{kernel}: {e} (shape too large for this plan)")))?;
    Ok(cfg)
}

/// The launch sequence of the contract for instantiation `kt`.
fn launches(
    kind: BlockPlanKind,
    shape: BlockShape,
    levels: &[BlockLevel],
    kt: KernelType,
    reverse: bool,
) -> Result<Vec<BlockLaunch>> {
    let k = shape.block;
    let lanes = (shape.batch * shape.blocks) as u64;
    let mut out = Vec::with_capacity(2 * levels.len());
    let mut push = |role, level: usize, name: &str, up: bool, threads: u64| -> Result<()> {
        let kernel = kernel_name(k, name, up, kt, reverse);
        let cfg = grid_for(&kernel, threads)?;
        out.push(BlockLaunch {
            role,
            level,
            kernel,
            cfg,
        });
        Ok(())
    };
    match kind {
        BlockPlanKind::Sequential => {
            push(BlockLaunchRole::Sequential, 0, "sequential", false, lanes)?
        }
        BlockPlanKind::SinglePass => push(BlockLaunchRole::Rescan, 0, "rescan", false, lanes)?,
        BlockPlanKind::Tree => {
            let m = levels.len() - 1;
            for (l, lv) in levels[..m].iter().enumerate() {
                let teams = lanes * lv.chunks() as u64;
                push(
                    BlockLaunchRole::Reduce,
                    l,
                    "reduce",
                    l > 0,
                    teams * (k as u64 + 1),
                )?;
            }
            for (l, lv) in levels.iter().enumerate().rev() {
                push(
                    BlockLaunchRole::Rescan,
                    l,
                    "rescan",
                    l > 0,
                    lanes * lv.chunks() as u64,
                )?;
            }
        }
    }
    Ok(out)
}

/// Offsets of every level's scratch (index `l` for level `l ≥ 1`; entry 0
/// unused) and the total bytes, for instantiation `kt`.
fn scratch_layout(
    shape: BlockShape,
    levels: &[BlockLevel],
    kt: KernelType,
) -> Result<(Vec<LevelScratch>, usize)> {
    let v = kt.value_bytes();
    let too_big = || {
        Error::Plan(format!(
            "the scratch of {} levels for {} does not fit in memory",
            levels.len(),
            shape.describe_a()
        ))
    };
    let mut offsets = vec![LevelScratch::default(); levels.len()];
    let mut at = 0usize;
    let mut take = |elements: usize| -> Result<usize> {
        let bytes = elements.checked_mul(v).ok_or_else(too_big)?;
        let start = at;
        at = at
            .checked_add(bytes)
            .and_then(|x| x.checked_next_multiple_of(SCRATCH_ALIGN))
            .ok_or_else(too_big)?;
        Ok(start)
    };
    for (l, lv) in levels.iter().enumerate().skip(1) {
        let rows = shape.batch * lv.len;
        let per_a = shape.blocks * shape.block * shape.block;
        offsets[l] = LevelScratch {
            agg_a: take(rows.checked_mul(per_a).ok_or_else(too_big)?)?,
            agg_b: take(rows * shape.n())?,
            states: take(rows * shape.n())?,
        };
    }
    Ok((offsets, at))
}

// ---------------------------------------------------------------------------
// Depth (the contract's DEPTH section)
// ---------------------------------------------------------------------------

/// Per level: `T_l`, `C_l`, `D_l` (depth of every input entry but the last
/// step's) and `E_l` (the last step's).
struct DepthModel {
    len: Vec<u64>,
    chunk: Vec<u64>,
    d: Vec<u64>,
    e: Vec<u64>,
}

impl DepthModel {
    fn new(kind: BlockPlanKind, levels: &[BlockLevel]) -> Self {
        let mut m = DepthModel {
            len: levels.iter().map(|l| l.len as u64).collect(),
            chunk: levels.iter().map(|l| l.chunk as u64).collect(),
            d: vec![0; levels.len()],
            e: vec![0; levels.len()],
        };
        if kind == BlockPlanKind::Tree {
            for l in 0..levels.len() - 1 {
                let nc = m.len[l + 1];
                let r = m.len[l] - (nc - 1) * m.chunk[l];
                // A chunk's aggregate starts from its first step (no
                // combine) and folds the other C − 1 in.
                m.d[l + 1] = m.d[l] + m.chunk[l] - 1;
                m.e[l + 1] = if r == 1 {
                    m.e[l]
                } else {
                    (m.d[l] + r - 1).max(m.e[l] + 1)
                };
            }
        }
        m
    }

    /// `s_l(t)`: depth of the state after step `t` of level `l`.
    fn state(&self, l: usize, t: u64) -> u64 {
        let (tl, cl) = (self.len[l], self.chunk[l]);
        let (c, i) = (t / cl, t % cl);
        let s_in = if c == 0 { 0 } else { self.state(l + 1, c - 1) };
        let inputs = if t + 1 < tl {
            self.d[l] + i + 1
        } else if i == 0 {
            self.e[l] + 1
        } else {
            (self.d[l] + i + 1).max(self.e[l] + 1)
        };
        (s_in + i + 1).max(inputs)
    }

    /// `max_{t < p} s_l(t)` for `p ≥ 1`: depth grows along a chunk, so
    /// full chunks only need their deepest carry-in.
    fn prefix_max(&self, l: usize, p: u64) -> u64 {
        let cl = self.chunk[l];
        let c_last = (p - 1) / cl;
        let mut best = self.state(l, p - 1);
        if c_last >= 1 {
            let s_in = if c_last >= 2 {
                self.prefix_max(l + 1, c_last - 1)
            } else {
                0
            };
            best = best.max(s_in.max(self.d[l]) + cl);
        }
        best
    }

    fn max_depth(&self) -> u64 {
        self.prefix_max(0, self.len[0])
    }
}

// ---------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------

/// The BlockDiagonal kernels' scratch: one buffer that the levels of a plan
/// carve up by offsets, reused across calls (see [`Workspace`]).
pub type BlockDiagonalWorkspace = Workspace<usize>;

// ---------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------

/// Device addresses of one BlockDiagonal scan. Sizes in elements of the
/// storage type: `a`: `B·T·nb·k·k` (`[B,T,nb,k,k]`, row-major blocks); `b`,
/// `h`: `B·T·n` (`[B,T,n]`); `h0`, `h_t`: `B·n`. `h0 = None` means zeros.
pub type BlockDiagonalIo = AffineIo;

/// The memory of one BlockDiagonal scan ([`AffineBuffers`]; sizes as
/// [`BlockDiagonalIo`]).
pub type BlockDiagonalBuffers<'a> = AffineBuffers<'a>;

/// The arguments' sizes and shapes for the checks of [`AffineIo`].
fn affine_sizes(
    s: BlockShape,
) -> AffineSizes<impl Fn() -> String, impl Fn() -> String, impl Fn() -> String> {
    AffineSizes {
        a: (s.a_elements(), move || s.describe_a()),
        steps: (s.elements(), move || s.describe()),
        states: (s.state_elements(), move || s.describe_state()),
    }
}

/// Plans have public fields: a plan that is not what the planner makes for
/// its own request is rejected.
fn check_plan(plan: &BlockPlan) -> Result<()> {
    plan.shape.validate()?;
    let fresh = build_directed(
        plan.request,
        plan.kind,
        plan.dtype,
        plan.shape,
        plan.chunk,
        plan.radix,
        plan.reverse,
    );
    let consistent = match (&fresh, plan.kind) {
        (Ok(f), _) => f == plan,
        (Err(_), _) => false,
    };
    let radix_ok = match plan.kind {
        BlockPlanKind::Tree => plan.radix >= 2 && plan.chunk >= 1 && plan.chunk < plan.shape.len,
        _ => plan.radix == 0 && plan.chunk == plan.shape.len,
    };
    if !consistent || !radix_ok {
        return Err(Error::Plan(format!(
            "the fields of {plan} are not consistent; make plans with plan_block_diagonal"
        )));
    }
    Ok(())
}

impl FamilyPlan for BlockPlan {
    type Io = BlockDiagonalIo;
    type Buffers<'a> = BlockDiagonalBuffers<'a>;
    type Scratch = usize;

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn summary(&self) -> KernelPlanSummary {
        BlockPlan::summary(self)
    }

    fn check(&self) -> Result<()> {
        check_plan(self)
    }

    fn scratch(&self, depth: bool) -> Result<usize> {
        if depth {
            Ok(scratch_layout(self.shape, &self.levels, KernelType::Depth)?.1)
        } else {
            Ok(self.scratch_bytes)
        }
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.shape.elements(), self.shape.state_elements())
    }

    fn io_args(&self, io: &BlockDiagonalIo) -> Vec<IoArg> {
        io.args(&affine_sizes(self.shape), self.dtype.size())
    }

    fn io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &BlockDiagonalBuffers<'_>,
    ) -> Result<BlockDiagonalIo> {
        bufs.check(
            runner,
            ElemType::of_dtype(self.dtype),
            &affine_sizes(self.shape),
        )
    }

    fn depth_io(&self, out: u64, last: u64) -> BlockDiagonalIo {
        AffineIo::depth(out, last)
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &BlockDiagonalWorkspace,
        io: BlockDiagonalIo,
        depth: bool,
    ) -> Result<()> {
        let kt = if depth {
            KernelType::Depth
        } else {
            KernelType::Data(self.dtype)
        };
        let (offsets, _) = scratch_layout(self.shape, &self.levels, kt)?;
        if depth {
            let launches = launches(self.kind, self.shape, &self.levels, kt, self.reverse)?;
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &launches, &offsets, ws.ptr(0), io) }
        } else {
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &self.launches, &offsets, ws.ptr(0), io) }
        }
    }
}

/// Issues `launches` (the plan's, for one instantiation) with scratch at
/// `base + offsets`.
///
/// # Safety
/// The addresses address live memory of `runner` of the sizes the plan's
/// shape implies, and the plan passed `check_plan`.
unsafe fn issue<R: KernelRunner>(
    runner: &R,
    plan: &BlockPlan,
    launches: &[BlockLaunch],
    offsets: &[LevelScratch],
    base: u64,
    io: BlockDiagonalIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let inputs = [Ptr(io.a), Ptr(io.b)];
    let ends = [io.ends.h0.unwrap_or(0), io.h.unwrap_or(0)].map(Ptr);
    let steps = Steps::Unpacked {
        ht: Ptr(io.ends.h_t),
    };
    for l in launches {
        let args = launch_args(plan, l, (offsets, base), inputs, ends, steps);
        // SAFETY: each kernel gets the buffers its launch contract names for
        // this role, sized by the plan's shape (the caller's obligation) and
        // its scratch (reserved in the workspace).
        unsafe { runner.launch(&l.kernel, l.cfg, &args) }?;
    }
    Ok(())
}

/// The arguments of launch `l` of `plan`, on the inputs `[a, b]`,
/// `[h0, h]` and the level scratch at `base + offsets`: for the unpacked
/// kernels (`kernels/block_diagonal.cu`) or, as `steps` says, their packed
/// twins (`kernels/varlen_block.cu`: the level-0 launches also take the
/// sequence starts; the levels above are the unpacked ones without `h0`).
pub(super) fn launch_args(
    plan: &BlockPlan,
    l: &BlockLaunch,
    (offsets, base): (&[LevelScratch], u64),
    [a, b]: [KernelArg; 2],
    [h0, h]: [KernelArg; 2],
    steps: Steps,
) -> Vec<KernelArg> {
    use KernelArg::Ptr;
    let s = plan.shape;
    let (bsz, nb) = (i32_arg(s.batch), i32_arg(s.blocks));
    let at = |off: usize| Ptr(base + off as u64);
    let lv = plan.levels[l.level];
    let (t, c) = (i32_arg(lv.len), i32_arg(lv.chunk));
    // Inputs of this level: the problem's, or the aggregates below.
    let (a_in, b_in) = if l.level == 0 {
        (a, b)
    } else {
        let o = offsets[l.level];
        (at(o.agg_a), at(o.agg_b))
    };
    match (l.role, steps) {
        (BlockLaunchRole::Sequential, Steps::Unpacked { ht }) => {
            vec![a_in, b_in, h, ht, h0, bsz, t, nb]
        }
        // The packed P0 is the packed rescan of one chunk of T steps.
        (BlockLaunchRole::Sequential, Steps::Packed { seg, seqs }) => {
            vec![a_in, b_in, seg, h0, h, Ptr(0), bsz, t, nb, t, seqs]
        }
        (BlockLaunchRole::Reduce, _) => {
            let up = offsets[l.level + 1];
            let (ua, ub) = (at(up.agg_a), at(up.agg_b));
            match steps {
                Steps::Packed { seg, seqs } if l.level == 0 => {
                    vec![a_in, b_in, seg, h0, ua, ub, bsz, t, nb, c, seqs]
                }
                _ => vec![a_in, b_in, ua, ub, bsz, t, nb, c],
            }
        }
        (BlockLaunchRole::Rescan, _) => {
            let carry = if l.level + 1 < plan.levels.len() {
                at(offsets[l.level + 1].states)
            } else {
                Ptr(0)
            };
            let states = at(offsets[l.level].states);
            match (steps, l.level) {
                (Steps::Unpacked { ht }, 0) => vec![a_in, b_in, h, ht, carry, h0, bsz, t, nb, c],
                (Steps::Unpacked { .. }, _) => {
                    vec![a_in, b_in, states, Ptr(0), carry, h0, bsz, t, nb, c]
                }
                (Steps::Packed { seg, seqs }, 0) => {
                    vec![a_in, b_in, seg, h0, h, carry, bsz, t, nb, c, seqs]
                }
                (Steps::Packed { .. }, _) => vec![a_in, b_in, states, carry, bsz, t, nb, c],
            }
        }
    }
}

/// The byte offsets inside the workspace of every level's scratch (index
/// `l ≥ 1`; entry 0 unused) for `plan`'s dtype: the packed kernels
/// ([`super::varlen_block`]) use the same scratch.
pub(super) fn level_offsets(plan: &BlockPlan) -> Result<Vec<LevelScratch>> {
    Ok(scratch_layout(plan.shape, &plan.levels, KernelType::Data(plan.dtype))?.0)
}

// ---------------------------------------------------------------------------
// Host convenience and depth measurement
// ---------------------------------------------------------------------------

fn shape_of<S>(p: &BlockDiagonal<'_, S>) -> BlockShape {
    BlockShape::new(p.batch, p.len, p.blocks, p.block)
}

/// A BlockDiagonal problem's uploaded inputs (`A`, `b`, `h0` if any) with
/// outputs `h` at `out` and `h_T` at `last`.
impl BindInputs<BlockPlan> for (DeviceBuffer, DeviceBuffer, Option<DeviceBuffer>) {
    fn bind<'a>(
        &'a self,
        out: &'a DeviceBuffer,
        last: &'a DeviceBuffer,
    ) -> BlockDiagonalBuffers<'a> {
        let (a, b, h0) = self;
        BlockDiagonalBuffers {
            a: a.into(),
            b: b.into(),
            h: Some(out.into()),
            ends: EndBuffers::new(h0.as_ref().map(Into::into), last.into()),
        }
    }
}

/// Runs a host-side BlockDiagonal problem right to left on `runner`
/// ([`scan_host_planned`](super::scan_host_planned) with
/// [`BlockPlan::reversed`]): `h_t = A_t h_{t+1} + b_t` from `h0`
/// (the state entering `t = T − 1`) down to `t = 0`. Returns
/// `(h, h_T, plan)`, `h_T` the state at `t = 0`.
pub fn scan_block_diagonal_reverse<R, S>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    problem: &BlockDiagonal<'_, S>,
    request: PlanRequest,
) -> Result<(Vec<S>, Vec<S>, BlockPlan)>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    problem.validate()?;
    let plan =
        plan_block_diagonal(shape_of(problem), S::DTYPE, request, runner.sm_count())?.reversed()?;
    super::scan_host_planned(runner, ws, problem, plan)
}

impl<S: Storage + bytemuck::Pod> KernelScan for BlockDiagonal<'_, S> {
    type Elem = S;
    type Plan = BlockPlan;
    /// `A`, `b`, `h0`.
    type Inputs = (DeviceBuffer, DeviceBuffer, Option<DeviceBuffer>);

    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<BlockPlan> {
        self.validate()?;
        plan_block_diagonal(shape_of(self), S::DTYPE, request, sm_count)
    }

    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
        Ok((
            runner.upload(self.a)?,
            runner.upload(self.b)?,
            self.h0.map(|h0| runner.upload(h0)).transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(b: usize, t: usize, nb: usize, k: usize, r: PlanRequest) -> BlockPlan {
        plan_block_diagonal(BlockShape::new(b, t, nb, k), DType::F32, r, 2).unwrap()
    }

    /// The algorithm's depth, simulated level by level on the host (the
    /// kernels' loops with max-plus arithmetic): an independent check of
    /// the closed form.
    fn simulate(p: &BlockPlan) -> Vec<u64> {
        fn run(levels: &[BlockLevel], l: usize, d: &[u64]) -> Vec<u64> {
            let lv = levels[l];
            let nc = lv.chunks();
            let carries = if l + 1 < levels.len() {
                let mut up = Vec::with_capacity(nc);
                for c in 0..nc {
                    let (t0, t1) = (c * lv.chunk, ((c + 1) * lv.chunk).min(lv.len));
                    let mut acc = d[t0];
                    for &x in &d[t0 + 1..t1] {
                        acc = acc.max(x) + 1;
                    }
                    up.push(acc);
                }
                run(levels, l + 1, &up)
            } else {
                vec![]
            };
            let mut out = vec![0; lv.len];
            for c in 0..nc {
                let mut s = if c == 0 { 0 } else { carries[c - 1] };
                for t in c * lv.chunk..((c + 1) * lv.chunk).min(lv.len) {
                    s = s.max(d[t]) + 1;
                    out[t] = s;
                }
            }
            out
        }
        run(&p.levels, 0, &vec![0; p.shape.len])
    }

    #[test]
    fn depth_formula_matches_simulation() {
        let requests = [
            PlanRequest::Sequential,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(2),
            PlanRequest::Chunk(3),
            PlanRequest::Chunk(7),
            PlanRequest::Chunk(16),
            PlanRequest::Chunk(100),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
        ];
        for t in [
            1usize, 2, 3, 4, 5, 7, 8, 9, 17, 31, 33, 64, 100, 255, 257, 1000, 4097,
        ] {
            for &r in &requests {
                let p = plan(1, t, 2, 4, r);
                let sim = simulate(&p);
                for (i, &want) in sim.iter().enumerate() {
                    assert_eq!(p.depth_at(i), want, "t={i} of {p}");
                }
                assert_eq!(p.depth, *sim.iter().max().unwrap(), "{p}");
            }
        }
        // Other radices (Auto's) too.
        for t in [9usize, 64, 65, 300, 1000, 5000] {
            for c in [1usize, 2, 5, 16] {
                let shape = BlockShape::new(1, t, 1, 2);
                let p = build_directed(
                    PlanRequest::Auto,
                    BlockPlanKind::Tree,
                    DType::F32,
                    shape,
                    c,
                    AUTO_RADIX,
                    false,
                )
                .unwrap();
                let sim = simulate(&p);
                assert_eq!(p.depth, *sim.iter().max().unwrap(), "{p}");
                assert_eq!(p.depth_at(t - 1), sim[t - 1], "{p}");
            }
        }
    }

    #[test]
    fn plan_shapes() {
        let p = plan(2, 100, 3, 4, PlanRequest::Sequential);
        assert_eq!(
            (p.kind, p.launch_count(), p.depth),
            (BlockPlanKind::Sequential, 1, 100)
        );
        let p = plan(2, 100, 3, 4, PlanRequest::Chunk(100));
        assert_eq!(
            (p.kind, p.launch_count(), p.depth),
            (BlockPlanKind::SinglePass, 1, 100)
        );
        let p = plan(2, 100, 3, 4, PlanRequest::Chunk(10));
        assert_eq!(p.kind, BlockPlanKind::Tree);
        // 100 -> 10 -> 5 -> 3 -> 2: levels 0..=4, 4 reduces + 5 rescans.
        assert_eq!(p.levels.len(), 5);
        assert_eq!(p.launch_count(), 9);
        assert_eq!(p.launches[0].kernel, "bd4_reduce_f32");
        assert!(p.scratch_bytes > 0);
        let p = plan_block_diagonal(
            BlockShape::new(1, 100, 1, 16),
            DType::Bf16,
            PlanRequest::Chunk(10),
            2,
        )
        .unwrap();
        assert_eq!(p.launches[1].kernel, "bd16_reduce_up_bf16");
        assert_eq!(p.launches.last().unwrap().kernel, "bd16_rescan_bf16");
        // MinDepth is no deeper than any power-of-two chunk.
        for t in [1usize, 5, 64, 1000, 3000] {
            let best = plan(1, t, 1, 2, PlanRequest::MinDepth);
            for k in 0..13 {
                let p = plan(1, t, 1, 2, PlanRequest::Chunk(1 << k));
                assert!(best.depth <= p.depth, "{best} vs {p}");
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let bad = |s: BlockShape| plan_block_diagonal(s, DType::F32, PlanRequest::Auto, 2);
        assert!(matches!(
            bad(BlockShape::new(1, 5, 1, 5)),
            Err(Error::Size {
                arg: "block",
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            bad(BlockShape::new(1, 0, 1, 4)),
            Err(Error::Size { arg: "len", .. })
        ));
        assert!(matches!(
            bad(BlockShape::new(0, 5, 1, 4)),
            Err(Error::Size { arg: "batch", .. })
        ));
        assert!(matches!(
            bad(BlockShape::new(1, 5, 0, 4)),
            Err(Error::Size { arg: "blocks", .. })
        ));
        assert!(matches!(
            plan_block_diagonal(
                BlockShape::new(1, 5, 1, 4),
                DType::F32,
                PlanRequest::Chunk(0),
                2
            ),
            Err(Error::Plan(_))
        ));
    }
}
