//! Hostile inputs to the library (issue 14): sizes whose products overflow,
//! sizes that would need terabytes, degenerate cells. Each must be a typed
//! error (or a correct result), never a panic or an abort; huge sizes must
//! be refused before anything is allocated.

use parascan::backend::emu::EmuBackend;
use parascan::backend::Cpu;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::kernels::KernelScan;
use parascan::newton::{
    sequential, solve, solve_kernels, Cell, DiagGru, DiagLstm, Elman, Mode, NewtonOptions,
    NonlinearProblem, Structure,
};
use parascan::{Error, PlanRequest};

/// `NonlinearProblem { batch: 2^62+1, len: 4 }` with a 12-element `x`: the
/// product `batch·len·input_dim` wraps to 12 in unchecked arithmetic.
#[test]
fn newton_size_product_overflow_is_named() {
    let cell = DiagGru::new(vec![0.5f32], vec![0.5], vec![0.5]).unwrap();
    let x = vec![0.1f32; 12];
    let batch = (1usize << 62) + 1;
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch,
        len: 4,
    };
    let want =
        "argument `x`: batch × len × input_dim = 4611686018427387905 × 4 × 3 overflows usize";
    let cpu = Cpu::new();
    for mode in [
        Mode::Sequential,
        Mode::Newton,
        Mode::QuasiNewton,
        Mode::Picard,
    ] {
        let options = NewtonOptions {
            mode,
            ..Default::default()
        };
        let e = solve(&cpu, &cell, &problem, &options).unwrap_err();
        assert!(
            matches!(e, Error::Overflow { arg: "x", .. }),
            "{mode:?}: {e}"
        );
        assert_eq!(e.to_string(), want);
        let e =
            solve_kernels(&EmuBackend::default(), (&cell).into(), &problem, &options).unwrap_err();
        assert_eq!(e.to_string(), want, "emu {mode:?}");
    }
    let e = sequential(&cpu, &cell, &problem).unwrap_err();
    assert_eq!(e.to_string(), want);
}

/// `Elman::new(2^32, [])`: `n·n` wraps to 0 in unchecked arithmetic.
#[test]
fn elman_weight_size_overflow_is_named() {
    let e = Elman::<f32>::new(1 << 32, vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "argument `w`: n × n = 4294967296 × 4294967296 overflows usize"
    );
}

/// Built-in cells cannot be built inconsistent: every weight has `n`
/// entries, checked by the constructor (the fields are private).
#[test]
fn inconsistent_cells_are_refused_on_construction() {
    let e = DiagGru::new(vec![0.5f32; 4], vec![0.5; 3], vec![0.5; 4]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                arg: "a_r",
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = DiagLstm::new(vec![0.5f32; 2], vec![0.5; 2], vec![0.5; 5]).unwrap_err();
    assert!(matches!(e, Error::Shape { arg: "a_g", .. }), "{e}");
    let e = Elman::new(3, vec![0.1f32; 8]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                arg: "w",
                expected: 9,
                ..
            }
        ),
        "{e}"
    );
    let e = DiagGru::<f32>::new(vec![], vec![], vec![]).unwrap_err();
    assert!(matches!(e, Error::Size { arg: "a_z", .. }), "{e}");
}

/// A user cell that declares whatever sizes it is given; its `step` would
/// index out of bounds or divide by zero if the solver trusted them.
struct Declared {
    n: usize,
    din: usize,
    structure: Structure,
}

impl Cell<f32> for Declared {
    fn name(&self) -> &str {
        "declared"
    }
    fn state_dim(&self) -> usize {
        self.n
    }
    fn input_dim(&self) -> usize {
        self.din
    }
    fn structure(&self) -> Structure {
        self.structure
    }
    fn step(&self, h: &[f32], x: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = 0.5 * h[i] + x[i % x.len()];
        }
    }
    fn step_jacobian(&self, h: &[f32], x: &[f32], out: &mut [f32], jac: &mut [f32]) {
        self.step(h, x, out);
        let k = self.structure.block(self.n);
        for (i, j) in jac.iter_mut().enumerate() {
            // Diagonal of each k×k block: 0.5.
            *j = if (i % (k * k)) % (k + 1) == 0 {
                0.5
            } else {
                0.0
            };
        }
    }
}

