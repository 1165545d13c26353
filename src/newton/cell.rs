//! Nonlinear recurrent cells `h_t = f(h_{t-1}, x_t)` with exact Jacobians.
//!
//! Inputs are pre-projected: `x_t` already holds `W x + bias` (the input
//! GEMM is the caller's), so a cell only does the recurrent part. Every
//! built-in cell has a CUDA twin in `kernels/newton.cu`; the formulas there
//! and here are the same code, line for line.
//!
//! On the CPU the `f32` cells evaluate `exp`, `tanh` and the sigmoid with
//! [`crate::vmath`] (branch-free, a few ulps, see its error table) through
//! [`Real::cell_exp`] and friends, and every per-unit loop is written so
//! that it vectorizes across the state dimension; the loops are compiled
//! for AVX2 as well and picked at run time (one binary for any x86-64).
//! The `f32` [`DiagGru`] has its own AVX2+FMA path with no divisions
//! ([`super::gru_avx2`], error bounds there), taken when the CPU has
//! those features.

use crate::dtype::Real;
use crate::error::{Error, Result};
use crate::simd::{same_type, same_type_mut};

/// Which structure `∂f/∂h` has, which decides the scan family of a Newton
/// iteration and the layout of the Jacobian buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// `n` diagonal entries: a Diagonal scan.
    Diagonal,
    /// `n/k` dense `k×k` blocks, row-major `[n/k, k, k]`: a BlockDiagonal(k) scan.
    Block {
        /// Block size `k` (divides the state size).
        k: usize,
    },
    /// One dense `n×n` matrix, row-major: a Dense (BlockDiagonal(n)) scan.
    Dense,
}

impl Structure {
    /// Block size `k` of this structure for state size `n` (1 for diagonal).
    pub fn block(self, n: usize) -> usize {
        match self {
            Structure::Diagonal => 1,
            Structure::Block { k } => k,
            Structure::Dense => n,
        }
    }

    /// Scalars of one step's Jacobian for state size `n`.
    pub fn len(self, n: usize) -> usize {
        n * self.block(n)
    }
}

/// A recurrent cell `h' = f(h, x)`: what the Newton solver needs on the CPU.
///
/// Implement it for your own cell to solve it with
/// [`solve`](super::solve); `step_jacobian` must return the exact
/// `∂f/∂h` (the tests of the built-in cells compare it with central finite
/// differences, and the same check is a good idea for yours).
pub trait Cell<T: Real>: Sync {
    /// Short name for reports (`diag-gru`, ...).
    fn name(&self) -> &str;
    /// State size `n` (scalars per step of `h`).
    fn state_dim(&self) -> usize;
    /// Input size per step (scalars per step of `x`).
    fn input_dim(&self) -> usize;
    /// Structure of `∂f/∂h`.
    fn structure(&self) -> Structure;
    /// `out = f(h, x)`; `h, out: [n]`, `x: [input_dim]`.
    fn step(&self, h: &[T], x: &[T], out: &mut [T]);
    /// `out = f(h, x)` and `jac = ∂f/∂h` in the layout of
    /// [`Cell::structure`] (`[n]`, `[n/k,k,k]` or `[n,n]`, row-major).
    fn step_jacobian(&self, h: &[T], x: &[T], out: &mut [T], jac: &mut [T]);
    /// `out = f(h, x)` and the diagonal of `∂f/∂h` (`diag: [n]`), for
    /// quasi-Newton. The default extracts it from [`Cell::step_jacobian`].
    /// Number of trainable weights this cell exposes to
    /// [`Cell::step_vjp`] (0 by default).
    fn param_count(&self) -> usize {
        0
    }
    /// The vector-Jacobian product of one step, for the backward pass
    /// ([`backward()`](super::backward())): given the cotangent `g = ∂L/∂out`
    /// of `out = f(h, x)` (`[n]`), write `dx = (∂f/∂x)ᵀ g`
    /// (`[input_dim]`) and *add* `(∂f/∂θ)ᵀ g` into `dparams`
    /// (`[param_count]`, in the cell's documented weight order). The
    /// default returns [`Error::Unsupported`], so a cell without it can be
    /// solved but not differentiated.
    fn step_vjp(
        &self,
        _h: &[T],
        _x: &[T],
        _g: &[T],
        _dx: &mut [T],
        _dparams: &mut [T],
    ) -> Result<()> {
        Err(Error::Unsupported {
            what: "Cell::step_vjp",
            by: format!("the cell `{}`", self.name()),
            hint: "implement Cell::param_count and Cell::step_vjp to differentiate it".into(),
        })
    }
    fn step_jacobian_diag(&self, h: &[T], x: &[T], out: &mut [T], diag: &mut [T]) {
        let n = self.state_dim();
        let s = self.structure();
        let k = s.block(n);
        let mut jac = vec![T::zero(); s.len(n)];
        self.step_jacobian(h, x, out, &mut jac);
        for (i, d) in diag.iter_mut().enumerate().take(n) {
            // Entry (i, i) of the block holding row i.
            let (blk, r) = (i / k, i % k);
            *d = jac[blk * k * k + r * k + r];
        }
    }
}

