//! DPLR family on the CPU engine against the f64 oracle, its algebra, its
//! special cases (DeltaNet, vector states) and its errors.
//!
//! ## Tolerance
//!
//! The bound is [`common::tolerance`], unchanged. It was derived for the
//! Diagonal family, where a combine is one multiply-add per element; here a
//! chunk aggregate `M2·M1` sums `n` products per entry, `M·H + N` sums
//! `n + 1`, a low-rank step `R + 2` and the readout `Hᵀq` another `n`. In f32
//! such a sum has relative error at most `γ_{n+1} ≈ (n+1)·2⁻²⁴ ≈ 5.4e-7` for
//! `n = 8`, typically `√(n+1)·2⁻²⁴ ≈ 1.8e-7`: a few times a diagonal
//! multiply-add, and `1e-5` is still about 55 typical dense combines per
//! `log2 T`. Along a chain the errors are random in sign and damped by the
//! transitions (the DeltaNet-like ones below are non-expansive, the generic
//! ones have `‖A‖₂ ≤ 1.25` but contract on average), so they grow far more
//! slowly than the worst-case `depth·γ`. Measured over 1000 random problems
//! per dtype (T up to 400, n, m up to 8, every plan kind, both outputs): the
//! largest error was 2 % of the bound in f32 (a `T = 1` readout, where the
//! bound is smallest), far below 1 % in f64, and about 40 % in f16/bf16,
//! where one rounding of each stored output dominates (the oracle runs on
//! the same rounded inputs). So the dense products need no looser rule.

mod common;

use common::{rng, tolerance, uniform};
use half::{bf16, f16};
use parascan::backend::Cpu;
use parascan::family::dplr::{self, Dplr, DplrOutput};
use parascan::family::LinearProblem;
use parascan::{oracle, Error, PlanRequest, Storage};
use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How the transitions are drawn (both keep the states bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// DeltaNet-like: `w = 1`, `u_r = −β_r k̂_r`, `v_r = k̂_r` with unit
    /// `k̂_r` and `β_r ∈ (0, 1/R)`, so `A_t = I − Σ_r β_r k̂_r k̂_rᵀ` is
    /// symmetric with eigenvalues in `[0, 1]`; the input key is `k̂_0`.
    DeltaNet,
    /// `w ∈ (0.5, 1)` and `u, v` uniform in `±s` with `R·n·s² = 1/4`, so
    /// `‖Σ_r u_r v_rᵀ‖₂ ≤ Σ_r ‖u_r‖‖v_r‖ ≤ 1/4` (and typically far less).
    Generic,
}

/// One problem's inputs, already rounded to the storage type.
struct Data<S> {
    w: Vec<S>,
    u: Vec<S>,
    v: Vec<S>,
    k: Vec<S>,
    x: Vec<S>,
    q: Vec<S>,
    h0: Vec<S>,
    batch: usize,
    len: usize,
    n: usize,
    m: usize,
    rank: usize,
}

fn unit_vector(r: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-3 {
            return v.into_iter().map(|x| x / norm).collect();
        }
    }
}

impl<S: Storage> Data<S> {
    fn new(
        seed: u64,
        (batch, len, n, m, rank): (usize, usize, usize, usize, usize),
        kind: Kind,
    ) -> Self {
        let mut r = rng(seed);
        let bt = batch * len;
        let (w, u, v, k) = match kind {
            Kind::DeltaNet => {
                let (mut u, mut v, mut k) = (vec![], vec![], vec![]);
                for _ in 0..bt {
                    for j in 0..rank {
                        let key = unit_vector(&mut r, n);
                        let beta = r.gen_range(0.0..1.0) / rank as f64;
                        u.extend(key.iter().map(|&e| S::from_f64(-beta * e)));
                        v.extend(key.iter().map(|&e| S::from_f64(e)));
                        if j == 0 {
                            k.extend(key.iter().map(|&e| S::from_f64(e)));
                        }
                    }
                }
                (vec![S::from_f64(1.0); bt * n], u, v, k)
            }
            Kind::Generic => {
                let s = (0.25 / (rank * n) as f64).sqrt();
                (
                    uniform(&mut r, bt * n, 0.5, 1.0),
                    uniform(&mut r, bt * rank * n, -s, s),
                    uniform(&mut r, bt * rank * n, -s, s),
                    uniform(&mut r, bt * n, -1.0, 1.0),
                )
            }
        };
        Data {
            w,
            u,
            v,
            k,
            x: uniform(&mut r, bt * m, -1.0, 1.0),
            q: uniform(&mut r, bt * n, -1.0, 1.0),
            h0: uniform(&mut r, batch * n * m, -1.0, 1.0),
            batch,
            len,
            n,
            m,
            rank,
        }
    }

