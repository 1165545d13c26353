//! Variable-length batches: several sequences packed end to end on one
//! time axis, scanned in one pass of the chunked engine.
//!
//! A packed axis of `T` steps holds `N` sequences; sequence `s` occupies
//! steps `offsets[s] .. offsets[s+1]` (`offsets` = `cu_seqlens`, `N + 1`
//! monotone entries from `0` to `T`). A sequence boundary is a *segment
//! boundary* of the scan: the chunk grid is the plan's grid over the whole
//! packed axis (chunks may straddle boundaries), and the carry never crosses
//! a boundary because every step that starts a sequence becomes a *reset*
//! element, the classic segmented scan:
//!
//! - an aggregate is `(e, reset)`, where `reset = Some(s)` says the aggregate
//!   contains the first step of sequence `s` and `e` is the composition of
//!   the steps from there on (so it maps `h0_s`, not its input, to its
//!   output);
//! - `combine((e1, r1), (e2, r2)) = (e2, r2)` when `r2` is set, else
//!   `(e2 ∘ e1, r1)` — associative, and no arithmetic happens across a
//!   boundary (no multiplication by a zero transition);
//! - applying `(e, Some(s))` to any state gives `e(h0_s)`.
//!
//! The rescan resets the running state to `h0_s` at the first step of
//! sequence `s` and records `h_T` of `s` at its last step. A sequence of
//! length zero has no step: its `h_T` is its `h0` (zeros when no `h0`).
//!
//! The plan, depth and work are those of the unsegmented scan of `T` steps
//! ([`super::plan`]): the segmented op performs the same combines.

use super::{Plan, ScanOp};
use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::OnceLock;

/// An integer type `cu_seqlens` may be given in: `usize`, `u32`, `u64`,
/// `i32` or `i64` (PyTorch hands out `int32` and `int64` offsets).
pub trait SeqOffset: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The offset as a step index, `None` when negative or too large for
    /// `usize`.
    fn to_index(self) -> Option<usize>;
}

impl SeqOffset for usize {
    fn to_index(self) -> Option<usize> {
        Some(self)
    }
}
impl SeqOffset for u32 {
    fn to_index(self) -> Option<usize> {
        usize::try_from(self).ok()
    }
}
impl SeqOffset for u64 {
    fn to_index(self) -> Option<usize> {
        usize::try_from(self).ok()
    }
}
impl SeqOffset for i32 {
    fn to_index(self) -> Option<usize> {
        usize::try_from(self).ok()
    }
}
impl SeqOffset for i64 {
    fn to_index(self) -> Option<usize> {
        usize::try_from(self).ok()
    }
}

/// Validated sequence boundaries on a packed time axis of `T` steps.
///
/// Built by [`Segments::new`], which checks every offset; holds the offsets
/// (`N + 1` entries) and a bitset of the steps that start a non-empty
/// sequence (`⌈T/64⌉` words), so the engine tests a step in `O(1)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    offsets: Vec<usize>,
    starts: Vec<u64>,
    len: usize,
}

