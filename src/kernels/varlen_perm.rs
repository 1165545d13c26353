//! Packed variable-length batches (`cu_seqlens`) on the PermDiagonal
//! kernels (`kernels/varlen_perm.cu`), every plan (P0–P4, small and wide
//! teams, the look-back included), f32/f16/bf16/f64 storage.
//!
//! The technique of [`super::varlen`] on PD elements: the first step `t`
//! of sequence `s` becomes, slot by slot, `(π_t, 0, d_t·h0_s[π_t] + b_t)`;
//! a zero scale absorbs everything before it (made exact in the kernels,
//! so no `0·∞` crosses a boundary), so the PD chunk reduce/rescan, the
//! phase-2 scans and the look-back run unchanged on the packed axis, with
//! only the loaders' step source replaced. The plan is the unpacked PD
//! plan of the packed length `T`, every data launch replaced by its packed
//! twin, then one launch that gathers each sequence's final state from `h`
//! (its `h0`, bit for bit, for an empty sequence). The sequence-start words
//! (`T + N + 1` u32) are built by the planner and uploaded with the
//! launches; the inputs are never copied (`u16`/`u32` permutations are
//! narrowed to `u8` on upload, as for the unpacked kernels).
//!
//! ```
//! use parascan::backend::emu::EmuBackend;
//! use parascan::family::{perm_diagonal::PermDiagonal, varlen::Varlen};
//! use parascan::kernels::KernelScan;
//! use parascan::PlanRequest;
//!
//! let (t, n) = (12, 3);
//! let cu_seqlens = [0i32, 5, 5, 12]; // three sequences: 5, 0 and 7 steps
//! let perm: Vec<u8> = (0..t).flat_map(|_| [2u8, 0, 1]).collect(); // [T,n]
//! let d = vec![0.9f32; t * n];
//! let b = vec![0.1f32; t * n];
//! let h0 = vec![1.0f32; 3 * n]; // [N,n]
//! let problem = PermDiagonal { perm: &perm, d: &d, b: &b, h0: None, batch: 1, len: t, n };
//! let packed = Varlen::new(problem, &cu_seqlens, Some(&h0))?;
//! let run = packed.kernel_scan(&EmuBackend::forward(), PlanRequest::Chunk(4))?;
//! assert_eq!(run.h_last.len(), 3 * n); // h_T: [N,n]
//! assert_eq!(&run.h_last[n..2 * n], &h0[n..2 * n]); // empty: h_T = h0
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! Limits (typed errors before any launch): forward scans only, no
//! depth-counting run (a packed plan's launches have the unpacked plan's
//! depth: measure that one), `n ≤ 256` as for the unpacked kernels.

use std::fmt;

use super::common::{check_int, i32_arg};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::face::{BindInputs, FamilyPlan, IoArg, Workspace};
use super::perm_diagonal::{
    plan_perm_diagonal, PdGpuPlan, PdLaunchRole, PdPlanKind, PdScratch, PdShape, PdTeams,
    PdWorkspace,
};
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::perm_diagonal::PermDiagonal;
use crate::family::varlen::Varlen;
use crate::family::LinearProblem;
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed PermDiagonal plan: the unpacked PD plan of the packed length
/// plus the sequences. Make it with [`plan_perm_diagonal_varlen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarlenPdPlan {
    /// The unpacked plan (`T` the packed length); its launches are replaced
    /// by their packed twins when issued.
    pub inner: PdGpuPlan,
    /// Offsets `[0, …, T]` (`N + 1` entries).
    offsets: Vec<usize>,
    /// What the kernels read: per step `s + 1` where the non-empty
    /// sequence `s` starts (else 0), then the offsets as u32.
    words: Vec<u32>,
}