    fn problem(&self, output: DplrOutput, with_h0: bool) -> Dplr<'_, S> {
        Dplr {
            w: &self.w,
            u: &self.u,
            v: &self.v,
            k: &self.k,
            x: &self.x,
            q: Some(&self.q),
            h0: with_h0.then_some(&self.h0[..]),
            batch: self.batch,
            len: self.len,
            n: self.n,
            m: self.m,
            rank: self.rank,
            output,
        }
    }
}

/// Runs `p` into NaN-poisoned buffers (an unwritten element fails the
/// comparison) and returns `(out, h_last)`.
fn run_poisoned<S: Storage>(p: &Dplr<'_, S>, plan: PlanRequest) -> (Vec<S>, Vec<S>) {
    let poison = S::from_f64(f64::NAN);
    let mut out = vec![poison; p.output_len()];
    let mut h_last = vec![poison; p.final_len()];
    Cpu::new()
        .scan_into(p, plan, &mut out, &mut h_last)
        .expect("valid problem");
    (out, h_last)
}

/// Largest of the two relative errors (output, `h_T`) over the tolerance.
fn error_ratio<S: Storage>(
    seed: u64,
    dims: (usize, usize, usize, usize, usize),
    kind: Kind,
    with_h0: bool,
    output: DplrOutput,
    plan: PlanRequest,
) -> (f64, String) {
    let data = Data::<S>::new(seed, dims, kind);
    let p = data.problem(output, with_h0);
    let (out, h_last) = run_poisoned(&p, plan);
    let (want, want_last) = oracle::dplr(&p);
    let tol = tolerance::<S>(p.len);
    let e = oracle::rel_l2(&out, &want);
    let e_last = oracle::rel_l2(&h_last, &want_last);
    let (b, t, n, m, r) = dims;
    let msg = format!(
        "seed {seed} {:?} B={b} T={t} n={n} m={m} R={r} {kind:?} {output:?} h0={with_h0} {plan}: \
         rel L2 {e:.3e} / h_T {e_last:.3e} vs tol {tol:.1e}",
        S::DTYPE
    );
    // NaN (an unwritten output) compares as the worst ratio.
    let ratio = (e / tol).max(e_last / tol);
    (if ratio.is_nan() { f64::INFINITY } else { ratio }, msg)
}

#[allow(clippy::too_many_arguments)]
fn check<S: Storage>(
    seed: u64,
    dims: (usize, usize, usize, usize, usize),
    kind: Kind,
    with_h0: bool,
    output: DplrOutput,
    plan: PlanRequest,
) {
    let (ratio, msg) = error_ratio::<S>(seed, dims, kind, with_h0, output, plan);
    assert!(ratio <= 1.0, "{msg}");
}

fn plans() -> impl Strategy<Value = PlanRequest> {
    prop_oneof![
        Just(PlanRequest::Sequential),
        Just(PlanRequest::MinDepth),
        Just(PlanRequest::Auto),
        (1usize..40).prop_map(PlanRequest::Chunk),
    ]
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::DeltaNet), Just(Kind::Generic)]
}

fn outputs() -> impl Strategy<Value = DplrOutput> {
    prop_oneof![Just(DplrOutput::Readout), Just(DplrOutput::States)]
}

