//! Host allocations sized by user input, done fallibly.
//!
//! Every buffer whose size comes from a caller's shape (outputs, Newton
//! iterates, scratch) goes through [`try_vec`]: the element count is a
//! checked product, the byte count is checked against a budget
//! ([`host_budget`], the machine's physical memory unless set with
//! [`set_host_budget`]), and the allocation itself uses
//! `Vec::try_reserve_exact`. A request that cannot be met becomes
//! [`Error::OutOfMemory`] naming the buffer, instead of an abort inside the
//! allocator (or, with overcommit, an OOM kill long after the call).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{human_bytes, Error, Result};

/// 0: not set (use the physical memory).
static BUDGET: AtomicUsize = AtomicUsize::new(0);

/// Multiplies named sizes; overflow is [`Error::Overflow`] naming every
/// factor (never a wrapped or saturated number).
pub fn checked_product(arg: &'static str, factors: &[(&'static str, usize)]) -> Result<usize> {
    factors
        .iter()
        .try_fold(1usize, |acc, &(_, v)| acc.checked_mul(v))
        .ok_or_else(|| Error::Overflow {
            arg,
            factors: factors.to_vec(),
        })
}

/// Physical memory of this machine in bytes (`MemTotal`), if known.
fn physical_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The most bytes one input-sized host buffer may take: the value given to
/// [`set_host_budget`], else the machine's physical memory (`usize::MAX`
/// where that is unknown, leaving the allocator to refuse).
pub fn host_budget() -> usize {
    match BUDGET.load(Ordering::Relaxed) {
        0 => physical_memory().unwrap_or(usize::MAX),
        b => b,
    }
}

/// Sets the per-buffer budget of [`host_budget`] for the whole process
/// (`None`: back to the physical memory).
pub fn set_host_budget(bytes: Option<usize>) {
    BUDGET.store(bytes.map_or(0, |b| b.max(1)), Ordering::Relaxed);
}

/// Checks that a buffer of `bytes` fits the budget, without allocating.
pub fn check_budget(buffer: &'static str, bytes: usize) -> Result<()> {
    let budget = host_budget();
    if bytes > budget {
        return Err(Error::OutOfMemory {
            buffer,
            bytes,
            reason: format!(
                "the host memory budget is {} bytes ({})",
                budget,
                human_bytes(budget)
            ),
        });
    }
    Ok(())
}

/// Byte size of `len` elements of `T`, checked.
pub fn bytes_of<T>(buffer: &'static str, len: usize) -> Result<usize> {
    checked_product(
        buffer,
        &[
            ("elements", len),
            ("bytes per element", std::mem::size_of::<T>()),
        ],
    )
}

/// `vec![fill; len]`, or a typed error: [`Error::Overflow`] when the byte
/// count overflows, [`Error::OutOfMemory`] when it exceeds the budget or
/// the allocator refuses.
pub fn try_vec<T: Clone>(buffer: &'static str, len: usize, fill: T) -> Result<Vec<T>> {
    let bytes = bytes_of::<T>(buffer, len)?;
    check_budget(buffer, bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| Error::OutOfMemory {
        buffer,
        bytes,
        reason: format!("the allocator refused ({e})"),
    })?;
    v.resize(len, fill);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_names_the_factors() {
        let e =
            checked_product("x", &[("batch", (1 << 62) + 1), ("len", 4), ("dim", 3)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "argument `x`: batch × len × dim = 4611686018427387905 × 4 × 3 overflows usize"
        );
    }

    #[test]
    fn huge_vec_is_a_typed_error() {
        let e = try_vec("h", 1usize << 60, 0f32).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { buffer: "h", .. }), "{e}");
        let e = try_vec("h", usize::MAX / 2, 0f64).unwrap_err();
        assert!(matches!(e, Error::Overflow { arg: "h", .. }), "{e}");
        assert_eq!(try_vec("h", 3, 1u8).unwrap(), vec![1, 1, 1]);
    }
}
