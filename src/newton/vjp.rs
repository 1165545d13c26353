//! Vector-Jacobian products of the built-in cells' steps (with respect to
//! the input `x` and the recurrent weights), for the backward pass. Each
//! differentiates the forward formula of [`super::cell`] by hand; the tests
//! compare them with central finite differences.

use super::cell::{DiagGru, DiagLstm, Elman, Parity};
use crate::dtype::Real;

fn sigmoid<T: Real>(z: T) -> T {
    T::one() / (T::one() + (-z).exp())
}

/// [`DiagGru`]: `dx = [dx_z | dx_r | dx_c]`, `dp += [da_z | da_r | da_c]`.
pub(crate) fn diag_gru<T: Real>(
    cell: &DiagGru<T>,
    h: &[T],
    x: &[T],
    g: &[T],
    dx: &mut [T],
    dp: &mut [T],
) {
    let (az, ar, ac) = (cell.a_z(), cell.a_r(), cell.a_c());
    let n = az.len();
    let one = T::one();
    for i in 0..n {
        let (hi, gi) = (h[i], g[i]);
        let z = sigmoid(x[i] + az[i] * hi);
        let r = sigmoid(x[n + i] + ar[i] * hi);
        let c = (x[2 * n + i] + ac[i] * (r * hi)).tanh();
        // out = (1 − z)·h + z·c.
        let pre_z = gi * (c - hi) * z * (one - z);
        let pre_c = gi * z * (one - c * c);
        let pre_r = pre_c * ac[i] * hi * r * (one - r);
        dx[i] = pre_z;
        dx[n + i] = pre_r;
        dx[2 * n + i] = pre_c;
        dp[i] = dp[i] + pre_z * hi;
        dp[n + i] = dp[n + i] + pre_r * hi;
        dp[2 * n + i] = dp[2 * n + i] + pre_c * r * hi;
    }
}

/// [`DiagLstm`]: state `[c_0, h_0, …]`, `dx = [dx_f | dx_o | dx_g]`,
/// `dp += [da_f | da_o | da_g]`.
pub(crate) fn diag_lstm<T: Real>(
    cell: &DiagLstm<T>,
    st: &[T],
    x: &[T],
    g: &[T],
    dx: &mut [T],
    dp: &mut [T],
) {
    let (af, ao, ag) = (cell.a_f(), cell.a_o(), cell.a_g());
    let n = af.len();
    let one = T::one();
    for i in 0..n {
        let (c, h) = (st[2 * i], st[2 * i + 1]);
        let (gc2, gh2) = (g[2 * i], g[2 * i + 1]);
        let f = sigmoid(x[i] + af[i] * h);
        let o = sigmoid(x[n + i] + ao[i] * h);
        let gg = (x[2 * n + i] + ag[i] * h).tanh();
        let c2 = f * c + (one - f) * gg;
        let tc = c2.tanh();
        // h' = o·tanh(c'), c' = f·c + (1 − f)·g.
        let gc = gc2 + gh2 * o * (one - tc * tc);
        let pre_f = gc * (c - gg) * f * (one - f);
        let pre_o = gh2 * tc * o * (one - o);
        let pre_g = gc * (one - f) * (one - gg * gg);
        dx[i] = pre_f;
        dx[n + i] = pre_o;
        dx[2 * n + i] = pre_g;
        dp[i] = dp[i] + pre_f * h;
        dp[n + i] = dp[n + i] + pre_o * h;
        dp[2 * n + i] = dp[2 * n + i] + pre_g * h;
    }
}

/// [`Elman`]: `dx = (1 − y²)⊙g`, `dp[i·n + j] += dx_i·h_j`.
pub(crate) fn elman<T: Real>(
    cell: &Elman<T>,
    h: &[T],
    x: &[T],
    g: &[T],
    dx: &mut [T],
    dp: &mut [T],
) {
    let (n, w) = (cell.n(), cell.w());
    for i in 0..n {
        let row = &w[i * n..(i + 1) * n];
        let y = row
            .iter()
            .zip(h)
            .fold(x[i], |acc, (&w, &h)| acc + w * h)
            .tanh();
        let pre = g[i] * (T::one() - y * y);
        dx[i] = pre;
        for (d, &hj) in dp[i * n..(i + 1) * n].iter_mut().zip(h) {
            *d = *d + pre * hj;
        }
    }
}

/// [`Parity`]: `dx = g·β·σ'·(1 − 2h)` (no trainable weights).
pub(crate) fn parity<T: Real>(cell: &Parity<T>, h: &[T], x: &[T], g: &[T], dx: &mut [T]) {
    let one = T::one();
    let two = one + one;
    let beta = cell.beta();
    for i in 0..cell.n() {
        let s = sigmoid(beta * (x[i] + h[i] - two * x[i] * h[i] - one / two));
        dx[i] = g[i] * beta * s * (one - s) * (one - two * h[i]);
    }
}
