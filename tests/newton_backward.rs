//! The Newton solver's backward pass on the CPU engine: each built-in
//! cell's step VJP against central finite differences; the whole backward
//! (one reverse scan at the converged states, then the VJPs) against
//! finite differences of the f64 sequential loop (small `T`) and against
//! an f64 sequential adjoint written here step by step (long `T`, and
//! `T = 2^16` for `DiagGru`); the typed errors for a solve that did not
//! converge and for a cell without a VJP.

mod common;

use common::{rng, uniform};
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::backend::Cpu;
use parascan::kernels::block_diagonal::BlockDiagonalWorkspace;
use parascan::kernels::diagonal::DiagonalWorkspace;
use parascan::newton::{
    backward, backward_block_kernels, backward_kernels, sequential, solve, Cell, DiagGru, DiagLstm,
    Elman, InitialGuess, Mode, NewtonOptions, NonlinearProblem, Parity, Structure,
};
use parascan::{oracle, Error, PlanRequest, Real, Storage};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Gru,
    Lstm,
    Elman,
}

const KINDS: [Kind; 3] = [Kind::Gru, Kind::Lstm, Kind::Elman];

/// A cell of `units` units of `kind` with weights `p` (`[a_z|a_r|a_c]`,
/// `[a_f|a_o|a_g]` or `W`).
fn build<T: Real>(kind: Kind, units: usize, p: &[T]) -> Box<dyn Cell<T>> {
    let u = units;
    match kind {
        Kind::Gru => Box::new(
            DiagGru::new(p[..u].to_vec(), p[u..2 * u].to_vec(), p[2 * u..].to_vec()).unwrap(),
        ),
        Kind::Lstm => Box::new(
            DiagLstm::new(p[..u].to_vec(), p[u..2 * u].to_vec(), p[2 * u..].to_vec()).unwrap(),
        ),
        Kind::Elman => Box::new(Elman::new(u, p.to_vec()).unwrap()),
    }
}

fn param_count(kind: Kind, units: usize) -> usize {
    match kind {
        Kind::Gru | Kind::Lstm => 3 * units,
        Kind::Elman => units * units,
    }
}

/// Weights that keep the cell contractive.
fn weights(kind: Kind, units: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    match kind {
        Kind::Gru | Kind::Lstm => uniform(&mut r, 3 * units, -0.9, 0.9),
        Kind::Elman => {
            let s = 0.8 / (units as f64).sqrt();
            uniform(&mut r, units * units, -s, s)
        }
    }
}

fn cast<T: Storage>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

fn f64s<T: Storage>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

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

fn assert_rel<T: Storage>(what: &str, got: &[T], want: &[f64], tol: f64) {
    let e = oracle::rel_l2(got, want);
    assert!(e <= tol, "{what}: relative L2 error {e:.3e} > {tol:.1e}");
}

