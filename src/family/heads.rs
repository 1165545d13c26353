//! Head axes, strided views and mixed precision on the CPU engine:
//! flash-linear-attention's `[B,T,H,K]` tensors taken as they are.
//!
//! - [`Strided`]: a `[B,T,H,inner]` view into a larger buffer, with element
//!   strides for the batch, time and head axes; the `inner` elements of one
//!   `(b, t, h)` are contiguous (the one contiguity requirement, stated in
//!   the type). Views are checked to stay inside their buffer
//!   ([`Error::Stride`]); inputs may overlap or broadcast (stride 0), as
//!   they are only read. Nothing is copied.
//! - [`DiagonalHeads`]: `h_t = a_t ⊙ h_{t-1} + b_t` per head with
//!   `D = H·K` channels per step; the decays and the state in `A` (`f32`
//!   or `f64`), the inputs `b` and the outputs in `X` (`bf16`, `f16`,
//!   `f32`, or `f64` with `f64`), computed in `A`'s precision. `h0` and
//!   `h_T` are `A`, so `h_T` never passes through `X`'s rounding.
//!
//! With `A = X` a `DiagonalHeads` is an ordinary [`LinearProblem`] (so
//! `Cpu::scan`, [`super::varlen::Varlen`] and in-place state take it); with
//! `A ≠ X` run it with [`DiagonalHeads::scan_into`].

use super::diagonal::{apply, combine};
use super::dplr::{self, DplrOutput};
use super::{check_finite, check_len, check_min, LinearProblem};
use crate::backend::Cpu;
use crate::dtype::{Real, Storage};
use crate::error::{Error, Result};
use crate::scan::plan::ScanShape;
use crate::scan::segmented::Segments;
use crate::scan::{self, Plan, PlanRequest, ScanOp};
use num_traits::{One, Zero};

/// A `[B,T,H,inner]` view: element `(b, t, h, i)` is
/// `data[b·strides[0] + t·strides[1] + h·strides[2] + i]`; the `inner`
/// elements of one `(b, t, h)` are contiguous.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, T> {
    /// The buffer the view reads.
    pub data: &'a [T],
    /// Element strides of the batch, time and head axes.
    pub strides: [usize; 3],
}

impl<'a, T> Strided<'a, T> {
    /// The contiguous `[B,T,H,inner]` layout of `data`.
    pub fn contiguous(data: &'a [T], len: usize, heads: usize, inner: usize) -> Self {
        Strided {
            data,
            strides: [len * heads * inner, heads * inner, inner],
        }
    }

    /// Checks that every element of the `[B,T,H,inner]` view is inside
    /// `data` (`dims = [B, T, H]`, all ≥ 1).
    pub fn check(&self, arg: &'static str, dims: [usize; 3], inner: usize) -> Result<()> {
        let shape = || {
            format!(
                "[B,T,H,inner] = [{},{},{},{inner}] with strides {:?}",
                dims[0], dims[1], dims[2], self.strides
            )
        };
        let last = dims
            .iter()
            .zip(self.strides)
            .try_fold(inner, |acc, (&d, s)| {
                d.checked_sub(1)
                    .and_then(|d| d.checked_mul(s))
                    .and_then(|x| x.checked_add(acc))
            })
            .ok_or_else(|| Error::Stride {
                arg,
                detail: format!("{} overflows usize", shape()),
                expected: "strides whose largest offset fits in usize".into(),
            })?;
        if last > self.data.len() {
            return Err(Error::Stride {
                arg,
                detail: format!(
                    "{} reaches element {}, past the buffer of {} elements",
                    shape(),
                    last - 1,
                    self.data.len()
                ),
                expected: format!("a buffer of at least {last} elements, or smaller strides"),
            });
        }
        Ok(())
    }

    /// The `inner` elements of `(b, t, h)`.
    #[inline(always)]
    fn row(&self, b: usize, t: usize, h: usize, inner: usize) -> &'a [T] {
        let o = b * self.strides[0] + t * self.strides[1] + h * self.strides[2];
        &self.data[o..o + inner]
    }
}

