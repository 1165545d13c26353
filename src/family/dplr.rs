//! DPLR transitions on matrix states: `H_t = A_t H_{t-1} + k_t x_tᵀ` with
//! `A_t = diag(w_t) + Σ_r u_{t,r} v_{t,r}ᵀ` (`n×n`, rank `R`) and
//! `H ∈ R^{n×m}` (row-major).
//!
//! Well-known models are parameterizations of this family:
//! - **DeltaNet** (delta rule, write strength `β_t ∈ (0,1)`, unit key `k_t`):
//!   `w = 1`, `R = 1`, `u = −β k`, `v = k`, so
//!   `A_t = I − β_t k_t k_tᵀ`; with input value `x_t = β_t v_t` this is
//!   `S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ`.
//! - **RWKV-7**: `w = decay`, `u = −κ̂`, `v = κ̂ ⊙ a` (normalized removal key
//!   `κ̂`, in-context learning rate `a`), so
//!   `A_t = diag(w_t) − κ̂_t (κ̂_t ⊙ a_t)ᵀ`.
//!
//! (The RWKV/DeltaNet papers write the state as `m×n` and multiply the
//! transition on the right; here the state is its transpose.)
//!
//! ## The monoid
//!
//! Products of DPLR matrices are not DPLR, so aggregates over more than one
//! step are dense: `M: n×n`, `N: n×m`, the affine map `H ↦ M H + N`, with
//! `combine(e1 earlier, e2 later) = (M2·M1, M2·N1 + N2)`. A single step is
//! never expanded to a dense matrix where it is applied: [`lmul`] applies
//! `A_t` to an `n×c` matrix in `O(R·n·c)`, so the rescan ([`step`], `O(R·n·m)`
//! per step) and the chunk fold ([`fold_step`], `O(R·n·(n+m))` per step) stay
//! cheap; only the Blelloch phase pays `O(n²·(n+m))` per dense [`combine`].
//! The functions mirror `dplr_lmul`, `dplr_step`, `dplr_fold_step`,
//! `dplr_identity`, `dplr_combine`, `dplr_apply` and `dplr_readout` in
//! `kernels/parascan.cuh` one for one, with the same summation order in every
//! dot product (the loops are reordered only where that keeps the order, so
//! that the inner loop runs over contiguous memory).

use super::{check_finite, check_h0, check_len, check_min, product, LinearProblem};
use crate::dtype::{Real, Storage};
use crate::error::{Error, Result};
use crate::scan::plan::ScanShape;
use crate::scan::{self, Plan, ScanOp};
use num_traits::Zero;

/// Which outputs a DPLR scan writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DplrOutput {
    /// `y_t = H_tᵀ q_t`: `[B,T,m]` (needs `q`). The fast path.
    Readout,
    /// Every state `H_t`: `[B,T,n,m]`.
    States,
}

/// A batch of DPLR recurrences on matrix states `H ∈ R^{n×m}`:
/// `H_t = (diag(w_t) + Σ_r u_{t,r} v_{t,r}ᵀ) H_{t-1} + k_t x_tᵀ`.
/// Shapes: `w, k: [B,T,n]`, `u, v: [B,T,R,n]`, `x: [B,T,m]`,
/// `q: [B,T,n]`, `h0: [B,n,m]`. `h_T: [B,n,m]`.
///
/// Outputs: `y: [B,T,m]` for [`DplrOutput::Readout`] (then `q` is required),
/// or every state `H_t: [B,T,n,m]` for [`DplrOutput::States`] (then `q` is
/// not read, not validated and may be `None`); the final state `h_T` always.
/// Any rank `R ≥ 1` runs on the CPU engine.
#[derive(Clone, Copy, Debug)]
pub struct Dplr<'a, S> {
    /// Diagonal part `w_t`.
    pub w: &'a [S],
    /// Low-rank left factors `u_{t,r}`.
    pub u: &'a [S],
    /// Low-rank right factors `v_{t,r}`.
    pub v: &'a [S],
    /// Input keys `k_t`.
    pub k: &'a [S],
    /// Input values `x_t`.
    pub x: &'a [S],
    /// Readout queries `q_t` (required for [`DplrOutput::Readout`]).
    pub q: Option<&'a [S]>,
    /// Initial state `[B,n,m]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// State rows `n`.
    pub n: usize,
    /// State columns `m`.
    pub m: usize,
    /// Rank `R`.
    pub rank: usize,
    /// What to write.
    pub output: DplrOutput,
}

