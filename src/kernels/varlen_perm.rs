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

use super::common::{dtype_index, dtype_table};
use super::device::{DeviceMut, DeviceRef, ElemType};
use super::face::{BindInputs, IoArg, Workspace};
use super::packed::{PackedArgs, PackedFamily, PackedPlan, PackedSizes};
use super::perm_diagonal::{
    launch_args, plan_perm_diagonal, PdGpuPlan, PdLaunchRole, PdScratch, PdShape, PdTeams,
    PdWorkspace,
};
use super::KernelScan;
use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::Result;
use crate::family::perm_diagonal::PermDiagonal;
use crate::family::varlen::Varlen;
use crate::family::LinearProblem;
use crate::scan::plan::PlanRequest;
use crate::scan::segmented::{Segments, SeqOffset};

/// A packed PermDiagonal plan: the unpacked PD plan of the packed length
/// plus the sequences. Make it with [`plan_perm_diagonal_varlen`].
pub type VarlenPdPlan = PackedPlan<PdGpuPlan>;

/// Plans a packed PermDiagonal scan: `shape` is `(B, T, n)` with `T` the
/// packed length, `cu_seqlens` the `N + 1` offsets (checked:
/// [`Error::SeqOffsets`](crate::Error::SeqOffsets) naming `cu_seqlens`).
pub fn plan_perm_diagonal_varlen<O: SeqOffset>(
    shape: PdShape,
    cu_seqlens: &[O],
    dtype: DType,
    request: PlanRequest,
    sm_count: usize,
) -> Result<VarlenPdPlan> {
    let segs = Segments::new("cu_seqlens", cu_seqlens, shape.len)?;
    PackedPlan::new(plan_perm_diagonal(shape, dtype, request, sm_count)?, &segs)
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
        }
    };
}

static NAMES: [Names; 4] = dtype_table!(names);

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

/// The PermDiagonal kernels' packed twins (`kernels/varlen_perm.cu`); the
/// final states are gathered by `kernels/varlen.cu`'s gather (the
/// `[B,T,D]` layout with `D = n`).
impl PackedFamily for PdGpuPlan {
    type PackedIo = VarlenPdIo;
    type PackedBuffers<'a> = VarlenPdBuffers<'a>;
    const FAMILY: &'static str = "PermDiagonal";
    const PLANNER: &'static str = "plan_perm_diagonal_varlen (forward kernels)";
    const AXIS: &'static str = "n";

    fn dims(&self) -> (usize, usize, usize) {
        (self.shape.batch, self.shape.len, self.shape.n)
    }

    fn packable(&self) -> bool {
        !self.reverse
    }

    fn packed_io_args(&self, io: &VarlenPdIo, sizes: &PackedSizes) -> Vec<IoArg> {
        let size = sizes.elem().size;
        let mut args = vec![
            sizes.input("perm", io.perm, 1),
            sizes.input("d", io.d, size),
            sizes.input("b", io.b, size),
        ];
        args.extend(sizes.output_args(io.h0, io.h, io.h_t));
        args
    }

    fn packed_io_of<R: KernelRunner>(
        &self,
        runner: &R,
        bufs: &VarlenPdBuffers<'_>,
        sizes: &PackedSizes,
    ) -> Result<VarlenPdIo> {
        let elem = sizes.elem();
        let perm = sizes.check_input(runner, "perm", &bufs.perm, ElemType::of::<u8>())?;
        let d = sizes.check_input(runner, "d", &bufs.d, elem)?;
        let b = sizes.check_input(runner, "b", &bufs.b, elem)?;
        let (h0, h, h_t) = sizes.check_outputs(runner, bufs.h0.as_ref(), &bufs.h, &bufs.h_t)?;
        Ok(VarlenPdIo {
            perm,
            d,
            b,
            h0,
            h,
            h_t,
        })
    }

    fn packed_outputs(io: &VarlenPdIo) -> [u64; 3] {
        [io.h0.unwrap_or(0), io.h, io.h_t]
    }

    unsafe fn issue_packed<R: KernelRunner>(
        &self,
        runner: &R,
        ws: &PdWorkspace,
        io: &VarlenPdIo,
        seq: PackedArgs,
    ) -> Result<()> {
        use KernelArg::Ptr;
        let k = &NAMES[dtype_index(self.dtype)];
        let (reduce, rescan) = if self.teams == PdTeams::Small {
            (k.small_reduce, k.small_rescan)
        } else {
            (k.wide_reduce, k.wide_rescan)
        };
        let inputs = [io.perm, io.d, io.b].map(Ptr);
        for l in &self.launches {
            let kernel = match l.role {
                PdLaunchRole::Sequential | PdLaunchRole::Rescan => rescan,
                PdLaunchRole::Reduce => reduce,
                PdLaunchRole::Scan | PdLaunchRole::ScanTileCarries => k.scan,
                PdLaunchRole::ScanTiles => k.tiles,
                PdLaunchRole::ScanApply => k.apply,
                PdLaunchRole::LookBackClear => l.kernel,
                PdLaunchRole::LookBack => k.lookback[lookback_index(self.shape.n)],
            };
            let args = launch_args(self, ws, l.role, inputs, [seq.h0, seq.h], seq.steps())?;
            // SAFETY: each packed kernel takes its unpacked twin's buffers
            // (kernels/varlen_perm.cu's contract) plus the words; sizes are
            // the caller's obligation, scratch is reserved in `ws`.
            unsafe { runner.launch(kernel, l.cfg, &args) }?;
        }
        Ok(())
    }
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
    PackedPlan::new(
        plan_perm_diagonal(shape, S::DTYPE, request, sm_count)?,
        v.segments(),
    )
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
