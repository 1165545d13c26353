//! Helpers every family's planner shares: C-int kernel arguments, launch
//! shapes, and the bit arithmetic of the depth formulas (Blelloch prefix
//! depths).

use crate::backend::launch::{KernelArg, LaunchConfig};
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

/// `⌊log2 x⌋ + 1` (0 for `x = 0`): the number of significant bits.
pub(crate) fn bit_length(x: u64) -> u64 {
    u64::from(64 - x.leading_zeros())
}

/// `P(L, i)`: depth of the Blelloch exclusive prefix of leaf `i` over
/// leaves of depth `L`.
pub(crate) fn prefix_depth(l: u64, i: u64) -> u64 {
    if i == 0 {
        0
    } else {
        l + highest_bit(i) + u64::from(i.count_ones())
    }
}

/// `max_{1 ≤ i ≤ m} hb(i) + pc(i)` for `m ≥ 1`, in O(log m): every `i < m`
/// is dominated (bitwise, hence in both `hb` and `pc`) by `m` with one set
/// bit cleared and all bits below it set.
pub(crate) fn max_hb_pc(m: u64) -> u64 {
    let score = |x: u64| highest_bit(x) + u64::from(x.count_ones());
    let mut best = score(m);
    let mut bits = m;
    while bits != 0 {
        let k = bits.trailing_zeros();
        bits &= bits - 1;
        let x = (m & !(1u64 << k)) | ((1u64 << k) - 1);
        if x >= 1 {
            best = best.max(score(x));
        }
    }
    best
}

/// `max_{0 ≤ i < n} P(L, i)`.
pub(crate) fn max_prefix_depth(l: u64, n: u64) -> u64 {
    if n <= 1 {
        0
    } else {
        l + max_hb_pc(n - 1)
    }
}

/// The launch shape of `kernel`: `grid` blocks (x, y, z) of `block` threads
/// and `shared` bytes of dynamic shared memory, checked against CUDA's
/// limits (a plan error naming the kernel: the shape is too large for the
/// plan).
pub(crate) fn launch_config(
    kernel: &str,
    grid: [u64; 3],
    block: u32,
    shared: u64,
) -> Result<LaunchConfig> {
    let too_large =
        |what: String| Error::Plan(format!("{kernel}: {what} (shape too large for this plan)"));
    let dim = |x: u64| {
        u32::try_from(x)
            .map_err(|_| too_large(format!("a grid of {grid:?} blocks exceeds CUDA's limits")))
    };
    let shared =
        u32::try_from(shared).map_err(|_| too_large(format!("{shared} bytes of shared memory")))?;
    let cfg = LaunchConfig {
        grid: [dim(grid[0])?, dim(grid[1])?, dim(grid[2])?],
        block: [block, 1, 1],
        shared_bytes: shared,
    };
    cfg.validate().map_err(too_large)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_hb_pc_matches_brute_force() {
        let score = |x: u64| highest_bit(x) + u64::from(x.count_ones());
        let mut best = 0;
        for m in 1..5000u64 {
            best = best.max(score(m));
            assert_eq!(max_hb_pc(m), best, "m = {m}");
        }
    }
}
