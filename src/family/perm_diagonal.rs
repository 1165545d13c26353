//! Permutation-diagonal (PD) transitions: `(A_t h)_i = d_{t,i} · h_{π_t(i)}`,
//! so `h_t[i] = d_t[i] · h_{t-1}[π_t(i)] + b_t[i]`.
//!
//! The monoid element is `(perm, d, b)`: `h ↦ d ⊙ h[perm] + b`. Applying
//! `e1` first, then `e2` gives (SPEC §1: `π = π1∘π2`, `d = d2 ⊙ d1[π2]`)
//!
//! ```text
//! perm_i = perm1[perm2_i],  d_i = d2_i · d1[perm2_i],  b_i = d2_i · b1[perm2_i] + b2_i
//! ```
//!
//! — the same code as `pd_identity`, `pd_combine` and `pd_apply` in
//! `kernels/parascan.cuh` ([`identity`], [`combine`], [`apply`] here).
//! Products of PD matrices stay PD, so an aggregate costs `O(n)` like a step.
//!
//! Every `perm` row is checked to be a permutation of `0..n` by
//! [`LinearProblem::validate`] before anything runs: a kernel indexes with it.

use super::{check_finite, check_h0, check_len, check_min, product, LinearProblem};
use crate::dtype::{Real, Storage};
use crate::error::{Error, Result};
use crate::scan::plan::ScanShape;
use crate::scan::{self, Plan, ScanOp};
use num_traits::Zero;
use rayon::prelude::*;
use std::ops::Range;

/// An integer type that can hold a permutation index (u8 for n ≤ 256).
pub trait PermIndex: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The index as usize.
    fn index(self) -> usize;
    /// Largest n this type can index.
    const MAX_N: usize;
}
impl PermIndex for u8 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = 256;
}
impl PermIndex for u16 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = 65536;
}
impl PermIndex for u32 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = u32::MAX as usize;
}

/// An owned PD element `h ↦ d ⊙ h[perm] + b` in compute precision (a chunk
/// aggregate or a prefix). Indices are `u32` whatever the input's
/// [`PermIndex`] type (`n ≤ u32::MAX` for every index type).
#[derive(Clone, Debug, PartialEq)]
pub struct PdElem<C> {
    /// `perm[i]`: the slot of the input state that output slot `i` reads.
    pub perm: Vec<u32>,
    /// Scales.
    pub d: Vec<C>,
    /// Offsets.
    pub b: Vec<C>,
}

impl<C> PdElem<C> {
    /// An element of no slots (holds no memory).
    fn empty() -> Self {
        PdElem {
            perm: Vec::new(),
            d: Vec::new(),
            b: Vec::new(),
        }
    }
}

impl<C: Real> PdElem<C> {
    /// `n` slots of zeros (a buffer to write a [`combine`] into).
    fn zeros(n: usize) -> Self {
        PdElem {
            perm: vec![0; n],
            d: vec![C::zero(); n],
            b: vec![C::zero(); n],
        }
    }

    /// The identity map on `n` slots.
    pub fn identity(n: usize) -> Self {
        let mut e = PdElem::zeros(n);
        identity(e.parts_mut());
        e
    }

    /// Number of slots `n`.
    pub fn n(&self) -> usize {
        self.perm.len()
    }

    /// `(perm, d, b)` as slices, for [`combine`] and [`apply`].
    pub fn parts(&self) -> (&[u32], &[C], &[C]) {
        (&self.perm, &self.d, &self.b)
    }

    /// `(perm, d, b)` as mutable slices, the output of [`combine`].
    pub fn parts_mut(&mut self) -> (&mut [u32], &mut [C], &mut [C]) {
        (&mut self.perm, &mut self.d, &mut self.b)
    }

    /// `A h + b` as a new vector.
    pub fn apply(&self, h: &[C]) -> Vec<C> {
        let mut out = vec![C::zero(); self.n()];
        apply(self.parts(), h, &mut out, |x| x);
        out
    }

    /// `later ∘ self` as a new element.
    pub fn then(&self, later: &PdElem<C>) -> PdElem<C> {
        let mut out = PdElem::zeros(self.n());
        combine(self.parts(), later.parts(), out.parts_mut(), |x| x);
        out
    }
}

