//! Newton solver on the CPU engine: exact Jacobians (finite differences),
//! agreement with the sequential loop for every cell × mode, the `T`
//! iteration bound, divergence handling, warm start, and typed errors.

mod common;

use common::{rng, uniform};
use parascan::backend::Cpu;
use parascan::newton::{
    sequential, solve, Cell, DiagGru, DiagLstm, Elman, InitialGuess, Mode, NewtonOptions,
    NonlinearProblem, Policy, StopReason, Structure,
};
use parascan::{Error, PlanRequest};

fn gru(n: usize, scale: f64, seed: u64) -> DiagGru<f64> {
    let mut r = rng(seed);
    DiagGru::new(
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
    )
    .unwrap()
}

fn lstm(n: usize, scale: f64, seed: u64) -> DiagLstm<f64> {
    let mut r = rng(seed);
    DiagLstm::new(
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
    )
    .unwrap()
}

/// `W` with entries in `±scale/√n` (spectral radius about `scale`).
fn elman(n: usize, scale: f64, seed: u64) -> Elman<f64> {
    let mut r = rng(seed);
    let s = scale / (n as f64).sqrt();
    Elman::new(n, uniform(&mut r, n * n, -s, s)).unwrap()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn gru32(c: &DiagGru<f64>) -> DiagGru<f32> {
    DiagGru::new(to_f32(c.a_z()), to_f32(c.a_r()), to_f32(c.a_c())).unwrap()
}

fn max_abs_diff<T: Into<f64> + Copy>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.into() - y.into()).abs())
        .fold(0.0, f64::max)
}

/// Central differences of `f` w.r.t. `h`, against `step_jacobian` and
/// `step_jacobian_diag`, at random points.
fn check_jacobian<C: Cell<f64>>(cell: &C, seed: u64) {
    let n = cell.state_dim();
    let k = cell.structure().block(n);
    let mut r = rng(seed);
    for _ in 0..5 {
        let h: Vec<f64> = uniform(&mut r, n, -1.5, 1.5);
        let x: Vec<f64> = uniform(&mut r, cell.input_dim(), -2.0, 2.0);
        let mut f = vec![0.0; n];
        let mut jac = vec![0.0; cell.structure().len(n)];
        cell.step_jacobian(&h, &x, &mut f, &mut jac);
        let mut f2 = vec![0.0; n];
        cell.step(&h, &x, &mut f2);
        assert_eq!(
            f,
            f2,
            "{}: step and step_jacobian disagree on f",
            cell.name()
        );
        let mut diag = vec![0.0; n];
        let mut f3 = vec![0.0; n];
        cell.step_jacobian_diag(&h, &x, &mut f3, &mut diag);
        assert_eq!(f, f3, "{}: step_jacobian_diag's f", cell.name());
        let eps = 1e-6;
        for j in 0..n {
            let (mut hp, mut hm) = (h.clone(), h.clone());
            hp[j] += eps;
            hm[j] -= eps;
            let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
            cell.step(&hp, &x, &mut fp);
            cell.step(&hm, &x, &mut fm);
            for i in 0..n {
                let fd = (fp[i] - fm[i]) / (2.0 * eps);
                let exact = if i / k == j / k {
                    jac[(i / k) * k * k + (i % k) * k + j % k]
                } else {
                    // Outside the structure the Jacobian must be zero.
                    0.0
                };
                assert!(
                    (fd - exact).abs() < 1e-7 * (1.0 + exact.abs()),
                    "{}: ∂f_{i}/∂h_{j}: finite difference {fd}, exact {exact}",
                    cell.name()
                );
                if i == j {
                    assert!(
                        (diag[i] - exact).abs() < 1e-12,
                        "{}: diag[{i}]",
                        cell.name()
                    );
                }
            }
        }
    }
}

#[test]
fn jacobians_match_finite_differences() {
    check_jacobian(&gru(7, 2.0, 1), 11);
    check_jacobian(&lstm(5, 2.0, 2), 12);
    check_jacobian(&elman(6, 2.0, 3), 13);
    assert_eq!(gru(3, 1.0, 1).structure(), Structure::Diagonal);
    assert_eq!(lstm(3, 1.0, 1).structure(), Structure::Block { k: 2 });
    assert_eq!(elman(3, 1.0, 1).structure(), Structure::Dense);
}

