//! The Newton kernels' cell evaluation and Jacobian checked directly (issue
//! 14, item 6), on the SIMT emulator: every cell's `*_assemble` kernel is
//! launched on a given guess and its `f` and `J` (recovered from the
//! scan inputs `A_t = J_t`, `b_t = f_t − J_t h_{t-1}`) are compared with
//! the CPU cell in f32, and with central finite differences of the CPU cell
//! in f64 (which also checks the CPU cell's Jacobian and its declared
//! structure). gru's fused look-back path exposes no `f`/`J`, so one fused
//! Newton iteration from a given guess is compared with the same iteration
//! done on the host in f64.

// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::{KernelArg, KernelRunner, LaunchConfig};
use parascan::newton::{
    solve_kernels, Cell, DiagGru, DiagLstm, Elman, GpuCell, InitialGuess, Mode, NewtonOptions,
    NonlinearProblem,
};
use parascan::PlanRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const B: usize = 2;

fn uniform(rng: &mut ChaCha8Rng, len: usize, s: f64) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-s..s) as f32).collect()
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The same cell in f32 (the kernels' twin) and f64 (the oracle), built
/// from the same f32-rounded weights.
struct Pair {
    name: &'static str,
    c32: Cell32,
    c64: Box<dyn Cell<f64>>,
    /// Weights in the kernels' parameter layout.
    params: Vec<f32>,
    /// The kernels' `n` (units).
    units: usize,
}

/// The f32 cells the kernels run.
enum Cell32 {
    Gru(DiagGru<f32>),
    Lstm(DiagLstm<f32>),
    Elman(Elman<f32>),
}

impl Cell32 {
    fn as_ref(&self) -> &dyn Cell<f32> {
        match self {
            Cell32::Gru(c) => c,
            Cell32::Lstm(c) => c,
            Cell32::Elman(c) => c,
        }
    }
    fn gpu(&self) -> GpuCell<'_> {
        match self {
            Cell32::Gru(c) => c.into(),
            Cell32::Lstm(c) => c.into(),
            Cell32::Elman(c) => c.into(),
        }
    }
    fn state_dim(&self) -> usize {
        self.as_ref().state_dim()
    }
    fn input_dim(&self) -> usize {
        self.as_ref().input_dim()
    }
    fn structure(&self) -> parascan::newton::Structure {
        self.as_ref().structure()
    }
    fn step_jacobian(&self, h: &[f32], x: &[f32], out: &mut [f32], jac: &mut [f32]) {
        self.as_ref().step_jacobian(h, x, out, jac)
    }
}

fn cells(seed: u64) -> Vec<Pair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Weights up to 1.5 so that every gate's derivative term matters.
    let mut w3 = |n: usize| {
        (
            uniform(&mut rng, n, 1.5),
            uniform(&mut rng, n, 1.5),
            uniform(&mut rng, n, 1.5),
        )
    };
    let (a, b, c) = w3(5);
    let gru = Pair {
        name: "diag-gru",
        c32: Cell32::Gru(DiagGru::new(a.clone(), b.clone(), c.clone()).unwrap()),
        c64: Box::new(DiagGru::new(widen(&a), widen(&b), widen(&c)).unwrap()),
        params: [a, b, c].concat(),
        units: 5,
    };
    let (a, b, c) = w3(3);
    let lstm = Pair {
        name: "diag-lstm",
        c32: Cell32::Lstm(DiagLstm::new(a.clone(), b.clone(), c.clone()).unwrap()),
        c64: Box::new(DiagLstm::new(widen(&a), widen(&b), widen(&c)).unwrap()),
        params: [a, b, c].concat(),
        units: 3,
    };
    let n = 4;
    let w = uniform(&mut rng, n * n, 0.8);
    let elman = Pair {
        name: "elman",
        c32: Cell32::Elman(Elman::new(n, w.clone()).unwrap()),
        c64: Box::new(Elman::new(n, widen(&w)).unwrap()),
        params: w,
        units: n,
    };
    vec![gru, lstm, elman]
}

/// A structured Jacobian (`[n]`, `[n/k,k,k]` or `[n,n]`) as a dense `n×n`.
fn dense(cell: &dyn Cell<f64>, jac: &[f64]) -> Vec<f64> {
    let n = cell.state_dim();
    let k = cell.structure().block(n);
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        let (blk, r) = (i / k, i % k);
        for c in 0..k {
            d[i * n + blk * k + c] = jac[blk * k * k + r * k + c];
        }
    }
    d
}