#[inline(always)]
fn sigmoid<T: Real>(z: T) -> T {
    z.cell_sigmoid()
}

fn check_params<T: Real>(name: &'static str, v: &[T], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(Error::shape(name, format!("[{n}]"), n, v.len()));
    }
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::NonFinite {
            arg: name,
            index: i,
            value: format!("{x:?}"),
        });
    }
    Ok(())
}

/// ParaRNN's GRU with diagonal recurrent weights, state `h: [n]`, input
/// `x_t = [x_z | x_r | x_c]: [3n]`:
///
/// `z = σ(x_z + a_z⊙h)`, `r = σ(x_r + a_r⊙h)`,
/// `c = tanh(x_c + a_c⊙(r⊙h))`, `h' = (1−z)⊙h + z⊙c`.
///
/// The Jacobian is diagonal. Contractive when `|a_*|` are small (below ~1).
///
/// The weights are private so that a cell is consistent by construction
/// ([`DiagGru::new`] checks them); read them with the accessors.
#[derive(Clone, Debug)]
pub struct DiagGru<T> {
    a_z: Vec<T>,
    a_r: Vec<T>,
    a_c: Vec<T>,
}

impl<T: Real> DiagGru<T> {
    /// A cell of `n = a_z.len()` units; all three weights must be `[n]` and finite.
    pub fn new(a_z: Vec<T>, a_r: Vec<T>, a_c: Vec<T>) -> Result<Self> {
        let n = a_z.len();
        if n == 0 {
            return Err(Error::size("a_z", 0, "at least one unit"));
        }
        check_params("a_z", &a_z, n)?;
        check_params("a_r", &a_r, n)?;
        check_params("a_c", &a_c, n)?;
        Ok(Self { a_z, a_r, a_c })
    }

    /// Recurrent weight of the update gate, `[n]`.
    pub fn a_z(&self) -> &[T] {
        &self.a_z
    }
    /// Recurrent weight of the reset gate, `[n]`.
    pub fn a_r(&self) -> &[T] {
        &self.a_r
    }
    /// Recurrent weight of the candidate, `[n]`.
    pub fn a_c(&self) -> &[T] {
        &self.a_c
    }
}

/// One GRU unit: `(h', ∂h'/∂h)` from its weights, state and three inputs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_unit<T: Real>(az: T, ar: T, ac: T, h: T, xz: T, xr: T, xc: T) -> (T, T) {
    let one = T::one();
    let z = sigmoid(xz + az * h);
    let r = sigmoid(xr + ar * h);
    let c = (xc + ac * (r * h)).cell_tanh();
    let out = (one - z) * h + z * c;
    let dz = z * (one - z) * az;
    let dr = r * (one - r) * ar;
    let dc = (one - c * c) * ac * (r + h * dr);
    let jac = (one - z) + (c - h) * dz + z * dc;
    (out, jac)
}

/// `out = f(h, x)` (and `jac = ∂f/∂h` when `JAC`) for every unit: one loop
/// over equal-length slices, which the compiler vectorizes.
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn gru_units<T: Real, const JAC: bool>(
    w: [&[T]; 3],
    h: &[T],
    x: &[T],
    out: &mut [T],
    jac: &mut [T],
) {
    let n = out.len();
    let (az, ar, ac, h) = (&w[0][..n], &w[1][..n], &w[2][..n], &h[..n]);
    let (xz, xr, xc) = (&x[..n], &x[n..2 * n], &x[2 * n..3 * n]);
    if JAC {
        let jac = &mut jac[..n];
        for i in 0..n {
            (out[i], jac[i]) = gru_unit(az[i], ar[i], ac[i], h[i], xz[i], xr[i], xc[i]);
        }
    } else {
        for i in 0..n {
            out[i] = gru_unit(az[i], ar[i], ac[i], h[i], xz[i], xr[i], xc[i]).0;
        }
    }
}

