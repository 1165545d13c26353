//! One packed variable-length (`cu_seqlens`) plan for every family whose
//! kernels have packed twins: [`PackedPlan`] over the family's unpacked
//! plan, which implements [`PackedFamily`].
//!
//! The technique is the same for every family (see [`super::varlen`]): a
//! sequence boundary is a segment boundary of the scan, so the packed plan
//! is the unpacked plan of the packed length `T` with every data launch
//! replaced by its packed twin, then one launch that gathers the final state
//! of each sequence from the output `h` (or its `h0` for an empty sequence).
//! The packed twins read the sequence-start words (`T + N + 1` u32: per step
//! `s + 1` where sequence `s` starts, then the offsets), which the planner
//! builds from the offsets and which are uploaded with the launches.
//!
//! What is shared lives here: the offsets and words, the checks, the
//! family-independent summary, the refusal of depth runs, the checks of
//! `h0`, `h` and `h_t`, the upload of the words and the final-state gather.
//! A family supplies only its packed kernels' names and argument lists and
//! its inputs ([`PackedFamily`]); [`super::varlen`] (Diagonal),
//! [`super::varlen_perm`] (PermDiagonal) and [`super::varlen_block`]
//! (BlockDiagonal) are the implementations.

use std::fmt;

use super::common::{check_int, i32_arg};
use super::device::{check_arg, DeviceMut, DeviceRef, ElemType};
use super::face::{FamilyPlan, IoArg, Workspace};
use super::KernelPlanSummary;
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::scan::segmented::Segments;

/// An unpacked GPU plan whose kernels have packed (`cu_seqlens`) twins:
/// what [`PackedPlan`] needs beyond [`FamilyPlan`]. The packed kernels take
/// the unpacked twin's arguments plus the words (`seg`), the per-sequence
/// initial states and the sequence count ([`PackedArgs`]).
pub trait PackedFamily: FamilyPlan {
    /// Raw device addresses of one packed scan: the family's inputs, `h0`
    /// (`[B,N,S]`), `h` (`[B,T,S]`) and `h_t` (`[B,N,S]`).
    type PackedIo: Copy + Default + fmt::Debug;
    /// The same as typed device memory whose owner, size and element type
    /// are checked.
    type PackedBuffers<'a>;

    /// The family in errors, e.g. `"Diagonal"`.
    const FAMILY: &'static str;
    /// The packed planner and the plans it makes, in errors, e.g.
    /// `"plan_diagonal_varlen (forward [B,T,D] kernels)"`.
    const PLANNER: &'static str;
    /// The name of the state axis in shapes: `"D"` or `"n"`.
    const AXIS: &'static str;

    /// `(B, T, S)`: batch, (packed) length and elements of one state.
    fn dims(&self) -> (usize, usize, usize);

    /// Whether the packed twins run this plan (e.g. forward only).
    fn packable(&self) -> bool;

    /// Every argument of `io` with its size (the shared sizes of `h0`, `h`
    /// and `h_t` in `sizes`), in the kernels' order.
    fn packed_io_args(&self, io: &Self::PackedIo, sizes: &PackedSizes) -> Vec<IoArg>;

