//! The PermDiagonal (PD) family on the kernels of `kernels/perm_diagonal.cu`:
//! planner, scratch workspace and launch sequences, for any [`KernelRunner`].
//!
//! A PD step is `h_t[i] = d_t[i] · h_{t-1}[perm_t[i]] + b_t[i]` with
//! `perm, d, b: [B,T,n]` (`perm` as `u8`, so `n ≤ 256`), `h0, h_T: [B,n]`.
//! This module implements the *launch contract* written at the top of
//! `kernels/perm_diagonal.cu` (kernel names, argument lists, launch shapes,
//! the plans P0–P4, scratch sizes and the measured-depth formula); the same
//! launch sequence runs on the GPU and in the SIMT emulator.
//!
//! # Layers
//!
//! - [`plan_perm_diagonal`] resolves a [`PlanRequest`] into a [`PdGpuPlan`]:
//!   plan kind, team shape (`small`: `n ≤ 32`, `n` lanes per chunk and
//!   `⌊32/n⌋` chunks per warp, gathers by shuffles; `wide`: a warp per
//!   chunk, gathers through shared memory), chunk `C`,
//!   chunk count `NC`, the exact launches, scratch bytes and the depth the
//!   `_depth` kernels will measure. Pure, no device.
//! - [`PdGpuPlan`] implements [`FamilyPlan`]: the shared entry points of
//!   [`face`](super::face) run it on typed memory ([`PdBuffers`]), on raw
//!   addresses ([`PdIo`], `unsafe`), on the `_depth` instantiation, and on
//!   host slices; no allocation once the [`PdWorkspace`] is warm.
//!
//! Every shape, pointer and plan problem is a typed [`Error`] returned before
//! the first launch. Permutations in host slices are checked by
//! [`LinearProblem::validate`]; on the device path they cannot be (the data
//! never leaves the device), and the kernels clamp every index to `n − 1`, so
//! a bad permutation there gives wrong numbers, never an out-of-bounds access.
//!
//! # Planner rules
//!
//! - `Sequential` → P0 (`pd_<K>_sequential`, one team per problem, depth `T`).
//! - `Chunk(C)` → P1 when `C ≥ T`; P2 (reduce, one-block-per-problem
//!   Blelloch scan of the `NC` chunk aggregates, rescan) when
//!   `NC ≤` [`ONE_LEVEL_MAX_CHUNKS`]; else P3, the same with the scan split
//!   into tiles of `TL = next_pow2(⌈√NC⌉)` (at least 64) aggregates, one
//!   block per problem and tile, a top-level scan of the tile totals and an
//!   apply pass. `NC ≤` [`MAX_CHUNKS`] (the scan trees live in global memory).
//! - `MinDepth` → among `C = T`, the powers of two up to 2¹⁶ and the
//!   smallest legal chunk, the least formula depth whose scratch is at most
//!   [`MIN_DEPTH_SCRATCH_CAP`] (ties to the longer chunk); `C = 1`–`2` for
//!   long `T` and modest `B·T·n`.
//! - `LookBack` → P4: one pass with a decoupled look-back
//!   (`pd_lookback<SPL>`), the chunk being what one block of up to 8 warps
//!   holds in registers (`C = 768` for `n = 5`, 64 for `n = 64`, 8 for
//!   `n > 128`). Every input is read once (13 B per f32 slot and step plus
//!   the chunk payloads, against 22 for P2/P3); depth grows by one per
//!   chunk, and results are not bitwise reproducible run to run.
//! - `Auto`: with `W` the threads of the warps that `B` teams occupy
//!   (`32·⌈B/⌊32/n⌋⌉` for `n ≤ 32`, `32·B` otherwise), P1 when
//!   `W ≥ sm_count × 2048` (teams fill the GPU); otherwise P4, or, when
//!   P4 does not fit one launch (`B·NC ≥ 2³¹ − 1`), `NC ≈ sm_count × 2048 /
//!   W`, at most [`AUTO_MAX_CHUNKS`], `C = ⌈T/NC⌉ ≥` [`AUTO_MIN_CHUNK`];
//!   P2 up to 1024 chunks, P3 beyond.

use std::fmt;

use super::common::{
    ceil_log2, check_int, i32_arg, launch_config, max_prefix_depth, name_table, plan_kinds,
    prefix_depth, KernelType, NameTable,
};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::face::{
    BindInputs, EndBuffers, Ends, FamilyPlan, IoArg, KernelLaunch, ScratchLayout, Workspace,
};
use super::packed::Steps;
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::perm_diagonal::PermDiagonal;
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// Largest `n` (a `u8` permutation index).
pub const MAX_N: usize = 256;
/// Largest `n` of the small (shuffle) kernels; larger `n` use the wide kernels.
pub const SMALL_MAX_N: usize = 32;
/// Most chunks per problem any plan takes.
pub const MAX_CHUNKS: usize = 1 << 24;
/// Most chunks per problem of the one-level plan P2 (one scan block per
/// problem); more chunks use the two-level plan P3.
pub const ONE_LEVEL_MAX_CHUNKS: usize = 1024;
/// Smallest tile `TL` of P3.
pub const MIN_TILE: usize = 64;
/// Threads per block of the reduce, rescan and sequential kernels.
pub const CHUNK_BLOCK: u32 = 128;
/// Threads per block of `pd_scan`, `pd_scan_tiles` and `pd_scan_apply`.
pub const SCAN_BLOCK: u32 = 256;
/// Warps per block of the chunk kernels (the wide kernels' shared arrays
/// are sized for it).
pub const WIDE_WARPS: usize = 4;
/// Resident threads per SM the `Auto` planner aims to fill.
pub const THREADS_PER_SM: usize = 2048;
/// Shortest chunk `Auto` picks (shorter chunks make the scan phase and the
/// scratch traffic a noticeable share of the work).
pub const AUTO_MIN_CHUNK: usize = 64;
/// Most chunks per problem `Auto` picks (beyond what fills an H100 with one
/// problem of `n ≤ 32`; bounds the scratch and the scan phase).
pub const AUTO_MAX_CHUNKS: usize = 16384;
/// Most scratch bytes a `MinDepth` plan may take when a shallower plan
/// would need more.
pub const MIN_DEPTH_SCRATCH_CAP: usize = 1 << 30;
/// Step-slots (steps × slots per lane) a look-back (P4) lane holds in
/// registers: a team runs `K = 16 / SPL` steps (`SPL` = 1 for `n ≤ 32`,
/// 2 / 4 for `n ≤ 64 / 128`), except `K = 1` for `n > 128` (`SPL = 8`).
pub const LOOKBACK_WORK: usize = 16;
/// Most warps of a look-back block.
pub const LOOKBACK_WARPS: usize = 8;
/// Threads per block of `pd_lb_clear`.
const CLEAR_BLOCK: u32 = 256;
/// The status-clearing kernel of P4 (one instantiation for every dtype).
const LB_CLEAR: &str = "pd_lb_clear";

// ---------------------------------------------------------------------------
// Shapes and kernel names
// ---------------------------------------------------------------------------

/// `(B, T, n)` of a PD problem: batch, length, state size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PdShape {
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `n` (`1 ≤ n ≤ 256`).
    pub n: usize,
}

impl PdShape {
    /// `(B, T, n)`.
    pub fn new(batch: usize, len: usize, n: usize) -> Self {
        PdShape { batch, len, n }
    }

    /// `B·T·n`: elements of `perm`, `d`, `b` and `h`.
    pub fn elements(&self) -> usize {
        self.batch * self.len * self.n
    }

    /// `B·n`: elements of `h0` and `h_T`.
    pub fn states(&self) -> usize {
        self.batch * self.n
    }

    /// `[B,T,n] = [..]`.
    pub fn describe(&self) -> String {
        format!("[B,T,n] = [{},{},{}]", self.batch, self.len, self.n)
    }

    fn describe_bn(&self) -> String {
        format!("[B,n] = [{},{}]", self.batch, self.n)
    }