// ---------------------------------------------------------------------------
// The algebra (same functions as kernels/parascan.cuh).
//
// Per-step inputs are read from storage (`&[S]`) and widened on load; states
// and aggregates are in the compute type `C = S::Compute`. `u` and `v` are
// one step's `[R][n]` slices, as in the input layout `[B,T,R,n]`.
// ---------------------------------------------------------------------------

/// `X ← A_t X` for `X` (`n×cols`, row-major), in place, in `O(R·n·cols)`
/// without forming `A_t = diag(w) + Σ_r u_r v_rᵀ`.
///
/// `scratch` must hold at least `R·cols` values: every projection `v_rᵀ X` is
/// taken from the old `X` before any row of `X` is overwritten.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn lmul<S: Storage>(
    n: usize,
    cols: usize,
    rank: usize,
    w: &[S],
    u: &[S],
    v: &[S],
    x_mat: &mut [S::Compute],
    scratch: &mut [S::Compute],
) {
    let zero = S::Compute::zero();
    let (w, u, v) = (&w[..n], &u[..rank * n], &v[..rank * n]);
    let x_mat = &mut x_mat[..n * cols];
    let scratch = &mut scratch[..rank * cols];
    // scratch[r][c] = Σ_i v[r][i]·X[i][c], i ascending.
    for (s_r, v_r) in scratch.chunks_exact_mut(cols).zip(v.chunks_exact(n)) {
        s_r.fill(zero);
        for (v_ri, x_i) in v_r.iter().zip(x_mat.chunks_exact(cols)) {
            let v_ri = v_ri.load();
            for (s, &x) in s_r.iter_mut().zip(x_i) {
                *s = *s + v_ri * x;
            }
        }
    }
    // X[i][c] = w[i]·X[i][c] + Σ_r u[r][i]·scratch[r][c], r ascending.
    for (i, x_i) in x_mat.chunks_exact_mut(cols).enumerate() {
        let w_i = w[i].load();
        for x in x_i.iter_mut() {
            *x = w_i * *x;
        }
        for (s_r, u_r) in scratch.chunks_exact(cols).zip(u.chunks_exact(n)) {
            let u_ri = u_r[i].load();
            for (x, &s) in x_i.iter_mut().zip(s_r) {
                *x = *x + u_ri * s;
            }
        }
    }
}

/// One recurrence step in place: `H ← w ⊙ H + Σ_r u_r (v_rᵀ H) + k xᵀ`
/// (`w ⊙ H` scales row `i` by `w_i`, i.e. `diag(w) H`). `scratch` holds at
/// least `R·m` values.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn step<S: Storage>(
    n: usize,
    m: usize,
    rank: usize,
    w: &[S],
    u: &[S],
    v: &[S],
    k: &[S],
    x: &[S],
    h: &mut [S::Compute],
    scratch: &mut [S::Compute],
) {
    lmul(n, m, rank, w, u, v, h, scratch);
    let x = &x[..m];
    for (h_i, k_i) in h[..n * m].chunks_exact_mut(m).zip(&k[..n]) {
        let k_i = k_i.load();
        for (h, x_j) in h_i.iter_mut().zip(x) {
            *h = *h + k_i * x_j.load();
        }
    }
}