#[test]
fn step_vjps_match_finite_differences() {
    let units = 4;
    for kind in KINDS {
        let p = weights(kind, units, 1);
        let cell = build::<f64>(kind, units, &p);
        let (n, din) = (cell.state_dim(), cell.input_dim());
        let mut r = rng(2);
        let h: Vec<f64> = uniform(&mut r, n, -1.0, 1.0);
        let x: Vec<f64> = uniform(&mut r, din, -1.0, 1.0);
        let g: Vec<f64> = uniform(&mut r, n, -1.0, 1.0);
        let loss = |cell: &dyn Cell<f64>, x: &[f64]| {
            let mut out = vec![0.0; n];
            cell.step(&h, x, &mut out);
            out.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
        };
        let (mut dx, mut dp) = (vec![0.0; din], vec![0.0; cell.param_count()]);
        cell.step_vjp(&h, &x, &g, &mut dx, &mut dp).unwrap();
        assert_eq!(dp.len(), param_count(kind, units));
        assert_rel(
            &format!("{kind:?} dx"),
            &dx,
            &fd(&x, |x| loss(cell.as_ref(), x)),
            1e-8,
        );
        let want = fd(&p, |p| loss(build::<f64>(kind, units, p).as_ref(), &x));
        assert_rel(&format!("{kind:?} dparams"), &dp, &want, 1e-8);
    }
    // Parity: no weights, dx only.
    let cell = Parity::new(3, 4.0f64).unwrap();
    let (h, x, g) = ([0.2, 0.7, 0.9], [0.1, 0.8, 0.4], [1.0, -0.5, 0.3]);
    let loss = |x: &[f64]| {
        let mut out = [0.0; 3];
        cell.step(&h, x, &mut out);
        out.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut dx = [0.0; 3];
    cell.step_vjp(&h, &x, &g, &mut dx, &mut []).unwrap();
    assert_rel("parity dx", &dx, &fd(&x, loss), 1e-8);
}

/// Everything one backward test needs, in f64.
struct Case {
    kind: Kind,
    units: usize,
    p: Vec<f64>,
    x: Vec<f64>,
    h0: Vec<f64>,
    gs: Vec<f64>,
    gh: Vec<f64>,
    batch: usize,
    len: usize,
}

impl Case {
    fn new<T: Storage>(kind: Kind, units: usize, batch: usize, len: usize, seed: u64) -> Self {
        let cell = build::<f64>(kind, units, &weights(kind, units, seed));
        let (n, din) = (cell.state_dim(), cell.input_dim());
        let mut r = rng(seed + 1);
        // Rounded to T so that the f64 reference sees the same inputs.
        let round = |v: Vec<f64>| f64s(&cast::<T>(&v));
        Case {
            kind,
            units,
            p: round(weights(kind, units, seed)),
            x: round(uniform(&mut r, batch * len * din, -1.0, 1.0)),
            h0: round(uniform(&mut r, batch * n, -0.5, 0.5)),
            gs: round(uniform(&mut r, batch * len * n, -1.0, 1.0)),
            gh: round(uniform(&mut r, batch * n, -1.0, 1.0)),
            batch,
            len,
        }
    }

    /// `Σ gs·h_t + Σ gh·h_T` of the sequential loop in f64.
    fn loss(&self, p: &[f64], x: &[f64], h0: &[f64]) -> f64 {
        let cell = build::<f64>(self.kind, self.units, p);
        let prob = NonlinearProblem {
            x,
            h0: Some(h0),
            batch: self.batch,
            len: self.len,
        };
        let h = sequential(&Cpu::new(), cell.as_ref(), &prob).unwrap();
        let n = cell.state_dim();
        let mut l: f64 = h.iter().zip(&self.gs).map(|(a, b)| a * b).sum();
        for b in 0..self.batch {
            let last = &h[((b + 1) * self.len - 1) * n..(b + 1) * self.len * n];
            l += last
                .iter()
                .zip(&self.gh[b * n..(b + 1) * n])
                .map(|(a, b)| a * b)
                .sum::<f64>();
        }
        l
    }

    /// The engine: Newton solve in `T`, then the backward.
    fn engine<T: Real + Storage<Compute = T>>(
        &self,
        plan: PlanRequest,
        atol: f64,
    ) -> (Vec<T>, Vec<T>, Vec<T>, u64, u64) {
        let cell = build::<T>(self.kind, self.units, &cast::<T>(&self.p));
        let (x, h0, gs, gh) = (
            cast::<T>(&self.x),
            cast::<T>(&self.h0),
            cast::<T>(&self.gs),
            cast::<T>(&self.gh),
        );
        let prob = NonlinearProblem {
            x: &x,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
        };
        let options = NewtonOptions {
            atol,
            rtol: 0.0,
            plan,
            ..Default::default()
        };
        let cpu = Cpu::new();
        let sol = solve(&cpu, cell.as_ref(), &prob, &options).unwrap();
        let g = backward(&cpu, cell.as_ref(), &prob, &sol, &gs, Some(&gh), plan).unwrap();
        (g.x, g.h0, g.params, g.depth, g.plan.depth)
    }

    /// The solve on the CPU engine, the backward on the kernels of `runner`
    /// ([`backward_kernels`]): `(dx, dh0, dparams, measured depth, formula)`.
    fn kernels<R: KernelRunner, T: Real + Storage<Compute = T> + bytemuck::Pod>(
        &self,
        runner: &R,
        plan: PlanRequest,
        atol: f64,
    ) -> (Vec<T>, Vec<T>, Vec<T>, u64, u64) {
        let cell = build::<T>(self.kind, self.units, &cast::<T>(&self.p));
        let (x, h0, gs, gh) = (
            cast::<T>(&self.x),
            cast::<T>(&self.h0),
            cast::<T>(&self.gs),
            cast::<T>(&self.gh),
        );
        let prob = NonlinearProblem {
            x: &x,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
        };
        let options = NewtonOptions {
            atol,
            rtol: 0.0,
            ..Default::default()
        };
        let sol = solve(&Cpu::new(), cell.as_ref(), &prob, &options).unwrap();
        let mut ws = DiagonalWorkspace::new();
        let g = backward_kernels(
            runner,
            &mut ws,
            cell.as_ref(),
            &prob,
            &sol,
            &gs,
            Some(&gh),
            plan,
        )
        .unwrap_or_else(|e| panic!("{:?} backward_kernels {plan}: {e}", self.kind));
        (g.x, g.h0, g.params, g.depth, g.plan.depth)
    }

    /// The solve on the CPU engine, the backward on the BlockDiagonal
    /// reverse kernels of `runner` ([`backward_block_kernels`], any
    /// Jacobian structure): `(dx, dh0, dparams, measured depth, formula)`.
    fn block_kernels<R: KernelRunner, T: Real + Storage<Compute = T> + bytemuck::Pod>(
        &self,
        runner: &R,
        plan: PlanRequest,
        atol: f64,
    ) -> (Vec<T>, Vec<T>, Vec<T>, u64, u64) {
        let cell = build::<T>(self.kind, self.units, &cast::<T>(&self.p));
        let (x, h0, gs, gh) = (
            cast::<T>(&self.x),
            cast::<T>(&self.h0),
            cast::<T>(&self.gs),
            cast::<T>(&self.gh),
        );
        let prob = NonlinearProblem {
            x: &x,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
        };
        let options = NewtonOptions {
            atol,
            rtol: 0.0,
            ..Default::default()
        };
        let sol = solve(&Cpu::new(), cell.as_ref(), &prob, &options).unwrap();
        let mut ws = BlockDiagonalWorkspace::new();
        let g = backward_block_kernels(
            runner,
            &mut ws,
            cell.as_ref(),
            &prob,
            &sol,
            &gs,
            Some(&gh),
            plan,
        )
        .unwrap_or_else(|e| panic!("{:?} backward_block_kernels {plan}: {e}", self.kind));
        (g.x, g.h0, g.params, g.depth, g.plan.depth)
    }

    /// The f64 sequential adjoint, step by step from the end, with the
    /// cell's Jacobian and VJP (each checked against finite differences
    /// above) at the exact sequential trajectory.
    fn sequential_adjoint(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let cell = build::<f64>(self.kind, self.units, &self.p);
        let (n, din, k) = (
            cell.state_dim(),
            cell.input_dim(),
            cell.structure().block(cell.state_dim()),
        );
        let prob = NonlinearProblem {
            x: &self.x,
            h0: Some(&self.h0),
            batch: self.batch,
            len: self.len,
        };
        let h = sequential(&Cpu::new(), cell.as_ref(), &prob).unwrap();
        let (mut dx, mut dh0, mut dp) = (
            vec![0.0; self.x.len()],
            vec![0.0; self.h0.len()],
            vec![0.0; self.p.len()],
        );
        let mut jac = vec![0.0; n * k];
        let mut out = vec![0.0; n];
        for b in 0..self.batch {
            let mut g = self.gh[b * n..(b + 1) * n].to_vec();
            for t in (0..self.len).rev() {
                let s = b * self.len + t;
                let prev = if t == 0 {
                    &self.h0[b * n..(b + 1) * n]
                } else {
                    &h[(s - 1) * n..s * n]
                };
                let x = &self.x[s * din..(s + 1) * din];
                for (gi, d) in g.iter_mut().zip(&self.gs[s * n..(s + 1) * n]) {
                    *gi += d;
                }
                cell.step_vjp(prev, x, &g, &mut dx[s * din..(s + 1) * din], &mut dp)
                    .unwrap();
                cell.step_jacobian(prev, x, &mut out, &mut jac);
                // g ← Jᵀ g, J as the full n×n matrix of its blocks.
                let mut back = vec![0.0; n];
                for (row, gr) in g.iter().enumerate() {
                    let blk = row / k;
                    for c in 0..k {
                        back[blk * k + c] += jac[blk * k * k + (row % k) * k + c] * gr;
                    }
                }
                g = back;
            }
            dh0[b * n..(b + 1) * n].copy_from_slice(&g);
        }
        (dx, dh0, dp)
    }
}

#[test]
fn backward_matches_finite_differences_of_the_sequential_loop() {
    for kind in KINDS {
        let c = Case::new::<f64>(kind, 3, 2, 12, 10);
        let want_x = fd(&c.x, |x| c.loss(&c.p, x, &c.h0));
        let want_h0 = fd(&c.h0, |h0| c.loss(&c.p, &c.x, h0));
        let want_p = fd(&c.p, |p| c.loss(p, &c.x, &c.h0));
        for plan in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(4),
            PlanRequest::MinDepth,
        ] {
            let (dx, dh0, dp, _, _) = c.engine::<f64>(plan, 1e-13);
            assert_rel(&format!("{kind:?} dx {plan}"), &dx, &want_x, 1e-6);
            assert_rel(&format!("{kind:?} dh0 {plan}"), &dh0, &want_h0, 1e-6);
            assert_rel(&format!("{kind:?} dparams {plan}"), &dp, &want_p, 1e-6);
        }
    }
}

