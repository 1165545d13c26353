//! The Diagonal family on the kernels of `kernels/diagonal.cu`: planner,
//! scratch workspace and launch sequences, for any [`KernelRunner`].
//!
//! This module implements the *launch contract* written at the top of
//! `kernels/diagonal.cu` (kernel names, argument lists, launch shapes, the
//! plans P0–P4, scratch sizes and the measured-depth formula). Nothing here
//! knows which runner executes the launches: the same sequence runs on the
//! GPU (`CudaBackend`, feature `cuda`) and in the SIMT
//! emulator ([`EmuBackend`](crate::backend::emu::EmuBackend)).
//!
//! # Layers
//!
//! - [`plan_diagonal`] resolves a [`PlanRequest`] for a shape on a device
//!   with a given SM count into a [`GpuPlan`]: plan kind (P0–P4), chunk `C`,
//!   chunk count `NC`, block sizes, the exact launches, scratch bytes and
//!   the depth the `_depth` kernels will measure. Pure, cheap, no device.
//! - [`GpuPlan`] implements [`FamilyPlan`], so the shared entry points of
//!   [`face`](super::face) run it: [`launch_scan_buffers`](super::launch_scan_buffers)
//!   on typed memory ([`DiagonalBuffers`]), `unsafe`
//!   [`launch_scan`](super::launch_scan) on raw addresses ([`DiagonalIo`]),
//!   [`measure_depth`](super::measure_depth) on the `_depth` instantiation,
//!   and [`scan_host`](super::scan_host) for host slices (validate, upload,
//!   poison the outputs, run, download). No allocation once the
//!   [`DiagonalWorkspace`] is warm.
//!
//! Every shape, pointer and plan problem is a typed [`Error`] returned
//! before the first launch.
//!
//! # Planner rules
//!
//! Let `lanes = B·D`. With `D = 1` the `[B,T,1]` and `[B,1,T]` layouts are
//! the same bytes and the `[B,D,T]` kernels are used for both (the
//! contract's recommendation); [`GpuPlan::kernel_layout`] says which.
//!
//! - `Sequential` → P0 (`diag_<L>_sequential`, depth `T`).
//! - `Chunk(C)` → P1 when `NC = ⌈T/C⌉ = 1`, P2 when `2 ≤ NC ≤ 2048`, P3 when
//!   `NC ≤ 4,194,304`; a smaller `C` is an error (no silent change).
//! - `MinDepth` → the chunk (among `T`, the powers of two up to 2¹⁶ and the
//!   smallest legal chunk) whose plan has the least formula depth, ties to
//!   the longer chunk (less work and scratch). In practice `C = 1`–`4` for
//!   `[B,T,D]` (serial chunks: depth `≈ 2C + 2 log2 NC`; larger only where
//!   `NC` would pass 4,194,304) and a chunk of at most one tile for
//!   `[B,D,T]` (`C = 256`–`1024`, `NT = 32`–`128`), whose chunks are scanned
//!   in parallel (depth `≈ 20 + 2 log2 NC`); P1 when `T` is so short that
//!   one pass is shallowest (`[B,D,T]`: up to `T ≈ 10⁴`, as the single pass
//!   is itself a block scan whose depth grows by one per 2048-step tile),
//!   P0 when it is shallower still (`T ≤ 12` on the `[B,D,T]` kernels).
//!   Min-depth plans can need a lot of scratch (`12 B × B·D·NC` for f32:
//!   0.8 GB at `B·D = 128`, `T = 2²⁰`); that is the price of the request.
//! - `LookBack` → P4: one pass with a decoupled look-back, the chunk being
//!   what one block holds in registers (`[B,D,T]`: up to 4096 steps of one
//!   lane; `[B,T,D]`: up to 128 steps of 32 channels). It reads every input
//!   once (12 B per f32 element, against 20 for P2/P3) but its depth grows
//!   by one per chunk, and results are not bitwise reproducible run to run.
//! - `Auto`: P1 when the lanes alone fill the GPU (below); otherwise P4
//!   (the three-pass chunk rules below remain for a look-back that does not
//!   fit one launch).
//!   - `[B,T,D]` kernels (one thread per lane and chunk): P1 when
//!     `lanes ≥ sm_count × 2048` (resident threads fill the GPU); otherwise
//!     `NC ≈ sm_count × 2048 / lanes` chunks (at most 2048, i.e. P2,
//!     when the target is below 4096): `C = ⌈T / NC⌉`, at least
//!     [`BTD_AUTO_MIN_CHUNK`].
//!   - `[B,D,T]` kernels (one block per lane and chunk): P1 when
//!     `lanes ≥ BDT_BLOCKS_PER_SM × sm_count`; otherwise
//!     `NC ≥ BDT_BLOCKS_PER_SM × sm_count / lanes`: `C = ⌈T / NC⌉`, from
//!     4096 on rounded down to a multiple of 2048 (whole 256-thread tiles),
//!     below that at least [`BDT_AUTO_MIN_CHUNK`] and rounded up to a
//!     multiple of 256 (whole 32-thread tiles).
//!   - A chunk that covers `T` gives P1. Scratch stays about
//!     `12 B × sm_count × 2048` at most (f32, `[B,T,D]`).
//! - Block sizes follow the contract: `NB = 64` when the chunk grid has
//!   fewer than `sm_count × 2048` threads, else 128; `NT = clamp(32·⌈min(C,T)
//!   / 256⌉, 32, 256)`; `NS = clamp(next_pow2(⌈n/2⌉), 32, 1024)`; for P3 the
//!   tile `TL` is the power of two nearest above `√NC` (64 ≤ TL ≤ 2048, and
//!   large enough that `⌈NC/TL⌉ ≤ 2048`), `NS1 = TL/2`.

use std::fmt;

use super::common::{
    bit_length, ceil_log2, check_int, i32_arg, launch_config, max_prefix_depth, name_table,
    plan_kinds, prefix_depth, KernelType, NameTable,
};
use super::device::ElemType;
use super::face::{
    AffineBuffers, AffineIo, AffineSizes, BindInputs, EndBuffers, FamilyPlan, IoArg, KernelLaunch,
    ScratchLayout, Workspace,
};
use super::packed::Steps;
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::diagonal::Diagonal;
use crate::family::Layout;
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// Steps per thread (`K`) of the `[B,D,T]` chunk kernels; a tile is `NT·K` steps.
pub const STEPS_PER_THREAD: usize = 8;
/// Most aggregates one Blelloch block scans (`2 × 1024` threads); also the
/// most chunks of a one-level scan (P2) and the most tiles of P3.
pub const MAX_SCAN_TILE: usize = 2048;
/// Most chunks per lane any plan supports (P3: `2048 × 2048`).
pub const MAX_CHUNKS: usize = MAX_SCAN_TILE * MAX_SCAN_TILE;
/// Resident threads per SM the `Auto` planner aims to fill with `[B,T,D]` threads.
pub const BTD_THREADS_PER_SM: usize = 2048;
/// Blocks per SM the `Auto` planner aims for with the `[B,D,T]` kernels.
pub const BDT_BLOCKS_PER_SM: usize = 4;
/// Shortest chunk `Auto` picks for the `[B,T,D]` kernels (below it the
/// per-chunk scratch traffic exceeds ~5 % of the data traffic).
pub const BTD_AUTO_MIN_CHUNK: usize = 64;
/// Shortest chunk `Auto` picks for the `[B,D,T]` kernels (two tiles of 32 threads).
pub const BDT_AUTO_MIN_CHUNK: usize = 512;
/// Threads per block of `diag_scan_apply`.
const APPLY_BLOCK: u32 = 256;
/// Steps per thread (`[B,D,T]`) or per warp and channel (`[B,T,D]`) of the
/// look-back kernels (P4), which hold their whole chunk in registers.
pub const LOOKBACK_STEPS: usize = 16;
/// Steps per thread of the f16/bf16 look-back kernels: twice
/// [`LOOKBACK_STEPS`], so that a block moves the same bytes per chunk as an
/// f32 block (the raw 16-bit inputs stay packed in registers).
pub const LOOKBACK_STEPS_16: usize = 32;

/// Look-back steps per thread for storage `dtype`.
pub fn lookback_steps(dtype: DType) -> usize {
    match dtype {
        DType::F16 | DType::Bf16 => LOOKBACK_STEPS_16,
        DType::F32 | DType::F64 => LOOKBACK_STEPS,
    }
}
/// The depth counters of the 16-bit look-back geometry (32 steps per thread).
const LB_DEPTH32: [&str; 4] = [
    "diag_btd_lookback_depth32",
    "diag_bdt_lookback_depth32",
    "diag_btd_lookback_rev_depth32",
    "diag_bdt_lookback_rev_depth32",
];
/// Most threads of a `[B,D,T]` look-back block: chunks of `256·16 = 4096` steps.
pub const LOOKBACK_BDT_BLOCK: usize = 256;
/// Most warps of a `[B,T,D]` look-back block: chunks of `8·16 = 128` steps
/// for 32 channels.
pub const LOOKBACK_BTD_WARPS: usize = 8;
/// Threads per block of `diag_lb_clear`.
const CLEAR_BLOCK: u32 = 256;
/// The status-clearing kernel of P4 (one instantiation for every dtype).
const LB_CLEAR: &str = "diag_lb_clear";

