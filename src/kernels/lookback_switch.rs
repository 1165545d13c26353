//! The process-wide switch that keeps `Auto` off the single-pass look-back
//! plans (P4 of Diagonal and PermDiagonal, and so Newton's fused pass):
//! the environment variable `PARASCAN_NO_LOOKBACK`.
//!
//! The look-back is the only plan whose blocks wait for other blocks. On a
//! device where it hangs (a fault the spin cap did not turn into a launch
//! error) the device bundle's run sets this variable after the first
//! timeout, so that the rest of the run (the `Auto` plans, the fused Newton
//! pass, `parascan bench`) still measures every other plan. An explicit
//! [`PlanRequest::LookBack`](crate::PlanRequest::LookBack) is not affected:
//! it asks for the look-back by name.

use std::sync::OnceLock;

/// Name of the environment variable. Any value but empty or `0` keeps
/// `Auto` off the look-back (and `parascan bench` drops its look-back rows).
pub const NO_LOOKBACK_ENV: &str = "PARASCAN_NO_LOOKBACK";

/// Whether `Auto` may pick a look-back plan in this process. Read once, on
/// the first plan: a process plans consistently from start to end.
pub fn auto_lookback_allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        !std::env::var_os(NO_LOOKBACK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
    })
}