/// Diagonal recurrences on `[B,T,H,K]` views, one `K`-vector state per
/// head: `h_t[h] = a_t[h] ⊙ h_{t-1}[h] + b_t[h]`.
///
/// Shapes: `a` (`A`), `b` (`X`): `[B,T,H,K]` strided views; `h0`:
/// `[B,H,K]` contiguous in `A`, zeros when `None`. Outputs: every state
/// `[B,T,H,K]` contiguous in `X`, `h_T`: `[B,H,K]` in `A`. The arithmetic is
/// the Diagonal family's (same combine, same order), so the result equals
/// the contiguous `[B·H,T,K]` problem's under the same plan bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct DiagonalHeads<'a, A, X = A> {
    /// Decays `a_t`, `[B,T,H,K]`.
    pub a: Strided<'a, A>,
    /// Inputs `b_t`, `[B,T,H,K]`.
    pub b: Strided<'a, X>,
    /// Initial state `[B,H,K]`; zeros when `None`.
    pub h0: Option<&'a [A]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `H`.
    pub heads: usize,
    /// `K`.
    pub head_dim: usize,
}

impl<'a, A, X> DiagonalHeads<'a, A, X>
where
    A: Storage,
    X: Storage<Compute = A::Compute>,
{
    fn dims(&self) -> [usize; 3] {
        [self.batch, self.len, self.heads]
    }

    fn state_shape(&self) -> String {
        format!(
            "[B,H,K] = [{},{},{}]",
            self.batch, self.heads, self.head_dim
        )
    }

    /// Checks sizes, both views and `h0` (length and values).
    pub fn check(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("heads", self.heads, 1)?;
        check_min("head_dim", self.head_dim, 1)?;
        let states = crate::mem::checked_product(
            "h0",
            &[
                ("batch", self.batch),
                ("heads", self.heads),
                ("head_dim", self.head_dim),
            ],
        )?;
        crate::mem::checked_product("out", &[("states", states), ("len", self.len)])?;
        self.a.check("a", self.dims(), self.head_dim)?;
        self.b.check("b", self.dims(), self.head_dim)?;
        if let Some(h0) = self.h0 {
            check_len("h0", h0, states, || self.state_shape())?;
            check_finite("h0", h0)?;
        }
        Ok(())
    }

    /// Scalars of the outputs, `B·T·H·K`.
    pub fn out_len(&self) -> usize {
        self.batch * self.len * self.heads * self.head_dim
    }

    /// Scalars of `h_T`, `B·H·K`.
    pub fn state_len(&self) -> usize {
        self.batch * self.heads * self.head_dim
    }

    /// Runs on `cpu` under `request`: every state into `out` (`[B,T,H,K]`,
    /// `X`), the final states into `h_last` (`[B,H,K]`, `A`). Every check
    /// runs before any computation.
    pub fn scan_into(
        &self,
        cpu: &Cpu,
        request: PlanRequest,
        out: &mut [X],
        h_last: &mut [A],
    ) -> Result<Plan> {
        self.check()?;
        let plan = Plan::resolve(request, self.shape(), cpu.threads())?;
        check_len("out", out, self.out_len(), || {
            format!(
                "[B,T,H,K] = [{},{},{},{}]",
                self.batch, self.len, self.heads, self.head_dim
            )
        })?;
        check_len("h_last", h_last, self.state_len(), || self.state_shape())?;
        let finals = cpu.install_for::<A, _>(|| self.states(&plan, None, self.h0, out));
        for (d, v) in h_last.iter_mut().zip(finals) {
            *d = A::store(v);
        }
        Ok(plan)
    }

    fn shape(&self) -> ScanShape {
        ScanShape {
            problems: self.batch,
            len: self.len,
            fold_cost: 0.67,
        }
    }

    /// The pass: final states `[B,N,H,K]` in compute precision.
    fn states(
        &self,
        plan: &Plan,
        segs: Option<&Segments>,
        h0: Option<&[A]>,
        out: &mut [X],
    ) -> Vec<A::Compute> {
        let p = DiagonalHeads { h0, ..*self };
        let op = HeadsOp { p: &p };
        let finals = match segs {
            None => scan::run(&op, plan, out),
            Some(segs) => {
                let n = segs.count();
                scan::segmented::run(&op, plan, segs, |b, s| op.initial(b * n + s), out)
            }
        };
        finals.into_iter().flatten().collect()
    }
}

