//! Block-diagonal transitions: `A_t` is `nb` dense `k×k` blocks on the
//! diagonal, `n = nb·k`, so block `j` of the state evolves on its own:
//! `h_t[j·k + r] = Σ_c a_t[j][r][c] · h_{t-1}[j·k + c] + b_t[j·k + r]`.
//! `k = 1` is the Diagonal family, `k = n` (one block) is Dense.
//!
//! The monoid element is `(A, b)` with `A` the `nb` blocks (each row-major,
//! block after block, as the input) and `b` an `n`-vector. Applying `e1`
//! first, then `e2` gives `(A2·A1, A2·b1 + b2)` blockwise — the same code as
//! `bd_identity`, `bd_combine` and `bd_apply` in `kernels/parascan.cuh`
//! ([`identity`], [`combine`], [`apply`] here). The serial fold uses
//! [`fold_step`], which left-multiplies an aggregate by one step in place,
//! column by column, with exactly [`combine`]'s arithmetic.

use super::{check_finite, check_h0, check_len, check_min, product, LinearProblem};
use crate::dtype::{Real, Storage};
use crate::error::Result;
use crate::scan::plan::ScanShape;
use crate::scan::{self, Plan, ScanOp};
use num_traits::Zero;

/// Writes the identity element: every block `I_k`, `b = 0`.
#[inline]
pub fn identity<C: Real>(k: usize, (a, b): (&mut [C], &mut [C])) {
    let nb = b.len() / k;
    for blk in 0..nb {
        let ab = &mut a[blk * k * k..(blk + 1) * k * k];
        for r in 0..k {
            for c in 0..k {
                ab[r * k + c] = if r == c { C::one() } else { C::zero() };
            }
        }
    }
    for y in b.iter_mut() {
        *y = C::zero();
    }
}

/// `combine(e1, e2)`: the element that applies `e1` (earlier) first, then
/// `e2` (later), i.e. `(A2·A1, A2·b1 + b2)` per block, written into
/// `(a, b)`. `k` is the block size; the number of blocks is `b.len() / k`.
#[inline]
pub fn combine<C: Real>(
    k: usize,
    (a1, b1): (&[C], &[C]),
    (a2, b2): (&[C], &[C]),
    (a, b): (&mut [C], &mut [C]),
) {
    let nb = b.len() / k;
    for blk in 0..nb {
        let x1 = &a1[blk * k * k..(blk + 1) * k * k];
        let x2 = &a2[blk * k * k..(blk + 1) * k * k];
        let y1 = &b1[blk * k..(blk + 1) * k];
        let y2 = &b2[blk * k..(blk + 1) * k];
        let x = &mut a[blk * k * k..(blk + 1) * k * k];
        let y = &mut b[blk * k..(blk + 1) * k];
        for r in 0..k {
            for c in 0..k {
                let mut acc = C::zero();
                for j in 0..k {
                    acc = acc + x2[r * k + j] * x1[j * k + c];
                }
                x[r * k + c] = acc;
            }
            let mut acc = y2[r];
            for j in 0..k {
                acc = acc + x2[r * k + j] * y1[j];
            }
            y[r] = acc;
        }
    }
}

/// `h_out = A h_in + b` for the element `(a, b)` stored as `T` and widened
/// by `load` (`Storage::load` for a step read from the inputs, `|x| x` for
/// an aggregate). `h_out` must not be `h_in`.
#[inline]
pub fn apply<C: Real, T: Copy>(
    k: usize,
    (a, b): (&[T], &[T]),
    h_in: &[C],
    h_out: &mut [C],
    load: impl Fn(T) -> C,
) {
    let nb = h_out.len() / k;
    for blk in 0..nb {
        let x = &a[blk * k * k..(blk + 1) * k * k];
        let h = &h_in[blk * k..(blk + 1) * k];
        let y = &b[blk * k..(blk + 1) * k];
        let o = &mut h_out[blk * k..(blk + 1) * k];
        for r in 0..k {
            let mut acc = load(y[r]);
            for j in 0..k {
                acc = acc + load(x[r * k + j]) * h[j];
            }
            o[r] = acc;
        }
    }
}

/// `(a, b) := combine((a, b), step)` in place, for a step `(a2, b2)` stored
/// as `T` and widened by `load`: the reduce phase's serial fold.
///
/// Column `c` of `A2·A` depends only on column `c` of `A` (and `A2·b` only
/// on `b`), so each column is computed into `scratch` and written back.
/// `scratch` holds at least `k·k + k` values: the widened step block, then
/// one column. The arithmetic is [`combine`]'s, operation for operation, so
/// the results are bitwise the same.
#[inline]
pub fn fold_step<C: Real, T: Copy>(
    k: usize,
    (a2, b2): (&[T], &[T]),
    (a, b): (&mut [C], &mut [C]),
    scratch: &mut [C],
    load: impl Fn(T) -> C,
) {
    let nb = b.len() / k;
    let (x2, col) = scratch.split_at_mut(k * k);
    let col = &mut col[..k];
    for blk in 0..nb {
        for (w, s) in x2.iter_mut().zip(&a2[blk * k * k..(blk + 1) * k * k]) {
            *w = load(*s);
        }
        let y2 = &b2[blk * k..(blk + 1) * k];
        let x = &mut a[blk * k * k..(blk + 1) * k * k];
        let y = &mut b[blk * k..(blk + 1) * k];
        for c in 0..k {
            for r in 0..k {
                let mut acc = C::zero();
                for j in 0..k {
                    acc = acc + x2[r * k + j] * x[j * k + c];
                }
                col[r] = acc;
            }
            for r in 0..k {
                x[r * k + c] = col[r];
            }
        }
        for r in 0..k {
            let mut acc = load(y2[r]);
            for j in 0..k {
                acc = acc + x2[r * k + j] * y[j];
            }
            col[r] = acc;
        }
        y.copy_from_slice(col);
    }
}

