//! The Newton solver on device memory (`newton::solve_device`): results
//! against an f64 sequential GRU written here, `h_T` on every path, a warm
//! workspace allocating nothing, the fixed-iteration mode reading nothing
//! back, depth buffers only when asked, and typed errors, all counted
//! through `CountingRunner`. On the emulator always; on `CudaBackend` with
//! cudarc memory when a device opens (the emulated driver in CI, skipping
//! with a printed reason elsewhere, failing under `REQUIRE_CUDA=1`).
//!
//! Also the host-side pieces of the same change: `Solution::h_t` of the CPU
//! solver and of `solve_kernels`, and the dtype-scaled default tolerance.

mod common;
#[path = "common/gpu.rs"]
mod gpu;

use common::{rng, uniform};
use parascan::backend::counting::CountingRunner;
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::backend::Cpu;
use parascan::kernels::{DeviceMut, DeviceRef, DeviceTensor};
use parascan::newton::{
    default_tolerance, residual_device, sequential, solve, solve_device, solve_kernels, DeviceCell,
    DeviceOptions, DeviceProblem, DeviceStates, DiagGru, DiagLstm, GpuCell, InitialGuess,
    Iterations, Mode, NewtonOptions, NewtonWorkspace, NonlinearProblem, Policy, StopReason,
};
use parascan::{Error, PlanRequest};

const B: usize = 3;
const T: usize = 160;
const N: usize = 8;

/// A contractive GRU and its inputs `x: [B,T,3N]`, `h0: [B,N]`.
struct Case {
    gru: DiagGru<f32>,
    x: Vec<f32>,
    h0: Vec<f32>,
}

fn case(seed: u64, len: usize) -> Case {
    let mut r = rng(seed);
    let w = |r: &mut _| uniform::<f32>(r, N, -0.9, 0.9);
    let gru = DiagGru::new(w(&mut r), w(&mut r), w(&mut r)).unwrap();
    Case {
        gru,
        x: uniform(&mut r, B * len * 3 * N, -1.5, 1.5),
        h0: uniform(&mut r, B * N, -0.5, 0.5),
    }
}

/// f64 sequential GRU from the cell's formulas (`z = σ(x_z + a_z h)`,
/// `r = σ(x_r + a_r h)`, `c = tanh(x_c + a_c r h)`, `h' = (1−z)h + z c`):
/// all states `[B,T,N]`.
fn gru_oracle(c: &Case, h0: Option<&[f32]>, len: usize) -> Vec<f64> {
    let f = |v: f32| f64::from(v);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let (az, ar, ac) = (c.gru.a_z(), c.gru.a_r(), c.gru.a_c());
    let mut out = vec![0.0; B * len * N];
    for b in 0..B {
        let mut h: Vec<f64> = match h0 {
            Some(h0) => h0[b * N..][..N].iter().map(|&v| f(v)).collect(),
            None => vec![0.0; N],
        };
        for t in 0..len {
            let x = &c.x[(b * len + t) * 3 * N..][..3 * N];
            for i in 0..N {
                let z = sig(f(x[i]) + f(az[i]) * h[i]);
                let r = sig(f(x[N + i]) + f(ar[i]) * h[i]);
                let cc = (f(x[2 * N + i]) + f(ac[i]) * r * h[i]).tanh();
                h[i] = (1.0 - z) * h[i] + z * cc;
            }
            out[(b * len + t) * N..][..N].copy_from_slice(&h);
        }
    }
    out
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, |m, e| if e.is_nan() { f64::NAN } else { m.max(e) })
}

/// `[B,N]` last states of `[B,len,n]`.
fn last<T: Copy>(states: &[T], len: usize, n: usize) -> Vec<T> {
    states
        .chunks_exact(len * n)
        .flat_map(|s| s[(len - 1) * n..].to_vec())
        .collect()
}

/// Device tensors of one solve.
struct Mem {
    x: DeviceTensor<f32>,
    h0: DeviceTensor<f32>,
    h: DeviceTensor<f32>,
    h_t: DeviceTensor<f32>,
}