    /// Checks `B, T, n` are C `int`s ≥ 1, `n ≤ 256`, and that byte sizes fit.
    fn validate(&self) -> Result<()> {
        check_int("batch", self.batch)?;
        check_int("len", self.len)?;
        check_int("n", self.n)?;
        if self.n > MAX_N {
            return Err(Error::size(
                "n",
                self.n,
                format!("1 ≤ n ≤ {MAX_N} (perm is stored as u8)"),
            ));
        }
        self.batch
            .checked_mul(self.len)
            .and_then(|x| x.checked_mul(self.n))
            .and_then(|x| x.checked_mul(16))
            .ok_or_else(|| {
                Error::size(
                    "len",
                    self.len,
                    format!(
                        "B·T·n = {}·{}·{} elements that fit in memory",
                        self.batch, self.len, self.n
                    ),
                )
            })?;
        Ok(())
    }
}

/// Which kernels (team shape) a plan uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PdTeams {
    /// `n ≤ 32`: `pd_small_*`, `n` lanes per chunk (one slot each) and
    /// `⌊32/n⌋` chunks per warp, gathers by shuffles.
    Small,
    /// `n > 32`: `pd_wide_*`, one warp per chunk, gathers through shared memory.
    Wide,
}

impl PdTeams {
    fn for_n(n: usize) -> PdTeams {
        if n <= SMALL_MAX_N {
            PdTeams::Small
        } else {
            PdTeams::Wide
        }
    }

    /// Teams (chunks) per warp: `⌊32/n⌋` (small) or 1 (wide).
    pub fn per_warp(self, n: usize) -> usize {
        match self {
            PdTeams::Small => (32 / n.max(1)).max(1),
            PdTeams::Wide => 1,
        }
    }

    /// Warps that `units` teams occupy.
    pub fn warps(self, n: usize, units: usize) -> usize {
        units.div_ceil(self.per_warp(n))
    }
}

/// The `extern "C"` kernels of one instantiation.
struct KernelNames {
    small_reduce: &'static str,
    small_rescan: &'static str,
    small_sequential: &'static str,
    wide_reduce: &'static str,
    wide_rescan: &'static str,
    wide_sequential: &'static str,
    scan: &'static str,
    scan_tiles: &'static str,
    scan_apply: &'static str,
    /// `pd_lookback<SPL>_*` for SPL = 1, 2, 4, 8 slots per lane.
    lookback: [&'static str; 4],
}

macro_rules! kernel_names {
    ($sfx:literal) => {
        kernel_names!($sfx, "")
    };
    // `$dir` = "rev_": the reverse kernels (the contract's REVERSE section);
    // the phase-2 kernels are the same for both directions.
    ($sfx:literal, $dir:literal) => {
        KernelNames {
            small_reduce: concat!("pd_small_reduce_", $dir, $sfx),
            small_rescan: concat!("pd_small_rescan_", $dir, $sfx),
            small_sequential: concat!("pd_small_sequential_", $dir, $sfx),
            wide_reduce: concat!("pd_wide_reduce_", $dir, $sfx),
            wide_rescan: concat!("pd_wide_rescan_", $dir, $sfx),
            wide_sequential: concat!("pd_wide_sequential_", $dir, $sfx),
            scan: concat!("pd_scan_", $sfx),
            scan_tiles: concat!("pd_scan_tiles_", $sfx),
            scan_apply: concat!("pd_scan_apply_", $sfx),
            lookback: [
                concat!("pd_lookback1_", $dir, $sfx),
                concat!("pd_lookback2_", $dir, $sfx),
                concat!("pd_lookback4_", $dir, $sfx),
                concat!("pd_lookback8_", $dir, $sfx),
            ],
        }
    };
}

static NAMES: NameTable<KernelNames> = name_table!(kernel_names);

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

plan_kinds! {
    /// Which launch sequence of the contract a plan uses.
    pub enum PdPlanKind {
        /// P0: `pd_<K>_sequential`, one team per problem over all `T` steps.
        Sequential = ("P0", "sequential"),
        /// P1: one `pd_<K>_rescan` with `C = T` and no carries.
        SinglePass = ("P1", "single-pass"),
        /// P2: reduce, Blelloch scan of the `2 ≤ NC ≤ 1024` chunk aggregates, rescan.
        Chunked = ("P2", "chunked"),
        /// P3: reduce, tile scans, top-level scan of the tile totals, apply, rescan.
        TwoLevel = ("P3", "two-level"),
        /// P4: one pass with a decoupled look-back between chunks (every input
        /// read once).
        LookBack = ("P4", "look-back"),
    }
}

/// What one launch of a plan does (it decides the argument list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PdLaunchRole {
    /// P0: `pd_<K>_sequential(perm, d, b, h, hT, h0, B, T, n)`.
    Sequential,
    /// Phase 1: `pd_<K>_reduce(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M)`.
    Reduce,
    /// P2 phase 2: `pd_scan(agg_p, agg_d, agg_b, carry, h0, B, n, NC, M)`.
    Scan,
    /// P3 phase 2a: `pd_scan_tiles(agg_p, agg_d, agg_b, tile_p, tile_d,
    /// tile_b, B, n, NC, M, TL, MT)`.
    ScanTiles,
    /// P3 phase 2b: `pd_scan(tile_p, tile_d, tile_b, tile_carry, h0, B, n, NTL, MT)`.
    ScanTileCarries,
    /// P3 phase 2c: `pd_scan_apply(agg_p, agg_d, agg_b, tile_carry, carry, B, n, NC, M, TL)`.
    ScanApply,
    /// Phase 3 (and P1): `pd_<K>_rescan(perm, d, b, h, hT, carry, h0, B, T, n, C)`.
    Rescan,
    /// P4: `pd_lb_clear(status, words)` zeroes the status words and the ticket.
    LookBackClear,
    /// P4: `pd_lookback<SPL>(perm, d, b, h, hT, h0, status, agg_p, agg_d, agg_b,
    /// carry, B, T, n, C, prefix_every)` (`carry` holds the inclusive prefixes).
    LookBack,
}

/// One kernel launch of a plan.
pub type PdLaunch = KernelLaunch<PdLaunchRole>;

/// Scratch a plan needs, in bytes per buffer (all zero for P0 and P1; the
/// tile buffers only for P3). `V` is the compute type (f32, or f64 for f64).
/// P4 keeps its chunk aggregates in `agg_*` (`B·NC·n` slots, chunk `c` of
/// problem `bb` at `(c·B + bb)·n`), its inclusive prefixes in `carry` and its
/// status words in `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PdScratch {
    /// Aggregate permutations `u8[B·M·n]`.
    pub agg_perm: usize,
    /// Aggregate scales `V[B·M·n]`.
    pub agg_d: usize,
    /// Aggregate offsets `V[B·M·n]`.
    pub agg_b: usize,
    /// Chunk carries `V[B·NC·n]`.
    pub carry: usize,
    /// Tile-total permutations `u8[B·MT·n]` (P3).
    pub tile_perm: usize,
    /// Tile-total scales `V[B·MT·n]` (P3).
    pub tile_d: usize,
    /// Tile-total offsets `V[B·MT·n]` (P3).
    pub tile_b: usize,
    /// Tile carries `V[B·NTL·n]` (P3).
    pub tile_carry: usize,
    /// Look-back status words and ticket `u32[B·NC + 1]` (P4).
    pub status: usize,
}

impl PdScratch {
    /// Sum of the buffers.
    pub fn total(&self) -> usize {
        self.total_bytes()
    }
}

impl ScratchLayout for PdScratch {
    const SLOTS: usize = 9;
    fn slot_bytes(&self, slot: usize) -> usize {
        [
            self.agg_perm,
            self.agg_d,
            self.agg_b,
            self.carry,
            self.tile_perm,
            self.tile_d,
            self.tile_b,
            self.tile_carry,
            self.status,
        ][slot]
    }
    fn from_slots(bytes: impl Fn(usize) -> usize) -> Self {
        PdScratch {
            agg_perm: bytes(0),
            agg_d: bytes(1),
            agg_b: bytes(2),
            carry: bytes(3),
            tile_perm: bytes(4),
            tile_d: bytes(5),
            tile_b: bytes(6),
            tile_carry: bytes(7),
            status: bytes(8),
        }
    }
}

