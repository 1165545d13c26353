//! The CPU Newton solver on packed sequences (`cu_seqlens`): each sequence
//! of the packed solve equals that sequence's own sequential loop from its
//! own `h0` (the independent reference: the cell stepped one step at a
//! time, in f64), for a diagonal, a 2×2-block and a dense Jacobian, under
//! the fused, chunked and min-depth plans; empty sequences return their
//! `h0`; bad offsets and `h0` are typed errors.

mod common;

use common::{rng, uniform};
use parascan::backend::Cpu;
use parascan::newton::{
    sequential, solve_varlen, Cell, DiagGru, DiagLstm, Elman, Mode, NewtonOptions, NonlinearProblem,
};
use parascan::{Error, PlanRequest};

fn check<C: Cell<f64>>(cell: &C, lens: &[usize], batch: usize, seed: u64) {
    let n = cell.state_dim();
    let din = cell.input_dim();
    let mut cu = vec![0usize];
    for l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    let (t, count) = (*cu.last().unwrap(), lens.len());
    let mut r = rng(seed);
    let x: Vec<f64> = uniform(&mut r, batch * t * din, -1.0, 1.0);
    let h0: Vec<f64> = uniform(&mut r, batch * count * n, -0.5, 0.5);
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch,
        len: t,
    };
    let cpu = Cpu::new();
    for (mode, plan) in [
        (Mode::Newton, PlanRequest::Sequential),
        (Mode::Newton, PlanRequest::Chunk(4)),
        (Mode::Newton, PlanRequest::MinDepth),
        (Mode::QuasiNewton, PlanRequest::Chunk(3)),
        (Mode::Sequential, PlanRequest::Auto),
    ] {
        let options = NewtonOptions {
            mode,
            plan,
            atol: 1e-11,
            rtol: 1e-11,
            max_iters: t + 2,
            ..Default::default()
        };
        let sol = solve_varlen(&cpu, cell, &problem, &cu, Some(&h0), &options).unwrap();
        assert_eq!(sol.h_last.len(), batch * count * n);
        for b in 0..batch {
            for s in 0..count {
                let h0_s = &h0[(b * count + s) * n..(b * count + s + 1) * n];
                let got_h = &sol.h_last[(b * count + s) * n..(b * count + s + 1) * n];
                let (lo, hi) = (cu[s], cu[s + 1]);
                if lo == hi {
                    assert_eq!(got_h, h0_s, "empty sequence {s}: h_T = h0");
                    continue;
                }
                let xs = &x[(b * t + lo) * din..(b * t + hi) * din];
                let alone = NonlinearProblem {
                    x: xs,
                    h0: Some(h0_s),
                    batch: 1,
                    len: hi - lo,
                };
                let want = sequential(&cpu, cell, &alone).unwrap();
                let got = &sol.solution.states[(b * t + lo) * n..(b * t + hi) * n];
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0.0, f64::max);
                assert!(
                    err < 1e-8,
                    "{mode:?} {plan}: sequence {s} row {b}: error {err:e}"
                );
                // h_T is the sequence's last state.
                assert_eq!(got_h, &got[got.len() - n..], "h_T of sequence {s}");
            }
        }
    }
}

fn lens() -> Vec<usize> {
    vec![5, 0, 1, 12, 3, 0, 8, 40, 2]
}

#[test]
fn diag_gru_packed_sequences_equal_their_own_loops() {
    let mut r = rng(1);
    let cell = DiagGru::new(
        uniform(&mut r, 4, -0.5, 0.5),
        uniform(&mut r, 4, -0.5, 0.5),
        uniform(&mut r, 4, -0.5, 0.5),
    )
    .unwrap();
    check(&cell, &lens(), 2, 2);
}

#[test]
fn diag_lstm_packed_sequences_equal_their_own_loops() {
    let mut r = rng(3);
    let cell = DiagLstm::new(
        uniform(&mut r, 3, -0.5, 0.5),
        uniform(&mut r, 3, -0.5, 0.5),
        uniform(&mut r, 3, -0.5, 0.5),
    )
    .unwrap();
    check(&cell, &lens(), 1, 4);
}

#[test]
fn elman_packed_sequences_equal_their_own_loops() {
    let n = 3;
    let s = 0.5 / (n as f64).sqrt();
    let cell = Elman::new(n, uniform(&mut rng(5), n * n, -s, s)).unwrap();
    check(&cell, &lens(), 1, 6);
}

#[test]
fn newton_packed_bad_offsets_and_h0_are_errors() {
    let cell = Elman::new(2, vec![0.1; 4]).unwrap();
    let x = vec![0.1f64; 10 * 2];
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len: 10,
    };
    let cpu = Cpu::new();
    let opts = NewtonOptions::default();
    assert!(matches!(
        solve_varlen(&cpu, &cell, &problem, &[0usize, 7, 5, 10], None, &opts),
        Err(Error::SeqOffsets {
            arg: "cu_seqlens",
            index: 2,
            ..
        })
    ));
    let h0 = vec![0.0f64; 2];
    assert!(matches!(
        solve_varlen(&cpu, &cell, &problem, &[0usize, 5, 10], Some(&h0), &opts),
        Err(Error::Shape {
            arg: "h0",
            expected: 4,
            got: 2,
            ..
        })
    ));
    let own = NonlinearProblem {
        h0: Some(&h0),
        ..problem
    };
    assert!(matches!(
        solve_varlen(&cpu, &cell, &own, &[0usize, 10], None, &opts),
        Err(Error::Unsupported {
            what: "problem.h0",
            ..
        })
    ));
}
