//! The safe device API: typed device memory (`DeviceTensor<T>` on any runner,
//! cudarc's `CudaSlice`/`CudaView`/`CudaViewMut` on the CUDA backend) goes
//! into the shared `launch_scan_buffers` entry point, which check owner,
//! length, element type and aliasing before any launch.
//!
//! The CUDA cases run over the emulated driver in CI
//! (`scripts/emulated-driver.sh`) and skip with a printed reason without a
//! device (failing under `REQUIRE_CUDA=1` / `REQUIRE_GPU=1`).

#[path = "common/gpu.rs"]
mod gpu;

use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::{diagonal::Diagonal, Layout};
use parascan::kernels::launch_scan_buffers;
use parascan::kernels::{
    plan_diagonal, DeviceTensor, DiagShape, DiagonalBuffers, DiagonalWorkspace,
};
use parascan::{DType, Error, PlanRequest};

const B: usize = 2;
const T: usize = 333;
const D: usize = 5;

fn inputs() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = (0..B * T * D)
        .map(|i| 0.6 + 0.39 * (((i * 7) % 13) as f32 / 13.0))
        .collect();
    let b = (0..B * T * D)
        .map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let h0 = (0..B * D).map(|i| i as f32 * 0.25 - 1.0).collect();
    (a, b, h0)
}

