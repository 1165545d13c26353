//! Packed variable-length batches (`cu_seqlens`) on the Diagonal kernels
//! (`kernels/varlen.cu`), every plan (P0–P4, the look-back included).
//!
//! A sequence boundary is a segment boundary of the scan: the reset and the
//! sequence's initial state are folded into its first step, which becomes
//! the element `(0, a·h0_s + b)`; a zero transition absorbs everything
//! before it, so the chunk aggregates, the phase-2 scans and the look-back
//! payloads are the unpacked scan's, unchanged (`kernels/varlen.cu`'s
//! header gives the algebra and why the absorption is made exact there).
//! The plan is the unpacked `[B,T,D]` plan of the packed length `T`, with
//! every data launch replaced by its packed twin, plus one launch that
//! gathers the final state of each sequence from the output `h` (or its
//! `h0` for an empty sequence). The sequence-start words the kernels read
//! (`T + N + 1` u32: per step `s + 1` where sequence `s` starts, then the
//! offsets) are built by the planner from the offsets and uploaded with
//! the launches; the inputs are never copied.
//!
//! ```
//! use parascan::backend::emu::EmuBackend;
//! use parascan::family::{diagonal::Diagonal, varlen::Varlen, Layout};
//! use parascan::kernels::KernelScan;
//! use parascan::PlanRequest;
//!
//! let (t, dim) = (12, 4);
//! let cu_seqlens = [0i32, 5, 5, 12]; // three sequences: 5, 0 and 7 steps
//! let a = vec![0.9f32; t * dim];
//! let b = vec![0.1f32; t * dim];
//! let h0 = vec![1.0f32; 3 * dim]; // [N,D]
//! let problem = Diagonal { a: &a, b: &b, h0: None, batch: 1, len: t, dim, layout: Layout::Btd };
//! let packed = Varlen::new(problem, &cu_seqlens, Some(&h0))?;
//! let run = packed.kernel_scan(&EmuBackend::forward(), PlanRequest::Chunk(4))?;
//! assert_eq!(run.h_last.len(), 3 * dim); // h_T: [N,D]
//! assert_eq!(&run.h_last[dim..2 * dim], &h0[dim..2 * dim]); // empty: h_T = h0
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! Limits (typed errors before any launch): Diagonal in the `[B,T,D]`
//! layout only (`Error::Unsupported` naming `layout`), forward scans only,
//! no depth-counting run (a packed plan's launches have the unpacked
//! plan's depth: measure that one). The same technique on the other
//! families: [`super::varlen_perm`] (PermDiagonal) and
//! [`super::varlen_block`] (BlockDiagonal); DPLR runs packed batches on
//! the CPU engine.

use std::fmt;

use super::common::{check_int, i32_arg};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::diagonal::{
    lookback_parts, plan_diagonal_btd_kernels, DiagShape, DiagonalWorkspace, GpuPlan, GpuPlanKind,
    LaunchRole, ScratchSizes,
};
use super::face::{BindInputs, FamilyPlan, IoArg, Workspace};
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::diagonal::Diagonal;
use crate::family::varlen::Varlen;
use crate::family::{Layout, LinearProblem};
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed Diagonal plan: the unpacked `[B,T,D]` plan of the packed
/// length plus the sequences. Make it with [`plan_diagonal_varlen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarlenPlan {
    /// The unpacked plan (`[B,T,D]` kernels, `T` the packed length); its
    /// launches are replaced by their packed twins when issued.
    pub inner: GpuPlan,
    /// Offsets `[0, …, T]` (`N + 1` entries).
    offsets: Vec<usize>,
    /// What the kernels read: per step `s + 1` where the non-empty
    /// sequence `s` starts (else 0), then the offsets as u32.
    words: Vec<u32>,
}