/// Appends one step to a dense aggregate `(M, N)` in place, i.e.
/// `combine(agg, step)` without forming the step densely:
/// `M ← A_t M`, `N ← A_t N + k xᵀ`. `scratch` holds at least `R·max(n, m)`
/// values.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn fold_step<S: Storage>(
    n: usize,
    m: usize,
    rank: usize,
    w: &[S],
    u: &[S],
    v: &[S],
    k: &[S],
    x: &[S],
    agg_m: &mut [S::Compute],
    agg_n: &mut [S::Compute],
    scratch: &mut [S::Compute],
) {
    lmul(n, n, rank, w, u, v, agg_m, scratch);
    step(n, m, rank, w, u, v, k, x, agg_n, scratch);
}

/// The aggregate of zero steps: `M = I` (`n×n`), `N = 0` (`n×m`).
pub fn identity<C: Real>(n: usize, m: usize, agg_m: &mut [C], agg_n: &mut [C]) {
    for (i, row) in agg_m[..n * n].chunks_exact_mut(n).enumerate() {
        for (j, e) in row.iter_mut().enumerate() {
            *e = if i == j { C::one() } else { C::zero() };
        }
    }
    agg_n[..n * m].fill(C::zero());
}

/// One step as a dense aggregate: `M = diag(w) + Σ_r u_r v_rᵀ`, `N = k xᵀ`
/// (the scan's leaf). Equal, to the last bit, to folding the step into
/// [`identity`] with [`fold_step`], in `O(R·n² + n·m)` instead of
/// `O(R·n·(n+m))` plus an identity.
#[allow(clippy::too_many_arguments)]
pub fn to_dense<S: Storage>(
    n: usize,
    m: usize,
    rank: usize,
    w: &[S],
    u: &[S],
    v: &[S],
    k: &[S],
    x: &[S],
    agg_m: &mut [S::Compute],
    agg_n: &mut [S::Compute],
) {
    let zero = S::Compute::zero();
    let (u, v) = (&u[..rank * n], &v[..rank * n]);
    for (i, row) in agg_m[..n * n].chunks_exact_mut(n).enumerate() {
        row.fill(zero);
        row[i] = w[i].load();
        for (u_r, v_r) in u.chunks_exact(n).zip(v.chunks_exact(n)) {
            let u_ri = u_r[i].load();
            for (e, v_rj) in row.iter_mut().zip(v_r) {
                *e = *e + u_ri * v_rj.load();
            }
        }
    }
    for (row, k_i) in agg_n[..n * m].chunks_exact_mut(m).zip(&k[..n]) {
        let k_i = k_i.load();
        for (e, x_j) in row.iter_mut().zip(&x[..m]) {
            *e = k_i * x_j.load();
        }
    }
}

/// Dense aggregates, `e1` earlier and `e2` later:
/// `(M, N) = (M2·M1, M2·N1 + N2)`. Outputs must not alias inputs (which the
/// borrow rules enforce).
#[allow(clippy::too_many_arguments)]
pub fn combine<C: Real>(
    n: usize,
    m: usize,
    m1: &[C],
    n1: &[C],
    m2: &[C],
    n2: &[C],
    m_out: &mut [C],
    n_out: &mut [C],
) {
    let (m1, n1) = (&m1[..n * n], &n1[..n * m]);
    for (i, (m_row, n_row)) in m_out[..n * n]
        .chunks_exact_mut(n)
        .zip(n_out[..n * m].chunks_exact_mut(m))
        .enumerate()
    {
        let m2_row = &m2[i * n..(i + 1) * n];
        // M[i][j] = Σ_l M2[i][l]·M1[l][j] and N[i][j] = N2[i][j] +
        // Σ_l M2[i][l]·N1[l][j], l ascending.
        m_row.fill(C::zero());
        n_row.copy_from_slice(&n2[i * m..(i + 1) * m]);
        for ((&a, m1_l), n1_l) in m2_row
            .iter()
            .zip(m1.chunks_exact(n))
            .zip(n1.chunks_exact(m))
        {
            for (e, &b) in m_row.iter_mut().zip(m1_l) {
                *e = *e + a * b;
            }
            for (e, &b) in n_row.iter_mut().zip(n1_l) {
                *e = *e + a * b;
            }
        }
    }
}

