//! Helpers every family's planner shares: C-int kernel arguments and the
//! bit arithmetic of the depth formulas.

use crate::backend::launch::KernelArg;
use crate::error::{Error, Result};

/// Checks that a size passed to a kernel as a C `int` is in `1..=2^31 − 1`.
pub(crate) fn check_int(arg: &'static str, v: usize) -> Result<()> {
    if v == 0 || v > i32::MAX as usize {
        return Err(Error::size(arg, v, "1 ≤ value ≤ 2^31 − 1 (a C int)"));
    }
    Ok(())
}

/// A size as a C `int` kernel argument (checked by [`check_int`] before).
pub(crate) fn i32_arg(v: usize) -> KernelArg {
    // Every size was checked to be a C int by the planner.
    KernelArg::I32(i32::try_from(v).unwrap_or(i32::MAX))
}

/// `⌊log2 x⌋` for `x ≥ 1` (the `hb` of the depth formulas).
pub(crate) fn highest_bit(x: u64) -> u64 {
    u64::from(63 - x.leading_zeros())
}

/// `⌈log2 x⌉` (0 for `x ≤ 1`).
pub(crate) fn ceil_log2(x: usize) -> u64 {
    u64::from(usize::BITS - (x.max(1) - 1).leading_zeros())
}