#[inline(always)]
fn gru_f_body<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T]) {
    gru_units::<T, false>(w, h, x, out, &mut []);
}

#[inline(always)]
fn gru_fj_body<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    gru_units::<T, true>(w, h, x, out, jac);
}

crate::simd::multiversion!(fn gru_f<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T]) => gru_f_body);
crate::simd::multiversion!(fn gru_fj<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) => gru_fj_body);

impl<T: Real> DiagGru<T> {
    fn weights(&self) -> [&[T]; 3] {
        [&self.a_z, &self.a_r, &self.a_c]
    }

    /// The weights when `T` is `f32` (for the AVX2 cell).
    fn weights_f32(&self) -> Option<[&[f32]; 3]> {
        Some([
            same_type::<T, f32>(&self.a_z)?,
            same_type::<T, f32>(&self.a_r)?,
            same_type::<T, f32>(&self.a_c)?,
        ])
    }
}

impl<T: Real> Cell<T> for DiagGru<T> {
    fn name(&self) -> &str {
        "diag-gru"
    }
    fn state_dim(&self) -> usize {
        self.a_z.len()
    }
    fn input_dim(&self) -> usize {
        3 * self.a_z.len()
    }
    fn structure(&self) -> Structure {
        Structure::Diagonal
    }
    fn step(&self, h: &[T], x: &[T], out: &mut [T]) {
        if let (Some(w), Some(h), Some(x), Some(out)) = (
            self.weights_f32(),
            same_type::<T, f32>(h),
            same_type::<T, f32>(x),
            same_type_mut::<T, f32>(out),
        ) {
            if super::gru_avx2::run(w, h, x, out, None) {
                return;
            }
        }
        gru_f(self.weights(), h, x, out);
    }
    fn step_jacobian(&self, h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
        if let (Some(w), Some(h), Some(x), Some(out), Some(jac)) = (
            self.weights_f32(),
            same_type::<T, f32>(h),
            same_type::<T, f32>(x),
            same_type_mut::<T, f32>(out),
            same_type_mut::<T, f32>(jac),
        ) {
            if super::gru_avx2::run(w, h, x, out, Some(jac)) {
                return;
            }
        }
        gru_fj(self.weights(), h, x, out, jac);
    }
    fn step_jacobian_diag(&self, h: &[T], x: &[T], out: &mut [T], diag: &mut [T]) {
        self.step_jacobian(h, x, out, diag);
    }
    /// `[a_z | a_r | a_c]`, `3n`.
    fn param_count(&self) -> usize {
        3 * self.a_z.len()
    }
    fn step_vjp(&self, h: &[T], x: &[T], g: &[T], dx: &mut [T], dp: &mut [T]) -> Result<()> {
        super::vjp::diag_gru(self, h, x, g, dx, dp);
        Ok(())
    }
}

/// LSTM with coupled input/forget gates and diagonal recurrence. `n`
/// units; the state interleaves them, `h = [c_0, h_0, c_1, h_1, …]: [2n]`,
/// so each unit's `(c, h)` is one 2×2 Jacobian block. Input
/// `x_t = [x_f | x_o | x_g]: [3n]`:
///
/// `f = σ(x_f + a_f⊙h)`, `o = σ(x_o + a_o⊙h)`, `g = tanh(x_g + a_g⊙h)`,
/// `c' = f⊙c + (1−f)⊙g`, `h' = o⊙tanh(c')`.
///
/// The weights are private (consistent by construction, see
/// [`DiagLstm::new`]); read them with the accessors.
#[derive(Clone, Debug)]
pub struct DiagLstm<T> {
    a_f: Vec<T>,
    a_o: Vec<T>,
    a_g: Vec<T>,
}

