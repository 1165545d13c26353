//! Reverse scans and the backward pass of every linear family on the CPU
//! engine: reverse scans against the f64 oracle run on the time-reversed
//! inputs; gradients against central finite differences of the f64 oracle
//! (small shapes, relative 1e-6 in f64) and against an independent f64
//! sequential adjoint (`common::adjoint`, long `T`, the forward's
//! tolerances, f32 and f64); the reverse scan's measured depth against the
//! plan's formula.

mod common;

use common::{adjoint, rng, tolerance, uniform};
use parascan::backend::Cpu;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::diagonal::Diagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::{Layout, LinearProblem};
use parascan::scan::depth::measure_reverse;
use parascan::scan::plan::{depth_formula, ScanShape};
use parascan::{grad, oracle, Plan, PlanRequest, Storage};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

const PLANS: [PlanRequest; 5] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(3),
    PlanRequest::Chunk(64),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
];

fn f64s<S: Storage>(v: &[S]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn assert_rel<S: Storage>(what: &str, got: &[S], want: &[f64], tol: f64) {
    let e = oracle::rel_l2(got, want);
    assert!(e <= tol, "{what}: relative L2 error {e:.3e} > {tol:.1e}");
}

/// Reverses the time axis of `[B,T,w]` data.
fn flip<T: Copy>(v: &[T], batch: usize, len: usize, w: usize) -> Vec<T> {
    let mut out = v.to_vec();
    for b in 0..batch {
        for t in 0..len {
            let (src, dst) = ((b * len + t) * w, (b * len + len - 1 - t) * w);
            out[dst..dst + w].copy_from_slice(&v[src..src + w]);
        }
    }
    out
}

/// Central finite differences of `loss` with respect to every entry of `x`.
fn fd(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut y = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            y[i] = x[i] + h;
            let up = loss(&y);
            y[i] = x[i] - h;
            let down = loss(&y);
            y[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `Σ gy·out + Σ gh·h_T` of an oracle result.
fn loss_of((out, last): (Vec<f64>, Vec<f64>), gy: &[f64], gh: &[f64]) -> f64 {
    out.iter().zip(gy).map(|(a, b)| a * b).sum::<f64>()
        + last.iter().zip(gh).map(|(a, b)| a * b).sum::<f64>()
}

// ---------------------------------------------------------------------------
// Reverse scans.
// ---------------------------------------------------------------------------

fn reverse_diagonal<S: Storage>(seed: u64, batch: usize, len: usize, dim: usize, layout: Layout) {
    let mut r = rng(seed);
    let n = batch * len * dim;
    let a: Vec<S> = uniform(&mut r, n, -1.0, 1.0);
    let b: Vec<S> = uniform(&mut r, n, -1.0, 1.0);
    let h0: Vec<S> = uniform(&mut r, batch * dim, -1.0, 1.0);
    // Time reversal in either layout: Bdt is [B·D, T, 1], Btd is [B, T, D].
    let (rows, w) = match layout {
        Layout::Btd => (batch, dim),
        Layout::Bdt => (batch * dim, 1),
    };
    let (ra, rb) = (flip(&a, rows, len, w), flip(&b, rows, len, w));
    let fwd = Diagonal {
        a: &ra,
        b: &rb,
        h0: Some(&h0),
        batch,
        len,
        dim,
        layout,
    };
    let (want, want_last) = oracle::diagonal(&fwd);
    let want = flip(&want, rows, len, w);
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch,
        len,
        dim,
        layout,
    };
    for plan in PLANS {
        let run = Cpu::new().scan_reverse(&p, plan).unwrap();
        let tol = tolerance::<S>(len);
        assert_rel(
            &format!("diagonal reverse {layout} {plan} seed {seed}"),
            &run.out,
            &want,
            tol,
        );
        assert_rel("diagonal reverse h_last", &run.h_last, &want_last, tol);
    }
}

#[test]
fn reverse_scans_match_the_time_reversed_oracle() {
    for (seed, len) in [(1u64, 1usize), (2, 7), (3, 200), (4, 1000)] {
        for layout in [Layout::Btd, Layout::Bdt] {
            reverse_diagonal::<f32>(seed, 2, len, 5, layout);
            reverse_diagonal::<f64>(seed, 3, len, 3, layout);
            reverse_diagonal::<half::bf16>(seed, 2, len, 4, layout);
        }
        let mut r = rng(seed + 100);
        let (batch, n) = (2, 6);
        let tot = batch * len * n;
        // PermDiagonal.
        let perm: Vec<u8> = (0..batch * len)
            .flat_map(|_| {
                let mut p: Vec<u8> = (0..n as u8).collect();
                p.shuffle(&mut r);
                p
            })
            .collect();
        let d: Vec<f32> = uniform(&mut r, tot, -1.0, 1.0);
        let b: Vec<f32> = uniform(&mut r, tot, -1.0, 1.0);
        let h0: Vec<f32> = uniform(&mut r, batch * n, -1.0, 1.0);
        let (rp, rd, rb) = (
            flip(&perm, batch, len, n),
            flip(&d, batch, len, n),
            flip(&b, batch, len, n),
        );
        let fwd = PermDiagonal {
            perm: &rp,
            d: &rd,
            b: &rb,
            h0: Some(&h0),
            batch,
            len,
            n,
        };
        let (want, want_last) = oracle::perm_diagonal(&fwd);
        let want = flip(&want, batch, len, n);
        let p = PermDiagonal {
            perm: &perm,
            d: &d,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            n,
        };
        // BlockDiagonal (k = 3, two blocks).
        let (nb, k) = (2, 3);
        let a: Vec<f32> = uniform(&mut r, batch * len * nb * k * k, -0.3, 0.3);
        let ra = flip(&a, batch, len, nb * k * k);
        let bfwd = BlockDiagonal {
            a: &ra,
            b: &rb,
            h0: Some(&h0),
            batch,
            len,
            blocks: nb,
            block: k,
        };
        let (bwant, bwant_last) = oracle::block_diagonal(&bfwd);
        let bwant = flip(&bwant, batch, len, n);
        let bp = BlockDiagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            blocks: nb,
            block: k,
        };
        // DPLR, both outputs.
        let dd = DplrData::<f32>::new(&mut r, batch, len, 3, 2, 2);
        let flipped = dd.flipped();
        for plan in PLANS {
            let tol = tolerance::<f32>(len);
            let run = Cpu::new().scan_reverse(&p, plan).unwrap();
            assert_rel(
                &format!("perm-diagonal reverse {plan} T={len}"),
                &run.out,
                &want,
                tol,
            );
            assert_rel("perm-diagonal reverse h_last", &run.h_last, &want_last, tol);
            let run = Cpu::new().scan_reverse(&bp, plan).unwrap();
            assert_rel(
                &format!("block-diagonal reverse {plan} T={len}"),
                &run.out,
                &bwant,
                tol,
            );
            assert_rel(
                "block-diagonal reverse h_last",
                &run.h_last,
                &bwant_last,
                tol,
            );
            for output in [DplrOutput::Readout, DplrOutput::States] {
                let (want, want_last) = oracle::dplr(&flipped.problem(output));
                let w = if output == DplrOutput::Readout {
                    dd.m
                } else {
                    dd.n * dd.m
                };
                let want = flip(&want, batch, len, w);
                let run = Cpu::new().scan_reverse(&dd.problem(output), plan).unwrap();
                assert_rel(
                    &format!("dplr reverse {output:?} {plan} T={len}"),
                    &run.out,
                    &want,
                    tol,
                );
                assert_rel("dplr reverse h_last", &run.h_last, &want_last, tol);
            }
        }
    }
}

#[test]
fn reverse_scan_depth_equals_the_forward_formula_and_grows_like_log_t() {
    for len in [1usize, 2, 3, 5, 8, 31, 64, 100, 257, 1000, 4096, 10_007] {
        for req in PLANS
            .into_iter()
            .chain([PlanRequest::Chunk(1), PlanRequest::Chunk(16)])
        {
            let plan = Plan::resolve(req, ScanShape::new(1, len), 2).unwrap();
            let m = measure_reverse(len, &plan);
            assert_eq!(m.depth, plan.depth, "reverse depth, T={len} {req}");
            assert_eq!(m.work, plan.work, "reverse work, T={len} {req}");
        }
    }
    for k in 4..18 {
        let t = 1usize << k;
        let plan = Plan::resolve(PlanRequest::MinDepth, ScanShape::new(1, t), 1).unwrap();
        assert_eq!(
            measure_reverse(t, &plan).depth,
            (2 * k + 1) as u64,
            "min-depth T=2^{k}"
        );
        let plan = Plan::resolve(PlanRequest::Chunk(16), ScanShape::new(1, t), 1).unwrap();
        assert_eq!(measure_reverse(t, &plan).depth, depth_formula(t, 16));
    }
}

// ---------------------------------------------------------------------------
// Diagonal.
// ---------------------------------------------------------------------------

struct DiagCase {
    a: Vec<f64>,
    b: Vec<f64>,
    h0: Vec<f64>,
    gy: Vec<f64>,
    gh: Vec<f64>,
    batch: usize,
    len: usize,
    dim: usize,
    layout: Layout,
}

impl DiagCase {
    fn new<S: Storage>(
        r: &mut ChaCha8Rng,
        batch: usize,
        len: usize,
        dim: usize,
        layout: Layout,
    ) -> Self {
        let n = batch * len * dim;
        let round = |v: Vec<S>| f64s(&v);
        DiagCase {
            a: round(uniform::<S>(r, n, -0.99, 0.99)),
            b: round(uniform::<S>(r, n, -1.0, 1.0)),
            h0: round(uniform::<S>(r, batch * dim, -1.0, 1.0)),
            gy: round(uniform::<S>(r, n, -1.0, 1.0)),
            gh: round(uniform::<S>(r, batch * dim, -1.0, 1.0)),
            batch,
            len,
            dim,
            layout,
        }
    }
    fn loss(&self, a: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let p = Diagonal {
            a,
            b,
            h0: Some(h0),
            batch: self.batch,
            len: self.len,
            dim: self.dim,
            layout: self.layout,
        };
        loss_of(oracle::diagonal(&p), &self.gy, &self.gh)
    }
    fn engine<S: Storage>(&self, plan: PlanRequest) -> grad::DiagonalGrads<S> {
        let s = |v: &[f64]| v.iter().map(|&x| S::from_f64(x)).collect::<Vec<S>>();
        let (a, b, h0, gy, gh) = (
            s(&self.a),
            s(&self.b),
            s(&self.h0),
            s(&self.gy),
            s(&self.gh),
        );
        let p = Diagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
            dim: self.dim,
            layout: self.layout,
        };
        let cpu = Cpu::new();
        let fwd = cpu.scan(&p, plan).unwrap();
        grad::diagonal(&cpu, &p, &fwd.out, &gy, Some(&gh), plan).unwrap()
    }
}