/// `(B, T, n, m, R)`: batch 1..3, T 1..199 (odd, 1, and non-multiples of
/// the chunk all occur), n and m 1..8, rank 1..4.
fn dims() -> impl Strategy<Value = (usize, usize, usize, usize, usize)> {
    (1usize..4, 1usize..200, 1usize..9, 1usize..9, 1usize..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn f32_matches_oracle(seed in any::<u64>(), dims in dims(), kind in kinds(), h0 in any::<bool>(),
                          output in outputs(), plan in plans()) {
        check::<f32>(seed, dims, kind, h0, output, plan);
    }
    #[test]
    fn f64_matches_oracle(seed in any::<u64>(), dims in dims(), kind in kinds(), h0 in any::<bool>(),
                          output in outputs(), plan in plans()) {
        check::<f64>(seed, dims, kind, h0, output, plan);
    }
    #[test]
    fn bf16_matches_oracle(seed in any::<u64>(), dims in dims(), kind in kinds(), h0 in any::<bool>(),
                           output in outputs(), plan in plans()) {
        check::<bf16>(seed, dims, kind, h0, output, plan);
    }
    #[test]
    fn f16_matches_oracle(seed in any::<u64>(), dims in dims(), kind in kinds(), h0 in any::<bool>(),
                          output in outputs(), plan in plans()) {
        check::<f16>(seed, dims, kind, h0, output, plan);
    }
}

#[test]
fn long_sequences_many_chunks() {
    // T not a multiple of the chunk, Blelloch over a non-power-of-two number
    // of chunks, with the chunk length the CPU planner uses for long
    // sequences (Auto itself keeps DPLR sequential on small machines: its
    // fold costs more than the parallelism gains).
    let dims = (1, 9_001, 3, 2, 1);
    check::<f32>(
        8,
        dims,
        Kind::Generic,
        true,
        DplrOutput::States,
        PlanRequest::Chunk(parascan::scan::plan::CPU_MIN_CHUNK),
    );
    check::<f32>(
        8,
        dims,
        Kind::Generic,
        true,
        DplrOutput::States,
        PlanRequest::Auto,
    );
    check::<f32>(
        7,
        (2, 10_007, 4, 3, 2),
        Kind::DeltaNet,
        true,
        DplrOutput::Readout,
        PlanRequest::Chunk(97),
    );
    check::<f64>(
        9,
        (1, 1_025, 5, 2, 3),
        Kind::Generic,
        false,
        DplrOutput::Readout,
        PlanRequest::MinDepth,
    );
    check::<bf16>(
        10,
        (1, 3_001, 8, 8, 4),
        Kind::DeltaNet,
        false,
        DplrOutput::Readout,
        PlanRequest::Chunk(64),
    );
}

#[test]
fn t_equals_one() {
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(5),
        PlanRequest::Auto,
    ] {
        for output in [DplrOutput::Readout, DplrOutput::States] {
            check::<f32>(11, (3, 1, 4, 3, 2), Kind::Generic, true, output, plan);
            check::<f64>(12, (2, 1, 1, 1, 1), Kind::DeltaNet, true, output, plan);
            check::<f16>(13, (1, 1, 5, 2, 3), Kind::DeltaNet, false, output, plan);
        }
    }
}

// ---------------------------------------------------------------------------
// The algebra, in f64.
// ---------------------------------------------------------------------------

/// A dense element `(M, N)` with entries uniform in `±1`.
fn random_elem(r: &mut ChaCha8Rng, n: usize, m: usize) -> (Vec<f64>, Vec<f64>) {
    (uniform(r, n * n, -1.0, 1.0), uniform(r, n * m, -1.0, 1.0))
}

