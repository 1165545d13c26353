//! PermDiagonal problems with `u16` and `u32` permutations on the emulated
//! kernels: with `n ≤ 256` they run (narrowed to `u8` on the host) and give
//! the `u8` problem's results bit for bit, under every fiber order and plan,
//! and those agree with the f64 oracle; a larger `n` is a typed error naming
//! `n` before any launch (the CPU engine runs it).

mod common;

use common::{rng, tolerance, uniform};
use parascan::backend::emu::EmuBackend;
use parascan::backend::Engine;
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::kernels::KernelScan;
use parascan::{oracle, Error, PlanRequest};
use rand::seq::SliceRandom;

fn perms(seed: u64, rows: usize, n: usize) -> Vec<usize> {
    let mut r = rng(seed);
    let mut row: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        row.shuffle(&mut r);
        out.extend_from_slice(&row);
    }
    out
}

#[test]
fn u16_and_u32_permutations_run_and_equal_u8() {
    let (b, t, n) = (2, 150, 7);
    let p = perms(1, b * t, n);
    let (p8, p16, p32): (Vec<u8>, Vec<u16>, Vec<u32>) = (
        p.iter().map(|&i| i as u8).collect(),
        p.iter().map(|&i| i as u16).collect(),
        p.iter().map(|&i| i as u32).collect(),
    );
    let mut r = rng(2);
    let d: Vec<f32> = uniform(&mut r, b * t * n, -1.0, 1.0);
    let bb: Vec<f32> = uniform(&mut r, b * t * n, -1.0, 1.0);
    let h0: Vec<f32> = uniform(&mut r, b * n, -1.0, 1.0);
    let mk8 = PermDiagonal {
        perm: &p8[..],
        d: &d,
        b: &bb,
        h0: Some(&h0),
        batch: b,
        len: t,
        n,
    };
    let mk16 = PermDiagonal {
        perm: &p16[..],
        d: &d,
        b: &bb,
        h0: Some(&h0),
        batch: b,
        len: t,
        n,
    };
    let mk32 = PermDiagonal {
        perm: &p32[..],
        d: &d,
        b: &bb,
        h0: Some(&h0),
        batch: b,
        len: t,
        n,
    };
    let (want_out, want_h) = oracle::perm_diagonal(&mk16);
    for runner in [
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(3),
    ] {
        for req in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(16),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
        ] {
            let r8 = runner.run(&mk8, req).unwrap();
            let r16 = runner.run(&mk16, req).unwrap();
            let r32 = runner.run(&mk32, req).unwrap();
            assert_eq!(r16.out, r8.out, "u16 {req}");
            assert_eq!(r16.h_last, r8.h_last, "u16 {req}");
            assert_eq!(r32.out, r8.out, "u32 {req}");
            assert_eq!(r32.h_last, r8.h_last, "u32 {req}");
            assert!(
                oracle::rel_l2(&r16.out, &want_out) <= tolerance::<f32>(t),
                "{req}"
            );
            assert!(
                oracle::rel_l2(&r16.h_last, &want_h) <= tolerance::<f32>(t),
                "{req}"
            );
            assert_eq!(r16.plan.kind, r8.plan.kind);
        }
    }
}

#[test]
fn wide_permutations_past_the_kernel_limit_are_a_typed_error() {
    let (t, n) = (3, 300);
    let p16: Vec<u16> = perms(4, t, n).iter().map(|&i| i as u16).collect();
    let d = vec![0.5f32; t * n];
    let problem = PermDiagonal {
        perm: &p16[..],
        d: &d,
        b: &d,
        h0: None,
        batch: 1,
        len: t,
        n,
    };
    let runner = EmuBackend::forward();
    for r in [
        runner.run(&problem, PlanRequest::Auto).map(|_| ()),
        problem.kernel_plan(132, PlanRequest::Auto).map(|_| ()),
        problem.kernel_depth(&runner, PlanRequest::Auto).map(|_| ()),
    ] {
        match r {
            Err(Error::Size { arg, got, .. }) => assert_eq!((arg, got), ("n", n)),
            other => panic!("expected a size error on n, got {other:?}"),
        }
    }
    // The CPU engine runs it.
    assert!(parascan::backend::Cpu::new()
        .scan(&problem, PlanRequest::Auto)
        .is_ok());
}

#[test]
fn a_bad_wide_permutation_row_is_refused_before_any_launch() {
    let (t, n) = (4, 5);
    let mut p32: Vec<u32> = perms(5, t, n).iter().map(|&i| i as u32).collect();
    p32[2 * n + 1] = p32[2 * n]; // repeated index in row 2
    let d = vec![0.5f32; t * n];
    let problem = PermDiagonal {
        perm: &p32[..],
        d: &d,
        b: &d,
        h0: None,
        batch: 1,
        len: t,
        n,
    };
    match EmuBackend::forward().run(&problem, PlanRequest::Auto) {
        Err(Error::NotPermutation { step, .. }) => assert_eq!(step, 2),
        other => panic!("expected a permutation error, got {other:?}"),
    }
}