/// `H_out = M·H_in + N` (`H` is `n×m`). `h_out` must not alias `h_in`.
pub fn apply<C: Real>(n: usize, m: usize, agg_m: &[C], agg_n: &[C], h_in: &[C], h_out: &mut [C]) {
    let h_in = &h_in[..n * m];
    for (i, out_row) in h_out[..n * m].chunks_exact_mut(m).enumerate() {
        out_row.copy_from_slice(&agg_n[i * m..(i + 1) * m]);
        for (&a, h_l) in agg_m[i * n..(i + 1) * n].iter().zip(h_in.chunks_exact(m)) {
            for (e, &b) in out_row.iter_mut().zip(h_l) {
                *e = *e + a * b;
            }
        }
    }
}

/// Readout `y = Hᵀ q` (`m` values, `y_j = Σ_i H[i][j]·q_i`, i ascending),
/// rounded once into storage.
#[inline]
pub fn readout<S: Storage>(n: usize, m: usize, h: &[S::Compute], q: &[S], y: &mut [S]) {
    let h = &h[..n * m];
    let q = &q[..n];
    for (j, y_j) in y[..m].iter_mut().enumerate() {
        let mut acc = S::Compute::zero();
        for (i, q_i) in q.iter().enumerate() {
            acc = acc + h[i * m + j] * q_i.load();
        }
        *y_j = S::store(acc);
    }
}

// ---------------------------------------------------------------------------
// The problem.
// ---------------------------------------------------------------------------

impl<'a, S: Storage> Dplr<'a, S> {
    fn btn(&self) -> String {
        format!("[B,T,n] = [{},{},{}]", self.batch, self.len, self.n)
    }
    fn btrn(&self) -> String {
        format!(
            "[B,T,R,n] = [{},{},{},{}]",
            self.batch, self.len, self.rank, self.n
        )
    }
    fn btm(&self) -> String {
        format!("[B,T,m] = [{},{},{}]", self.batch, self.len, self.m)
    }
    fn bnm(&self) -> String {
        format!("[B,n,m] = [{},{},{}]", self.batch, self.n, self.m)
    }
    fn btnm(&self) -> String {
        format!(
            "[B,T,n,m] = [{},{},{},{}]",
            self.batch, self.len, self.n, self.m
        )
    }

    /// `q` when the output mode reads it.
    fn q_used(&self) -> Option<&'a [S]> {
        match self.output {
            DplrOutput::Readout => self.q,
            DplrOutput::States => None,
        }
    }
}

impl<'a, S: Storage> LinearProblem for Dplr<'a, S> {
    type Out = S;

