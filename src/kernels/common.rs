//! Helpers every family's kernel orchestration shares: buffer and size
//! checks before a launch, C-int kernel arguments, bit arithmetic of the
//! depth formulas.

use crate::backend::launch::{DeviceBuffer, KernelArg, KernelRunner};
use crate::error::{Error, Result};

/// Round-up of workspace allocations, in bytes: a workspace that grows by
/// a few bytes at a time still reallocates rarely.
pub(crate) const WORKSPACE_GRANULE: usize = 4096;

/// Makes `slot` hold a buffer of `runner`'s backend of at least `bytes`
/// bytes (rounded up to `granule`), reallocating only when the present one
/// is too small or belongs to another backend; counts reallocations in
/// `allocations`. `bytes = 0` leaves the slot as it is.
pub(crate) fn grow_slot<R: KernelRunner>(
    runner: &R,
    slot: &mut Option<DeviceBuffer>,
    bytes: usize,
    granule: usize,
    allocations: &mut usize,
) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let fits = slot
        .as_ref()
        .is_some_and(|buf| buf.backend_name() == runner.backend_name() && buf.len_bytes() >= bytes);
    if !fits {
        // Free the old buffer first (stream-ordered on CUDA).
        *slot = None;
        let size = bytes.checked_next_multiple_of(granule).unwrap_or(bytes);
        *slot = Some(runner.alloc(size)?);
        *allocations += 1;
    }
    Ok(())
}

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
