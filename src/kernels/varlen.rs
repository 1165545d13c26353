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
//! The plan is [`PackedPlan`] over the Diagonal plan, shared with the
//! other families ([`super::packed`]); this module supplies the packed
//! kernels' names and arguments.
//!
//! Limits (typed errors before any launch): Diagonal in the `[B,T,D]`
//! layout only (`Error::Unsupported` naming `layout`), forward scans only,
//! no depth-counting run (a packed plan's launches have the unpacked
//! plan's depth: measure that one). The same technique on the other
//! families: [`super::varlen_perm`] (PermDiagonal) and
//! [`super::varlen_block`] (BlockDiagonal); DPLR runs packed batches on
//! the CPU engine.

use super::common::{dtype_index, dtype_table};
use super::diagonal::{
    launch_args, plan_diagonal_btd_kernels, DiagShape, DiagonalWorkspace, GpuPlan, LaunchRole,
    ScratchSizes,
};
use super::face::{BindInputs, IoArg, Workspace};
use super::packed::{
    PackedAffineBuffers, PackedAffineIo, PackedArgs, PackedFamily, PackedPlan, PackedSizes,
};
use super::KernelScan;
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::{Error, Result};
use crate::family::diagonal::Diagonal;
use crate::family::varlen::Varlen;
use crate::family::{Layout, LinearProblem};
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed Diagonal plan: the unpacked `[B,T,D]` plan of the packed
/// length plus the sequences. Make it with [`plan_diagonal_varlen`].
pub type VarlenPlan = PackedPlan<GpuPlan>;

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
    PackedPlan::new(
        plan_diagonal_btd_kernels(shape, dtype, request, sm_count)?,
        &segs,
    )
}

/// Device addresses of one packed Diagonal scan. Sizes in elements of the
/// storage type: `a`, `b`, `h`: `B·T·D` (`[B,T,D]`, `T` packed); `h0`,
/// `h_t`: `B·N·D` (`[B,N,D]`). `h0 = None` means zeros. `h` is required
/// (the final states are gathered from it).
pub type VarlenIo = PackedAffineIo;

/// The typed memory of one packed Diagonal scan (owner, size and element
/// type checked, as for [`super::DiagonalBuffers`]): `a`, `b`, `h`:
/// `B·T·D` elements, `h0` (or zeros), `h_t`: `B·N·D`.
pub type VarlenBuffers<'a> = PackedAffineBuffers<'a>;

/// The packed kernels of one storage dtype.
struct Names {
    reduce: &'static str,
    rescan: &'static str,
    scan: &'static str,
    tiles: &'static str,
    apply: &'static str,
    lookback: &'static str,
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
        }
    };
}

static NAMES: [Names; 4] = dtype_table!(names);

/// The Diagonal `[B,T,D]` kernels' packed twins (`kernels/varlen.cu`).
impl PackedFamily for GpuPlan {
    type PackedIo = VarlenIo;
    type PackedBuffers<'a> = VarlenBuffers<'a>;
    const FAMILY: &'static str = "Diagonal";
    const PLANNER: &'static str = "plan_diagonal_varlen (forward [B,T,D] kernels)";
    const AXIS: &'static str = "D";

    fn dims(&self) -> (usize, usize, usize) {
        (self.shape.batch, self.shape.len, self.shape.dim)
    }

    fn packable(&self) -> bool {
        self.kernel_layout == Layout::Btd && self.layout == Layout::Btd && !self.reverse
    }

    fn packed_io_args(&self, io: &VarlenIo, sizes: &PackedSizes) -> Vec<IoArg> {
        io.args(sizes, sizes.steps())
    }

    fn packed_io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &VarlenBuffers<'_>,
        sizes: &PackedSizes,
    ) -> Result<VarlenIo> {
        bufs.check(runner, sizes, (sizes.steps(), || sizes.describe_steps()))
    }

    fn packed_outputs(io: &VarlenIo) -> [u64; 3] {
        io.outputs()
    }

    unsafe fn issue_packed<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &DiagonalWorkspace,
        io: &VarlenIo,
        seq: PackedArgs,
    ) -> Result<()> {
        use KernelArg::Ptr;
        let k = &NAMES[dtype_index(self.dtype)];
        for l in &self.launches {
            let kernel = match l.role {
                LaunchRole::Sequential | LaunchRole::Rescan => k.rescan,
                LaunchRole::Reduce => k.reduce,
                LaunchRole::ScanChunks | LaunchRole::ScanTileCarries => k.scan,
                LaunchRole::ScanTiles => k.tiles,
                LaunchRole::ScanApply => k.apply,
                LaunchRole::ClearStatus => l.kernel,
                LaunchRole::LookBack => k.lookback,
            };
            let (inputs, ends) = ([Ptr(io.a), Ptr(io.b)], [seq.h0, seq.h]);
            let args = launch_args(self, ws, l.role, inputs, ends, seq.steps())?;
            // SAFETY: each packed kernel takes its unpacked twin's buffers
            // (kernels/varlen.cu's contract) plus the words; sizes are the
            // caller's obligation, scratch is reserved in `ws`.
            unsafe { runner.launch(kernel, l.cfg, &args) }?;
        }
        Ok(())
    }
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
        let inner = plan_diagonal_btd_kernels(shape, S::DTYPE, request, sm_count)?;
        PackedPlan::new(inner, self.segments())
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
        VarlenBuffers::bind((a, b, h0.as_ref()), out, last)
    }
}

/// The workspace of packed plans: the Diagonal kernels' scratch.
pub type VarlenWorkspace = Workspace<ScratchSizes>;
