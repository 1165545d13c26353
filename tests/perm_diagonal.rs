//! PermDiagonal family on the CPU engine: against the f64 oracle, the
//! combine's algebra, the permutation order convention, and every error.

mod common;

use common::{expect_shape, expect_size, rng, tolerance, uniform};
use half::{bf16, f16};
use parascan::backend::Cpu;
use parascan::family::perm_diagonal::{self as pd, PdElem, PermDiagonal, PermIndex};
use parascan::family::LinearProblem;
use parascan::{oracle, Error, PlanRequest, Storage};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `rows` random permutations of `0..n`, row after row, as plain indices.
fn random_perms(r: &mut ChaCha8Rng, rows: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(rows * n);
    let mut row: Vec<usize> = (0..n).collect();
    for _ in 0..rows {
        row.shuffle(r);
        out.extend_from_slice(&row);
    }
    out
}

fn to_index<P: PermIndex + TryFrom<usize>>(v: &[usize]) -> Vec<P> {
    v.iter()
        .map(|&i| P::try_from(i).unwrap_or_else(|_| panic!("{i} does not fit")))
        .collect()
}

/// Scales with |d| in [0.5, 1] and a random sign: bounded states with
/// memory over a few steps.
fn scales<S: Storage>(r: &mut ChaCha8Rng, len: usize) -> Vec<S> {
    (0..len)
        .map(|_| {
            let m: f64 = r.gen_range(0.5..1.0);
            S::from_f64(if r.gen::<bool>() { m } else { -m })
        })
        .collect()
}

/// Runs one random problem with poisoned outputs and compares with the
/// oracle on the same (rounded) inputs.
fn check<S: Storage, P: PermIndex + TryFrom<usize>>(
    seed: u64,
    batch: usize,
    len: usize,
    n: usize,
    with_h0: bool,
    plan: PlanRequest,
) {
    let mut r = rng(seed);
    let total = batch * len * n;
    let perm: Vec<P> = to_index(&random_perms(&mut r, batch * len, n));
    let d: Vec<S> = scales(&mut r, total);
    let b: Vec<S> = uniform(&mut r, total, -1.0, 1.0);
    let h0: Vec<S> = uniform(&mut r, batch * n, -1.0, 1.0);
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: with_h0.then_some(&h0[..]),
        batch,
        len,
        n,
    };
    let mut out = vec![S::from_f64(f64::NAN); p.output_len()];
    let mut h_last = vec![S::from_f64(f64::NAN); p.final_len()];
    let ran = Cpu::new()
        .scan_into(&p, plan, &mut out, &mut h_last)
        .expect("valid problem");
    let (want, want_last) = oracle::perm_diagonal(&p);
    let tol = tolerance::<S>(len);
    let e = oracle::rel_l2(&out, &want);
    let e_last = oracle::rel_l2(&h_last, &want_last);
    assert!(
        e <= tol && e_last <= tol,
        "seed {seed} {:?} {} B={batch} T={len} n={n} h0={with_h0} {plan} (chunk {}): rel L2 {e:.3e} / h_T {e_last:.3e} > {tol:.1e}",
        S::DTYPE,
        std::any::type_name::<P>(),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn f32_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, n in 1usize..13,
                          h0 in any::<bool>(), plan in plans()) {
        check::<f32, u8>(seed, batch, len, n, h0, plan);
    }
    #[test]
    fn f64_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, n in 1usize..13,
                          h0 in any::<bool>(), plan in plans()) {
        check::<f64, u8>(seed, batch, len, n, h0, plan);
    }
    #[test]
    fn bf16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, n in 1usize..13,
                           h0 in any::<bool>(), plan in plans()) {
        check::<bf16, u8>(seed, batch, len, n, h0, plan);
    }
    #[test]
    fn f16_matches_oracle(seed in any::<u64>(), batch in 1usize..4, len in 1usize..300, n in 1usize..13,
                          h0 in any::<bool>(), plan in plans()) {
        check::<f16, u8>(seed, batch, len, n, h0, plan);
    }
    #[test]
    fn wider_index_types_match_oracle(seed in any::<u64>(), batch in 1usize..3, len in 1usize..120,
                                      n in 1usize..13, h0 in any::<bool>(), plan in plans()) {
        check::<f32, u16>(seed, batch, len, n, h0, plan);
        check::<f32, u32>(seed, batch, len, n, h0, plan);
    }
}