// ---------------------------------------------------------------------------
// Shapes and kernel names
// ---------------------------------------------------------------------------

/// `(B, T, D)` of a Diagonal problem: batch, length, channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiagShape {
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `D`.
    pub dim: usize,
}

impl DiagShape {
    /// `(B, T, D)`.
    pub fn new(batch: usize, len: usize, dim: usize) -> Self {
        DiagShape { batch, len, dim }
    }

    /// `B·D`, the number of independent sequences.
    pub fn lanes(&self) -> usize {
        self.batch * self.dim
    }

    /// `B·T·D`, the number of elements of `a`, `b` and `h`.
    pub fn elements(&self) -> usize {
        self.batch * self.len * self.dim
    }

    /// The shape of `a`, `b`, `h` in `layout`, in words.
    pub fn describe(&self, layout: Layout) -> String {
        let (b, t, d) = (self.batch, self.len, self.dim);
        match layout {
            Layout::Btd => format!("[B,T,D] = [{b},{t},{d}]"),
            Layout::Bdt => format!("[B,D,T] = [{b},{d},{t}]"),
        }
    }

    fn describe_bd(&self) -> String {
        format!("[B,D] = [{},{}]", self.batch, self.dim)
    }

    /// Checks `B, T, D` are C `int`s ≥ 1 and that byte sizes fit a `usize`.
    fn validate(&self) -> Result<()> {
        check_int("batch", self.batch)?;
        check_int("len", self.len)?;
        check_int("dim", self.dim)?;
        self.batch
            .checked_mul(self.len)
            .and_then(|x| x.checked_mul(self.dim))
            .and_then(|x| x.checked_mul(16))
            .ok_or_else(|| {
                Error::size(
                    "len",
                    self.len,
                    format!(
                        "B·T·D = {}·{}·{} elements that fit in memory",
                        self.batch, self.len, self.dim
                    ),
                )
            })?;
        Ok(())
    }
}

/// The `extern "C"` kernels of one instantiation (one dtype suffix).
struct KernelNames {
    btd_reduce: &'static str,
    btd_rescan: &'static str,
    btd_sequential: &'static str,
    bdt_reduce: &'static str,
    bdt_rescan: &'static str,
    bdt_sequential: &'static str,
    scan: &'static str,
    scan_tiles: &'static str,
    scan_apply: &'static str,
    btd_lookback: &'static str,
    bdt_lookback: &'static str,
}

macro_rules! kernel_names {
    ($sfx:literal) => {
        kernel_names!($sfx, "")
    };
    // `$dir` = "rev_": the reverse kernels (the contract's REVERSE section);
    // the phase-2 kernels are the same for both directions.
    ($sfx:literal, $dir:literal) => {
        KernelNames {
            btd_reduce: concat!("diag_btd_reduce_", $dir, $sfx),
            btd_rescan: concat!("diag_btd_rescan_", $dir, $sfx),
            btd_sequential: concat!("diag_btd_sequential_", $dir, $sfx),
            bdt_reduce: concat!("diag_bdt_reduce_", $dir, $sfx),
            bdt_rescan: concat!("diag_bdt_rescan_", $dir, $sfx),
            bdt_sequential: concat!("diag_bdt_sequential_", $dir, $sfx),
            scan: concat!("diag_scan_", $sfx),
            scan_tiles: concat!("diag_scan_tiles_", $sfx),
            scan_apply: concat!("diag_scan_apply_", $sfx),
            btd_lookback: concat!("diag_btd_lookback_", $dir, $sfx),
            bdt_lookback: concat!("diag_bdt_lookback_", $dir, $sfx),
        }
    };
}

static NAMES: NameTable<KernelNames> = name_table!(kernel_names);

/// Bytes of one aggregate `Elem`: two compute values (`a`, `b`), or one
/// counter for the depth kernels.
fn elem_bytes(kt: KernelType) -> usize {
    match kt {
        KernelType::Depth => 4,
        KernelType::Data(_) => 2 * kt.value_bytes(),
    }
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

plan_kinds! {
    /// Which launch sequence of the contract a plan uses.
    pub enum GpuPlanKind {
        /// P0: `diag_<L>_sequential`, one thread per lane over all `T` steps.
        Sequential = ("P0", "sequential"),
        /// P1: one `diag_<L>_rescan` with `C = T` and no carries (one chunk).
        SinglePass = ("P1", "single-pass"),
        /// P2: reduce, one-level Blelloch scan of `2 ≤ NC ≤ 2048` chunk
        /// aggregates, rescan.
        OneLevel = ("P2", "one-level"),
        /// P3: reduce, tile scans, top-level scan of the tile totals, apply,
        /// rescan (`NC ≤ 4,194,304`).
        TwoLevel = ("P3", "two-level"),
        /// P4: one pass with a decoupled look-back between chunks
        /// (`diag_lb_clear`, then `diag_<L>_lookback`): every input is read
        /// once (12 B per f32 element), but the carries form a chain, so the
        /// depth grows by one per chunk.
        LookBack = ("P4", "look-back"),
    }
}

/// What one launch of a plan does (it decides the argument list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaunchRole {
    /// P0: `diag_<L>_sequential(a, b, h, hT, h0, B, T, D)`.
    Sequential,
    /// Phase 1: `diag_<L>_reduce(a, b, agg, B, T, D, C)`.
    Reduce,
    /// P2 phase 2: `diag_scan(agg, carry, h0, B, D, NC)`.
    ScanChunks,
    /// P3 phase 2a: `diag_scan_tiles(agg, tile_agg, B, D, NC)`.
    ScanTiles,
    /// P3 phase 2b: `diag_scan(tile_agg, tile_carry, h0, B, D, NTL)`.
    ScanTileCarries,
    /// P3 phase 2c: `diag_scan_apply(agg, tile_carry, carry, B, D, NC, TL)`.
    ScanApply,
    /// Phase 3 (and P1): `diag_<L>_rescan(a, b, h, hT, carry, h0, B, T, D, C)`.
    Rescan,
    /// P4: `diag_lb_clear(status, words)` zeroes the status words and the ticket.
    ClearStatus,
    /// P4: `diag_<L>_lookback(a, b, h, hT, h0, status, agg, carry, B, T, D, C)`.
    LookBack,
}

/// One kernel launch of a plan.
pub type Launch = KernelLaunch<LaunchRole>;

/// Scratch a plan needs, in bytes per buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScratchSizes {
    /// Chunk aggregates `Elem[B·D·NC]` (P2, P3).
    pub agg: usize,
    /// Chunk carries `State[B·D·NC]` (P2, P3).
    pub carry: usize,
    /// Tile totals `Elem[B·D·NTL]` (P3).
    pub tile_agg: usize,
    /// Tile carries `State[B·D·NTL]` (P3).
    pub tile_carry: usize,
    /// Look-back status words and the ticket counter, `u32[chains·NC + 1]`
    /// (P4, which keeps its aggregates in `agg` and its inclusive prefixes
    /// in `carry`, `32` channels per chain on the `[B,T,D]` kernels).
    pub status: usize,
}

impl ScratchSizes {
    /// Sum of the buffers.
    pub fn total(&self) -> usize {
        self.agg + self.carry + self.tile_agg + self.tile_carry + self.status
    }
}

impl ScratchLayout for ScratchSizes {
    const SLOTS: usize = 5;
    fn slot_bytes(&self, slot: usize) -> usize {
        [
            self.agg,
            self.carry,
            self.tile_agg,
            self.tile_carry,
            self.status,
        ][slot]
    }
    fn from_slots(bytes: impl Fn(usize) -> usize) -> Self {
        ScratchSizes {
            agg: bytes(0),
            carry: bytes(1),
            tile_agg: bytes(2),
            tile_carry: bytes(3),
            status: bytes(4),
        }
    }
}

/// A resolved GPU plan for the Diagonal kernels: everything that will be
/// launched, and what it costs, before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuPlan {
    /// What was asked for.
    pub request: PlanRequest,
    /// P0–P4.
    pub kind: GpuPlanKind,
    /// Storage type of `a`, `b`, `h0`, `h`, `hT` (names the kernels).
    pub dtype: DType,
    /// Layout of `a`, `b`, `h`.
    pub layout: Layout,
    /// Layout of the kernels launched: `layout`, except `[B,D,T]` kernels
    /// for `D = 1` (the same bytes).
    pub kernel_layout: Layout,
    /// `(B, T, D)`.
    pub shape: DiagShape,
    /// Steps per chunk `C` (`T` for P0 and P1).
    pub chunk: usize,
    /// Chunks per lane `NC = ⌈T/C⌉`.
    pub chunks: usize,
    /// Block of the chunk kernels: `NB` (`[B,T,D]` and sequential kernels)
    /// or `NT` (`[B,D,T]` reduce/rescan).
    pub chunk_block: u32,
    /// Block of `diag_scan`: `NS` (P2) or `NS2` (P3); 0 when unused.
    pub scan_block: u32,
    /// Block `NS1` of `diag_scan_tiles` (P3); 0 when unused.
    pub tile_block: u32,
    /// Aggregates per first-level tile `TL = 2·NS1` (P3); 0 when unused.
    pub tile: usize,
    /// Tiles per lane `NTL = ⌈NC/TL⌉` (P3); 0 when unused.
    pub tiles: usize,
    /// The launches, in order, for [`GpuPlan::dtype`].
    pub launches: Vec<Launch>,
    /// Scratch buffers for [`GpuPlan::dtype`].
    pub scratch: ScratchSizes,
    /// The depth the `_depth` instantiation measures: the maximum over all
    /// outputs of the contract's per-element formula ([`GpuPlan::depth_at`]).
    pub depth: u64,
    /// P4 only, a test hook: chunks publish their inclusive prefix only when
    /// their index is a multiple of this (`1`, the planner's value, is every
    /// chunk and the fast setting). Larger values force successors through
    /// the look-back's aggregate path, which otherwise only timing decides;
    /// results stay exact. Must be ≥ 1.
    pub lookback_prefix_every: u32,
    /// Right to left ([`GpuPlan::reversed`]): `h_t = a_t·h_{t+1} + b_t`
    /// from `h0` at `t = T − 1` down to `t = 0`, `h_T` = the state at
    /// `t = 0`. Same launches (the `_rev_` kernels), scratch and depth as
    /// the forward plan, with step `t` at the forward position `T − 1 − t`.
    pub reverse: bool,
}