/// A resolved GPU plan for the PD kernels: everything that will be
/// launched, and what it costs, before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdGpuPlan {
    /// What was asked for.
    pub request: PlanRequest,
    /// P0–P4.
    pub kind: PdPlanKind,
    /// Storage type of `d`, `b`, `h0`, `h`, `h_T` (names the kernels).
    pub dtype: DType,
    /// `(B, T, n)`.
    pub shape: PdShape,
    /// Small or wide kernels.
    pub teams: PdTeams,
    /// Steps per chunk `C` (`T` for P0 and P1).
    pub chunk: usize,
    /// Chunks per problem `NC = ⌈T/C⌉`.
    pub chunks: usize,
    /// Width `M` of the scan tree: the power of two `≥ NC` (P2, P3), else 0.
    pub tree: usize,
    /// Aggregates per tile `TL`, a power of two (P3), else 0.
    pub tile: usize,
    /// Tiles per problem `NTL = ⌈NC/TL⌉` (P3), else 0.
    pub tiles: usize,
    /// Width `MT` of the top-level tree: the power of two `≥ NTL` (P3), else 0.
    pub tile_tree: usize,
    /// The launches, in order, for [`PdGpuPlan::dtype`].
    pub launches: Vec<PdLaunch>,
    /// Scratch buffers for [`PdGpuPlan::dtype`].
    pub scratch: PdScratch,
    /// The depth the `_depth` instantiation measures: the maximum over all
    /// outputs of [`PdGpuPlan::depth_at`].
    pub depth: u64,
    /// P4 only, a test hook: chunks publish their inclusive prefix only when
    /// their index is a multiple of this (`1`, the planner's value, is every
    /// chunk). Larger values force successors through the look-back's
    /// aggregate path, which otherwise only timing decides; results stay
    /// exact. Must be ≥ 1.
    pub lookback_prefix_every: u32,
    /// Right to left ([`PdGpuPlan::reversed`]):
    /// `h_t[i] = d_t[i]·h_{t+1}[perm_t[i]] + b_t[i]` from `h0` at `t = T − 1`
    /// down to `t = 0`, `h_T` = the state at `t = 0`. Same launches (the
    /// `_rev_` kernels), scratch and depth as the forward plan, with step `t`
    /// at the forward position `T − 1 − t`.
    pub reverse: bool,
}

impl PdGpuPlan {
    /// Total scratch bytes.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.total()
    }

    /// The measured depth of output step `t` (0-based, `t < T`) of any
    /// problem and slot, by the contract's formula; `h_T` has the depth of
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

    /// The family-independent summary of this plan.
    /// The family-independent summary of this plan.
    pub fn summary(&self) -> KernelPlanSummary {
        KernelPlanSummary {
            kind: self.kind.label().to_string(),
            chunk: self.chunk,
            chunks: self.chunks,
            depth_formula: self.depth,
            scratch_bytes: self.scratch_bytes(),
            plan_bytes: (self.bytes_per_slot() * self.shape.elements() as f64).round() as u64,
            // Depth depends on T, C and the plan kind (P4: and on n, through the
            // team shape), not on B or the dtype.
            depth_key: format!(
                "perm-diagonal/T={}/C={}/{}{}",
                self.shape.len,
                self.chunk,
                self.kind.label(),
                if self.kind == PdPlanKind::LookBack {
                    format!("/n={}", self.shape.n)
                } else {
                    String::new()
                }
            ),
        }
    }

    /// Bytes the plan moves per slot and step (`B·T·n` of them), as counted
    /// here: inputs (`perm` 1 B, `d`, `b`) read once per pass that reads
    /// them (P2/P3: twice), `h` written once, and every scratch byte written
    /// once and read once, except P4's, which is written once and of which a
    /// chunk reads one predecessor's inclusive prefix (the common case; a
    /// folded aggregate adds `9n` B for f32).
    pub fn bytes_per_slot(&self) -> f64 {
        let s = self.dtype.size() as f64;
        let slots = self.shape.elements() as f64;
        let input = 1.0 + 2.0 * s;
        let passes = match self.kind {
            PdPlanKind::Chunked | PdPlanKind::TwoLevel => 2.0,
            _ => 1.0,
        };
        let scratch = self.scratch_bytes() as f64;
        let scratch_traffic = match self.kind {
            PdPlanKind::LookBack => scratch + self.scratch.carry as f64,
            _ => 2.0 * scratch,
        };
        passes * input + s + scratch_traffic / slots
    }

    /// The same plan for the other direction (a forward plan becomes a
    /// reverse one and back): same kind, chunk, scratch and depth; only the
    /// kernel names change. Errors: an edited plan whose launches cannot be
    /// rebuilt.
    pub fn reversed(self) -> Result<PdGpuPlan> {
        let mut plan = PdGpuPlan {
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
            teams: self.teams,
            chunk: self.chunk,
            chunks: self.chunks,
            tree: self.tree,
            tile: self.tile,
            tiles: self.tiles,
            tile_tree: self.tile_tree,
            reverse: self.reverse,
        }
    }
}

impl fmt::Display for PdGpuPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} ({}) {} {} on {} kernels: C={} NC={}, {} launch(es), scratch {} B, depth {}",
            self.kind,
            if self.reverse { " reverse" } else { "" },
            self.request,
            self.dtype,
            self.shape.describe(),
            match self.teams {
                PdTeams::Small => "small",
                PdTeams::Wide => "wide",
            },
            self.chunk,
            self.chunks,
            self.launches.len(),
            self.scratch_bytes(),
            self.depth
        )?;
        if self.tile > 0 {
            write!(f, " (TL={} NTL={})", self.tile, self.tiles)?;
        }
        if self.kind == PdPlanKind::LookBack && self.lookback_prefix_every != 1 {
            write!(f, " prefix every {}", self.lookback_prefix_every)?;
        }
        Ok(())
    }
}

/// The dtype-independent part of a plan.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    kind: PdPlanKind,
    shape: PdShape,
    teams: PdTeams,
    chunk: usize,
    chunks: usize,
    tree: usize,
    tile: usize,
    tiles: usize,
    tile_tree: usize,
    /// The `_rev_` kernels (only the names differ).
    reverse: bool,
}

