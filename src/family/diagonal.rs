//! Diagonal transitions: `h_t = a_t ⊙ h_{t-1} + b_t`, `a_t, b_t ∈ R^D`.
//!
//! The monoid element is `(a, b)` per channel; `combine(e1, e2) =
//! (e2.a·e1.a, e2.a·e1.b + e2.b)` — the same code as `diag_combine` in
//! `kernels/parascan.cuh`.

use super::{check_finite, check_h0, check_len, check_min, product, Layout, LinearProblem};
use crate::dtype::{Real, Storage};
use crate::error::Result;
use crate::scan::plan::ScanShape;
use crate::scan::{self, Plan, ScanOp};
use num_traits::{One, Zero};

/// `combine(earlier, later)` for one channel: `later ∘ earlier`.
///
/// Plain `x * y + z`, not `mul_add`: without a target FMA feature `mul_add`
/// becomes a libm call per element, several times slower than the scan's
/// memory traffic.
#[inline(always)]
pub fn combine<C: Real>(e1: (C, C), e2: (C, C)) -> (C, C) {
    (e2.0 * e1.0, e2.0 * e1.1 + e2.1)
}

/// `A h + b` for one channel.
#[inline(always)]
pub fn apply<C: Real>(e: (C, C), h: C) -> C {
    e.0 * h + e.1
}

/// A batch of diagonal linear recurrences.
///
/// Shapes (`B = batch`, `T = len`, `D = dim`), in `layout`:
/// - `a`, `b`: `[B,T,D]` ([`Layout::Btd`]) or `[B,D,T]` ([`Layout::Bdt`]);
/// - `h0`: `[B,D]`, zeros when `None`.
///
/// Outputs: all states `h` in the same layout as `a`, and `h_T`: `[B,D]`.
#[derive(Clone, Copy, Debug)]
pub struct Diagonal<'a, S> {
    /// Per-step decay `a_t`.
    pub a: &'a [S],
    /// Per-step input `b_t`.
    pub b: &'a [S],
    /// Initial state `[B,D]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `D`.
    pub dim: usize,
    /// Layout of `a`, `b` and the output.
    pub layout: Layout,
}

impl<'a, S: Storage> Diagonal<'a, S> {
    fn shape_str(&self) -> String {
        let (b, t, d) = (self.batch, self.len, self.dim);
        match self.layout {
            Layout::Btd => format!("[B,T,D] = [{b},{t},{d}]"),
            Layout::Bdt => format!("[B,D,T] = [{b},{d},{t}]"),
        }
    }
}

impl<'a, S: Storage> LinearProblem for Diagonal<'a, S> {
    type Out = S;

    fn family(&self) -> &'static str {
        "diagonal"
    }

    fn validate(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("dim", self.dim, 1)?;
        let n = product(
            "a",
            &[("batch", self.batch), ("len", self.len), ("dim", self.dim)],
        )?;
        check_len("a", self.a, n, || self.shape_str())?;
        check_len("b", self.b, n, || self.shape_str())?;
        check_h0(self.h0, self.batch * self.dim, || self.final_shape())
    }

    fn check_finite(&self) -> Result<()> {
        check_finite("a", self.a)?;
        check_finite("b", self.b)
    }

    fn scan_shape(&self) -> ScanShape {
        let problems = match self.layout {
            Layout::Btd => self.batch,
            Layout::Bdt => self.batch * self.dim,
        };
        // The reduce pass reads a and b (8 of the 12 bytes a step moves).
        ScanShape {
            problems,
            len: self.len,
            fold_cost: 0.67,
        }
    }

    fn output_len(&self) -> usize {
        self.batch * self.len * self.dim
    }
    fn output_shape(&self) -> String {
        self.shape_str()
    }
    fn final_len(&self) -> usize {
        self.batch * self.dim
    }
    fn final_shape(&self) -> String {
        format!("[B,D] = [{},{}]", self.batch, self.dim)
    }
    fn bytes_moved(&self) -> usize {
        3 * self.output_len() * std::mem::size_of::<S>()
    }

    fn run_cpu_reverse(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) -> Result<()> {
        match self.layout {
            Layout::Btd => {
                let finals = scan::run_reverse(&RowOp { p: self }, plan, out);
                for (dst, h) in h_last.chunks_mut(self.dim).zip(finals) {
                    for (d, v) in dst.iter_mut().zip(h) {
                        *d = S::store(v);
                    }
                }
            }
            Layout::Bdt => {
                let finals = scan::run_reverse(&LaneOp { p: self }, plan, out);
                for (d, v) in h_last.iter_mut().zip(finals) {
                    *d = S::store(v);
                }
            }
        }
        Ok(())
    }

    fn run_cpu(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) {
        match self.layout {
            Layout::Btd => {
                let op = RowOp { p: self };
                let finals = scan::run(&op, plan, out);
                for (dst, h) in h_last.chunks_mut(self.dim).zip(finals) {
                    for (d, v) in dst.iter_mut().zip(h) {
                        *d = S::store(v);
                    }
                }
            }
            Layout::Bdt => {
                let op = LaneOp { p: self };
                let finals = scan::run(&op, plan, out);
                for (d, v) in h_last.iter_mut().zip(finals) {
                    *d = S::store(v);
                }
            }
        }
    }
}