impl GpuPlan {
    /// Resolves `request`; the same as [`plan_diagonal`].
    pub fn new(
        shape: DiagShape,
        layout: Layout,
        dtype: DType,
        request: PlanRequest,
        sm_count: usize,
    ) -> Result<GpuPlan> {
        plan_diagonal(shape, layout, dtype, request, sm_count)
    }

    /// Total scratch bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.total()
    }

    /// Number of launches.
    pub fn launch_count(&self) -> usize {
        self.launches.len()
    }

    /// The measured depth of output step `t` (0-based, `t < T`) of any lane,
    /// by the contract's formula; `hT` has the depth of the last step
    /// computed (`t = T − 1`, or `t = 0` for a reverse plan). A reverse
    /// plan's step `t` is the forward plan's step `T − 1 − t`.
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
    pub fn reversed(self) -> Result<GpuPlan> {
        let mut plan = GpuPlan {
            reverse: !self.reverse,
            ..self
        };
        plan.launches = plan.launches_for(KernelType::Data(plan.dtype))?;
        Ok(plan)
    }

    /// The launches of this plan for another instantiation (the depth counter).
    fn launches_for(&self, kt: KernelType) -> Result<Vec<Launch>> {
        self.geometry().launches(kt)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            kind: self.kind,
            kernel_layout: self.kernel_layout,
            shape: self.shape,
            chunk: self.chunk,
            chunks: self.chunks,
            chunk_block: self.chunk_block,
            scan_block: self.scan_block,
            tile_block: self.tile_block,
            tile: self.tile,
            tiles: self.tiles,
            reverse: self.reverse,
        }
    }
}

impl fmt::Display for GpuPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} ({}) {} {} on {} kernels: C={} NC={}",
            self.kind,
            if self.reverse { " reverse" } else { "" },
            self.request,
            self.dtype,
            self.shape.describe(self.layout),
            match self.kernel_layout {
                Layout::Btd => "btd",
                Layout::Bdt => "bdt",
            },
            self.chunk,
            self.chunks
        )?;
        if self.tile > 0 {
            write!(f, " TL={} NTL={}", self.tile, self.tiles)?;
        }
        write!(
            f,
            ", {} launch(es), scratch {} B, depth {}",
            self.launches.len(),
            self.scratch_bytes(),
            self.depth
        )
    }
}

/// The dtype-independent part of a plan.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    kind: GpuPlanKind,
    kernel_layout: Layout,
    shape: DiagShape,
    chunk: usize,
    chunks: usize,
    chunk_block: u32,
    scan_block: u32,
    tile_block: u32,
    tile: usize,
    tiles: usize,
    /// The `_rev_` kernels (only the names differ).
    reverse: bool,
}