#[test]
fn n_5_and_n_64() {
    let plans = [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::Chunk(7),
        PlanRequest::Chunk(64),
    ];
    for (i, plan) in plans.into_iter().enumerate() {
        let s = 100 + i as u64;
        for n in [5, 64] {
            check::<f32, u8>(s, 3, 257, n, true, plan);
            check::<f64, u8>(s, 2, 129, n, false, plan);
            check::<bf16, u8>(s, 2, 101, n, true, plan);
            check::<f16, u8>(s, 1, 99, n, false, plan);
        }
    }
    // The largest n a u8 index holds, and one that needs u16.
    check::<f32, u8>(120, 2, 33, 256, true, PlanRequest::Chunk(5));
    check::<f32, u16>(121, 1, 33, 300, true, PlanRequest::Chunk(4));
}

#[test]
fn long_sequence_many_chunks() {
    // T not a multiple of the chunk, many chunks, a non-power-of-two count.
    check::<f32, u8>(7, 2, 100_003, 5, true, PlanRequest::Chunk(997));
    check::<f32, u8>(8, 1, 65_537, 3, true, PlanRequest::Auto);
    check::<f64, u8>(9, 1, 4_099, 2, false, PlanRequest::MinDepth);
}

#[test]
fn t_equals_one() {
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(5),
        PlanRequest::Auto,
    ] {
        check::<f32, u8>(11, 3, 1, 4, true, plan);
        check::<f64, u8>(12, 2, 1, 1, false, plan);
        check::<bf16, u8>(13, 2, 1, 6, true, plan);
    }
}

// ---------------------------------------------------------------------------
// The combine's algebra, on the public free functions.
// ---------------------------------------------------------------------------

/// A random element of `n` slots; `exact` draws `d = ±1` and integer `b`,
/// for which every combine is exact in f64.
fn random_elem(r: &mut ChaCha8Rng, n: usize, exact: bool) -> PdElem<f64> {
    let perm = random_perms(r, 1, n)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    let (d, b) = if exact {
        (
            (0..n)
                .map(|_| if r.gen::<bool>() { 1.0 } else { -1.0 })
                .collect(),
            (0..n).map(|_| r.gen_range(-4i32..=4) as f64).collect(),
        )
    } else {
        (
            (0..n).map(|_| r.gen_range(-1.0..1.0)).collect(),
            (0..n).map(|_| r.gen_range(-1.0..1.0)).collect(),
        )
    };
    PdElem { perm, d, b }
}