fn mem<R: KernelRunner>(runner: &R, c: &Case, len: usize) -> Mem {
    Mem {
        x: DeviceTensor::upload(runner, &c.x).unwrap(),
        h0: DeviceTensor::upload(runner, &c.h0).unwrap(),
        h: DeviceTensor::alloc(runner, B * len * N).unwrap(),
        h_t: DeviceTensor::alloc(runner, B * N).unwrap(),
    }
}

fn solve_on<R: KernelRunner>(
    runner: &R,
    ws: &mut NewtonWorkspace,
    cell: &DeviceCell<'_>,
    m: &mut Mem,
    with_h0: bool,
    len: usize,
    options: &DeviceOptions<'_>,
) -> parascan::Result<parascan::newton::SolveReport> {
    solve_device(
        runner,
        ws,
        cell,
        &DeviceProblem {
            x: m.x.as_ref(),
            h0: with_h0.then(|| m.h0.as_ref()),
            batch: B,
            len,
        },
        DeviceStates {
            h: m.h.as_mut(),
            h_t: m.h_t.as_mut(),
        },
        options,
    )
}

/// Every mode and plan kind (gru's fused look-back pass, the unfused
/// Diagonal scan, Picard's copy, damped relaxation, the sequential kernel),
/// adaptive and fixed: the states match the f64 oracle and `h_T` is
/// exactly the last state.
fn matches_the_oracle<R: KernelRunner>(runner: &R, what: &str) {
    let c = case(11, T);
    let want = gru_oracle(&c, Some(&c.h0), T);
    let cell = DeviceCell::new(runner, &c.gru).unwrap();
    let mut ws = NewtonWorkspace::new();
    let mut m = mem(runner, &c, T);
    let modes = [
        Mode::Newton,
        Mode::QuasiNewton,
        Mode::Picard,
        Mode::Damped {
            shrink: 0.2,
            relax: 0.8,
        },
        Mode::Sequential,
    ];
    for mode in modes {
        for plan in [PlanRequest::LookBack, PlanRequest::Chunk(16)] {
            for iterations in [Iterations::Adaptive, Iterations::Fixed(T)] {
                let options = DeviceOptions {
                    newton: NewtonOptions {
                        mode,
                        plan,
                        initial: InitialGuess::Zeros,
                        max_iters: 4 * T,
                        ..Default::default()
                    },
                    iterations,
                    measure_depth: false,
                };
                let label = format!("{what} {mode} {plan} {iterations:?}");
                let report = solve_on(runner, &mut ws, &cell, &mut m, true, T, &options)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                let h = m.h.download(runner).unwrap();
                let h_t = m.h_t.download(runner).unwrap();
                let err = worst(&h, &want);
                // Picard and damped relaxation converge linearly: T
                // fixed iterations are exact only for undamped Newton
                // and Picard (the first k states exact after k).
                let bound = match (mode, iterations) {
                    (Mode::Damped { .. }, Iterations::Fixed(_)) => 1e-2,
                    _ => 1e-4,
                };
                assert!(err <= bound, "{label}: error {err:.2e}");
                assert_eq!(h_t, last(&h, T, N), "{label}: h_T is not the last state");
                // Sequential mode's depth is T by definition, not measured.
                let unmeasured = if mode == Mode::Sequential {
                    T as u64
                } else {
                    0
                };
                assert_eq!(report.depth, unmeasured, "{label}: depth measured unasked");
                match iterations {
                    Iterations::Fixed(k) if mode != Mode::Sequential => {
                        assert_eq!(report.iterations, k, "{label}");
                        assert_eq!(report.stop, StopReason::Fixed, "{label}");
                        assert!(report.residuals.is_empty() && !report.converged, "{label}");
                    }
                    _ => assert!(report.converged, "{label}: {:?}", report.stop),
                }
            }
        }
    }
}

#[test]
fn device_solve_matches_the_f64_oracle_on_the_emulator() {
    matches_the_oracle(&EmuBackend::default(), "emu");
}

