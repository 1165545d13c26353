//! BlockDiagonal(k) family on the CPU engine: against the f64 oracle, the
//! combine's algebra, agreement with the Diagonal family at k = 1, and
//! every error.

mod common;

use common::{expect_shape, expect_size, rng, tolerance, uniform};
use half::{bf16, f16};
use parascan::backend::Cpu;
use parascan::family::block_diagonal::{self as bd, BlockDiagonal};
use parascan::family::diagonal::Diagonal;
use parascan::family::{Layout, LinearProblem};
use parascan::{oracle, Error, PlanRequest, Storage};
use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `steps` transitions of `nb` blocks `k×k`: `0.5·I + U`, `U` uniform in
/// `±0.5/k`, so every block has spectral norm ≤ ‖0.5·I‖ + ‖U‖_F ≤ 1.
fn blocks<S: Storage>(r: &mut ChaCha8Rng, steps: usize, nb: usize, k: usize) -> Vec<S> {
    let mut a = Vec::with_capacity(steps * nb * k * k);
    for _ in 0..steps * nb {
        for row in 0..k {
            for c in 0..k {
                let u = r.gen_range(-0.5..0.5) / k as f64;
                a.push(S::from_f64(if row == c { 0.5 + u } else { u }));
            }
        }
    }
    a
}

/// Runs one random problem with poisoned outputs and compares with the
/// oracle on the same (rounded) inputs.
fn check<S: Storage>(
    seed: u64,
    batch: usize,
    len: usize,
    nb: usize,
    k: usize,
    with_h0: bool,
    plan: PlanRequest,
) {
    let mut r = rng(seed);
    let n = nb * k;
    let a: Vec<S> = blocks(&mut r, batch * len, nb, k);
    let b: Vec<S> = uniform(&mut r, batch * len * n, -1.0, 1.0);
    let h0: Vec<S> = uniform(&mut r, batch * n, -1.0, 1.0);
    let p = BlockDiagonal {
        a: &a,
        b: &b,
        h0: with_h0.then_some(&h0[..]),
        batch,
        len,
        blocks: nb,
        block: k,
    };
    let mut out = vec![S::from_f64(f64::NAN); p.output_len()];
    let mut h_last = vec![S::from_f64(f64::NAN); p.final_len()];
    let ran = Cpu::new()
        .scan_into(&p, plan, &mut out, &mut h_last)
        .expect("valid problem");
    let (want, want_last) = oracle::block_diagonal(&p);
    let tol = tolerance::<S>(len);
    let e = oracle::rel_l2(&out, &want);
    let e_last = oracle::rel_l2(&h_last, &want_last);
    assert!(
        e <= tol && e_last <= tol,
        "seed {seed} {:?} B={batch} T={len} nb={nb} k={k} h0={with_h0} {plan} (chunk {}): rel L2 {e:.3e} / h_T {e_last:.3e} > {tol:.1e}",
        S::DTYPE,
        ran.chunk,
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

fn ks() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 3, 4, 8])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn f32_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, nb in 1usize..4,
                          k in ks(), h0 in any::<bool>(), plan in plans()) {
        check::<f32>(seed, batch, len, nb, k, h0, plan);
    }
    #[test]
    fn f64_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, nb in 1usize..4,
                          k in ks(), h0 in any::<bool>(), plan in plans()) {
        check::<f64>(seed, batch, len, nb, k, h0, plan);
    }
    #[test]
    fn bf16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, nb in 1usize..4,
                           k in ks(), h0 in any::<bool>(), plan in plans()) {
        check::<bf16>(seed, batch, len, nb, k, h0, plan);
    }
    #[test]
    fn f16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, nb in 1usize..4,
                          k in ks(), h0 in any::<bool>(), plan in plans()) {
        check::<f16>(seed, batch, len, nb, k, h0, plan);
    }
}

#[test]
fn every_block_shape_and_plan() {
    let plans = [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::Chunk(5),
        PlanRequest::Chunk(64),
    ];
    let mut seed = 200;
    for k in [1, 2, 3, 4, 8] {
        for nb in [1, 2, 3] {
            for plan in plans {
                seed += 1;
                check::<f32>(seed, 2, 131, nb, k, seed % 2 == 0, plan);
                check::<f64>(seed, 1, 77, nb, k, seed % 2 == 1, plan);
                check::<bf16>(seed, 1, 45, nb, k, true, plan);
                check::<f16>(seed, 1, 45, nb, k, false, plan);
            }
        }
    }
}