/// One sequence per batch row; elements are `H·K`-vectors gathered head by
/// head from the views.
struct HeadsOp<'p, 'a, A, X> {
    p: &'p DiagonalHeads<'a, A, X>,
}

type Vecs<C> = (Vec<C>, Vec<C>);

impl<A, X> ScanOp for HeadsOp<'_, '_, A, X>
where
    A: Storage,
    X: Storage<Compute = A::Compute>,
{
    type Agg = Vecs<A::Compute>;
    type State = Vec<A::Compute>;
    type Out = X;

    fn problems(&self) -> usize {
        self.p.batch
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        self.p.heads * self.p.head_dim
    }
    fn identity(&self) -> Self::Agg {
        let d = self.out_per_step();
        (vec![A::Compute::one(); d], vec![A::Compute::zero(); d])
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (k, d) = (self.p.head_dim, self.out_per_step());
        let (mut ea, mut eb) = (Vec::with_capacity(d), Vec::with_capacity(d));
        for h in 0..self.p.heads {
            ea.extend(self.p.a.row(p, t, h, k).iter().map(|x| x.load()));
            eb.extend(self.p.b.row(p, t, h, k).iter().map(|x| x.load()));
        }
        (ea, eb)
    }
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        let k = self.p.head_dim;
        for h in 0..self.p.heads {
            let (a, b) = (self.p.a.row(p, t, h, k), self.p.b.row(p, t, h, k));
            let (ga, gb) = (
                &mut agg.0[h * k..(h + 1) * k],
                &mut agg.1[h * k..(h + 1) * k],
            );
            for i in 0..k {
                let r = combine((ga[i], gb[i]), (a[i].load(), b[i].load()));
                ga[i] = r.0;
                gb[i] = r.1;
            }
        }
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        (0..self.out_per_step())
            .map(|i| combine((e1.0[i], e1.1[i]), (e2.0[i], e2.1[i])))
            .unzip()
    }
    fn initial(&self, p: usize) -> Self::State {
        let d = self.out_per_step();
        match self.p.h0 {
            Some(h0) => h0[p * d..(p + 1) * d].iter().map(|x| x.load()).collect(),
            None => vec![A::Compute::zero(); d],
        }
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        (0..self.out_per_step())
            .map(|i| apply((e.0[i], e.1[i]), h[i]))
            .collect()
    }
    #[inline]
    fn advance(&self, st: &mut Self::State, p: usize, t: usize, out: &mut [X]) {
        let k = self.p.head_dim;
        for h in 0..self.p.heads {
            let (a, b) = (self.p.a.row(p, t, h, k), self.p.b.row(p, t, h, k));
            let (s, o) = (&mut st[h * k..(h + 1) * k], &mut out[h * k..(h + 1) * k]);
            for i in 0..k {
                s[i] = apply((a[i].load(), b[i].load()), s[i]);
                o[i] = X::store(s[i]);
            }
        }
    }
}

impl<A: Storage> LinearProblem for DiagonalHeads<'_, A, A> {
    type Out = A;

    fn family(&self) -> &'static str {
        "diagonal"
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
    fn check_finite(&self) -> Result<()> {
        // Every element the views reach (a stride may skip buffer parts).
        let k = self.head_dim;
        for (arg, v) in [("a", &self.a), ("b", &self.b)] {
            for b in 0..self.batch {
                for t in 0..self.len {
                    for h in 0..self.heads {
                        check_finite(arg, v.row(b, t, h, k))?;
                    }
                }
            }
        }
        Ok(())
    }
    fn scan_shape(&self) -> ScanShape {
        self.shape()
    }
    fn output_len(&self) -> usize {
        self.out_len()
    }
    fn output_shape(&self) -> String {
        format!(
            "[B,T,H,K] = [{},{},{},{}]",
            self.batch, self.len, self.heads, self.head_dim
        )
    }
    fn final_len(&self) -> usize {
        self.state_len()
    }
    fn final_shape(&self) -> String {
        self.state_shape()
    }
    fn bytes_moved(&self) -> usize {
        3 * self.out_len() * std::mem::size_of::<A>()
    }
    fn run_cpu(&self, plan: &Plan, out: &mut [A], h_last: &mut [A]) {
        let finals = self.states(plan, None, self.h0, out);
        for (d, v) in h_last.iter_mut().zip(finals) {
            *d = A::store(v);
        }
    }
}