/// `later ∘ earlier` through the public dense combine.
fn comb(
    n: usize,
    m: usize,
    e1: &(Vec<f64>, Vec<f64>),
    e2: &(Vec<f64>, Vec<f64>),
) -> (Vec<f64>, Vec<f64>) {
    let (mut mm, mut nn) = (vec![f64::NAN; n * n], vec![f64::NAN; n * m]);
    dplr::combine(n, m, &e1.0, &e1.1, &e2.0, &e2.1, &mut mm, &mut nn);
    (mm, nn)
}

fn app(n: usize, m: usize, e: &(Vec<f64>, Vec<f64>), h: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::NAN; n * m];
    dplr::apply(n, m, &e.0, &e.1, h, &mut out);
    out
}

/// Relative L2 distance of two f64 vectors.
fn dist(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    oracle::rel_l2(got, want)
}

#[test]
fn dense_combine_is_a_monoid() {
    let mut r = rng(31);
    for _ in 0..50 {
        let (n, m) = (r.gen_range(1..9), r.gen_range(1..9));
        let (a, b, c) = (
            random_elem(&mut r, n, m),
            random_elem(&mut r, n, m),
            random_elem(&mut r, n, m),
        );
        let left = comb(n, m, &comb(n, m, &a, &b), &c);
        let right = comb(n, m, &a, &comb(n, m, &b, &c));
        assert!(dist(&left.0, &right.0) < 1e-13, "M: n={n} m={m}");
        assert!(dist(&left.1, &right.1) < 1e-13, "N: n={n} m={m}");

        // The identity is neutral on both sides, exactly.
        let mut id = (vec![f64::NAN; n * n], vec![f64::NAN; n * m]);
        dplr::identity(n, m, &mut id.0, &mut id.1);
        assert_eq!(comb(n, m, &id, &a), a);
        assert_eq!(comb(n, m, &a, &id), a);

        // Applying a combined element is applying its parts in order.
        let h = uniform::<f64>(&mut r, n * m, -1.0, 1.0);
        let once = app(n, m, &comb(n, m, &a, &b), &h);
        let twice = app(n, m, &b, &app(n, m, &a, &h));
        assert!(dist(&once, &twice) < 1e-13, "apply: n={n} m={m}");

        // Order matters: this is a test of the convention, not only of
        // the arithmetic (n = m = 1 elements commute only by accident).
        if n > 1 {
            let swapped = comb(n, m, &b, &a);
            assert!(dist(&swapped.0, &comb(n, m, &a, &b).0) > 1e-6);
        }
    }
}

#[test]
fn low_rank_step_matches_dense_step() {
    let mut r = rng(32);
    for _ in 0..50 {
        let (n, m, rank) = (r.gen_range(1..9), r.gen_range(1..9), r.gen_range(1..5));
        let w = uniform::<f64>(&mut r, n, -1.0, 1.0);
        let u = uniform::<f64>(&mut r, rank * n, -1.0, 1.0);
        let v = uniform::<f64>(&mut r, rank * n, -1.0, 1.0);
        let k = uniform::<f64>(&mut r, n, -1.0, 1.0);
        let x = uniform::<f64>(&mut r, m, -1.0, 1.0);

        // The dense step, built by hand: A = diag(w) + Σ_r u_r v_rᵀ, B = k xᵀ.
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] = w[i];
            for j in 0..n {
                for rr in 0..rank {
                    a[i * n + j] += u[rr * n + i] * v[rr * n + j];
                }
            }
        }
        let bx: Vec<f64> = (0..n * m).map(|e| k[e / m] * x[e % m]).collect();
        let dense = (a, bx);

        let mut leaf = (vec![f64::NAN; n * n], vec![f64::NAN; n * m]);
        dplr::to_dense(n, m, rank, &w, &u, &v, &k, &x, &mut leaf.0, &mut leaf.1);
        assert!(dist(&leaf.0, &dense.0) < 1e-15 && dist(&leaf.1, &dense.1) < 1e-15);

        // fold_step(agg) = combine(agg, step).
        let agg = random_elem(&mut r, n, m);
        let want = comb(n, m, &agg, &dense);
        let mut got = agg.clone();
        let mut scratch = vec![f64::NAN; rank * n.max(m)];
        dplr::fold_step(
            n,
            m,
            rank,
            &w,
            &u,
            &v,
            &k,
            &x,
            &mut got.0,
            &mut got.1,
            &mut scratch,
        );
        assert!(
            dist(&got.0, &want.0) < 1e-13,
            "fold M: n={n} m={m} R={rank}"
        );
        assert!(
            dist(&got.1, &want.1) < 1e-13,
            "fold N: n={n} m={m} R={rank}"
        );

        // step(H) = apply(step, H), with a scratch of exactly R·m.
        let h = uniform::<f64>(&mut r, n * m, -1.0, 1.0);
        let want = app(n, m, &dense, &h);
        let mut got = h.clone();
        let mut scratch = vec![f64::NAN; rank * m];
        dplr::step(n, m, rank, &w, &u, &v, &k, &x, &mut got, &mut scratch);
        assert!(dist(&got, &want) < 1e-13, "step: n={n} m={m} R={rank}");

        // readout(H) = Hᵀ q.
        let q = uniform::<f64>(&mut r, n, -1.0, 1.0);
        let mut y = vec![f64::NAN; m];
        dplr::readout(n, m, &h, &q, &mut y);
        let want: Vec<f64> = (0..m)
            .map(|j| (0..n).map(|i| h[i * m + j] * q[i]).sum())
            .collect();
        assert!(dist(&y, &want) < 1e-14, "readout: n={n} m={m}");
    }
}

