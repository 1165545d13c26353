//! The one face every kernel family shows: a plan, a workspace, raw and
//! checked memory, and the launch, depth and host entry points written
//! once for all families.
//!
//! A family (`diagonal`, `perm_diagonal`, `block_diagonal`, `dplr`) supplies
//! only what differs between families: its planner, its plan type
//! implementing [`FamilyPlan`] (which arguments exist, how typed memory maps
//! to addresses, which kernels run with which arguments) and its problem
//! type implementing [`KernelScan`] (how host inputs are
//! uploaded). Everything else is here:
//!
//! - [`Workspace`]: the scratch buffers a plan needs, grown on demand and
//!   reused, so a warm workspace allocates nothing.
//! - [`launch_scan_buffers`]: the safe entry point on typed device memory
//!   ([`DeviceRef`]/[`DeviceMut`] in the
//!   family's `*Buffers`); [`launch_scan`]: the `unsafe` one on raw
//!   addresses (the family's `*Io`).
//! - [`measure_depth_outputs`] / [`measure_depth`]: the plan's launch
//!   sequence on the depth-counting kernels.
//! - [`scan_host`]: upload, launch, download, for host slices.

use std::fmt;
use std::marker::PhantomData;

use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::{KernelPlanSummary, KernelScan};
use crate::backend::launch::{DeviceBuffer, KernelRunner, LaunchConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::scan::plan::PlanRequest;

/// Round-up of workspace allocations, in bytes: a workspace that grows by
/// a few bytes at a time still reallocates rarely.
const WORKSPACE_GRANULE: usize = 4096;

/// The scratch sizes of a family's plan: one byte count per workspace
/// buffer (`SLOTS` of them).
pub trait ScratchLayout: Copy + Default + fmt::Debug {
    /// Number of device buffers the family's kernels take as scratch.
    const SLOTS: usize;
    /// Bytes of buffer `slot` (`0..SLOTS`).
    fn slot_bytes(&self, slot: usize) -> usize;
    /// The layout whose buffer `slot` holds `bytes(slot)` bytes (a
    /// workspace's capacity).
    fn from_slots(bytes: impl Fn(usize) -> usize) -> Self;
    /// Total bytes.
    fn total_bytes(&self) -> usize {
        (0..Self::SLOTS).map(|i| self.slot_bytes(i)).sum()
    }
}

/// One scratch buffer, for families whose scratch is one region carved up
/// by offsets (BlockDiagonal).
impl ScratchLayout for usize {
    const SLOTS: usize = 1;
    fn slot_bytes(&self, _slot: usize) -> usize {
        *self
    }
    fn from_slots(bytes: impl Fn(usize) -> usize) -> Self {
        bytes(0)
    }
}

/// Scratch buffers reused across calls: they grow to the largest plan seen
/// and never shrink, so a warm workspace allocates nothing per call.
///
/// A buffer belongs to one runner kind; using the workspace with another
/// kind reallocates. Use one workspace per stream (its buffers are
/// overwritten by every call). Each family names its own:
/// `DiagonalWorkspace`, `PdWorkspace`, `BlockDiagonalWorkspace`,
/// `DplrWorkspace`.
pub struct Workspace<S> {
    bufs: Vec<Option<DeviceBuffer>>,
    allocations: usize,
    _layout: PhantomData<S>,
}

impl<S> fmt::Debug for Workspace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held: Vec<usize> = self
            .bufs
            .iter()
            .map(|b| b.as_ref().map_or(0, DeviceBuffer::len_bytes))
            .collect();
        f.debug_struct("Workspace")
            .field("bytes", &held)
            .field("allocations", &self.allocations)
            .finish()
    }
}

impl<S: ScratchLayout> Default for Workspace<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: ScratchLayout> Workspace<S> {
    /// An empty workspace (allocates on first use).
    pub fn new() -> Self {
        Workspace {
            bufs: (0..S::SLOTS).map(|_| None).collect(),
            allocations: 0,
            _layout: PhantomData,
        }
    }