/// A batch of block-diagonal recurrences, `n = blocks · block`.
/// Shapes: `a: [B,T,nb,k,k]` (row-major blocks), `b: [B,T,n]`, `h0: [B,n]`.
/// Outputs `h: [B,T,n]`, `h_T: [B,n]`.
///
/// `a[.., j, r, c]` multiplies `h[j·k + c]` into row `j·k + r`.
#[derive(Clone, Copy, Debug)]
pub struct BlockDiagonal<'a, S> {
    /// Transition blocks.
    pub a: &'a [S],
    /// Inputs.
    pub b: &'a [S],
    /// Initial state `[B,n]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// Number of blocks `nb`.
    pub blocks: usize,
    /// Block size `k`.
    pub block: usize,
}

impl<'a, S: Storage> BlockDiagonal<'a, S> {
    /// State size `n = nb·k`.
    pub fn n(&self) -> usize {
        self.blocks * self.block
    }

    fn a_shape_str(&self) -> String {
        let (bb, t, nb, k) = (self.batch, self.len, self.blocks, self.block);
        format!("[B,T,nb,k,k] = [{bb},{t},{nb},{k},{k}]")
    }

    fn shape_str(&self) -> String {
        format!("[B,T,n] = [{},{},{}]", self.batch, self.len, self.n())
    }

    fn state_shape_str(&self) -> String {
        format!("[B,n] = [{},{}]", self.batch, self.n())
    }
}

impl<'a, S: Storage> LinearProblem for BlockDiagonal<'a, S> {
    type Out = S;

    fn family(&self) -> &'static str {
        "block-diagonal"
    }

    fn validate(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("blocks", self.blocks, 1)?;
        check_min("block", self.block, 1)?;
        let n = product("blocks", &[("blocks", self.blocks), ("block", self.block)])?;
        let a_len = product(
            "a",
            &[
                ("batch", self.batch),
                ("len", self.len),
                ("blocks", self.blocks),
                ("block", self.block),
                ("block", self.block),
            ],
        )?;
        let b_len = product("b", &[("batch", self.batch), ("len", self.len), ("n", n)])?;
        check_len("a", self.a, a_len, || self.a_shape_str())?;
        check_len("b", self.b, b_len, || self.shape_str())?;
        check_h0(self.h0, self.batch * n, || self.state_shape_str())
    }

    fn check_finite(&self) -> Result<()> {
        check_finite("a", self.a)?;
        check_finite("b", self.b)?;
        match self.h0 {
            Some(h0) => check_finite("h0", h0),
            None => Ok(()),
        }
    }

    fn scan_shape(&self) -> ScanShape {
        // Folding a step into an aggregate is a k×k by k×k product per block;
        // advancing a state is a k×k by k product: k times the work.
        ScanShape {
            problems: self.batch,
            len: self.len,
            fold_cost: self.block as f64,
        }
    }

    fn output_len(&self) -> usize {
        self.batch * self.len * self.n()
    }
    fn output_shape(&self) -> String {
        self.shape_str()
    }
    fn final_len(&self) -> usize {
        self.batch * self.n()
    }
    fn final_shape(&self) -> String {
        self.state_shape_str()
    }
    fn bytes_moved(&self) -> usize {
        let per_step = self.blocks * self.block * self.block + 2 * self.n();
        self.batch * self.len * per_step * std::mem::size_of::<S>()
    }

    fn run_cpu_reverse(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) -> Result<()> {
        let finals = scan::run_reverse(&RowOp { p: self }, plan, out);
        for (dst, h) in h_last.chunks_mut(self.n()).zip(finals) {
            for (d, v) in dst.iter_mut().zip(h.h) {
                *d = S::store(v);
            }
        }
        Ok(())
    }

    fn run_cpu(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) {
        let op = RowOp { p: self };
        let finals = scan::run(&op, plan, out);
        for (dst, h) in h_last.chunks_mut(self.n()).zip(finals) {
            for (d, v) in dst.iter_mut().zip(h.h) {
                *d = S::store(v);
            }
        }
    }
}