fn assert_close(x: &[f64], y: &[f64], tol: f64, what: &str) {
    assert_eq!(x.len(), y.len(), "{what}: lengths");
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn combine_is_associative() {
    let mut r = rng(21);
    for _ in 0..200 {
        let n = r.gen_range(1..=12);
        let (x, y, z) = (
            random_elem(&mut r, n, false),
            random_elem(&mut r, n, false),
            random_elem(&mut r, n, false),
        );
        let left = x.then(&y).then(&z);
        let right = x.then(&y.then(&z));
        assert_eq!(left.perm, right.perm, "perm, n={n}");
        assert_close(&left.d, &right.d, 1e-14, "d");
        assert_close(&left.b, &right.b, 1e-14, "b");
    }
}

#[test]
fn combine_is_exact_for_unit_scales_and_integer_offsets() {
    let mut r = rng(22);
    for _ in 0..200 {
        let n = r.gen_range(1..=12);
        let (x, y, z) = (
            random_elem(&mut r, n, true),
            random_elem(&mut r, n, true),
            random_elem(&mut r, n, true),
        );
        assert_eq!(x.then(&y).then(&z), x.then(&y.then(&z)), "n={n}");
        // Identity on both sides.
        let id = PdElem::identity(n);
        assert_eq!(id.then(&x), x);
        assert_eq!(x.then(&id), x);
        // Order convention: combine(x, y) applies x first, then y.
        let h: Vec<f64> = (0..n).map(|_| r.gen_range(-9i32..=9) as f64).collect();
        assert_eq!(x.then(&y).apply(&h), y.apply(&x.apply(&h)), "n={n}");
    }
}

#[test]
fn combine_applies_earlier_first() {
    let mut r = rng(23);
    for _ in 0..100 {
        let n = r.gen_range(2..=12);
        let (x, y) = (random_elem(&mut r, n, false), random_elem(&mut r, n, false));
        let h: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
        assert_close(
            &x.then(&y).apply(&h),
            &y.apply(&x.apply(&h)),
            1e-14,
            "apply",
        );
    }
}

#[test]
fn combine_reads_stored_steps_like_aggregates() {
    // e2 given as a stored step (u8 indices, bf16 values) gives the same
    // result as e2 widened to an aggregate first.
    let mut r = rng(24);
    let n = 9;
    let x = random_elem(&mut r, n, false);
    let p2: Vec<u8> = to_index(&random_perms(&mut r, 1, n));
    let d2: Vec<bf16> = uniform(&mut r, n, -1.0, 1.0);
    let b2: Vec<bf16> = uniform(&mut r, n, -1.0, 1.0);
    let mut got = PdElem::identity(n);
    pd::combine(x.parts(), (&p2, &d2, &b2), got.parts_mut(), |v: bf16| {
        v.to_f64()
    });
    let y = PdElem {
        perm: p2.iter().map(|&i| i as u32).collect(),
        d: d2.iter().map(|v| v.to_f64()).collect(),
        b: b2.iter().map(|v| v.to_f64()).collect(),
    };
    assert_eq!(got, x.then(&y));
}

// ---------------------------------------------------------------------------
// The permutation order convention, derived by hand from the definition.
// ---------------------------------------------------------------------------

fn all_plans() -> [PlanRequest; 6] {
    [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::Chunk(2),
        PlanRequest::Chunk(3),
        PlanRequest::Chunk(16),
    ]
}

/// With `d = 1`, `b = 0` and a one-hot `h_0 = e_s`, the definition
/// `h_t[i] = h_{t-1}[π_t(i)]` says slot `i` is hot at step `t` iff `π_t(i)`
/// was hot at `t - 1`: the hot slot moves to `π_t^{-1}(pos)`.
fn one_hot_case<S: Storage>() {
    let (batch, len, n) = (2, 50, 7);
    let mut r = rng(31);
    let perm_idx = random_perms(&mut r, batch * len, n);
    let perm: Vec<u8> = to_index(&perm_idx);
    let d = vec![S::from_f64(1.0); batch * len * n];
    let b = vec![S::from_f64(0.0); batch * len * n];
    let starts = [2usize, 5];
    let mut h0 = vec![S::from_f64(0.0); batch * n];
    for (bi, s) in starts.iter().enumerate() {
        h0[bi * n + s] = S::from_f64(1.0);
    }
    // Expected hot slot after each step, by hand.
    let mut expect = vec![0usize; batch * len];
    for bi in 0..batch {
        let mut pos = starts[bi];
        for t in 0..len {
            let row = &perm_idx[(bi * len + t) * n..(bi * len + t + 1) * n];
            pos = row.iter().position(|&src| src == pos).unwrap();
            expect[bi * len + t] = pos;
        }
    }
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: Some(&h0),
        batch,
        len,
        n,
    };
    for plan in all_plans() {
        let got = Cpu::new().scan(&p, plan).unwrap();
        for bi in 0..batch {
            for t in 0..len {
                let row = &got.out[(bi * len + t) * n..(bi * len + t + 1) * n];
                let hot: Vec<f64> = row.iter().map(|v| v.to_f64()).collect();
                let mut want = vec![0.0; n];
                want[expect[bi * len + t]] = 1.0;
                assert_eq!(hot, want, "{:?} {plan} batch {bi} step {t}", S::DTYPE);
            }
            let last: Vec<f64> = got.h_last[bi * n..(bi + 1) * n]
                .iter()
                .map(|v| v.to_f64())
                .collect();
            let mut want = vec![0.0; n];
            want[expect[bi * len + len - 1]] = 1.0;
            assert_eq!(last, want, "{:?} {plan} h_T batch {bi}", S::DTYPE);
        }
    }
}

