//! PermDiagonal problems with `u16` or `u32` permutation indices on the
//! kernels.
//!
//! The PD kernels index with `u8` (`n ≤ 256`, [`super::perm_diagonal::MAX_N`]).
//! A `u16`/`u32` problem with `n ≤ 256` runs on them: its rows are checked
//! (as for any PD problem) and narrowed to `u8` on the host, one pass over
//! `perm` before the upload (`B·T·n` bytes of host scratch). A larger `n` is
//! [`Error::Size`] on `n` naming the kernels' limit, before anything is
//! uploaded; the CPU engine runs it. So every index type has a
//! [`KernelScan`](super::KernelScan) and an [`Engine`](crate::backend::Engine)
//! run, never a compile-time gap.

use super::perm_diagonal::MAX_N;
use super::{KernelOutputs, KernelPlanSummary, KernelScan, PreparedLaunches};
use crate::backend::launch::KernelRunner;
use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// Validates `p` (shapes and every row), checks `n` against the kernels'
/// limit and returns `perm` as `u8`.
fn narrow<S: Storage, P: PermIndex>(p: &PermDiagonal<'_, S, P>) -> Result<Vec<u8>> {
    if p.n > MAX_N {
        return Err(Error::size(
            "n",
            p.n,
            format!(
                "1 ≤ n ≤ {MAX_N} on the PermDiagonal kernels (they index with u8; \
                 {} permutations with n ≤ {MAX_N} are narrowed on the host, \
                 larger n runs on the CPU engine)",
                std::any::type_name::<P>()
            ),
        ));
    }
    p.validate()?;
    let mut perm = crate::mem::try_vec("perm", p.perm.len(), 0u8)?;
    for (d, s) in perm.iter_mut().zip(p.perm) {
        // Every index is < n ≤ 256 (validated above).
        *d = s.index() as u8;
    }
    Ok(perm)
}

macro_rules! wide_index {
    ($($idx:ty),*) => {$(
        impl<S: Storage + bytemuck::Pod> KernelScan for PermDiagonal<'_, S, $idx> {
            type Elem = S;

            fn kernel_plan(&self, sm_count: usize, request: PlanRequest) -> Result<KernelPlanSummary> {
                let perm = narrow(self)?;
                PermDiagonal { perm: &perm[..], d: self.d, b: self.b, h0: self.h0, batch: self.batch, len: self.len, n: self.n }
                    .kernel_plan(sm_count, request)
            }

            fn kernel_scan<R: KernelRunner>(&self, runner: &R, request: PlanRequest) -> Result<KernelOutputs<S>> {
                let perm = narrow(self)?;
                PermDiagonal { perm: &perm[..], d: self.d, b: self.b, h0: self.h0, batch: self.batch, len: self.len, n: self.n }
                    .kernel_scan(runner, request)
            }

            fn kernel_depth<R: KernelRunner>(&self, runner: &R, request: PlanRequest) -> Result<u64> {
                let perm = narrow(self)?;
                PermDiagonal { perm: &perm[..], d: self.d, b: self.b, h0: self.h0, batch: self.batch, len: self.len, n: self.n }
                    .kernel_depth(runner, request)
            }

            fn kernel_prepare<'r, R: KernelRunner>(
                &self,
                runner: &'r R,
                request: PlanRequest,
            ) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)> {
                let perm = narrow(self)?;
                // The prepared launches own their device copies; the
                // narrowed host rows are dropped here.
                PermDiagonal { perm: &perm[..], d: self.d, b: self.b, h0: self.h0, batch: self.batch, len: self.len, n: self.n }
                    .kernel_prepare(runner, request)
            }
        }
    )*};
}

wide_index!(u16, u32);
