//! The subnormal rule, the same on every backend: f32 arithmetic (f32, f16
//! and bf16 storage) flushes subnormal inputs and results to zero; f64
//! arithmetic keeps IEEE subnormals.
//!
//! Each case is built so that the two rules give different answers: under
//! IEEE arithmetic the f32 outputs below would be nonzero subnormals, and
//! the f64 outputs would be zero under a flush. The CPU engine, the SIMT
//! emulator (every fiber order) and the CUDA backend (over the emulated
//! driver in CI; skipped with a printed reason without a device) must all
//! give the rule's answer, under sequential, chunked and look-back plans.

#[path = "common/gpu.rs"]
mod gpu;

use half::bf16;
use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::backend::{Cpu, Engine};
use parascan::family::{diagonal::Diagonal, perm_diagonal::PermDiagonal, Layout};
use parascan::{PlanRequest, Storage};

const B: usize = 2;
const T: usize = 300;
const D: usize = 4;

/// Sequential, chunked and automatic plans, plus the look-back on the
/// kernels (the CPU engine has none).
fn plans(kernels: bool) -> Vec<PlanRequest> {
    let mut plans = vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(16),
        PlanRequest::Auto,
    ];
    if kernels {
        plans.push(PlanRequest::LookBack);
    }
    plans
}

/// Outputs `h` and `h_T` of a Diagonal problem on `engine`, concatenated.
fn diag_on<E: Engine, S: Storage + bytemuck::Pod>(
    engine: &E,
    p: &Diagonal<'_, S>,
    request: PlanRequest,
) -> Vec<S> {
    let run = engine
        .run(p, request)
        .unwrap_or_else(|e| panic!("{} {request}: {e}", engine.engine_name()));
    let mut all = run.out;
    all.extend(run.h_last);
    all
}

/// Runs `check(engine name, plan, outputs)` on every engine and plan.
fn on_every_engine<S: Storage + bytemuck::Pod>(
    p: &Diagonal<'_, S>,
    check: impl Fn(&str, PlanRequest, &[S]),
) {
    let cpu = Cpu::new();
    for request in plans(false) {
        check("cpu", request, &diag_on(&cpu, p, request));
    }
    for (order, seed) in [
        (FiberOrder::Forward, 1),
        (FiberOrder::Reverse, 2),
        (FiberOrder::Shuffle, 3),
    ] {
        let emu = EmuBackend::new(order, seed);
        for request in plans(true) {
            check(
                &format!("emu {order:?}"),
                request,
                &diag_on(&emu, p, request),
            );
        }
    }
    if let Some(cuda) = gpu::cuda_or_skip() {
        for request in plans(true) {
            check("cuda", request, &diag_on(&cuda, p, request));
        }
    }
}

/// f32-rule inputs: `a = 0.5`, `h0 = 0` and every `b` subnormal. Flushing
/// treats each `b` as zero, so every state is exactly zero; IEEE
/// arithmetic would accumulate about `2·b`, a nonzero subnormal.
fn flushed_inputs<S: Storage>(b_value: f64) -> (Vec<S>, Vec<S>) {
    let a = vec![S::from_f64(0.5); B * T * D];
    let b = vec![S::from_f64(b_value); B * T * D];
    (a, b)
}

fn assert_all_zero<S: Storage>(engine: &str, request: PlanRequest, out: &[S]) {
    for (i, v) in out.iter().enumerate() {
        assert_eq!(
            v.to_f64(),
            0.0,
            "{engine} {request}: output {i} is {v:?}, but the f32 rule flushes subnormals to zero"
        );
    }
}

#[test]
fn f32_subnormal_inputs_are_flushed_on_every_backend() {
    // 1e-39 is subnormal in f32 (below 1.18e-38).
    let (a, b) = flushed_inputs::<f32>(1e-39);
    assert!(b[0] != 0.0 && b[0].is_subnormal());
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: B,
        len: T,
        dim: D,
        layout: Layout::Btd,
    };
    on_every_engine(&p, assert_all_zero::<f32>);
}