/// Central finite differences of `f(·, x)` at `h`: dense `n×n`.
fn finite_differences(cell: &dyn Cell<f64>, h: &[f64], x: &[f64]) -> Vec<f64> {
    let n = cell.state_dim();
    let (mut hp, mut fp, mut fm) = (h.to_vec(), vec![0.0; n], vec![0.0; n]);
    let mut d = vec![0.0; n * n];
    let eps = 1e-6;
    for j in 0..n {
        hp[j] = h[j] + eps;
        cell.step(&hp, x, &mut fp);
        hp[j] = h[j] - eps;
        cell.step(&hp, x, &mut fm);
        hp[j] = h[j];
        for i in 0..n {
            d[i * n + j] = (fp[i] - fm[i]) / (2.0 * eps);
        }
    }
    d
}

/// Inputs of one check: `x: [B,T,din]`, a guess `h: [B,T,n]`, `h0: [B,n]`.
fn inputs(cell: &dyn Cell<f32>, len: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, din) = (cell.state_dim(), cell.input_dim());
    (
        uniform(&mut rng, B * len * din, 1.0),
        uniform(&mut rng, B * len * n, 1.0),
        uniform(&mut rng, B * n, 1.0),
    )
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Runs `newton_<cell>_assemble` with the full Jacobian (form 2, scale 1)
/// and returns `(a, b)` as downloaded.
fn assemble_on_emu(p: &Pair, x: &[f32], h: &[f32], h0: &[f32], len: usize) -> (Vec<f32>, Vec<f32>) {
    let runner = EmuBackend::default();
    let n = p.c32.state_dim();
    let jac_len = p.c32.structure().len(n);
    let steps = B * len;
    let up = |v: &[f32]| runner.upload(v).unwrap();
    let (xb, hb, h0b, pb) = (up(x), up(h), up(h0), up(&p.params));
    let a = runner.alloc(steps * jac_len * 4).unwrap();
    let b = runner.alloc(steps * n * 4).unwrap();
    let stats = runner.alloc(8).unwrap();
    runner.fill(&stats, 0).unwrap();
    let items = (steps * p.units) as u32;
    let kernel = format!("newton_{}_assemble", p.name.trim_start_matches("diag-"));
    unsafe {
        runner.launch(
            &kernel,
            LaunchConfig::linear(items.div_ceil(256), 256),
            &[
                (&xb).into(),
                (&hb).into(),
                (&h0b).into(),
                (&pb).into(),
                (&a).into(),
                (&b).into(),
                (&stats).into(),
                KernelArg::U64(B as u64),
                KernelArg::U64(len as u64),
                KernelArg::U64(p.units as u64),
                KernelArg::I32(2),
                KernelArg::F32(1.0),
            ],
        )
    }
    .unwrap();
    runner.synchronize().unwrap();
    let (mut ah, mut bh) = (vec![0f32; steps * jac_len], vec![0f32; steps * n]);
    runner.download(&a, &mut ah).unwrap();
    runner.download(&b, &mut bh).unwrap();
    (ah, bh)
}

/// `h_{t-1}` of step `(b, t)` under the guess `h` (or `h0` at `t = 0`).
fn prev<'a>(h: &'a [f32], h0: &'a [f32], n: usize, len: usize, b: usize, t: usize) -> &'a [f32] {
    if t == 0 {
        &h0[b * n..(b + 1) * n]
    } else {
        let s = b * len + t - 1;
        &h[s * n..(s + 1) * n]
    }
}

