//! What a solve reports: iterations, residuals, depth and where time went.

/// How each iteration builds its linear recurrence `h_t = A_t h_{t-1} + b_t`
/// with `b_t = f(h^k_{t-1}, x_t) − A_t h^k_{t-1}`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Mode {
    /// `A_t = J_t`, the exact Jacobian (DEER, ParaRNN): the scan of the
    /// Jacobian's family (Diagonal, BlockDiagonal(k) or Dense).
    Newton,
    /// `A_t = diag(J_t)` (quasi-DEER, ELK): always a Diagonal scan; more
    /// iterations when `J_t` is not diagonal, each one cheaper.
    QuasiNewton,
    /// `A_t = 0` (Picard/Jacobi): `h^{k+1}_t = f(h^k_{t-1}, x_t)`, no scan.
    Picard,
    /// ELK-style damping: `A_t = J_t / (1 + shrink)`, then
    /// `h ← h + relax·(h_new − h)`. `shrink ≥ 0`, `relax ∈ (0, 1]`; with
    /// `relax = 1` the first `k` states are still exact after `k` iterations.
    Damped {
        /// Jacobian shrink `λ ≥ 0`.
        shrink: f64,
        /// Relaxation factor `ω ∈ (0, 1]`.
        relax: f64,
    },
    /// The sequential loop (depth `T`): the reference and the fallback.
    Sequential,
}

impl Mode {
    /// Short name (`newton`, `quasi`, `picard`, `damped`, `sequential`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Newton => "newton",
            Mode::QuasiNewton => "quasi",
            Mode::Picard => "picard",
            Mode::Damped { .. } => "damped",
            Mode::Sequential => "sequential",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Damped { shrink, relax } => write!(f, "damped(shrink={shrink},relax={relax})"),
            m => f.write_str(m.name()),
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    /// `newton`, `quasi`, `picard`, `sequential`, or `damped` (shrink 1,
    /// relax 1) / `damped:SHRINK:RELAX`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "unknown Newton mode `{s}`: expected newton, quasi, picard, sequential, damped or damped:SHRINK:RELAX"
            )
        };
        match s {
            "newton" => Ok(Mode::Newton),
            "quasi" | "quasi-newton" => Ok(Mode::QuasiNewton),
            "picard" | "jacobi" => Ok(Mode::Picard),
            "sequential" => Ok(Mode::Sequential),
            "damped" => Ok(Mode::Damped {
                shrink: 1.0,
                relax: 1.0,
            }),
            _ => {
                let rest = s.strip_prefix("damped:").ok_or_else(bad)?;
                let (a, b) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Mode::Damped {
                    shrink: a.parse().map_err(|_| bad())?,
                    relax: b.parse().map_err(|_| bad())?,
                })
            }
        }
    }
}

/// Why a solve stopped.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum StopReason {
    /// The residual met `atol + rtol·max|h|`.
    Tolerance,
    /// `max_iters` iterations ran without meeting the tolerance.
    MaxIters,
    /// Divergence was detected (the reason) and the sequential loop ran.
    Fallback(String),
    /// The mode was [`Mode::Sequential`].
    Sequential,
    /// A fixed number of iterations ran without reading the residual
    /// (`Iterations::Fixed` of the kernel solver): no convergence verdict.
    Fixed,
}

/// Report of one solve.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SolveReport {
    /// Cell name.
    pub cell: String,
    /// Mode used.
    pub mode: Mode,
    /// `(B, T, n)`.
    pub shape: (usize, usize, usize),
    /// Linear solves (scans) performed; at most `T` for undamped modes.
    pub iterations: usize,
    /// `max_t |h_t − f(h_{t-1}, x_t)|` at every iterate: entry 0 is the
    /// initial guess, entry `i` the result of iteration `i`.
    pub residuals: Vec<f64>,
    /// The stopping tolerance `atol + rtol·max|h|` at the last check.
    pub tolerance: f64,
    /// Whether the returned states meet the tolerance (or are the
    /// sequential loop's).
    pub converged: bool,
    /// Why the solve stopped.
    pub stop: StopReason,
    /// Whether the sequential fallback produced the states.
    pub fell_back: bool,
    /// Whether each iteration evaluated the cell inside the scan (one pass
    /// per iteration: the kernels' `DiagGru` on a `[B,T,n]` look-back
    /// plan); then the pass's time counts as scan time.
    pub fused: bool,
    /// Measured depth of each iteration's scan (combines on the critical
    /// path, from the engine run over depth counters).
    pub scan_depths: Vec<u64>,
    /// Total depth: scan depths plus the parallel steps of every
    /// evaluation and check (see [`parallel_steps`](super::parallel_steps)),
    /// plus `T` if the sequential loop ran.
    pub depth: u64,
    /// Seconds evaluating the cell, its Jacobian and the scan inputs.
    pub cell_s: f64,
    /// Seconds in the scans.
    pub scan_s: f64,
    /// Seconds in the convergence checks (the residual reduction).
    pub check_s: f64,
}

impl SolveReport {
    pub(crate) fn new(cell: &str, mode: Mode, batch: usize, len: usize, n: usize) -> Self {
        Self {
            cell: cell.to_string(),
            mode,
            shape: (batch, len, n),
            iterations: 0,
            residuals: Vec::new(),
            tolerance: 0.0,
            converged: false,
            stop: StopReason::MaxIters,
            fell_back: false,
            fused: false,
            scan_depths: Vec::new(),
            depth: 0,
            cell_s: 0.0,
            scan_s: 0.0,
            check_s: 0.0,
        }
    }

    /// Total seconds.
    pub fn total_s(&self) -> f64 {
        self.cell_s + self.scan_s + self.check_s
    }
}

/// What [`Error::Diverged`](crate::Error::Diverged) carries.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Diverged {
    /// Cell name.
    pub cell: String,
    /// Mode used.
    pub mode: Mode,
    /// What was detected.
    pub reason: String,
    /// Residual at every iterate (as [`SolveReport::residuals`]).
    pub residuals: Vec<f64>,
    /// The smallest finite residual seen.
    pub best_residual: f64,
    /// The iterate with that residual, `[B, T, n]`, widened to f64.
    pub best_iterate: Vec<f64>,
}
