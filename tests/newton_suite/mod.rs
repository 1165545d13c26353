//! The Newton kernels' suite, shared by `tests/emu_newton.rs` (SIMT
//! emulator, every fiber order) and `tests/cuda_newton.rs` (a GPU): every
//! built-in cell × mode × initial guess against the CPU sequential loop,
//! the CPU solver's iteration counts, divergence handling, and typed errors.
#![allow(dead_code)]

use crate::common::{rng, uniform};
use parascan::backend::launch::KernelRunner;
use parascan::backend::Cpu;
use parascan::newton::{
    sequential, sequential_kernels, solve, solve_kernels, DiagGru, DiagLstm, Elman, GpuCell,
    InitialGuess, Mode, NewtonOptions, NonlinearProblem, Policy, StopReason,
};
use parascan::{Error, PlanRequest};

pub fn gru(n: usize, scale: f64, seed: u64) -> DiagGru<f32> {
    let mut r = rng(seed);
    DiagGru::new(
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
    )
    .unwrap()
}

pub fn lstm(n: usize, scale: f64, seed: u64) -> DiagLstm<f32> {
    let mut r = rng(seed);
    DiagLstm::new(
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
        uniform(&mut r, n, -scale, scale),
    )
    .unwrap()
}

pub fn elman(n: usize, scale: f64, seed: u64) -> Elman<f32> {
    let mut r = rng(seed);
    let s = scale / (n as f64).sqrt();
    Elman::new(n, uniform(&mut r, n * n, -s, s)).unwrap()
}

/// Modes every cell runs on the kernels.
pub fn modes_for(_cell: GpuCell<'_>) -> Vec<Mode> {
    vec![
        Mode::QuasiNewton,
        Mode::Picard,
        Mode::Sequential,
        Mode::Newton,
        Mode::Damped {
            shrink: 0.5,
            relax: 1.0,
        },
        Mode::Damped {
            shrink: 0.0,
            relax: 0.7,
        },
    ]
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()))
        .fold(0.0, |m, d| if d.is_nan() { f64::NAN } else { m.max(d) })
}

/// One case: the kernels' solve against the CPU sequential loop and the
/// CPU solver's iteration count, with the scans under `chunk=8`.
#[allow(clippy::too_many_arguments)]
pub fn check_case<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    batch: usize,
    len: usize,
    mode: Mode,
    initial: &str,
    seed: u64,
    what: &str,
) {
    let shape = (batch, len);
    check_case_plan(
        runner,
        cell,
        shape,
        mode,
        initial,
        seed,
        what,
        PlanRequest::Chunk(8),
    );
}