/// Backward in `T` against the f64 sequential adjoint; `tol` on relative
/// L2 error.
fn long<T: Real + Storage<Compute = T>>(
    kind: Kind,
    units: usize,
    batch: usize,
    len: usize,
    atol: f64,
    tol: f64,
) {
    let c = Case::new::<T>(kind, units, batch, len, 20 + len as u64);
    let (wx, wh0, wp) = c.sequential_adjoint();
    for plan in [PlanRequest::Auto, PlanRequest::Chunk(256)] {
        let (dx, dh0, dp, depth, formula) = c.engine::<T>(plan, atol);
        let what = format!("{kind:?} {:?} T={len} {plan}", T::DTYPE);
        assert_rel(&format!("{what} dx"), &dx, &wx, tol);
        assert_rel(&format!("{what} dh0"), &dh0, &wh0, tol);
        assert_rel(&format!("{what} dparams"), &dp, &wp, tol);
        assert_eq!(
            depth, formula,
            "{what}: measured reverse-scan depth vs formula"
        );
    }
}

#[test]
fn backward_matches_the_sequential_adjoint_on_long_t() {
    for kind in KINDS {
        long::<f64>(kind, 4, 2, 3000, 1e-12, 1e-11);
        long::<f32>(kind, 4, 2, 3000, 1e-6, 1e-5);
    }
}