    /// Makes every buffer at least as large as `need`, on `runner`:
    /// reallocates a buffer only when it is too small or belongs to another
    /// runner kind (rounded up to 4 KiB, so small growth rarely reallocates).
    pub fn reserve<R: KernelRunner>(&mut self, runner: &R, need: S) -> Result<()> {
        for (i, slot) in self.bufs.iter_mut().enumerate() {
            let bytes = need.slot_bytes(i);
            if bytes == 0 {
                continue;
            }
            let fits = slot.as_ref().is_some_and(|buf| {
                buf.backend_name() == runner.backend_name() && buf.len_bytes() >= bytes
            });
            if !fits {
                // Free the old buffer first (stream-ordered on CUDA).
                *slot = None;
                let size = bytes
                    .checked_next_multiple_of(WORKSPACE_GRANULE)
                    .unwrap_or(bytes);
                *slot = Some(runner.alloc(size)?);
                self.allocations += 1;
            }
        }
        Ok(())
    }

    /// Bytes held per buffer.
    pub fn capacity(&self) -> S {
        S::from_slots(|i| {
            self.bufs
                .get(i)
                .and_then(Option::as_ref)
                .map_or(0, DeviceBuffer::len_bytes)
        })
    }

    /// Total bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity().total_bytes()
    }

    /// Number of device allocations made so far (constant once warm).
    pub fn allocations(&self) -> usize {
        self.allocations
    }

    /// Frees every buffer.
    pub fn clear(&mut self) {
        self.bufs.iter_mut().for_each(|b| *b = None);
    }

    /// Address of buffer `slot` (0 when not allocated).
    pub(crate) fn ptr(&self, slot: usize) -> u64 {
        self.bufs
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, DeviceBuffer::ptr)
    }
}

/// One device argument of a scan, as the shared checks before a raw
/// launch see it (non-null when required, aligned, no overlap).
#[derive(Clone, Copy, Debug)]
pub struct IoArg {
    /// The argument's name in errors (the field of the family's `*Io`).
    pub name: &'static str,
    /// Its address (0: absent).
    pub addr: u64,
    /// Bytes the kernels may touch from `addr`.
    pub bytes: usize,
    /// Required alignment (the element size).
    pub align: usize,
    /// Whether the plan needs it (a null required address is an error).
    pub required: bool,
}

impl IoArg {
    /// An argument of `elements` values of `size` bytes.
    pub fn new(
        name: &'static str,
        addr: u64,
        elements: usize,
        size: usize,
        required: bool,
    ) -> Self {
        IoArg {
            name,
            addr,
            bytes: elements.saturating_mul(size),
            align: size,
            required,
        }
    }
}

/// The initial and final states of one scan, as raw device addresses: both
/// `[B, state]` (`B·D`, `B·n` or `B·n·m` elements of the storage type, as
/// the family's `*Io` says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    /// Initial state; `None` (or `Some(0)`) means zeros.
    pub h0: Option<u64>,
    /// Final state `h_T` (output).
    pub h_t: u64,
}

impl Ends {
    /// The initial state (`None` or `Some(0)`: zeros) and the final state.
    pub fn new(h0: Option<u64>, h_t: u64) -> Self {
        Ends { h0, h_t }
    }

    /// `h0` (optional) and `h_t` (required), `elements` values of `size`
    /// bytes each, for the checks of [`launch_scan`].
    pub(crate) fn args(&self, elements: usize, size: usize) -> [IoArg; 2] {
        [
            IoArg::new("h0", self.h0.unwrap_or(0), elements, size, false),
            IoArg::new("h_t", self.h_t, elements, size, true),
        ]
    }

    /// The ends of a depth run: no initial state, the final one at `last`.
    pub(crate) fn last(last: u64) -> Self {
        Ends {
            h0: None,
            h_t: last,
        }
    }
}

/// The same as [`Ends`], as typed device memory whose owner, size and
/// element type are checked.
#[derive(Debug)]
pub struct EndBuffers<'a> {
    /// Initial state, or zeros.
    pub h0: Option<DeviceRef<'a>>,
    /// Final state `h_T`.
    pub h_t: DeviceMut<'a>,
}