#[test]
fn diagonal_gradients_match_finite_differences() {
    for layout in [Layout::Btd, Layout::Bdt] {
        let c = DiagCase::new::<f64>(&mut rng(11), 2, 9, 3, layout);
        let want_a = fd(&c.a, |a| c.loss(a, &c.b, &c.h0));
        let want_b = fd(&c.b, |b| c.loss(&c.a, b, &c.h0));
        let want_h0 = fd(&c.h0, |h0| c.loss(&c.a, &c.b, h0));
        for plan in PLANS {
            let g = c.engine::<f64>(plan);
            assert_rel(&format!("diagonal da {layout} {plan}"), &g.a, &want_a, 1e-6);
            assert_rel(&format!("diagonal db {layout} {plan}"), &g.b, &want_b, 1e-6);
            assert_rel(
                &format!("diagonal dh0 {layout} {plan}"),
                &g.h0,
                &want_h0,
                1e-6,
            );
        }
    }
}

fn diagonal_long<S: Storage>(seed: u64, len: usize) {
    for layout in [Layout::Btd, Layout::Bdt] {
        let c = DiagCase::new::<S>(&mut rng(seed), 2, len, 4, layout);
        let (da, db, dh0) = adjoint::diagonal(
            &c.a,
            &c.b,
            &c.h0,
            &c.gy,
            &c.gh,
            c.batch,
            len,
            c.dim,
            layout == Layout::Bdt,
        );
        let tol = tolerance::<S>(len);
        for plan in PLANS {
            let g = c.engine::<S>(plan);
            let what = format!("diagonal {:?} {layout} {plan} T={len}", S::DTYPE);
            assert_rel(&format!("{what} da"), &g.a, &da, tol);
            assert_rel(&format!("{what} db"), &g.b, &db, tol);
            assert_rel(&format!("{what} dh0"), &g.h0, &dh0, tol);
        }
    }
}