/// [`check_case`] with the kernels' scans under `plan` (the CPU solver it
/// is compared with runs `chunk=8` when `plan` is a kernels-only plan).
#[allow(clippy::too_many_arguments)]
pub fn check_case_plan<R: KernelRunner>(
    runner: &R,
    cell: GpuCell<'_>,
    (batch, len): (usize, usize),
    mode: Mode,
    initial: &str,
    seed: u64,
    what: &str,
    plan: PlanRequest,
) {
    let c = cell.as_cell();
    let mut r = rng(seed);
    let x: Vec<f32> = uniform(&mut r, batch * len * c.input_dim(), -1.0, 1.0);
    let h0: Vec<f32> = uniform(&mut r, batch * c.state_dim(), -0.5, 0.5);
    let problem = NonlinearProblem {
        x: &x,
        h0: (seed % 2 == 0).then_some(&h0[..]),
        batch,
        len,
    };
    let cpu = Cpu::new();
    let want = sequential(&cpu, c, &problem).unwrap();
    let guess: Vec<f32> = uniform(&mut r, want.len(), -0.3, 0.3);
    let options = NewtonOptions {
        mode,
        initial: match initial {
            "zeros" => InitialGuess::Zeros,
            "given" => InitialGuess::Given(&guess),
            _ => InitialGuess::FirstStep,
        },
        atol: 2e-6,
        rtol: 2e-6,
        max_iters: 10 * len + 10,
        growth_patience: None,
        plan,
        ..Default::default()
    };
    let label = format!(
        "{what}: {} {mode} {initial} B={batch} T={len} {plan}",
        c.name()
    );
    let sol =
        solve_kernels(runner, cell, &problem, &options).unwrap_or_else(|e| panic!("{label}: {e}"));
    let rep = &sol.report;
    assert!(rep.converged, "{label}: not converged: {rep:?}");
    // gru's diagonal iterations run fused into the look-back scan.
    let fusable = matches!(cell, GpuCell::DiagGru(_))
        && !matches!(mode, Mode::Picard | Mode::Sequential)
        && !matches!(mode, Mode::Damped { relax, .. } if relax != 1.0);
    assert_eq!(
        rep.fused,
        fusable && plan == PlanRequest::LookBack,
        "{label}: fused"
    );
    let err = max_abs_diff(&sol.states, &want);
    assert!(err <= 2e-5, "{label}: max |kernels − sequential| = {err:e}");
    if mode == Mode::Sequential {
        assert_eq!(rep.depth, len as u64, "{label}");
        return;
    }
    assert_eq!(rep.residuals.len(), rep.iterations + 1, "{label}");
    let undamped = !matches!(mode, Mode::Damped { relax, .. } if relax < 1.0);
    if undamped {
        assert!(
            rep.iterations <= len,
            "{label}: {} iterations > T",
            rep.iterations
        );
    }
    let steps = parascan::newton::parallel_steps(len) * rep.residuals.len() as u64;
    assert_eq!(
        rep.depth,
        rep.scan_depths.iter().sum::<u64>() + steps,
        "{label}"
    );
    // Same algorithm as the CPU solver: the iteration counts agree up to
    // rounding near the tolerance.
    let cpu_options = NewtonOptions {
        plan: match plan {
            PlanRequest::LookBack => PlanRequest::Chunk(8),
            p => p,
        },
        ..options
    };
    let cpu_rep = solve(&cpu, c, &problem, &cpu_options).unwrap().report;
    assert!(
        rep.iterations.abs_diff(cpu_rep.iterations) <= 1,
        "{label}: kernels {} vs cpu {} iterations",
        rep.iterations,
        cpu_rep.iterations
    );
}

/// Every cell × mode × guess at a few small shapes.
pub fn run_suite<R: KernelRunner>(runner: &R, seed: u64, what: &str) {
    // The second GRU is non-contractive (Jacobians above 1): errors of
    // order the tolerance grow along the sequence in any f32 evaluation,
    // so it runs the short cases only.
    let cells_gru = [gru(5, 0.8, seed), gru(3, 3.0, seed + 1)];
    let cells_lstm = [lstm(3, 0.8, seed + 2)];
    // Dense sizes the BlockDiagonal kernels support (full Newton).
    let cells_elman = [elman(8, 0.7, seed + 3), elman(32, 0.5, seed + 4)];
    let mut cells: Vec<GpuCell<'_>> = Vec::new();
    cells.extend(cells_gru.iter().map(GpuCell::from));
    cells.extend(cells_lstm.iter().map(GpuCell::from));
    cells.extend(cells_elman.iter().map(GpuCell::from));
    let mut i = 0u64;
    for cell in cells {
        for mode in modes_for(cell) {
            for (batch, len, initial) in [(1, 1, "first"), (2, 37, "zeros"), (3, 130, "given")] {
                let contractive = match cell {
                    GpuCell::DiagGru(g) => g.a_c().iter().all(|a| a.abs() < 1.0),
                    _ => true,
                };
                if len > 40 && !contractive {
                    continue;
                }
                i += 1;
                check_case(runner, cell, batch, len, mode, initial, seed + 17 * i, what);
            }
        }
    }
}