/// Writes the identity element (`perm_i = i`, `d = 1`, `b = 0`).
#[inline]
pub fn identity<C: Real>((perm, d, b): (&mut [u32], &mut [C], &mut [C])) {
    let n = perm.len();
    let (d, b) = (&mut d[..n], &mut b[..n]);
    for i in 0..n {
        perm[i] = i as u32;
        d[i] = C::one();
        b[i] = C::zero();
    }
}

/// `combine(e1, e2)`: the element that applies `e1` (earlier) first, then
/// `e2` (later), written into `(perm, d, b)`.
///
/// `e1` is in compute precision; `e2` may be stored in any type `T`, widened
/// by `load` (`Storage::load` for a step read from the inputs, `|x| x` for
/// an aggregate). Output slot `i` reads `e2` only at `i` and `e1` at
/// `perm2_i`, so the outputs must not be `e1` (the borrow checker enforces
/// it here; the CUDA version documents it).
#[inline]
pub fn combine<C: Real, I: PermIndex, T: Copy>(
    (p1, d1, b1): (&[u32], &[C], &[C]),
    (p2, d2, b2): (&[I], &[T], &[T]),
    (perm, d, b): (&mut [u32], &mut [C], &mut [C]),
    load: impl Fn(T) -> C,
) {
    let n = perm.len();
    let (p2, d2, b2, d, b) = (&p2[..n], &d2[..n], &b2[..n], &mut d[..n], &mut b[..n]);
    for i in 0..n {
        let j = p2[i].index();
        let d2i = load(d2[i]);
        let b2i = load(b2[i]);
        perm[i] = p1[j];
        d[i] = d2i * d1[j];
        b[i] = d2i * b1[j] + b2i;
    }
}

/// `h_out = d ⊙ h_in[perm] + b` for the element `(perm, d, b)` (stored as
/// `T`, widened by `load`). `h_out` must not be `h_in`: slot `i` gathers
/// from any slot.
#[inline]
pub fn apply<C: Real, I: PermIndex, T: Copy>(
    (perm, d, b): (&[I], &[T], &[T]),
    h_in: &[C],
    h_out: &mut [C],
    load: impl Fn(T) -> C,
) {
    let n = h_out.len();
    let (perm, d, b) = (&perm[..n], &d[..n], &b[..n]);
    for i in 0..n {
        h_out[i] = load(d[i]) * h_in[perm[i].index()] + load(b[i]);
    }
}

/// A batch of PD recurrences. Shapes: `perm, d, b: [B,T,n]`, `h0: [B,n]`.
/// Outputs `h: [B,T,n]`, `h_T: [B,n]`.
///
/// `h_t[i] = d_t[i] · h_{t-1}[perm_t[i]] + b_t[i]`; every `perm` row must be
/// a permutation of `0..n` and `n ≤ P::MAX_N`.
#[derive(Clone, Copy, Debug)]
pub struct PermDiagonal<'a, S, P = u8> {
    /// `π_t`, each row a permutation of `0..n`.
    pub perm: &'a [P],
    /// Diagonal scales `d_t`.
    pub d: &'a [S],
    /// Inputs `b_t`.
    pub b: &'a [S],
    /// Initial state `[B,n]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `n`.
    pub n: usize,
}

impl<'a, S: Storage, P: PermIndex> PermDiagonal<'a, S, P> {
    fn shape_str(&self) -> String {
        format!("[B,T,n] = [{},{},{}]", self.batch, self.len, self.n)
    }

    fn state_shape_str(&self) -> String {
        format!("[B,n] = [{},{}]", self.batch, self.n)
    }