impl<'a> EndBuffers<'a> {
    /// The initial state (`None`: zeros) and the final state.
    pub fn new(h0: Option<DeviceRef<'a>>, h_t: DeviceMut<'a>) -> Self {
        EndBuffers { h0, h_t }
    }

    /// The addresses, after checking that each holds `elements` values of
    /// `elem` owned by `runner` (`shape` describes them in errors).
    pub(crate) fn check<R: KernelRunner>(
        &self,
        runner: &R,
        elements: usize,
        elem: ElemType,
        shape: impl Fn() -> String,
    ) -> Result<Ends> {
        if let Some(h0) = &self.h0 {
            check_arg(runner, "h0", h0, elements, elem, &shape)?;
        }
        check_arg(runner, "h_t", &self.h_t.0, elements, elem, &shape)?;
        Ok(Ends {
            h0: self.h0.as_ref().map(|m| m.addr),
            h_t: self.h_t.0.addr,
        })
    }
}

/// Uploaded inputs of a family whose plans are `P` (see
/// [`KernelScan::upload`]): with every output at
/// `out` and the final states at `last`, they make the kernels' typed
/// arguments.
pub trait BindInputs<P: FamilyPlan> {
    /// The scan's typed memory.
    fn bind<'a>(&'a self, out: &'a DeviceBuffer, last: &'a DeviceBuffer) -> P::Buffers<'a>;
}