    fn family(&self) -> &'static str {
        "dplr"
    }

    fn validate(&self) -> Result<()> {
        check_min("batch", self.batch, 1)?;
        check_min("len", self.len, 1)?;
        check_min("n", self.n, 1)?;
        check_min("m", self.m, 1)?;
        check_min("rank", self.rank, 1)?;
        let (b, t, n, m, r) = (self.batch, self.len, self.n, self.m, self.rank);
        let btn = product("w", &[("batch", b), ("len", t), ("n", n)])?;
        let btrn = product("u", &[("batch", b), ("len", t), ("rank", r), ("n", n)])?;
        let btm = product("x", &[("batch", b), ("len", t), ("m", m)])?;
        let bnm = product("h0", &[("batch", b), ("n", n), ("m", m)])?;
        check_len("w", self.w, btn, || self.btn())?;
        check_len("u", self.u, btrn, || self.btrn())?;
        check_len("v", self.v, btrn, || self.btrn())?;
        check_len("k", self.k, btn, || self.btn())?;
        check_len("x", self.x, btm, || self.btm())?;
        match self.output {
            DplrOutput::Readout => match self.q {
                Some(q) => check_len("q", q, btn, || self.btn())?,
                None => {
                    return Err(Error::shape(
                        "q",
                        format!("{} (required for the Readout output)", self.btn()),
                        btn,
                        0,
                    ))
                }
            },
            DplrOutput::States => {
                product("out", &[("batch", b), ("len", t), ("n", n), ("m", m)])?;
            }
        }
        check_h0(self.h0, bnm, || self.bnm())
    }

    fn check_finite(&self) -> Result<()> {
        check_finite("w", self.w)?;
        check_finite("u", self.u)?;
        check_finite("v", self.v)?;
        check_finite("k", self.k)?;
        check_finite("x", self.x)?;
        if let Some(q) = self.q_used() {
            check_finite("q", q)?;
        }
        Ok(())
    }

    fn scan_shape(&self) -> ScanShape {
        // Fold: R·n·(n+m) multiply-adds on the dense n×n and n×m aggregate
        // against (R+3)·n·m for a step on the state; the dense aggregate also
        // streams through memory. Measured on 2 cores (n = m = 16, R = 1) the
        // chunked scan ran 2× slower than the sequential loop, a fold of ~3
        // steps, which `2 + R·(n+m)/m` reproduces.
        let (n, m, r) = (self.n as f64, self.m as f64, self.rank as f64);
        let fold_cost = 2.0 + r * (n + m) / m;
        ScanShape {
            problems: self.batch,
            len: self.len,
            fold_cost,
        }
    }

    fn output_len(&self) -> usize {
        match self.output {
            DplrOutput::Readout => self.batch * self.len * self.m,
            DplrOutput::States => self.batch * self.len * self.n * self.m,
        }
    }
    fn output_shape(&self) -> String {
        match self.output {
            DplrOutput::Readout => self.btm(),
            DplrOutput::States => self.btnm(),
        }
    }
    fn final_len(&self) -> usize {
        self.batch * self.n * self.m
    }
    fn final_shape(&self) -> String {
        self.bnm()
    }
    /// `w, k` (and `q` for the readout): `B·T·n` each; `u, v`: `B·T·R·n`
    /// each; `x`: `B·T·m`; plus the output written (`h_0` and `h_T` are not
    /// counted, as for the other families).
    fn bytes_moved(&self) -> usize {
        let btn = self.batch * self.len * self.n;
        let vecs = if self.q_used().is_some() { 3 } else { 2 };
        let inputs = vecs * btn + 2 * btn * self.rank + self.batch * self.len * self.m;
        (inputs + self.output_len()) * std::mem::size_of::<S>()
    }

    fn cpu_scratch_bytes(&self, plan: &Plan) -> Result<usize> {
        let (n, m, r) = (self.n, self.m, self.rank);
        let c = std::mem::size_of::<S::Compute>();
        // One running state `H` (+ projections) per sequence, always.
        let state = product("h_T", &[("batch", self.batch), ("n", n), ("m", m)])?
            .checked_add(product(
                "h_T",
                &[("batch", self.batch), ("rank", r), ("m", m)],
            )?)
            .and_then(|s| s.checked_mul(c));
        let state = state.ok_or(Error::Overflow {
            arg: "h_T",
            factors: vec![
                ("batch", self.batch),
                ("n + rank", n.saturating_add(r)),
                ("m", m),
            ],
        })?;
        if plan.chunks <= 1 {
            return Ok(state);
        }
        // Chunk aggregates `M: n×n`, `N: n×m` and the fold's projections,
        // held about three times (aggregates, Blelloch tree, carries).
        let nn = product("aggregate", &[("n", n), ("n", n)])?;
        let nm = product("aggregate", &[("n", n), ("m", m)])?;
        let rs = product("aggregate", &[("rank", r), ("max(n, m)", n.max(m))])?;
        let per = nn
            .checked_add(nm)
            .and_then(|x| x.checked_add(rs))
            .ok_or(Error::Overflow {
                arg: "aggregate",
                factors: vec![
                    ("n", n),
                    ("n + m + rank", n.saturating_add(m).saturating_add(r)),
                ],
            })?;
        let aggs = product(
            "aggregate",
            &[
                ("batch", self.batch),
                ("chunks", plan.chunks),
                ("n·n + n·m + rank·max(n, m)", per),
                ("bytes per element", c),
                ("copies", 3),
            ],
        )?;
        Ok(aggs.saturating_add(state))
    }

    fn run_cpu_reverse(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) -> Result<()> {
        let finals = scan::run_reverse(&DplrOp { p: self }, plan, out);
        for (dst, st) in h_last.chunks_mut(self.n * self.m).zip(finals) {
            for (d, &v) in dst.iter_mut().zip(&st.h) {
                *d = S::store(v);
            }
        }
        Ok(())
    }

    fn run_cpu(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) {
        let op = DplrOp { p: self };
        let finals = scan::run(&op, plan, out);
        for (dst, st) in h_last.chunks_mut(self.n * self.m).zip(finals) {
            for (d, &v) in dst.iter_mut().zip(&st.h) {
                *d = S::store(v);
            }
        }
    }
}