const MODES: [Mode; 5] = [
    Mode::Newton,
    Mode::QuasiNewton,
    Mode::Picard,
    Mode::Damped {
        shrink: 0.5,
        relax: 1.0,
    },
    Mode::Damped {
        shrink: 0.0,
        relax: 0.7,
    },
];

/// Solves with `mode` and compares with the sequential loop.
fn agrees<C: Cell<f64>>(
    cell: &C,
    batch: usize,
    len: usize,
    mode: Mode,
    with_h0: bool,
    seed: u64,
) -> usize {
    let mut r = rng(seed);
    let x: Vec<f64> = uniform(&mut r, batch * len * cell.input_dim(), -1.0, 1.0);
    let h0: Vec<f64> = uniform(&mut r, batch * cell.state_dim(), -0.5, 0.5);
    let problem = NonlinearProblem {
        x: &x,
        h0: with_h0.then_some(&h0[..]),
        batch,
        len,
    };
    let cpu = Cpu::new();
    let want = sequential(&cpu, cell, &problem).unwrap();
    let options = NewtonOptions {
        mode,
        atol: 1e-10,
        rtol: 1e-10,
        max_iters: 10_000,
        growth_patience: None,
        plan: PlanRequest::Chunk(16),
        ..Default::default()
    };
    let sol = solve(&cpu, cell, &problem, &options).unwrap();
    let rep = &sol.report;
    assert!(
        rep.converged,
        "{} {mode}: not converged: {rep:?}",
        cell.name()
    );
    assert_eq!(rep.stop, StopReason::Tolerance);
    assert_eq!(rep.residuals.len(), rep.iterations + 1);
    let err = max_abs_diff(&sol.states, &want);
    assert!(
        err < 1e-8,
        "{} {mode} T={len}: max |newton − sequential| = {err:e}",
        cell.name()
    );
    // Depth accounting: scans plus one evaluate-and-check pass per residual.
    let steps = parascan::newton::parallel_steps(len) * rep.residuals.len() as u64;
    assert_eq!(rep.depth, rep.scan_depths.iter().sum::<u64>() + steps);
    if !matches!(mode, Mode::Damped { relax, .. } if relax < 1.0) {
        // After k undamped iterations the first k states are exact.
        assert!(
            rep.iterations <= len,
            "{} {mode}: {} iterations > T = {len}",
            cell.name(),
            rep.iterations
        );
    }
    rep.iterations
}

#[test]
fn every_cell_and_mode_agrees_with_the_sequential_loop() {
    for (i, &mode) in MODES.iter().enumerate() {
        for (len, with_h0) in [(1, true), (37, false), (300, true)] {
            let seed = 100 + i as u64 * 7 + len as u64;
            agrees(&gru(6, 0.8, seed), 3, len, mode, with_h0, seed);
            agrees(&lstm(4, 0.8, seed), 2, len, mode, with_h0, seed);
            agrees(&elman(5, 0.6, seed), 2, len, mode, with_h0, seed);
        }
    }
}

#[test]
fn non_contractive_cells_agree_within_t_iterations() {
    // Large recurrent weights: Jacobians with norms above 1, so iterations
    // grow with T; the exact-prefix property still bounds them by T.
    for (i, &mode) in MODES[..4].iter().enumerate() {
        let seed = 500 + i as u64;
        for len in [1, 2, 9, 40] {
            agrees(&gru(4, 4.0, seed), 2, len, mode, true, seed);
            agrees(&lstm(3, 4.0, seed), 2, len, mode, false, seed);
            agrees(&elman(4, 3.0, seed), 2, len, mode, true, seed);
        }
    }
}