#[test]
fn diag_gru_backward_at_t_2_pow_16() {
    long::<f64>(Kind::Gru, 8, 2, 1 << 16, 1e-12, 1e-11);
    long::<f32>(Kind::Gru, 8, 2, 1 << 16, 1e-6, 1e-5);
}

#[test]
fn backward_depth_grows_like_log_t() {
    for k in [8usize, 10, 12] {
        let c = Case::new::<f64>(Kind::Gru, 2, 1, 1 << k, 5);
        let (.., depth, formula) = c.engine::<f64>(PlanRequest::MinDepth, 1e-12);
        assert_eq!(depth, formula);
        assert_eq!(
            depth,
            (2 * k + 1) as u64,
            "min-depth reverse scan at T = 2^{k}"
        );
    }
}

#[test]
fn backward_of_an_unconverged_solve_is_a_typed_error() {
    let c = Case::new::<f64>(Kind::Gru, 3, 1, 500, 7);
    let cell = build::<f64>(c.kind, c.units, &c.p);
    let prob = NonlinearProblem {
        x: &c.x,
        h0: Some(&c.h0),
        batch: 1,
        len: 500,
    };
    let options = NewtonOptions {
        max_iters: 1,
        atol: 1e-14,
        rtol: 0.0,
        initial: InitialGuess::Zeros,
        mode: Mode::Newton,
        ..Default::default()
    };
    let cpu = Cpu::new();
    let sol = solve(&cpu, cell.as_ref(), &prob, &options).unwrap();
    assert!(!sol.report.converged);
    match backward(
        &cpu,
        cell.as_ref(),
        &prob,
        &sol,
        &c.gs,
        None,
        PlanRequest::Auto,
    ) {
        Err(Error::NotConverged {
            cell,
            residual,
            tolerance,
            ..
        }) => {
            assert_eq!(cell, "diag-gru");
            assert!(residual > tolerance);
        }
        other => panic!("expected NotConverged, got {other:?}"),
    }
}

/// A user cell that implements only what the solver needs.
struct Halving;

impl Cell<f64> for Halving {
    fn name(&self) -> &str {
        "halving"
    }
    fn state_dim(&self) -> usize {
        2
    }
    fn input_dim(&self) -> usize {
        2
    }
    fn structure(&self) -> Structure {
        Structure::Diagonal
    }
    fn step(&self, h: &[f64], x: &[f64], out: &mut [f64]) {
        for i in 0..2 {
            out[i] = 0.5 * h[i] + x[i];
        }
    }
    fn step_jacobian(&self, h: &[f64], x: &[f64], out: &mut [f64], jac: &mut [f64]) {
        self.step(h, x, out);
        jac.fill(0.5);
    }
}

