//! PLACEHOLDER — the DPLR helper replaces the body; the struct's fields are
//! the agreed public API.

/// Which outputs a DPLR scan writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