impl<A: Storage> super::varlen::Segmentable for DiagonalHeads<'_, A, A> {
    fn state_len(&self) -> usize {
        self.heads * self.head_dim
    }
    fn rows(&self) -> usize {
        self.batch
    }
    fn steps(&self) -> usize {
        self.len
    }
    fn own_h0(&self) -> Option<&[A]> {
        self.h0
    }
    fn run_states(
        &self,
        plan: &Plan,
        segs: Option<&Segments>,
        h0: Option<&[A]>,
        out: &mut [A],
    ) -> Vec<A::Compute> {
        self.states(plan, segs, h0, out)
    }
}

/// DPLR recurrences on `[B,T,H,·]` views, one `K×V` matrix state per head
/// (the DeltaNet / RWKV-7 convention of flash-linear-attention):
/// `H_t = (diag(w_t) + Σ_r u_{t,r} v_{t,r}ᵀ) H_{t-1} + k_t x_tᵀ` per head,
/// the family [`super::dplr`]'s algebra with `n = K`, `m = V`.
///
/// Shapes (views, innermost contiguous): `w` (`A`): `[B,T,H,K]`; `u`, `v`
/// (`A`): `[B,T,H,R·K]` (one step's and head's `[R,K]` block contiguous);
/// `k`, `q` (`X`): `[B,T,H,K]`; `x` (`X`): `[B,T,H,V]`; `h0` (`A`):
/// `[B,H,K,V]` contiguous (fla's `initial_state`), zeros when `None`.
/// Outputs (`X`, contiguous, the `[B·H,T,·]` layout of the contiguous
/// path): `y: [B,H,T,V]` for [`DplrOutput::Readout`] or every state
/// `[B,H,T,K,V]`; `h_T: [B,H,K,V]` in `A`. The transition data and the
/// state are `A` (`f32` or `f64`), computed in `A`; `k, x, q` and the
/// outputs may be `bf16`/`f16` (with `A = f32`).
#[derive(Clone, Copy, Debug)]
pub struct DplrHeads<'a, A, X = A> {
    /// Diagonal part `w_t`.
    pub w: Strided<'a, A>,
    /// Low-rank left factors, `[R,K]` per step and head.
    pub u: Strided<'a, A>,
    /// Low-rank right factors, `[R,K]` per step and head.
    pub v: Strided<'a, A>,
    /// Keys `k_t`.
    pub k: Strided<'a, X>,
    /// Values `x_t`.
    pub x: Strided<'a, X>,
    /// Readout queries (required for [`DplrOutput::Readout`]).
    pub q: Option<Strided<'a, X>>,
    /// Initial state `[B,H,K,V]`; zeros when `None`.
    pub h0: Option<&'a [A]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `H`.
    pub heads: usize,
    /// `K` (state rows).
    pub n: usize,
    /// `V` (state columns).
    pub m: usize,
    /// Rank `R`.
    pub rank: usize,
    /// What to write.
    pub output: DplrOutput,
}

