//! Variable-length batches (`cu_seqlens`) and in-place state, for every
//! family on the CPU engine.
//!
//! A [`Varlen`] wraps a problem of any family whose time axis holds `N`
//! sequences packed end to end (flash-linear-attention's and Mamba-2's
//! `cu_seqlens` convention: offsets `[0, …, T]`, usually with `B = 1`; with
//! `B > 1` every batch row is split at the same offsets). Each sequence has
//! its own initial state and its own final state, `[B, N, state]`; one pass
//! of the chunked engine scans them all, the carry stopping at every
//! boundary ([`crate::scan::segmented`]) — not one call per sequence.
//!
//! ```
//! use parascan::backend::Cpu;
//! use parascan::family::{diagonal::Diagonal, varlen::Varlen, Layout};
//! use parascan::PlanRequest;
//!
//! let dim = 4;
//! let cu_seqlens = [0i32, 5, 5, 12]; // three sequences: 5, 0 and 7 steps
//! let t = 12;
//! let a = vec![0.9f32; t * dim]; // decays [1,T,D], T = 12 packed steps
//! let b = vec![0.1f32; t * dim];
//! let h0 = vec![1.0f32; 3 * dim]; // [N,D]: one initial state per sequence
//! let problem = Diagonal { a: &a, b: &b, h0: None, batch: 1, len: t, dim, layout: Layout::Btd };
//! let packed = Varlen::new(problem, &cu_seqlens, Some(&h0))?;
//! let run = Cpu::new().scan(&packed, PlanRequest::Chunk(4))?;
//! assert_eq!(run.h_last.len(), 3 * dim); // h_T: [N,D]
//! assert_eq!(&run.h_last[dim..2 * dim], &h0[dim..2 * dim]); // empty sequence: h_T = h0
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! In-place state ([`crate::backend::Cpu::scan_in_place`]): one buffer is
//! `h0` on entry and `h_T` on exit, for a plain problem (`[B, state]`) or a
//! [`Varlen`] (`[B, N, state]`). Every initial state is read before any
//! final state is written (the final states are written after the pass).

use super::LinearProblem;
use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::scan::plan::ScanShape;
use crate::scan::segmented::{Segments, SeqOffset};
use crate::scan::Plan;

/// A family problem the segmented engine can run: every built-in family
/// ([`super::diagonal::Diagonal`] in both layouts,
/// [`super::perm_diagonal::PermDiagonal`],
/// [`super::block_diagonal::BlockDiagonal`], [`super::dplr::Dplr`] in
/// both output modes).
pub trait Segmentable: LinearProblem<Out: Storage> + Copy {
    /// Scalars of one sequence's state: `D`, `n`, or `n·m` (DPLR).
    fn state_len(&self) -> usize;
    /// Batch rows `B` (each a packed time axis).
    fn rows(&self) -> usize;
    /// Steps `T` of the (packed) time axis.
    fn steps(&self) -> usize;
    /// The problem's own initial state (must be `None` under [`Varlen`]
    /// and for [`crate::backend::Cpu::scan_in_place`]).
    fn own_h0(&self) -> Option<&[Self::Out]>;
    /// Runs the forward scan with initial states `h0` (`[B, N, state]`,
    /// zeros when `None`; the problem's own `h0` is not read), sequences
    /// `segs` (`None`: one per row, `N = 1`), writing every output into
    /// `out` (`output_len()` scalars, already checked) and returning the
    /// final states `[B, N, state]` in compute precision.
    fn run_states(
        &self,
        plan: &Plan,
        segs: Option<&Segments>,
        h0: Option<&[Self::Out]>,
        out: &mut [Self::Out],
    ) -> Vec<<Self::Out as Storage>::Compute>;
}