#[test]
fn diagonal_gradients_match_the_sequential_adjoint_on_long_t() {
    diagonal_long::<f64>(12, 5000);
    diagonal_long::<f32>(13, 5000);
    diagonal_long::<f32>(14, 1);
}

// ---------------------------------------------------------------------------
// PermDiagonal.
// ---------------------------------------------------------------------------

struct PdCase {
    perm: Vec<u8>,
    d: Vec<f64>,
    b: Vec<f64>,
    h0: Vec<f64>,
    gy: Vec<f64>,
    gh: Vec<f64>,
    batch: usize,
    len: usize,
    n: usize,
}

impl PdCase {
    fn new<S: Storage>(r: &mut ChaCha8Rng, batch: usize, len: usize, n: usize) -> Self {
        let tot = batch * len * n;
        let perm = (0..batch * len)
            .flat_map(|_| {
                let mut p: Vec<u8> = (0..n as u8).collect();
                p.shuffle(r);
                p
            })
            .collect();
        let round = |v: Vec<S>| f64s(&v);
        PdCase {
            perm,
            d: round(uniform::<S>(r, tot, -0.99, 0.99)),
            b: round(uniform::<S>(r, tot, -1.0, 1.0)),
            h0: round(uniform::<S>(r, batch * n, -1.0, 1.0)),
            gy: round(uniform::<S>(r, tot, -1.0, 1.0)),
            gh: round(uniform::<S>(r, batch * n, -1.0, 1.0)),
            batch,
            len,
            n,
        }
    }
    fn loss(&self, d: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let p = PermDiagonal {
            perm: &self.perm,
            d,
            b,
            h0: Some(h0),
            batch: self.batch,
            len: self.len,
            n: self.n,
        };
        loss_of(oracle::perm_diagonal(&p), &self.gy, &self.gh)
    }
    fn engine<S: Storage>(&self, plan: PlanRequest) -> grad::PermDiagonalGrads<S> {
        let s = |v: &[f64]| v.iter().map(|&x| S::from_f64(x)).collect::<Vec<S>>();
        let (d, b, h0, gy, gh) = (
            s(&self.d),
            s(&self.b),
            s(&self.h0),
            s(&self.gy),
            s(&self.gh),
        );
        let p = PermDiagonal {
            perm: &self.perm,
            d: &d,
            b: &b,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
            n: self.n,
        };
        let cpu = Cpu::new();
        let fwd = cpu.scan(&p, plan).unwrap();
        grad::perm_diagonal(&cpu, &p, &fwd.out, &gy, Some(&gh), plan).unwrap()
    }
}