#[test]
fn one_hot_follows_the_definition() {
    one_hot_case::<f32>();
    one_hot_case::<f64>();
    one_hot_case::<bf16>();
    one_hot_case::<f16>();
}

/// The S5 word problem: with `d = 1`, `b = 0` and `h_0 = (0, 1, 2, 3, 4)`,
/// `h_t[i] = h_0[σ_t(i)]` for `σ_t = π_1 ∘ … ∘ π_t` composed directly
/// (`σ_t[i] = σ_{t-1}[π_t[i]]`); every plan must be exact.
#[test]
fn s5_word_problem_is_exact() {
    let (len, n) = (1_000, 5);
    let mut r = rng(32);
    let perm_idx = random_perms(&mut r, len, n);
    let perm: Vec<u8> = to_index(&perm_idx);
    let d = vec![1.0f32; len * n];
    let b = vec![0.0f32; len * n];
    let h0: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: Some(&h0),
        batch: 1,
        len,
        n,
    };
    let mut sigma: Vec<usize> = (0..n).collect();
    let mut want = Vec::with_capacity(len * n);
    for t in 0..len {
        let pi = &perm_idx[t * n..(t + 1) * n];
        sigma = (0..n).map(|i| sigma[pi[i]]).collect();
        want.extend(sigma.iter().map(|&s| s as f32));
    }
    for plan in all_plans().into_iter().chain([PlanRequest::Chunk(33)]) {
        let got = Cpu::new().scan(&p, plan).unwrap();
        assert_eq!(got.out, want, "{plan}");
        assert_eq!(got.h_last, want[(len - 1) * n..], "{plan} h_T");
    }
}

/// The aggregate of a chunk (the engine's reduce-phase fold) against the
/// composition computed directly from the definition: for the steps
/// `s_1 < … < s_m`, walking from the latest step back,
/// `perm_i = π_{s_1}(…π_{s_m}(i))` and `d_i = Π d_s[slot reached before s]`;
/// `b` is the state reached from `h = 0`.
#[test]
fn chunk_aggregate_equals_direct_composition() {
    let (batch, len, n) = (2, 40, 6);
    let mut r = rng(33);
    let perm_idx = random_perms(&mut r, batch * len, n);
    let perm: Vec<u16> = to_index(&perm_idx);
    let d: Vec<f64> = (0..batch * len * n)
        .map(|_| if r.gen::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let b: Vec<f64> = (0..batch * len * n)
        .map(|_| r.gen_range(-3i32..=3) as f64)
        .collect();
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: None,
        batch,
        len,
        n,
    };
    for (bi, t0, t1) in [(0, 0, 1), (0, 0, 40), (1, 3, 17), (1, 39, 40), (0, 10, 11)] {
        let agg = p.aggregate(bi, t0..t1).unwrap();
        let at = |t: usize, i: usize| (bi * len + t) * n + i;
        for i in 0..n {
            let (mut idx, mut coef) = (i, 1.0);
            for t in (t0..t1).rev() {
                coef *= d[at(t, idx)];
                idx = perm_idx[at(t, idx)];
            }
            assert_eq!(
                agg.perm[i] as usize, idx,
                "perm, batch {bi} steps {t0}..{t1}"
            );
            assert_eq!(agg.d[i], coef, "d, batch {bi} steps {t0}..{t1}");
        }
        let mut h = vec![0.0; n];
        for t in t0..t1 {
            h = (0..n)
                .map(|i| d[at(t, i)] * h[perm_idx[at(t, i)]] + b[at(t, i)])
                .collect();
        }
        assert_eq!(agg.b, h, "b, batch {bi} steps {t0}..{t1}");
    }
    assert_eq!(p.aggregate(1, 5..5).unwrap(), PdElem::identity(n));
    assert!(matches!(
        p.aggregate(2, 0..1),
        Err(Error::Size { arg: "batch", .. })
    ));
    assert!(matches!(
        p.aggregate(0, 3..41),
        Err(Error::Size { arg: "steps", .. })
    ));
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

struct Data {
    perm: Vec<u8>,
    d: Vec<f32>,
    b: Vec<f32>,
    h0: Vec<f32>,
}

const B: usize = 2;
const T: usize = 3;
const N: usize = 4;

fn data() -> Data {
    let mut r = rng(41);
    Data {
        perm: to_index(&random_perms(&mut r, B * T, N)),
        d: uniform(&mut r, B * T * N, -1.0, 1.0),
        b: uniform(&mut r, B * T * N, -1.0, 1.0),
        h0: uniform(&mut r, B * N, -1.0, 1.0),
    }
}

fn problem(x: &Data) -> PermDiagonal<'_, f32> {
    PermDiagonal {
        perm: &x.perm,
        d: &x.d,
        b: &x.b,
        h0: Some(&x.h0),
        batch: B,
        len: T,
        n: N,
    }
}