/// A warm workspace: repeated adaptive and fixed solves (and residual
/// checks) allocate nothing and upload nothing.
fn warm_solves_allocate_nothing<R: KernelRunner>(runner: &CountingRunner<R>, what: &str) {
    let c = case(5, T);
    let cell = DeviceCell::new(runner, &c.gru).unwrap();
    let mut m = mem(runner, &c, T);
    let mut ws = NewtonWorkspace::new();
    for plan in [PlanRequest::LookBack, PlanRequest::Chunk(16)] {
        for iterations in [Iterations::Adaptive, Iterations::Fixed(6)] {
            let options = DeviceOptions {
                newton: NewtonOptions {
                    plan,
                    ..Default::default()
                },
                iterations,
                measure_depth: false,
            };
            // Warm-up for this plan kind (the scans' scratch differs).
            solve_on(runner, &mut ws, &cell, &mut m, true, T, &options).unwrap();
            let warm = ws.allocations();
            for round in 0..3 {
                let before = runner.counts();
                solve_on(runner, &mut ws, &cell, &mut m, round % 2 == 0, T, &options).unwrap();
                let problem = DeviceProblem {
                    x: m.x.as_ref(),
                    h0: (round % 2 == 0).then(|| m.h0.as_ref()),
                    batch: B,
                    len: T,
                };
                residual_device(runner, &mut ws, &cell, &problem, m.h.as_ref()).unwrap();
                let spent = runner.counts().since(&before);
                let label = format!("{what} {plan} {iterations:?} round {round}");
                assert_eq!(spent.allocations, 0, "{label}: {spent:?}");
                assert_eq!(spent.allocated_bytes, 0, "{label}: {spent:?}");
                assert_eq!(spent.uploads, 0, "{label}: {spent:?}");
                assert!(spent.launches > 0, "{label}: nothing ran");
                assert_eq!(ws.allocations(), warm, "{label}");
            }
        }
    }
    // A smaller shape reuses the larger one's buffers.
    let short = T / 2;
    let c2 = case(6, short);
    let mut m2 = mem(runner, &c2, short);
    let before = runner.counts();
    solve_on(
        runner,
        &mut ws,
        &cell,
        &mut m2,
        true,
        short,
        &DeviceOptions {
            newton: NewtonOptions {
                plan: PlanRequest::Chunk(16),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let spent = runner.counts().since(&before);
    assert_eq!(spent.allocations, 0, "{what}: shorter shape: {spent:?}");
}

#[test]
fn warm_workspace_allocates_nothing_on_the_emulator() {
    warm_solves_allocate_nothing(&CountingRunner::new(EmuBackend::default()), "emu");
}

/// The fixed mode reads nothing back and never synchronizes, on every path
/// (fused gru, unfused Diagonal scan, Picard, damped, the 2×2-block LSTM
/// scan, the sequential kernel), cold or warm; the adaptive mode reads the
/// two residual words once per check.
fn fixed_mode_reads_nothing_back<R: KernelRunner>(runner: &CountingRunner<R>, what: &str) {
    let c = case(8, T);
    let gru = DeviceCell::new(runner, &c.gru).unwrap();
    let mut r = rng(9);
    let lstm = DiagLstm::new(
        uniform(&mut r, N / 2, -0.8, 0.8),
        uniform(&mut r, N / 2, -0.8, 0.8),
        uniform(&mut r, N / 2, -0.8, 0.8),
    )
    .unwrap();
    let lstm_cell = DeviceCell::new(runner, &lstm).unwrap();
    // The LSTM's input is [B,T,3·N/2]; its state is (c, h): N scalars.
    let lstm_x = DeviceTensor::upload(runner, &c.x[..B * T * 3 * N / 2]).unwrap();
    let mut m = mem(runner, &c, T);
    let mut ws = NewtonWorkspace::new();
    let modes = [
        (Mode::Newton, PlanRequest::LookBack),
        (Mode::Newton, PlanRequest::Chunk(16)),
        (Mode::Picard, PlanRequest::Auto),
        (
            Mode::Damped {
                shrink: 0.5,
                relax: 0.7,
            },
            PlanRequest::Auto,
        ),
        (Mode::Sequential, PlanRequest::Auto),
    ];
    for (mode, plan) in modes {
        for initial in [InitialGuess::FirstStep, InitialGuess::Zeros] {
            let options = DeviceOptions {
                newton: NewtonOptions {
                    mode,
                    plan,
                    initial,
                    ..Default::default()
                },
                iterations: Iterations::Fixed(5),
                measure_depth: false,
            };
            let label = format!("{what} gru {mode} {plan} {initial:?}");
            let before = runner.counts();
            solve_on(runner, &mut ws, &gru, &mut m, true, T, &options).unwrap();
            let spent = runner.counts().since(&before);
            assert_eq!(spent.downloads, 0, "{label}: {spent:?}");
            assert_eq!(spent.synchronizations, 0, "{label}: {spent:?}");
            // And the answer is there once the runner is done.
            runner.synchronize().unwrap();
            let h = m.h.download(runner).unwrap();
            assert!(h.iter().all(|v| v.is_finite()), "{label}");
            assert_eq!(m.h_t.download(runner).unwrap(), last(&h, T, N), "{label}");
        }
        // The BlockDiagonal scan has no look-back plan: auto.
        let options = DeviceOptions {
            newton: NewtonOptions {
                mode,
                ..Default::default()
            },
            iterations: Iterations::Fixed(5),
            measure_depth: false,
        };
        let before = runner.counts();
        solve_device(
            runner,
            &mut ws,
            &lstm_cell,
            &DeviceProblem {
                x: lstm_x.as_ref(),
                h0: None,
                batch: B,
                len: T,
            },
            DeviceStates {
                h: m.h.as_mut(),
                h_t: m.h_t.as_mut(),
            },
            &options,
        )
        .unwrap();
        let spent = runner.counts().since(&before);
        assert_eq!(spent.downloads, 0, "{what} lstm {mode}: {spent:?}");
    }
    // Adaptive: one 8-byte read per residual check, nothing else.
    let before = runner.counts();
    let report = solve_on(
        runner,
        &mut ws,
        &gru,
        &mut m,
        true,
        T,
        &DeviceOptions::default(),
    )
    .unwrap();
    let spent = runner.counts().since(&before);
    assert!(report.converged, "{what}: {report:?}");
    assert_eq!(spent.downloads, report.residuals.len() as u64, "{what}");
    assert_eq!(spent.downloaded_bytes, 8 * report.residuals.len() as u64);
}

#[test]
fn fixed_mode_reads_nothing_back_on_the_emulator() {
    fixed_mode_reads_nothing_back(&CountingRunner::new(EmuBackend::default()), "emu");
}

/// Depth counters (`[B,T,n]` u32) are allocated only when asked for.
fn depth_only_when_asked<R: KernelRunner>(runner: &CountingRunner<R>, what: &str) {
    let c = case(3, T);
    let cell = DeviceCell::new(runner, &c.gru).unwrap();
    let mut m = mem(runner, &c, T);
    let mut ws = NewtonWorkspace::new();
    for plan in [PlanRequest::LookBack, PlanRequest::Chunk(16)] {
        let mut options = DeviceOptions {
            newton: NewtonOptions {
                plan,
                ..Default::default()
            },
            ..Default::default()
        };
        solve_on(runner, &mut ws, &cell, &mut m, true, T, &options).unwrap();
        let before = runner.counts();
        let quiet = solve_on(runner, &mut ws, &cell, &mut m, true, T, &options).unwrap();
        let spent = runner.counts().since(&before);
        assert_eq!(spent.allocated_bytes, 0, "{what} {plan}: {spent:?}");
        assert_eq!(quiet.depth, 0);
        assert!(quiet.scan_depths.is_empty());

        options.measure_depth = true;
        let before = runner.counts();
        let measured = solve_on(runner, &mut ws, &cell, &mut m, true, T, &options).unwrap();
        let spent = runner.counts().since(&before);
        let counters = (B * T * N * 4) as u64;
        assert!(
            spent.allocated_bytes >= counters,
            "{what} {plan}: {spent:?}, expected ≥ {counters} bytes of depth counters"
        );
        // The depth of one scan of T steps is at least log2 T combines.
        assert!(measured.depth > u64::from(T.ilog2()), "{measured:?}");
        assert_eq!(measured.scan_depths.len(), measured.iterations);
    }
}

#[test]
fn depth_buffers_only_when_asked_on_the_emulator() {
    depth_only_when_asked(&CountingRunner::new(EmuBackend::default()), "emu");
}

/// Streaming: chunks chained through `h_T → h0` on the device give the
/// whole sequence's states.
#[test]
fn chunks_chain_through_h_t_on_the_emulator() {
    let emu = EmuBackend::default();
    let whole = case(21, T);
    let want = gru_oracle(&whole, None, T);
    let cell = DeviceCell::new(&emu, &whole.gru).unwrap();
    let mut ws = NewtonWorkspace::new();
    let half = T / 2;
    let mut state = DeviceTensor::<f32>::alloc(&emu, B * N).unwrap();
    let mut next = DeviceTensor::<f32>::alloc(&emu, B * N).unwrap();
    let mut h = DeviceTensor::<f32>::alloc(&emu, B * half * N).unwrap();
    for part in 0..2 {
        let x: Vec<f32> = (0..B)
            .flat_map(|b| whole.x[(b * T + part * half) * 3 * N..][..half * 3 * N].to_vec())
            .collect();
        let x = DeviceTensor::upload(&emu, &x).unwrap();
        solve_device(
            &emu,
            &mut ws,
            &cell,
            &DeviceProblem {
                x: x.as_ref(),
                h0: (part == 1).then(|| state.as_ref()),
                batch: B,
                len: half,
            },
            DeviceStates {
                h: h.as_mut(),
                h_t: next.as_mut(),
            },
            &DeviceOptions::default(),
        )
        .unwrap();
        std::mem::swap(&mut state, &mut next);
        let got = h.download(&emu).unwrap();
        for b in 0..B {
            let w = &want[(b * T + part * half) * N..][..half * N];
            let err = worst(&got[b * half * N..][..half * N], w);
            assert!(err <= 1e-4, "part {part} row {b}: {err:.2e}");
        }
    }
    let h_t = state.download(&emu).unwrap();
    assert!(worst(&h_t, &last(&want, T, N)) <= 1e-4);
}

/// Every bad argument is a typed error naming it, before any launch.
#[test]
fn bad_device_arguments_are_rejected_by_name() {
    let emu = CountingRunner::new(EmuBackend::default());
    let c = case(1, T);
    let cell = DeviceCell::new(&emu, &c.gru).unwrap();
    let mut m = mem(&emu, &c, T);
    let mut ws = NewtonWorkspace::new();
    let options = DeviceOptions::default();
    let short = DeviceTensor::upload(&emu, &c.x[1..]).unwrap();
    let x64: Vec<f64> = c.x.iter().map(|&v| f64::from(v)).collect();
    let x64 = DeviceTensor::upload(&emu, &x64).unwrap();
    let before = emu.counts();
    let go = |x: DeviceRef<'_>,
              h: DeviceMut<'_>,
              h_t: DeviceMut<'_>,
              ws: &mut NewtonWorkspace,
              options: &DeviceOptions<'_>| {
        solve_device(
            &emu,
            ws,
            &cell,
            &DeviceProblem {
                x,
                h0: None,
                batch: B,
                len: T,
            },
            DeviceStates { h, h_t },
            options,
        )
        .unwrap_err()
    };
    let err = go(
        short.as_ref(),
        m.h.as_mut(),
        m.h_t.as_mut(),
        &mut ws,
        &options,
    );
    assert!(matches!(err, Error::Shape { arg: "x", .. }), "{err}");
    let err = go(
        x64.as_ref(),
        m.h.as_mut(),
        m.h_t.as_mut(),
        &mut ws,
        &options,
    );
    assert!(
        matches!(
            err,
            Error::ElemType {
                arg: "x",
                expected: "f32",
                got: "f64"
            }
        ),
        "{err}"
    );
    let err = go(
        m.x.as_ref(),
        m.h_t.as_mut(),
        m.h.as_mut(),
        &mut ws,
        &options,
    );
    assert!(matches!(err, Error::Shape { arg: "h", .. }), "{err}");
    // h_T inside the states: an overlap (two untyped views of one buffer).
    let both = emu.alloc(B * T * N * 4).unwrap();
    let err = go(
        m.x.as_ref(),
        (&both).into(),
        (&both).into(),
        &mut ws,
        &options,
    );
    assert!(matches!(err, Error::Shape { arg: "h_t", .. }), "{err}");
    // An output that is also an input: h_T written over h0.
    let state = emu.alloc(B * N * 4).unwrap();
    let err = solve_device(
        &emu,
        &mut ws,
        &cell,
        &DeviceProblem {
            x: m.x.as_ref(),
            h0: Some((&state).into()),
            batch: B,
            len: T,
        },
        DeviceStates {
            h: m.h.as_mut(),
            h_t: (&state).into(),
        },
        &options,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Size { arg: "h_t", ref expected, .. } if expected.contains("`h0`")),
        "{err}"
    );
    // A host guess.
    let guess = vec![0f32; B * T * N];
    let given = DeviceOptions {
        newton: NewtonOptions {
            initial: InitialGuess::Given(&guess),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = go(m.x.as_ref(), m.h.as_mut(), m.h_t.as_mut(), &mut ws, &given);
    assert!(
        matches!(err, Error::Plan(ref s) if s.contains("Given")),
        "{err}"
    );
    // No launch was issued for any of them.
    let spent = emu.counts().since(&before);
    assert_eq!(spent.launches, 0, "{spent:?}");
    assert!(m.h.download(&emu).unwrap().iter().all(|v| v.is_nan()));
}

/// Divergence under `Policy::Error` on the device path returns the best
/// iterate; under `FallbackSequential` the sequential kernel's states and
/// their `h_T`.
#[test]
fn divergence_on_the_device_path() {
    let emu = EmuBackend::default();
    let c = case(4, T);
    let cell = DeviceCell::new(&emu, &c.gru).unwrap();
    let mut m = mem(&emu, &c, T);
    let mut ws = NewtonWorkspace::new();
    let mut options = DeviceOptions::default();
    // A non-finite input (not checked on the device: that would need a
    // read-back) makes the residual NaN: divergence for certain.
    let mut bad = c.x.clone();
    bad[7] = f32::NAN;
    let x_bad = DeviceTensor::upload(&emu, &bad).unwrap();
    let run = |ws: &mut NewtonWorkspace, m: &mut Mem, options: &DeviceOptions<'_>| {
        solve_device(
            &emu,
            ws,
            &cell,
            &DeviceProblem {
                x: x_bad.as_ref(),
                h0: None,
                batch: B,
                len: T,
            },
            DeviceStates {
                h: m.h.as_mut(),
                h_t: m.h_t.as_mut(),
            },
            options,
        )
    };
    let err = run(&mut ws, &mut m, &options).unwrap_err();
    match err {
        Error::Diverged(d) => assert_eq!(d.best_iterate.len(), B * T * N),
        other => panic!("{other}"),
    }
    options.newton.policy = Policy::FallbackSequential;
    let report = run(&mut ws, &mut m, &options).unwrap();
    assert!(report.fell_back, "{report:?}");
    // Unit 7 of row 0 is NaN from the bad input on: compare bits.
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let h = m.h.download(&emu).unwrap();
    assert!(h[B * T * N - 1].is_finite() && h[7].is_nan());
    assert_eq!(bits(m.h_t.download(&emu).unwrap()), bits(last(&h, T, N)));
}

/// `Solution::h_t` is the last state on the CPU solver and on the host
/// kernel entry point, on every path.
#[test]
fn solutions_carry_h_t() {
    let c = case(2, T);
    let problem = NonlinearProblem {
        x: &c.x,
        h0: Some(&c.h0),
        batch: B,
        len: T,
    };
    let cpu = Cpu::new();
    let emu = EmuBackend::default();
    for mode in [Mode::Newton, Mode::Picard, Mode::Sequential] {
        let options = NewtonOptions {
            mode,
            max_iters: 4 * T,
            ..Default::default()
        };
        let sol = solve(&cpu, &c.gru, &problem, &options).unwrap();
        assert_eq!(sol.h_t, last(&sol.states, T, N), "cpu {mode}");
        let sol = solve_kernels(&emu, GpuCell::from(&c.gru), &problem, &options).unwrap();
        assert_eq!(sol.h_t, last(&sol.states, T, N), "emu {mode}");
        assert!(worst(&sol.h_t, &last(&gru_oracle(&c, Some(&c.h0), T), T, N)) <= 1e-4);
    }
}

/// The default tolerance scales with the dtype: an f64 solve with default
/// options is f64-accurate, an f32 one keeps 1e-5.
#[test]
fn default_tolerance_scales_with_the_dtype() {
    assert_eq!(default_tolerance::<f32>(), 1e-5);
    assert_eq!(NewtonOptions::<f32>::default().atol, 1e-5);
    assert!(NewtonOptions::<f64>::default().atol <= 1e-11);
    let c = case(12, T);
    let gru64 = DiagGru::new(
        c.gru.a_z().iter().map(|&v| f64::from(v)).collect(),
        c.gru.a_r().iter().map(|&v| f64::from(v)).collect(),
        c.gru.a_c().iter().map(|&v| f64::from(v)).collect(),
    )
    .unwrap();
    let x64: Vec<f64> = c.x.iter().map(|&v| f64::from(v)).collect();
    let problem = NonlinearProblem {
        x: &x64,
        h0: None,
        batch: B,
        len: T,
    };
    let cpu = Cpu::new();
    let sol = solve(&cpu, &gru64, &problem, &NewtonOptions::default()).unwrap();
    assert!(sol.report.converged, "{:?}", sol.report);
    let want = gru_oracle(&c, None, T);
    let err = sol
        .states
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f64, f64::max);
    assert!(err <= 1e-10, "f64 default-tolerance error {err:.2e}");
    // The same check against the f64 sequential loop (a cross-check of the oracle).
    let seq = sequential(&cpu, &gru64, &problem).unwrap();
    assert!(seq.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-12));
}