// ---------------------------------------------------------------------------
// Special cases against recurrences written out by hand.
// ---------------------------------------------------------------------------

#[test]
fn deltanet_matches_the_delta_rule() {
    // DeltaNet: S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ, o_t = S_tᵀ q_t
    // (S: n×m, unit keys). Expanding: S_t = (I − β_t k_t k_tᵀ) S_{t-1} +
    // k_t (β_t v_t)ᵀ, i.e. DPLR with w = 1, R = 1, u = −β k, v = k and input
    // x = β v.
    let (batch, len, n, m) = (2, 157, 6, 5);
    let mut r = rng(21);
    let (mut keys, mut beta) = (vec![], vec![]);
    for _ in 0..batch * len {
        keys.extend(unit_vector(&mut r, n));
        beta.push(r.gen_range(0.05..1.0));
    }
    let vals = uniform::<f64>(&mut r, batch * len * m, -1.0, 1.0);
    let q = uniform::<f64>(&mut r, batch * len * n, -1.0, 1.0);
    let s0 = uniform::<f64>(&mut r, batch * n * m, -1.0, 1.0);

    // The delta rule, step by step.
    let mut want = vec![0.0; batch * len * m];
    let mut want_last = vec![0.0; batch * n * m];
    for b in 0..batch {
        let mut s = s0[b * n * m..(b + 1) * n * m].to_vec();
        for t in 0..len {
            let bt = b * len + t;
            let key = &keys[bt * n..(bt + 1) * n];
            let val = &vals[bt * m..(bt + 1) * m];
            let pred: Vec<f64> = (0..m)
                .map(|j| (0..n).map(|i| s[i * m + j] * key[i]).sum())
                .collect();
            for i in 0..n {
                for j in 0..m {
                    s[i * m + j] += beta[bt] * key[i] * (val[j] - pred[j]);
                }
            }
            for j in 0..m {
                want[bt * m + j] = (0..n).map(|i| s[i * m + j] * q[bt * n + i]).sum();
            }
        }
        want_last[b * n * m..(b + 1) * n * m].copy_from_slice(&s);
    }

    let w = vec![1.0; batch * len * n];
    let u: Vec<f64> = (0..batch * len * n)
        .map(|e| -beta[e / n] * keys[e])
        .collect();
    let x: Vec<f64> = (0..batch * len * m)
        .map(|e| beta[e / m] * vals[e])
        .collect();
    let p = Dplr {
        w: &w,
        u: &u,
        v: &keys,
        k: &keys,
        x: &x,
        q: Some(&q),
        h0: Some(&s0),
        batch,
        len,
        n,
        m,
        rank: 1,
        output: DplrOutput::Readout,
    };
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::Chunk(16),
        PlanRequest::MinDepth,
    ] {
        let (out, last) = run_poisoned(&p, plan);
        let (e, e_last) = (dist(&out, &want), dist(&last, &want_last));
        assert!(
            e < 1e-12 && e_last < 1e-12,
            "{plan}: {e:.2e} / {e_last:.2e}"
        );
    }
}