/// Resolves `request` for a PD problem of `shape` stored as `dtype` on a
/// device with `sm_count` SMs (module docs). Errors: sizes that are not C
/// `int`s ≥ 1, `n > 256`, `Chunk(0)`, more than [`MAX_CHUNKS`] chunks,
/// launch shapes outside CUDA's limits.
pub fn plan_perm_diagonal(
    shape: PdShape,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<PdGpuPlan> {
    shape.validate()?;
    let sm = sm_count.max(1);
    let kt = KernelType::Data(dtype);
    let geometry = match request {
        PlanRequest::Sequential => Geometry::sequential(shape),
        PlanRequest::Chunk(0) => return Err(Error::Plan("chunk=0: expected C ≥ 1".into())),
        PlanRequest::Chunk(c) => Geometry::chunked(shape, c)?,
        // Where the teams alone do not fill the GPU: the look-back (13 B per f32
        // slot and step against P2/P3's 22), unless it does not fit one launch.
        PlanRequest::Auto => match auto_chunk(shape, sm) {
            c if c >= shape.len => Geometry::chunked(shape, c)?,
            // PARASCAN_NO_LOOKBACK (super::lookback_switch): the chunked plan.
            c => match Geometry::lookback(shape) {
                Ok(g) if super::lookback_switch::auto_lookback_allowed() => g,
                _ => Geometry::chunked(shape, c)?,
            },
        },
        PlanRequest::LookBack => Geometry::lookback(shape)?,
        PlanRequest::MinDepth => min_depth_geometry(shape, kt)?,
    };
    Ok(PdGpuPlan {
        request,
        kind: geometry.kind,
        dtype,
        shape,
        teams: geometry.teams,
        chunk: geometry.chunk,
        chunks: geometry.chunks,
        tree: geometry.tree,
        tile: geometry.tile,
        tiles: geometry.tiles,
        tile_tree: geometry.tile_tree,
        launches: geometry.launches(kt)?,
        scratch: geometry.scratch(kt)?,
        depth: geometry.depth(),
        lookback_prefix_every: 1,
        reverse: false,
    })
}

/// The `Auto` chunk (`T` for the single pass).
fn auto_chunk(shape: PdShape, sm: usize) -> usize {
    let t = shape.len;
    let teams = PdTeams::for_n(shape.n);
    let target_warps = sm.saturating_mul(THREADS_PER_SM / 32);
    if teams.warps(shape.n, shape.batch) >= target_warps {
        return t;
    }
    // Chunks per problem so that B·NC teams occupy the target warps.
    let want = target_warps
        .saturating_mul(teams.per_warp(shape.n))
        .div_ceil(shape.batch)
        .min(AUTO_MAX_CHUNKS);
    t.div_ceil(want).max(AUTO_MIN_CHUNK).min(t)
}

/// The least-depth plan among a few candidate chunks whose scratch fits
/// [`MIN_DEPTH_SCRATCH_CAP`] (the single pass always does).
fn min_depth_geometry(shape: PdShape, kt: KernelType) -> Result<Geometry> {
    let t = shape.len;
    let c_min = t.div_ceil(MAX_CHUNKS).max(1);
    let mut candidates = vec![t, c_min];
    candidates.extend(
        (0..=16)
            .map(|k| 1usize << k)
            .filter(|&c| c >= c_min && c < t),
    );
    let mut best: Option<Geometry> = None;
    for c in candidates {
        let g = Geometry::chunked(shape, c)?;
        if g.scratch(kt)?.total() > MIN_DEPTH_SCRATCH_CAP {
            continue;
        }
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
    best.ok_or_else(|| Error::Plan("min-depth: no candidate chunk".into()))
}

/// `TL` of P3 for `nc` chunks: the power of two at or above `√nc`, at least
/// [`MIN_TILE`] (so both levels have about `√nc` elements).
fn p3_tile(nc: usize) -> usize {
    let root = (nc as f64).sqrt().ceil() as usize;
    root.next_power_of_two().max(MIN_TILE)
}

/// The look-back team shape for `n`: `(slots per lane, steps per team K,
/// teams per warp)`, as `kernels/perm_diagonal.cu` derives it.
fn lookback_team(n: usize) -> (usize, usize, usize) {
    let spl = match n {
        0..=32 => 1,
        33..=64 => 2,
        65..=128 => 4,
        _ => 8,
    };
    let k = if spl >= 8 { 1 } else { LOOKBACK_WORK / spl };
    let tpw = if spl == 1 { 32 / n.max(1) } else { 1 };
    (spl, k, tpw)
}

impl Geometry {
    /// The look-back plan P4: `W` warps of `⌊32/n⌋` teams (`n ≤ 32`) or one
    /// team each, a team holding `K` steps, so `C = W·teams·K`; `W` the
    /// power of two (at most 8) that covers `T` with the fewest chunks.
    fn lookback(shape: PdShape) -> Result<Geometry> {
        let (_, k, tpw) = lookback_team(shape.n);
        let per_warp = k * tpw;
        let warps = shape
            .len
            .div_ceil(per_warp)
            .next_power_of_two()
            .clamp(1, LOOKBACK_WARPS);
        let chunk = warps * per_warp;
        let g = Geometry {
            kind: PdPlanKind::LookBack,
            shape,
            teams: PdTeams::for_n(shape.n),
            chunk,
            chunks: shape.len.div_ceil(chunk),
            tree: 0,
            tile: 0,
            tiles: 0,
            tile_tree: 0,
            reverse: false,
        };
        g.lookback_words()?;
        g.launches(KernelType::Depth)?;
        Ok(g)
    }

    /// Warps of a look-back block.
    fn lookback_warps(&self) -> usize {
        let (_, k, tpw) = lookback_team(self.shape.n);
        self.chunk / (k * tpw)
    }

    /// Status words plus the ticket counter, `B·NC + 1` (a C `int`).
    fn lookback_words(&self) -> Result<usize> {
        self.shape
            .batch
            .checked_mul(self.chunks)
            .and_then(|w| w.checked_add(1))
            .filter(|&w| w <= i32::MAX as usize)
            .ok_or_else(|| {
                Error::Plan(format!(
                    "look-back: {} problems × {} chunks of {} steps exceed one launch's 2^31 − 1 \
                     blocks; use chunk=C",
                    self.shape.batch, self.chunks, self.chunk
                ))
            })
    }

    fn sequential(shape: PdShape) -> Geometry {
        Geometry {
            kind: PdPlanKind::Sequential,
            shape,
            teams: PdTeams::for_n(shape.n),
            chunk: shape.len,
            chunks: 1,
            tree: 0,
            tile: 0,
            tiles: 0,
            tile_tree: 0,
            reverse: false,
        }
    }

    /// Chunks of `c ≥ 1` steps: P1 when one chunk covers `T`, else P2.
    fn chunked(shape: PdShape, c: usize) -> Result<Geometry> {
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
        let mut g = Geometry {
            kind: PdPlanKind::SinglePass,
            shape,
            teams: PdTeams::for_n(shape.n),
            chunk: c,
            chunks: nc,
            tree: 0,
            tile: 0,
            tiles: 0,
            tile_tree: 0,
            reverse: false,
        };
        if nc >= 2 {
            g.tree = nc.next_power_of_two();
            g.kind = PdPlanKind::Chunked;
        }
        if nc > ONE_LEVEL_MAX_CHUNKS {
            g.kind = PdPlanKind::TwoLevel;
            g.tile = p3_tile(nc);
            g.tiles = nc.div_ceil(g.tile);
            g.tile_tree = g.tiles.next_power_of_two();
        }
        // Reject launch shapes outside CUDA's limits for every request.
        g.launches(KernelType::Depth)?;
        Ok(g)
    }

    /// The contract's limits (a plan's fields are public and may be edited).
    fn check_contract(&self) -> std::result::Result<(), String> {
        let t = self.shape.len;
        // A look-back chunk is what one block holds and may pass T.
        let too_long = self.chunk > t && self.kind != PdPlanKind::LookBack;
        if self.chunk == 0 || too_long || self.chunks != t.div_ceil(self.chunk) {
            return Err(format!(
                "chunk {} / {} chunks do not split T = {t}",
                self.chunk, self.chunks
            ));
        }
        if self.teams != PdTeams::for_n(self.shape.n) {
            return Err(format!("{:?} kernels for n = {}", self.teams, self.shape.n));
        }
        let no_tiles = self.tile == 0 && self.tiles == 0 && self.tile_tree == 0;
        let tree_ok = self.tree == self.chunks.next_power_of_two();
        let ok = match self.kind {
            PdPlanKind::Sequential | PdPlanKind::SinglePass => {
                self.chunk == t && self.chunks == 1 && self.tree == 0 && no_tiles
            }
            PdPlanKind::Chunked => {
                (2..=ONE_LEVEL_MAX_CHUNKS).contains(&self.chunks) && tree_ok && no_tiles
            }
            PdPlanKind::LookBack => {
                let (_, k, tpw) = lookback_team(self.shape.n);
                let w = self.chunk / (k * tpw);
                self.chunk == w * k * tpw
                    && w.is_power_of_two()
                    && w <= LOOKBACK_WARPS
                    && self.tree == 0
                    && no_tiles
                    && self.lookback_words().is_ok()
            }
            PdPlanKind::TwoLevel => {
                self.chunks > ONE_LEVEL_MAX_CHUNKS
                    && self.chunks <= MAX_CHUNKS
                    && tree_ok
                    && self.tile.is_power_of_two()
                    && self.tile >= 2
                    && self.tile <= self.tree
                    && self.tile <= i32::MAX as usize
                    && self.tiles == self.chunks.div_ceil(self.tile)
                    && self.tile_tree == self.tiles.next_power_of_two()
            }
        };
        if !ok {
            return Err(format!(
                "{} chunks (tree {}) do not fit plan {}",
                self.chunks, self.tree, self.kind
            ));
        }
        Ok(())
    }

    /// The launch sequence for instantiation `kt`.
    fn launches(&self, kt: KernelType) -> Result<Vec<PdLaunch>> {
        let names = NAMES.get(kt, self.reverse);
        let (reduce, rescan, sequential) = match self.teams {
            PdTeams::Small => (
                names.small_reduce,
                names.small_rescan,
                names.small_sequential,
            ),
            PdTeams::Wide => (names.wide_reduce, names.wide_rescan, names.wide_sequential),
        };
        let b = self.shape.batch as u64;
        let units = b * self.chunks as u64;
        let slots = units * self.shape.n as u64;
        // Both kernels: whole warps of teams, CHUNK_BLOCK / 32 warps per block.
        let warps = units.div_ceil(self.teams.per_warp(self.shape.n) as u64);
        let chunk_grid = warps.div_ceil(u64::from(CHUNK_BLOCK) / 32);
        let launch = |role, kernel: &'static str, grid: u64, block: u32| -> Result<PdLaunch> {
            Ok(PdLaunch {
                role,
                kernel,
                cfg: launch_config(kernel, [grid.max(1), 1, 1], block, 0)?,
            })
        };
        Ok(match self.kind {
            PdPlanKind::Sequential => vec![launch(
                PdLaunchRole::Sequential,
                sequential,
                chunk_grid,
                CHUNK_BLOCK,
            )?],
            PdPlanKind::SinglePass => vec![launch(
                PdLaunchRole::Rescan,
                rescan,
                chunk_grid,
                CHUNK_BLOCK,
            )?],
            PdPlanKind::Chunked => vec![
                launch(PdLaunchRole::Reduce, reduce, chunk_grid, CHUNK_BLOCK)?,
                launch(PdLaunchRole::Scan, names.scan, b, SCAN_BLOCK)?,
                launch(PdLaunchRole::Rescan, rescan, chunk_grid, CHUNK_BLOCK)?,
            ],
            PdPlanKind::TwoLevel => vec![
                launch(PdLaunchRole::Reduce, reduce, chunk_grid, CHUNK_BLOCK)?,
                launch(
                    PdLaunchRole::ScanTiles,
                    names.scan_tiles,
                    b * self.tiles as u64,
                    SCAN_BLOCK,
                )?,
                launch(PdLaunchRole::ScanTileCarries, names.scan, b, SCAN_BLOCK)?,
                launch(
                    PdLaunchRole::ScanApply,
                    names.scan_apply,
                    slots.div_ceil(u64::from(SCAN_BLOCK)),
                    SCAN_BLOCK,
                )?,
                launch(PdLaunchRole::Rescan, rescan, chunk_grid, CHUNK_BLOCK)?,
            ],
            PdPlanKind::LookBack => {
                let words = self.lookback_words()? as u64;
                vec![
                    launch(
                        PdLaunchRole::LookBackClear,
                        LB_CLEAR,
                        words.div_ceil(u64::from(CLEAR_BLOCK)),
                        CLEAR_BLOCK,
                    )?,
                    launch(
                        PdLaunchRole::LookBack,
                        names.lookback[lookback_team(self.shape.n).0.trailing_zeros() as usize],
                        units,
                        32 * self.lookback_warps() as u32,
                    )?,
                ]
            }
        })
    }

    /// Scratch bytes for instantiation `kt`.
    fn scratch(&self, kt: KernelType) -> Result<PdScratch> {
        if !matches!(
            self.kind,
            PdPlanKind::Chunked | PdPlanKind::TwoLevel | PdPlanKind::LookBack
        ) {
            return Ok(PdScratch::default());
        }
        // Slot counts whose 8-byte values still fit a usize.
        let slots = |items: usize| {
            self.shape
                .batch
                .checked_mul(items)
                .and_then(|x| x.checked_mul(self.shape.n))
                .and_then(|x| x.checked_mul(8))
                .map(|x| x / 8)
                .ok_or_else(|| {
                    Error::Plan(format!(
                        "scratch of {} problems × {items} chunks × {} slots does not fit in memory",
                        self.shape.batch, self.shape.n
                    ))
                })
        };
        let tree = slots(self.tree)?;
        let carry = slots(self.chunks)?;
        let tile_tree = slots(self.tile_tree)?;
        let tile_carry = slots(self.tiles)?;
        let v = kt.value_bytes();
        if self.kind == PdPlanKind::LookBack {
            let chunk_slots = slots(self.chunks)?;
            return Ok(PdScratch {
                agg_perm: chunk_slots,
                agg_d: chunk_slots * v,
                agg_b: chunk_slots * v,
                carry: chunk_slots * v,
                status: self.lookback_words()? * 4,
                ..PdScratch::default()
            });
        }
        Ok(PdScratch {
            agg_perm: tree,
            agg_d: tree * v,
            agg_b: tree * v,
            carry: carry * v,
            tile_perm: tile_tree,
            tile_d: tile_tree * v,
            tile_b: tile_tree * v,
            tile_carry: tile_carry * v,
            status: 0,
        })
    }

    // --- depth (the contract's DEPTH section) ------------------------------

    /// Carry depth `dc(c)` of chunk `c`.
    fn carry_depth(&self, c: u64) -> u64 {
        let l = self.chunk as u64;
        match self.kind {
            PdPlanKind::Sequential | PdPlanKind::SinglePass => 0,
            PdPlanKind::LookBack => self.lookback_carry_depth(c),
            PdPlanKind::Chunked => prefix_depth(l, c) + 1,
            PdPlanKind::TwoLevel => {
                let tl = self.tile as u64;
                let (j, r) = (c / tl, c % tl);
                prefix_depth(l, r).max(prefix_depth(l + ceil_log2(self.tile), j) + 1) + 1
            }
        }
    }

    /// `max dc(c)` over `0 ≤ c < m` (`m ≥ 1`).
    fn max_carry_depth(&self, m: u64) -> u64 {
        let l = self.chunk as u64;
        match self.kind {
            PdPlanKind::Sequential | PdPlanKind::SinglePass => 0,
            PdPlanKind::LookBack => self.lookback_carry_depth(m - 1),
            PdPlanKind::Chunked => max_prefix_depth(l, m) + 1,
            PdPlanKind::TwoLevel => {
                // The deepest in-tile prefix and the deepest tile carry are each
                // reached by some chunk below m (r alone in tile 0; j with r = 0).
                let tl = self.tile as u64;
                let lt = l + ceil_log2(self.tile);
                max_prefix_depth(l, m.min(tl)).max(max_prefix_depth(lt, m.div_ceil(tl)) + 1) + 1
            }
        }
    }

    /// P4's carry-in depth of chunk `c` on the `_depth` kernels' worst case
    /// (every block waits for its predecessor's inclusive prefix): 0 for
    /// `c = 0`, else `K + nt − 1 + c` (a full chunk's total folds its `nt`
    /// team aggregates of depth `K`; each prefix is one apply deeper).
    fn lookback_carry_depth(&self, c: u64) -> u64 {
        if c == 0 {
            return 0;
        }
        let (_, k, tpw) = lookback_team(self.shape.n);
        let nt = (self.lookback_warps() * tpw) as u64;
        k as u64 + nt - 1 + c
    }

    /// P4's depth of output step `t`: team `g` (steps `g·K ..` of chunk `c`)
    /// starts from `hin` (`g = 0`) or `apply(W_g, hin)`, `W_g` its exclusive
    /// prefix of depth `K + g − 1`; each step adds one.
    fn lookback_depth_at(&self, t: u64) -> u64 {
        let (_, k, _) = lookback_team(self.shape.n);
        let (k, c_len) = (k as u64, self.chunk as u64);
        let hin = self.lookback_carry_depth(t / c_len);
        let s = t % c_len;
        let (g, u) = (s / k, s % k);
        let start = if g == 0 {
            hin
        } else {
            (k + g - 1).max(hin) + 1
        };
        start + u + 1
    }

    /// The measured depth of output step `t` (0-based).
    fn depth_at(&self, t: u64) -> u64 {
        if self.kind == PdPlanKind::LookBack {
            return self.lookback_depth_at(t);
        }
        let c_len = self.chunk as u64;
        self.carry_depth(t / c_len) + t % c_len + 1
    }

    /// The maximum of [`Geometry::depth_at`] over all steps: depth grows
    /// along a chunk and with the carry depth, so the last step of the last
    /// chunk and of the deepest full chunk decide (P4: the last two chunks,
    /// whose carry-ins are the deepest, step by step).
    fn depth(&self) -> u64 {
        if self.kind == PdPlanKind::LookBack {
            let t = self.shape.len as u64;
            let from = (self.chunks as u64).saturating_sub(2) * self.chunk as u64;
            return (from..t)
                .map(|x| self.lookback_depth_at(x))
                .max()
                .unwrap_or(0);
        }
        let t = self.shape.len as u64;
        let c_len = self.chunk as u64;
        let nc = self.chunks as u64;
        let last_len = t - (nc - 1) * c_len;
        let mut best = self.carry_depth(nc - 1) + last_len;
        if nc >= 2 {
            best = best.max(self.max_carry_depth(nc - 1) + c_len);
        }
        best
    }
}

// ---------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------

/// The PermDiagonal kernels' scratch buffers (the [`PdScratch`] fields, in
/// order), reused across calls: see [`Workspace`].
pub type PdWorkspace = Workspace<PdScratch>;

// ---------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------

/// Device addresses of one PD scan (a `CUdeviceptr` on CUDA, a host address
/// in the emulator; [`DeviceBuffer::ptr`] plus a byte offset).
///
/// Sizes in elements: `perm` (`u8`), `d`, `b`, `h` (storage type):
/// `B·T·n`, layout `[B,T,n]`; `h0`, `h_t`: `B·n`, layout `[B,n]`.
/// `h0 = None` (or `Some(0)`) means zeros; `h = None` computes only `h_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PdIo {
    /// Permutations, one row of `n` bytes per step.
    pub perm: u64,
    /// Scales `d`.
    pub d: u64,
    /// Inputs `b`.
    pub b: u64,
    /// All states (output).
    pub h: Option<u64>,
    /// Initial state and final state (output), `[B,n]` each.
    pub ends: Ends,
}