impl<'a, A, X> DplrHeads<'a, A, X>
where
    A: Storage<Compute = A> + Real,
    X: Storage<Compute = A>,
{
    fn dims(&self) -> [usize; 3] {
        [self.batch, self.len, self.heads]
    }

    fn state_shape(&self) -> String {
        format!(
            "[B,H,K,V] = [{},{},{},{}]",
            self.batch, self.heads, self.n, self.m
        )
    }

    fn out_shape(&self) -> String {
        let (b, h, t, n, m) = (self.batch, self.heads, self.len, self.n, self.m);
        match self.output {
            DplrOutput::Readout => format!("[B,H,T,V] = [{b},{h},{t},{m}]"),
            DplrOutput::States => format!("[B,H,T,K,V] = [{b},{h},{t},{n},{m}]"),
        }
    }

    /// Checks sizes, every view and `h0`.
    pub fn check(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("heads", self.heads, 1)?;
        check_min("n", self.n, 1)?;
        check_min("m", self.m, 1)?;
        check_min("rank", self.rank, 1)?;
        let per = crate::mem::checked_product("h0", &[("n", self.n), ("m", self.m)])?;
        let states = crate::mem::checked_product(
            "h0",
            &[("batch", self.batch), ("heads", self.heads), ("n·m", per)],
        )?;
        crate::mem::checked_product("out", &[("states", states), ("len", self.len)])?;
        let rk = crate::mem::checked_product("u", &[("rank", self.rank), ("n", self.n)])?;
        let dims = self.dims();
        self.w.check("w", dims, self.n)?;
        self.u.check("u", dims, rk)?;
        self.v.check("v", dims, rk)?;
        self.k.check("k", dims, self.n)?;
        self.x.check("x", dims, self.m)?;
        match (self.output, self.q) {
            (_, Some(q)) => q.check("q", dims, self.n)?,
            (DplrOutput::Readout, None) => {
                return Err(Error::Unsupported {
                    what: "q = None",
                    by: "a DPLR readout".into(),
                    hint: "pass the queries q, or ask for DplrOutput::States".into(),
                })
            }
            (DplrOutput::States, None) => {}
        }
        if let Some(h0) = self.h0 {
            check_len("h0", h0, states, || self.state_shape())?;
            check_finite("h0", h0)?;
        }
        Ok(())
    }

    /// Scalars of the outputs.
    pub fn out_len(&self) -> usize {
        let per = match self.output {
            DplrOutput::Readout => self.m,
            DplrOutput::States => self.n * self.m,
        };
        self.batch * self.heads * self.len * per
    }

    /// Scalars of `h_T`, `B·H·K·V`.
    pub fn state_len(&self) -> usize {
        self.batch * self.heads * self.n * self.m
    }

    fn shape(&self) -> ScanShape {
        let (n, m, r) = (self.n as f64, self.m as f64, self.rank as f64);
        ScanShape {
            problems: self.batch * self.heads,
            len: self.len,
            fold_cost: 2.0 + r * (n + m) / m,
        }
    }

    /// Runs on `cpu` under `request`: outputs into `out` (`X`), the final
    /// states into `h_last` (`[B,H,K,V]`, `A`). Every check runs first.
    pub fn scan_into(
        &self,
        cpu: &Cpu,
        request: PlanRequest,
        out: &mut [X],
        h_last: &mut [A],
    ) -> Result<Plan> {
        self.check()?;
        let plan = Plan::resolve(request, self.shape(), cpu.threads())?;
        check_len("out", out, self.out_len(), || self.out_shape())?;
        check_len("h_last", h_last, self.state_len(), || self.state_shape())?;
        crate::mem::check_budget("cpu scan scratch", self.scratch_bytes(&plan)?)?;
        let finals = cpu.install_for::<A, _>(|| self.states(&plan, None, self.h0, out));
        h_last.copy_from_slice(&finals);
        Ok(plan)
    }

    /// Host scratch of the chunked engine (the dense aggregates), as the
    /// [`super::dplr::Dplr`] problem of the same shape states it.
    fn scratch_bytes(&self, plan: &Plan) -> Result<usize> {
        let (n, m) = (self.n, self.m);
        let per = n * n + n * m + self.rank * n.max(m) + n + m;
        crate::mem::checked_product(
            "aggregate",
            &[
                ("batch·heads", self.batch * self.heads),
                ("chunks", if plan.chunks <= 1 { 0 } else { plan.chunks }),
                ("n·n + n·m + …", per),
                ("bytes per element", std::mem::size_of::<A>()),
                ("copies", 3),
            ],
        )
    }

    /// The pass: final states `[B, N, H, K, V]` (fla's `[N,H,K,V]` for
    /// `B = 1`), read from and written to that layout; the engine's
    /// sequences are `p = b·H + h`.
    fn states(
        &self,
        plan: &Plan,
        segs: Option<&Segments>,
        h0: Option<&[A]>,
        out: &mut [X],
    ) -> Vec<A> {
        let p = DplrHeads { h0, ..*self };
        let op = DplrHeadsOp { p: &p };
        let (hd, nm) = (self.heads, self.n * self.m);
        let n_seq = segs.map_or(1, |s| s.count());
        // State `(b, s, h)` of `[B,N,H,K,V]`.
        let slot = |p: usize, s: usize| ((p / hd) * n_seq + s) * hd + p % hd;
        let finals = match segs {
            None => scan::run(&op, plan, out),
            Some(segs) => scan::segmented::run(&op, plan, segs, |p, s| op.initial(slot(p, s)), out),
        };
        let mut h = vec![A::zero(); finals.len() * nm];
        for (i, st) in finals.into_iter().enumerate() {
            let j = slot(i / n_seq, i % n_seq);
            h[j * nm..(j + 1) * nm].copy_from_slice(&st.h);
        }
        h
    }
}