impl<T: Real> DiagLstm<T> {
    /// A cell of `n = a_f.len()` units (state size `2n`).
    pub fn new(a_f: Vec<T>, a_o: Vec<T>, a_g: Vec<T>) -> Result<Self> {
        let n = a_f.len();
        if n == 0 {
            return Err(Error::size("a_f", 0, "at least one unit"));
        }
        check_params("a_f", &a_f, n)?;
        check_params("a_o", &a_o, n)?;
        check_params("a_g", &a_g, n)?;
        Ok(Self { a_f, a_o, a_g })
    }

    /// Recurrent weight of the forget gate, `[n]`.
    pub fn a_f(&self) -> &[T] {
        &self.a_f
    }
    /// Recurrent weight of the output gate, `[n]`.
    pub fn a_o(&self) -> &[T] {
        &self.a_o
    }
    /// Recurrent weight of the cell input, `[n]`.
    pub fn a_g(&self) -> &[T] {
        &self.a_g
    }

    fn weights(&self) -> [&[T]; 3] {
        [&self.a_f, &self.a_o, &self.a_g]
    }
}

/// One LSTM unit: `(c', h')` and the block
/// `[[∂c'/∂c, ∂c'/∂h], [∂h'/∂c, ∂h'/∂h]]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_unit<T: Real>(af: T, ao: T, ag: T, c: T, h: T, xf: T, xo: T, xg: T) -> ((T, T), [T; 4]) {
    let one = T::one();
    let f = sigmoid(xf + af * h);
    let o = sigmoid(xo + ao * h);
    let g = (xg + ag * h).cell_tanh();
    let c2 = f * c + (one - f) * g;
    let tc = c2.cell_tanh();
    let h2 = o * tc;
    let df = f * (one - f) * af;
    let dog = o * (one - o) * ao;
    let dg = (one - g * g) * ag;
    let dc_dc = f;
    let dc_dh = (c - g) * df + (one - f) * dg;
    let dt = o * (one - tc * tc);
    let dh_dc = dt * dc_dc;
    let dh_dh = dog * tc + dt * dc_dh;
    ((c2, h2), [dc_dc, dc_dh, dh_dc, dh_dh])
}

/// What a cell loop writes besides `f`.
const F_ONLY: u8 = 0;
/// ... and the full Jacobian in the cell's structure.
const FULL: u8 = 1;
/// ... and the Jacobian's diagonal.
const DIAG: u8 = 2;

/// Every LSTM unit in one loop over equal-length slices (vectorizes; the
/// interleaved `(c, h)` pairs become shuffles).
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn lstm_units<T: Real, const MODE: u8>(
    w: [&[T]; 3],
    h: &[T],
    x: &[T],
    out: &mut [T],
    jac: &mut [T],
) {
    let n = w[0].len();
    let (af, ao, ag) = (&w[0][..n], &w[1][..n], &w[2][..n]);
    let (xf, xo, xg) = (&x[..n], &x[n..2 * n], &x[2 * n..3 * n]);
    let (h, out) = (&h[..2 * n], &mut out[..2 * n]);
    let jac = match MODE {
        FULL => &mut jac[..4 * n],
        DIAG => &mut jac[..2 * n],
        _ => &mut jac[..0],
    };
    for i in 0..n {
        let ((c2, h2), blk) = lstm_unit(
            af[i],
            ao[i],
            ag[i],
            h[2 * i],
            h[2 * i + 1],
            xf[i],
            xo[i],
            xg[i],
        );
        out[2 * i] = c2;
        out[2 * i + 1] = h2;
        if MODE == FULL {
            jac[4 * i..4 * i + 4].copy_from_slice(&blk);
        } else if MODE == DIAG {
            jac[2 * i] = blk[0];
            jac[2 * i + 1] = blk[3];
        }
    }
}

#[inline(always)]
fn lstm_f_body<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T]) {
    lstm_units::<T, F_ONLY>(w, h, x, out, &mut []);
}
#[inline(always)]
fn lstm_fj_body<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    lstm_units::<T, FULL>(w, h, x, out, jac);
}
#[inline(always)]
fn lstm_fd_body<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    lstm_units::<T, DIAG>(w, h, x, out, jac);
}
crate::simd::multiversion!(fn lstm_f<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T]) => lstm_f_body);
crate::simd::multiversion!(fn lstm_fj<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) => lstm_fj_body);
crate::simd::multiversion!(fn lstm_fd<T: Real>(w: [&[T]; 3], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) => lstm_fd_body);