#[test]
fn perm_diagonal_gradients_match_finite_differences() {
    let c = PdCase::new::<f64>(&mut rng(21), 2, 8, 5);
    let want_d = fd(&c.d, |d| c.loss(d, &c.b, &c.h0));
    let want_b = fd(&c.b, |b| c.loss(&c.d, b, &c.h0));
    let want_h0 = fd(&c.h0, |h0| c.loss(&c.d, &c.b, h0));
    for plan in PLANS {
        let g = c.engine::<f64>(plan);
        assert_rel(&format!("pd dd {plan}"), &g.d, &want_d, 1e-6);
        assert_rel(&format!("pd db {plan}"), &g.b, &want_b, 1e-6);
        assert_rel(&format!("pd dh0 {plan}"), &g.h0, &want_h0, 1e-6);
    }
}

fn perm_diagonal_long<S: Storage>(seed: u64, len: usize) {
    let c = PdCase::new::<S>(&mut rng(seed), 2, len, 7);
    let perm: Vec<usize> = c.perm.iter().map(|&p| p as usize).collect();
    let (dd, db, dh0) =
        adjoint::perm_diagonal(&perm, &c.d, &c.b, &c.h0, &c.gy, &c.gh, c.batch, len, c.n);
    let tol = tolerance::<S>(len);
    for plan in PLANS {
        let g = c.engine::<S>(plan);
        let what = format!("pd {:?} {plan} T={len}", S::DTYPE);
        assert_rel(&format!("{what} dd"), &g.d, &dd, tol);
        assert_rel(&format!("{what} db"), &g.b, &db, tol);
        assert_rel(&format!("{what} dh0"), &g.h0, &dh0, tol);
    }
}