/// The checks every raw launch makes before the first kernel: required
/// addresses are non-null, every address is aligned to its element, and no
/// two ranges overlap (an output overlapping an input or another output
/// would make the result depend on the kernels' schedule).
pub(crate) fn check_args(args: &[IoArg]) -> Result<()> {
    for a in args {
        if a.required && a.addr == 0 {
            return Err(Error::size(a.name, 0, "a non-null device address"));
        }
        if a.addr % a.align.max(1) as u64 != 0 {
            return Err(Error::size(
                a.name,
                a.addr as usize,
                format!("an address aligned to the {}-byte element", a.align),
            ));
        }
    }
    for (i, p) in args.iter().enumerate() {
        for q in &args[..i] {
            if p.addr == 0 || q.addr == 0 {
                continue;
            }
            let overlap = p.addr < q.addr.saturating_add(q.bytes as u64)
                && q.addr < p.addr.saturating_add(p.bytes as u64);
            if overlap {
                return Err(Error::size(
                    p.name,
                    p.addr as usize,
                    format!(
                        "a range of {} bytes that does not overlap `{}` ({:#x}, {} bytes)",
                        p.bytes, q.name, q.addr, q.bytes
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Device addresses of one scan whose inputs are one transition tensor `a`
/// and one input tensor `b` (`h_t = A_t h_{t−1} + b_t`): the Diagonal and
/// BlockDiagonal families. A `CUdeviceptr` on CUDA, a host address in the
/// emulator ([`DeviceBuffer::ptr`] plus a byte offset); each family's alias
/// ([`DiagonalIo`](super::diagonal::DiagonalIo),
/// [`BlockDiagonalIo`](super::block_diagonal::BlockDiagonalIo)) states the
/// sizes. `h = None` computes only `h_t`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffineIo {
    /// The transitions `A_t`.
    pub a: u64,
    /// The inputs `b_t`.
    pub b: u64,
    /// All states (output).
    pub h: Option<u64>,
    /// Initial state and final state (output).
    pub ends: Ends,
}

/// The same as [`AffineIo`], as typed or sized device memory whose owner,
/// size and element type are checked: each must hold exactly the elements
/// its shape implies, of the plan's storage dtype.
#[derive(Debug)]
pub struct AffineBuffers<'a> {
    /// The transitions `A_t`.
    pub a: DeviceRef<'a>,
    /// The inputs `b_t`.
    pub b: DeviceRef<'a>,
    /// All states, or only `h_t` is computed.
    pub h: Option<DeviceMut<'a>>,
    /// `h0` (or zeros) and `h_t`.
    pub ends: EndBuffers<'a>,
}

/// Element counts of an affine scan's arguments and the shapes that name
/// them in errors.
pub(crate) struct AffineSizes<A, S, H> {
    /// `a`'s elements and shape.
    pub(crate) a: (usize, A),
    /// The elements and shape of `b` and of `h` (one per step and row).
    pub(crate) steps: (usize, S),
    /// The elements and shape of `h0` and of `h_t`.
    pub(crate) states: (usize, H),
}

impl AffineIo {
    /// Every argument with its size (`size`-byte elements), for the checks
    /// of [`launch_scan`].
    pub(crate) fn args<A, S, H>(&self, sizes: &AffineSizes<A, S, H>, size: usize) -> Vec<IoArg> {
        let n = sizes.steps.0;
        let [h0, h_t] = self.ends.args(sizes.states.0, size);
        vec![
            IoArg::new("a", self.a, sizes.a.0, size, true),
            IoArg::new("b", self.b, n, size, true),
            h0,
            IoArg::new("h", self.h.unwrap_or(0), n, size, false),
            h_t,
        ]
    }

    /// The `Io` of a depth run: no inputs, outputs at `out` and `last`.
    pub(crate) fn depth(out: u64, last: u64) -> Self {
        AffineIo {
            h: Some(out),
            ends: Ends::last(last),
            ..AffineIo::default()
        }
    }
}

impl AffineBuffers<'_> {
    /// The addresses, after checking each buffer's owner, element count and
    /// element type (`elem`) against `runner` and `sizes`.
    pub(crate) fn check<R, A, S, H>(
        &self,
        runner: &R,
        elem: ElemType,
        sizes: &AffineSizes<A, S, H>,
    ) -> Result<AffineIo>
    where
        R: KernelRunner,
        A: Fn() -> String,
        S: Fn() -> String,
        H: Fn() -> String,
    {
        let (n, steps) = (sizes.steps.0, &sizes.steps.1);
        check_arg(runner, "a", &self.a, sizes.a.0, elem, &sizes.a.1)?;
        check_arg(runner, "b", &self.b, n, elem, steps)?;
        if let Some(h) = &self.h {
            check_arg(runner, "h", &h.0, n, elem, steps)?;
        }
        Ok(AffineIo {
            a: self.a.addr,
            b: self.b.addr,
            h: self.h.as_ref().map(|m| m.0.addr),
            ends: self
                .ends
                .check(runner, sizes.states.0, elem, &sizes.states.1)?,
        })
    }
}

/// One kernel launch of a plan: its role `R` (which decides the argument
/// list), the `extern "C"` kernel name with its dtype suffix, and the grid,
/// block and dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLaunch<R> {
    /// What it does.
    pub role: R,
    /// The `extern "C"` kernel name.
    pub kernel: &'static str,
    /// Grid, block and dynamic shared memory.
    pub cfg: LaunchConfig,
}

/// What a kernel family's GPU plan supplies to the shared entry points.
///
/// Implemented by `GpuPlan` (Diagonal), `PdGpuPlan`, `BlockPlan` and
/// `DplrPlan`, and by the packed plans over the first three
/// ([`PackedPlan`](super::packed::PackedPlan)); make plans with the
/// family's planner (`plan_diagonal`, …).
pub trait FamilyPlan: fmt::Display {
    /// Raw device addresses of one scan (the `unsafe` entry point's input).
    type Io: Copy + Default + fmt::Debug;
    /// Typed, borrowed device memory of one scan (the safe entry point's
    /// input): every field a [`DeviceRef`] or
    /// [`DeviceMut`].
    type Buffers<'a>;
    /// Scratch sizes, one per workspace buffer.
    type Scratch: ScratchLayout;

    /// Storage dtype of inputs and outputs.
    fn dtype(&self) -> DType;

    /// The family-independent summary.
    fn summary(&self) -> KernelPlanSummary;

    /// Rejects a plan that is not what the family's planner makes (plans
    /// have public fields) or that breaks the launch contract.
    fn check(&self) -> Result<()>;

    /// Scratch the data kernels (`depth = false`) or the depth-counting
    /// kernels (`depth = true`) need.
    fn scratch(&self, depth: bool) -> Result<Self::Scratch>;

    /// Elements of the two outputs: every output (`h`, `y` or states) and
    /// the final states.
    fn output_elements(&self) -> (usize, usize);

    /// Every argument of `io` with its size, for the checks of
    /// [`launch_scan`].
    fn io_args(&self, io: &Self::Io) -> Vec<IoArg>;

    /// The addresses of typed memory, after checking each argument's owner,
    /// element count and element type against `runner` and the plan
    /// (typed errors naming the argument).
    fn io_of<R: KernelRunner>(&self, runner: &R, bufs: &Self::Buffers<'_>) -> Result<Self::Io>;

    /// The `Io` of a depth run: no inputs, outputs at `out` and `last`.
    fn depth_io(&self, out: u64, last: u64) -> Self::Io;

    /// Issues the plan's launches (data or depth kernels) on `io` and the
    /// workspace's scratch, without synchronizing.
    ///
    /// # Safety
    /// `io` addresses live memory of `runner` of the sizes the plan's shape
    /// implies, the plan passed [`check`](Self::check), and `ws` holds
    /// [`scratch`](Self::scratch)`(depth)`.
    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &Workspace<Self::Scratch>,
        io: Self::Io,
        depth: bool,
    ) -> Result<()>;
}

/// Issues the launches of `plan` on raw device addresses, in order, without
/// synchronizing.
///
/// Checked before the first launch: the plan (it must be what the family's
/// planner makes), that every required address is non-null and aligned to
/// its element, and that no two ranges overlap. The scratch comes from `ws`
/// (allocated only when it grows).
///
/// # Safety
/// Every address in `io` must be live memory of `runner` holding at least
/// the elements the plan's shape implies (see the family's `*Io`) until
/// the launches complete: the kernels' contract, which no runner can check
/// (on a GPU a violation is a device fault, in the emulator it corrupts
/// host memory). The safe entry point is [`launch_scan_buffers`].
pub unsafe fn launch_scan<P: FamilyPlan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<P::Scratch>,
    plan: &P,
    io: P::Io,
) -> Result<()> {
    plan.check()?;
    check_args(&plan.io_args(&io))?;
    ws.reserve(runner, plan.scratch(false)?)?;
    // SAFETY: the caller vouches for the sizes; plan and ranges were
    // checked above, and the scratch reserved.
    unsafe { plan.issue(runner, ws, io, false) }
}

/// Issues the launches of `plan` on memory of `runner` (without
/// synchronizing and, once `ws` is warm, without allocating), after
/// checking that each argument belongs to `runner`, holds exactly the
/// elements the shape implies, of the plan's dtype (typed
/// [`Error::Shape`] / [`Error::ElemType`] naming the argument otherwise),
/// and that no output overlaps another argument.
pub fn launch_scan_buffers<P: FamilyPlan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<P::Scratch>,
    plan: &P,
    bufs: P::Buffers<'_>,
) -> Result<()> {
    let io = plan.io_of(runner, &bufs)?;
    // SAFETY: every address starts memory of `runner` holding exactly the
    // elements the plan's shape implies (checked by `io_of`), borrowed by
    // `bufs` until the launches are queued (it is dropped after them).
    let queued = unsafe { launch_scan(runner, ws, plan, io) };
    drop(bufs);
    queued
}

/// Runs `plan`'s launch sequence on the depth-counting kernels (inputs and
/// `h0` are null: every step and `h0` has depth 0) and returns the depth of
/// every output: `(out, last)` as `u32`, shaped as the plan's outputs.
/// Outputs are poisoned first, so an unwritten element reads `u32::MAX`.
pub fn measure_depth_outputs<P: FamilyPlan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<P::Scratch>,
    plan: &P,
) -> Result<(Vec<u32>, Vec<u32>)> {
    plan.check()?;
    let (n_out, n_last) = plan.output_elements();
    let out = runner.alloc(n_out * 4)?;
    let last = runner.alloc(n_last * 4)?;
    runner.fill(&out, 0xFF)?;
    runner.fill(&last, 0xFF)?;
    ws.reserve(runner, plan.scratch(true)?)?;
    let io = plan.depth_io(out.ptr(), last.ptr());
    // SAFETY: the depth kernels read no inputs (null addresses) and write
    // the two outputs allocated above with the plan's sizes; the scratch
    // was reserved for the depth kernels.
    unsafe { plan.issue(runner, ws, io, true) }?;
    let mut host_out = vec![0u32; n_out];
    let mut host_last = vec![0u32; n_last];
    runner.download(&out, &mut host_out)?;
    runner.download(&last, &mut host_last)?;
    Ok((host_out, host_last))
}