    /// The addresses of typed memory, after checking every argument
    /// against `runner` and `sizes` (typed errors naming the argument).
    fn packed_io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &Self::PackedBuffers<'_>,
        sizes: &PackedSizes,
    ) -> Result<Self::PackedIo>;

    /// `(h0, h, h_t)` of `io` (0: absent).
    fn packed_outputs(io: &Self::PackedIo) -> [u64; 3];

    /// Issues the packed twins of the plan's data launches, in order,
    /// without synchronizing ([`issue_finals`](Self::issue_finals) follows).
    ///
    /// # Safety
    /// `io` addresses live memory of `runner` of the packed sizes, the plan
    /// passed `check` and is [`packable`](Self::packable), `ws` holds its
    /// data scratch and `seq.seg` the plan's words.
    unsafe fn issue_packed<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &Workspace<Self::Scratch>,
        io: &Self::PackedIo,
        seq: PackedArgs,
    ) -> Result<()>;

    /// Issues what follows the packed launches: by default
    /// `kernels/varlen.cu`'s gather of every sequence's final state from
    /// `h` (`[B,T,S]`) into `h_t` (`[B,N,S]`), or of its `h0` for an empty
    /// sequence. A family whose packed kernels leave no `[B,T,S]` states
    /// (e.g. a readout output) overrides it.
    ///
    /// # Safety
    /// As [`issue_packed`](Self::issue_packed), after it; `offsets` holds
    /// the plan's `N + 1` offsets as u32 on the device.
    unsafe fn issue_finals<R: KernelRunner>(
        &self,
        runner: &R,
        io: &Self::PackedIo,
        offsets: KernelArg,
        sizes: &PackedSizes,
    ) -> Result<()> {
        let [h0, h, h_t] = Self::packed_outputs(io).map(KernelArg::Ptr);
        let grid = u32::try_from(sizes.states().div_ceil(256))
            .map_err(|_| Error::Plan(format!("{self}: too many final states for one launch")))?;
        let cfg = LaunchConfig {
            grid: [grid, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 0,
        };
        let [b, t, s, n] = [sizes.batch, sizes.len, sizes.state, sizes.sequences].map(i32_arg);
        let kernel = format!("diag_varlen_final_{}", self.dtype().name());
        // SAFETY: h (B·T·S) and h_t, h0 (B·N·S) are the caller's, and so
        // are the offsets (N + 1 entries, the last = T).
        unsafe { runner.launch(&kernel, cfg, &[h, h0, offsets, h_t, b, t, s, n]) }
    }
}

/// The arguments every packed launch adds to its unpacked twin's.
#[derive(Clone, Copy, Debug)]
pub struct PackedArgs {
    /// The per-step sequence starts (`T` u32, the plan's words).
    pub seg: KernelArg,
    /// Initial state of every sequence `[B,N,S]` (null: zeros).
    pub h0: KernelArg,
    /// All states `[B,T,S]` (output).
    pub h: KernelArg,
    /// Sequences `N` (a C `int`).
    pub seqs: KernelArg,
}

/// How a launch that reads the steps is called: the unpacked kernels write
/// the final state `h_T` themselves; their packed twins read the sequence
/// starts and count instead (the final states are gathered afterwards).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Steps {
    /// The unpacked kernels: `h_T`'s address.
    Unpacked { ht: KernelArg },
    /// The packed twins: the words and `N`.
    Packed { seg: KernelArg, seqs: KernelArg },
}

impl Steps {
    /// The initial state of the phase-2 scans of chunk aggregates: `h0`
    /// unpacked; null packed (every sequence's first element holds its
    /// `h0`, and absorbs what comes before it).
    pub(crate) fn seed(self, h0: KernelArg) -> KernelArg {
        match self {
            Steps::Unpacked { .. } => h0,
            Steps::Packed { .. } => KernelArg::Ptr(0),
        }
    }
}

impl PackedArgs {
    /// The packed twins' [`Steps`].
    pub(crate) fn steps(self) -> Steps {
        Steps::Packed {
            seg: self.seg,
            seqs: self.seqs,
        }
    }
}

/// A packed plan: the unpacked plan `P` of the packed length plus the
/// sequences. Make it with the family's planner
/// ([`plan_diagonal_varlen`](super::varlen::plan_diagonal_varlen), …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedPlan<P> {
    /// The unpacked plan (`T` the packed length); its launches are
    /// replaced by their packed twins when issued.
    pub inner: P,
    /// Offsets `[0, …, T]` (`N + 1` entries).
    offsets: Vec<usize>,
    /// What the kernels read: per step `s + 1` where the non-empty
    /// sequence `s` starts (else 0), then the offsets as u32.
    words: Vec<u32>,
}