#[test]
fn vector_state_is_a_dense_recurrence() {
    // m = 1 and x = 1: h_t = A_t h_{t-1} + k_t with h ∈ R^n, i.e. one dense
    // n×n block (BlockDiagonal with a single block), written out here.
    let (batch, len, n, rank) = (3, 61, 5, 3);
    let data = Data::<f64>::new(41, (batch, len, n, 1, rank), Kind::Generic);
    let ones = vec![1.0; batch * len];
    let p = Dplr {
        x: &ones,
        ..data.problem(DplrOutput::States, true)
    };
    let mut want = vec![0.0; batch * len * n];
    let mut want_last = vec![0.0; batch * n];
    for b in 0..batch {
        let mut h = data.h0[b * n..(b + 1) * n].to_vec();
        for t in 0..len {
            let bt = b * len + t;
            let mut block = vec![0.0; n * n];
            for i in 0..n {
                block[i * n + i] = data.w[bt * n + i];
                for j in 0..n {
                    for rr in 0..rank {
                        let at = (bt * rank + rr) * n;
                        block[i * n + j] += data.u[at + i] * data.v[at + j];
                    }
                }
            }
            h = (0..n)
                .map(|i| (0..n).map(|j| block[i * n + j] * h[j]).sum::<f64>() + data.k[bt * n + i])
                .collect();
            want[bt * n..(bt + 1) * n].copy_from_slice(&h);
        }
        want_last[b * n..(b + 1) * n].copy_from_slice(&h);
    }
    for plan in [
        PlanRequest::Sequential,
        PlanRequest::Chunk(8),
        PlanRequest::MinDepth,
    ] {
        let (out, last) = run_poisoned(&p, plan);
        let (e, e_last) = (dist(&out, &want), dist(&last, &want_last));
        assert!(
            e < 1e-12 && e_last < 1e-12,
            "{plan}: {e:.2e} / {e_last:.2e}"
        );
    }
}

/// `y_t = H_tᵀ q_t` from a `[B,T,n,m]` state sequence.
fn project<S: Storage>(states: &[S], q: &[S], n: usize, m: usize) -> Vec<f64> {
    let steps = q.len() / n;
    let mut y = vec![0.0; steps * m];
    for s in 0..steps {
        for j in 0..m {
            y[s * m + j] = (0..n)
                .map(|i| states[(s * n + i) * m + j].to_f64() * q[s * n + i].to_f64())
                .sum();
        }
    }
    y
}

#[test]
fn readout_is_states_times_q() {
    for (seed, kind, plan) in [
        (51, Kind::Generic, PlanRequest::Sequential),
        (52, Kind::DeltaNet, PlanRequest::Chunk(10)),
        (53, Kind::Generic, PlanRequest::MinDepth),
    ] {
        let dims = (2, 83, 7, 4, 2);
        let data = Data::<f64>::new(seed, dims, kind);
        let (states, last_s) = run_poisoned(&data.problem(DplrOutput::States, true), plan);
        let (y, last_y) = run_poisoned(&data.problem(DplrOutput::Readout, true), plan);
        let e = dist(&y, &project(&states, &data.q, dims.2, dims.3));
        assert!(e < 1e-14, "seed {seed} {plan}: {e:.2e}");
        // The output mode changes only what is written, not the recurrence.
        assert_eq!(last_s, last_y);

        let data = Data::<f32>::new(seed, dims, kind);
        let (states, _) = run_poisoned(&data.problem(DplrOutput::States, true), plan);
        let (y, _) = run_poisoned(&data.problem(DplrOutput::Readout, true), plan);
        let e = oracle::rel_l2(&y, &project(&states, &data.q, dims.2, dims.3));
        assert!(
            e < tolerance::<f32>(dims.1),
            "f32 seed {seed} {plan}: {e:.2e}"
        );
    }
}