/// The same checks on `CudaBackend`, with cudarc memory for the inputs and
/// outputs (the emulated driver in CI).
#[test]
fn device_newton_on_cuda() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    matches_the_oracle(&cuda, "cuda");
    let counted = CountingRunner::new(cuda.clone());
    warm_solves_allocate_nothing(&counted, "cuda");
    fixed_mode_reads_nothing_back(&counted, "cuda");
    depth_only_when_asked(&counted, "cuda");

    // cudarc slices in place: inputs through `input`, outputs through
    // `output`, h_T into the middle of a larger allocation.
    let c = case(13, T);
    let want = gru_oracle(&c, Some(&c.h0), T);
    let stream = cuda.stream().clone();
    let sx = stream.clone_htod(&c.x).unwrap();
    let sh0 = stream.clone_htod(&c.h0).unwrap();
    let mut sh = stream.alloc_zeros::<f32>(B * T * N).unwrap();
    let mut big = stream.alloc_zeros::<f32>(3 * B * N).unwrap();
    let cell = DeviceCell::new(&counted, &c.gru).unwrap();
    let mut ws = NewtonWorkspace::new();
    for iterations in [Iterations::Adaptive, Iterations::Fixed(T)] {
        let before = counted.counts();
        {
            let mut mid = big.slice_mut(B * N..2 * B * N);
            solve_device(
                &counted,
                &mut ws,
                &cell,
                &DeviceProblem {
                    x: cuda.input(&sx).unwrap(),
                    h0: Some(cuda.input(&sh0).unwrap()),
                    batch: B,
                    len: T,
                },
                DeviceStates {
                    h: cuda.output(&mut sh).unwrap(),
                    h_t: cuda.output(&mut mid).unwrap(),
                },
                &DeviceOptions {
                    iterations,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        let spent = counted.counts().since(&before);
        if iterations != Iterations::Adaptive {
            assert_eq!(spent.downloads, 0, "{spent:?}");
        }
        let h = stream.clone_dtoh(&sh).unwrap();
        let all = stream.clone_dtoh(&big).unwrap();
        assert!(worst(&h, &want) <= 1e-4, "{iterations:?}");
        assert_eq!(all[B * N..2 * B * N], last(&h, T, N)[..]);
        assert!(all[..B * N]
            .iter()
            .chain(&all[2 * B * N..])
            .all(|&v| v == 0.0));
    }
}