/// A dense chunk aggregate `H ↦ M H + N`.
#[derive(Clone, Debug)]
struct DenseAgg<C> {
    /// `M`: `n×n`, row-major.
    m: Vec<C>,
    /// `N`: `n×m`, row-major.
    n: Vec<C>,
    /// Room for [`fold_step`]'s projections (`R·max(n, m)`), allocated by the
    /// leaf that starts a chunk so that folding never allocates; empty in
    /// aggregates that are only combined.
    scratch: Vec<C>,
}

/// A running state `H` (`n×m`, row-major) with [`step`]'s scratch (`R·m`).
#[derive(Clone, Debug)]
struct DplrState<C> {
    /// `H`.
    h: Vec<C>,
    scratch: Vec<C>,
}

/// One sequence per batch row; elements are dense aggregates.
struct DplrOp<'p, 'a, S> {
    p: &'p Dplr<'a, S>,
}

/// One step's inputs: `w, k, q: [n]`, `u, v: [R][n]`, `x: [m]`.
struct StepIn<'s, S> {
    w: &'s [S],
    u: &'s [S],
    v: &'s [S],
    k: &'s [S],
    x: &'s [S],
}

impl<S: Storage> DplrOp<'_, '_, S> {
    #[inline(always)]
    fn inputs(&self, p: usize, t: usize) -> StepIn<'_, S> {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        let i = p * self.p.len + t;
        StepIn {
            w: &self.p.w[i * n..(i + 1) * n],
            u: &self.p.u[i * r * n..(i + 1) * r * n],
            v: &self.p.v[i * r * n..(i + 1) * r * n],
            k: &self.p.k[i * n..(i + 1) * n],
            x: &self.p.x[i * m..(i + 1) * m],
        }
    }

    fn state(&self, h: Vec<S::Compute>) -> DplrState<S::Compute> {
        DplrState {
            h,
            scratch: vec![S::Compute::zero(); self.p.rank * self.p.m],
        }
    }
}

impl<S: Storage> ScanOp for DplrOp<'_, '_, S> {
    type Agg = DenseAgg<S::Compute>;
    type State = DplrState<S::Compute>;
    type Out = S;