/// A dense aggregate `H ↦ M H + N` with the fold's scratch and room for one
/// step's widened `k, x`.
#[derive(Clone, Debug)]
struct HeadsAgg<C> {
    m: Vec<C>,
    n: Vec<C>,
    scratch: Vec<C>,
    kx: Vec<C>,
}

/// A running state with the step's scratch and widened `k, x`.
#[derive(Clone, Debug)]
struct HeadsState<C> {
    h: Vec<C>,
    scratch: Vec<C>,
    kx: Vec<C>,
}

/// One sequence per `(batch, head)`, `p = b·H + h`.
struct DplrHeadsOp<'p, 'a, A, X> {
    p: &'p DplrHeads<'a, A, X>,
}

impl<A, X> DplrHeadsOp<'_, '_, A, X>
where
    A: Storage<Compute = A> + Real,
    X: Storage<Compute = A>,
{
    /// `w, u, v` of step `t` of sequence `p`, and its `k, x` widened into
    /// `kx` (`K + V` values).
    #[inline(always)]
    fn inputs<'s>(&'s self, p: usize, t: usize, kx: &mut [A]) -> (&'s [A], &'s [A], &'s [A]) {
        let (hd, n, m, r) = (self.p.heads, self.p.n, self.p.m, self.p.rank);
        let (b, h) = (p / hd, p % hd);
        for (d, s) in kx[..n].iter_mut().zip(self.p.k.row(b, t, h, n)) {
            *d = s.load();
        }
        for (d, s) in kx[n..n + m].iter_mut().zip(self.p.x.row(b, t, h, m)) {
            *d = s.load();
        }
        (
            self.p.w.row(b, t, h, n),
            self.p.u.row(b, t, h, r * n),
            self.p.v.row(b, t, h, r * n),
        )
    }

    fn state(&self, h: Vec<A>) -> HeadsState<A> {
        HeadsState {
            h,
            scratch: vec![A::zero(); self.p.rank * self.p.m],
            kx: vec![A::zero(); self.p.n + self.p.m],
        }
    }

    fn agg(&self, with_scratch: bool) -> HeadsAgg<A> {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        let s = if with_scratch { r * n.max(m) } else { 0 };
        let kx = if with_scratch { n + m } else { 0 };
        HeadsAgg {
            m: vec![A::zero(); n * n],
            n: vec![A::zero(); n * m],
            scratch: vec![A::zero(); s],
            kx: vec![A::zero(); kx],
        }
    }
}