    /// Checks every `perm` row (in parallel, with a branch-free test per
    /// row); the first bad row in memory order is reported, with what is
    /// wrong with it. Shapes must already be valid.
    fn check_perm_rows(&self) -> Result<()> {
        let n = self.n;
        // Blocks of rows per task with a plain loop inside: with one rayon
        // item per row the check cost about twice the scan itself for small
        // `n` (a `[16,65536,5]` f32 call: 14.8 ms before, 5.2 ms after, on
        // 2 cores).
        let rows = (16384 / n).max(1);
        let bad = self
            .perm
            .par_chunks(rows * n)
            .enumerate()
            .map_init(
                || vec![0u64; n.div_ceil(64)],
                |bits, (k, block)| {
                    // A branch-free pass over the block first (the common
                    // case: every row is valid), the search only on failure.
                    let all_ok = match n {
                        1 => rows_ok::<1, P>(block),
                        2 => rows_ok::<2, P>(block),
                        3 => rows_ok::<3, P>(block),
                        4 => rows_ok::<4, P>(block),
                        5 => rows_ok::<5, P>(block),
                        6 => rows_ok::<6, P>(block),
                        7 => rows_ok::<7, P>(block),
                        8 => rows_ok::<8, P>(block),
                        _ => false,
                    };
                    if all_ok {
                        return None;
                    }
                    block
                        .chunks_exact(n)
                        .position(|perm| !is_permutation(perm, bits))
                        .map(|r| k * rows + r)
                },
            )
            .find_first(Option::is_some)
            .flatten();
        match bad {
            None => Ok(()),
            Some(row) => {
                let perm = &self.perm[row * n..(row + 1) * n];
                let detail = row_defect(perm).unwrap_or_else(|| "not a permutation".into());
                Err(Error::NotPermutation {
                    batch: row / self.len,
                    step: row % self.len,
                    n,
                    detail,
                })
            }
        }
    }

    /// The aggregate of steps `steps` of batch row `batch` (the element that
    /// maps `h_{steps.start}` to `h_{steps.end}`, steps 0-based), computed
    /// the way the engine's reduce phase folds a chunk. An empty range gives
    /// the identity. Validates the problem first.
    pub fn aggregate(&self, batch: usize, steps: Range<usize>) -> Result<PdElem<S::Compute>> {
        self.validate()?;
        if batch >= self.batch {
            return Err(Error::size("batch", batch, format!("< B = {}", self.batch)));
        }
        if steps.end > self.len || steps.start > steps.end {
            return Err(Error::size(
                "steps",
                steps.end,
                format!("a range inside 0..{} (got {steps:?})", self.len),
            ));
        }
        let op = RowOp { p: self };
        if steps.is_empty() {
            return Ok(PdElem::identity(self.n));
        }
        let mut agg = op.leaf(batch, steps.start);
        for t in steps.start + 1..steps.end {
            op.fold(&mut agg, batch, t);
        }
        Ok(agg.e)
    }
}

/// Whether `perm` is a permutation of `0..n` (`n = perm.len()`): every
/// index is below `n` and `n` distinct indices occur. `bits` holds
/// `⌈n/64⌉` words of scratch. No early exit, so the loop stays branch-free.
#[inline]
fn is_permutation<P: PermIndex>(perm: &[P], bits: &mut [u64]) -> bool {
    let n = perm.len();
    if (1..=64).contains(&n) {
        return small_permutation(perm);
    }
    let mut max = 0;
    bits.fill(0);
    for v in perm {
        let j = v.index();
        max = max.max(j);
        let j = j.min(n - 1);
        bits[j >> 6] |= 1u64 << (j & 63);
    }
    max < n && bits.iter().map(|w| w.count_ones() as usize).sum::<usize>() == n
}

/// [`is_permutation`] for `1 ≤ n = perm.len() ≤ 64`, with the index set in
/// one word: every index below `n` and all `n` bits set. Branch-free (`&`,
/// not `&&`) so that callers can fold it over rows.
#[inline(always)]
fn small_permutation<P: PermIndex>(perm: &[P]) -> bool {
    let n = perm.len();
    let (mut mask, mut max) = (0u64, 0usize);
    for v in perm {
        let j = v.index();
        max = max.max(j);
        mask |= 1u64 << (j & 63);
    }
    (max < n) & (mask == u64::MAX >> (64 - n))
}

/// Whether every `N`-slot row of `block` is a permutation of `0..N`, for
/// small `N` (1 to 64) as a compile-time constant: [`small_permutation`]
/// unrolled, folded over the rows without an early exit.
fn rows_ok<const N: usize, P: PermIndex>(block: &[P]) -> bool {
    block
        .chunks_exact(N)
        .fold(true, |ok, perm| ok & small_permutation(&perm[..N]))
}

