//! Diagonal family on the CPU engine against the f64 oracle.

mod common;

use common::{rng, tolerance, uniform};
use half::{bf16, f16};
use parascan::backend::Cpu;
use parascan::family::diagonal::Diagonal;
use parascan::family::Layout;
use parascan::{oracle, PlanRequest, Storage};
use proptest::prelude::*;

fn check<S: Storage>(
    seed: u64,
    batch: usize,
    len: usize,
    dim: usize,
    layout: Layout,
    with_h0: bool,
    plan: PlanRequest,
) {
    let mut r = rng(seed);
    let n = batch * len * dim;
    // Decays in (0.5, 1.0) keep states bounded and make long memory matter.
    let a: Vec<S> = uniform(&mut r, n, 0.5, 1.0);
    let b: Vec<S> = uniform(&mut r, n, -1.0, 1.0);
    let h0: Vec<S> = uniform(&mut r, batch * dim, -1.0, 1.0);
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: with_h0.then_some(&h0[..]),
        batch,
        len,
        dim,
        layout,
    };
    let got = Cpu::new().scan(&p, plan).expect("valid problem");
    let (want, want_last) = oracle::diagonal(&p);
    let tol = tolerance::<S>(len);
    let e = oracle::rel_l2(&got.out, &want);
    let e_last = oracle::rel_l2(&got.h_last, &want_last);
    assert!(
        e <= tol && e_last <= tol,
        "seed {seed} {:?} B={batch} T={len} D={dim} {layout} h0={with_h0} {plan}: rel L2 {e:.3e} / h_T {e_last:.3e} > {tol:.1e}",
        S::DTYPE
    );
}

fn plans() -> impl Strategy<Value = PlanRequest> {
    prop_oneof![
        Just(PlanRequest::Sequential),
        Just(PlanRequest::MinDepth),
        Just(PlanRequest::Auto),
        (1usize..40).prop_map(PlanRequest::Chunk),
    ]
}

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Btd), Just(Layout::Bdt)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn f32_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, dim in 1usize..9,
                          layout in layouts(), h0 in any::<bool>(), plan in plans()) {
        check::<f32>(seed, batch, len, dim, layout, h0, plan);
    }
    #[test]
    fn f64_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, dim in 1usize..9,
                          layout in layouts(), h0 in any::<bool>(), plan in plans()) {
        check::<f64>(seed, batch, len, dim, layout, h0, plan);
    }
    #[test]
    fn bf16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, dim in 1usize..9,
                           layout in layouts(), h0 in any::<bool>(), plan in plans()) {
        check::<bf16>(seed, batch, len, dim, layout, h0, plan);
    }
    #[test]
    fn f16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, dim in 1usize..9,
                          layout in layouts(), h0 in any::<bool>(), plan in plans()) {
        check::<f16>(seed, batch, len, dim, layout, h0, plan);
    }
}

#[test]
fn long_sequence_many_chunks() {
    // T not a multiple of the chunk, many chunks, Blelloch over a non-power-of-two count.
    check::<f32>(7, 2, 100_003, 3, Layout::Btd, true, PlanRequest::Chunk(997));
    check::<f32>(8, 1, 65_537, 2, Layout::Bdt, true, PlanRequest::Auto);
    check::<f64>(9, 1, 4_099, 1, Layout::Bdt, false, PlanRequest::MinDepth);
}

#[test]
fn t_equals_one() {
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(5),
        PlanRequest::Auto,
    ] {
        check::<f32>(11, 3, 1, 4, Layout::Btd, true, plan);
        check::<f32>(12, 3, 1, 4, Layout::Bdt, true, plan);
    }
}

#[test]
fn layouts_agree_on_transposed_inputs() {
    // The same problem in both layouts gives the same numbers (transposed).
    let (batch, len, dim) = (2, 37, 5);
    let mut r = rng(3);
    let a: Vec<f32> = uniform(&mut r, batch * len * dim, 0.5, 1.0);
    let b: Vec<f32> = uniform(&mut r, batch * len * dim, -1.0, 1.0);
    let transpose = |x: &[f32]| {
        let mut y = vec![0.0; x.len()];
        for bb in 0..batch {
            for t in 0..len {
                for d in 0..dim {
                    y[(bb * dim + d) * len + t] = x[(bb * len + t) * dim + d];
                }
            }
        }
        y
    };
    let (at, bt) = (transpose(&a), transpose(&b));
    let btd = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Btd,
    };
    let bdt = Diagonal {
        a: &at,
        b: &bt,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Bdt,
    };
    let x = Cpu::new().scan(&btd, PlanRequest::Chunk(4)).unwrap();
    let y = Cpu::new().scan(&bdt, PlanRequest::Chunk(4)).unwrap();
    assert_eq!(transpose(&x.out), y.out);
    assert_eq!(x.h_last, y.h_last);
}