/// One step `g = A h + b` for blocks of a size `K` known at compile time
/// (the per-block loops unroll; the operand blocks are fixed-size arrays,
/// so there is one bounds check per block), storing `g` into `out` in the
/// same pass. The arithmetic is [`apply`]'s, operation for operation.
#[inline(always)]
fn bd_step<S: Storage, const K: usize>(
    a: &[S],
    b: &[S],
    h: &[S::Compute],
    g: &mut [S::Compute],
    out: &mut [S],
) {
    let blocks = a
        .chunks_exact(K * K)
        .zip(b.chunks_exact(K))
        .zip(h.chunks_exact(K))
        .zip(g.chunks_exact_mut(K))
        .zip(out.chunks_exact_mut(K));
    for ((((x, y), h), g), o) in blocks {
        let h: &[S::Compute; K] = h.try_into().expect("K slots");
        for r in 0..K {
            let row: &[S; K] = x[r * K..(r + 1) * K].try_into().expect("K slots");
            let mut acc = y[r].load();
            for j in 0..K {
                acc = acc + row[j].load() * h[j];
            }
            g[r] = acc;
            o[r] = S::store(acc);
        }
    }
}

/// A chunk aggregate `(A, b)` plus the [`fold_step`] scratch (`k·k + k`
/// values, so the fold allocates nothing per step). Clones (Blelloch tree
/// nodes) drop the scratch.
#[derive(Debug)]
struct Agg<C> {
    a: Vec<C>,
    b: Vec<C>,
    scratch: Vec<C>,
}

impl<C: Clone> Clone for Agg<C> {
    fn clone(&self) -> Self {
        Agg {
            a: self.a.clone(),
            b: self.b.clone(),
            scratch: Vec::new(),
        }
    }
}

/// A state and a buffer of the same size: a step writes into `tmp` and
/// swaps.
#[derive(Clone, Debug)]
struct State<C> {
    h: Vec<C>,
    tmp: Vec<C>,
}

/// One sequence per batch row; the element is all `nb` blocks.
struct RowOp<'p, 'a, S> {
    p: &'p BlockDiagonal<'a, S>,
}

impl<S: Storage> RowOp<'_, '_, S> {
    #[inline(always)]
    fn step(&self, p: usize, t: usize) -> (&[S], &[S]) {
        let (n, kk) = (self.p.n(), self.p.blocks * self.p.block * self.p.block);
        let s = p * self.p.len + t;
        (
            &self.p.a[s * kk..(s + 1) * kk],
            &self.p.b[s * n..(s + 1) * n],
        )
    }

    fn zeros(&self) -> Agg<S::Compute> {
        let kk = self.p.blocks * self.p.block * self.p.block;
        Agg {
            a: vec![S::Compute::zero(); kk],
            b: vec![S::Compute::zero(); self.p.n()],
            scratch: Vec::new(),
        }
    }

    fn scratch_len(&self) -> usize {
        self.p.block * self.p.block + self.p.block
    }
}

impl<S: Storage> ScanOp for RowOp<'_, '_, S> {
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
        self.p.n()
    }
    fn identity(&self) -> Self::Agg {
        let mut e = self.zeros();
        identity(self.p.block, (&mut e.a, &mut e.b));
        e
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (a, b) = self.step(p, t);
        Agg {
            a: a.iter().map(|x| x.load()).collect(),
            b: b.iter().map(|x| x.load()).collect(),
            scratch: vec![S::Compute::zero(); self.scratch_len()],
        }
    }
    #[inline]
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        if agg.scratch.len() < self.scratch_len() {
            // Only after a clone; the engine folds into leaves, which own one.
            agg.scratch = vec![S::Compute::zero(); self.scratch_len()];
        }
        fold_step(
            self.p.block,
            self.step(p, t),
            (&mut agg.a, &mut agg.b),
            &mut agg.scratch,
            S::load,
        );
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        let mut e = self.zeros();
        combine(
            self.p.block,
            (&e1.a, &e1.b),
            (&e2.a, &e2.b),
            (&mut e.a, &mut e.b),
        );
        e
    }
    fn initial(&self, p: usize) -> Self::State {
        let n = self.p.n();
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
        let n = self.p.n();
        let mut out = State {
            h: vec![S::Compute::zero(); n],
            tmp: vec![S::Compute::zero(); n],
        };
        apply(self.p.block, (&e.a, &e.b), &h.h, &mut out.h, |x| x);
        out
    }
    #[inline]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S]) {
        let (a, b) = self.step(p, t);
        match self.p.block {
            2 => bd_step::<S, 2>(a, b, &h.h, &mut h.tmp, out),
            4 => bd_step::<S, 4>(a, b, &h.h, &mut h.tmp, out),
            8 => bd_step::<S, 8>(a, b, &h.h, &mut h.tmp, out),
            16 => bd_step::<S, 16>(a, b, &h.h, &mut h.tmp, out),
            k => {
                apply(k, (a, b), &h.h, &mut h.tmp, S::load);
                for (o, v) in out.iter_mut().zip(&h.tmp) {
                    *o = S::store(*v);
                }
            }
        }
        std::mem::swap(&mut h.h, &mut h.tmp);
    }
}

impl<S: Storage> super::varlen::Segmentable for BlockDiagonal<'_, S> {
    fn state_len(&self) -> usize {
        self.n()
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
        let p = BlockDiagonal { h0, ..*self };
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