#[test]
fn valid_problem_validates() {
    let x = data();
    let p = problem(&x);
    p.validate().unwrap();
    p.check_finite().unwrap();
    assert_eq!(p.family(), "perm-diagonal");
    assert_eq!(p.bytes_moved(), B * T * N * (1 + 3 * 4));
    let wide = PermDiagonal::<f32, u32> {
        perm: &[0, 1],
        d: &[1.0; 2],
        b: &[0.0; 2],
        h0: None,
        batch: 1,
        len: 1,
        n: 2,
    };
    assert_eq!(wide.bytes_moved(), 2 * (4 + 3 * 4));
}

#[test]
fn wrong_lengths_name_the_argument() {
    let x = data();
    let total = B * T * N;
    let short_perm = &x.perm[..total - 1];
    expect_shape(
        &PermDiagonal {
            perm: short_perm,
            ..problem(&x)
        },
        "perm",
        total,
        total - 1,
    );
    expect_shape(
        &PermDiagonal {
            d: &x.d[..total - 2],
            ..problem(&x)
        },
        "d",
        total,
        total - 2,
    );
    let long_b = [x.b.clone(), vec![0.0]].concat();
    expect_shape(
        &PermDiagonal {
            b: &long_b,
            ..problem(&x)
        },
        "b",
        total,
        total + 1,
    );
    expect_shape(
        &PermDiagonal {
            h0: Some(&x.h0[..N]),
            ..problem(&x)
        },
        "h0",
        B * N,
        N,
    );
}

#[test]
fn zero_sizes_are_errors() {
    let x = data();
    expect_size(
        &PermDiagonal {
            len: 0,
            perm: &[],
            d: &[],
            b: &[],
            ..problem(&x)
        },
        "len",
        0,
    );
    expect_size(
        &PermDiagonal {
            batch: 0,
            perm: &[],
            d: &[],
            b: &[],
            h0: None,
            ..problem(&x)
        },
        "batch",
        0,
    );
    expect_size(
        &PermDiagonal {
            n: 0,
            perm: &[],
            d: &[],
            b: &[],
            h0: None,
            ..problem(&x)
        },
        "n",
        0,
    );
}

#[test]
fn n_too_large_for_the_index_type() {
    let n = 257;
    let perm = vec![0u8; n];
    let v = vec![0.0f32; n];
    let p = PermDiagonal {
        perm: &perm,
        d: &v,
        b: &v,
        h0: None,
        batch: 1,
        len: 1,
        n,
    };
    expect_size(&p, "n", 257);
}

fn expect_not_perm<P: PermIndex>(
    p: &PermDiagonal<'_, f32, P>,
    batch: usize,
    step: usize,
    what: &str,
) {
    match p.validate() {
        Err(Error::NotPermutation {
            batch: bb,
            step: s,
            n,
            detail,
        }) => {
            assert_eq!((bb, s, n), (batch, step, p.n), "{detail}");
            assert!(detail.contains(what), "detail `{detail}` lacks `{what}`");
        }
        other => panic!("expected NotPermutation, got {other:?}"),
    }
    assert!(matches!(
        Cpu::new().scan(p, PlanRequest::MinDepth),
        Err(Error::NotPermutation { .. })
    ));
}

#[test]
fn out_of_range_index_is_reported_with_its_row() {
    let mut x = data();
    // batch 1, step 2, position 3.
    x.perm[(T + 2) * N + 3] = N as u8;
    expect_not_perm(&problem(&x), 1, 2, "out of range");
    let mut x = data();
    x.perm[N + 1] = 200;
    expect_not_perm(&problem(&x), 0, 1, "holds index 200");
}