/// The kernels' words: sequence starts per step, then the offsets.
fn words(offsets: &[usize], t: usize) -> Vec<u32> {
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

impl<P: PackedFamily> PackedPlan<P> {
    /// The packed plan of `inner` (planned for the packed length `T`) over
    /// the sequences `segs` (checked against `T` by [`Segments::new`]).
    pub(crate) fn new(inner: P, segs: &Segments) -> Result<Self> {
        let (batch, t, state) = inner.dims();
        check_int("sequences", segs.count())?;
        crate::mem::checked_product(
            "h_t",
            &[
                ("batch", batch),
                ("sequences", segs.count()),
                ("state", state),
                ("bytes per element", 16),
            ],
        )?;
        let offsets = segs.offsets().to_vec();
        Ok(PackedPlan {
            words: words(&offsets, t),
            offsets,
            inner,
        })
    }

    /// Sequences `N`.
    pub fn sequences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The offsets `[0, …, T]`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    fn sizes(&self) -> PackedSizes {
        let (batch, len, state) = self.inner.dims();
        PackedSizes {
            batch,
            len,
            state,
            sequences: self.sequences(),
            axis: P::AXIS,
            elem: ElemType::of_dtype(self.inner.dtype()),
        }
    }

    fn depth_unsupported(&self) -> Error {
        Error::Unsupported {
            what: "depth of a packed (cu_seqlens) kernel plan",
            by: format!("the {} varlen kernels", P::FAMILY),
            hint: "a packed plan runs the unpacked plan's launches (same chunks, same \
                   combines): measure the depth of the unpacked problem of the same T"
                .into(),
        }
    }
}

impl<P: fmt::Display> fmt::Display for PackedPlan<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.offsets.len() - 1;
        write!(f, "{} over {n} packed sequences", self.inner)
    }
}

/// The sizes of a packed scan's arguments, for the families' checks:
/// `B`, the packed `T`, `S` (elements of one state), `N`.
#[derive(Clone, Copy, Debug)]
pub struct PackedSizes {
    batch: usize,
    len: usize,
    state: usize,
    sequences: usize,
    axis: &'static str,
    elem: ElemType,
}

impl PackedSizes {
    /// Elements of `h` (and of every per-step input): `B·T·S`.
    pub fn steps(&self) -> usize {
        self.batch * self.len * self.state
    }

    /// Elements of `h0` and of `h_t`: `B·N·S`.
    pub fn states(&self) -> usize {
        self.batch * self.sequences * self.state
    }

    /// The storage element type.
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// `[B,T,S]` with the values, for errors.
    pub fn describe_steps(&self) -> String {
        let (b, t, s, x) = (self.batch, self.len, self.state, self.axis);
        format!("[B,T,{x}] = [{b},{t},{s}]")
    }

    fn describe_states(&self) -> String {
        let (b, n, s, x) = (self.batch, self.sequences, self.state, self.axis);
        format!("[B,N,{x}] = [{b},{n},{s}]")
    }

    /// A required per-step input `name` at `addr`: `B·T·S` elements of
    /// `size` bytes.
    pub(crate) fn input(&self, name: &'static str, addr: u64, size: usize) -> IoArg {
        IoArg::new(name, addr, self.steps(), size, true)
    }

    /// `h0` (optional), `h` and `h_t`, for the checks before a raw launch.
    pub(crate) fn output_args(&self, h0: Option<u64>, h: u64, h_t: u64) -> [IoArg; 3] {
        let size = self.elem.size;
        [
            IoArg::new("h0", h0.unwrap_or(0), self.states(), size, false),
            IoArg::new("h", h, self.steps(), size, true),
            IoArg::new("h_t", h_t, self.states(), size, true),
        ]
    }

    /// The address of a per-step input `name` of `B·T·S` elements of
    /// `elem`, after checking its owner, size and element type.
    pub(crate) fn check_input<R: KernelRunner>(
        &self,
        runner: &R,
        name: &'static str,
        buf: &DeviceRef<'_>,
        elem: ElemType,
    ) -> Result<u64> {
        check_arg(runner, name, buf, self.steps(), elem, || {
            self.describe_steps()
        })?;
        Ok(buf.addr)
    }