#[test]
fn dense_single_block() {
    // k = n: the Dense family.
    check::<f32>(300, 2, 97, 1, 16, true, PlanRequest::Chunk(6));
    check::<f64>(301, 1, 64, 1, 24, false, PlanRequest::MinDepth);
}

#[test]
fn long_sequence_many_chunks() {
    check::<f32>(7, 2, 20_011, 2, 3, true, PlanRequest::Chunk(997));
    check::<f32>(8, 1, 20_000, 3, 2, true, PlanRequest::Auto);
    check::<f64>(9, 1, 4_099, 1, 4, false, PlanRequest::MinDepth);
}

#[test]
fn t_equals_one() {
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(5),
        PlanRequest::Auto,
    ] {
        check::<f32>(11, 3, 1, 2, 3, true, plan);
        check::<f64>(12, 2, 1, 1, 1, false, plan);
        check::<bf16>(13, 2, 1, 3, 2, true, plan);
    }
}

#[test]
fn k_1_equals_the_diagonal_family() {
    let (batch, len, dim) = (3, 513, 5);
    for (seed, plan) in [
        (1, PlanRequest::Sequential),
        (2, PlanRequest::MinDepth),
        (3, PlanRequest::Chunk(10)),
    ] {
        let mut r = rng(seed);
        let a: Vec<f64> = uniform(&mut r, batch * len * dim, 0.5, 1.0);
        let b: Vec<f64> = uniform(&mut r, batch * len * dim, -1.0, 1.0);
        let h0: Vec<f64> = uniform(&mut r, batch * dim, -1.0, 1.0);
        let diag = Diagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            dim,
            layout: Layout::Btd,
        };
        let block = BlockDiagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            blocks: dim,
            block: 1,
        };
        let x = Cpu::new().scan(&diag, plan).unwrap();
        let y = Cpu::new().scan(&block, plan).unwrap();
        // Diagonal uses fused multiply-adds, so agreement is to rounding.
        let want: Vec<f64> = x.out.clone();
        let e = oracle::rel_l2(&y.out, &want);
        let e_last = oracle::rel_l2(&y.h_last, &x.h_last);
        assert!(
            e <= 1e-14 && e_last <= 1e-14,
            "{plan}: {e:.2e} / {e_last:.2e}"
        );
        // And both oracles agree exactly (the same f64 loop at k = 1).
        assert_eq!(oracle::diagonal(&diag), oracle::block_diagonal(&block));
    }
}

// ---------------------------------------------------------------------------
// The combine's algebra, on the public free functions.
// ---------------------------------------------------------------------------

/// An element `(A, b)` of `nb` blocks `k×k`: uniform reals, or (`exact`)
/// entries in {-1, 0, 1}, for which a few combines are exact in f64.
fn random_elem(r: &mut ChaCha8Rng, nb: usize, k: usize, exact: bool) -> (Vec<f64>, Vec<f64>) {
    let mut draw = |len: usize| -> Vec<f64> {
        (0..len)
            .map(|_| {
                if exact {
                    r.gen_range(-1i32..=1) as f64
                } else {
                    r.gen_range(-1.0..1.0)
                }
            })
            .collect()
    };
    (draw(nb * k * k), draw(nb * k))
}

fn then(k: usize, e1: &(Vec<f64>, Vec<f64>), e2: &(Vec<f64>, Vec<f64>)) -> (Vec<f64>, Vec<f64>) {
    let mut out = (vec![f64::NAN; e1.0.len()], vec![f64::NAN; e1.1.len()]);
    bd::combine(k, (&e1.0, &e1.1), (&e2.0, &e2.1), (&mut out.0, &mut out.1));
    out
}

fn apply(k: usize, e: &(Vec<f64>, Vec<f64>), h: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::NAN; h.len()];
    bd::apply(k, (&e.0, &e.1), h, &mut out, |x| x);
    out
}