/// The measured depth of `plan`: the deepest output of its launch sequence
/// on the depth-counting kernels. Equals the plan's depth formula when the
/// kernels follow their contract.
pub fn measure_depth<P: FamilyPlan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<P::Scratch>,
    plan: &P,
) -> Result<u64> {
    let (out, last) = measure_depth_outputs(runner, ws, plan)?;
    Ok(out.iter().chain(&last).copied().max().map_or(0, u64::from))
}

/// The scratch type of problem `K`'s plans.
pub type ScratchOf<K> = <<K as KernelScan>::Plan as FamilyPlan>::Scratch;

/// What [`scan_host`] returns: every output, the final states, the plan.
pub type HostScan<K> = (
    Vec<<K as KernelScan>::Elem>,
    Vec<<K as KernelScan>::Elem>,
    <K as KernelScan>::Plan,
);

/// Runs a host-side problem on `runner`: validates it, plans `request`,
/// uploads the inputs, poisons the outputs (`0xFF` bytes: NaN, so an
/// unwritten element shows), launches, downloads.
///
/// Returns `(out, last, plan)`: every output in the family's output shape
/// (`h`, or DPLR's `y`/states), the final states, and the plan that ran.
pub fn scan_host<K: KernelScan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<ScratchOf<K>>,
    problem: &K,
    request: PlanRequest,
) -> Result<HostScan<K>> {
    let plan = problem.plan(runner.sm_count(), request)?;
    scan_host_planned(runner, ws, problem, plan)
}