    /// The addresses of `h0`, `h` and `h_t`, after checking each buffer's
    /// owner, element count and element type.
    pub(crate) fn check_outputs<R: KernelRunner>(
        &self,
        runner: &R,
        h0: Option<&DeviceRef<'_>>,
        h: &DeviceMut<'_>,
        h_t: &DeviceMut<'_>,
    ) -> Result<(Option<u64>, u64, u64)> {
        let (states, elem) = (self.states(), self.elem);
        if let Some(h0) = h0 {
            check_arg(runner, "h0", h0, states, elem, || self.describe_states())?;
        }
        let h = self.check_input(runner, "h", &h.0, elem)?;
        check_arg(runner, "h_t", &h_t.0, states, elem, || {
            self.describe_states()
        })?;
        Ok((h0.map(|m| m.addr), h, h_t.0.addr))
    }
}

impl<P: PackedFamily> FamilyPlan for PackedPlan<P> {
    type Io = P::PackedIo;
    type Buffers<'a> = P::PackedBuffers<'a>;
    type Scratch = P::Scratch;

    fn dtype(&self) -> DType {
        self.inner.dtype()
    }

    fn summary(&self) -> KernelPlanSummary {
        let mut s = self.inner.summary();
        s.kind = format!("{} varlen", s.kind);
        s.depth_key = format!("{}/varlen", s.depth_key);
        s
    }

    fn check(&self) -> Result<()> {
        self.inner.check()?;
        let t = self.inner.dims().1;
        let ok = self.inner.packable()
            && self.offsets.len() >= 2
            && self.offsets.first() == Some(&0)
            && self.offsets.last() == Some(&t)
            && self.offsets.windows(2).all(|o| o[0] <= o[1])
            && self.words == words(&self.offsets, t);
        if !ok {
            return Err(Error::Plan(format!(
                "{self} is not what {} makes (offsets 0 ≤ … ≤ T)",
                P::PLANNER
            )));
        }
        Ok(())
    }

    fn scratch(&self, depth: bool) -> Result<P::Scratch> {
        if depth {
            return Err(self.depth_unsupported());
        }
        self.inner.scratch(false)
    }

    fn output_elements(&self) -> (usize, usize) {
        let sizes = self.sizes();
        (sizes.steps(), sizes.states())
    }

    fn io_args(&self, io: &P::PackedIo) -> Vec<IoArg> {
        self.inner.packed_io_args(io, &self.sizes())
    }

    fn io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &P::PackedBuffers<'_>,
    ) -> Result<P::PackedIo> {
        self.inner.packed_io_of(runner, bufs, &self.sizes())
    }

    /// No depth run exists for packed plans ([`scratch`](Self::scratch)
    /// refuses it first): the null addresses.
    fn depth_io(&self, _out: u64, _last: u64) -> P::PackedIo {
        P::PackedIo::default()
    }

    /// Issues the packed twins of the inner plan's launches, then the
    /// final-state gather.
    unsafe fn issue<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &Workspace<P::Scratch>,
        io: P::PackedIo,
        depth: bool,
    ) -> Result<()> {
        use KernelArg::Ptr;
        if depth {
            return Err(self.depth_unsupported());
        }
        let [h0, h, _] = P::packed_outputs(&io).map(Ptr);
        // The sequence-start words: uploaded per call (T + N + 1 u32, a few
        // percent of the inputs' bytes for S ≥ 32) and freed after the
        // launches are queued (stream-ordered on CUDA).
        let words: DeviceBuffer = runner.upload(&self.words)?;
        let seq = PackedArgs {
            seg: Ptr(words.ptr()),
            h0,
            h,
            seqs: i32_arg(self.sequences()),
        };
        let offsets = Ptr(words.ptr() + 4 * self.inner.dims().1 as u64);
        // SAFETY: forwarded to the caller; the words were uploaded above.
        unsafe {
            self.inner.issue_packed(runner, ws, &io, seq)?;
            self.inner
                .issue_finals(runner, &io, offsets, &self.sizes())?;
        }
        drop(words);
        Ok(())
    }
}