fn assert_close(x: &[f64], y: &[f64], tol: f64, what: &str) {
    assert_eq!(x.len(), y.len(), "{what}: lengths");
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: {a} vs {b}");
    }
}

fn shapes(r: &mut ChaCha8Rng) -> (usize, usize) {
    let k = [1, 2, 3, 4, 8][r.gen_range(0..5)];
    (r.gen_range(1..=3), k)
}

#[test]
fn combine_is_associative() {
    let mut r = rng(21);
    for _ in 0..200 {
        let (nb, k) = shapes(&mut r);
        let x = random_elem(&mut r, nb, k, false);
        let y = random_elem(&mut r, nb, k, false);
        let z = random_elem(&mut r, nb, k, false);
        let left = then(k, &then(k, &x, &y), &z);
        let right = then(k, &x, &then(k, &y, &z));
        assert_close(&left.0, &right.0, 1e-12, "A");
        assert_close(&left.1, &right.1, 1e-12, "b");
        // Order convention: combine(x, y) applies x first, then y.
        let h: Vec<f64> = (0..nb * k).map(|_| r.gen_range(-1.0..1.0)).collect();
        assert_close(
            &apply(k, &then(k, &x, &y), &h),
            &apply(k, &y, &apply(k, &x, &h)),
            1e-12,
            "apply",
        );
    }
}

#[test]
fn combine_is_exact_on_small_integers() {
    let mut r = rng(22);
    for _ in 0..200 {
        let (nb, k) = shapes(&mut r);
        let x = random_elem(&mut r, nb, k, true);
        let y = random_elem(&mut r, nb, k, true);
        let z = random_elem(&mut r, nb, k, true);
        assert_eq!(
            then(k, &then(k, &x, &y), &z),
            then(k, &x, &then(k, &y, &z)),
            "nb={nb} k={k}"
        );
        let h: Vec<f64> = (0..nb * k).map(|_| r.gen_range(-3i32..=3) as f64).collect();
        assert_eq!(
            apply(k, &then(k, &x, &y), &h),
            apply(k, &y, &apply(k, &x, &h))
        );
        // Identity on both sides.
        let mut id = (vec![f64::NAN; nb * k * k], vec![f64::NAN; nb * k]);
        bd::identity(k, (&mut id.0, &mut id.1));
        assert_eq!(then(k, &id, &x), x);
        assert_eq!(then(k, &x, &id), x);
    }
}

#[test]
fn fold_step_is_combine_bitwise() {
    let mut r = rng(23);
    for _ in 0..200 {
        let (nb, k) = shapes(&mut r);
        let agg = random_elem(&mut r, nb, k, false);
        let step = random_elem(&mut r, nb, k, false);
        let want = then(k, &agg, &step);
        let mut got = agg.clone();
        let mut scratch = vec![f64::NAN; k * k + k];
        bd::fold_step(
            k,
            (&step.0, &step.1),
            (&mut got.0, &mut got.1),
            &mut scratch,
            |x| x,
        );
        assert_eq!(got, want, "nb={nb} k={k}");
    }
    // A stored (f16) step is widened once, the same as combining its widened copy.
    let (nb, k) = (2, 3);
    let agg = random_elem(&mut r, nb, k, false);
    let a2: Vec<f16> = uniform(&mut r, nb * k * k, -1.0, 1.0);
    let b2: Vec<f16> = uniform(&mut r, nb * k, -1.0, 1.0);
    let widened = (
        a2.iter().map(|v| v.to_f64()).collect(),
        b2.iter().map(|v| v.to_f64()).collect(),
    );
    let mut got = agg.clone();
    let mut scratch = vec![0.0; k * k + k];
    bd::fold_step(
        k,
        (&a2, &b2),
        (&mut got.0, &mut got.1),
        &mut scratch,
        |v: f16| v.to_f64(),
    );
    assert_eq!(got, then(k, &agg, &widened));
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

struct Data {
    a: Vec<f32>,
    b: Vec<f32>,
    h0: Vec<f32>,
}

const B: usize = 2;
const T: usize = 3;
const NB: usize = 2;
const K: usize = 3;
const N: usize = NB * K;

fn data() -> Data {
    let mut r = rng(41);
    Data {
        a: blocks(&mut r, B * T, NB, K),
        b: uniform(&mut r, B * T * N, -1.0, 1.0),
        h0: uniform(&mut r, B * N, -1.0, 1.0),
    }
}

fn problem(x: &Data) -> BlockDiagonal<'_, f32> {
    BlockDiagonal {
        a: &x.a,
        b: &x.b,
        h0: Some(&x.h0),
        batch: B,
        len: T,
        blocks: NB,
        block: K,
    }
}

