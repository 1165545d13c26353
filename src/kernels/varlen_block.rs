//! Packed variable-length batches (`cu_seqlens`) on the BlockDiagonal and
//! Dense kernels (`kernels/varlen_block.cu`), every plan (P0–P2; the
//! BlockDiagonal kernels have no look-back), every block size `k` of the
//! unpacked kernels, f32/f16/bf16/f64 storage.
//!
//! The technique of [`super::varlen`] on BlockDiagonal elements: the first
//! step `t` of sequence `s` becomes `(0, A_t·h0_s + b_t)`, a zero transition
//! that absorbs everything before it. Only the level-0 kernels see steps:
//! a reduce thread that owns a matrix column resets it to zero there, the
//! one that owns the vector restarts from `h0_s`, a rescan thread restarts
//! its state from `h0_s`; the levels of the aggregate tree above are the
//! unpacked ones with the absorption made exact (a zero transition entry
//! contributes nothing even against a non-finite value, so an overflow in
//! one sequence does not reach the next). The plan is the unpacked plan of
//! the packed length `T`, every launch replaced by its packed twin, then
//! one launch that gathers each sequence's final state from `h` (its `h0`,
//! bit for bit, for an empty sequence). The sequence-start words
//! (`T + N + 1` u32) are built by the planner and uploaded with the
//! launches; the inputs are never copied.
//!
//! ```
//! use parascan::backend::emu::EmuBackend;
//! use parascan::family::{block_diagonal::BlockDiagonal, varlen::Varlen};
//! use parascan::kernels::KernelScan;
//! use parascan::PlanRequest;
//!
//! let (t, nb, k) = (12, 2, 2);
//! let cu_seqlens = [0i32, 5, 5, 12]; // three sequences: 5, 0 and 7 steps
//! let a = vec![0.25f32; t * nb * k * k]; // [T,nb,k,k]
//! let b = vec![0.1f32; t * nb * k]; // [T,n]
//! let h0 = vec![1.0f32; 3 * nb * k]; // [N,n]
//! let problem = BlockDiagonal { a: &a, b: &b, h0: None, batch: 1, len: t, blocks: nb, block: k };
//! let packed = Varlen::new(problem, &cu_seqlens, Some(&h0))?;
//! let run = packed.kernel_scan(&EmuBackend::forward(), PlanRequest::Chunk(4))?;
//! assert_eq!(run.h_last.len(), 3 * nb * k); // h_T: [N,n]
//! assert_eq!(&run.h_last[4..8], &h0[4..8]); // empty: h_T = h0
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! Limits (typed errors before any launch): forward scans only, no
//! depth-counting run (a packed plan's launches have the unpacked plan's
//! depth: measure that one), no look-back plan (as unpacked).

use std::fmt;

use super::block_diagonal::{
    level_offsets, plan_block_diagonal, BlockDiagonalWorkspace, BlockLaunchRole, BlockPlan,
    BlockShape,
};
use super::common::{check_int, i32_arg};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::face::{BindInputs, FamilyPlan, IoArg, Workspace};
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::varlen::Varlen;
use crate::family::LinearProblem;
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed BlockDiagonal plan: the unpacked plan of the packed length
/// plus the sequences. Make it with [`plan_block_diagonal_varlen`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarlenBlockPlan {
    /// The unpacked plan (`T` the packed length); its launches are
    /// replaced by their packed twins when issued.
    pub inner: BlockPlan,
    /// Offsets `[0, …, T]` (`N + 1` entries).
    offsets: Vec<usize>,
    /// What the kernels read: per step `s + 1` where the non-empty
    /// sequence `s` starts (else 0), then the offsets as u32.
    words: Vec<u32>,
}