/// The same as [`PdIo`], as buffers whose sizes are checked: each must hold
/// exactly the bytes its shape implies.
#[derive(Debug)]
pub struct PdBuffers<'a> {
    /// `perm`: `B·T·n` bytes.
    pub perm: DeviceRef<'a>,
    /// `d`: `B·T·n` elements.
    pub d: DeviceRef<'a>,
    /// `b`: `B·T·n` elements.
    pub b: DeviceRef<'a>,
    /// `h`: `B·T·n` elements, or only `h_t` is computed.
    pub h: Option<DeviceMut<'a>>,
    /// `h0` (or zeros) and `h_t`: `[B,n]` each.
    pub ends: EndBuffers<'a>,
}

/// A plan must meet the launch contract and be consistent (its fields are
/// public, so it may have been edited since [`plan_perm_diagonal`]).
fn check_plan(plan: &PdGpuPlan) -> Result<()> {
    plan.shape.validate()?;
    let g = plan.geometry();
    g.check_contract().map_err(|why| {
        Error::Plan(format!(
            "{why} in {plan}; make plans with plan_perm_diagonal"
        ))
    })?;
    if plan.lookback_prefix_every == 0 {
        return Err(Error::Plan(format!(
            "lookback_prefix_every = 0 in {plan}: expected ≥ 1"
        )));
    }
    let kt = KernelType::Data(plan.dtype);
    if g.launches(kt)? != plan.launches || g.scratch(kt)? != plan.scratch || g.depth() != plan.depth
    {
        return Err(Error::Plan(format!(
            "the launches, scratch or depth of {plan} do not follow from its fields; make plans \
             with plan_perm_diagonal"
        )));
    }
    Ok(())
}