/// What is wrong with `perm` as a permutation of `0..perm.len()`: the first
/// out-of-range or repeated index, in words (`None` if nothing is).
fn row_defect<P: PermIndex>(perm: &[P]) -> Option<String> {
    let n = perm.len();
    let mut first_at = vec![usize::MAX; n];
    for (pos, v) in perm.iter().enumerate() {
        let j = v.index();
        if j >= n {
            return Some(format!(
                "position {pos} holds index {j}, out of range (expected < {n})"
            ));
        }
        if first_at[j] != usize::MAX {
            let first = first_at[j];
            return Some(format!(
                "index {j} appears twice, at positions {first} and {pos}"
            ));
        }
        first_at[j] = pos;
    }
    None
}

impl<'a, S: Storage, P: PermIndex> LinearProblem for PermDiagonal<'a, S, P> {
    type Out = S;

    fn family(&self) -> &'static str {
        "perm-diagonal"
    }

    fn validate(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("n", self.n, 1)?;
        if self.n > P::MAX_N {
            return Err(Error::size(
                "n",
                self.n,
                format!(
                    "≤ {} (the largest permutation a `{}` index holds)",
                    P::MAX_N,
                    std::any::type_name::<P>()
                ),
            ));
        }
        let total = product(
            "perm",
            &[("batch", self.batch), ("len", self.len), ("n", self.n)],
        )?;
        check_len("perm", self.perm, total, || self.shape_str())?;
        check_len("d", self.d, total, || self.shape_str())?;
        check_len("b", self.b, total, || self.shape_str())?;
        check_h0(self.h0, self.batch * self.n, || self.state_shape_str())?;
        self.check_perm_rows()
    }

    fn check_finite(&self) -> Result<()> {
        check_finite("d", self.d)?;
        check_finite("b", self.b)?;
        match self.h0 {
            Some(h0) => check_finite("h0", h0),
            None => Ok(()),
        }
    }

    fn scan_shape(&self) -> ScanShape {
        ScanShape {
            problems: self.batch,
            len: self.len,
            // Composing into an aggregate gathers d and b through the
            // permutation into a second buffer; measured on 2 cores (n = 64)
            // the chunked scan ran 1.7× slower than the sequential loop, a
            // fold of about 2.5 steps.
            fold_cost: 2.5,
        }
    }

    fn output_len(&self) -> usize {
        self.batch * self.len * self.n
    }
    fn output_shape(&self) -> String {
        self.shape_str()
    }
    fn final_len(&self) -> usize {
        self.batch * self.n
    }
    fn final_shape(&self) -> String {
        self.state_shape_str()
    }
    fn bytes_moved(&self) -> usize {
        self.output_len() * (std::mem::size_of::<P>() + 3 * std::mem::size_of::<S>())
    }

    fn run_cpu_reverse(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) -> Result<()> {
        let finals = scan::run_reverse(&RowOp { p: self }, plan, out);
        for (dst, h) in h_last.chunks_mut(self.n).zip(finals) {
            for (d, v) in dst.iter_mut().zip(h.h) {
                *d = S::store(v);
            }
        }
        Ok(())
    }

    fn run_cpu(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) {
        if plan.chunk >= self.len {
            // One chunk per sequence: the dedicated loop (same arithmetic).
            self.run_rows(out, h_last);
            return;
        }
        let op = RowOp { p: self };
        let finals = scan::run(&op, plan, out);
        for (dst, h) in h_last.chunks_mut(self.n).zip(finals) {
            for (d, v) in dst.iter_mut().zip(h.h) {
                *d = S::store(v);
            }
        }
    }
}