#[test]
fn assemble_kernels_match_the_cpu_cells_and_finite_differences() {
    let len = 7;
    for p in cells(0x1ac0b) {
        let (n, din) = (p.c32.state_dim(), p.c32.input_dim());
        let jac_len = p.c32.structure().len(n);
        let (x, h, h0) = inputs(p.c32.as_ref(), len, 0xfeed);
        let (a, b) = assemble_on_emu(&p, &x, &h, &h0, len);
        let (mut worst_f, mut worst_j, mut worst_fd, mut worst_cpu_fd) = (0f64, 0f64, 0f64, 0f64);
        for bi in 0..B {
            for t in 0..len {
                let s = bi * len + t;
                let hp = prev(&h, &h0, n, len, bi, t);
                let xs = &x[s * din..(s + 1) * din];
                // The CPU cell in f32: same formulas, same precision.
                let (mut f32_, mut j32) = (vec![0f32; n], vec![0f32; jac_len]);
                p.c32.step_jacobian(hp, xs, &mut f32_, &mut j32);
                // The kernel's J and f = b + J·h_{t-1}.
                let ak = widen(&a[s * jac_len..(s + 1) * jac_len]);
                let jk = dense(p.c64.as_ref(), &ak);
                let hp64 = widen(hp);
                let fk: Vec<f64> = (0..n)
                    .map(|i| {
                        f64::from(b[s * n + i])
                            + (0..n).map(|j| jk[i * n + j] * hp64[j]).sum::<f64>()
                    })
                    .collect();
                worst_f = worst_f.max(max_abs_diff(&fk, &widen(&f32_)));
                worst_j = worst_j.max(max_abs_diff(&ak, &widen(&j32)));
                // f64: the CPU cell's Jacobian and the kernel's against FD.
                let (mut f64_, mut j64) = (vec![0f64; n], vec![0f64; jac_len]);
                let xs64 = widen(xs);
                p.c64.step_jacobian(&hp64, &xs64, &mut f64_, &mut j64);
                let fd = finite_differences(p.c64.as_ref(), &hp64, &xs64);
                worst_cpu_fd = worst_cpu_fd.max(max_abs_diff(&dense(p.c64.as_ref(), &j64), &fd));
                worst_fd = worst_fd.max(max_abs_diff(&jk, &fd));
            }
        }
        let name = p.name;
        assert!(
            worst_f < 1e-5,
            "{name}: kernel f vs CPU f32 cell: {worst_f:e}"
        );
        assert!(
            worst_j < 1e-5,
            "{name}: kernel J vs CPU f32 cell: {worst_j:e}"
        );
        assert!(
            worst_cpu_fd < 1e-7,
            "{name}: CPU f64 J vs finite differences: {worst_cpu_fd:e}"
        );
        assert!(
            worst_fd < 1e-5,
            "{name}: kernel J vs finite differences: {worst_fd:e}"
        );
    }
}

/// One Newton iteration from `h` on the host in f64: `h1_t = J_t h1_{t-1}
/// + f_t − J_t h_{t-1}` with `f_t, J_t` at the guess.
fn host_iteration(cell: &dyn Cell<f64>, x: &[f32], h: &[f32], h0: &[f32], len: usize) -> Vec<f64> {
    let (n, din) = (cell.state_dim(), cell.input_dim());
    let jac_len = cell.structure().len(n);
    let mut out = vec![0.0; B * len * n];
    for bi in 0..B {
        let mut h1 = widen(&h0[bi * n..(bi + 1) * n]);
        for t in 0..len {
            let s = bi * len + t;
            let hp = widen(prev(h, h0, n, len, bi, t));
            let (mut f, mut j) = (vec![0.0; n], vec![0.0; jac_len]);
            cell.step_jacobian(&hp, &widen(&x[s * din..(s + 1) * din]), &mut f, &mut j);
            let jd = dense(cell, &j);
            let next: Vec<f64> = (0..n)
                .map(|i| f[i] + (0..n).map(|k| jd[i * n + k] * (h1[k] - hp[k])).sum::<f64>())
                .collect();
            out[s * n..(s + 1) * n].copy_from_slice(&next);
            h1 = next;
        }
    }
    out
}

fn one_kernel_iteration(p: &Pair, plan: PlanRequest, len: usize, seed: u64) -> (f64, bool) {
    let (x, h, h0) = inputs(p.c32.as_ref(), len, seed);
    let problem = NonlinearProblem {
        x: &x,
        h0: Some(&h0),
        batch: B,
        len,
    };
    let options = NewtonOptions {
        mode: Mode::Newton,
        initial: InitialGuess::Given(&h),
        atol: 0.0,
        rtol: 0.0,
        max_iters: 1,
        growth_patience: None,
        plan,
        ..Default::default()
    };
    let sol = solve_kernels(&EmuBackend::default(), p.c32.gpu(), &problem, &options).unwrap();
    assert_eq!(sol.report.iterations, 1);
    let want = host_iteration(p.c64.as_ref(), &x, &h, &h0, len);
    (max_abs_diff(&widen(&sol.states), &want), sol.report.fused)
}

#[test]
fn one_kernel_newton_iteration_matches_the_host() {
    // The unfused loop (assemble + a Diagonal or BlockDiagonal scan) for
    // every cell, under a chunked plan.
    for p in cells(0x17e2) {
        let (err, fused) = one_kernel_iteration(&p, PlanRequest::Chunk(4), 33, 0xa11);
        assert!(!fused, "{}", p.name);
        assert!(err < 1e-4, "{}: one iteration off by {err:e}", p.name);
    }
}

#[test]
fn fused_gru_iteration_matches_the_host() {
    let p = cells(0x17e3).remove(0);
    assert_eq!(p.name, "diag-gru");
    for (len, seed) in [(300, 1u64), (1500, 2)] {
        let (err, fused) = one_kernel_iteration(&p, PlanRequest::LookBack, len, seed);
        assert!(fused, "the look-back plan takes the fused path (T = {len})");
        assert!(
            err < 1e-4,
            "fused gru, T = {len}: one iteration off by {err:e}"
        );
    }
}