/// `[B,T,D]`: one sequence per batch row, elements are `D`-vectors (the
/// per-step loops vectorize across channels).
struct RowOp<'p, 'a, S> {
    p: &'p Diagonal<'a, S>,
}

impl<S: Storage> RowOp<'_, '_, S> {
    #[inline(always)]
    fn step(&self, p: usize, t: usize) -> (&[S], &[S]) {
        let d = self.p.dim;
        let off = (p * self.p.len + t) * d;
        (&self.p.a[off..off + d], &self.p.b[off..off + d])
    }
}

type Vecs<C> = (Vec<C>, Vec<C>);

impl<S: Storage> ScanOp for RowOp<'_, '_, S> {
    type Agg = Vecs<S::Compute>;
    type State = Vec<S::Compute>;
    type Out = S;

    fn problems(&self) -> usize {
        self.p.batch
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        self.p.dim
    }
    fn identity(&self) -> Self::Agg {
        let d = self.p.dim;
        (vec![S::Compute::one(); d], vec![S::Compute::zero(); d])
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (a, b) = self.step(p, t);
        (
            a.iter().map(|x| x.load()).collect(),
            b.iter().map(|x| x.load()).collect(),
        )
    }
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        let (a, b) = self.step(p, t);
        for i in 0..a.len() {
            let r = combine((agg.0[i], agg.1[i]), (a[i].load(), b[i].load()));
            agg.0[i] = r.0;
            agg.1[i] = r.1;
        }
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        (0..self.p.dim)
            .map(|i| combine((e1.0[i], e1.1[i]), (e2.0[i], e2.1[i])))
            .unzip()
    }
    fn initial(&self, p: usize) -> Self::State {
        let d = self.p.dim;
        match self.p.h0 {
            Some(h0) => h0[p * d..(p + 1) * d].iter().map(|x| x.load()).collect(),
            None => vec![S::Compute::zero(); d],
        }
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        (0..self.p.dim)
            .map(|i| apply((e.0[i], e.1[i]), h[i]))
            .collect()
    }
    #[inline]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S]) {
        let (a, b) = self.step(p, t);
        for (((h, o), a), b) in h.iter_mut().zip(out.iter_mut()).zip(a).zip(b) {
            *h = apply((a.load(), b.load()), *h);
            *o = S::store(*h);
        }
    }
}

/// `[B,D,T]`: one sequence per channel, scalar elements.
struct LaneOp<'p, 'a, S> {
    p: &'p Diagonal<'a, S>,
}

impl<S: Storage> ScanOp for LaneOp<'_, '_, S> {
    type Agg = (S::Compute, S::Compute);
    type State = S::Compute;
    type Out = S;

    fn problems(&self) -> usize {
        self.p.batch * self.p.dim
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        1
    }
    fn identity(&self) -> Self::Agg {
        (S::Compute::one(), S::Compute::zero())
    }
    #[inline(always)]
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let i = p * self.p.len + t;
        (self.p.a[i].load(), self.p.b[i].load())
    }
    #[inline(always)]
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        *agg = combine(*agg, self.leaf(p, t));
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        combine(*e1, *e2)
    }
    fn initial(&self, p: usize) -> Self::State {
        // Lane p = (batch, channel) is exactly index p of h0's [B,D].
        self.p.h0.map_or(S::Compute::zero(), |h0| h0[p].load())
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        apply(*e, *h)
    }
    #[inline(always)]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S]) {
        *h = apply(self.leaf(p, t), *h);
        out[0] = S::store(*h);
    }
}

impl<S: Storage> super::varlen::Segmentable for Diagonal<'_, S> {
    fn state_len(&self) -> usize {
        self.dim
    }
    fn rows(&self) -> usize {
        self.batch
    }
    fn steps(&self) -> usize {
        self.len
    }
    fn own_h0(&self) -> Option<&[S]> {
        self.h0
    }
    fn run_states(
        &self,
        plan: &Plan,
        segs: Option<&scan::segmented::Segments>,
        h0: Option<&[S]>,
        out: &mut [S],
    ) -> Vec<S::Compute> {
        let p = Diagonal { h0, ..*self };
        let d = self.dim;
        let n = segs.map_or(1, |s| s.count());
        match self.layout {
            Layout::Btd => {
                let op = RowOp { p: &p };
                // `initial(i)` reads row i of `h0`, here `[B·N, D]`.
                let finals = match segs {
                    None => scan::run(&op, plan, out),
                    Some(segs) => {
                        scan::segmented::run(&op, plan, segs, |b, s| op.initial(b * n + s), out)
                    }
                };
                finals.into_iter().flatten().collect()
            }
            Layout::Bdt => {
                let op = LaneOp { p: &p };
                // Lane `l = b·D + c`; `initial(i)` reads element i of `h0`,
                // here `[B,N,D]`; the finals come lane-major `[B·D, N]`.
                let finals = match segs {
                    None => scan::run(&op, plan, out),
                    Some(segs) => scan::segmented::run(
                        &op,
                        plan,
                        segs,
                        |l, s| op.initial(((l / d) * n + s) * d + l % d),
                        out,
                    ),
                };
                let mut h = vec![S::Compute::zero(); finals.len()];
                for (i, v) in finals.into_iter().enumerate() {
                    let (l, s) = (i / n, i % n);
                    h[((l / d) * n + s) * d + l % d] = v;
                }
                h
            }
        }
    }
}