impl<S: Storage, P: PermIndex> PermDiagonal<'_, S, P> {
    /// The sequential loop of every batch row (in parallel over rows),
    /// outside the generic engine: per step one pass over the `n` slots
    /// gathers, scales, adds and stores, with the state in two local
    /// buffers swapped per step. Why: through [`ScanOp::advance`] a step of
    /// `n = 5` cost ~130 cycles of slicing, swapping through the state
    /// struct and a separate store loop. Bitwise the engine's results (same
    /// operations per slot: `d·h[π] + b`).
    ///
    /// With at least two rows per worker, each task steps two rows in
    /// lockstep ([`PermDiagonal::run_row_pair`]): one row's step is a
    /// chain of dependent loads and arithmetic (latency-bound for small
    /// `n`), and two independent chains in one loop overlap.
    fn run_rows(&self, out: &mut [S], h_last: &mut [S]) {
        // f32 rows of at most 8 slots: the state in one AVX2 register.
        if super::perm_small::run_rows(self, out, h_last) {
            return;
        }
        let (n, len) = (self.n, self.len);
        if self.batch >= 2 * rayon::current_num_threads() {
            out.par_chunks_mut(2 * len * n)
                .zip(h_last.par_chunks_mut(2 * n))
                .enumerate()
                .for_each(|(q, (out_q, last))| {
                    if out_q.len() == 2 * len * n {
                        self.run_row_pair(2 * q, out_q, last);
                    } else {
                        self.run_row(2 * q, out_q, last);
                    }
                });
            return;
        }
        out.par_chunks_mut(len * n)
            .zip(h_last.par_chunks_mut(n))
            .enumerate()
            .for_each(|(p, (out_p, last))| self.run_row(p, out_p, last));
    }

    /// The initial state of row `p`, in the compute type.
    fn start(&self, p: usize) -> Vec<S::Compute> {
        let n = self.n;
        match self.h0 {
            Some(h0) => h0[p * n..(p + 1) * n].iter().map(|x| x.load()).collect(),
            None => vec![S::Compute::zero(); n],
        }
    }

    /// Rows `p` and `p + 1` together (`out: [2, T, n]`, `last: [2, n]`),
    /// each with the arithmetic of [`PermDiagonal::run_row`].
    fn run_row_pair(&self, p: usize, out: &mut [S], last: &mut [S]) {
        let (n, len) = (self.n, self.len);
        let (mut h0, mut h1) = (self.start(p), self.start(p + 1));
        let (mut g0, mut g1) = (vec![S::Compute::zero(); n], vec![S::Compute::zero(); n]);
        let row = |q: usize| {
            let r = q * len * n..(q + 1) * len * n;
            self.perm[r.clone()]
                .chunks_exact(n)
                .zip(self.d[r.clone()].chunks_exact(n))
                .zip(self.b[r].chunks_exact(n))
        };
        let (out0, out1) = out.split_at_mut(len * n);
        let steps = row(p)
            .zip(row(p + 1))
            .zip(out0.chunks_exact_mut(n).zip(out1.chunks_exact_mut(n)));
        for ((((perm0, d0), b0), ((perm1, d1), b1)), (o0, o1)) in steps {
            pd_step(perm0, d0, b0, &h0, &mut g0, o0);
            pd_step(perm1, d1, b1, &h1, &mut g1, o1);
            std::mem::swap(&mut h0, &mut g0);
            std::mem::swap(&mut h1, &mut g1);
        }
        let (l0, l1) = last.split_at_mut(n);
        for (dst, v) in l0.iter_mut().zip(&h0).chain(l1.iter_mut().zip(&h1)) {
            *dst = S::store(*v);
        }
    }

    /// Row `p`'s sequential loop (`out_p: [T, n]`, `last: [n]`).
    fn run_row(&self, p: usize, out_p: &mut [S], last: &mut [S]) {
        let (n, len) = (self.n, self.len);
        let mut h = self.start(p);
        let mut g = vec![S::Compute::zero(); n];
        let rows = p * len * n..(p + 1) * len * n;
        let steps = self.perm[rows.clone()]
            .chunks_exact(n)
            .zip(self.d[rows.clone()].chunks_exact(n))
            .zip(self.b[rows].chunks_exact(n))
            .zip(out_p.chunks_exact_mut(n));
        for (((perm, d), b), o) in steps {
            pd_step(perm, d, b, &h, &mut g, o);
            std::mem::swap(&mut h, &mut g);
        }
        for (dst, v) in last.iter_mut().zip(&h) {
            *dst = S::store(*v);
        }
    }
}

/// `g = d ⊙ h[perm] + b` and `out = g` stored, in one pass over the slots.
// Index loop over equal-length slices (bounds checks hoisted).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn pd_step<S: Storage, P: PermIndex>(
    perm: &[P],
    d: &[S],
    b: &[S],
    h: &[S::Compute],
    g: &mut [S::Compute],
    out: &mut [S],
) {
    let n = out.len();
    let (perm, d, b, g) = (&perm[..n], &d[..n], &b[..n], &mut g[..n]);
    for i in 0..n {
        let v = d[i].load() * h[perm[i].index()] + b[i].load();
        g[i] = v;
        out[i] = S::store(v);
    }
}

