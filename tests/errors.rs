//! One test per error kind on the Diagonal family and the shared parsers:
//! every bad input is a typed error naming the argument, never a panic.

use parascan::backend::{BackendKind, Cpu};
use parascan::family::diagonal::Diagonal;
use parascan::family::{Layout, LinearProblem};
use parascan::{Error, PlanRequest};

fn problem<'a>(a: &'a [f32], b: &'a [f32], h0: Option<&'a [f32]>) -> Diagonal<'a, f32> {
    Diagonal {
        a,
        b,
        h0,
        batch: 2,
        len: 3,
        dim: 4,
        layout: Layout::Btd,
    }
}

#[test]
fn wrong_lengths_name_the_argument() {
    let ok = vec![0.5f32; 24];
    let short = vec![0.5f32; 23];
    let h0 = vec![0.0f32; 8];
    let bad_h0 = vec![0.0f32; 7];
    for (p, arg) in [
        (problem(&short, &ok, None), "a"),
        (problem(&ok, &short, None), "b"),
        (problem(&ok, &ok, Some(&bad_h0)), "h0"),
    ] {
        match Cpu::new().scan(&p, PlanRequest::Auto) {
            Err(Error::Shape {
                arg: got, expected, ..
            }) => {
                assert_eq!(got, arg);
                assert!(expected == 24 || expected == 8);
            }
            other => panic!("{arg}: expected a shape error, got {other:?}"),
        }
    }
    // Output buffers are checked before anything runs, and left untouched.
    let p = problem(&ok, &ok, Some(&h0));
    let mut out = vec![7.0f32; 23];
    let mut last = vec![7.0f32; 8];
    let e = Cpu::new()
        .scan_into(&p, PlanRequest::Auto, &mut out, &mut last)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                arg: "out",
                expected: 24,
                got: 23,
                ..
            }
        ),
        "{e}"
    );
    assert!(out.iter().all(|&x| x == 7.0));
    let mut out = vec![7.0f32; 24];
    let mut last = vec![7.0f32; 9];
    let e = Cpu::new()
        .scan_into(&p, PlanRequest::Auto, &mut out, &mut last)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Shape {
                arg: "h_last",
                expected: 8,
                got: 9,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn zero_sizes_are_size_errors() {
    let empty: Vec<f32> = vec![];
    for (batch, len, dim, arg) in [(0, 3, 4, "batch"), (2, 0, 4, "len"), (2, 3, 0, "dim")] {
        let p = Diagonal {
            a: &empty,
            b: &empty,
            h0: None,
            batch,
            len,
            dim,
            layout: Layout::Bdt,
        };
        match Cpu::new().scan(&p, PlanRequest::Sequential) {
            Err(Error::Size { arg: got, .. }) => assert_eq!(got, arg),
            other => panic!("{arg}: expected a size error, got {other:?}"),
        }
    }
}

#[test]
fn non_finite_values_are_reported_with_their_index() {
    let ok = vec![0.5f32; 24];
    let mut h0 = vec![0.0f32; 8];
    h0[5] = f32::NAN;
    let e = Cpu::new()
        .scan(&problem(&ok, &ok, Some(&h0)), PlanRequest::Auto)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                arg: "h0",
                index: 5,
                ..
            }
        ),
        "{e}"
    );
    // Per-step data is checked on request (a full pass over the inputs).
    let mut b = ok.clone();
    b[17] = f32::INFINITY;
    let e = problem(&ok, &b, None).check_finite().unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                arg: "b",
                index: 17,
                ..
            }
        ),
        "{e}"
    );
    assert!(problem(&ok, &ok, None).check_finite().is_ok());
}

#[test]
fn bad_plans_are_plan_errors() {
    for s in ["chunk=0", "chunk=", "chunk=-3", "fast", ""] {
        match s.parse::<PlanRequest>() {
            Err(Error::Plan(msg)) => {
                assert!(msg.contains("chunk") || msg.contains("expected"), "{msg}")
            }
            other => panic!("`{s}`: expected a plan error, got {other:?}"),
        }
    }
    assert_eq!(
        "chunk=64".parse::<PlanRequest>().unwrap(),
        PlanRequest::Chunk(64)
    );
    let ok = vec![0.5f32; 24];
    let e = Cpu::new()
        .scan(&problem(&ok, &ok, None), PlanRequest::Chunk(0))
        .unwrap_err();
    assert!(matches!(e, Error::Plan(_)), "{e}");
}