/// Plans a packed PermDiagonal scan: `shape` is `(B, T, n)` with `T` the
/// packed length, `cu_seqlens` the `N + 1` offsets (checked:
/// [`Error::SeqOffsets`] naming `cu_seqlens`).
pub fn plan_perm_diagonal_varlen<O: SeqOffset>(
    shape: PdShape,
    cu_seqlens: &[O],
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenPdPlan> {
    let segs = Segments::new("cu_seqlens", cu_seqlens, shape.len)?;
    plan_segments(shape, &segs, dtype, request, sm_count)
}

fn plan_segments(
    shape: PdShape,
    segs: &Segments,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenPdPlan> {
    let inner = plan_perm_diagonal(shape, dtype, request, sm_count)?;
    check_int("sequences", segs.count())?;
    crate::mem::checked_product(
        "h_t",
        &[
            ("batch", shape.batch),
            ("sequences", segs.count()),
            ("n", shape.n),
            ("bytes per element", 16),
        ],
    )?;
    let offsets = segs.offsets().to_vec();
    Ok(VarlenPdPlan {
        words: super::varlen::words(&offsets, shape.len),
        offsets,
        inner,
    })
}

impl VarlenPdPlan {
    /// Sequences `N`.
    pub fn sequences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The offsets `[0, …, T]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn states(&self) -> usize {
        self.inner.shape.batch * self.sequences() * self.inner.shape.n
    }
}

impl fmt::Display for VarlenPdPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} over {} packed sequences",
            self.inner,
            self.sequences()
        )
    }
}

/// Device addresses of one packed PermDiagonal scan. Sizes in elements:
/// `perm` (`u8`), `d`, `b`, `h` (storage type): `B·T·n` (`[B,T,n]`, `T`
/// packed); `h0`, `h_t`: `B·N·n` (`[B,N,n]`). `h0 = None` means zeros. `h`
/// is required (the final states are gathered from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VarlenPdIo {
    /// Permutations, one row of `n` bytes per step.
    pub perm: u64,
    /// Scales `d`.
    pub d: u64,
    /// Inputs `b`.
    pub b: u64,
    /// Initial state of every sequence `[B,N,n]`.
    pub h0: Option<u64>,
    /// All states (output) `[B,T,n]`.
    pub h: u64,
    /// Final state of every sequence `[B,N,n]` (output).
    pub h_t: u64,
}

/// The typed memory of one packed PermDiagonal scan (owner, size and
/// element type checked, as for [`super::perm_diagonal::PdBuffers`]).
#[derive(Debug)]
pub struct VarlenPdBuffers<'a> {
    /// `perm`: `B·T·n` bytes.
    pub perm: DeviceRef<'a>,
    /// `d`: `B·T·n` elements.
    pub d: DeviceRef<'a>,
    /// `b`: `B·T·n` elements.
    pub b: DeviceRef<'a>,
    /// `h0`: `B·N·n` elements, or zeros.
    pub h0: Option<DeviceRef<'a>>,
    /// `h`: `B·T·n` elements.
    pub h: DeviceMut<'a>,
    /// `h_t`: `B·N·n` elements.
    pub h_t: DeviceMut<'a>,
}

/// The packed PD kernels of one storage dtype.
struct Names {
    small_reduce: &'static str,
    small_rescan: &'static str,
    wide_reduce: &'static str,
    wide_rescan: &'static str,
    scan: &'static str,
    tiles: &'static str,
    apply: &'static str,
    /// SPL = 1, 2, 4, 8 slots per lane.
    lookback: [&'static str; 4],
    /// `kernels/varlen.cu`'s gather (the `[B,T,D]` layout with `D = n`).
    finals: &'static str,
}

macro_rules! names {
    ($s:literal) => {
        Names {
            small_reduce: concat!("pd_small_reduce_varlen_", $s),
            small_rescan: concat!("pd_small_rescan_varlen_", $s),
            wide_reduce: concat!("pd_wide_reduce_varlen_", $s),
            wide_rescan: concat!("pd_wide_rescan_varlen_", $s),
            scan: concat!("pd_scan_varlen_", $s),
            tiles: concat!("pd_scan_tiles_varlen_", $s),
            apply: concat!("pd_scan_apply_varlen_", $s),
            lookback: [
                concat!("pd_lookback1_varlen_", $s),
                concat!("pd_lookback2_varlen_", $s),
                concat!("pd_lookback4_varlen_", $s),
                concat!("pd_lookback8_varlen_", $s),
            ],
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

/// Index into [`Names::lookback`] for `n` (the contract's SPL: 1 for
/// `n ≤ 32`, then 2, 4, 8 for `n ≤ 64, 128, 256`).
fn lookback_index(n: usize) -> usize {
    match n {
        0..=32 => 0,
        33..=64 => 1,
        65..=128 => 2,
        _ => 3,
    }
}

impl FamilyPlan for VarlenPdPlan {
    type Io = VarlenPdIo;
    type Buffers<'a> = VarlenPdBuffers<'a>;
    type Scratch = PdScratch;

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
        let ok = !self.inner.reverse
            && self.offsets.len() >= 2
            && self.offsets.first() == Some(&0)
            && self.offsets.last() == Some(&t)
            && self.offsets.windows(2).all(|o| o[0] <= o[1])
            && self.words == super::varlen::words(&self.offsets, t);
        if !ok {
            return Err(Error::Plan(format!(
                "{self} is not what plan_perm_diagonal_varlen makes (forward kernels, \
                 offsets 0 ≤ … ≤ T)"
            )));
        }
        Ok(())
    }

    fn scratch(&self, depth: bool) -> Result<PdScratch> {
        if depth {
            return Err(depth_unsupported());
        }
        Ok(self.inner.scratch)
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.inner.shape.elements(), self.states())
    }

    fn io_args(&self, io: &VarlenPdIo) -> Vec<IoArg> {
        let size = self.inner.dtype.size();
        let (n, states) = (self.inner.shape.elements(), self.states());
        vec![
            IoArg::new("perm", io.perm, n, 1, true),
            IoArg::new("d", io.d, n, size, true),
            IoArg::new("b", io.b, n, size, true),
            IoArg::new("h0", io.h0.unwrap_or(0), states, size, false),
            IoArg::new("h", io.h, n, size, true),
            IoArg::new("h_t", io.h_t, states, size, true),
        ]
    }

    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &VarlenPdBuffers<'_>) -> Result<VarlenPdIo> {
        let elem = ElemType::of_dtype(self.inner.dtype);
        let shape = self.inner.shape;
        let (n, states) = (shape.elements(), self.states());
        let full = || shape.describe();
        let bnn = || {
            format!(
                "[B,N,n] = [{},{},{}]",
                shape.batch,
                self.sequences(),
                shape.n
            )
        };
        check_arg(runner, "perm", &bufs.perm, n, ElemType::of::<u8>(), full)?;
        check_arg(runner, "d", &bufs.d, n, elem, full)?;
        check_arg(runner, "b", &bufs.b, n, elem, full)?;
        if let Some(h0) = &bufs.h0 {
            check_arg(runner, "h0", h0, states, elem, bnn)?;
        }
        check_arg(runner, "h", &bufs.h.0, n, elem, full)?;
        check_arg(runner, "h_t", &bufs.h_t.0, states, elem, bnn)?;
        Ok(VarlenPdIo {
            perm: bufs.perm.addr,
            d: bufs.d.addr,
            b: bufs.b.addr,
            h0: bufs.h0.as_ref().map(|m| m.addr),
            h: bufs.h.0.addr,
            h_t: bufs.h_t.0.addr,
        })
    }

    fn depth_io(&self, out: u64, last: u64) -> VarlenPdIo {
        VarlenPdIo {
            h: out,
            h_t: last,
            ..VarlenPdIo::default()
        }
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &PdWorkspace,
        io: VarlenPdIo,
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
        by: "the PermDiagonal varlen kernels".into(),
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
    plan: &VarlenPdPlan,
    ws: &PdWorkspace,
    io: VarlenPdIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let p = &plan.inner;
    let k = names(p.dtype);
    let (bsz, t, n) = (
        i32_arg(p.shape.batch),
        i32_arg(p.shape.len),
        i32_arg(p.shape.n),
    );
    let (c, nc, m, seqs) = (
        i32_arg(p.chunk),
        i32_arg(p.chunks),
        i32_arg(p.tree),
        i32_arg(plan.sequences()),
    );
    let (tl, ntl, mt) = (i32_arg(p.tile), i32_arg(p.tiles), i32_arg(p.tile_tree));
    // The sequence-start words: uploaded per call (T + N + 1 u32) and freed
    // after the launches are queued (stream-ordered on CUDA).
    let words: DeviceBuffer = runner.upload(&plan.words)?;
    let seg = Ptr(words.ptr());
    let offsets = Ptr(words.ptr() + 4 * p.shape.len as u64);
    let (perm, d, b, h0, h, ht) = (
        Ptr(io.perm),
        Ptr(io.d),
        Ptr(io.b),
        Ptr(io.h0.unwrap_or(0)),
        Ptr(io.h),
        Ptr(io.h_t),
    );
    let (agg_p, agg_d, agg_b, carry) = (
        Ptr(ws.ptr(0)),
        Ptr(ws.ptr(1)),
        Ptr(ws.ptr(2)),
        Ptr(ws.ptr(3)),
    );
    let (tile_p, tile_d, tile_b, tile_carry) = (
        Ptr(ws.ptr(4)),
        Ptr(ws.ptr(5)),
        Ptr(ws.ptr(6)),
        Ptr(ws.ptr(7)),
    );
    let status = Ptr(ws.ptr(8));
    let every = KernelArg::I32(i32::try_from(p.lookback_prefix_every).unwrap_or(i32::MAX));
    let small = p.teams == PdTeams::Small;
    let (reduce, rescan) = if small {
        (k.small_reduce, k.small_rescan)
    } else {
        (k.wide_reduce, k.wide_rescan)
    };
    // P0/P1 run without carries: their one chunk starts from its first
    // element (a sequence start, which holds its h0).
    let rescan_carry = if matches!(p.kind, PdPlanKind::Chunked | PdPlanKind::TwoLevel) {
        carry
    } else {
        Ptr(0)
    };
    let null = Ptr(0);
    for l in &p.launches {
        let cfg = l.cfg;
        // SAFETY: each packed kernel takes its unpacked twin's buffers
        // (kernels/varlen_perm.cu's contract) plus the words uploaded above;
        // sizes are the caller's obligation, scratch is reserved in `ws`.
        unsafe {
            match l.role {
                PdLaunchRole::Sequential => runner.launch(
                    rescan,
                    cfg,
                    &[perm, d, b, seg, h0, h, null, bsz, t, n, t, seqs],
                ),
                PdLaunchRole::Rescan => runner.launch(
                    rescan,
                    cfg,
                    &[perm, d, b, seg, h0, h, rescan_carry, bsz, t, n, c, seqs],
                ),
                PdLaunchRole::Reduce => runner.launch(
                    reduce,
                    cfg,
                    &[
                        perm, d, b, seg, h0, agg_p, agg_d, agg_b, bsz, t, n, c, m, seqs,
                    ],
                ),
                PdLaunchRole::Scan => runner.launch(
                    k.scan,
                    cfg,
                    &[agg_p, agg_d, agg_b, carry, null, bsz, n, nc, m],
                ),
                PdLaunchRole::ScanTiles => runner.launch(
                    k.tiles,
                    cfg,
                    &[
                        agg_p, agg_d, agg_b, tile_p, tile_d, tile_b, bsz, n, nc, m, tl, mt,
                    ],
                ),
                PdLaunchRole::ScanTileCarries => runner.launch(
                    k.scan,
                    cfg,
                    &[tile_p, tile_d, tile_b, tile_carry, null, bsz, n, ntl, mt],
                ),
                PdLaunchRole::ScanApply => runner.launch(
                    k.apply,
                    cfg,
                    &[agg_p, agg_d, agg_b, tile_carry, carry, bsz, n, nc, m, tl],
                ),
                PdLaunchRole::LookBackClear => {
                    let status_words = p.scratch.status / 4;
                    runner.launch(l.kernel, cfg, &[status, i32_arg(status_words)])
                }
                PdLaunchRole::LookBack => runner.launch(
                    k.lookback[lookback_index(p.shape.n)],
                    cfg,
                    &[
                        perm, d, b, seg, h0, h, status, agg_p, agg_d, agg_b, carry, bsz, t, n, c,
                        seqs, every,
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
    // SAFETY: h (B·T·n) and h_t, h0 (B·N·n) are the caller's; the offsets
    // are the words uploaded above (N + 1 entries, the last = T).
    unsafe { runner.launch(k.finals, cfg, &[h, h0, offsets, ht, bsz, t, n, seqs]) }?;
    drop(words);
    Ok(())
}

/// A packed PD problem's uploaded inputs (a type of its own: the unpacked
/// problem's tuple binds to the unpacked plan).
#[derive(Debug)]
pub struct VarlenPdInputs {
    /// `perm` as `u8`, `[B,T,n]`.
    pub perm: DeviceBuffer,
    /// `d`, `[B,T,n]`.
    pub d: DeviceBuffer,
    /// `b`, `[B,T,n]`.
    pub b: DeviceBuffer,
    /// The per-sequence initial states `[B,N,n]`, if any.
    pub h0: Option<DeviceBuffer>,
}

/// Outputs `h` at `out` and the per-sequence `h_T` at `last`.
impl BindInputs<VarlenPdPlan> for VarlenPdInputs {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> VarlenPdBuffers<'a> {
        VarlenPdBuffers {
            perm: (&self.perm).into(),
            d: (&self.d).into(),
            b: (&self.b).into(),
            h0: self.h0.as_ref().map(Into::into),
            h: out.into(),
            h_t: last.into(),
        }
    }
}

fn plan_packed<S: Storage, P: crate::family::perm_diagonal::PermIndex>(
    v: &Varlen<'_, PermDiagonal<'_, S, P>>,
    sm_count: usize,
    request: PlanRequest,
) -> Result<VarlenPdPlan> {
    super::perm_wide::check_n::<P>(v.problem().n)?;
    LinearProblem::validate(v)?;
    let p = v.problem();
    let shape = PdShape::new(p.batch, p.len, p.n);
    plan_segments(shape, v.segments(), S::DTYPE, request, sm_count)
}

/// The packed problem on the kernels: `kernel_scan` and the other provided
/// methods of [`KernelScan`] run it, for `u8`, `u16` and `u32`
/// permutations (the wider ones narrowed on upload, `n ≤ 256`).
macro_rules! packed_index {
    ($($idx:ty),*) => {$(
        impl<S: Storage + bytemuck::Pod> KernelScan for Varlen<'_, PermDiagonal<'_, S, $idx>> {
            type Elem = S;
            type Plan = VarlenPdPlan;
            /// `perm` (as `u8`), `d`, `b`, per-sequence `h0`.
            type Inputs = VarlenPdInputs;

            fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<VarlenPdPlan> {
                plan_packed(self, sm_count, request)
            }

            fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
                let p = self.problem();
                super::perm_wide::check_n::<$idx>(p.n)?;
                let perm = if std::mem::size_of::<$idx>() == 1 {
                    runner.upload(bytemuck::cast_slice::<$idx, u8>(p.perm))?
                } else {
                    runner.upload(&super::perm_wide::narrow(p)?)?
                };
                Ok(VarlenPdInputs {
                    perm,
                    d: runner.upload(p.d)?,
                    b: runner.upload(p.b)?,
                    h0: self.h0().map(|h0| runner.upload(h0)).transpose()?,
                })
            }
        }
    )*};
}

packed_index!(u8, u16, u32);

/// The workspace of packed PD plans: the PermDiagonal kernels' scratch.
pub type VarlenPdWorkspace = Workspace<PdScratch>;