#[test]
fn states_output_does_not_need_q() {
    let data = Data::<f32>::new(61, (2, 20, 3, 2, 1), Kind::Generic);
    let with_q = data.problem(DplrOutput::States, false);
    let without_q = Dplr { q: None, ..with_q };
    let a = run_poisoned(&with_q, PlanRequest::Chunk(3));
    let b = run_poisoned(&without_q, PlanRequest::Chunk(3));
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

/// `B = 2, T = 5, n = 3, m = 2, R = 2`.
fn small() -> Data<f32> {
    Data::new(71, (2, 5, 3, 2, 2), Kind::Generic)
}

#[test]
fn wrong_lengths_name_the_argument() {
    let d = small();
    let (btn, btrn, btm, bnm) = (30, 60, 20, 12);
    let cases: [(&str, usize); 7] = [
        ("w", btn),
        ("u", btrn),
        ("v", btrn),
        ("k", btn),
        ("x", btm),
        ("q", btn),
        ("h0", bnm),
    ];
    for (arg, expected) in cases {
        let base = d.problem(DplrOutput::Readout, true);
        let cut = |s: &'static str, full: &[f32]| -> usize {
            if s == arg {
                full.len() - 1
            } else {
                full.len()
            }
        };
        let (w, u, v, k, x, q, h0) = (
            &d.w[..cut("w", &d.w)],
            &d.u[..cut("u", &d.u)],
            &d.v[..cut("v", &d.v)],
            &d.k[..cut("k", &d.k)],
            &d.x[..cut("x", &d.x)],
            &d.q[..cut("q", &d.q)],
            &d.h0[..cut("h0", &d.h0)],
        );
        let p = Dplr {
            w,
            u,
            v,
            k,
            x,
            q: Some(q),
            h0: Some(h0),
            ..base
        };
        match Cpu::new().scan(&p, PlanRequest::Auto) {
            Err(Error::Shape {
                arg: a,
                expected: e,
                got,
                ..
            }) => {
                assert_eq!((a, e, got), (arg, expected, expected - 1), "argument {arg}");
            }
            other => panic!("argument {arg}: expected a shape error, got {other:?}"),
        }
    }
}

#[test]
fn zero_sizes_are_size_errors() {
    let d = small();
    let base = d.problem(DplrOutput::Readout, false);
    let cases = [
        ("batch", Dplr { batch: 0, ..base }),
        ("len", Dplr { len: 0, ..base }),
        ("n", Dplr { n: 0, ..base }),
        ("m", Dplr { m: 0, ..base }),
        ("rank", Dplr { rank: 0, ..base }),
    ];
    for (arg, p) in cases {
        match Cpu::new().scan(&p, PlanRequest::Sequential) {
            Err(Error::Size { arg: a, got: 0, .. }) => assert_eq!(a, arg),
            other => panic!("{arg} = 0: expected a size error, got {other:?}"),
        }
    }
}

#[test]
fn readout_without_q_is_an_error() {
    let d = small();
    let p = Dplr {
        q: None,
        ..d.problem(DplrOutput::Readout, false)
    };
    match Cpu::new().scan(&p, PlanRequest::Auto) {
        Err(Error::Shape {
            arg: "q",
            expected: 30,
            got: 0,
            ..
        }) => {}
        other => panic!("expected a shape error on q, got {other:?}"),
    }
}