#[test]
fn repeated_index_is_reported_with_its_row() {
    let mut x = data();
    // batch 0, step 1: make position 2 repeat position 0's index.
    x.perm[N + 2] = x.perm[N];
    let j = x.perm[N];
    expect_not_perm(
        &problem(&x),
        0,
        1,
        &format!("index {j} appears twice, at positions 0 and 2"),
    );
}

#[test]
fn first_bad_row_is_reported_in_a_long_batch() {
    // Many rows, so the parallel check splits; the first bad row in memory
    // order wins whichever worker finds a bad row first.
    let (batch, len, n) = (3, 5_000, 4);
    let mut r = rng(42);
    let mut perm: Vec<u16> = to_index(&random_perms(&mut r, batch * len, n));
    let v = vec![0.5f32; batch * len * n];
    perm[(2 * len + 4_000) * n] = 9;
    {
        let p = PermDiagonal {
            perm: &perm,
            d: &v,
            b: &v,
            h0: None,
            batch,
            len,
            n,
        };
        expect_not_perm(&p, 2, 4_000, "out of range");
    }
    perm[(len + 10) * n + 1] = perm[(len + 10) * n + 3];
    let p = PermDiagonal {
        perm: &perm,
        d: &v,
        b: &v,
        h0: None,
        batch,
        len,
        n,
    };
    expect_not_perm(&p, 1, 10, "appears twice");
}

#[test]
fn every_small_n_reports_the_first_bad_row_of_any_block() {
    // n ≤ 8 takes the blocked, unrolled check; n = 9 the general one. The
    // bad rows sit past the first block of rows (16384 / n rows).
    for n in 1..=9usize {
        let (batch, len) = (2, 20_000 / n + 7);
        let mut r = rng(7 + n as u64);
        let mut perm: Vec<u8> = to_index(&random_perms(&mut r, batch * len, n));
        let v = vec![0.5f32; batch * len * n];
        let check = |perm: &[u8], b: usize, t: usize, what: &str| {
            let p = PermDiagonal {
                perm,
                d: &v,
                b: &v,
                h0: None,
                batch,
                len,
                n,
            };
            expect_not_perm(&p, b, t, what);
        };
        let late = len - 3;
        perm[(len + late) * n + n - 1] = n as u8;
        check(&perm, 1, late, "out of range");
        if n > 1 {
            let row = (len / 2) * n;
            perm[row] = perm[row + n - 1];
            check(&perm, 0, len / 2, "appears twice");
        }
    }
}

#[test]
fn wrong_output_buffers_are_errors() {
    let x = data();
    let p = problem(&x);
    let cpu = Cpu::new();
    let mut out = vec![0.0f32; B * T * N + 1];
    let mut h_last = vec![0.0f32; B * N];
    match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut h_last) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("out", B * T * N, B * T * N + 1)),
        other => panic!("expected a shape error on out, got {other:?}"),
    }
    let mut out = vec![0.0f32; B * T * N];
    let mut h_last = vec![0.0f32; N];
    match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut h_last) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("h_last", B * N, N)),
        other => panic!("expected a shape error on h_last, got {other:?}"),
    }
}

#[test]
fn non_finite_inputs_are_reported() {
    let expect = |p: &PermDiagonal<'_, f32>, arg: &str, index: usize| match p.check_finite() {
        Err(Error::NonFinite {
            arg: a, index: i, ..
        }) => assert_eq!((a, i), (arg, index)),
        other => panic!("{arg}: expected NonFinite, got {other:?}"),
    };
    let mut x = data();
    x.d[5] = f32::NAN;
    expect(&problem(&x), "d", 5);
    let mut x = data();
    x.b[7] = f32::INFINITY;
    expect(&problem(&x), "b", 7);
    let mut x = data();
    x.h0[1] = f32::NEG_INFINITY;
    expect(&problem(&x), "h0", 1);
    // A non-finite h0 is also caught by validate (as in the Diagonal family).
    assert!(matches!(
        problem(&x).validate(),
        Err(Error::NonFinite { arg: "h0", .. })
    ));
}
