//! PermDiagonal problems with `u16` or `u32` permutation indices on the
//! kernels.
//!
//! The PD kernels index with `u8` (`n ≤ 256`, [`super::perm_diagonal::MAX_N`]).
//! A `u16`/`u32` problem with `n ≤ 256` runs on them: its rows are checked
//! (as for any PD problem) and narrowed to `u8` on the host, one pass over
//! `perm` before the upload (`B·T·n` bytes of host scratch). A larger `n` is
//! [`Error::Size`] on `n` naming the kernels' limit, before anything is
//! uploaded; the CPU engine runs it. The narrowing happens in `upload`;
//! planning, binding and launching are the `u8` problem's. So every index
//! type has a [`KernelScan`](super::KernelScan) and an
//! [`Engine`](crate::backend::Engine) run, never a compile-time gap.

use super::perm_diagonal::{plan_perm_diagonal, PdGpuPlan, PdShape, MAX_N};
use super::KernelScan;
use crate::backend::launch::KernelRunner;
use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::family::perm_diagonal::{PermDiagonal, PermIndex};
use crate::family::LinearProblem;
use crate::scan::PlanRequest;

/// `n` against the kernels' limit: the typed error for a wide problem they
/// cannot index.
pub(super) fn check_n<P: PermIndex>(n: usize) -> Result<()> {
    if n > MAX_N {
        return Err(Error::size(
            "n",
            n,
            format!(
                "1 ≤ n ≤ {MAX_N} on the PermDiagonal kernels (they index with u8; \
                 {} permutations with n ≤ {MAX_N} are narrowed on the host, \
                 larger n runs on the CPU engine)",
                std::any::type_name::<P>()
            ),
        ));
    }
    Ok(())
}

/// `perm` as `u8` (host scratch of `B·T·n` bytes). An index that does not
/// fit (impossible after `plan`, which checks every row against `n ≤ 256`)
/// is reported as a bad row.
pub(super) fn narrow<S, P: PermIndex>(p: &PermDiagonal<'_, S, P>) -> Result<Vec<u8>> {
    let mut out = crate::mem::try_vec("perm", p.perm.len(), 0u8)?;
    for (i, (d, s)) in out.iter_mut().zip(p.perm).enumerate() {
        *d = u8::try_from(s.index()).map_err(|_| {
            let row = i / p.n.max(1);
            Error::NotPermutation {
                batch: row / p.len.max(1),
                step: row % p.len.max(1),
                n: p.n,
                detail: format!("index {} does not fit the kernels' u8", s.index()),
            }
        })?;
    }
    Ok(out)
}

macro_rules! wide_index {
    ($($idx:ty),*) => {$(
        impl<S: Storage + bytemuck::Pod> KernelScan for PermDiagonal<'_, S, $idx> {
            type Elem = S;
            type Plan = PdGpuPlan;
            /// `perm` (narrowed to `u8`), `d`, `b`, `h0`.
            type Inputs = <PermDiagonal<'static, S, u8> as KernelScan>::Inputs;

            /// Checks `n` against the kernels' limit, validates shapes and
            /// every `perm` row, then plans as for `u8`.
            fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<PdGpuPlan> {
                check_n::<$idx>(self.n)?;
                self.validate()?;
                let shape = PdShape::new(self.batch, self.len, self.n);
                plan_perm_diagonal(shape, S::DTYPE, request, sm_count)
            }

            fn upload<R: KernelRunner>(&self, runner: &R) -> Result<Self::Inputs> {
                check_n::<$idx>(self.n)?;
                Ok((
                    runner.upload(&narrow(self)?)?,
                    runner.upload(self.d)?,
                    runner.upload(self.b)?,
                    self.h0.map(|h0| runner.upload(h0)).transpose()?,
                ))
            }
        }
    )*};
}

wide_index!(u16, u32);