    fn problems(&self) -> usize {
        self.p.batch
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
        let (n, m) = (self.p.n, self.p.m);
        let mut agg = DenseAgg {
            m: vec![S::Compute::zero(); n * n],
            n: vec![S::Compute::zero(); n * m],
            scratch: Vec::new(),
        };
        identity(n, m, &mut agg.m, &mut agg.n);
        agg
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        let s = self.inputs(p, t);
        let mut agg = DenseAgg {
            m: vec![S::Compute::zero(); n * n],
            n: vec![S::Compute::zero(); n * m],
            scratch: vec![S::Compute::zero(); r * n.max(m)],
        };
        to_dense(n, m, r, s.w, s.u, s.v, s.k, s.x, &mut agg.m, &mut agg.n);
        agg
    }
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        let need = r * n.max(m);
        if agg.scratch.len() < need {
            // Only for aggregates not made by `leaf` (the engine folds into
            // leaves only): allocate once, then reuse.
            agg.scratch.resize(need, S::Compute::zero());
        }
        let s = self.inputs(p, t);
        fold_step(
            n,
            m,
            r,
            s.w,
            s.u,
            s.v,
            s.k,
            s.x,
            &mut agg.m,
            &mut agg.n,
            &mut agg.scratch,
        );
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        let (n, m) = (self.p.n, self.p.m);
        let mut agg = DenseAgg {
            m: vec![S::Compute::zero(); n * n],
            n: vec![S::Compute::zero(); n * m],
            scratch: Vec::new(),
        };
        combine(n, m, &e1.m, &e1.n, &e2.m, &e2.n, &mut agg.m, &mut agg.n);
        agg
    }
    fn initial(&self, p: usize) -> Self::State {
        let nm = self.p.n * self.p.m;
        let h = match self.p.h0 {
            Some(h0) => h0[p * nm..(p + 1) * nm].iter().map(|x| x.load()).collect(),
            None => vec![S::Compute::zero(); nm],
        };
        self.state(h)
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        let (n, m) = (self.p.n, self.p.m);
        let mut out = vec![S::Compute::zero(); n * m];
        apply(n, m, &e.m, &e.n, &h.h, &mut out);
        self.state(out)
    }
    #[inline]
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S]) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        if h.scratch.len() < r * m {
            h.scratch.resize(r * m, S::Compute::zero());
        }
        let s = self.inputs(p, t);
        step(n, m, r, s.w, s.u, s.v, s.k, s.x, &mut h.h, &mut h.scratch);
        match self.p.output {
            DplrOutput::Readout => {
                let q = self.p.q.expect("validated: Readout has q");
                let i = p * self.p.len + t;
                readout(n, m, &h.h, &q[i * n..(i + 1) * n], out);
            }
            DplrOutput::States => {
                for (o, &v) in out.iter_mut().zip(&h.h) {
                    *o = S::store(v);
                }
            }
        }
    }
}

impl<S: Storage> super::varlen::Segmentable for Dplr<'_, S> {
    fn state_len(&self) -> usize {
        self.n * self.m
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
        let p = Dplr { h0, ..*self };
        let op = DplrOp { p: &p };
        // `initial(i)` reads state i of `h0`, here `[B·N, n, m]`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_equals_identity_then_fold_bitwise() {
        let (n, m, r) = (3, 2, 2);
        let w = [0.9f32, -0.7, 0.55];
        let u = [0.1f32, -0.3, 0.2, 0.05, 0.4, -0.25];
        let v = [0.6f32, 0.2, -0.1, -0.35, 0.15, 0.45];
        let k = [1.0f32, -0.5, 0.25];
        let x = [0.3f32, -1.1];
        let (mut m1, mut n1) = (vec![0.0f32; n * n], vec![0.0f32; n * m]);
        to_dense(n, m, r, &w, &u, &v, &k, &x, &mut m1, &mut n1);
        let (mut m2, mut n2) = (vec![0.0f32; n * n], vec![0.0f32; n * m]);
        identity(n, m, &mut m2, &mut n2);
        let mut scratch = vec![0.0f32; r * n.max(m)];
        fold_step(n, m, r, &w, &u, &v, &k, &x, &mut m2, &mut n2, &mut scratch);
        assert_eq!(m1, m2);
        assert_eq!(n1, n2);
    }
}