/// A chunk aggregate plus a spare element of the same size: the serial fold
/// gathers from the aggregate, so it combines into the spare and swaps
/// (no allocation per step). Clones (Blelloch tree nodes) drop the spare.
#[derive(Debug)]
struct Agg<C> {
    e: PdElem<C>,
    spare: PdElem<C>,
}

impl<C: Clone> Clone for Agg<C> {
    fn clone(&self) -> Self {
        Agg {
            e: self.e.clone(),
            spare: PdElem::empty(),
        }
    }
}

/// A state and a buffer of the same size: a PD step gathers, so it writes
/// into `tmp` and swaps.
#[derive(Clone, Debug)]
struct State<C> {
    h: Vec<C>,
    tmp: Vec<C>,
}

/// One sequence per batch row; elements and states are `n`-vectors.
struct RowOp<'p, 'a, S, P> {
    p: &'p PermDiagonal<'a, S, P>,
}

impl<S: Storage, P: PermIndex> RowOp<'_, '_, S, P> {
    #[inline(always)]
    fn step(&self, p: usize, t: usize) -> (&[P], &[S], &[S]) {
        let n = self.p.n;
        let off = (p * self.p.len + t) * n;
        (
            &self.p.perm[off..off + n],
            &self.p.d[off..off + n],
            &self.p.b[off..off + n],
        )
    }
}

impl<S: Storage, P: PermIndex> ScanOp for RowOp<'_, '_, S, P> {
    type Agg = Agg<S::Compute>;
    type State = State<S::Compute>;
    type Out = S;

    fn problems(&self) -> usize {
        self.p.batch
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        self.p.n
    }
    fn identity(&self) -> Self::Agg {
        Agg {
            e: PdElem::identity(self.p.n),
            spare: PdElem::empty(),
        }
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (perm, d, b) = self.step(p, t);
        Agg {
            e: PdElem {
                perm: perm.iter().map(|&x| x.index() as u32).collect(),
                d: d.iter().map(|x| x.load()).collect(),
                b: b.iter().map(|x| x.load()).collect(),
            },
            spare: PdElem::zeros(self.p.n),
        }
    }
    #[inline]
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        if agg.spare.n() != self.p.n {
            // Only after a clone; the engine folds into leaves, which own a spare.
            agg.spare = PdElem::zeros(self.p.n);
        }
        combine(
            agg.e.parts(),
            self.step(p, t),
            agg.spare.parts_mut(),
            S::load,
        );
        std::mem::swap(&mut agg.e, &mut agg.spare);
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        let mut e = PdElem::zeros(self.p.n);
        combine(e1.e.parts(), e2.e.parts(), e.parts_mut(), |x| x);
        Agg {
            e,
            spare: PdElem::empty(),
        }
    }
    fn initial(&self, p: usize) -> Self::State {
        let n = self.p.n;
        let h = match self.p.h0 {
            Some(h0) => h0[p * n..(p + 1) * n].iter().map(|x| x.load()).collect(),
            None => vec![S::Compute::zero(); n],
        };
        State {
            h,
            tmp: vec![S::Compute::zero(); n],
        }
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        let mut out = State {
            h: vec![S::Compute::zero(); self.p.n],
            tmp: vec![S::Compute::zero(); self.p.n],
        };
        apply(e.e.parts(), &h.h, &mut out.h, |x| x);
        out
    }
    #[inline]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S]) {
        let (perm, d, b) = self.step(p, t);
        pd_step(perm, d, b, &h.h, &mut h.tmp, out);
        std::mem::swap(&mut h.h, &mut h.tmp);
    }
}

impl<S: Storage, P: PermIndex> super::varlen::Segmentable for PermDiagonal<'_, S, P> {
    fn state_len(&self) -> usize {
        self.n
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
        let p = PermDiagonal { h0, ..*self };
        let op = RowOp { p: &p };
        // `initial(i)` reads row i of `h0`, here `[B·N, n]`.
        let finals = match segs {
            None => scan::run(&op, plan, out),
            Some(segs) => {
                let n = segs.count();
                scan::segmented::run(&op, plan, segs, |b, s| op.initial(b * n + s), out)
            }
        };
        finals.into_iter().flat_map(|st| st.h).collect()
    }
}