#[test]
fn perm_diagonal_gradients_match_the_sequential_adjoint_on_long_t() {
    perm_diagonal_long::<f64>(22, 3000);
    perm_diagonal_long::<f32>(23, 3000);
    perm_diagonal_long::<f32>(24, 1);
}

// ---------------------------------------------------------------------------
// BlockDiagonal / Dense.
// ---------------------------------------------------------------------------

struct BdCase {
    a: Vec<f64>,
    b: Vec<f64>,
    h0: Vec<f64>,
    gy: Vec<f64>,
    gh: Vec<f64>,
    batch: usize,
    len: usize,
    nb: usize,
    k: usize,
}

impl BdCase {
    fn new<S: Storage>(r: &mut ChaCha8Rng, batch: usize, len: usize, nb: usize, k: usize) -> Self {
        let n = nb * k;
        let round = |v: Vec<S>| f64s(&v);
        // Entries in ±0.9/k: every block has ∞-norm below 0.9 (contractive).
        let s = 0.9 / k as f64;
        BdCase {
            a: round(uniform::<S>(r, batch * len * nb * k * k, -s, s)),
            b: round(uniform::<S>(r, batch * len * n, -1.0, 1.0)),
            h0: round(uniform::<S>(r, batch * n, -1.0, 1.0)),
            gy: round(uniform::<S>(r, batch * len * n, -1.0, 1.0)),
            gh: round(uniform::<S>(r, batch * n, -1.0, 1.0)),
            batch,
            len,
            nb,
            k,
        }
    }
    fn loss(&self, a: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let p = BlockDiagonal {
            a,
            b,
            h0: Some(h0),
            batch: self.batch,
            len: self.len,
            blocks: self.nb,
            block: self.k,
        };
        loss_of(oracle::block_diagonal(&p), &self.gy, &self.gh)
    }
    fn engine<S: Storage>(&self, plan: PlanRequest) -> grad::BlockDiagonalGrads<S> {
        let s = |v: &[f64]| v.iter().map(|&x| S::from_f64(x)).collect::<Vec<S>>();
        let (a, b, h0, gy, gh) = (
            s(&self.a),
            s(&self.b),
            s(&self.h0),
            s(&self.gy),
            s(&self.gh),
        );
        let p = BlockDiagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
            blocks: self.nb,
            block: self.k,
        };
        let cpu = Cpu::new();
        let fwd = cpu.scan(&p, plan).unwrap();
        grad::block_diagonal(&cpu, &p, &fwd.out, &gy, Some(&gh), plan).unwrap()
    }
}

#[test]
fn block_diagonal_gradients_match_finite_differences() {
    // Two 3×3 blocks, then one dense 4×4 block.
    for (nb, k) in [(2, 3), (1, 4)] {
        let c = BdCase::new::<f64>(&mut rng(31), 2, 7, nb, k);
        let want_a = fd(&c.a, |a| c.loss(a, &c.b, &c.h0));
        let want_b = fd(&c.b, |b| c.loss(&c.a, b, &c.h0));
        let want_h0 = fd(&c.h0, |h0| c.loss(&c.a, &c.b, h0));
        for plan in PLANS {
            let g = c.engine::<f64>(plan);
            assert_rel(&format!("bd da nb={nb} k={k} {plan}"), &g.a, &want_a, 1e-6);
            assert_rel(&format!("bd db nb={nb} k={k} {plan}"), &g.b, &want_b, 1e-6);
            assert_rel(
                &format!("bd dh0 nb={nb} k={k} {plan}"),
                &g.h0,
                &want_h0,
                1e-6,
            );
        }
    }
}

fn block_diagonal_long<S: Storage>(seed: u64, len: usize, nb: usize, k: usize) {
    let c = BdCase::new::<S>(&mut rng(seed), 2, len, nb, k);
    let (da, db, dh0) =
        adjoint::block_diagonal(&c.a, &c.b, &c.h0, &c.gy, &c.gh, c.batch, len, nb, k);
    let tol = tolerance::<S>(len);
    for plan in PLANS {
        let g = c.engine::<S>(plan);
        let what = format!("bd {:?} nb={nb} k={k} {plan} T={len}", S::DTYPE);
        assert_rel(&format!("{what} da"), &g.a, &da, tol);
        assert_rel(&format!("{what} db"), &g.b, &db, tol);
        assert_rel(&format!("{what} dh0"), &g.h0, &dh0, tol);
    }
}