/// [`scan_host`] with a ready `plan` of `problem` (one the family's planner
/// made for the problem's shape and dtype, e.g. a reverse plan or a test's
/// variant; the launch entry point rejects one whose sizes or dtype do
/// not match the problem's buffers, with a typed error naming the argument).
pub fn scan_host_planned<K: KernelScan, R: KernelRunner>(
    runner: &R,
    ws: &mut Workspace<ScratchOf<K>>,
    problem: &K,
    plan: K::Plan,
) -> Result<HostScan<K>> {
    let inputs = problem.upload(runner)?;
    let (out, last) = poisoned_outputs::<K, R>(runner, &plan)?;
    launch_scan_buffers(runner, ws, &plan, K::bind(&inputs, &out, &last))?;
    let (n_out, n_last) = plan.output_elements();
    let mut host_out = vec![K::Elem::default(); n_out];
    let mut host_last = vec![K::Elem::default(); n_last];
    runner.download(&out, &mut host_out)?;
    runner.download(&last, &mut host_last)?;
    Ok((host_out, host_last, plan))
}

/// The two outputs of `plan`, allocated and poisoned (all bits set).
pub(crate) fn poisoned_outputs<K: KernelScan, R: KernelRunner>(
    runner: &R,
    plan: &K::Plan,
) -> Result<(DeviceBuffer, DeviceBuffer)> {
    let size = std::mem::size_of::<K::Elem>();
    let (n_out, n_last) = plan.output_elements();
    let out = runner.alloc(n_out * size)?;
    let last = runner.alloc(n_last * size)?;
    runner.fill(&out, 0xFF)?;
    runner.fill(&last, 0xFF)?;
    Ok((out, last))
}