impl<T: Real> Cell<T> for DiagLstm<T> {
    fn name(&self) -> &str {
        "diag-lstm"
    }
    fn state_dim(&self) -> usize {
        2 * self.a_f.len()
    }
    fn input_dim(&self) -> usize {
        3 * self.a_f.len()
    }
    fn structure(&self) -> Structure {
        Structure::Block { k: 2 }
    }
    fn step(&self, h: &[T], x: &[T], out: &mut [T]) {
        lstm_f(self.weights(), h, x, out);
    }
    fn step_jacobian(&self, h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
        lstm_fj(self.weights(), h, x, out, jac);
    }
    fn step_jacobian_diag(&self, h: &[T], x: &[T], out: &mut [T], diag: &mut [T]) {
        lstm_fd(self.weights(), h, x, out, diag);
    }
    /// `[a_f | a_o | a_g]`, `3n` (`n` units).
    fn param_count(&self) -> usize {
        3 * self.a_f.len()
    }
    fn step_vjp(&self, h: &[T], x: &[T], g: &[T], dx: &mut [T], dp: &mut [T]) -> Result<()> {
        super::vjp::diag_lstm(self, h, x, g, dx, dp);
        Ok(())
    }
}

/// Elman RNN `h' = tanh(W h + x)` with a dense recurrent matrix
/// `W: [n, n]` (row-major) and input `x_t: [n]`. The Jacobian
/// `diag(1 − h'²) W` is dense (DEER); quasi-Newton keeps its diagonal
/// (quasi-DEER). Fields are private: [`Elman::new`] checks `w` against `n`.
#[derive(Clone, Debug)]
pub struct Elman<T> {
    n: usize,
    w: Vec<T>,
}

impl<T: Real> Elman<T> {
    /// A cell with state size `n`; `w` must be `[n, n]` and finite.
    pub fn new(n: usize, w: Vec<T>) -> Result<Self> {
        if n == 0 {
            return Err(Error::size("n", 0, "at least 1"));
        }
        let nn = crate::mem::checked_product("w", &[("n", n), ("n", n)])?;
        if w.len() != nn {
            return Err(Error::shape("w", format!("[{n}, {n}]"), nn, w.len()));
        }
        check_params("w", &w, nn)?;
        Ok(Self { n, w })
    }

    /// State size `n`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Recurrent matrix, `[n, n]` row-major.
    pub fn w(&self) -> &[T] {
        &self.w
    }
}

/// `a · b` over equal lengths with eight independent partial sums (so the
/// products run in vector lanes; the order of the additions is fixed, not
/// data- or CPU-dependent).
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const L: usize = 8;
    let mut acc = [T::zero(); L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (ca, cb) in ac.zip(bc) {
        for l in 0..L {
            acc[l] = acc[l] + ca[l] * cb[l];
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        acc[l] = acc[l] + x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `out = tanh(W h + x)` and the Jacobian per `MODE`, `W: [n, n]` row-major.
#[inline(always)]
fn elman_units<T: Real, const MODE: u8>(w: &[T], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    let n = out.len();
    let (w, h, x) = (&w[..n * n], &h[..n], &x[..n]);
    for (i, o) in out.iter_mut().enumerate() {
        *o = x[i] + dot(&w[i * n..(i + 1) * n], h);
    }
    for o in out.iter_mut() {
        *o = o.cell_tanh();
    }
    if MODE == FULL {
        for ((&y, jrow), wrow) in out
            .iter()
            .zip(jac.chunks_exact_mut(n))
            .zip(w.chunks_exact(n))
        {
            let s = T::one() - y * y;
            for (j, &wv) in jrow.iter_mut().zip(wrow) {
                *j = s * wv;
            }
        }
    } else if MODE == DIAG {
        for (i, (&y, d)) in out.iter().zip(jac.iter_mut()).enumerate() {
            *d = (T::one() - y * y) * w[i * n + i];
        }
    }
}

#[inline(always)]
fn elman_f_body<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T]) {
    elman_units::<T, F_ONLY>(w, h, x, out, &mut []);
}
#[inline(always)]
fn elman_fj_body<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    elman_units::<T, FULL>(w, h, x, out, jac);
}
#[inline(always)]
fn elman_fd_body<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
    elman_units::<T, DIAG>(w, h, x, out, jac);
}
crate::simd::multiversion!(fn elman_f<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T]) => elman_f_body);
crate::simd::multiversion!(fn elman_fj<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) => elman_fj_body);
crate::simd::multiversion!(fn elman_fd<T: Real>(w: &[T], h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) => elman_fd_body);