/// A problem of any family whose time axis packs `N` sequences; see the
/// module docs. Built by [`Varlen::new`], which checks the offsets.
///
/// Shapes: the inner problem's inputs and outputs as usual with `T` the
/// packed length (`cu_seqlens[N]`); `h0` and `h_T`: `[B, N, state]`
/// (`state` = `D`, `n` or `n×m`; for `B = 1` that is `[N, state]`).
/// A zero-length sequence has no output step and `h_T = h0` (zeros
/// without `h0`). The inner problem's own `h0` must be `None`.
#[derive(Clone, Debug)]
pub struct Varlen<'a, P: LinearProblem> {
    problem: P,
    h0: Option<&'a [P::Out]>,
    segs: Segments,
}

impl<'a, P: Segmentable> Varlen<'a, P> {
    /// Packs `problem` (time axis `T`) into the sequences `cu_seqlens`
    /// (`N + 1` offsets, `0 = o_0 ≤ o_1 ≤ … ≤ o_N = T`; `usize`, `u32`,
    /// `u64`, `i32` or `i64`) with per-sequence initial states `h0`
    /// (`[B, N, state]`). Every check runs here, before any work:
    /// the problem's shapes, the offsets ([`Error::SeqOffsets`] naming
    /// `cu_seqlens` and the first bad entry), `h0`'s length and values, and
    /// that the problem carries no `h0` of its own.
    pub fn new<O: SeqOffset>(
        problem: P,
        cu_seqlens: &[O],
        h0: Option<&'a [P::Out]>,
    ) -> Result<Self> {
        problem.validate()?;
        let segs = Segments::new("cu_seqlens", cu_seqlens, problem.steps())?;
        let v = Varlen { problem, h0, segs };
        v.validate()?;
        Ok(v)
    }

    /// The inner problem.
    pub fn problem(&self) -> &P {
        &self.problem
    }

    /// The validated offsets.
    pub fn segments(&self) -> &Segments {
        &self.segs
    }

    /// Number of sequences `N`.
    pub fn sequences(&self) -> usize {
        self.segs.count()
    }

    /// The per-sequence initial states `[B, N, state]`.
    pub fn h0(&self) -> Option<&'a [P::Out]> {
        self.h0
    }

    fn state_shape(&self) -> String {
        format!(
            "[B,N,state] = [{},{},{}]",
            self.problem.rows(),
            self.segs.count(),
            self.problem.state_len()
        )
    }

    /// Runs with the segmented engine, or the plain one for a single
    /// sequence per row (then `[B, 1, state]` is `[B, state]`).
    fn states(
        &self,
        plan: &Plan,
        h0: Option<&[P::Out]>,
        out: &mut [P::Out],
    ) -> Vec<<P::Out as Storage>::Compute> {
        let segs = (self.segs.count() > 1).then_some(&self.segs);
        self.problem.run_states(plan, segs, h0, out)
    }
}

fn own_h0_error(by: &str) -> Error {
    Error::Unsupported {
        what: "problem.h0",
        by: by.into(),
        hint: "leave the problem's own h0 None and pass the initial states \
               separately ([B,N,state] as Varlen's h0, or the in-place state buffer)"
            .into(),
    }
}

