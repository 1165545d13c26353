//! Host-side orchestration of the handwritten kernels: one small safe
//! wrapper per kernel family.
//!
//! Each wrapper turns a problem and a [`PlanRequest`]
//! into an inspectable GPU plan (which kernels, in which order, with which
//! launch shapes and scratch), and issues that launch sequence on any
//! [`KernelRunner`]: the CUDA backend
//! on a GPU, the SIMT emulator everywhere else. The emulator runs the same
//! `kernels/*.cu` sources, so the code path CI tests is the one the GPU runs.
//!
//! - [`diagonal`]: the Diagonal family (`kernels/diagonal.cu`), both layouts,
//!   f32/f16/bf16/f64 storage, and its depth-counting instantiation.
//! - [`block_diagonal`]: BlockDiagonal(k) and Dense (`kernels/block_diagonal.cu`),
//!   `k ∈ {1,2,3,4,8,16,32,64}`, f32/f16/bf16/f64 storage, depth-counting too.
//! - [`perm_diagonal`]: the PermDiagonal family (`kernels/perm_diagonal.cu`),
//!   `n ≤ 256` with `u8` permutations, f32/f16/bf16/f64 storage, and its
//!   depth-counting instantiation; `u16`/`u32` permutations with `n ≤ 256`
//!   are narrowed to `u8` on the host, larger `n` is `Error::Size` on `n`.
//! - [`dplr`]: the DPLR family (`kernels/dplr.cu`): readout and all-states
//!   outputs, rank ≤ 4, `n, m ≤ 128`, f32/f16/bf16/f64 storage and depth.
//!
//! - [`varlen`]: packed variable-length batches (`cu_seqlens`) on the
//!   Diagonal `[B,T,D]` kernels (`kernels/varlen.cu`), every plan.
//! - [`varlen_perm`]: the same on the PermDiagonal kernels
//!   (`kernels/varlen_perm.cu`), every plan.
//! - [`varlen_block`]: the same on the BlockDiagonal kernels
//!   (`kernels/varlen_block.cu`), every plan.
//! - [`packed`]: the packed plan these three share, generic over the
//!   family's unpacked plan.
//!
//! Every family also implements [`KernelScan`], the family-independent face
//! that `parascan check` and `parascan sweep` drive; [`resident`] keeps one
//! problem's buffers on the device while many plans run on them (`parascan
//! bench`).

pub mod block_diagonal;
mod common;
pub mod device;
pub mod diagonal;
pub mod dplr;
pub mod face;
pub mod lookback_switch;
pub mod packed;
pub mod perm_diagonal;
mod perm_wide;
pub mod resident;
pub mod varlen;
pub mod varlen_block;
pub mod varlen_perm;

pub use device::{DeviceMut, DeviceRef, DeviceTensor, ElemType};
pub use diagonal::{
    plan_diagonal, scan_diagonal_reverse, DiagShape, DiagonalBuffers, DiagonalIo,
    DiagonalWorkspace, GpuPlan, GpuPlanKind, Launch, LaunchRole, ScratchSizes,
};
pub use face::{
    launch_scan, launch_scan_buffers, measure_depth, measure_depth_outputs, scan_host,
    scan_host_planned, AffineBuffers, AffineIo, BindInputs, EndBuffers, Ends, FamilyPlan,
    KernelLaunch, ScratchLayout, Workspace,
};

use crate::backend::launch::{DeviceBuffer, KernelRunner};
use crate::error::Result;
use crate::scan::plan::PlanRequest;

/// What a family's GPU planner chose for one problem, in family-independent
/// terms (for reports, caches and memory caps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPlanSummary {
    /// Short name of the plan shape, e.g. `P2 one-level`.
    pub kind: String,
    /// Steps per chunk `C` (`T` for single-pass and sequential plans).
    pub chunk: usize,
    /// Chunks per sequence `⌈T/C⌉`.
    pub chunks: usize,
    /// The plan's depth formula (combines on the critical path).
    pub depth_formula: u64,
    /// Device scratch the plan needs, in bytes.
    pub scratch_bytes: usize,
    /// Bytes one run of the plan moves through device memory, as its
    /// planner counts them: every pass over the inputs (two for the
    /// chunked plans, which read them in the reduce and again in the
    /// rescan), the outputs once, and the scratch (written and read once;
    /// a look-back's payloads: written once, one predecessor's prefix read
    /// per chunk).
    pub plan_bytes: u64,
    /// Key under which measured depth may be cached: two problems with equal
    /// keys have equal measured depth (typically `(T, C, plan kind, ...)`
    /// hashed by the family).
    pub depth_key: String,
}