impl Segments {
    /// Checks `cu_seqlens` against a packed axis of `len` steps: at least
    /// two entries (one sequence), the first `0`, none negative, never
    /// decreasing, none past `len`, the last equal to `len`. Errors are
    /// [`Error::SeqOffsets`] naming `arg` and the first bad entry; nothing
    /// is allocated before the checks pass.
    pub fn new<O: SeqOffset>(arg: &'static str, cu_seqlens: &[O], len: usize) -> Result<Self> {
        let bad = |index: usize, expected: String| Error::SeqOffsets {
            arg,
            index,
            got: cu_seqlens
                .get(index)
                .map_or_else(|| "nothing".into(), |o| format!("{o:?}")),
            expected,
        };
        if cu_seqlens.len() < 2 {
            return Err(Error::SeqOffsets {
                arg,
                index: 0,
                got: format!("{} entries", cu_seqlens.len()),
                expected: format!(
                    "at least 2 entries [0, …, T = {len}] (N + 1 offsets for N ≥ 1 sequences)"
                ),
            });
        }
        let mut prev = 0usize;
        for (i, o) in cu_seqlens.iter().enumerate() {
            let v = o
                .to_index()
                .ok_or_else(|| bad(i, "a non-negative step offset".into()))?;
            if i == 0 && v != 0 {
                return Err(bad(0, "0 (the first sequence starts at step 0)".into()));
            }
            if v < prev {
                return Err(bad(
                    i,
                    format!("≥ the previous entry {prev} (offsets never decrease)"),
                ));
            }
            if v > len {
                return Err(bad(
                    i,
                    format!("≤ T = {len} (past the end of the packed axis)"),
                ));
            }
            prev = v;
        }
        let last = cu_seqlens.len() - 1;
        if prev != len {
            return Err(bad(
                last,
                format!("T = {len} (the last offset ends the packed axis)"),
            ));
        }
        let mut offsets = crate::mem::try_vec("cu_seqlens", cu_seqlens.len(), 0usize)?;
        for (d, o) in offsets.iter_mut().zip(cu_seqlens) {
            // Checked above.
            *d = o.to_index().unwrap_or(0);
        }
        let mut starts = crate::mem::try_vec("cu_seqlens", len.div_ceil(64), 0u64)?;
        for w in offsets.windows(2) {
            if w[0] < w[1] {
                starts[w[0] / 64] |= 1 << (w[0] % 64);
            }
        }
        Ok(Segments {
            offsets,
            starts,
            len,
        })
    }

    /// One sequence `[0, len)` (no check beyond that).
    pub fn whole(len: usize) -> Result<Self> {
        Segments::new("len", &[0, len], len)
    }

    /// Number of sequences `N` (zero-length ones included).
    pub fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The packed axis length `T`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packed axis has no step (`T = 0`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The offsets, `N + 1` entries from `0` to `T`.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Steps of sequence `s`.
    pub fn range(&self, s: usize) -> Range<usize> {
        self.offsets[s]..self.offsets[s + 1]
    }

    /// Bytes the engine keeps besides the family's own scratch: the offsets
    /// and the start bitset (the recorded `h_T` states are the family's).
    pub fn bytes(&self) -> usize {
        8 * (self.offsets.len() + self.starts.len())
    }

    /// Whether step `t` is the first step of a (non-empty) sequence.
    #[inline(always)]
    pub fn is_start(&self, t: usize) -> bool {
        self.starts[t / 64] >> (t % 64) & 1 == 1
    }

    /// Whether step `t` is the last step of a sequence.
    #[inline(always)]
    pub fn is_end(&self, t: usize) -> bool {
        t + 1 == self.len || self.is_start(t + 1)
    }

    /// The non-empty sequence that holds step `t < T` (`O(log N)`).
    pub fn seq_at(&self, t: usize) -> usize {
        // The last offset ≤ t among the N starts; zero-length sequences
        // share their offset with the next one, which is the one holding t.
        self.offsets[..self.count()].partition_point(|&o| o <= t) - 1
    }
}

/// A segmented aggregate: the family's element and the sequence (flat index
/// `p·N + s`) whose first step it contains, if any.
#[derive(Clone, Debug)]
pub struct SegAgg<A> {
    /// The composition of the steps since the last sequence start inside
    /// the aggregate (or of all its steps).
    pub inner: A,
    /// `Some(p·N + s)` when the aggregate contains the first step of
    /// sequence `s` of row `p`.
    pub reset: Option<usize>,
}

/// `op` with sequence boundaries: the [`ScanOp`] the engine runs for a
/// packed problem (module docs). `init(p, s)` is `h0` of sequence `s` of
/// row `p`.
pub struct SegOp<'o, Op: ScanOp, F> {
    op: &'o Op,
    segs: &'o Segments,
    init: F,
    finals: Vec<OnceLock<Op::State>>,
}

impl<'o, Op, F> SegOp<'o, Op, F>
where
    Op: ScanOp,
    F: Fn(usize, usize) -> Op::State + Sync,
{
    fn state0(&self, flat: usize) -> Op::State {
        let n = self.segs.count();
        (self.init)(flat / n, flat % n)
    }
}

