//! Helpers every family's planner shares: C-int kernel arguments, launch
//! shapes, and the bit arithmetic of the depth formulas (Blelloch prefix
//! depths).

use crate::backend::launch::{KernelArg, LaunchConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// One instantiation of a family's kernels: a storage dtype or the
/// depth-counting kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelType {
    Data(DType),
    Depth,
}

impl KernelType {
    /// The suffix of the `extern "C"` names: `f32`, `f64`, `f16`, `bf16`,
    /// `depth`.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            KernelType::Data(d) => d.name(),
            KernelType::Depth => "depth",
        }
    }

    /// Bytes of one compute value (aggregates, carries): f64 for f64
    /// storage, f32 for the other dtypes, a `u32` counter for depth.
    pub(crate) fn value_bytes(self) -> usize {
        match self {
            KernelType::Data(DType::F64) => 8,
            _ => 4,
        }
    }

    /// Whether storage and compute types differ (f16, bf16).
    pub(crate) fn is_16bit(self) -> bool {
        matches!(self, KernelType::Data(DType::F16 | DType::Bf16))
    }
}

/// A family's kernel names (`N`: one instantiation's names) for every
/// [`KernelType`] and direction, built by [`name_table!`].
pub(crate) struct NameTable<N: 'static> {
    /// f32, f64, f16, bf16, depth.
    pub(crate) forward: [N; 5],
    /// The same order, the `_rev_` kernels.
    pub(crate) reverse: [N; 5],
}

impl<N> NameTable<N> {
    pub(crate) fn get(&self, kt: KernelType, reverse: bool) -> &N {
        let i = match kt {
            KernelType::Data(d) => dtype_index(d),
            KernelType::Depth => 4,
        };
        if reverse {
            &self.reverse[i]
        } else {
            &self.forward[i]
        }
    }
}

/// The position of `dtype` in the tables of kernel names: f32, f64, f16,
/// bf16 (as [`dtype_table!`] and [`name_table!`] order them).
pub(crate) fn dtype_index(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 0,
        DType::F64 => 1,
        DType::F16 => 2,
        DType::Bf16 => 3,
    }
}

/// The names of one family macro's kernels for every storage dtype, in
/// [`dtype_index`] order: `$names!("f32")` names one instantiation's.
macro_rules! dtype_table {
    ($names:ident) => {
        [
            $names!("f32"),
            $names!("f64"),
            $names!("f16"),
            $names!("bf16"),
        ]
    };
}
pub(crate) use dtype_table;

/// A [`NameTable`] from a family macro: `$names!("f32")` names the forward
/// kernels of one instantiation, `$names!("f32", "rev_")` the reverse ones.
macro_rules! name_table {
    ($names:ident) => {
        $crate::kernels::common::NameTable {
            forward: [
                $names!("f32"),
                $names!("f64"),
                $names!("f16"),
                $names!("bf16"),
                $names!("depth"),
            ],
            reverse: [
                $names!("f32", "rev_"),
                $names!("f64", "rev_"),
                $names!("f16", "rev_"),
                $names!("bf16", "rev_"),
                $names!("depth", "rev_"),
            ],
        }
    };
}
pub(crate) use name_table;

/// Declares a family's plan-kind enum: each variant with its contract label
/// (`"P0"` …) and name, `label()`, `name()`, and `Display` as both.
macro_rules! plan_kinds {
    (
        $(#[$meta:meta])*
        pub enum $kind:ident {
            $( $(#[$vmeta:meta])* $variant:ident = ($label:literal, $name:literal), )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $kind {
            $( $(#[$vmeta])* $variant, )*
        }

        impl $kind {
            /// The contract's label: `"P0"`, `"P1"`, ….
            pub fn label(self) -> &'static str {
                match self {
                    $( $kind::$variant => $label, )*
                }
            }

            /// The plan's name, e.g. `"single-pass"`.
            pub fn name(self) -> &'static str {
                match self {
                    $( $kind::$variant => $name, )*
                }
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} {}", self.label(), self.name())
            }
        }
    };
}
pub(crate) use plan_kinds;

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