#[test]
fn output_buffers_are_checked_before_running() {
    let d = small();
    for (output, out_len) in [(DplrOutput::Readout, 20), (DplrOutput::States, 60)] {
        let p = d.problem(output, true);
        assert_eq!((p.output_len(), p.final_len()), (out_len, 12));
        let cpu = Cpu::new();
        let mut out = vec![f32::NAN; out_len + 1];
        let mut last = vec![f32::NAN; 12];
        match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut last) {
            Err(Error::Shape {
                arg: "out",
                expected,
                got,
                ..
            }) => assert_eq!((expected, got), (out_len, out_len + 1)),
            other => panic!("{output:?}: expected a shape error on out, got {other:?}"),
        }
        let mut out = vec![f32::NAN; out_len];
        let mut last = vec![f32::NAN; 11];
        match cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut last) {
            Err(Error::Shape {
                arg: "h_last",
                expected: 12,
                got: 11,
                ..
            }) => {}
            other => panic!("{output:?}: expected a shape error on h_last, got {other:?}"),
        }
        // Nothing ran: the buffers are untouched.
        assert!(out.iter().chain(&last).all(|x| x.is_nan()));
    }
}

#[test]
fn non_finite_inputs_are_reported() {
    let d = small();
    for arg in ["w", "u", "v", "k", "x", "q"] {
        let mut bad = vec![d.w.clone(), d.u.clone(), d.v.clone(), d.k.clone()];
        bad.push(d.x.clone());
        bad.push(d.q.clone());
        let slot = ["w", "u", "v", "k", "x", "q"]
            .iter()
            .position(|&a| a == arg)
            .unwrap();
        bad[slot][3] = if slot % 2 == 0 {
            f32::NAN
        } else {
            f32::INFINITY
        };
        let p = Dplr {
            w: &bad[0],
            u: &bad[1],
            v: &bad[2],
            k: &bad[3],
            x: &bad[4],
            q: Some(&bad[5]),
            ..d.problem(DplrOutput::Readout, false)
        };
        p.validate().expect("shapes are fine");
        match p.check_finite() {
            Err(Error::NonFinite {
                arg: a, index: 3, ..
            }) => assert_eq!(a, arg),
            other => panic!("{arg}: expected a non-finite error, got {other:?}"),
        }
        if arg == "q" {
            // The States output does not read q.
            let states = Dplr {
                output: DplrOutput::States,
                ..p
            };
            states.check_finite().expect("q is not read for States");
        }
    }
    // h0 is checked by validate (it seeds every chunk's carry).
    let mut h0 = d.h0.clone();
    h0[5] = f32::NEG_INFINITY;
    let p = Dplr {
        h0: Some(&h0),
        ..d.problem(DplrOutput::Readout, false)
    };
    match Cpu::new().scan(&p, PlanRequest::Auto) {
        Err(Error::NonFinite {
            arg: "h0",
            index: 5,
            ..
        }) => {}
        other => panic!("h0: expected a non-finite error, got {other:?}"),
    }
}

#[test]
fn chunk_zero_is_a_plan_error() {
    let d = small();
    let p = d.problem(DplrOutput::Readout, false);
    assert!(matches!(
        Cpu::new().scan(&p, PlanRequest::Chunk(0)),
        Err(Error::Plan(_))
    ));
}

#[test]
fn bytes_moved_counts_inputs_and_outputs() {
    let d = small();
    // Readout: w, k, q 3·30; u, v 2·60; x 20; y 20.
    assert_eq!(
        d.problem(DplrOutput::Readout, true).bytes_moved(),
        (90 + 120 + 20 + 20) * 4
    );
    // States: q is not read; H 60.
    assert_eq!(
        d.problem(DplrOutput::States, true).bytes_moved(),
        (60 + 120 + 20 + 60) * 4
    );
    let h = Data::<bf16>::new(71, (2, 5, 3, 2, 2), Kind::Generic);
    assert_eq!(
        h.problem(DplrOutput::Readout, false).bytes_moved(),
        (90 + 120 + 20 + 20) * 2
    );
}