#[test]
fn bad_layout_names_are_layout_errors() {
    assert!(matches!("tbd".parse::<Layout>(), Err(Error::Layout { .. })));
    assert_eq!("bdt".parse::<Layout>().unwrap(), Layout::Bdt);
}

#[test]
fn unknown_backends_and_missing_devices_are_backend_errors() {
    assert!(matches!(
        "tpu".parse::<BackendKind>(),
        Err(Error::BackendUnavailable { .. })
    ));
    // Without a GPU (or without PTX) opening CUDA is an error, never a panic;
    // with one it opens. Either way auto() names what it picked and why.
    match parascan::backend::cuda::CudaBackend::new(0) {
        Ok(dev) => assert!(!dev.device_name().is_empty()),
        Err(e) => assert!(
            matches!(
                e,
                Error::BackendUnavailable {
                    backend: "cuda",
                    ..
                } | Error::Cuda { .. }
            ),
            "{e}"
        ),
    }
    let (_, why) = BackendKind::auto();
    assert!(!why.is_empty());
}

#[test]
fn diagonal_combine_is_associative_and_has_an_identity() {
    use parascan::family::diagonal::{apply, combine};
    use rand::{Rng, SeedableRng};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..1000 {
        let mut e = || (r.gen_range(-1.5..1.5f64), r.gen_range(-2.0..2.0f64));
        let (x, y, z) = (e(), e(), e());
        let left = combine(combine(x, y), z);
        let right = combine(x, combine(y, z));
        assert!((left.0 - right.0).abs() < 1e-12 && (left.1 - right.1).abs() < 1e-12);
        assert_eq!(combine((1.0, 0.0), x), x);
        assert_eq!(combine(x, (1.0, 0.0)), x);
        // combine(x, y) applies x first: apply(combine(x, y), h) = apply(y, apply(x, h)).
        let h = 0.3;
        assert!((apply(combine(x, y), h) - apply(y, apply(x, h))).abs() < 1e-12);
    }
}

/// The `[B,T,D]` look-back kernels index chunks, chains and status words
/// in 32 bits (fewer registers across the look-back); that is sound only
/// because the planner refuses a look-back of `chains·NC + 1 > 2^31 − 1`
/// status words (one block per word) with a typed error, and `Auto` then
/// picks another plan. Both sides of the bound, for f32 (16 steps per
/// thread) and bf16 (32).
#[test]
fn lookback_status_words_fit_32_bit_indices() {
    use parascan::kernels::diagonal::{plan_diagonal, DiagShape, GpuPlanKind};
    use parascan::DType;
    let limit = i32::MAX as usize;
    for dtype in [DType::F32, DType::Bf16] {
        // The chunk of a full block on [B,T,D], from the planner itself.
        let c = plan_diagonal(
            DiagShape::new(1, 1 << 12, 32),
            Layout::Btd,
            dtype,
            PlanRequest::LookBack,
            4,
        )
        .expect("small look-back")
        .chunk;
        let batch = 1usize << 14; // one 32-channel chain per batch row
        let plan = |chunks: usize, request| {
            plan_diagonal(
                DiagShape::new(batch, c * chunks, 32),
                Layout::Btd,
                dtype,
                request,
                4,
            )
        };
        // chains·NC + 1 = 2^31 + 1: refused, naming the look-back.
        let over = limit.div_ceil(batch);
        assert!(batch * over + 1 > limit);
        match plan(over, PlanRequest::LookBack) {
            Err(Error::Plan(msg)) => assert!(msg.contains("look-back"), "{msg}"),
            other => panic!("{dtype:?}: expected a plan error, got {other:?}"),
        }
        let auto = plan(over, PlanRequest::Auto).expect("auto plan");
        assert_ne!(auto.kind, GpuPlanKind::LookBack, "{dtype:?}");
        // One chunk fewer per chain: within the bound, planned.
        assert!(batch * (over - 1) < limit);
        let ok = plan(over - 1, PlanRequest::LookBack).expect("look-back within the bound");
        assert_eq!((ok.kind, ok.chunks), (GpuPlanKind::LookBack, over - 1));
    }
}