#[test]
fn degenerate_user_cells_are_typed_errors() {
    let x = vec![0.1f32; 8];
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 2,
        len: 4,
    };
    let cpu = Cpu::new();
    let cases = [
        (
            Declared {
                n: 0,
                din: 1,
                structure: Structure::Diagonal,
            },
            "cell.state_dim",
        ),
        (
            Declared {
                n: 0,
                din: 1,
                structure: Structure::Dense,
            },
            "cell.state_dim",
        ),
        (
            Declared {
                n: 2,
                din: 1,
                structure: Structure::Block { k: 0 },
            },
            "cell.structure",
        ),
        (
            Declared {
                n: 3,
                din: 1,
                structure: Structure::Block { k: 2 },
            },
            "cell.structure",
        ),
    ];
    for (cell, arg) in &cases {
        for mode in [Mode::Sequential, Mode::Newton, Mode::QuasiNewton] {
            let options = NewtonOptions {
                mode,
                ..Default::default()
            };
            match solve(&cpu, cell, &problem, &options) {
                Err(Error::Size { arg: got, .. }) => assert_eq!(got, *arg),
                other => panic!("n={} {:?} {mode:?}: {other:?}", cell.n, cell.structure),
            }
        }
        assert!(sequential(&cpu, cell, &problem).is_err());
    }
    // The same cell with consistent sizes solves, and matches its own loop.
    let cell = Declared {
        n: 2,
        din: 1,
        structure: Structure::Block { k: 2 },
    };
    let sol = solve(&cpu, &cell, &problem, &NewtonOptions::default()).unwrap();
    let reference = sequential(&cpu, &cell, &problem).unwrap();
    for (a, b) in sol.states.iter().zip(&reference) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// A user cell whose state is large while its input is empty: `B·T·n`
/// overflows although `x` is a valid (empty) buffer.
#[test]
fn states_overflow_with_empty_input_is_named() {
    let cell = Declared {
        n: 1 << 40,
        din: 0,
        structure: Structure::Diagonal,
    };
    let problem = NonlinearProblem::<f32> {
        x: &[],
        h0: None,
        batch: 1 << 20,
        len: 1 << 10,
    };
    let e = solve(&Cpu::new(), &cell, &problem, &NewtonOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Overflow { arg: "states", .. }), "{e}");
    // Fits in usize but not in memory: refused before allocating.
    let cell = Declared {
        n: 1 << 30,
        din: 0,
        structure: Structure::Diagonal,
    };
    let problem = NonlinearProblem::<f32> {
        x: &[],
        h0: None,
        batch: 1,
        len: 1 << 10,
    };
    let e = sequential(&Cpu::new(), &cell, &problem).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfMemory {
                buffer: "states",
                ..
            }
        ),
        "{e}"
    );
}

/// DPLR with `n = m = 2^20`: small inputs, a 4 TiB `h_T`. The CPU engine
/// and the kernels both refuse it with a typed error before allocating.
#[test]
fn dplr_with_terabyte_final_state_is_refused() {
    let n = 1usize << 20;
    let w = vec![0.5f32; n];
    let u = vec![0.0f32; n];
    let x = vec![1.0f32; n];
    let problem = Dplr {
        w: &w,
        u: &u,
        v: &u,
        k: &w,
        x: &x,
        q: Some(&w),
        h0: None,
        batch: 1,
        len: 1,
        n,
        m: n,
        rank: 1,
        output: DplrOutput::Readout,
    };
    let e = Cpu::new().scan(&problem, PlanRequest::Auto).unwrap_err();
    match &e {
        Error::OutOfMemory { buffer, bytes, .. } => {
            assert_eq!(*buffer, "h_last");
            assert_eq!(*bytes, 4 << 40);
        }
        other => panic!("expected out of memory, got {other}"),
    }
    assert!(
        e.to_string().contains("4398046511104 bytes (4.0 TiB)"),
        "{e}"
    );
    let e = problem
        .kernel_scan(&EmuBackend::default(), PlanRequest::Auto)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfMemory { .. } | Error::Size { .. } | Error::Overflow { .. }
        ),
        "{e}"
    );
}

/// Caller-provided outputs: the engine's own scratch (dense `n×n` chunk
/// aggregates) is checked against the budget too.
#[test]
fn dplr_chunk_aggregates_are_budgeted() {
    let (n, len) = (1usize << 18, 4);
    let w = vec![0.5f32; len * n];
    let x = vec![1.0f32; len];
    let problem = Dplr {
        w: &w,
        u: &w,
        v: &w,
        k: &w,
        x: &x,
        q: None,
        h0: None,
        batch: 1,
        len,
        n,
        m: 1,
        rank: 1,
        output: DplrOutput::States,
    };
    let mut out = vec![0f32; len * n];
    let mut h_last = vec![0f32; n];
    let e = Cpu::new()
        .scan_into(&problem, PlanRequest::Chunk(1), &mut out, &mut h_last)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::OutOfMemory {
                buffer: "cpu scan scratch",
                ..
            }
        ),
        "{e}"
    );
}