impl<Op, F> ScanOp for SegOp<'_, Op, F>
where
    Op: ScanOp,
    F: Fn(usize, usize) -> Op::State + Sync,
{
    type Agg = SegAgg<Op::Agg>;
    type State = Op::State;
    type Out = Op::Out;

    fn problems(&self) -> usize {
        self.op.problems()
    }
    fn len(&self) -> usize {
        self.op.len()
    }
    fn out_per_step(&self) -> usize {
        self.op.out_per_step()
    }
    fn identity(&self) -> Self::Agg {
        SegAgg {
            inner: self.op.identity(),
            reset: None,
        }
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let reset = self
            .segs
            .is_start(t)
            .then(|| p * self.segs.count() + self.segs.seq_at(t));
        SegAgg {
            inner: self.op.leaf(p, t),
            reset,
        }
    }
    #[inline]
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        if self.segs.is_start(t) {
            // The carry stops here: the aggregate restarts at this step.
            *agg = self.leaf(p, t);
        } else {
            self.op.fold(&mut agg.inner, p, t);
        }
    }
    fn combine(&self, earlier: &Self::Agg, later: &Self::Agg) -> Self::Agg {
        if later.reset.is_some() {
            later.clone()
        } else {
            SegAgg {
                inner: self.op.combine(&earlier.inner, &later.inner),
                reset: earlier.reset,
            }
        }
    }
    fn initial(&self, p: usize) -> Self::State {
        // Step 0 starts the first non-empty sequence, which resets the
        // state before it is read; this is that sequence's h0.
        (self.init)(p, self.segs.seq_at(0))
    }
    fn apply(&self, agg: &Self::Agg, h: &Self::State) -> Self::State {
        match agg.reset {
            Some(flat) => self.op.apply(&agg.inner, &self.state0(flat)),
            None => self.op.apply(&agg.inner, h),
        }
    }
    #[inline]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [Self::Out]) {
        if self.segs.is_start(t) {
            *h = (self.init)(p, self.segs.seq_at(t));
        }
        self.op.advance(h, p, t, out);
        if self.segs.is_end(t) {
            let flat = p * self.segs.count() + self.segs.seq_at(t);
            // Each sequence ends in exactly one step of one chunk, so each
            // slot is set once.
            let _ = self.finals[flat].set(h.clone());
        }
    }
}

/// Runs `op` over `segs` (its `len()` must be `segs.len()`) under `plan`,
/// with the carry stopping at every sequence boundary, writing every step's
/// output into `out` (as [`super::run`]) and returning the final state of
/// every sequence, row-major `[P, N]` (index `p·N + s`); a zero-length
/// sequence's final state is `init(p, s)`.
pub fn run<Op, F>(
    op: &Op,
    plan: &Plan,
    segs: &Segments,
    init: F,
    out: &mut [Op::Out],
) -> Vec<Op::State>
where
    Op: ScanOp,
    F: Fn(usize, usize) -> Op::State + Sync,
{
    assert_eq!(op.len(), segs.len(), "scan::segmented::run: packed length");
    let slots = op.problems() * segs.count();
    let seg_op = SegOp {
        op,
        segs,
        init,
        finals: (0..slots).map(|_| OnceLock::new()).collect(),
    };
    super::run(&seg_op, plan, out);
    let n = segs.count();
    let SegOp { finals, init, .. } = seg_op;
    finals
        .into_iter()
        .enumerate()
        .map(|(flat, slot)| {
            slot.into_inner()
                .unwrap_or_else(|| init(flat / n, flat % n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_at_skips_empty_sequences() {
        let s = Segments::new("cu_seqlens", &[0usize, 0, 3, 3, 5], 5).unwrap();
        assert_eq!(s.count(), 4);
        let at: Vec<usize> = (0..5).map(|t| s.seq_at(t)).collect();
        assert_eq!(at, vec![1, 1, 1, 3, 3]);
        let starts: Vec<bool> = (0..5).map(|t| s.is_start(t)).collect();
        assert_eq!(starts, vec![true, false, false, true, false]);
        let ends: Vec<bool> = (0..5).map(|t| s.is_end(t)).collect();
        assert_eq!(ends, vec![false, false, true, false, true]);
    }
}