impl<T: Real> Cell<T> for Elman<T> {
    fn name(&self) -> &str {
        "elman"
    }
    fn state_dim(&self) -> usize {
        self.n
    }
    fn input_dim(&self) -> usize {
        self.n
    }
    fn structure(&self) -> Structure {
        Structure::Dense
    }
    fn step(&self, h: &[T], x: &[T], out: &mut [T]) {
        elman_f(&self.w, h, x, &mut out[..self.n]);
    }
    fn step_jacobian(&self, h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
        elman_fj(&self.w, h, x, &mut out[..self.n], jac);
    }
    fn step_jacobian_diag(&self, h: &[T], x: &[T], out: &mut [T], diag: &mut [T]) {
        elman_fd(&self.w, h, x, &mut out[..self.n], diag);
    }
    /// `W`, `n·n` row-major.
    fn param_count(&self) -> usize {
        self.n * self.n
    }
    fn step_vjp(&self, h: &[T], x: &[T], g: &[T], dx: &mut [T], dp: &mut [T]) -> Result<()> {
        super::vjp::elman(self, h, x, g, dx, dp);
        Ok(())
    }
}

/// A steep-sigmoid parity machine, the "hard" cell: state `h: [n]` near
/// 0 or 1, input bits `x_t: [n]`, and
///
/// `h' = σ(β·(x + h − 2·x·h − ½))`,
///
/// a smooth `h' = h XOR x` (copy when `x = 0`, flip when `x = 1`). Each
/// state depends on every earlier input, yet in the saturated regime the
/// Jacobian `β·σ'·(1 − 2x)` is nearly zero, so a Newton linearization
/// around a wrong guess carries almost no information from step to step:
/// the iteration count grows with `T` (about one step of the sequence
/// fixed per iteration), as the paper predicts for nonlinear RNNs whose
/// state carries information over arbitrary distances. `β = 20` by
/// default.
#[derive(Clone, Debug)]
pub struct Parity<T> {
    n: usize,
    beta: T,
}

impl<T: Real> Parity<T> {
    /// A parity machine of `n` units with steepness `beta`.
    pub fn new(n: usize, beta: T) -> Result<Self> {
        if n == 0 {
            return Err(Error::size("n", 0, "at least 1"));
        }
        if !(beta.is_finite() && beta > T::zero()) {
            return Err(Error::NonFinite {
                arg: "beta",
                index: 0,
                value: format!("{beta:?} (expected a finite value > 0)"),
            });
        }
        Ok(Self { n, beta })
    }

    /// Units.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Steepness `β > 0`.
    pub fn beta(&self) -> T {
        self.beta
    }

    #[inline]
    fn unit(&self, h: T, x: T) -> (T, T) {
        let one = T::one();
        let two = one + one;
        let half = one / two;
        let s = sigmoid(self.beta * (x + h - two * x * h - half));
        (s, self.beta * s * (one - s) * (one - two * x))
    }
}

impl<T: Real> Cell<T> for Parity<T> {
    fn name(&self) -> &str {
        "parity"
    }
    fn state_dim(&self) -> usize {
        self.n
    }
    fn input_dim(&self) -> usize {
        self.n
    }
    fn structure(&self) -> Structure {
        Structure::Diagonal
    }
    fn step(&self, h: &[T], x: &[T], out: &mut [T]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.unit(h[i], x[i]).0;
        }
    }
    fn step_jacobian(&self, h: &[T], x: &[T], out: &mut [T], jac: &mut [T]) {
        for i in 0..out.len() {
            (out[i], jac[i]) = self.unit(h[i], x[i]);
        }
    }
    fn step_jacobian_diag(&self, h: &[T], x: &[T], out: &mut [T], diag: &mut [T]) {
        self.step_jacobian(h, x, out, diag);
    }
    fn step_vjp(&self, h: &[T], x: &[T], g: &[T], dx: &mut [T], _dp: &mut [T]) -> Result<()> {
        super::vjp::parity(self, h, x, g, dx);
        Ok(())
    }
}