impl<A, X> ScanOp for DplrHeadsOp<'_, '_, A, X>
where
    A: Storage<Compute = A> + Real,
    X: Storage<Compute = A>,
{
    type Agg = HeadsAgg<A>;
    type State = HeadsState<A>;
    type Out = X;

    fn problems(&self) -> usize {
        self.p.batch * self.p.heads
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        match self.p.output {
            DplrOutput::Readout => self.p.m,
            DplrOutput::States => self.p.n * self.p.m,
        }
    }
    fn identity(&self) -> Self::Agg {
        let mut e = self.agg(false);
        dplr::identity(self.p.n, self.p.m, &mut e.m, &mut e.n);
        e
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        let mut e = self.agg(true);
        let (w, u, v) = self.inputs(p, t, &mut e.kx);
        let (k, x) = e.kx.split_at(n);
        dplr::to_dense::<A>(n, m, r, w, u, v, k, x, &mut e.m, &mut e.n);
        e
    }
    fn fold(&self, e: &mut Self::Agg, p: usize, t: usize) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        if e.kx.len() < n + m {
            // Only for aggregates not made by `leaf`.
            e.kx.resize(n + m, A::zero());
            e.scratch.resize(r * n.max(m), A::zero());
        }
        let (w, u, v) = self.inputs(p, t, &mut e.kx);
        let (k, x) = e.kx.split_at(n);
        dplr::fold_step::<A>(n, m, r, w, u, v, k, x, &mut e.m, &mut e.n, &mut e.scratch);
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        let (n, m) = (self.p.n, self.p.m);
        let mut e = self.agg(false);
        dplr::combine(n, m, &e1.m, &e1.n, &e2.m, &e2.n, &mut e.m, &mut e.n);
        e
    }
    fn initial(&self, p: usize) -> Self::State {
        let nm = self.p.n * self.p.m;
        let h = match self.p.h0 {
            Some(h0) => h0[p * nm..(p + 1) * nm].to_vec(),
            None => vec![A::zero(); nm],
        };
        self.state(h)
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        let (n, m) = (self.p.n, self.p.m);
        let mut out = vec![A::zero(); n * m];
        dplr::apply(n, m, &e.m, &e.n, &h.h, &mut out);
        self.state(out)
    }
    #[inline]
    fn advance(&self, st: &mut Self::State, p: usize, t: usize, out: &mut [X]) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        if st.kx.len() < n + m {
            st.kx.resize(n + m, A::zero());
            st.scratch.resize(r * m, A::zero());
        }
        let (w, u, v) = self.inputs(p, t, &mut st.kx);
        let (k, x) = st.kx.split_at(n);
        dplr::step::<A>(n, m, r, w, u, v, k, x, &mut st.h, &mut st.scratch);
        match (self.p.output, self.p.q) {
            (DplrOutput::Readout, Some(q)) => {
                let hd = self.p.heads;
                dplr::readout::<X>(n, m, &st.h, q.row(p / hd, t, p % hd, n), out);
            }
            _ => {
                for (o, &v) in out.iter_mut().zip(&st.h) {
                    *o = X::store(v);
                }
            }
        }
    }
}

impl<A: Storage<Compute = A> + Real> LinearProblem for DplrHeads<'_, A, A> {
    type Out = A;

    fn family(&self) -> &'static str {
        "dplr"
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
    fn check_finite(&self) -> Result<()> {
        let (n, m, rk) = (self.n, self.m, self.rank * self.n);
        let mut views = vec![
            ("w", self.w, n),
            ("u", self.u, rk),
            ("v", self.v, rk),
            ("k", self.k, n),
            ("x", self.x, m),
        ];
        if let Some(q) = self.q {
            views.push(("q", q, n));
        }
        for (arg, view, inner) in views {
            for b in 0..self.batch {
                for t in 0..self.len {
                    for h in 0..self.heads {
                        check_finite(arg, view.row(b, t, h, inner))?;
                    }
                }
            }
        }
        Ok(())
    }
    fn scan_shape(&self) -> ScanShape {
        self.shape()
    }
    fn output_len(&self) -> usize {
        self.out_len()
    }
    fn output_shape(&self) -> String {
        self.out_shape()
    }
    fn final_len(&self) -> usize {
        self.state_len()
    }
    fn final_shape(&self) -> String {
        self.state_shape()
    }
    fn bytes_moved(&self) -> usize {
        let bth = self.batch * self.len * self.heads;
        let q = if self.q.is_some() { self.n } else { 0 };
        let inputs = bth * (2 * self.n + 2 * self.rank * self.n + self.m + q);
        (inputs + self.out_len()) * std::mem::size_of::<A>()
    }
    fn cpu_scratch_bytes(&self, plan: &Plan) -> Result<usize> {
        self.scratch_bytes(plan)
    }
    fn run_cpu(&self, plan: &Plan, out: &mut [A], h_last: &mut [A]) {
        let finals = self.states(plan, None, self.h0, out);
        h_last.copy_from_slice(&finals);
    }
}

impl<A: Storage<Compute = A> + Real> super::varlen::Segmentable for DplrHeads<'_, A, A> {
    /// All heads' states: packed `h0`/`h_T` are `[B, N, H, K, V]`
    /// (fla's `[N,H,K,V]` for `B = 1`).
    fn state_len(&self) -> usize {
        self.heads * self.n * self.m
    }
    fn rows(&self) -> usize {
        self.batch
    }
    fn steps(&self) -> usize {
        self.len
    }
    fn own_h0(&self) -> Option<&[A]> {
        self.h0
    }
    fn run_states(
        &self,
        plan: &Plan,
        segs: Option<&Segments>,
        h0: Option<&[A]>,
        out: &mut [A],
    ) -> Vec<A> {
        self.states(plan, segs, h0, out)
    }
}