impl<P: Segmentable> LinearProblem for Varlen<'_, P> {
    type Out = P::Out;

    fn family(&self) -> &'static str {
        self.problem.family()
    }

    fn validate(&self) -> Result<()> {
        self.problem.validate()?;
        if self.problem.own_h0().is_some() {
            return Err(own_h0_error("a packed (cu_seqlens) problem"));
        }
        if self.segs.len() != self.problem.steps() {
            return Err(Error::SeqOffsets {
                arg: "cu_seqlens",
                index: self.segs.count(),
                got: self.segs.len().to_string(),
                expected: format!("T = {}", self.problem.steps()),
            });
        }
        let states = crate::mem::checked_product(
            "h0",
            &[
                ("batch", self.problem.rows()),
                ("sequences", self.segs.count()),
                ("state", self.problem.state_len()),
            ],
        )?;
        super::check_h0(self.h0, states, || self.state_shape())
    }

    fn check_finite(&self) -> Result<()> {
        self.problem.check_finite()?;
        match self.h0 {
            Some(h0) => super::check_finite("h0", h0),
            None => Ok(()),
        }
    }

    fn scan_shape(&self) -> ScanShape {
        self.problem.scan_shape()
    }
    fn output_len(&self) -> usize {
        self.problem.output_len()
    }
    fn output_shape(&self) -> String {
        self.problem.output_shape()
    }
    fn final_len(&self) -> usize {
        self.problem.rows() * self.segs.count() * self.problem.state_len()
    }
    fn final_shape(&self) -> String {
        self.state_shape()
    }
    fn bytes_moved(&self) -> usize {
        self.problem.bytes_moved()
    }

    /// The inner problem's scratch plus the recorded final states (held
    /// twice in compute precision: per sequence, then flattened).
    fn cpu_scratch_bytes(&self, plan: &Plan) -> Result<usize> {
        let c = std::mem::size_of::<<P::Out as Storage>::Compute>();
        let finals = crate::mem::checked_product(
            "h_last",
            &[
                ("batch", self.problem.rows()),
                ("sequences", self.segs.count()),
                ("state", self.problem.state_len()),
                ("bytes per element", c),
                ("copies", 2),
            ],
        )?;
        Ok(self
            .problem
            .cpu_scratch_bytes(plan)?
            .saturating_add(finals)
            .saturating_add(self.segs.bytes()))
    }

    fn run_cpu(&self, plan: &Plan, out: &mut [P::Out], h_last: &mut [P::Out]) {
        let finals = self.states(plan, self.h0, out);
        for (d, v) in h_last.iter_mut().zip(finals) {
            *d = <P::Out as Storage>::store(v);
        }
    }
}

/// A problem whose initial state can come from, and whose final state can
/// go back to, one buffer ([`crate::backend::Cpu::scan_in_place`]):
/// every family's problem and every [`Varlen`].
pub trait InPlaceScan: LinearProblem<Out: Storage> {
    /// Checks that the problem carries no `h0` of its own (the state
    /// buffer is its `h0`).
    fn check_in_place(&self) -> Result<()>;
    /// The forward scan from initial states `h0` (`final_len()` scalars),
    /// returning the final states in compute precision; `out` checked.
    fn run_in_place(
        &self,
        plan: &Plan,
        h0: &[Self::Out],
        out: &mut [Self::Out],
    ) -> Vec<<Self::Out as Storage>::Compute>;
}

impl<P: Segmentable> InPlaceScan for Varlen<'_, P> {
    fn check_in_place(&self) -> Result<()> {
        match self.h0 {
            Some(_) => Err(own_h0_error("an in-place scan (the state buffer is h0)")),
            None => Ok(()),
        }
    }
    fn run_in_place(
        &self,
        plan: &Plan,
        h0: &[P::Out],
        out: &mut [P::Out],
    ) -> Vec<<P::Out as Storage>::Compute> {
        self.states(plan, Some(h0), out)
    }
}

/// [`InPlaceScan`] for a family's problem through its [`Segmentable`]
/// pass (one sequence per row).
macro_rules! in_place_family {
    ($($ty:ty => [$($gen:tt)*]),* $(,)?) => {$(
        impl<$($gen)*> InPlaceScan for $ty {
            fn check_in_place(&self) -> Result<()> {
                match self.own_h0() {
                    Some(_) => Err(own_h0_error("an in-place scan (the state buffer is h0)")),
                    None => Ok(()),
                }
            }
            fn run_in_place(
                &self,
                plan: &Plan,
                h0: &[Self::Out],
                out: &mut [Self::Out],
            ) -> Vec<<Self::Out as Storage>::Compute> {
                self.run_states(plan, None, Some(h0), out)
            }
        }
    )*};
}

in_place_family!(
    super::diagonal::Diagonal<'_, S> => [S: Storage],
    super::perm_diagonal::PermDiagonal<'_, S, I> => [S: Storage, I: super::perm_diagonal::PermIndex],
    super::block_diagonal::BlockDiagonal<'_, S> => [S: Storage],
    super::dplr::Dplr<'_, S> => [S: Storage],
);