/// gru's fused iterations (assemble inside the `[B,T,n]` look-back scan,
/// `plan = look-back`): every undamped-relaxation mode and guess, one and
/// several chunks (128 steps each), a partial 32-channel group (n = 40).
pub fn run_fused_suite<R: KernelRunner>(runner: &R, seed: u64, what: &str) {
    let cells = [gru(5, 0.8, seed), gru(40, 0.7, seed + 1)];
    let mut i = 0u64;
    for g in &cells {
        let cell = GpuCell::from(g);
        for mode in modes_for(cell) {
            if matches!(mode, Mode::Damped { relax, .. } if relax != 1.0)
                || mode == Mode::Sequential
            {
                continue;
            }
            for (batch, len, initial) in [(1, 1, "first"), (2, 37, "zeros"), (3, 600, "given")] {
                i += 1;
                let shape = (batch, len);
                let plan = PlanRequest::LookBack;
                check_case_plan(
                    runner,
                    cell,
                    shape,
                    mode,
                    initial,
                    seed + 31 * i,
                    what,
                    plan,
                );
            }
        }
    }
    check_fused_stops(runner, seed + 7);
}

/// The fused loop rotates three buffers (guess, next guess, best): stopping
/// at the iteration cap returns the last accepted guess with the residual
/// history of the unfused loop.
fn check_fused_stops<R: KernelRunner>(runner: &R, seed: u64) {
    let g = gru(24, 0.9, seed);
    let cell = GpuCell::from(&g);
    let (batch, len) = (2, 300);
    let mut r = rng(seed);
    let x: Vec<f32> = uniform(&mut r, batch * len * 3 * 24, -1.0, 1.0);
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch,
        len,
    };
    for max_iters in [1, 2, 3] {
        let opt = |plan| NewtonOptions {
            mode: Mode::Newton,
            initial: InitialGuess::Zeros,
            max_iters,
            atol: 0.0,
            rtol: 0.0,
            growth_patience: None,
            plan,
            ..Default::default()
        };
        let fused = solve_kernels(runner, cell, &problem, &opt(PlanRequest::LookBack)).unwrap();
        let plain = solve_kernels(runner, cell, &problem, &opt(PlanRequest::Chunk(8))).unwrap();
        let (f, p) = (&fused.report, &plain.report);
        assert!(f.fused && !p.fused);
        assert_eq!((f.iterations, p.iterations), (max_iters, max_iters));
        assert!(matches!(f.stop, StopReason::MaxIters), "{f:?}");
        assert_eq!(f.residuals.len(), p.residuals.len());
        for (a, b) in f.residuals.iter().zip(&p.residuals) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "residuals {a} vs {b}"
            );
        }
        let err = max_abs_diff(&fused.states, &plain.states);
        assert!(
            err <= 1e-5,
            "max_iters {max_iters}: fused vs unfused states differ by {err:e}"
        );
    }
}

/// The sequential kernels on their own.
pub fn run_sequential<R: KernelRunner>(runner: &R, seed: u64) {
    let g = gru(7, 1.0, seed);
    let l = lstm(4, 1.0, seed);
    let e = elman(40, 0.9, seed);
    for cell in [GpuCell::from(&g), GpuCell::from(&l), GpuCell::from(&e)] {
        let c = cell.as_cell();
        let (batch, len) = (3, 57);
        let mut r = rng(seed);
        let x: Vec<f32> = uniform(&mut r, batch * len * c.input_dim(), -1.0, 1.0);
        let h0: Vec<f32> = uniform(&mut r, batch * c.state_dim(), -0.5, 0.5);
        let problem = NonlinearProblem {
            x: &x,
            h0: Some(&h0),
            batch,
            len,
        };
        let want = sequential(&Cpu::new(), c, &problem).unwrap();
        let got = sequential_kernels(runner, cell, &problem).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(err <= 1e-5, "{}: sequential kernel error {err:e}", c.name());
    }
}