#[test]
fn bf16_subnormal_inputs_are_flushed_on_every_backend() {
    // bf16 shares f32's exponent range: 1e-39 is a bf16 subnormal, and its
    // f32 widening is an f32 subnormal, flushed by the f32 arithmetic.
    let (a, b) = flushed_inputs::<bf16>(1e-39);
    assert!(b[0].to_f32() != 0.0 && b[0].to_f32().is_subnormal());
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: B,
        len: T,
        dim: D,
        layout: Layout::Bdt,
    };
    on_every_engine(&p, assert_all_zero::<bf16>);
}

#[test]
fn f32_results_that_turn_subnormal_are_flushed() {
    // h0 = 1e-30, a = 1e-5, b = 0: h_1 = 1e-35 (normal), h_2 = 1e-40 would
    // be subnormal and is flushed, so every later state is exactly zero.
    let a = vec![1e-5f32; B * T * D];
    let b = vec![0f32; B * T * D];
    let h0 = vec![1e-30f32; B * D];
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch: B,
        len: T,
        dim: D,
        layout: Layout::Btd,
    };
    on_every_engine(&p, |engine, request, out| {
        let (h, h_t) = out.split_at(B * T * D);
        for bb in 0..B {
            for d in 0..D {
                let first = h[(bb * T) * D + d];
                assert!(
                    (f64::from(first) - 1e-35).abs() <= 1e-40,
                    "{engine} {request}: h_1 = {first}, expected 1e-35"
                );
            }
        }
        for bb in 0..B {
            // Steps 2..T of sequence `bb` ([B,T,D] layout).
            assert_all_zero(engine, request, &h[(bb * T + 1) * D..(bb + 1) * T * D]);
        }
        assert_all_zero(engine, request, h_t);
    });
}

#[test]
fn f64_subnormals_follow_ieee_on_every_backend() {
    // 1e-310 is subnormal in f64 (below 2.2e-308): IEEE keeps it, so the
    // states grow towards 2e-310 as the f64 oracle says; a flush would give
    // zeros.
    let (a, b) = flushed_inputs::<f64>(1e-310);
    assert!(b[0].is_subnormal());
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: B,
        len: T,
        dim: D,
        layout: Layout::Btd,
    };
    let (h, h_t) = parascan::oracle::diagonal(&p);
    let want: Vec<f64> = h.into_iter().chain(h_t).collect();
    on_every_engine(&p, |engine, request, out| {
        for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
            assert!(w > 0.0);
            // Subnormals carry fewer bits: compare in units of the
            // smallest subnormal (4.9e-324), one per step of rounding.
            assert!(
                (g - w).abs() <= 64.0 * f64::from_bits(1) + 1e-12 * w,
                "{engine} {request}: output {i} is {g:e}, IEEE gives {w:e}"
            );
        }
    });
}

#[test]
fn perm_diagonal_follows_the_same_rule() {
    // The rule is per dtype, not per family: PermDiagonal's kernels flush
    // f32 subnormal inputs too (identity permutations, d = 0.5).
    let n = 5;
    let perm: Vec<u8> = (0..B * T).flat_map(|_| 0..n as u8).collect();
    let d = vec![0.5f32; B * T * n];
    let b = vec![1e-39f32; B * T * n];
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: None,
        batch: B,
        len: T,
        n,
    };
    let cpu = Cpu::new();
    for request in plans(false) {
        let run = cpu.run(&p, request).unwrap();
        assert_all_zero("cpu", request, &run.out);
        assert_all_zero("cpu", request, &run.h_last);
    }
    let emu = EmuBackend::new(FiberOrder::Shuffle, 7);
    for request in plans(true) {
        let run = emu.run(&p, request).unwrap();
        assert_all_zero("emu", request, &run.out);
        assert_all_zero("emu", request, &run.h_last);
    }
}