#[test]
fn block_diagonal_gradients_match_the_sequential_adjoint_on_long_t() {
    block_diagonal_long::<f64>(32, 2000, 2, 3);
    block_diagonal_long::<f32>(33, 2000, 2, 3);
    block_diagonal_long::<f32>(34, 1000, 1, 5);
}

// ---------------------------------------------------------------------------
// DPLR.
// ---------------------------------------------------------------------------

struct DplrData<S> {
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

impl<S: Storage> DplrData<S> {
    fn new(r: &mut ChaCha8Rng, batch: usize, len: usize, n: usize, m: usize, rank: usize) -> Self {
        let (btn, btrn) = (batch * len * n, batch * len * rank * n);
        // R·n·s² = 1/4 bounds the low-rank part's norm by 1/4.
        let s = (0.25 / (rank * n) as f64).sqrt();
        DplrData {
            w: uniform(r, btn, 0.5, 0.95),
            u: uniform(r, btrn, -s, s),
            v: uniform(r, btrn, -s, s),
            k: uniform(r, btn, -1.0, 1.0),
            x: uniform(r, batch * len * m, -1.0, 1.0),
            q: uniform(r, btn, -1.0, 1.0),
            h0: uniform(r, batch * n * m, -1.0, 1.0),
            batch,
            len,
            n,
            m,
            rank,
        }
    }
    fn problem(&self, output: DplrOutput) -> Dplr<'_, S> {
        Dplr {
            w: &self.w,
            u: &self.u,
            v: &self.v,
            k: &self.k,
            x: &self.x,
            q: Some(&self.q),
            h0: Some(&self.h0),
            batch: self.batch,
            len: self.len,
            n: self.n,
            m: self.m,
            rank: self.rank,
            output,
        }
    }
    fn flipped(&self) -> Self {
        let (b, t, n, m, r) = (self.batch, self.len, self.n, self.m, self.rank);
        DplrData {
            w: flip(&self.w, b, t, n),
            u: flip(&self.u, b, t, r * n),
            v: flip(&self.v, b, t, r * n),
            k: flip(&self.k, b, t, n),
            x: flip(&self.x, b, t, m),
            q: flip(&self.q, b, t, n),
            h0: self.h0.clone(),
            ..*self
        }
    }
    fn to_f64(&self) -> DplrData<f64> {
        DplrData {
            w: f64s(&self.w),
            u: f64s(&self.u),
            v: f64s(&self.v),
            k: f64s(&self.k),
            x: f64s(&self.x),
            q: f64s(&self.q),
            h0: f64s(&self.h0),
            batch: self.batch,
            len: self.len,
            n: self.n,
            m: self.m,
            rank: self.rank,
        }
    }
}

/// The seven inputs of a DPLR problem by index, for finite differences.
fn dplr_field(d: &mut DplrData<f64>, i: usize) -> &mut Vec<f64> {
    match i {
        0 => &mut d.w,
        1 => &mut d.u,
        2 => &mut d.v,
        3 => &mut d.k,
        4 => &mut d.x,
        5 => &mut d.q,
        _ => &mut d.h0,
    }
}

const DPLR_FIELDS: [&str; 7] = ["w", "u", "v", "k", "x", "q", "h0"];

fn dplr_engine<S: Storage>(
    d: &DplrData<S>,
    output: DplrOutput,
    gy: &[S],
    gh: &[S],
    plan: PlanRequest,
    saved: bool,
) -> Vec<Option<Vec<S>>> {
    let cpu = Cpu::new();
    let p = d.problem(output);
    let states = saved.then(|| cpu.scan(&d.problem(DplrOutput::States), plan).unwrap().out);
    let g = grad::dplr(&cpu, &p, states.as_deref(), gy, Some(gh), plan).unwrap();
    vec![
        Some(g.w),
        Some(g.u),
        Some(g.v),
        Some(g.k),
        Some(g.x),
        g.q,
        Some(g.h0),
    ]
}