/// Resolves `request` for a Diagonal problem of `shape` in `layout`, stored
/// as `dtype`, on a device with `sm_count` SMs (see the module docs for the
/// rules). Errors: sizes that are not C `int`s ≥ 1, `Chunk(0)`, a chunk too
/// short for the two-level scan, launch shapes outside CUDA's limits.
pub fn plan_diagonal(
    shape: DiagShape,
    layout: Layout,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<GpuPlan> {
    plan_directed(shape, layout, dtype, request, sm_count, false)
}

/// [`plan_diagonal`] for `[B,T,D]` data on the `[B,T,D]` kernels even for
/// `D = 1` (the packed-sequence kernels exist in that layout only).
pub(crate) fn plan_diagonal_btd_kernels(
    shape: DiagShape,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<GpuPlan> {
    plan_directed(shape, Layout::Btd, dtype, request, sm_count, true)
}

fn plan_directed(
    shape: DiagShape,
    layout: Layout,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
    btd_kernels: bool,
) -> Result<GpuPlan> {
    shape.validate()?;
    let kernel_layout = if shape.dim == 1 && !btd_kernels {
        Layout::Bdt
    } else {
        layout
    };
    let sm = sm_count.max(1);
    let t = shape.len;
    let geometry = match request {
        PlanRequest::Sequential => Geometry::sequential(shape, kernel_layout, sm)?,
        PlanRequest::Chunk(0) => return Err(Error::Plan("chunk=0: expected C ≥ 1".into())),
        PlanRequest::Chunk(c) => Geometry::chunked(shape, kernel_layout, c, sm)?,
        PlanRequest::Auto => match auto_chunk(shape, kernel_layout, sm) {
            // Where the lanes alone do not fill the GPU: the look-back (12 B per f32
            // element against P2/P3's 20; its window keeps chains of any count
            // moving), unless it does not fit one launch.
            // PARASCAN_NO_LOOKBACK (super::lookback_switch): the three-pass plan.
            Some(c) => match Geometry::lookback(shape, kernel_layout, lookback_steps(dtype)) {
                Ok(g) if super::lookback_switch::auto_lookback_allowed() => g,
                _ => Geometry::chunked(shape, kernel_layout, c, sm)?,
            },
            None => Geometry::chunked(shape, kernel_layout, t, sm)?,
        },
        PlanRequest::MinDepth => min_depth_geometry(shape, kernel_layout, sm)?,
        PlanRequest::LookBack => Geometry::lookback(shape, kernel_layout, lookback_steps(dtype))?,
    };
    let kt = KernelType::Data(dtype);
    Ok(GpuPlan {
        request,
        kind: geometry.kind,
        dtype,
        layout,
        kernel_layout,
        shape,
        chunk: geometry.chunk,
        chunks: geometry.chunks,
        chunk_block: geometry.chunk_block,
        scan_block: geometry.scan_block,
        tile_block: geometry.tile_block,
        tile: geometry.tile,
        tiles: geometry.tiles,
        launches: geometry.launches(kt)?,
        scratch: geometry.scratch(kt)?,
        depth: geometry.depth(),
        lookback_prefix_every: 1,
        reverse: false,
    })
}

/// The `Auto` chunk, or `None` for the single pass.
fn auto_chunk(shape: DiagShape, kernel_layout: Layout, sm: usize) -> Option<usize> {
    let lanes = shape.lanes();
    let t = shape.len;
    let c = match kernel_layout {
        Layout::Btd => {
            let target = sm.saturating_mul(BTD_THREADS_PER_SM);
            if lanes >= target {
                return None;
            }
            let mut want = target.div_ceil(lanes);
            // Up to twice the one-level limit, 2048 chunks are close enough
            // to the target and save P3's two extra launches.
            if want <= 2 * MAX_SCAN_TILE {
                want = want.min(MAX_SCAN_TILE);
            }
            t.div_ceil(want)
                .max(BTD_AUTO_MIN_CHUNK)
                .max(t.div_ceil(MAX_CHUNKS))
        }
        Layout::Bdt => {
            let target = sm.saturating_mul(BDT_BLOCKS_PER_SM);
            if lanes >= target {
                return None;
            }
            let want = target.div_ceil(lanes);
            let c = t.div_ceil(want);
            let c = if c >= 4096 {
                c / 2048 * 2048
            } else {
                c.max(BDT_AUTO_MIN_CHUNK).next_multiple_of(256)
            };
            c.max(t.div_ceil(MAX_CHUNKS))
        }
    };
    (c < t).then_some(c)
}

/// The least-depth plan among a few candidate chunks (module docs).
fn min_depth_geometry(shape: DiagShape, kernel_layout: Layout, sm: usize) -> Result<Geometry> {
    let t = shape.len;
    let c_min = t.div_ceil(MAX_CHUNKS).max(1);
    let mut candidates = vec![t, c_min];
    candidates.extend(
        (0..=16)
            .map(|k| 1usize << k)
            .filter(|&c| c >= c_min && c < t),
    );
    let mut best: Option<Geometry> = None;
    let mut first_err = None;
    for c in candidates {
        match Geometry::chunked(shape, kernel_layout, c, sm) {
            Ok(g) => {
                let better = match &best {
                    None => true,
                    Some(b) => {
                        let (dg, db) = (g.depth(), b.depth());
                        dg < db || (dg == db && g.chunk > b.chunk)
                    }
                };
                if better {
                    best = Some(g);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // The sequential kernel when it is strictly shallower (a very short `T`
    // on the `[B,D,T]` kernels, whose single pass has a fixed overhead).
    if let Some(b) = &best {
        let seq = Geometry::sequential(shape, kernel_layout, sm)?;
        if seq.depth() < b.depth() {
            best = Some(seq);
        }
    }
    match (best, first_err) {
        (Some(g), _) => Ok(g),
        (None, Some(e)) => Err(e),
        (None, None) => Err(Error::Plan("min-depth: no candidate chunk".into())),
    }
}

/// `NB` for a grid of `threads` one-thread-per-item threads.
fn thread_block(threads: usize, sm: usize) -> u32 {
    if threads < sm.saturating_mul(BTD_THREADS_PER_SM) {
        64
    } else {
        128
    }
}

/// `NT` of the `[B,D,T]` chunk kernels for chunks of `c` steps.
fn bdt_block(c: usize) -> u32 {
    let per_warp = 32 * STEPS_PER_THREAD;
    (32 * c.div_ceil(per_warp)).clamp(32, 256) as u32
}

/// `NS` of `diag_scan` for `n` aggregates.
fn scan_block(n: usize) -> u32 {
    n.div_ceil(2).next_power_of_two().clamp(32, 1024) as u32
}

/// `TL` of P3 for `nc` chunks.
fn p3_tile(nc: usize) -> usize {
    let root = (nc as f64).sqrt().ceil() as usize;
    let mut tl = root.next_power_of_two().clamp(64, MAX_SCAN_TILE);
    while nc.div_ceil(tl) > MAX_SCAN_TILE && tl < MAX_SCAN_TILE {
        tl *= 2;
    }
    tl
}

impl Geometry {
    fn sequential(shape: DiagShape, kernel_layout: Layout, sm: usize) -> Result<Geometry> {
        Ok(Geometry {
            kind: GpuPlanKind::Sequential,
            kernel_layout,
            shape,
            chunk: shape.len,
            chunks: 1,
            chunk_block: thread_block(shape.lanes(), sm),
            scan_block: 0,
            tile_block: 0,
            tile: 0,
            tiles: 0,
            reverse: false,
        })
    }

    /// The look-back plan P4: the chunk is what one block holds in registers
    /// (`NT·K` steps on `[B,D,T]`, `NT/32·K` on `[B,T,D]`, `K` =
    /// [`lookback_steps`]), the block as large as `T` needs, up to 256 threads.
    fn lookback(shape: DiagShape, kernel_layout: Layout, k: usize) -> Result<Geometry> {
        let t = shape.len;
        let (chunk, block) = match kernel_layout {
            Layout::Bdt => {
                let nt = (32 * t.div_ceil(32 * k)).clamp(32, LOOKBACK_BDT_BLOCK);
                (nt * k, nt)
            }
            Layout::Btd => {
                let w = t
                    .div_ceil(k)
                    .next_power_of_two()
                    .clamp(1, LOOKBACK_BTD_WARPS);
                (w * k, 32 * w)
            }
        };
        let g = Geometry {
            kind: GpuPlanKind::LookBack,
            kernel_layout,
            shape,
            chunk,
            chunks: t.div_ceil(chunk),
            chunk_block: block as u32,
            scan_block: 0,
            tile_block: 0,
            tile: 0,
            tiles: 0,
            reverse: false,
        };
        g.lookback_words()?;
        g.launches(KernelType::Depth)?;
        Ok(g)
    }

    /// Look-back steps per thread (`K`, 16 or 32), from the chunk and block.
    fn lookback_steps(&self) -> usize {
        let threads = match self.kernel_layout {
            Layout::Bdt => self.chunk_block as usize,
            Layout::Btd => self.chunk_block as usize / 32,
        };
        self.chunk / threads.max(1)
    }

    /// Look-back chains: lanes (`[B,D,T]`) or batch rows × 32-channel groups (`[B,T,D]`).
    fn lookback_chains(&self) -> usize {
        match self.kernel_layout {
            Layout::Bdt => self.lanes(),
            Layout::Btd => self.shape.batch * self.shape.dim.div_ceil(32),
        }
    }

    /// Channels per look-back chain (payload slots per status word).
    fn lookback_width(&self) -> usize {
        match self.kernel_layout {
            Layout::Bdt => 1,
            Layout::Btd => 32,
        }
    }

    /// Status words plus the ticket counter, `chains·NC + 1` (a C `int`).
    fn lookback_words(&self) -> Result<usize> {
        self.lookback_chains()
            .checked_mul(self.chunks)
            .and_then(|w| w.checked_add(1))
            .filter(|&w| w <= i32::MAX as usize)
            .ok_or_else(|| {
                Error::Plan(format!(
                    "look-back: {} chains × {} chunks of {} steps exceed one launch's 2^31 − 1 \
                     blocks; use chunk=C",
                    self.lookback_chains(),
                    self.chunks,
                    self.chunk
                ))
            })
    }

    /// Chunks of `c ≥ 1` steps: P1, P2 or P3 by the chunk count.
    fn chunked(shape: DiagShape, kernel_layout: Layout, c: usize, sm: usize) -> Result<Geometry> {
        let t = shape.len;
        let c = c.clamp(1, t);
        let nc = t.div_ceil(c);
        if nc > MAX_CHUNKS {
            return Err(Error::Plan(format!(
                "chunk={c} gives {nc} chunks per lane for T = {t}; the two-level scan holds at most \
                 {MAX_CHUNKS}: use chunk ≥ {}",
                t.div_ceil(MAX_CHUNKS)
            )));
        }
        let (kind, chunk) = match nc {
            1 => (GpuPlanKind::SinglePass, t),
            2..=MAX_SCAN_TILE => (GpuPlanKind::OneLevel, c),
            _ => (GpuPlanKind::TwoLevel, c),
        };
        let chunk_block = match kernel_layout {
            Layout::Btd => thread_block(shape.lanes().saturating_mul(nc), sm),
            Layout::Bdt => bdt_block(chunk.min(t)),
        };
        let mut g = Geometry {
            kind,
            kernel_layout,
            shape,
            chunk,
            chunks: nc,
            chunk_block,
            scan_block: 0,
            tile_block: 0,
            tile: 0,
            tiles: 0,
            reverse: false,
        };
        match kind {
            GpuPlanKind::OneLevel => g.scan_block = scan_block(nc),
            GpuPlanKind::TwoLevel => {
                g.tile = p3_tile(nc);
                g.tiles = nc.div_ceil(g.tile);
                g.tile_block = (g.tile / 2) as u32;
                g.scan_block = scan_block(g.tiles);
            }
            _ => {}
        }
        // Reject launch shapes outside CUDA's limits here, for every request.
        g.launches(KernelType::Depth)?;
        Ok(g)
    }

    fn lanes(&self) -> usize {
        self.shape.lanes()
    }

    /// The contract's limits on chunking and block sizes.
    fn check_contract(&self) -> std::result::Result<(), String> {
        let t = self.shape.len;
        let pow2_in = |x: u32, lo: u32, hi: u32| x.is_power_of_two() && (lo..=hi).contains(&x);
        if self.kind == GpuPlanKind::LookBack {
            let nb = self.chunk_block as usize;
            let k = self.lookback_steps();
            let c = match self.kernel_layout {
                Layout::Bdt => nb * k,
                Layout::Btd => nb / 32 * k,
            };
            let ok = nb % 32 == 0
                && (k == LOOKBACK_STEPS || k == LOOKBACK_STEPS_16)
                && (32..=256).contains(&nb)
                && self.chunk == c
                && self.chunks == t.div_ceil(c)
                && self.scan_block == 0
                && self.tile_block == 0
                && self.tile == 0
                && self.tiles == 0
                && self.lookback_words().is_ok();
            return if ok {
                Ok(())
            } else {
                Err(format!(
                    "look-back block {nb} with chunk {} / {} chunks outside the contract",
                    self.chunk, self.chunks
                ))
            };
        }
        if self.chunk == 0 || self.chunk > t || self.chunks != t.div_ceil(self.chunk) {
            return Err(format!(
                "chunk {} / {} chunks do not split T = {t}",
                self.chunk, self.chunks
            ));
        }
        let nc_ok = match self.kind {
            GpuPlanKind::Sequential | GpuPlanKind::SinglePass => self.chunk == t,
            GpuPlanKind::OneLevel => (2..=MAX_SCAN_TILE).contains(&self.chunks),
            GpuPlanKind::TwoLevel => self.chunks > MAX_SCAN_TILE && self.chunks <= MAX_CHUNKS,
            GpuPlanKind::LookBack => true, // checked above
        };
        if !nc_ok {
            return Err(format!(
                "{} chunks do not fit plan {}",
                self.chunks, self.kind
            ));
        }
        let nb = self.chunk_block;
        let bdt_chunks = self.kernel_layout == Layout::Bdt && self.kind != GpuPlanKind::Sequential;
        if !(32..=256).contains(&nb) || (bdt_chunks && nb % 32 != 0) {
            return Err(format!("chunk-kernel block {nb} outside the contract"));
        }
        match self.kind {
            GpuPlanKind::OneLevel => {
                if !pow2_in(self.scan_block, 32, 1024)
                    || (2 * self.scan_block as usize) < self.chunks
                {
                    return Err(format!(
                        "scan block {} for {} chunks",
                        self.scan_block, self.chunks
                    ));
                }
            }
            GpuPlanKind::TwoLevel => {
                let tiles_ok = pow2_in(self.tile_block, 32, 1024)
                    && self.tile == 2 * self.tile_block as usize
                    && self.tiles == self.chunks.div_ceil(self.tile)
                    && self.tiles <= MAX_SCAN_TILE
                    && pow2_in(self.scan_block, 32, 1024)
                    && 2 * self.scan_block as usize >= self.tiles;
                if !tiles_ok {
                    return Err(format!(
                        "tiles TL = {} (block {}), NTL = {}, top scan block {} for {} chunks",
                        self.tile, self.tile_block, self.tiles, self.scan_block, self.chunks
                    ));
                }
            }
            GpuPlanKind::Sequential | GpuPlanKind::SinglePass | GpuPlanKind::LookBack => {}
        }
        Ok(())
    }

    /// The launch sequence for instantiation `kt`.
    fn launches(&self, kt: KernelType) -> Result<Vec<Launch>> {
        let names = NAMES.get(kt, self.reverse);
        let lanes = self.lanes() as u64;
        let nc = self.chunks as u64;
        let btd = self.kernel_layout == Layout::Btd;
        let (reduce, rescan, sequential) = if btd {
            (names.btd_reduce, names.btd_rescan, names.btd_sequential)
        } else {
            (names.bdt_reduce, names.bdt_rescan, names.bdt_sequential)
        };
        let nb = u64::from(self.chunk_block);
        let chunk_grid = if btd {
            (lanes * nc).div_ceil(nb)
        } else {
            lanes * nc
        };
        // The chunk kernels' grid and block (reduce, rescan).
        let (chunks, cb) = ([chunk_grid, 1, 1], self.chunk_block);
        let mut out = Vec::with_capacity(5);
        let mut push = |role, kernel: &'static str, grid: [u64; 3], block: u32| -> Result<()> {
            out.push(Launch {
                role,
                kernel,
                cfg: launch_config(kernel, grid, block, 0)?,
            });
            Ok(())
        };
        match self.kind {
            GpuPlanKind::Sequential => push(
                LaunchRole::Sequential,
                sequential,
                [lanes.div_ceil(nb), 1, 1],
                self.chunk_block,
            )?,
            GpuPlanKind::SinglePass => push(LaunchRole::Rescan, rescan, chunks, cb)?,
            GpuPlanKind::OneLevel => {
                push(LaunchRole::Reduce, reduce, chunks, cb)?;
                push(
                    LaunchRole::ScanChunks,
                    names.scan,
                    [lanes, 1, 1],
                    self.scan_block,
                )?;
                push(LaunchRole::Rescan, rescan, chunks, cb)?;
            }
            GpuPlanKind::TwoLevel => {
                push(LaunchRole::Reduce, reduce, chunks, cb)?;
                push(
                    LaunchRole::ScanTiles,
                    names.scan_tiles,
                    [lanes, self.tiles as u64, 1],
                    self.tile_block,
                )?;
                push(
                    LaunchRole::ScanTileCarries,
                    names.scan,
                    [lanes, 1, 1],
                    self.scan_block,
                )?;
                push(
                    LaunchRole::ScanApply,
                    names.scan_apply,
                    [(lanes * nc).div_ceil(u64::from(APPLY_BLOCK)), 1, 1],
                    APPLY_BLOCK,
                )?;
                push(LaunchRole::Rescan, rescan, chunks, cb)?;
            }
            GpuPlanKind::LookBack => {
                let words = self.lookback_words()? as u64;
                push(
                    LaunchRole::ClearStatus,
                    LB_CLEAR,
                    [words.div_ceil(u64::from(CLEAR_BLOCK)), 1, 1],
                    CLEAR_BLOCK,
                )?;
                let k = self.lookback_steps();
                let steps_ok = match kt {
                    KernelType::Data(d) => lookback_steps(d) == k,
                    KernelType::Depth => k == LOOKBACK_STEPS || k == LOOKBACK_STEPS_16,
                };
                if !steps_ok {
                    return Err(Error::Plan(format!(
                        "look-back chunk {} of {} threads: {k} steps per thread, \
                         not those of the {kt:?} kernels",
                        self.chunk, self.chunk_block
                    )));
                }
                let name = match (kt, k == LOOKBACK_STEPS_16) {
                    (KernelType::Depth, true) => {
                        LB_DEPTH32[usize::from(!btd) + 2 * usize::from(self.reverse)]
                    }
                    _ if btd => names.btd_lookback,
                    _ => names.bdt_lookback,
                };
                push(
                    LaunchRole::LookBack,
                    name,
                    [self.lookback_chains() as u64 * nc, 1, 1],
                    self.chunk_block,
                )?;
            }
        }
        Ok(out)
    }

    /// Scratch bytes for instantiation `kt`.
    fn scratch(&self, kt: KernelType) -> Result<ScratchSizes> {
        let bytes = |items: usize, size: usize| {
            self.lanes()
                .checked_mul(items)
                .and_then(|n| n.checked_mul(size))
                .ok_or_else(|| {
                    Error::Plan(format!(
                        "scratch of {} lanes × {items} chunks does not fit in memory",
                        self.lanes()
                    ))
                })
        };
        let mut s = ScratchSizes::default();
        if matches!(self.kind, GpuPlanKind::OneLevel | GpuPlanKind::TwoLevel) {
            s.agg = bytes(self.chunks, elem_bytes(kt))?;
            s.carry = bytes(self.chunks, kt.value_bytes())?;
        }
        if self.kind == GpuPlanKind::TwoLevel {
            s.tile_agg = bytes(self.tiles, elem_bytes(kt))?;
            s.tile_carry = bytes(self.tiles, kt.value_bytes())?;
        }
        if self.kind == GpuPlanKind::LookBack {
            // `bytes` counts per lane; a chain's slots are `width` per chunk.
            let slots = self.lookback_chains() * self.lookback_width() * self.chunks;
            s.agg = slots * elem_bytes(kt);
            s.carry = slots * kt.value_bytes();
            s.status = self.lookback_words()? * 4;
        }
        Ok(s)
    }

    // --- depth (the contract's DEPTH section) ------------------------------

    /// Depth `L` of a full chunk's aggregate.
    fn chunk_agg_depth(&self) -> u64 {
        match self.kernel_layout {
            Layout::Btd => self.chunk as u64,
            Layout::Bdt => {
                let nt = self.chunk_block as usize;
                let j = self.chunk.div_ceil(nt * STEPS_PER_THREAD);
                (STEPS_PER_THREAD + 3 + nt / 32 + j) as u64
            }
        }
    }

    /// Carry depth `dc(c)` of chunk `c`.
    fn carry_depth(&self, c: u64) -> u64 {
        let l = self.chunk_agg_depth();
        match self.kind {
            GpuPlanKind::Sequential | GpuPlanKind::SinglePass | GpuPlanKind::LookBack => 0,
            GpuPlanKind::OneLevel => prefix_depth(l, c) + 1,
            GpuPlanKind::TwoLevel => {
                let tl = self.tile as u64;
                let (j, r) = (c / tl, c % tl);
                prefix_depth(l, r).max(prefix_depth(l + ceil_log2(self.tile), j) + 1) + 1
            }
        }
    }

    /// `max dc(c)` over chunks `0 ≤ c < m` (`m ≥ 1`), in O(log m).
    fn max_carry_depth(&self, m: u64) -> u64 {
        let l = self.chunk_agg_depth();
        match self.kind {
            GpuPlanKind::Sequential | GpuPlanKind::SinglePass | GpuPlanKind::LookBack => 0,
            GpuPlanKind::OneLevel => max_prefix_depth(l, m) + 1,
            GpuPlanKind::TwoLevel => {
                let tl = self.tile as u64;
                let lt = l + ceil_log2(self.tile);
                max_prefix_depth(l, m.min(tl)).max(max_prefix_depth(lt, m.div_ceil(tl)) + 1) + 1
            }
        }
    }

    /// Depth of step `i` (1-based) of a chunk whose carry has depth `dc`.
    fn step_depth(&self, dc: u64, i: u64) -> u64 {
        if self.kind == GpuPlanKind::Sequential || self.kernel_layout == Layout::Btd {
            return dc + i;
        }
        let nt = u64::from(self.chunk_block);
        let k_steps = STEPS_PER_THREAD as u64;
        let tile = nt * k_steps;
        let (q, u, k) = (
            (i - 1) / tile,
            ((i - 1) % tile) / k_steps,
            (i - 1) % k_steps,
        );
        bdt_thread_depth(self.tile_in_depth(dc, q), u, k)
    }

    /// `e_q`: the depth of the running state entering tile `q` of a chunk.
    fn tile_in_depth(&self, dc: u64, q: u64) -> u64 {
        if q == 0 {
            dc
        } else {
            let nw = u64::from(self.chunk_block) / 32;
            dc.max(STEPS_PER_THREAD as u64 + 3 + nw) + q
        }
    }

    /// The deepest output of a chunk of `len` steps with carry depth `dc`.
    /// Depth never decreases along a `[B,T,D]` chunk, nor from tile to tile
    /// of a `[B,D,T]` chunk, so only the last step (BTD) or the last full
    /// tile and the last tile (BDT, O(NT) each) are looked at.
    fn chunk_max_depth(&self, dc: u64, len: u64) -> u64 {
        if self.kind == GpuPlanKind::Sequential || self.kernel_layout == Layout::Btd {
            return dc + len;
        }
        let nt = u64::from(self.chunk_block);
        let k_steps = STEPS_PER_THREAD as u64;
        let tile = nt * k_steps;
        let q_count = len.div_ceil(tile);
        let tile_max = |q: u64, steps: u64| {
            let e = self.tile_in_depth(dc, q);
            (0..steps.div_ceil(k_steps))
                .map(|u| {
                    let k = (steps - u * k_steps).min(k_steps) - 1;
                    bdt_thread_depth(e, u, k)
                })
                .max()
                .unwrap_or(0)
        };
        let mut best = tile_max(q_count - 1, len - (q_count - 1) * tile);
        if q_count >= 2 {
            best = best.max(tile_max(q_count - 2, tile));
        }
        best
    }

    /// P4's depth of output step `t`, on the deterministic worst case the
    /// `_depth` kernels take: every block waits for its predecessor's
    /// inclusive prefix (the data kernels' critical path is never longer).
    /// `[B,D,T]`: the tile formula with `K` steps per thread (16, or 32 for
    /// f16/bf16) and carry-in depth `K + 3 + nw + c`; `[B,T,D]`: warp `w`'s
    /// exclusive prefix has depth `K + w − 2` (`w ≥ 1`), the carry-in
    /// `K + nw − 2 + c` (`c ≥ 1`).
    fn lookback_depth_at(&self, t: u64) -> u64 {
        let k = self.lookback_steps() as u64;
        let nw = u64::from(self.chunk_block) / 32;
        let c_len = self.chunk as u64;
        let (c, i) = (t / c_len, t % c_len);
        match self.kernel_layout {
            Layout::Bdt => {
                let hin = if c == 0 { 0 } else { k + 3 + nw + c };
                tile_thread_depth(k, hin, i / k, i % k)
            }
            Layout::Btd => {
                let hin = if c == 0 { 0 } else { k + nw - 2 + c };
                let w = i / k;
                let dw = if w == 0 { 0 } else { k + w - 2 };
                dw.max(hin) + 1 + i % k + 1
            }
        }
    }

    /// P4's deepest output: the last step of every thread (`[B,D,T]`) or
    /// warp (`[B,T,D]`) of the last two chunks (carry depth grows with the chunk).
    fn lookback_depth(&self) -> u64 {
        let t = self.shape.len as u64;
        let (k, c_len, nc) = (
            self.lookback_steps() as u64,
            self.chunk as u64,
            self.chunks as u64,
        );
        let mut best = 0;
        for c in nc.saturating_sub(2)..nc {
            let start = c * c_len;
            let len = c_len.min(t - start);
            for u in 0..len.div_ceil(k) {
                best = best.max(self.lookback_depth_at(start + ((u + 1) * k).min(len) - 1));
            }
        }
        best
    }

    /// The measured depth of output step `t` (0-based).
    fn depth_at(&self, t: u64) -> u64 {
        if self.kind == GpuPlanKind::Sequential {
            return t + 1;
        }
        if self.kind == GpuPlanKind::LookBack {
            return self.lookback_depth_at(t);
        }
        let c_len = self.chunk as u64;
        let (c, i) = (t / c_len, t % c_len + 1);
        self.step_depth(self.carry_depth(c), i)
    }

    /// The maximum of [`Geometry::depth_at`] over all steps, in
    /// O(log NC + NT): depth is non-decreasing in the carry depth, so the
    /// full chunks only need their deepest carry; the last chunk (maybe
    /// shorter) is evaluated on its own.
    fn depth(&self) -> u64 {
        let t = self.shape.len as u64;
        if self.kind == GpuPlanKind::Sequential {
            return t;
        }
        if self.kind == GpuPlanKind::LookBack {
            return self.lookback_depth();
        }
        let c_len = self.chunk as u64;
        let nc = self.chunks as u64;
        let last_len = t - (nc - 1) * c_len;
        let mut best = self.chunk_max_depth(self.carry_depth(nc - 1), last_len);
        if nc >= 2 {
            best = best.max(self.chunk_max_depth(self.max_carry_depth(nc - 1), c_len));
        }
        best
    }
}

/// Depth of position `k` of thread `u` in a `[B,D,T]` tile whose running
/// state enters with depth `e`.
fn bdt_thread_depth(e: u64, u: u64, k: u64) -> u64 {
    tile_thread_depth(STEPS_PER_THREAD as u64, e, u, k)
}

/// The same for a tile of `kk` steps per thread (the look-back kernels' 16).
fn tile_thread_depth(kk: u64, e: u64, u: u64, k: u64) -> u64 {
    let (w, l) = (u / 32, u % 32);
    let dw = if w == 0 { 0 } else { kk + 3 + w };
    let dx = if l == 0 {
        0
    } else {
        kk - 1 + bit_length(l - 1)
    };
    dx.max(dw.max(e) + 1) + 1 + (k + 1)
}

// ---------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------

/// The Diagonal kernels' scratch buffers (agg, carry, tile_agg,
/// tile_carry, status), reused across calls: see [`Workspace`].
pub type DiagonalWorkspace = Workspace<ScratchSizes>;

// ---------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------

/// Device addresses of one Diagonal scan. Sizes, in elements of the
/// storage type: `a` (per-step decays), `b`, `h`: `B·T·D` in the plan's
/// layout; `h0`, `h_t`: `B·D`. `h0 = None` (or `Some(0)`) means zeros.
pub type DiagonalIo = AffineIo;

/// The memory of one Diagonal scan ([`AffineBuffers`]; sizes as
/// [`DiagonalIo`]).
pub type DiagonalBuffers<'a> = AffineBuffers<'a>;

/// A plan must meet the launch contract and be internally consistent (its
/// fields are public, so it may have been edited since [`plan_diagonal`]).
fn check_plan(plan: &GpuPlan) -> Result<()> {
    plan.shape.validate()?;
    let g = plan.geometry();
    g.check_contract()
        .map_err(|why| Error::Plan(format!("{why} in {plan}; make plans with plan_diagonal")))?;
    let kt = KernelType::Data(plan.dtype);
    if plan.lookback_prefix_every == 0 || plan.lookback_prefix_every > i32::MAX as u32 {
        return Err(Error::Plan(format!(
            "lookback_prefix_every = {}: expected 1 ≤ n < 2^31",
            plan.lookback_prefix_every
        )));
    }
    let kernel_layout_ok = plan.kernel_layout == plan.layout
        || (plan.shape.dim == 1 && plan.kernel_layout == Layout::Bdt);
    if !kernel_layout_ok
        || g.launches(kt)? != plan.launches
        || g.scratch(kt)? != plan.scratch
        || g.depth() != plan.depth
    {
        return Err(Error::Plan(format!(
            "the launches, scratch, depth or kernel layout of {plan} do not follow from its \
             fields; make plans with plan_diagonal"
        )));
    }
    Ok(())
}

/// The arguments' sizes and shapes for the checks of [`AffineIo`]: `a`,
/// `b` and `h` are `[B,T,D]` or `[B,D,T]`, `h0` and `h_t` `[B,D]`.
fn affine_sizes(
    plan: &GpuPlan,
) -> AffineSizes<impl Fn() -> String, impl Fn() -> String, impl Fn() -> String> {
    let (s, layout) = (plan.shape, plan.layout);
    let full = move || s.describe(layout);
    AffineSizes {
        a: (s.elements(), full),
        steps: (s.elements(), full),
        states: (s.lanes(), move || s.describe_bd()),
    }
}

impl FamilyPlan for GpuPlan {
    type Io = DiagonalIo;
    type Buffers<'a> = DiagonalBuffers<'a>;
    type Scratch = ScratchSizes;

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn summary(&self) -> KernelPlanSummary {
        GpuPlan::summary(self)
    }

    fn check(&self) -> Result<()> {
        check_plan(self)
    }

    fn scratch(&self, depth: bool) -> Result<ScratchSizes> {
        if depth {
            self.geometry().scratch(KernelType::Depth)
        } else {
            Ok(self.scratch)
        }
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.shape.elements(), self.shape.lanes())
    }

    fn io_args(&self, io: &DiagonalIo) -> Vec<IoArg> {
        io.args(&affine_sizes(self), self.dtype.size())
    }

    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &DiagonalBuffers<'_>) -> Result<DiagonalIo> {
        bufs.check(runner, ElemType::of_dtype(self.dtype), &affine_sizes(self))
    }

    fn depth_io(&self, out: u64, last: u64) -> DiagonalIo {
        AffineIo::depth(out, last)
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &DiagonalWorkspace,
        io: DiagonalIo,
        depth: bool,
    ) -> Result<()> {
        if depth {
            let launches = self.launches_for(KernelType::Depth)?;
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &launches, ws, io) }
        } else {
            // SAFETY: forwarded to the caller.
            unsafe { issue(runner, self, &self.launches, ws, io) }
        }
    }
}

/// Issues `launches` (the plan's, for one instantiation) with `io`.
///
/// # Safety
/// `io` addresses live memory of `runner` of the sizes the plan's shape
/// implies, and `plan` passed `check_plan`.
unsafe fn issue<R: KernelRunner>(
    runner: &R,
    plan: &GpuPlan,
    launches: &[Launch],
    ws: &DiagonalWorkspace,
    io: DiagonalIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let ends = [io.ends.h0.unwrap_or(0), io.h.unwrap_or(0)].map(Ptr);
    let steps = Steps::Unpacked {
        ht: Ptr(io.ends.h_t),
    };
    for l in launches {
        let args = launch_args(plan, ws, l.role, [Ptr(io.a), Ptr(io.b)], ends, steps)?;
        // SAFETY: each kernel gets the buffers its launch contract
        // (kernels/diagonal.cu) names for this role, sized by the plan's
        // shape (the caller's obligation) and its scratch (reserved in `ws`).
        unsafe { runner.launch(l.kernel, l.cfg, &args) }?;
    }
    Ok(())
}

/// The arguments of a launch of role `role` of `plan`, on the inputs
/// `[a, b]`, `[h0, h]` and the scratch in `ws`: for the unpacked kernels
/// (`kernels/diagonal.cu`) or their packed twins (`kernels/varlen.cu`,
/// which take the same buffers plus the sequence starts), as `steps` says.
pub(crate) fn launch_args(
    plan: &GpuPlan,
    ws: &DiagonalWorkspace,
    role: LaunchRole,
    [a, b]: [KernelArg; 2],
    [h0, h]: [KernelArg; 2],
    steps: Steps,
) -> Result<Vec<KernelArg>> {
    use KernelArg::Ptr;
    let (bs, t, d) = (
        i32_arg(plan.shape.batch),
        i32_arg(plan.shape.len),
        i32_arg(plan.shape.dim),
    );
    let (c, nc) = (i32_arg(plan.chunk), i32_arg(plan.chunks));
    let [agg, carry, tile_agg, tile_carry, status] = std::array::from_fn(|i| Ptr(ws.ptr(i)));
    // P1 runs the rescan without carries: every chunk (the only one) starts from h0.
    let rescan_carry = if plan.kind == GpuPlanKind::SinglePass {
        Ptr(0)
    } else {
        carry
    };
    let every = KernelArg::I32(plan.lookback_prefix_every as i32);
    let seed = steps.seed(h0);
    Ok(match (role, steps) {
        (LaunchRole::ScanChunks, _) => vec![agg, carry, seed, bs, d, nc],
        (LaunchRole::ScanTiles, _) => vec![agg, tile_agg, bs, d, nc],
        (LaunchRole::ScanTileCarries, _) => {
            vec![tile_agg, tile_carry, seed, bs, d, i32_arg(plan.tiles)]
        }
        (LaunchRole::ScanApply, _) => {
            vec![agg, tile_carry, carry, bs, d, nc, i32_arg(plan.tile)]
        }
        (LaunchRole::ClearStatus, _) => {
            vec![status, i32_arg(plan.geometry().lookback_words()?)]
        }
        (LaunchRole::Sequential, Steps::Unpacked { ht }) => vec![a, b, h, ht, h0, bs, t, d],
        (LaunchRole::Reduce, Steps::Unpacked { .. }) => vec![a, b, agg, bs, t, d, c],
        (LaunchRole::Rescan, Steps::Unpacked { ht }) => {
            vec![a, b, h, ht, rescan_carry, h0, bs, t, d, c]
        }
        (LaunchRole::LookBack, Steps::Unpacked { ht }) => {
            vec![a, b, h, ht, h0, status, agg, carry, bs, t, d, c, every]
        }
        // The packed P0 is the packed rescan of one chunk of T steps.
        (LaunchRole::Sequential, Steps::Packed { seg, seqs }) => {
            vec![a, b, seg, h0, h, Ptr(0), bs, t, d, t, seqs]
        }
        (LaunchRole::Reduce, Steps::Packed { seg, seqs }) => {
            vec![a, b, seg, h0, agg, bs, t, d, c, seqs]
        }
        (LaunchRole::Rescan, Steps::Packed { seg, seqs }) => {
            vec![a, b, seg, h0, h, rescan_carry, bs, t, d, c, seqs]
        }
        (LaunchRole::LookBack, Steps::Packed { seg, seqs }) => {
            vec![
                a, b, seg, h0, h, status, agg, carry, bs, t, d, c, seqs, every,
            ]
        }
    })
}

/// The parts of a `[B,T,D]` look-back plan (P4) that a fused kernel running
/// the same scan with another step source needs (the Newton solver's
/// `newton_gru_lookback`): the status-clearing launch, the main launch
/// shape and the scratch, taken from `ws` (call [`DiagonalWorkspace::reserve`]
/// with the plan's scratch first).
pub(crate) struct LookBackParts {
    /// `diag_lb_clear` and its word count.
    pub clear: Launch,
    pub words: usize,
    /// Grid and block of the look-back launch.
    pub cfg: LaunchConfig,
    /// Status words, aggregates and prefixes.
    pub status: u64,
    pub agg: u64,
    pub pre: u64,
}

/// [`LookBackParts`] of `plan`, or `None` unless it is P4 on the `[B,T,D]` kernels.
pub(crate) fn lookback_parts(plan: &GpuPlan, ws: &DiagonalWorkspace) -> Option<LookBackParts> {
    if plan.kind != GpuPlanKind::LookBack || plan.kernel_layout != Layout::Btd {
        return None;
    }
    let words = plan.geometry().lookback_words().ok()?;
    let (clear, main) = (*plan.launches.first()?, *plan.launches.get(1)?);
    (ws.capacity().status >= plan.scratch.status
        && ws.capacity().agg >= plan.scratch.agg
        && ws.capacity().carry >= plan.scratch.carry)
        .then(|| LookBackParts {
            clear,
            words,
            cfg: main.cfg,
            status: ws.ptr(4),
            agg: ws.ptr(0),
            pre: ws.ptr(1),
        })
}

// ---------------------------------------------------------------------------
// Host convenience and depth measurement
// ---------------------------------------------------------------------------

/// Runs a host-side Diagonal problem right to left on `runner`
/// ([`scan_host`](super::scan_host) with [`GpuPlan::reversed`]):
/// `h_t = a_t·h_{t+1} + b_t` from `h0` (the state entering `t = T − 1`)
/// down to `t = 0`. Returns `(h, h_T, plan)`, `h_T` the state at `t = 0`.
pub fn scan_diagonal_reverse<R, S>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    problem: &Diagonal<'_, S>,
    request: PlanRequest,
) -> Result<(Vec<S>, Vec<S>, GpuPlan)>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    problem.validate()?;
    let shape = DiagShape::new(problem.batch, problem.len, problem.dim);
    let plan =
        plan_diagonal(shape, problem.layout, S::DTYPE, request, runner.sm_count())?.reversed()?;
    super::scan_host_planned(runner, ws, problem, plan)
}