impl FamilyPlan for PdGpuPlan {
    type Io = PdIo;
    type Buffers<'a> = PdBuffers<'a>;
    type Scratch = PdScratch;

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn summary(&self) -> KernelPlanSummary {
        PdGpuPlan::summary(self)
    }

    fn check(&self) -> Result<()> {
        check_plan(self)
    }

    fn scratch(&self, depth: bool) -> Result<PdScratch> {
        if depth {
            self.geometry().scratch(KernelType::Depth)
        } else {
            Ok(self.scratch)
        }
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.shape.elements(), self.shape.states())
    }

    fn io_args(&self, io: &PdIo) -> Vec<IoArg> {
        let size = self.dtype.size();
        let (n, states) = (self.shape.elements(), self.shape.states());
        let [h0, h_t] = io.ends.args(states, size);
        vec![
            IoArg::new("perm", io.perm, n, 1, true),
            IoArg::new("d", io.d, n, size, true),
            IoArg::new("b", io.b, n, size, true),
            h0,
            IoArg::new("h", io.h.unwrap_or(0), n, size, false),
            h_t,
        ]
    }

    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &PdBuffers<'_>) -> Result<PdIo> {
        let size = ElemType::of_dtype(self.dtype);
        let (n, states) = (self.shape.elements(), self.shape.states());
        let full = || self.shape.describe();
        let bn = || self.shape.describe_bn();
        check_arg(runner, "perm", &bufs.perm, n, ElemType::of::<u8>(), full)?;
        check_arg(runner, "d", &bufs.d, n, size, full)?;
        check_arg(runner, "b", &bufs.b, n, size, full)?;
        if let Some(h) = &bufs.h {
            check_arg(runner, "h", &h.0, n, size, full)?;
        }
        Ok(PdIo {
            perm: bufs.perm.addr,
            d: bufs.d.addr,
            b: bufs.b.addr,
            h: bufs.h.as_ref().map(|m| m.0.addr),
            ends: bufs.ends.check(runner, states, size, bn)?,
        })
    }

    fn depth_io(&self, out: u64, last: u64) -> PdIo {
        PdIo {
            h: Some(out),
            ends: Ends::last(last),
            ..PdIo::default()
        }
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &PdWorkspace,
        io: PdIo,
        depth: bool,
    ) -> Result<()> {
        if depth {
            let launches = self.geometry().launches(KernelType::Depth)?;
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
/// The addresses address live memory of `runner` of the sizes the plan's
/// shape implies, and the plan passed `check_plan`.
unsafe fn issue<R: KernelRunner>(
    runner: &R,
    plan: &PdGpuPlan,
    launches: &[PdLaunch],
    ws: &PdWorkspace,
    io: PdIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let inputs = [io.perm, io.d, io.b].map(Ptr);
    let ends = [io.ends.h0.unwrap_or(0), io.h.unwrap_or(0)].map(Ptr);
    let steps = Steps::Unpacked {
        ht: Ptr(io.ends.h_t),
    };
    for l in launches {
        let args = launch_args(plan, ws, l.role, inputs, ends, steps)?;
        // SAFETY: each kernel gets the buffers its launch contract names for
        // this role, sized by the plan's shape (the caller's obligation) and
        // its scratch (reserved in the workspace).
        unsafe { runner.launch(l.kernel, l.cfg, &args) }?;
    }
    Ok(())
}

/// The arguments of a launch of role `role` of `plan`, on the inputs
/// `[perm, d, b]`, `[h0, h]` and the scratch in `ws`: for the unpacked
/// kernels (`kernels/perm_diagonal.cu`) or their packed twins
/// (`kernels/varlen_perm.cu`, which take the same buffers plus the
/// sequence starts), as `steps` says.
pub(crate) fn launch_args(
    plan: &PdGpuPlan,
    ws: &PdWorkspace,
    role: PdLaunchRole,
    [perm, d, b]: [KernelArg; 3],
    [h0, h]: [KernelArg; 2],
    steps: Steps,
) -> Result<Vec<KernelArg>> {
    use KernelArg::Ptr;
    let (bs, t, n) = (
        i32_arg(plan.shape.batch),
        i32_arg(plan.shape.len),
        i32_arg(plan.shape.n),
    );
    let (c, nc, m) = (
        i32_arg(plan.chunk),
        i32_arg(plan.chunks),
        i32_arg(plan.tree),
    );
    let (tl, ntl, mt) = (
        i32_arg(plan.tile),
        i32_arg(plan.tiles),
        i32_arg(plan.tile_tree),
    );
    let [agg_p, agg_d, agg_b, carry, tile_p, tile_d, tile_b, tile_carry, status] =
        std::array::from_fn(|i| Ptr(ws.ptr(i)));
    let every = KernelArg::I32(i32::try_from(plan.lookback_prefix_every).unwrap_or(i32::MAX));
    // P0/P1 run without carries: their one chunk starts from h0 (packed:
    // from its first element, a sequence start, which holds its h0).
    let rescan_carry = if matches!(plan.kind, PdPlanKind::Chunked | PdPlanKind::TwoLevel) {
        carry
    } else {
        Ptr(0)
    };
    let seed = steps.seed(h0);
    Ok(match (role, steps) {
        (PdLaunchRole::Scan, _) => vec![agg_p, agg_d, agg_b, carry, seed, bs, n, nc, m],
        (PdLaunchRole::ScanTiles, _) => {
            vec![
                agg_p, agg_d, agg_b, tile_p, tile_d, tile_b, bs, n, nc, m, tl, mt,
            ]
        }
        (PdLaunchRole::ScanTileCarries, _) => {
            vec![tile_p, tile_d, tile_b, tile_carry, seed, bs, n, ntl, mt]
        }
        (PdLaunchRole::ScanApply, _) => {
            vec![agg_p, agg_d, agg_b, tile_carry, carry, bs, n, nc, m, tl]
        }
        (PdLaunchRole::LookBackClear, _) => vec![status, i32_arg(plan.scratch.status / 4)],
        (PdLaunchRole::Sequential, Steps::Unpacked { ht }) => {
            vec![perm, d, b, h, ht, h0, bs, t, n]
        }
        (PdLaunchRole::Reduce, Steps::Unpacked { .. }) => {
            vec![perm, d, b, agg_p, agg_d, agg_b, bs, t, n, c, m]
        }
        (PdLaunchRole::Rescan, Steps::Unpacked { ht }) => {
            vec![perm, d, b, h, ht, rescan_carry, h0, bs, t, n, c]
        }
        (PdLaunchRole::LookBack, Steps::Unpacked { ht }) => vec![
            perm, d, b, h, ht, h0, status, agg_p, agg_d, agg_b, carry, bs, t, n, c, every,
        ],
        // The packed P0 is the packed rescan of one chunk of T steps.
        (PdLaunchRole::Sequential, Steps::Packed { seg, seqs }) => {
            vec![perm, d, b, seg, h0, h, Ptr(0), bs, t, n, t, seqs]
        }
        (PdLaunchRole::Reduce, Steps::Packed { seg, seqs }) => vec![
            perm, d, b, seg, h0, agg_p, agg_d, agg_b, bs, t, n, c, m, seqs,
        ],
        (PdLaunchRole::Rescan, Steps::Packed { seg, seqs }) => {
            vec![perm, d, b, seg, h0, h, rescan_carry, bs, t, n, c, seqs]
        }
        (PdLaunchRole::LookBack, Steps::Packed { seg, seqs }) => vec![
            perm, d, b, seg, h0, h, status, agg_p, agg_d, agg_b, carry, bs, t, n, c, seqs, every,
        ],
    })
}

// ---------------------------------------------------------------------------
// Host convenience and depth measurement
// ---------------------------------------------------------------------------

/// A PermDiagonal problem's uploaded inputs: `perm` (`u8`), `d`, `b` and
/// `h0` (if any).
pub type PdInputs = (
    DeviceBuffer,
    DeviceBuffer,
    DeviceBuffer,
    Option<DeviceBuffer>,
);

/// Outputs `h` at `out` and `h_T` at `last`.
impl BindInputs<PdGpuPlan> for PdInputs {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> PdBuffers<'a> {
        let (perm, d, b, h0) = self;
        PdBuffers {
            perm: perm.into(),
            d: d.into(),
            b: b.into(),
            h: Some(out.into()),
            ends: EndBuffers::new(h0.as_ref().map(Into::into), last.into()),
        }
    }
}

/// Runs a host-side PD problem right to left on `runner`
/// ([`scan_host_planned`](super::scan_host_planned) with
/// [`PdGpuPlan::reversed`]): `h_t[i] = d_t[i]·h_{t+1}[perm_t[i]] + b_t[i]`
/// from `h0` (the state entering `t = T − 1`) down to `t = 0`. Returns
/// `(h, h_T, plan)`, `h_T` the state at `t = 0`. Any index type whose
/// problem runs on the kernels (`u16`/`u32` rows are narrowed on upload).
pub fn scan_perm_diagonal_reverse<R, S, P>(
    runner: &R,
    ws: &mut PdWorkspace,
    problem: &PermDiagonal<'_, S, P>,
    request: PlanRequest,
) -> Result<(Vec<S>, Vec<S>, PdGpuPlan)>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
    P: crate::family::perm_diagonal::PermIndex,
    for<'p> PermDiagonal<'p, S, P>: KernelScan<Elem = S, Plan = PdGpuPlan>,
{
    // The forward planner's checks (shapes, every row, n against the
    // kernels' limit), then the reverse plan of the same request.
    let fwd = problem.plan(runner.sm_count(), request)?;
    let plan = plan_perm_diagonal(fwd.shape, S::DTYPE, request, runner.sm_count())?.reversed()?;
    super::scan_host_planned(runner, ws, problem, plan)
}

impl<S: Storage + bytemuck::Pod> KernelScan for PermDiagonal<'_, S, u8> {
    type Elem = S;
    type Plan = PdGpuPlan;
    /// `perm`, `d`, `b`, `h0`.
    type Inputs = PdInputs;

    /// Validates shapes and every `perm` row, then plans.
    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<PdGpuPlan> {
        self.validate()?;
        let shape = PdShape::new(self.batch, self.len, self.n);
        plan_perm_diagonal(shape, S::DTYPE, request, sm_count)
    }

    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
        Ok((
            runner.upload(self.perm)?,
            runner.upload(self.d)?,
            runner.upload(self.b)?,
            self.h0.map(|h0| runner.upload(h0)).transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(b: usize, t: usize, n: usize, request: PlanRequest, sm: usize) -> PdGpuPlan {
        plan_perm_diagonal(PdShape::new(b, t, n), DType::F32, request, sm).unwrap()
    }

    fn brute_max_depth(p: &PdGpuPlan) -> u64 {
        (0..p.shape.len).map(|t| p.depth_at(t)).max().unwrap()
    }

    #[test]
    fn contract_worked_example() {
        // T = 1024, C = 64: NC = 16, depth 136; sequential 1024.
        let p = plan(1, 1024, 5, PlanRequest::Chunk(64), 132);
        assert_eq!((p.kind, p.chunks, p.tree), (PdPlanKind::Chunked, 16, 16));
        assert_eq!(p.depth, 136);
        assert_eq!(plan(1, 1024, 5, PlanRequest::Sequential, 132).depth, 1024);
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
            PlanRequest::Chunk(5000),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
            PlanRequest::LookBack,
        ];
        for t in [1, 2, 5, 17, 64, 255, 1000, 1025, 2049, 9000, 20_000, 70_000] {
            for &r in &requests {
                for n in [2, 5, 64, 200] {
                    let p = plan(2, t, n, r, 2);
                    assert_eq!(p.depth, brute_max_depth(&p), "{p}");
                }
            }
        }
    }

    #[test]
    fn kinds_teams_and_launches() {
        let p = plan(3, 100, 5, PlanRequest::Sequential, 2);
        assert_eq!((p.kind, p.teams), (PdPlanKind::Sequential, PdTeams::Small));
        assert_eq!(p.launches[0].kernel, "pd_small_sequential_f32");
        // 3 teams of 8 lanes: one block of 128.
        assert_eq!(p.launches[0].cfg.grid[0], 1);
        let p = plan(3, 100, 5, PlanRequest::Chunk(100), 2);
        assert_eq!(p.kind, PdPlanKind::SinglePass);
        assert_eq!(p.launches.len(), 1);
        let p = plan(3, 100, 64, PlanRequest::Chunk(7), 2);
        assert_eq!((p.kind, p.teams), (PdPlanKind::Chunked, PdTeams::Wide));
        assert_eq!((p.chunks, p.tree), (15, 16));
        let kernels: Vec<&str> = p.launches.iter().map(|l| l.kernel).collect();
        assert_eq!(
            kernels,
            ["pd_wide_reduce_f32", "pd_scan_f32", "pd_wide_rescan_f32"]
        );
        // 45 warps, 4 per block.
        assert_eq!(p.launches[0].cfg.grid[0], 12);
        assert_eq!(p.launches[1].cfg.grid[0], 3);
        // More than ONE_LEVEL_MAX_CHUNKS chunks: two levels, 5 launches.
        let p = plan(2, 5000, 64, PlanRequest::Chunk(1), 2);
        assert_eq!(p.kind, PdPlanKind::TwoLevel);
        assert_eq!((p.tree, p.tile, p.tiles, p.tile_tree), (8192, 128, 40, 64));
        let kernels: Vec<&str> = p.launches.iter().map(|l| l.kernel).collect();
        assert_eq!(
            kernels,
            [
                "pd_wide_reduce_f32",
                "pd_scan_tiles_f32",
                "pd_scan_f32",
                "pd_scan_apply_f32",
                "pd_wide_rescan_f32"
            ]
        );
        assert_eq!(p.launches[1].cfg.grid[0], 80);
        assert_eq!(p.launches[3].cfg.grid[0], 2 * 5000 * 64 / 256);
        assert_eq!(
            plan(1, ONE_LEVEL_MAX_CHUNKS, 5, PlanRequest::Chunk(1), 2).kind,
            PdPlanKind::Chunked
        );
        assert_eq!(
            plan(1, ONE_LEVEL_MAX_CHUNKS + 1, 5, PlanRequest::Chunk(1), 2).kind,
            PdPlanKind::TwoLevel
        );
        assert_eq!(plan(1, 10, 32, PlanRequest::Auto, 2).teams, PdTeams::Small);
        assert_eq!(plan(1, 10, 33, PlanRequest::Auto, 2).teams, PdTeams::Wide);
        assert!(matches!(
            plan_perm_diagonal(PdShape::new(1, 9, 4), DType::F32, PlanRequest::Chunk(0), 2),
            Err(Error::Plan(_))
        ));
        assert!(matches!(
            plan_perm_diagonal(PdShape::new(1, 9, 257), DType::F32, PlanRequest::Auto, 2),
            Err(Error::Size { arg: "n", .. })
        ));
        assert!(matches!(
            plan_perm_diagonal(PdShape::new(1, 0, 4), DType::F32, PlanRequest::Auto, 2),
            Err(Error::Size { arg: "len", .. })
        ));
        assert!(matches!(
            plan_perm_diagonal(
                PdShape::new(1, MAX_CHUNKS + 1, 4),
                DType::F32,
                PlanRequest::Chunk(1),
                2
            ),
            Err(Error::Plan(_))
        ));
    }

    #[test]
    fn auto_rules() {
        // Few problems, long T: teams alone do not fill 132 SMs × 2048 threads, so
        // the look-back, which reads every input once.
        let p = plan(16, 1 << 20, 5, PlanRequest::Auto, 132);
        assert_eq!(p.kind, PdPlanKind::LookBack);
        // 8 warps of 6 teams of 16 steps.
        assert_eq!((p.chunk, p.launches[1].cfg.block[0]), (768, 256), "{p}");
        assert!(p.bytes_per_slot() <= 14.0, "{p}: {}", p.bytes_per_slot());
        let p = plan(16, 1 << 20, 64, PlanRequest::Auto, 132);
        assert_eq!(p.kind, PdPlanKind::LookBack);
        assert_eq!(p.chunk, 64, "{p}");
        assert!(p.bytes_per_slot() <= 14.0, "{p}: {}", p.bytes_per_slot());
        let p = plan(1, 1 << 20, 64, PlanRequest::Auto, 132);
        assert_eq!(p.kind, PdPlanKind::LookBack);
        assert_eq!(p.launches[1].cfg.grid[0] as usize, p.chunks);
        // Problems fill the GPU: single pass.
        let p = plan(60_000, 100, 5, PlanRequest::Auto, 132);
        assert_eq!(p.kind, PdPlanKind::SinglePass);
        // Short T: single pass.
        assert_eq!(
            plan(1, 50, 5, PlanRequest::Auto, 132).kind,
            PdPlanKind::SinglePass
        );
        // Bytes per slot and step (f32): 13 for one pass, 22 and more for P2/P3.
        let p1 = plan(60_000, 100, 5, PlanRequest::Auto, 132);
        assert!((p1.bytes_per_slot() - 13.0).abs() < 1e-9);
        let p2 = plan(16, 1 << 20, 64, PlanRequest::Chunk(1024), 132);
        assert!(p2.bytes_per_slot() > 22.0, "{p2}");
    }

    #[test]
    fn lookback_geometry() {
        // (n, T) -> (chunk, warps): K·teams per warp·W.
        for (n, t, chunk, warps) in [
            (5, 1 << 20, 768, 8),
            (5, 100, 192, 2),
            (1, 1 << 20, 4096, 8),
            (32, 10_000, 128, 8),
            (64, 10_000, 64, 8),
            (100, 10_000, 32, 8),
            (256, 10_000, 8, 8),
            (256, 3, 4, 4),
            (7, 1, 64, 1),
        ] {
            let p = plan(3, t, n, PlanRequest::LookBack, 132);
            assert_eq!(p.kind, PdPlanKind::LookBack);
            assert_eq!(
                (p.chunk, p.launches[1].cfg.block[0] as usize),
                (chunk, 32 * warps),
                "{p}"
            );
            assert_eq!(p.chunks, t.div_ceil(chunk));
            assert_eq!(p.launches[1].cfg.grid[0] as usize, 3 * p.chunks);
            assert_eq!(p.scratch.status, 4 * (3 * p.chunks + 1));
            assert_eq!(p.scratch.carry, 4 * 3 * p.chunks * n);
            assert_eq!(p.launches[0].kernel, "pd_lb_clear");
            let spl = match n {
                0..=32 => 1,
                33..=64 => 2,
                65..=128 => 4,
                _ => 8,
            };
            assert_eq!(p.launches[1].kernel, format!("pd_lookback{spl}_f32"));
        }
        // Worked example: n = 5, T = 2000: C = 768 (K = 16, nt = 48), NC = 3; chunk 2
        // starts from depth 16 + 47 + 2 = 65; its team 40 (steps 1280 + 640 ..) from
        // max(16 + 39, 65) + 1 = 66, so t = 1999 (u = 15) has depth 82.
        let p = plan(1, 2000, 5, PlanRequest::LookBack, 132);
        assert_eq!(p.depth_at(1999), 82);
    }

    #[test]
    fn min_depth_is_minimal_and_capped() {
        for t in [1usize, 3, 40, 1000, 70_000] {
            let best = plan(1, t, 4, PlanRequest::MinDepth, 2);
            for k in 0..17 {
                let p = plan(1, t, 4, PlanRequest::Chunk(1 << k), 2);
                assert!(best.depth <= p.depth, "{best} vs {p}");
            }
        }
        // B = 16, T = 2^20, n = 64 at C = 1 would need ~10 GB of scratch.
        let p = plan(16, 1 << 20, 64, PlanRequest::MinDepth, 132);
        assert!(p.scratch_bytes() <= MIN_DEPTH_SCRATCH_CAP, "{p}");
        assert!(p.chunks > 1);
    }

    #[test]
    fn scratch_sizes() {
        let p = plan_perm_diagonal(
            PdShape::new(2, 100, 3),
            DType::F64,
            PlanRequest::Chunk(10),
            2,
        )
        .unwrap();
        // NC = 10, M = 16.
        assert_eq!(p.scratch.agg_perm, 2 * 16 * 3);
        assert_eq!(p.scratch.agg_d, 2 * 16 * 3 * 8);
        assert_eq!(p.scratch.carry, 2 * 10 * 3 * 8);
        assert_eq!(p.scratch.tile_perm, 0);
        assert_eq!(
            plan(2, 100, 3, PlanRequest::Sequential, 2).scratch_bytes(),
            0
        );
        // P3: NC = 2000, M = 2048, TL = 64, NTL = 32 = MT.
        let p = plan(2, 2000, 3, PlanRequest::Chunk(1), 2);
        assert_eq!((p.tile, p.tiles, p.tile_tree), (64, 32, 32));
        assert_eq!(p.scratch.agg_perm, 2 * 2048 * 3);
        assert_eq!(p.scratch.tile_perm, 2 * 32 * 3);
        assert_eq!(p.scratch.tile_d, 2 * 32 * 3 * 4);
        assert_eq!(p.scratch.tile_carry, 2 * 32 * 3 * 4);
        assert_eq!(p.scratch.carry, 2 * 2000 * 3 * 4);
    }
}