/// Divergence: non-finite iterates are a typed error, a growing residual
/// falls back to the sequential kernel when asked.
pub fn run_divergence<R: KernelRunner>(runner: &R) {
    // a_c large and inputs pushing the candidate: Picard's error grows
    // along the sequence before the exact prefix catches up.
    let cell = gru(4, 6.0, 77);
    let (batch, len) = (1, 200);
    let mut r = rng(78);
    let x: Vec<f32> = uniform(&mut r, batch * len * 12, -1.0, 1.0);
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch,
        len,
    };
    let options = NewtonOptions {
        mode: Mode::Picard,
        initial: InitialGuess::Zeros,
        growth_patience: Some(1),
        atol: 1e-7,
        rtol: 0.0,
        policy: Policy::FallbackSequential,
        ..Default::default()
    };
    let want = sequential(&Cpu::new(), &cell, &problem).unwrap();
    let cpu = solve(&Cpu::new(), &cell, &problem, &options).unwrap();
    let sol = solve_kernels(runner, GpuCell::from(&cell), &problem, &options).unwrap();
    assert_eq!(
        sol.report.fell_back, cpu.report.fell_back,
        "{:?}",
        sol.report
    );
    assert!(sol.report.converged);
    assert!(max_abs_diff(&sol.states, &want) <= 1e-5);
    if sol.report.fell_back {
        assert!(matches!(sol.report.stop, StopReason::Fallback(_)));
        let options = NewtonOptions {
            policy: Policy::Error,
            ..options
        };
        match solve_kernels(runner, GpuCell::from(&cell), &problem, &options) {
            Err(Error::Diverged(d)) => {
                assert_eq!(d.best_iterate.len(), want.len());
                assert!(d.best_residual.is_finite());
            }
            other => panic!("expected Diverged, got {other:?}"),
        }
    }
}

/// Typed errors before any launch.
pub fn run_errors<R: KernelRunner>(runner: &R) {
    let g = gru(3, 0.5, 1);
    let x = vec![0f32; 2 * 5 * 9];
    let ok = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 2,
        len: 5,
    };
    let opts = NewtonOptions::default();
    let e = solve_kernels(
        runner,
        GpuCell::from(&g),
        &NonlinearProblem { x: &x[1..], ..ok },
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e}");
    let h0 = vec![0f32; 5];
    let e = solve_kernels(
        runner,
        GpuCell::from(&g),
        &NonlinearProblem {
            h0: Some(&h0),
            ..ok
        },
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "h0", .. }), "{e}");
    let e = sequential_kernels(
        runner,
        GpuCell::from(&g),
        &NonlinearProblem {
            len: 0,
            x: &[],
            ..ok
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Size { arg: "len", .. }), "{e}");
    // Full Newton on a dense size the BlockDiagonal kernels lack: typed
    // error before any launch; quasi-Newton works at that size.
    let odd = elman(6, 0.5, 1);
    let x6 = vec![0f32; 2 * 5 * 6];
    let p6 = NonlinearProblem {
        x: &x6,
        h0: None,
        batch: 2,
        len: 5,
    };
    let e = solve_kernels(runner, GpuCell::from(&odd), &p6, &opts).unwrap_err();
    assert!(matches!(e, Error::Size { arg: "block", .. }), "{e}");
    let quasi = NewtonOptions {
        mode: Mode::QuasiNewton,
        ..opts
    };
    assert!(solve_kernels(runner, GpuCell::from(&odd), &p6, &quasi).is_ok());
    let big = elman(1025, 0.5, 1);
    let xb = vec![0f32; 1025];
    let e = sequential_kernels(
        runner,
        GpuCell::from(&big),
        &NonlinearProblem {
            x: &xb,
            h0: None,
            batch: 1,
            len: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Size { arg: "n", .. }), "{e}");
}