impl GpuPlan {
    /// The family-independent summary of this plan.
    pub fn summary(&self) -> KernelPlanSummary {
        // Inputs a, b read once per pass (P2/P3: reduce and rescan), h written once;
        // scratch written and read once (P4: written once, one predecessor's prefix
        // read per chunk).
        let s = self.dtype.size() as u64;
        let e = self.shape.elements() as u64;
        let passes = match self.kind {
            GpuPlanKind::OneLevel | GpuPlanKind::TwoLevel => 2,
            _ => 1,
        };
        let scratch = self.scratch_bytes() as u64;
        let scratch_traffic = match self.kind {
            GpuPlanKind::LookBack => scratch + self.scratch.carry as u64,
            _ => 2 * scratch,
        };
        KernelPlanSummary {
            plan_bytes: passes * 2 * s * e + s * e + scratch_traffic,
            kind: self.kind.label().to_string(),
            chunk: self.chunk,
            chunks: self.chunks,
            depth_formula: self.depth,
            scratch_bytes: self.scratch_bytes(),
            depth_key: format!(
                "diagonal/{:?}/T={}/C={}/{}",
                self.kernel_layout,
                self.shape.len,
                self.chunk,
                self.kind.label()
            ),
        }
    }
}

/// A Diagonal problem's uploaded inputs: `a`, `b` and `h0` (if any).
pub type DiagonalInputs = (DeviceBuffer, DeviceBuffer, Option<DeviceBuffer>);