#[test]
fn a_cell_without_a_vjp_is_refused_with_a_typed_error() {
    let x = vec![1.0; 20];
    let prob = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len: 10,
    };
    let cpu = Cpu::new();
    let sol = solve(&cpu, &Halving, &prob, &NewtonOptions::default()).unwrap();
    assert!(sol.report.converged);
    match backward(&cpu, &Halving, &prob, &sol, &x, None, PlanRequest::Auto) {
        Err(Error::Unsupported { what, by, .. }) => {
            assert_eq!(what, "Cell::step_vjp");
            assert!(by.contains("halving"));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// Every plan of the Diagonal kernels, the look-back included.
const KERNEL_PLANS: [PlanRequest; 6] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(4),
    PlanRequest::Chunk(256),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
    PlanRequest::LookBack,
];

fn emulators() -> [EmuBackend; 3] {
    [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(0x5eed),
    ]
}

/// `DiagGru`'s backward with the reverse scan on the emulated Diagonal
/// kernels (every fiber order, every plan) against finite differences of
/// the f64 sequential loop.
#[test]
fn diag_gru_backward_on_the_emulated_kernels_matches_finite_differences() {
    let c = Case::new::<f64>(Kind::Gru, 3, 2, 12, 10);
    let want_x = fd(&c.x, |x| c.loss(&c.p, x, &c.h0));
    let want_h0 = fd(&c.h0, |h0| c.loss(&c.p, &c.x, h0));
    let want_p = fd(&c.p, |p| c.loss(p, &c.x, &c.h0));
    for runner in emulators() {
        for plan in KERNEL_PLANS {
            let what = format!("emu {} DiagGru {plan}", runner.order());
            let (dx, dh0, dp, depth, formula) = c.kernels::<_, f64>(&runner, plan, 1e-13);
            assert_rel(&format!("{what} dx"), &dx, &want_x, 1e-6);
            assert_rel(&format!("{what} dh0"), &dh0, &want_h0, 1e-6);
            assert_rel(&format!("{what} dparams"), &dp, &want_p, 1e-6);
            assert_eq!(depth, formula, "{what}: measured depth vs formula");
        }
    }
}

/// The same on a long `T` against the f64 sequential adjoint (f64 and f32).
#[test]
fn diag_gru_backward_on_the_emulated_kernels_matches_the_sequential_adjoint() {
    for runner in emulators() {
        for (f64_run, len) in [(true, 3000), (false, 3000)] {
            let c = if f64_run {
                Case::new::<f64>(Kind::Gru, 4, 2, len, 20 + len as u64)
            } else {
                Case::new::<f32>(Kind::Gru, 4, 2, len, 20 + len as u64)
            };
            let (wx, wh0, wp) = c.sequential_adjoint();
            for plan in KERNEL_PLANS {
                let what = format!(
                    "emu {} DiagGru T={len} f64={f64_run} {plan}",
                    runner.order()
                );
                let (depth, formula) = if f64_run {
                    let (dx, dh0, dp, d, f) = c.kernels::<_, f64>(&runner, plan, 1e-12);
                    assert_rel(&format!("{what} dx"), &dx, &wx, 1e-11);
                    assert_rel(&format!("{what} dh0"), &dh0, &wh0, 1e-11);
                    assert_rel(&format!("{what} dparams"), &dp, &wp, 1e-11);
                    (d, f)
                } else {
                    let (dx, dh0, dp, d, f) = c.kernels::<_, f32>(&runner, plan, 1e-6);
                    assert_rel(&format!("{what} dx"), &dx, &wx, 1e-5);
                    assert_rel(&format!("{what} dh0"), &dh0, &wh0, 1e-5);
                    assert_rel(&format!("{what} dparams"), &dp, &wp, 1e-5);
                    (d, f)
                };
                assert_eq!(depth, formula, "{what}: measured depth vs formula");
            }
        }
    }
}

/// Every plan of the BlockDiagonal kernels (no look-back there).
const BLOCK_KERNEL_PLANS: [PlanRequest; 5] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(5),
    PlanRequest::Chunk(1),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
];