#[test]
fn dplr_gradients_match_finite_differences() {
    let mut r = rng(41);
    let d = DplrData::<f64>::new(&mut r, 2, 6, 3, 2, 2);
    for output in [DplrOutput::Readout, DplrOutput::States] {
        let w = if output == DplrOutput::Readout {
            d.m
        } else {
            d.n * d.m
        };
        let gy: Vec<f64> = uniform(&mut r, d.batch * d.len * w, -1.0, 1.0);
        let gh: Vec<f64> = uniform(&mut r, d.batch * d.n * d.m, -1.0, 1.0);
        let want: Vec<Vec<f64>> = (0..7)
            .map(|f| {
                let base = dplr_field(&mut d.to_f64(), f).clone();
                fd(&base, |x| {
                    let mut e = d.to_f64();
                    *dplr_field(&mut e, f) = x.to_vec();
                    loss_of(oracle::dplr(&e.problem(output)), &gy, &gh)
                })
            })
            .collect();
        for plan in PLANS {
            for saved in [true, false] {
                let got = dplr_engine(&d, output, &gy, &gh, plan, saved);
                for (f, (g, want)) in got.iter().zip(&want).enumerate() {
                    let name = DPLR_FIELDS[f];
                    match g {
                        Some(g) => assert_rel(
                            &format!("dplr d{name} {output:?} {plan} saved={saved}"),
                            g,
                            want,
                            1e-6,
                        ),
                        // States mode reads no q: its gradient is zero.
                        None => {
                            assert!(output == DplrOutput::States && want.iter().all(|&x| x == 0.0))
                        }
                    }
                }
            }
        }
    }
}

fn dplr_long<S: Storage>(seed: u64, len: usize) {
    let mut r = rng(seed);
    let d = DplrData::<S>::new(&mut r, 2, len, 4, 3, 2);
    let e = d.to_f64();
    for output in [DplrOutput::Readout, DplrOutput::States] {
        let readout = output == DplrOutput::Readout;
        let w = if readout { d.m } else { d.n * d.m };
        let gy: Vec<S> = uniform(&mut r, d.batch * len * w, -1.0, 1.0);
        let gh: Vec<S> = uniform(&mut r, d.batch * d.n * d.m, -1.0, 1.0);
        let want = adjoint::dplr(
            &e.w,
            &e.u,
            &e.v,
            &e.k,
            &e.x,
            &e.q,
            &e.h0,
            &f64s(&gy),
            &f64s(&gh),
            (d.batch, len, d.n, d.m, d.rank),
            readout,
        );
        let want = [want.w, want.u, want.v, want.k, want.x, want.q, want.h0];
        let tol = tolerance::<S>(len);
        for plan in PLANS {
            let got = dplr_engine(&d, output, &gy, &gh, plan, plan == PlanRequest::Auto);
            for (f, (g, want)) in got.iter().zip(&want).enumerate() {
                if let Some(g) = g {
                    let what = format!(
                        "dplr d{} {:?} {output:?} {plan} T={len}",
                        DPLR_FIELDS[f],
                        S::DTYPE
                    );
                    assert_rel(&what, g, want, tol);
                }
            }
        }
    }
}

#[test]
fn dplr_gradients_match_the_sequential_adjoint_on_long_t() {
    dplr_long::<f64>(42, 600);
    dplr_long::<f32>(43, 600);
    dplr_long::<f32>(44, 1);
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

#[test]
fn backward_shape_errors_name_the_argument() {
    let (a, b) = (vec![0.5f32; 12], vec![1.0f32; 12]);
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: 2,
        len: 3,
        dim: 2,
        layout: Layout::Btd,
    };
    let cpu = Cpu::new();
    let out = cpu.scan(&p, PlanRequest::Auto).unwrap().out;
    let err = |r: parascan::Result<grad::DiagonalGrads<f32>>| match r {
        Err(parascan::Error::Shape { arg, .. }) => arg,
        other => panic!("expected a shape error, got {other:?}"),
    };
    assert_eq!(
        err(grad::diagonal(
            &cpu,
            &p,
            &out[1..],
            &out,
            None,
            PlanRequest::Auto
        )),
        "states"
    );
    assert_eq!(
        err(grad::diagonal(
            &cpu,
            &p,
            &out,
            &out[1..],
            None,
            PlanRequest::Auto
        )),
        "d_out"
    );
    assert_eq!(
        err(grad::diagonal(
            &cpu,
            &p,
            &out,
            &out,
            Some(&out),
            PlanRequest::Auto
        )),
        "d_h_last"
    );
    assert!(p.validate().is_ok());
}