/// Device addresses of one packed scan whose inputs are one transition
/// tensor `a` and one input tensor `b`: the Diagonal
/// ([`VarlenIo`](super::varlen::VarlenIo)) and BlockDiagonal
/// ([`VarlenBlockIo`](super::varlen_block::VarlenBlockIo)) families. Sizes
/// in elements of the storage type: `a` as the family says (`B·T·D`, or
/// `B·T·nb·k·k` for `[B,T,nb,k,k]` blocks), `b`, `h`: `B·T·S` (`[B,T,S]`,
/// `T` packed); `h0`, `h_t`: `B·N·S` (`[B,N,S]`). `h0 = None` means zeros.
/// `h` is required (the final states are gathered from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedAffineIo {
    /// The transitions `a` (Diagonal decays or BlockDiagonal blocks).
    pub a: u64,
    /// Per-step input `b`.
    pub b: u64,
    /// Initial state of every sequence `[B,N,S]`.
    pub h0: Option<u64>,
    /// All states (output) `[B,T,S]`.
    pub h: u64,
    /// Final state of every sequence `[B,N,S]` (output).
    pub h_t: u64,
}

/// The same as [`PackedAffineIo`], as typed memory (owner, size and element
/// type checked).
#[derive(Debug)]
pub struct PackedAffineBuffers<'a> {
    /// `a`: as the family says.
    pub a: DeviceRef<'a>,
    /// `b`: `B·T·S` elements.
    pub b: DeviceRef<'a>,
    /// `h0`: `B·N·S` elements, or zeros.
    pub h0: Option<DeviceRef<'a>>,
    /// `h`: `B·T·S` elements.
    pub h: DeviceMut<'a>,
    /// `h_t`: `B·N·S` elements.
    pub h_t: DeviceMut<'a>,
}

impl PackedAffineIo {
    /// Every argument with its size, `a` holding `a_elements`.
    pub(crate) fn args(&self, sizes: &PackedSizes, a_elements: usize) -> Vec<IoArg> {
        let size = sizes.elem().size;
        let mut args = vec![
            IoArg::new("a", self.a, a_elements, size, true),
            sizes.input("b", self.b, size),
        ];
        args.extend(sizes.output_args(self.h0, self.h, self.h_t));
        args
    }

    /// `h0`, `h`, `h_t`.
    pub(crate) fn outputs(&self) -> [u64; 3] {
        [self.h0.unwrap_or(0), self.h, self.h_t]
    }
}

impl<'a> PackedAffineBuffers<'a> {
    /// Binds uploaded `a`, `b`, optional `h0` and the outputs `h`, `h_t`.
    pub(crate) fn bind(
        (a, b, h0): (&'a DeviceBuffer, &'a DeviceBuffer, Option<&'a DeviceBuffer>),
        h: &'a DeviceBuffer,
        h_t: &'a DeviceBuffer,
    ) -> Self {
        PackedAffineBuffers {
            a: a.into(),
            b: b.into(),
            h0: h0.map(Into::into),
            h: h.into(),
            h_t: h_t.into(),
        }
    }

    /// The addresses, after checking every buffer (`a`: `a.0` elements of
    /// shape `a.1`; the others as `sizes` says).
    pub(crate) fn check<R: KernelRunner>(
        &self,
        runner: &R,
        sizes: &PackedSizes,
        a: (usize, impl Fn() -> String),
    ) -> Result<PackedAffineIo> {
        let elem = sizes.elem();
        check_arg(runner, "a", &self.a, a.0, elem, a.1)?;
        let b = sizes.check_input(runner, "b", &self.b, elem)?;
        let (h0, h, h_t) = sizes.check_outputs(runner, self.h0.as_ref(), &self.h, &self.h_t)?;
        Ok(PackedAffineIo {
            a: self.a.addr,
            b,
            h0,
            h,
            h_t,
        })
    }
}