#[test]
fn contractive_gru_iterations_stay_flat_in_t() {
    // The check: contractive DiagGru, ≤ 6 iterations from T = 2^10
    // to 2^16, f32 result equal to the sequential loop to 1e-5.
    let cell = gru32(&gru(16, 0.5, 7));
    let cpu = Cpu::new();
    let mut counts = Vec::new();
    for log2 in [10, 12, 14, 16] {
        let len = 1usize << log2;
        let mut r = rng(log2);
        let x: Vec<f32> = uniform(&mut r, len * cell.input_dim(), -1.0, 1.0);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch: 1,
            len,
        };
        let options = NewtonOptions {
            plan: PlanRequest::MinDepth,
            ..Default::default()
        };
        let sol = solve(&cpu, &cell, &problem, &options).unwrap();
        let want = sequential(&cpu, &cell, &problem).unwrap();
        let err = max_abs_diff(&sol.states, &want);
        assert!(sol.report.converged, "T={len}: {:?}", sol.report);
        assert!(
            sol.report.iterations <= 6,
            "T={len}: {} iterations",
            sol.report.iterations
        );
        assert!(err <= 1e-5, "T={len}: max error {err:e}");
        // Depth (min-depth scans) is far below the sequential loop's T.
        eprintln!(
            "T={len}: {} iterations, depth {}",
            sol.report.iterations, sol.report.depth
        );
        assert!(
            sol.report.depth < len as u64 / 4,
            "T={len}: depth {}",
            sol.report.depth
        );
        counts.push(sol.report.iterations);
    }
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
}

#[test]
fn dense_elman_newton_beats_quasi_newton_on_iterations() {
    let cell = elman(8, 0.9, 21);
    let n_newton = agrees(&cell, 2, 500, Mode::Newton, true, 21);
    let n_quasi = agrees(&cell, 2, 500, Mode::QuasiNewton, true, 21);
    assert!(
        n_newton < n_quasi,
        "newton {n_newton} vs quasi {n_quasi} iterations"
    );
}

#[test]
fn warm_start_needs_no_more_iterations_than_zeros() {
    let cell = gru(8, 0.6, 31);
    let cpu = Cpu::new();
    for len in [64, 1000, 5000] {
        let mut r = rng(len as u64);
        let x: Vec<f64> = uniform(&mut r, 3 * len * cell.input_dim(), -1.0, 1.0);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch: 3,
            len,
        };
        let run = |initial| {
            let options = NewtonOptions {
                initial,
                atol: 1e-9,
                rtol: 1e-9,
                ..Default::default()
            };
            solve(&cpu, &cell, &problem, &options).unwrap().report
        };
        let warm = run(InitialGuess::FirstStep);
        let cold = run(InitialGuess::Zeros);
        assert!(warm.converged && cold.converged);
        assert!(
            warm.iterations <= cold.iterations,
            "T={len}: warm {} > zeros {}",
            warm.iterations,
            cold.iterations
        );
        // A given guess equal to the answer converges without iterating.
        let exact = sequential(&cpu, &cell, &problem).unwrap();
        let given = run(InitialGuess::Given(&exact));
        assert_eq!(given.iterations, 0);
    }
}

/// `h' = 2h + x + h³/10`: expansive, so Newton's and Picard's iterates blow up.
struct Expansive;

impl Cell<f64> for Expansive {
    fn name(&self) -> &str {
        "expansive"
    }
    fn state_dim(&self) -> usize {
        1
    }
    fn input_dim(&self) -> usize {
        1
    }
    fn structure(&self) -> Structure {
        Structure::Diagonal
    }
    fn step(&self, h: &[f64], x: &[f64], out: &mut [f64]) {
        out[0] = 2.0 * h[0] + x[0] + h[0].powi(3) / 10.0;
    }
    fn step_jacobian(&self, h: &[f64], x: &[f64], out: &mut [f64], jac: &mut [f64]) {
        self.step(h, x, out);
        jac[0] = 2.0 + 0.3 * h[0] * h[0];
    }
}

/// `h' = 2h + x`: linear and expansive; Picard's error doubles and shifts.
struct Doubling;

impl Cell<f64> for Doubling {
    fn name(&self) -> &str {
        "doubling"
    }
    fn state_dim(&self) -> usize {
        1
    }
    fn input_dim(&self) -> usize {
        1
    }
    fn structure(&self) -> Structure {
        Structure::Diagonal
    }
    fn step(&self, h: &[f64], x: &[f64], out: &mut [f64]) {
        out[0] = 2.0 * h[0] + x[0];
    }
    fn step_jacobian(&self, h: &[f64], x: &[f64], out: &mut [f64], jac: &mut [f64]) {
        self.step(h, x, out);
        jac[0] = 2.0;
    }
}

