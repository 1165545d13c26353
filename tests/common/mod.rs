//! Shared helpers for the integration tests: seeded random inputs and
//! tolerance rules.
#![allow(dead_code)]

use parascan::Storage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator; tests print their seed so a failure can be replayed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in `[lo, hi)`, rounded to storage type `S`.
pub fn uniform<S: Storage>(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<S> {
    (0..n).map(|_| S::from_f64(rng.gen_range(lo..hi))).collect()
}

/// Tolerance on relative L2 error for a scan of length `t` whose compute
/// type is `S::Compute` and whose outputs are stored as `S`.
///
/// The oracle runs on the same (already rounded) inputs, so the only error
/// sources are compute rounding (≈ eps·log2 T for a tree, ≈ eps·T worst case
/// for a sequential chain of contractions) and one rounding on store.
pub fn tolerance<S: Storage>(t: usize) -> f64 {
    let log_t = (t.max(2) as f64).log2();
    match S::DTYPE {
        parascan::DType::F64 => 1e-12 * log_t,
        parascan::DType::F32 => 1e-5 * log_t,
        // One rounding of each stored output dominates: 2^-8 (bf16), 2^-11 (f16).
        parascan::DType::Bf16 => 8e-3,
        parascan::DType::F16 => 1e-3,
    }
}

/// Tolerance on relative L2 error of a backward pass's gradients of
/// length `t` in storage type `S`, against the f64 adjoint on the same
/// rounded inputs.
///
/// f32 and f64 as [`tolerance`]. f16 and bf16 (gradients stored in the
/// input's dtype, accumulation in f32): a parameter gradient such as
/// `g_t ⊙ h_{t-1}` carries three roundings to `S` (the adjoint state `g_t`
/// on store, the saved forward state, the product on store), each at most
/// the unit roundoff `u` (2^-11 for f16, 2^-8 for bf16), so `3u` plus the
/// f32 compute term.
pub fn grad_tolerance<S: Storage>(t: usize) -> f64 {
    let u = match S::DTYPE {
        parascan::DType::F16 => 2f64.powi(-11),
        parascan::DType::Bf16 => 2f64.powi(-8),
        _ => return tolerance::<S>(t),
    };
    3.0 * u + tolerance::<f32>(t)
}

/// Asserts that `p` fails validation with a shape error on `arg` (expected
/// and actual element counts as given) and that a scan refuses it too.
pub fn expect_shape<P: parascan::family::LinearProblem>(
    p: &P,
    arg: &str,
    expected: usize,
    got: usize,
) {
    match p.validate() {
        Err(parascan::Error::Shape {
            arg: a,
            expected: e,
            got: g,
            ..
        }) => {
            assert_eq!((a, e, g), (arg, expected, got))
        }
        other => panic!("{arg}: expected a shape error, got {other:?}"),
    }
    assert!(parascan::backend::Cpu::new()
        .scan(p, parascan::PlanRequest::Auto)
        .is_err());
}

/// Asserts that `p` fails validation with a size error on `arg` = `got`,
/// and that a scan refuses it too.
pub fn expect_size<P: parascan::family::LinearProblem>(p: &P, arg: &str, got: usize) {
    match p.validate() {
        Err(parascan::Error::Size { arg: a, got: g, .. }) => assert_eq!((a, g), (arg, got)),
        other => panic!("{arg}: expected a size error, got {other:?}"),
    }
    assert!(parascan::backend::Cpu::new()
        .scan(p, parascan::PlanRequest::Auto)
        .is_err());
}
pub mod adjoint;