/// f64 sequential reference of `h` and `h_T`.
fn oracle(a: &[f32], b: &[f32], h0: &[f32]) -> (Vec<f64>, Vec<f64>) {
    parascan::oracle::diagonal(&Diagonal {
        a,
        b,
        h0: Some(h0),
        batch: B,
        len: T,
        dim: D,
        layout: Layout::Btd,
    })
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// Typed tensors on a runner give the oracle's result, and a warm
/// workspace is reused across calls without allocating.
fn typed_tensors_match_the_oracle<R: KernelRunner>(runner: &R, request: PlanRequest) {
    let (a, b, h0) = inputs();
    let (want_h, want_t) = oracle(&a, &b, &h0);
    let plan = plan_diagonal(
        DiagShape::new(B, T, D),
        Layout::Btd,
        DType::F32,
        request,
        runner.sm_count(),
    )
    .unwrap();
    let (da, db, dh0) = (
        DeviceTensor::upload(runner, &a).unwrap(),
        DeviceTensor::upload(runner, &b).unwrap(),
        DeviceTensor::upload(runner, &h0).unwrap(),
    );
    let mut h = DeviceTensor::<f32>::alloc(runner, B * T * D).unwrap();
    let mut h_t = DeviceTensor::<f32>::alloc(runner, B * D).unwrap();
    let mut ws = DiagonalWorkspace::new();
    let mut warm: Option<usize> = None;
    for round in 0..3 {
        launch_scan_buffers(
            runner,
            &mut ws,
            &plan,
            DiagonalBuffers {
                a: da.as_ref(),
                b: db.as_ref(),
                h: Some(h.as_mut()),
                ends: parascan::kernels::EndBuffers {
                    h0: Some(dh0.as_ref()),
                    h_t: h_t.as_mut(),
                },
            },
        )
        .unwrap();
        assert_close(
            &h.download(runner).unwrap(),
            &want_h,
            &format!("h, round {round}"),
        );
        assert_close(
            &h_t.download(runner).unwrap(),
            &want_t,
            &format!("h_t, round {round}"),
        );
        // The workspace allocates on the first call only.
        assert_eq!(*warm.get_or_insert(ws.allocations()), ws.allocations());
    }
}

#[test]
fn typed_tensors_on_the_emulator() {
    let emu = EmuBackend::default();
    for request in [
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::LookBack,
    ] {
        typed_tensors_match_the_oracle(&emu, request);
    }
}

/// Every bad argument is a typed error naming it, before any launch (the
/// outputs keep their poison).
#[test]
fn bad_device_memory_is_rejected_by_name() {
    let emu = EmuBackend::default();
    let (a, b, _) = inputs();
    let plan = plan_diagonal(
        DiagShape::new(B, T, D),
        Layout::Btd,
        DType::F32,
        PlanRequest::Auto,
        emu.sm_count(),
    )
    .unwrap();
    let da = DeviceTensor::upload(&emu, &a).unwrap();
    let db = DeviceTensor::upload(&emu, &b).unwrap();
    let mut h_t = DeviceTensor::<f32>::alloc(&emu, B * D).unwrap();
    let mut ws = DiagonalWorkspace::new();

    // f64 memory for an f32 plan.
    let a64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
    let d64 = DeviceTensor::upload(&emu, &a64).unwrap();
    let err = launch_scan_buffers(
        &emu,
        &mut ws,
        &plan,
        DiagonalBuffers {
            a: d64.as_ref(),
            b: db.as_ref(),
            h: None,
            ends: parascan::kernels::EndBuffers {
                h0: None,
                h_t: h_t.as_mut(),
            },
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ElemType {
                arg: "a",
                expected: "f32",
                got: "f64"
            }
        ),
        "{err}"
    );

    // One element short.
    let short = DeviceTensor::upload(&emu, &b[1..]).unwrap();
    let err = launch_scan_buffers(
        &emu,
        &mut ws,
        &plan,
        DiagonalBuffers {
            a: da.as_ref(),
            b: short.as_ref(),
            h: None,
            ends: parascan::kernels::EndBuffers {
                h0: None,
                h_t: h_t.as_mut(),
            },
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Shape { arg: "b", expected, got, .. } if expected == B * T * D && got == B * T * D - 1),
        "{err}"
    );

    // An output that aliases an input (an untyped buffer borrowed twice).
    let both = emu.upload(&a).unwrap();
    let h_t_alias = emu.upload(&a[..B * D]).unwrap();
    let err = launch_scan_buffers(
        &emu,
        &mut ws,
        &plan,
        DiagonalBuffers {
            a: (&both).into(),
            b: (&both).into(),
            h: None,
            ends: parascan::kernels::EndBuffers {
                h0: None,
                h_t: (&h_t_alias).into(),
            },
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Size { arg: "b", .. }), "{err}");
    assert!(h_t.download(&emu).unwrap().iter().all(|x| x.is_nan()));
}

/// cudarc memory used in place: `CudaSlice` inputs through `input`, a
/// `CudaViewMut` of a larger allocation as the output through `output`.
#[test]
fn cudarc_slices_on_the_cuda_backend() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let (a, b, h0) = inputs();
    let (want_h, want_t) = oracle(&a, &b, &h0);
    let stream = cuda.stream().clone();
    let sa = stream.clone_htod(&a).unwrap();
    let sb = stream.clone_htod(&b).unwrap();
    let sh0 = stream.clone_htod(&h0).unwrap();
    let mut sh = stream.alloc_zeros::<f32>(B * T * D).unwrap();
    // The final state lands in the middle of a bigger buffer (a view).
    let mut big = stream.alloc_zeros::<f32>(3 * B * D).unwrap();
    let plan = plan_diagonal(
        DiagShape::new(B, T, D),
        Layout::Btd,
        DType::F32,
        PlanRequest::Auto,
        KernelRunner::sm_count(&cuda),
    )
    .unwrap();
    let mut ws = DiagonalWorkspace::new();
    {
        let mut mid = big.slice_mut(B * D..2 * B * D);
        launch_scan_buffers(
            &cuda,
            &mut ws,
            &plan,
            DiagonalBuffers {
                a: cuda.input(&sa).unwrap(),
                b: cuda.input(&sb.slice(..)).unwrap(),
                h: Some(cuda.output(&mut sh).unwrap()),
                ends: parascan::kernels::EndBuffers {
                    h0: Some(cuda.input(&sh0).unwrap()),
                    h_t: cuda.output(&mut mid).unwrap(),
                },
            },
        )
        .unwrap();
    }
    let h = stream.clone_dtoh(&sh).unwrap();
    let all = stream.clone_dtoh(&big).unwrap();
    assert_close(&h, &want_h, "h");
    assert_close(&all[B * D..2 * B * D], &want_t, "h_t");
    assert!(all[..B * D]
        .iter()
        .chain(&all[2 * B * D..])
        .all(|&x| x == 0.0));

    // f64 device memory for the f32 plan.
    let a64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
    let s64 = stream.clone_htod(&a64).unwrap();
    let mut out = stream.alloc_zeros::<f32>(B * D).unwrap();
    let err = launch_scan_buffers(
        &cuda,
        &mut ws,
        &plan,
        DiagonalBuffers {
            a: cuda.input(&s64).unwrap(),
            b: cuda.input(&sb).unwrap(),
            h: None,
            ends: parascan::kernels::EndBuffers {
                h0: None,
                h_t: cuda.output(&mut out).unwrap(),
            },
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::ElemType { arg: "a", .. }), "{err}");

    // Emulator memory on the CUDA runner.
    let emu = EmuBackend::default();
    let foreign = DeviceTensor::upload(&emu, &a).unwrap();
    let err = launch_scan_buffers(
        &cuda,
        &mut ws,
        &plan,
        DiagonalBuffers {
            a: foreign.as_ref(),
            b: cuda.input(&sb).unwrap(),
            h: None,
            ends: parascan::kernels::EndBuffers {
                h0: None,
                h_t: cuda.output(&mut out).unwrap(),
            },
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::BackendUnavailable { .. }), "{err}");
}
