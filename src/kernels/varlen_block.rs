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

use super::block_diagonal::{
    launch_args, level_offsets, plan_block_diagonal, BlockDiagonalWorkspace, BlockLaunchRole,
    BlockPlan, BlockShape,
};
use super::face::{BindInputs, IoArg, Workspace};
use super::packed::{
    PackedAffineBuffers, PackedAffineIo, PackedArgs, PackedFamily, PackedPlan, PackedSizes,
};
use super::KernelScan;
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::Result;
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::varlen::Varlen;
use crate::family::LinearProblem;
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed BlockDiagonal plan: the unpacked plan of the packed length
/// plus the sequences. Make it with [`plan_block_diagonal_varlen`].
pub type VarlenBlockPlan = PackedPlan<BlockPlan>;

/// Plans a packed BlockDiagonal scan: `shape` is `(B, T, nb, k)` with `T`
/// the packed length, `cu_seqlens` the `N + 1` offsets (checked:
/// [`Error::SeqOffsets`](crate::Error::SeqOffsets) naming `cu_seqlens`).
pub fn plan_block_diagonal_varlen<O: SeqOffset>(
    shape: BlockShape,
    cu_seqlens: &[O],
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenBlockPlan> {
    let segs = Segments::new("cu_seqlens", cu_seqlens, shape.len)?;
    PackedPlan::new(plan_block_diagonal(shape, dtype, request, sm_count)?, &segs)
}

/// Device addresses of one packed BlockDiagonal scan. Sizes in elements of
/// the storage type: `a`: `B·T·nb·k·k` (`[B,T,nb,k,k]`, `T` packed); `b`,
/// `h`: `B·T·n`; `h0`, `h_t`: `B·N·n` (`[B,N,n]`). `h0 = None` means
/// zeros. `h` is required (the final states are gathered from it).
pub type VarlenBlockIo = PackedAffineIo;

/// The typed memory of one packed BlockDiagonal scan (owner, size and
/// element type checked, as for
/// [`super::block_diagonal::BlockDiagonalBuffers`]): `a`: `B·T·nb·k·k`
/// elements, `b`, `h`: `B·T·n`, `h0` (or zeros), `h_t`: `B·N·n`.
pub type VarlenBlockBuffers<'a> = PackedAffineBuffers<'a>;

/// The BlockDiagonal kernels' packed twins (`kernels/varlen_block.cu`).
impl PackedFamily for BlockPlan {
    type PackedIo = VarlenBlockIo;
    type PackedBuffers<'a> = VarlenBlockBuffers<'a>;
    const FAMILY: &'static str = "BlockDiagonal";
    const PLANNER: &'static str = "plan_block_diagonal_varlen (forward kernels)";
    const AXIS: &'static str = "n";

    fn dims(&self) -> (usize, usize, usize) {
        (self.shape.batch, self.shape.len, self.shape.n())
    }

    fn packable(&self) -> bool {
        !self.reverse
    }

    fn packed_io_args(&self, io: &VarlenBlockIo, sizes: &PackedSizes) -> Vec<IoArg> {
        io.args(sizes, self.shape.a_elements())
    }

    fn packed_io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &VarlenBlockBuffers<'_>,
        sizes: &PackedSizes,
    ) -> Result<VarlenBlockIo> {
        let a = (self.shape.a_elements(), || self.shape.describe_a());
        bufs.check(runner, sizes, a)
    }

    fn packed_outputs(io: &VarlenBlockIo) -> [u64; 3] {
        io.outputs()
    }

    unsafe fn issue_packed<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &BlockDiagonalWorkspace,
        io: &VarlenBlockIo,
        seq: PackedArgs,
    ) -> Result<()> {
        use KernelArg::Ptr;
        let (k, sfx) = (self.shape.block, self.dtype.name());
        let offsets = level_offsets(self)?;
        let inputs = [Ptr(io.a), Ptr(io.b)];
        for l in &self.launches {
            let kernel = match (l.role, l.level) {
                (BlockLaunchRole::Sequential, _) | (BlockLaunchRole::Rescan, 0) => {
                    format!("bd{k}_rescan_varlen_{sfx}")
                }
                (BlockLaunchRole::Reduce, 0) => format!("bd{k}_reduce_varlen_{sfx}"),
                (BlockLaunchRole::Reduce, _) => format!("bd{k}_reduce_up_varlen_{sfx}"),
                (BlockLaunchRole::Rescan, _) => format!("bd{k}_rescan_up_varlen_{sfx}"),
            };
            let scratch = (&offsets[..], ws.ptr(0));
            let args = launch_args(self, l, scratch, inputs, [seq.h0, seq.h], seq.steps());
            // SAFETY: each packed kernel takes its unpacked twin's buffers
            // (kernels/varlen_block.cu's contract) plus the words; sizes are
            // the caller's obligation, scratch is reserved in `ws`; the
            // launch shape is the unpacked launch's.
            unsafe { runner.launch(&kernel, l.cfg, &args) }?;
        }
        Ok(())
    }
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
        let inner = plan_block_diagonal(shape, S::DTYPE, request, sm_count)?;
        PackedPlan::new(inner, self.segments())
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
        VarlenBlockBuffers::bind((&self.a, &self.b, self.h0.as_ref()), out, last)
    }
}

/// The workspace of packed BlockDiagonal plans: the BlockDiagonal
/// kernels' scratch.
pub type VarlenBlockWorkspace = Workspace<usize>;
