//! The Diagonal kernels driven by the Rust orchestration
//! (`parascan::kernels::diagonal`) on the GPU: the same suite as
//! `tests/emu_diagonal.rs` (every dtype × layout × plan × shape against the
//! f64 oracle, measured depth against the formula, typed errors before any
//! launch, workspace reuse), plus large shapes that only a GPU runs in
//! reasonable time.
//!
//! Without a usable GPU every test prints `skipped: <reason>` and passes,
//! except under `REQUIRE_GPU=1`, where it fails (see `tests/common/gpu.rs`).

mod common;
mod diagonal_suite;
#[path = "common/gpu.rs"]
mod gpu;

use std::time::Instant;

use half::bf16;
use parascan::backend::cuda::CudaBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::diagonal::Diagonal;
use parascan::family::Layout;
use parascan::kernels::diagonal::{plan_diagonal, DiagShape, DiagonalBuffers, DiagonalWorkspace};
use parascan::kernels::{launch_scan_buffers, scan_host};
use parascan::{oracle, PlanRequest, Storage};

fn cuda() -> Option<CudaBackend> {
    gpu::cuda_or_skip()
}

#[test]
fn matches_oracle() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::run_cases(&cuda, &diagonal_suite::standard_cases(), 0x6000, "cuda");
}

#[test]
fn measured_depth_equals_formula() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::run_depth_plans(&cuda, "cuda depth");
}

#[test]
fn errors_before_any_launch() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::check_errors(&cuda);
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::check_workspace_reuse(&cuda);
}

/// The look-back (P4) folding predecessors' aggregates (prefixes published
/// only every n-th chunk).
#[test]
fn lookback_aggregate_path() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::check_lookback_aggregate_path(&cuda, "cuda look-back");
}

/// A look-back grid with more blocks than chunks: the surplus tickets do
/// nothing (the guard after the ticket). The withheld-publication test stays
/// on the emulators: on a GPU its `__trap()` would end the context.
#[test]
fn lookback_surplus_blocks_do_nothing() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::check_lookback_surplus_blocks(&cuda, "cuda surplus");
}

#[test]
fn final_state_only() {
    let Some(cuda) = cuda() else { return };
    diagonal_suite::check_final_state_only(&cuda);
}

/// Every plan on a long sequence with few lanes (B = 2, D = 64, T = 2^20;
/// 2^11 on the emulated driver),
/// both layouts, f32 and bf16, against the oracle; prints each plan's time
/// and effective bandwidth (bytes of a, b, h per second, not asserted).
#[test]
fn large_shapes_all_plans() {
    let Some(cuda) = cuda() else { return };
    let shape = DiagShape::new(2, gpu::scaled(&cuda, 1 << 20, 1 << 11), 64);
    large_case::<f32>(&cuda, shape, 0x7000);
    large_case::<bf16>(&cuda, shape, 0x7100);
}

fn large_case<S: Storage + bytemuck::Pod>(cuda: &CudaBackend, shape: DiagShape, seed: u64) {
    let mut requests = vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(1),
        PlanRequest::Chunk(1000),
        PlanRequest::Chunk(1 << 14),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::LookBack,
    ];
    if cuda.is_emulated() {
        // Chunk 1 on [B,D,T] takes the emulator minutes here; the standard
        // cases cover it at small sizes.
        requests.retain(|r| !matches!(r, PlanRequest::Chunk(1) | PlanRequest::MinDepth));
    }
    let (a, b, h0) = diagonal_suite::inputs::<S>(shape.batch, shape.len, shape.dim, seed);
    let mut ws = DiagonalWorkspace::new();
    for layout in [Layout::Btd, Layout::Bdt] {
        let problem = Diagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch: shape.batch,
            len: shape.len,
            dim: shape.dim,
            layout,
        };
        let (want, want_t) = oracle::diagonal(&problem);
        let tol = common::tolerance::<S>(shape.len);
        for &request in &requests {
            let (h, h_t, plan) = scan_host(cuda, &mut ws, &problem, request)
                .unwrap_or_else(|e| panic!("{} {layout} {request}: {e}", S::DTYPE));
            let e = oracle::rel_l2(&h, &want);
            let e_t = oracle::rel_l2(&h_t, &want_t);
            assert!(
                e <= tol && e_t <= tol,
                "{plan}: relative L2 error h {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
            );
            assert!(
                h.iter().all(|x| x.to_f64().is_finite()),
                "{plan}: unwritten h"
            );
            let secs = time_plan(cuda, &mut ws, &problem, request);
            let bytes = 3 * shape.elements() * std::mem::size_of::<S>();
            eprintln!(
                "  {:>9.3} ms {:>7.1} GB/s  err {e:.2e}  {plan}",
                secs * 1e3,
                bytes as f64 / secs / 1e9
            );
        }
    }
}

/// Median seconds of one launch sequence (device-resident data, warm workspace).
fn time_plan<S: Storage + bytemuck::Pod>(
    cuda: &CudaBackend,
    ws: &mut DiagonalWorkspace,
    problem: &Diagonal<'_, S>,
    request: PlanRequest,
) -> f64 {
    let shape = DiagShape::new(problem.batch, problem.len, problem.dim);
    let plan = plan_diagonal(
        shape,
        problem.layout,
        S::DTYPE,
        request,
        cuda.sm_count() as usize,
    )
    .unwrap();
    let a = cuda.upload(problem.a).unwrap();
    let b = cuda.upload(problem.b).unwrap();
    let h = cuda
        .alloc(shape.elements() * std::mem::size_of::<S>())
        .unwrap();
    let h_t = cuda
        .alloc(shape.lanes() * std::mem::size_of::<S>())
        .unwrap();
    let bufs = || DiagonalBuffers {
        a: (&a).into(),
        b: (&b).into(),
        h: Some((&h).into()),
        ends: parascan::kernels::EndBuffers {
            h0: None,
            h_t: (&h_t).into(),
        },
    };
    launch_scan_buffers(cuda, ws, &plan, bufs()).unwrap();
    KernelRunner::synchronize(cuda).unwrap();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            launch_scan_buffers(cuda, ws, &plan, bufs()).unwrap();
            KernelRunner::synchronize(cuda).unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Measured depth on long sequences: every plan kind, both layouts.
#[test]
fn large_depth() {
    let Some(cuda) = cuda() else { return };
    let mut ws = DiagonalWorkspace::new();
    let mut kinds = [0usize; 5];
    for layout in [Layout::Btd, Layout::Bdt] {
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(333),
            PlanRequest::Chunk(gpu::scaled(&cuda, 1 << 14, 1 << 8)),
            PlanRequest::Chunk(gpu::scaled(&cuda, 1 << 21, 1 << 15)),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
            PlanRequest::LookBack,
        ] {
            let plan = plan_diagonal(
                DiagShape::new(1, gpu::scaled(&cuda, 1 << 20, 1 << 14) + 3, 3),
                layout,
                parascan::DType::F32,
                request,
                cuda.sm_count() as usize,
            )
            .unwrap();
            kinds[plan.kind as usize] += 1;
            let depth = diagonal_suite::check_depth(&cuda, &mut ws, &plan).unwrap();
            eprintln!("  depth {depth:>8}  {plan}");
        }
    }
    assert!(kinds.iter().all(|&k| k > 0), "P0..P4 = {kinds:?}");
}