/// `DiagLstm` (2×2 Jacobian blocks), `Elman` (dense) and `DiagGru`
/// (diagonal, blocks of 1) with the reverse scan on the emulated
/// BlockDiagonal kernels (every fiber order, every plan) against finite
/// differences of the f64 sequential loop.
#[test]
fn block_backward_on_the_emulated_kernels_matches_finite_differences() {
    for kind in KINDS {
        let c = Case::new::<f64>(kind, 3, 2, 12, 10);
        let want_x = fd(&c.x, |x| c.loss(&c.p, x, &c.h0));
        let want_h0 = fd(&c.h0, |h0| c.loss(&c.p, &c.x, h0));
        let want_p = fd(&c.p, |p| c.loss(p, &c.x, &c.h0));
        for runner in emulators() {
            for plan in BLOCK_KERNEL_PLANS {
                let what = format!("emu {} {kind:?} block {plan}", runner.order());
                let (dx, dh0, dp, depth, formula) = c.block_kernels::<_, f64>(&runner, plan, 1e-13);
                assert_rel(&format!("{what} dx"), &dx, &want_x, 1e-6);
                assert_rel(&format!("{what} dh0"), &dh0, &want_h0, 1e-6);
                assert_rel(&format!("{what} dparams"), &dp, &want_p, 1e-6);
                assert_eq!(depth, formula, "{what}: measured depth vs formula");
            }
        }
    }
}

/// The same for `DiagLstm` and `Elman` on a long `T` against the f64
/// sequential adjoint (f64 and f32).
#[test]
fn block_backward_on_the_emulated_kernels_matches_the_sequential_adjoint() {
    for kind in [Kind::Lstm, Kind::Elman] {
        for runner in emulators() {
            for f64_run in [true, false] {
                let len = 1500;
                let c = if f64_run {
                    Case::new::<f64>(kind, 4, 2, len, 30 + len as u64)
                } else {
                    Case::new::<f32>(kind, 4, 2, len, 30 + len as u64)
                };
                let (wx, wh0, wp) = c.sequential_adjoint();
                for plan in BLOCK_KERNEL_PLANS {
                    let what = format!(
                        "emu {} {kind:?} block T={len} f64={f64_run} {plan}",
                        runner.order()
                    );
                    let (depth, formula) = if f64_run {
                        let (dx, dh0, dp, d, f) = c.block_kernels::<_, f64>(&runner, plan, 1e-12);
                        assert_rel(&format!("{what} dx"), &dx, &wx, 1e-11);
                        assert_rel(&format!("{what} dh0"), &dh0, &wh0, 1e-11);
                        assert_rel(&format!("{what} dparams"), &dp, &wp, 1e-11);
                        (d, f)
                    } else {
                        let (dx, dh0, dp, d, f) = c.block_kernels::<_, f32>(&runner, plan, 1e-6);
                        assert_rel(&format!("{what} dx"), &dx, &wx, 1e-5);
                        assert_rel(&format!("{what} dh0"), &dh0, &wh0, 1e-5);
                        assert_rel(&format!("{what} dparams"), &dp, &wp, 1e-5);
                        (d, f)
                    };
                    assert_eq!(depth, formula, "{what}: measured depth vs formula");
                }
            }
        }
    }
}

/// Cells whose Jacobian is not diagonal go to `backward_block_kernels`:
/// `backward_kernels` refuses them with a typed error naming the cell,
/// before any launch.
#[test]
fn backward_kernels_refuse_a_non_diagonal_jacobian() {
    for kind in [Kind::Lstm, Kind::Elman] {
        let c = Case::new::<f64>(kind, 3, 1, 20, 3);
        let cell = build::<f64>(kind, 3, &c.p);
        let prob = NonlinearProblem {
            x: &c.x,
            h0: Some(&c.h0),
            batch: 1,
            len: 20,
        };
        let sol = solve(&Cpu::new(), cell.as_ref(), &prob, &NewtonOptions::default()).unwrap();
        let mut ws = DiagonalWorkspace::new();
        match backward_kernels(
            &EmuBackend::forward(),
            &mut ws,
            cell.as_ref(),
            &prob,
            &sol,
            &c.gs,
            None,
            PlanRequest::Auto,
        ) {
            Err(Error::Unsupported { what, by, .. }) => {
                assert_eq!(what, "newton::backward_kernels");
                assert_eq!(by, cell.name());
            }
            other => panic!("{kind:?}: expected Unsupported, got {other:?}"),
        }
    }
}