/// Outputs of [`KernelScan::kernel_scan`], downloaded to the host.
#[derive(Clone, Debug)]
pub struct KernelOutputs<S> {
    /// Every output, shaped as the family's `output_shape()`.
    pub out: Vec<S>,
    /// Final states, shaped as the family's `final_shape()`.
    pub h_last: Vec<S>,
    /// The plan that ran.
    pub plan: KernelPlanSummary,
}

/// Issues one run of a prepared problem's launches (no synchronize), see
/// [`KernelScan::kernel_prepare`].
pub type PreparedLaunches<'r> = Box<dyn FnMut() -> Result<()> + 'r>;

/// A problem of a family that has kernels in `kernels/*.cu`: the face
/// `check`, `sweep` and generic code use for every family alike.
///
/// A family implements the two required methods (plan, upload) and
/// uploads into inputs that [`BindInputs`] turns into the kernels' arguments;
/// the provided methods and [`scan_host`] are the same for every family.
/// All methods validate the problem (typed errors, before any launch).
pub trait KernelScan {
    /// Storage type of inputs and outputs.
    type Elem: crate::dtype::Storage + bytemuck::Pod;
    /// The family's GPU plan.
    type Plan: FamilyPlan;
    /// The problem's inputs uploaded to a runner.
    type Inputs: BindInputs<Self::Plan>;

    /// Validates the problem and plans `request` for a device with
    /// `sm_count` SMs, without launching anything.
    fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<Self::Plan>;

    /// Uploads the inputs to `runner` (call [`plan`](Self::plan) first: it
    /// validates the problem).
    fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs>;

    /// The scan's typed memory: uploaded inputs, every output (`out`) and
    /// the final states (`last`).
    fn bind<'a>(
        inputs: &'a Self::Inputs,
        out: &'a DeviceBuffer,
        last: &'a DeviceBuffer,
    ) -> <Self::Plan as FamilyPlan>::Buffers<'a> {
        inputs.bind(out, last)
    }

    /// The plan's family-independent summary.
    fn kernel_plan(&self, sm_count: usize, request: PlanRequest) -> Result<KernelPlanSummary> {
        Ok(self.plan(sm_count, request)?.summary())
    }

    /// Uploads the inputs, poisons the outputs (all bits set: NaN), runs the
    /// plan's launches, synchronizes and downloads every output.
    fn kernel_scan<R: KernelRunner>(
        &self,
        runner: &R,
        request: PlanRequest,
    ) -> Result<KernelOutputs<Self::Elem>>
    where
        Self: Sized,
    {
        let mut ws = Workspace::new();
        let (out, h_last, plan) = scan_host(runner, &mut ws, self, request)?;
        Ok(KernelOutputs {
            out,
            h_last,
            plan: plan.summary(),
        })
    }

    /// Measured depth of the plan: runs the same launch sequence on the
    /// family's depth-counting kernel instantiation and returns the largest
    /// counter over all outputs.
    fn kernel_depth<R: KernelRunner>(&self, runner: &R, request: PlanRequest) -> Result<u64> {
        let plan = self.plan(runner.sm_count(), request)?;
        measure_depth(runner, &mut Workspace::new(), &plan)
    }

    /// Uploads the inputs and allocates outputs and scratch once; the
    /// returned closure issues the plan's launches (without synchronizing),
    /// so timing it measures the kernels only.
    fn kernel_prepare<'r, R: KernelRunner>(
        &self,
        runner: &'r R,
        request: PlanRequest,
    ) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)>
    where
        Self: Sized,
        Self::Inputs: 'r,
        Self::Plan: 'r,
    {
        let plan = self.plan(runner.sm_count(), request)?;
        let inputs = self.upload(runner)?;
        let (out, last) = face::poisoned_outputs::<Self, R>(runner, &plan)?;
        let mut ws = Workspace::new();
        ws.reserve(runner, plan.scratch(false)?)?;
        let summary = plan.summary();
        let run =
            move || launch_scan_buffers(runner, &mut ws, &plan, Self::bind(&inputs, &out, &last));
        Ok((summary, Box::new(run)))
    }
}