/// Outputs `h` at `out` and `h_T` at `last`.
impl BindInputs<GpuPlan> for DiagonalInputs {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> DiagonalBuffers<'a> {
        let (a, b, h0) = self;
        DiagonalBuffers {
            a: a.into(),
            b: b.into(),
            h: Some(out.into()),
            ends: EndBuffers::new(h0.as_ref().map(Into::into), last.into()),
        }
    }
}

impl<S: Storage + bytemuck::Pod> KernelScan for Diagonal<'_, S> {
    type Elem = S;
    type Plan = GpuPlan;
    /// `a`, `b`, `h0`.
    type Inputs = DiagonalInputs;

    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<GpuPlan> {
        self.validate()?;
        let shape = DiagShape::new(self.batch, self.len, self.dim);
        plan_diagonal(shape, self.layout, S::DTYPE, request, sm_count)
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

    fn plan(
        b: usize,
        t: usize,
        d: usize,
        layout: Layout,
        request: PlanRequest,
        sm: usize,
    ) -> GpuPlan {
        plan_diagonal(DiagShape::new(b, t, d), layout, DType::F32, request, sm).unwrap()
    }

    fn brute_max_depth(p: &GpuPlan) -> u64 {
        (0..p.shape.len).map(|t| p.depth_at(t)).max().unwrap()
    }

    #[test]
    fn contract_worked_examples() {
        // P2 BTD, T = 1024, C = 64: depth 136.
        let p = plan(1, 1024, 4, Layout::Btd, PlanRequest::Chunk(64), 132);
        assert_eq!((p.kind, p.chunks), (GpuPlanKind::OneLevel, 16));
        assert_eq!(p.depth, 136);
        // P2 BDT, T = 2^24, C = 2^16, NT = 256: depth 108.
        let p = plan(1, 1 << 24, 2, Layout::Bdt, PlanRequest::Chunk(1 << 16), 132);
        assert_eq!(
            (p.kind, p.chunks, p.chunk_block),
            (GpuPlanKind::OneLevel, 256, 256)
        );
        assert_eq!(p.depth, 108);
        let p = plan(1, 1 << 24, 2, Layout::Bdt, PlanRequest::Sequential, 132);
        assert_eq!(p.depth, 16_777_216);
    }

    #[test]
    fn plan_depth_is_the_max_of_the_per_step_formula() {
        let requests = [
            PlanRequest::Sequential,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(3),
            PlanRequest::Chunk(7),
            PlanRequest::Chunk(64),
            PlanRequest::Chunk(100),
            PlanRequest::Chunk(300),
            PlanRequest::Chunk(2048),
            PlanRequest::Chunk(5000),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
            PlanRequest::LookBack,
        ];
        for layout in [Layout::Btd, Layout::Bdt] {
            for t in [1, 2, 5, 17, 64, 255, 1000, 2049, 4097, 9000, 20_000] {
                for &r in &requests {
                    let p = plan(2, t, 3, layout, r, 2);
                    assert_eq!(p.depth, brute_max_depth(&p), "{p}");
                }
            }
        }
    }

    #[test]
    fn kinds_follow_the_chunk_count() {
        let k = |t, r| plan(1, t, 4, Layout::Btd, r, 2).kind;
        assert_eq!(k(100, PlanRequest::Sequential), GpuPlanKind::Sequential);
        assert_eq!(k(100, PlanRequest::Chunk(100)), GpuPlanKind::SinglePass);
        assert_eq!(k(100, PlanRequest::Chunk(1000)), GpuPlanKind::SinglePass);
        assert_eq!(k(100, PlanRequest::Chunk(99)), GpuPlanKind::OneLevel);
        assert_eq!(k(2048, PlanRequest::Chunk(1)), GpuPlanKind::OneLevel);
        assert_eq!(k(2049, PlanRequest::Chunk(1)), GpuPlanKind::TwoLevel);
        let p = plan(1, 2049, 4, Layout::Btd, PlanRequest::Chunk(1), 2);
        assert_eq!(p.launches.len(), 5);
        assert!(p.tiles <= MAX_SCAN_TILE && p.tile * p.tiles >= p.chunks);
        assert_eq!(p.tile, 2 * p.tile_block as usize);
        assert!(2 * p.scan_block as usize >= p.tiles);
        // Too many chunks is an error, not a silent change.
        let err = plan_diagonal(
            DiagShape::new(1, MAX_CHUNKS + 1, 4),
            Layout::Btd,
            DType::F32,
            PlanRequest::Chunk(1),
            2,
        );
        assert!(matches!(err, Err(Error::Plan(_))));
        assert!(matches!(
            plan_diagonal(
                DiagShape::new(1, 9, 4),
                Layout::Btd,
                DType::F32,
                PlanRequest::Chunk(0),
                2
            ),
            Err(Error::Plan(_))
        ));
        assert!(matches!(
            plan_diagonal(
                DiagShape::new(1, 0, 4),
                Layout::Btd,
                DType::F32,
                PlanRequest::Auto,
                2
            ),
            Err(Error::Size { arg: "len", .. })
        ));
    }

    #[test]
    fn auto_rules() {
        // Lanes fill an H100: single pass.
        let p = plan(128, 4096, 4096, Layout::Btd, PlanRequest::Auto, 132);
        assert_eq!(p.kind, GpuPlanKind::SinglePass);
        assert_eq!(p.chunk_block, 128);
        let p = plan(4, 1 << 20, 256, Layout::Bdt, PlanRequest::Auto, 132);
        assert_eq!(p.kind, GpuPlanKind::SinglePass);
        // Few lanes, long T: the single-pass look-back along T.
        let p = plan(1, 1 << 20, 64, Layout::Btd, PlanRequest::Auto, 132);
        assert_eq!(
            (p.kind, p.chunk, p.chunk_block),
            (GpuPlanKind::LookBack, 128, 256)
        );
        assert_eq!(p.chunks, (1 << 20) / 128);
        assert_eq!(p.launches.len(), 2);
        let p = plan(2, 1 << 20, 8, Layout::Bdt, PlanRequest::Auto, 132);
        assert_eq!(
            (p.kind, p.chunk, p.chunk_block),
            (GpuPlanKind::LookBack, 4096, 256)
        );
        assert_eq!(p.scratch.status, 4 * (16 * 256 + 1));
        assert_eq!(p.scratch.agg, 16 * 256 * 8);
        // Its depth grows by one per chunk.
        let q = plan(2, 1 << 21, 8, Layout::Bdt, PlanRequest::Auto, 132);
        assert_eq!(q.depth, p.depth + 256);
        // The explicit three-pass plans stay available.
        let p = plan(2, 1 << 20, 64, Layout::Btd, PlanRequest::Chunk(512), 132);
        assert_eq!((p.kind, p.chunks), (GpuPlanKind::OneLevel, 2048), "{p}");
        // Short T: one pass.
        let p = plan(1, 50, 4, Layout::Btd, PlanRequest::Auto, 132);
        assert_eq!(p.kind, GpuPlanKind::SinglePass);
    }

    #[test]
    fn lookback_geometry() {
        // Short T: one block of as few warps as T needs.
        let p = plan(1, 5, 3, Layout::Btd, PlanRequest::LookBack, 2);
        assert_eq!((p.chunk, p.chunks, p.chunk_block), (16, 1, 32));
        let p = plan(1, 100, 3, Layout::Bdt, PlanRequest::LookBack, 2);
        assert_eq!((p.chunk, p.chunks, p.chunk_block), (512, 1, 32));
        assert_eq!(p.launches[0].kernel, "diag_lb_clear");
        assert_eq!(p.launches[1].kernel, "diag_bdt_lookback_f32");
        // [B,T,D]: chains are batch rows × 32-channel groups.
        let p = plan(3, 1000, 70, Layout::Btd, PlanRequest::LookBack, 2);
        assert_eq!((p.chunk, p.chunks), (128, 8));
        assert_eq!(p.launches[1].cfg.grid[0], 3 * 3 * 8);
        assert_eq!(p.scratch.agg, 3 * 3 * 8 * 32 * 8);
        assert_eq!(p.scratch.carry, 3 * 3 * 8 * 32 * 4);
        // Other families refuse the request; so does the CPU engine.
        assert!(matches!(
            crate::scan::plan::Plan::resolve(
                PlanRequest::LookBack,
                crate::scan::plan::ScanShape {
                    problems: 1,
                    len: 10,
                    fold_cost: 1.0
                },
                2
            ),
            Err(Error::Plan(_))
        ));
    }

    #[test]
    fn min_depth_is_minimal_among_powers_of_two() {
        for layout in [Layout::Btd, Layout::Bdt] {
            for t in [1usize, 3, 40, 1000, 5000, 70_000] {
                let best = plan(1, t, 2, layout, PlanRequest::MinDepth, 2);
                for k in 0..17 {
                    let p = plan(1, t, 2, layout, PlanRequest::Chunk(1 << k), 2);
                    assert!(best.depth <= p.depth, "{best} vs {p}");
                }
                assert!(best.depth <= plan(1, t, 2, layout, PlanRequest::Sequential, 2).depth);
            }
        }
        let p = plan(1, 1 << 20, 4, Layout::Btd, PlanRequest::MinDepth, 2);
        assert!(p.chunk <= 2, "{p}");
    }

    #[test]
    fn dim_one_uses_bdt_kernels() {
        let p = plan(3, 100, 1, Layout::Btd, PlanRequest::Chunk(10), 2);
        assert_eq!(p.kernel_layout, Layout::Bdt);
        assert!(p.launches.iter().all(|l| !l.kernel.contains("btd")));
        assert!(p.launches.iter().all(|l| l.kernel.ends_with("_f32")));
    }

    #[test]
    fn scratch_sizes() {
        let p = plan_diagonal(
            DiagShape::new(2, 100, 3),
            Layout::Btd,
            DType::F64,
            PlanRequest::Chunk(10),
            2,
        )
        .unwrap();
        assert_eq!(p.scratch.agg, 6 * 10 * 16);
        assert_eq!(p.scratch.carry, 6 * 10 * 8);
        assert_eq!(p.scratch_bytes(), 6 * 10 * 24);
        let p = plan(2, 100, 3, Layout::Btd, PlanRequest::Sequential, 2);
        assert_eq!(p.scratch_bytes(), 0);
    }
}