/// Plans a packed Diagonal scan: `shape` is `(B, T, D)` with `T` the
/// packed length, `cu_seqlens` the `N + 1` offsets (checked:
/// [`Error::SeqOffsets`] naming `cu_seqlens`), `[B,T,D]` layout.
pub fn plan_diagonal_varlen<O: SeqOffset>(
    shape: DiagShape,
    cu_seqlens: &[O],
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenPlan> {
    let segs = Segments::new("cu_seqlens", cu_seqlens, shape.len)?;
    plan_segments(shape, &segs, dtype, request, sm_count)
}

fn plan_segments(
    shape: DiagShape,
    segs: &Segments,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenPlan> {
    let inner = plan_diagonal_btd_kernels(shape, dtype, request, sm_count)?;
    check_int("sequences", segs.count())?;
    crate::mem::checked_product(
        "h_t",
        &[
            ("batch", shape.batch),
            ("sequences", segs.count()),
            ("dim", shape.dim),
            ("bytes per element", 16),
        ],
    )?;
    let offsets = segs.offsets().to_vec();
    Ok(VarlenPlan {
        words: words(&offsets, shape.len),
        offsets,
        inner,
    })
}

/// The kernels' words: sequence starts per step, then the offsets.
pub(super) fn words(offsets: &[usize], t: usize) -> Vec<u32> {
    let mut w = vec![0u32; t + offsets.len()];
    for (s, o) in offsets.windows(2).enumerate() {
        if o[1] > o[0] {
            w[o[0]] = s as u32 + 1;
        }
    }
    for (i, &o) in offsets.iter().enumerate() {
        w[t + i] = o as u32;
    }
    w
}

impl VarlenPlan {
    /// Sequences `N`.
    pub fn sequences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The offsets `[0, …, T]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn states(&self) -> usize {
        self.inner.shape.batch * self.sequences() * self.inner.shape.dim
    }
}

impl fmt::Display for VarlenPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} over {} packed sequences",
            self.inner,
            self.sequences()
        )
    }
}

/// Device addresses of one packed Diagonal scan. Sizes in elements of the
/// storage type: `a`, `b`, `h`: `B·T·D` (`[B,T,D]`, `T` packed); `h0`,
/// `h_t`: `B·N·D` (`[B,N,D]`). `h0 = None` means zeros. `h` is required
/// (the final states are gathered from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VarlenIo {
    /// Per-step decay `a`.
    pub a: u64,
    /// Per-step input `b`.
    pub b: u64,
    /// Initial state of every sequence `[B,N,D]`.
    pub h0: Option<u64>,
    /// All states (output) `[B,T,D]`.
    pub h: u64,
    /// Final state of every sequence `[B,N,D]` (output).
    pub h_t: u64,
}

/// The typed memory of one packed Diagonal scan (owner, size and element
/// type checked, as for [`super::DiagonalBuffers`]).
#[derive(Debug)]
pub struct VarlenBuffers<'a> {
    /// `a`: `B·T·D` elements.
    pub a: DeviceRef<'a>,
    /// `b`: `B·T·D` elements.
    pub b: DeviceRef<'a>,
    /// `h0`: `B·N·D` elements, or zeros.
    pub h0: Option<DeviceRef<'a>>,
    /// `h`: `B·T·D` elements.
    pub h: DeviceMut<'a>,
    /// `h_t`: `B·N·D` elements.
    pub h_t: DeviceMut<'a>,
}

/// The packed kernels of one storage dtype.
struct Names {
    reduce: &'static str,
    rescan: &'static str,
    scan: &'static str,
    tiles: &'static str,
    apply: &'static str,
    lookback: &'static str,
    finals: &'static str,
}

macro_rules! names {
    ($s:literal) => {
        Names {
            reduce: concat!("diag_btd_reduce_varlen_", $s),
            rescan: concat!("diag_btd_rescan_varlen_", $s),
            scan: concat!("diag_scan_varlen_", $s),
            tiles: concat!("diag_scan_tiles_varlen_", $s),
            apply: concat!("diag_scan_apply_varlen_", $s),
            lookback: concat!("diag_btd_lookback_varlen_", $s),
            finals: concat!("diag_varlen_final_", $s),
        }
    };
}

fn names(dtype: DType) -> &'static Names {
    static F32: Names = names!("f32");
    static F64: Names = names!("f64");
    static F16: Names = names!("f16");
    static BF16: Names = names!("bf16");
    match dtype {
        DType::F32 => &F32,
        DType::F64 => &F64,
        DType::F16 => &F16,
        DType::Bf16 => &BF16,
    }
}

impl FamilyPlan for VarlenPlan {
    type Io = VarlenIo;
    type Buffers<'a> = VarlenBuffers<'a>;
    type Scratch = ScratchSizes;

    fn dtype(&self) -> DType {
        self.inner.dtype
    }

    fn summary(&self) -> KernelPlanSummary {
        let mut s = self.inner.summary();
        s.kind = format!("{} varlen", s.kind);
        s.depth_key = format!("{}/varlen", s.depth_key);
        s
    }

    fn check(&self) -> Result<()> {
        self.inner.check()?;
        let t = self.inner.shape.len;
        let ok = self.inner.kernel_layout == Layout::Btd
            && self.inner.layout == Layout::Btd
            && !self.inner.reverse
            && self.offsets.len() >= 2
            && self.offsets.first() == Some(&0)
            && self.offsets.last() == Some(&t)
            && self.offsets.windows(2).all(|o| o[0] <= o[1])
            && self.words == words(&self.offsets, t);
        if !ok {
            return Err(Error::Plan(format!(
                "{self} is not what plan_diagonal_varlen makes (forward [B,T,D] kernels, \
                 offsets 0 ≤ … ≤ T)"
            )));
        }
        Ok(())
    }

    fn scratch(&self, depth: bool) -> Result<ScratchSizes> {
        if depth {
            return Err(depth_unsupported());
        }
        Ok(self.inner.scratch)
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.inner.shape.elements(), self.states())
    }

    fn io_args(&self, io: &VarlenIo) -> Vec<IoArg> {
        let size = self.inner.dtype.size();
        let (n, states) = (self.inner.shape.elements(), self.states());
        vec![
            IoArg::new("a", io.a, n, size, true),
            IoArg::new("b", io.b, n, size, true),
            IoArg::new("h0", io.h0.unwrap_or(0), states, size, false),
            IoArg::new("h", io.h, n, size, true),
            IoArg::new("h_t", io.h_t, states, size, true),
        ]
    }

    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &VarlenBuffers<'_>) -> Result<VarlenIo> {
        let elem = ElemType::of_dtype(self.inner.dtype);
        let shape = self.inner.shape;
        let (n, states) = (shape.elements(), self.states());
        let full = || format!("[B,T,D] = [{},{},{}]", shape.batch, shape.len, shape.dim);
        let bnd = || {
            format!(
                "[B,N,D] = [{},{},{}]",
                shape.batch,
                self.sequences(),
                shape.dim
            )
        };
        check_arg(runner, "a", &bufs.a, n, elem, full)?;
        check_arg(runner, "b", &bufs.b, n, elem, full)?;
        if let Some(h0) = &bufs.h0 {
            check_arg(runner, "h0", h0, states, elem, bnd)?;
        }
        check_arg(runner, "h", &bufs.h.0, n, elem, full)?;
        check_arg(runner, "h_t", &bufs.h_t.0, states, elem, bnd)?;
        Ok(VarlenIo {
            a: bufs.a.addr,
            b: bufs.b.addr,
            h0: bufs.h0.as_ref().map(|m| m.addr),
            h: bufs.h.0.addr,
            h_t: bufs.h_t.0.addr,
        })
    }

    fn depth_io(&self, out: u64, last: u64) -> VarlenIo {
        VarlenIo {
            h: out,
            h_t: last,
            ..VarlenIo::default()
        }
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &DiagonalWorkspace,
        io: VarlenIo,
        depth: bool,
    ) -> Result<()> {
        if depth {
            return Err(depth_unsupported());
        }
        // SAFETY: forwarded to the caller.
        unsafe { issue(runner, self, ws, io) }
    }
}

fn depth_unsupported() -> Error {
    Error::Unsupported {
        what: "depth of a packed (cu_seqlens) kernel plan",
        by: "the Diagonal varlen kernels".into(),
        hint: "a packed plan runs the unpacked plan's launches (same chunks, same \
               combines): measure the depth of the unpacked problem of the same T"
            .into(),
    }
}

/// Issues the packed twins of the plan's launches, then the final-state
/// gather.
///
/// # Safety
/// `io` addresses live memory of `runner` of the plan's sizes, the plan
/// passed `check`, and `ws` holds the inner plan's scratch.
unsafe fn issue<R: KernelRunner>(
    runner: &R,
    plan: &VarlenPlan,
    ws: &DiagonalWorkspace,
    io: VarlenIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let p = &plan.inner;
    let k = names(p.dtype);
    let (b, t, d) = (
        i32_arg(p.shape.batch),
        i32_arg(p.shape.len),
        i32_arg(p.shape.dim),
    );
    let (c, nc, n) = (
        i32_arg(p.chunk),
        i32_arg(p.chunks),
        i32_arg(plan.sequences()),
    );
    // The sequence-start words: uploaded per call (T + N + 1 u32, a few
    // percent of the inputs' bytes for D ≥ 32) and freed after the launches
    // are queued (stream-ordered on CUDA).
    let words: DeviceBuffer = runner.upload(&plan.words)?;
    let seg = Ptr(words.ptr());
    let offsets = Ptr(words.ptr() + 4 * p.shape.len as u64);
    let (a_p, b_p, h0, h, ht) = (
        Ptr(io.a),
        Ptr(io.b),
        Ptr(io.h0.unwrap_or(0)),
        Ptr(io.h),
        Ptr(io.h_t),
    );
    let (agg, carry, tile_agg, tile_carry, status) = (
        Ptr(ws.ptr(0)),
        Ptr(ws.ptr(1)),
        Ptr(ws.ptr(2)),
        Ptr(ws.ptr(3)),
        Ptr(ws.ptr(4)),
    );
    let rescan_carry = if p.kind == GpuPlanKind::SinglePass {
        Ptr(0)
    } else {
        carry
    };
    for l in &p.launches {
        let cfg = l.cfg;
        // SAFETY: each packed kernel takes its unpacked twin's buffers
        // (kernels/varlen.cu's contract) plus the words uploaded above;
        // sizes are the caller's obligation, scratch is reserved in `ws`.
        unsafe {
            match l.role {
                LaunchRole::Sequential => runner.launch(
                    k.rescan,
                    cfg,
                    &[a_p, b_p, seg, h0, h, Ptr(0), b, t, d, t, n],
                ),
                LaunchRole::Rescan => runner.launch(
                    k.rescan,
                    cfg,
                    &[a_p, b_p, seg, h0, h, rescan_carry, b, t, d, c, n],
                ),
                LaunchRole::Reduce => {
                    runner.launch(k.reduce, cfg, &[a_p, b_p, seg, h0, agg, b, t, d, c, n])
                }
                LaunchRole::ScanChunks => {
                    runner.launch(k.scan, cfg, &[agg, carry, Ptr(0), b, d, nc])
                }
                LaunchRole::ScanTiles => runner.launch(k.tiles, cfg, &[agg, tile_agg, b, d, nc]),
                LaunchRole::ScanTileCarries => runner.launch(
                    k.scan,
                    cfg,
                    &[tile_agg, tile_carry, Ptr(0), b, d, i32_arg(p.tiles)],
                ),
                LaunchRole::ScanApply => runner.launch(
                    k.apply,
                    cfg,
                    &[agg, tile_carry, carry, b, d, nc, i32_arg(p.tile)],
                ),
                LaunchRole::ClearStatus => {
                    let words = lookback_parts(p, ws)
                        .ok_or_else(|| Error::Plan(format!("{plan}: look-back scratch missing")))?
                        .words;
                    runner.launch(l.kernel, cfg, &[status, i32_arg(words)])
                }
                LaunchRole::LookBack => runner.launch(
                    k.lookback,
                    cfg,
                    &[
                        a_p,
                        b_p,
                        seg,
                        h0,
                        h,
                        status,
                        agg,
                        carry,
                        b,
                        t,
                        d,
                        c,
                        n,
                        KernelArg::I32(p.lookback_prefix_every as i32),
                    ],
                ),
            }
        }?;
    }
    let states = plan.states() as u64;
    let cfg = LaunchConfig {
        grid: [
            u32::try_from(states.div_ceil(256)).map_err(|_| {
                Error::Plan(format!("{plan}: too many final states for one launch"))
            })?,
            1,
            1,
        ],
        block: [256, 1, 1],
        shared_bytes: 0,
    };
    // SAFETY: h (B·T·D) and h_t, h0 (B·N·D) are the caller's; the offsets
    // are the words uploaded above (N + 1 entries, the last = T).
    unsafe { runner.launch(k.finals, cfg, &[h, h0, offsets, ht, b, t, d, n]) }?;
    drop(words);
    Ok(())
}

/// The packed problem on the kernels: `kernel_scan` and the other provided
/// methods of [`KernelScan`] run it (Diagonal `[B,T,D]` only; see the
/// module docs).
impl<S: Storage + bytemuck::Pod> KernelScan for Varlen<'_, Diagonal<'_, S>> {
    type Elem = S;
    type Plan = VarlenPlan;
    /// `a`, `b`, per-sequence `h0`.
    type Inputs = (DeviceBuffer, DeviceBuffer, Option<DeviceBuffer>);

    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<VarlenPlan> {
        LinearProblem::validate(self)?;
        let p = self.problem();
        if p.layout != Layout::Btd {
            return Err(Error::Unsupported {
                what: "layout",
                by: "the packed (cu_seqlens) Diagonal kernels".into(),
                hint: "pass [B,T,D] data (Layout::Btd), or run the [B,D,T] packed problem \
                       on the CPU engine"
                    .into(),
            });
        }
        let shape = DiagShape::new(p.batch, p.len, p.dim);
        plan_segments(shape, self.segments(), S::DTYPE, request, sm_count)
    }

    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
        let p = self.problem();
        Ok((
            runner.upload(p.a)?,
            runner.upload(p.b)?,
            self.h0().map(|h0| runner.upload(h0)).transpose()?,
        ))
    }
}

/// Outputs `h` at `out` and the per-sequence `h_T` at `last`.
impl BindInputs<VarlenPlan> for (DeviceBuffer, DeviceBuffer, Option<DeviceBuffer>) {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> VarlenBuffers<'a> {
        let (a, b, h0) = self;
        VarlenBuffers {
            a: a.into(),
            b: b.into(),
            h0: h0.as_ref().map(Into::into),
            h: out.into(),
            h_t: last.into(),
        }
    }
}

/// The workspace of packed plans: the Diagonal kernels' scratch.
pub type VarlenWorkspace = Workspace<ScratchSizes>;