#[test]
fn expansive_cells_take_the_divergence_path() {
    let cpu = Cpu::new();
    // Non-finite iterates: a typed error with the history and best iterate.
    let len = 400;
    let x = vec![1.0f64; len];
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len,
    };
    let err = solve(&cpu, &Expansive, &problem, &NewtonOptions::default()).unwrap_err();
    match err {
        Error::Diverged(d) => {
            assert!(d.residuals.len() >= 2, "{d:?}");
            assert!(d.residuals.iter().any(|r| !r.is_finite()));
            assert_eq!(d.best_iterate.len(), len);
            assert!(d.best_residual.is_finite());
            assert_eq!(
                d.best_residual,
                d.residuals
                    .iter()
                    .copied()
                    .filter(|r| r.is_finite())
                    .fold(f64::INFINITY, f64::min)
            );
        }
        e => panic!("expected Diverged, got {e}"),
    }

    // Growing residual under Picard: the fallback gives the sequential answer.
    let len = 60;
    let mut r = rng(3);
    let x: Vec<f64> = uniform(&mut r, len, -1.0, 1.0);
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len,
    };
    let options = NewtonOptions {
        mode: Mode::Picard,
        initial: InitialGuess::Zeros,
        growth_patience: Some(3),
        policy: Policy::FallbackSequential,
        ..Default::default()
    };
    let sol = solve(&cpu, &Doubling, &problem, &options).unwrap();
    assert!(sol.report.fell_back && sol.report.converged);
    assert!(matches!(sol.report.stop, StopReason::Fallback(_)));
    assert!(sol.report.iterations < len);
    let want = sequential(&cpu, &Doubling, &problem).unwrap();
    assert_eq!(sol.states, want);
    // The same under the error policy is a Diverged error.
    let options = NewtonOptions {
        policy: Policy::Error,
        ..options
    };
    assert!(matches!(
        solve(&cpu, &Doubling, &problem, &options),
        Err(Error::Diverged(_))
    ));
}

#[test]
fn max_iters_stops_unconverged() {
    let cpu = Cpu::new();
    let cell = gru(4, 4.0, 9);
    let len = 200;
    let mut r = rng(9);
    let x: Vec<f64> = uniform(&mut r, len * cell.input_dim(), -1.0, 1.0);
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len,
    };
    let options = NewtonOptions {
        mode: Mode::Picard,
        max_iters: 3,
        atol: 1e-14,
        rtol: 0.0,
        growth_patience: None,
        ..Default::default()
    };
    let sol = solve(&cpu, &cell, &problem, &options).unwrap();
    assert_eq!(sol.report.iterations, 3);
    assert!(!sol.report.converged);
    assert_eq!(sol.report.stop, StopReason::MaxIters);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let cpu = Cpu::new();
    let cell = gru(3, 0.5, 1);
    let x = vec![0.0f64; 2 * 5 * 9];
    let ok = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 2,
        len: 5,
    };
    let opts = NewtonOptions::default();
    let e = solve(&cpu, &cell, &NonlinearProblem { x: &x[1..], ..ok }, &opts).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
    let h0 = vec![0.0; 5];
    let e = solve(
        &cpu,
        &cell,
        &NonlinearProblem {
            h0: Some(&h0),
            ..ok
        },
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "h0", .. }), "{e}");
    let e = solve(
        &cpu,
        &cell,
        &NonlinearProblem {
            len: 0,
            x: &[],
            ..ok
        },
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Size { arg: "len", .. }), "{e}");
    let mut xn = x.clone();
    xn[7] = f64::NAN;
    let e = solve(&cpu, &cell, &NonlinearProblem { x: &xn, ..ok }, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                arg: "x",
                index: 7,
                ..
            }
        ),
        "{e}"
    );
    let bad = NewtonOptions {
        mode: Mode::Damped {
            shrink: 0.0,
            relax: 1.5,
        },
        ..opts
    };
    assert!(matches!(solve(&cpu, &cell, &ok, &bad), Err(Error::Plan(_))));
    let guess = vec![0.0; 4];
    let bad = NewtonOptions {
        initial: InitialGuess::Given(&guess),
        ..opts
    };
    let e = solve(&cpu, &cell, &ok, &bad).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "initial", .. }), "{e}");
    assert!(matches!(
        DiagGru::new(vec![1.0f64], vec![], vec![1.0]),
        Err(Error::Shape { arg: "a_r", .. })
    ));
    assert!(matches!(
        Elman::new(2, vec![0.0f64; 3]),
        Err(Error::Shape { arg: "w", .. })
    ));
    assert!("damped:0.5:0.8".parse::<Mode>().is_ok());
    assert!("newtonish".parse::<Mode>().is_err());
}