/// Plans a packed BlockDiagonal scan: `shape` is `(B, T, nb, k)` with `T`
/// the packed length, `cu_seqlens` the `N + 1` offsets (checked:
/// [`Error::SeqOffsets`] naming `cu_seqlens`).
pub fn plan_block_diagonal_varlen<O: SeqOffset>(
    shape: BlockShape,
    cu_seqlens: &[O],
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenBlockPlan> {
    let segs = Segments::new("cu_seqlens", cu_seqlens, shape.len)?;
    plan_segments(shape, &segs, dtype, request, sm_count)
}

fn plan_segments(
    shape: BlockShape,
    segs: &Segments,
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenBlockPlan> {
    let inner = plan_block_diagonal(shape, dtype, request, sm_count)?;
    check_int("sequences", segs.count())?;
    crate::mem::checked_product(
        "h_t",
        &[
            ("batch", shape.batch),
            ("sequences", segs.count()),
            ("n", shape.n()),
            ("bytes per element", 16),
        ],
    )?;
    let offsets = segs.offsets().to_vec();
    Ok(VarlenBlockPlan {
        words: super::varlen::words(&offsets, shape.len),
        offsets,
        inner,
    })
}

impl VarlenBlockPlan {
    /// Sequences `N`.
    pub fn sequences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The offsets `[0, …, T]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn states(&self) -> usize {
        self.inner.shape.batch * self.sequences() * self.inner.shape.n()
    }
}

impl fmt::Display for VarlenBlockPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} over {} packed sequences",
            self.inner,
            self.sequences()
        )
    }
}

/// Device addresses of one packed BlockDiagonal scan. Sizes in elements of
/// the storage type: `a`: `B·T·nb·k·k` (`[B,T,nb,k,k]`, `T` packed); `b`,
/// `h`: `B·T·n`; `h0`, `h_t`: `B·N·n` (`[B,N,n]`). `h0 = None` means
/// zeros. `h` is required (the final states are gathered from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VarlenBlockIo {
    /// Transition blocks `A`.
    pub a: u64,
    /// Inputs `b`.
    pub b: u64,
    /// Initial state of every sequence `[B,N,n]`.
    pub h0: Option<u64>,
    /// All states (output) `[B,T,n]`.
    pub h: u64,
    /// Final state of every sequence `[B,N,n]` (output).
    pub h_t: u64,
}

/// The typed memory of one packed BlockDiagonal scan (owner, size and
/// element type checked, as for
/// [`super::block_diagonal::BlockDiagonalBuffers`]).
#[derive(Debug)]
pub struct VarlenBlockBuffers<'a> {
    /// `A`: `B·T·nb·k·k` elements.
    pub a: DeviceRef<'a>,
    /// `b`: `B·T·n` elements.
    pub b: DeviceRef<'a>,
    /// `h0`: `B·N·n` elements, or zeros.
    pub h0: Option<DeviceRef<'a>>,
    /// `h`: `B·T·n` elements.
    pub h: DeviceMut<'a>,
    /// `h_t`: `B·N·n` elements.
    pub h_t: DeviceMut<'a>,
}

fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::Bf16 => "bf16",
    }
}

impl FamilyPlan for VarlenBlockPlan {
    type Io = VarlenBlockIo;
    type Buffers<'a> = VarlenBlockBuffers<'a>;
    type Scratch = usize;

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
                "{self} is not what plan_block_diagonal_varlen makes (forward kernels, \
                 offsets 0 ≤ … ≤ T)"
            )));
        }
        Ok(())
    }

    fn scratch(&self, depth: bool) -> Result<usize> {
        if depth {
            return Err(depth_unsupported());
        }
        Ok(self.inner.scratch_bytes)
    }

    fn output_elements(&self) -> (usize, usize) {
        (self.inner.shape.elements(), self.states())
    }

    fn io_args(&self, io: &VarlenBlockIo) -> Vec<IoArg> {
        let size = self.inner.dtype.size();
        let s = self.inner.shape;
        let (n, states) = (s.elements(), self.states());
        vec![
            IoArg::new("a", io.a, s.a_elements(), size, true),
            IoArg::new("b", io.b, n, size, true),
            IoArg::new("h0", io.h0.unwrap_or(0), states, size, false),
            IoArg::new("h", io.h, n, size, true),
            IoArg::new("h_t", io.h_t, states, size, true),
        ]
    }

    fn io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &VarlenBlockBuffers<'_>,
    ) -> Result<VarlenBlockIo> {
        let elem = ElemType::of_dtype(self.inner.dtype);
        let s = self.inner.shape;
        let (n, states) = (s.elements(), self.states());
        let a_shape = || {
            format!(
                "[B,T,nb,k,k] = [{},{},{},{},{}]",
                s.batch, s.len, s.blocks, s.block, s.block
            )
        };
        let full = || format!("[B,T,n] = [{},{},{}]", s.batch, s.len, s.n());
        let bnn = || format!("[B,N,n] = [{},{},{}]", s.batch, self.sequences(), s.n());
        check_arg(runner, "a", &bufs.a, s.a_elements(), elem, a_shape)?;
        check_arg(runner, "b", &bufs.b, n, elem, full)?;
        if let Some(h0) = &bufs.h0 {
            check_arg(runner, "h0", h0, states, elem, bnn)?;
        }
        check_arg(runner, "h", &bufs.h.0, n, elem, full)?;
        check_arg(runner, "h_t", &bufs.h_t.0, states, elem, bnn)?;
        Ok(VarlenBlockIo {
            a: bufs.a.addr,
            b: bufs.b.addr,
            h0: bufs.h0.as_ref().map(|m| m.addr),
            h: bufs.h.0.addr,
            h_t: bufs.h_t.0.addr,
        })
    }

    fn depth_io(&self, out: u64, last: u64) -> VarlenBlockIo {
        VarlenBlockIo {
            h: out,
            h_t: last,
            ..VarlenBlockIo::default()
        }
    }

    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &BlockDiagonalWorkspace,
        io: VarlenBlockIo,
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
        by: "the BlockDiagonal varlen kernels".into(),
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
    plan: &VarlenBlockPlan,
    ws: &BlockDiagonalWorkspace,
    io: VarlenBlockIo,
) -> Result<()> {
    use KernelArg::Ptr;
    let p = &plan.inner;
    let s = p.shape;
    let (k, sfx) = (s.block, suffix(p.dtype));
    let (bsz, nb, n, seqs) = (
        i32_arg(s.batch),
        i32_arg(s.blocks),
        i32_arg(s.n()),
        i32_arg(plan.sequences()),
    );
    let offsets = level_offsets(p)?;
    let base = ws.ptr(0);
    let at = |off: usize| Ptr(base + off as u64);
    let m = p.levels.len() - 1;
    // The sequence-start words: uploaded per call (T + N + 1 u32) and freed
    // after the launches are queued (stream-ordered on CUDA).
    let words: DeviceBuffer = runner.upload(&plan.words)?;
    let seg = Ptr(words.ptr());
    let ends = Ptr(words.ptr() + 4 * s.len as u64);
    let (h0, h, ht) = (Ptr(io.h0.unwrap_or(0)), Ptr(io.h), Ptr(io.h_t));
    for l in &p.launches {
        let lv = p.levels[l.level];
        let (t, c) = (i32_arg(lv.len), i32_arg(lv.chunk));
        let (a_in, b_in) = if l.level == 0 {
            (Ptr(io.a), Ptr(io.b))
        } else {
            let (a, b, _) = offsets[l.level];
            (at(a), at(b))
        };
        let carry = if l.level < m && l.role == BlockLaunchRole::Rescan {
            at(offsets[l.level + 1].2)
        } else {
            Ptr(0)
        };
        let (kernel, args): (String, Vec<KernelArg>) = match (l.role, l.level) {
            (BlockLaunchRole::Sequential, _) => (
                format!("bd{k}_rescan_varlen_{sfx}"),
                vec![a_in, b_in, seg, h0, h, Ptr(0), bsz, t, nb, t, seqs],
            ),
            (BlockLaunchRole::Reduce, 0) => {
                let (ua, ub, _) = offsets[1];
                (
                    format!("bd{k}_reduce_varlen_{sfx}"),
                    vec![a_in, b_in, seg, h0, at(ua), at(ub), bsz, t, nb, c, seqs],
                )
            }
            (BlockLaunchRole::Reduce, level) => {
                let (ua, ub, _) = offsets[level + 1];
                (
                    format!("bd{k}_reduce_up_varlen_{sfx}"),
                    vec![a_in, b_in, at(ua), at(ub), bsz, t, nb, c],
                )
            }
            (BlockLaunchRole::Rescan, 0) => (
                format!("bd{k}_rescan_varlen_{sfx}"),
                vec![a_in, b_in, seg, h0, h, carry, bsz, t, nb, c, seqs],
            ),
            (BlockLaunchRole::Rescan, level) => (
                format!("bd{k}_rescan_up_varlen_{sfx}"),
                vec![a_in, b_in, at(offsets[level].2), carry, bsz, t, nb, c],
            ),
        };
        // SAFETY: each packed kernel takes its unpacked twin's buffers
        // (kernels/varlen_block.cu's contract) plus the words uploaded
        // above; sizes are the caller's obligation, scratch is reserved in
        // `ws`; the launch shape is the unpacked launch's.
        unsafe { runner.launch(&kernel, l.cfg, &args) }?;
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
    let finals = format!("diag_varlen_final_{sfx}");
    let t = i32_arg(s.len);
    // SAFETY: h (B·T·n) and h_t, h0 (B·N·n) are the caller's; the offsets
    // are the words uploaded above (N + 1 entries, the last = T).
    unsafe { runner.launch(&finals, cfg, &[h, h0, ends, ht, bsz, t, n, seqs]) }?;
    drop(words);
    Ok(())
}

/// The packed problem on the kernels: `kernel_scan` and the other provided
/// methods of [`KernelScan`] run it.
impl<S: Storage + bytemuck::Pod> KernelScan for Varlen<'_, BlockDiagonal<'_, S>> {
    type Elem = S;
    type Plan = VarlenBlockPlan;
    type Inputs = VarlenBlockInputs;

    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<VarlenBlockPlan> {
        LinearProblem::validate(self)?;
        let p = self.problem();
        let shape = BlockShape::new(p.batch, p.len, p.blocks, p.block);
        plan_segments(shape, self.segments(), S::DTYPE, request, sm_count)
    }

    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
        let p = self.problem();
        Ok(VarlenBlockInputs {
            a: runner.upload(p.a)?,
            b: runner.upload(p.b)?,
            h0: self.h0().map(|h0| runner.upload(h0)).transpose()?,
        })
    }
}

/// A packed BlockDiagonal problem's uploaded inputs (a type of its own:
/// the unpacked problem's tuple binds to the unpacked plan).
#[derive(Debug)]
pub struct VarlenBlockInputs {
    /// `A`, `[B,T,nb,k,k]`.
    pub a: DeviceBuffer,
    /// `b`, `[B,T,n]`.
    pub b: DeviceBuffer,
    /// The per-sequence initial states `[B,N,n]`, if any.
    pub h0: Option<DeviceBuffer>,
}

/// Outputs `h` at `out` and the per-sequence `h_T` at `last`.
impl BindInputs<VarlenBlockPlan> for VarlenBlockInputs {
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> VarlenBlockBuffers<'a> {
        VarlenBlockBuffers {
            a: (&self.a).into(),
            b: (&self.b).into(),
            h0: self.h0.as_ref().map(Into::into),
            h: out.into(),
            h_t: last.into(),
        }
    }
}

/// The workspace of packed BlockDiagonal plans: the BlockDiagonal
/// kernels' scratch.
pub type VarlenBlockWorkspace = Workspace<usize>;
