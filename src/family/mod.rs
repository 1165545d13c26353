//! Transition families: each one's problem description (shapes, layouts,
//! validation) and its monoid as a [`crate::scan::ScanOp`].
//!
//! | family | `A_t` | inputs |
//! |---|---|---|
//! | [`diagonal::Diagonal`] | `diag(a_t)` | `a, b: [B,T,D]` or `[B,D,T]` |
//! | [`perm_diagonal::PermDiagonal`] | `(A h)_i = d_i h_{π(i)}` | `perm, d, b: [B,T,n]` |
//! | [`block_diagonal::BlockDiagonal`] | `nb` dense `k×k` blocks | `A: [B,T,nb,k,k]`, `b: [B,T,n]` |
//! | [`dplr::Dplr`] | `diag(w) + Σ_r u_r v_rᵀ` on `H ∈ R^{n×m}` | `w, k, q: [B,T,n]`, `u, v: [B,T,R,n]`, `x: [B,T,m]` |

pub mod block_diagonal;
pub mod diagonal;
pub mod dplr;
pub mod heads;
pub mod perm_diagonal;
mod perm_small;
pub mod varlen;

use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::scan::plan::ScanShape;
use crate::scan::Plan;

/// Memory layout of per-step tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Layout {
    /// `[B,T,…]`: time-major inside a batch row, the state contiguous.
    /// Every family accepts it.
    Btd,
    /// `[B,D,T]`: each channel's sequence contiguous (Mamba-1,
    /// accelerated-scan). Diagonal only.
    Bdt,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Btd => "[B,T,D]",
            Layout::Bdt => "[B,D,T]",
        })
    }
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "btd" | "[b,t,d]" => Ok(Layout::Btd),
            "bdt" | "[b,d,t]" => Ok(Layout::Bdt),
            other => Err(Error::Layout {
                family: "any",
                layout: other.into(),
                expected: "btd or bdt".into(),
            }),
        }
    }
}

/// A validated-before-use linear recurrence problem that the CPU engine can
/// run. Implemented by every family's problem type.
pub trait LinearProblem: Sync {
    /// Storage scalar of outputs (and inputs).
    type Out: Copy + Send + Sync + Default;
    /// Family name for reports (`diagonal`, `perm-diagonal`, ...).
    fn family(&self) -> &'static str;
    /// Checks every shape and index; cheap (no pass over values except
    /// integer indices that a kernel would dereference).
    fn validate(&self) -> Result<()>;
    /// Checks that every floating-point input is finite (one pass over the
    /// data; not done by [`LinearProblem::validate`]).
    fn check_finite(&self) -> Result<()>;
    /// The planner's view of the problem.
    fn scan_shape(&self) -> ScanShape;
    /// Scalars the output buffer must hold.
    fn output_len(&self) -> usize;
    /// Shape of the output buffer, in words (for errors).
    fn output_shape(&self) -> String;
    /// Scalars the final-state buffer `h_T` must hold.
    fn final_len(&self) -> usize;
    /// Shape of the final-state buffer, in words.
    fn final_shape(&self) -> String;
    /// Bytes one pass must move: every input read once, every output written
    /// once (the bandwidth yardstick).
    fn bytes_moved(&self) -> usize;
    /// Bytes of host scratch the CPU engine allocates under `plan` beyond
    /// the inputs and outputs (checked; 0 unless the family's aggregates or
    /// states can outgrow its inputs, as DPLR's dense `n×n` ones do).
    fn cpu_scratch_bytes(&self, _plan: &Plan) -> Result<usize> {
        Ok(0)
    }
    /// Runs the CPU engine. `out`, `h_last` have the lengths above and
    /// `validate` has passed.
    fn run_cpu(&self, plan: &Plan, out: &mut [Self::Out], h_last: &mut [Self::Out]);
    /// Runs the CPU engine right to left ([`crate::scan::run_reverse`]):
    /// `h_t = A_t h_{t+1} + b_t` for `t = T−1, …, 0` from `h0` as the state
    /// after the last step; `out` holds every `h_t` (or its readout) at
    /// step `t`'s place and `h_last` the state at `t = 0`. The default says
    /// the family has no reverse scan; every built-in family has one.
    fn run_cpu_reverse(
        &self,
        _plan: &Plan,
        _out: &mut [Self::Out],
        _h_last: &mut [Self::Out],
    ) -> Result<()> {
        Err(Error::Unsupported {
            what: "reverse scan",
            by: format!("the {} family", self.family()),
            hint: "implement LinearProblem::run_cpu_reverse".into(),
        })
    }
}

/// Checks that `buf` holds exactly `expected` elements.
pub(crate) fn check_len<T>(
    arg: &'static str,
    buf: &[T],
    expected: usize,
    shape: impl Fn() -> String,
) -> Result<()> {
    if buf.len() != expected {
        return Err(Error::shape(arg, shape(), expected, buf.len()));
    }
    Ok(())
}

/// Checks that a size is at least `min`.
pub(crate) fn check_min(arg: &'static str, v: usize, min: usize) -> Result<()> {
    if v < min {
        return Err(Error::size(arg, v, format!("≥ {min}")));
    }
    Ok(())
}

/// Checks an optional initial state: `expected` elements, all finite.
pub(crate) fn check_h0<S: Storage>(
    h0: Option<&[S]>,
    expected: usize,
    shape: impl Fn() -> String,
) -> Result<()> {
    match h0 {
        Some(h0) => {
            check_len("h0", h0, expected, shape)?;
            check_finite("h0", h0)
        }
        None => Ok(()),
    }
}

/// Checks that every element of `buf` is finite.
pub(crate) fn check_finite<S: Storage>(arg: &'static str, buf: &[S]) -> Result<()> {
    match buf.iter().position(|x| !x.to_f64().is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite {
            arg,
            index: i,
            value: format!("{:?}", buf[i]),
        }),
    }
}

/// Multiplies named sizes, reporting overflow with every factor on `arg`.
pub(crate) fn product(arg: &'static str, dims: &[(&'static str, usize)]) -> Result<usize> {
    crate::mem::checked_product(arg, dims)
}