#[test]
fn valid_problem_validates() {
    let x = data();
    let p = problem(&x);
    p.validate().unwrap();
    p.check_finite().unwrap();
    assert_eq!(p.family(), "block-diagonal");
    assert_eq!(p.output_len(), B * T * N);
    assert_eq!(p.final_len(), B * N);
    assert_eq!(p.bytes_moved(), B * T * (NB * K * K + 2 * N) * 4);
}

#[test]
fn wrong_lengths_name_the_argument() {
    let x = data();
    let (a_len, b_len) = (B * T * NB * K * K, B * T * N);
    expect_shape(
        &BlockDiagonal {
            a: &x.a[..a_len - 1],
            ..problem(&x)
        },
        "a",
        a_len,
        a_len - 1,
    );
    // A b of the right length for a different block count is still wrong.
    expect_shape(
        &BlockDiagonal {
            b: &x.b[..B * T * K],
            ..problem(&x)
        },
        "b",
        b_len,
        B * T * K,
    );
    let long_h0 = [x.h0.clone(), vec![0.0; 2]].concat();
    expect_shape(
        &BlockDiagonal {
            h0: Some(&long_h0),
            ..problem(&x)
        },
        "h0",
        B * N,
        B * N + 2,
    );
    // Blocks of the wrong size: a is checked against nb·k·k.
    expect_shape(
        &BlockDiagonal {
            blocks: 3,
            block: 2,
            ..problem(&x)
        },
        "a",
        B * T * 3 * 2 * 2,
        a_len,
    );
}

#[test]
fn zero_sizes_are_errors() {
    let x = data();
    let empty = BlockDiagonal {
        a: &[],
        b: &[],
        h0: None,
        ..problem(&x)
    };
    expect_size(&BlockDiagonal { len: 0, ..empty }, "len", 0);
    expect_size(&BlockDiagonal { batch: 0, ..empty }, "batch", 0);
    expect_size(&BlockDiagonal { blocks: 0, ..empty }, "blocks", 0);
    expect_size(&BlockDiagonal { block: 0, ..empty }, "block", 0);
}

#[test]
fn wrong_output_buffers_are_errors() {
    let x = data();
    let p = problem(&x);
    let cpu = Cpu::new();
    let mut out = vec![0.0f32; B * T * N - 1];
    let mut h_last = vec![0.0f32; B * N];
    match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut h_last) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("out", B * T * N, B * T * N - 1)),
        other => panic!("expected a shape error on out, got {other:?}"),
    }
    let mut out = vec![0.0f32; B * T * N];
    let mut h_last = vec![0.0f32; B * N + 1];
    match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut h_last) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("h_last", B * N, B * N + 1)),
        other => panic!("expected a shape error on h_last, got {other:?}"),
    }
}

#[test]
fn non_finite_inputs_are_reported() {
    let expect = |p: &BlockDiagonal<'_, f32>, arg: &str, index: usize| match p.check_finite() {
        Err(Error::NonFinite {
            arg: a, index: i, ..
        }) => assert_eq!((a, i), (arg, index)),
        other => panic!("{arg}: expected NonFinite, got {other:?}"),
    };
    let mut x = data();
    x.a[17] = f32::NAN;
    expect(&problem(&x), "a", 17);
    let mut x = data();
    x.b[3] = f32::INFINITY;
    expect(&problem(&x), "b", 3);
    let mut x = data();
    x.h0[4] = f32::NAN;
    expect(&problem(&x), "h0", 4);
    assert!(matches!(
        problem(&x).validate(),
        Err(Error::NonFinite { arg: "h0", .. })
    ));
}
