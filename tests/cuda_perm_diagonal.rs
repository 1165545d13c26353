//! The PermDiagonal kernels driven by the Rust orchestration
//! (`parascan::kernels::perm_diagonal`) on the GPU: the same suite as
//! `tests/emu_perm_diagonal.rs` (every dtype × plan × team shape against
//! the f64 oracle, measured depth against the formula, typed errors before
//! any launch, workspace reuse, the exact S5 word problem), plus long
//! sequences (GPU.md's `n = 5, B = 16, T = 2^20`; `n = 64` at `T = 2^16`)
//! that only a GPU runs in reasonable time.
//!
//! Without a usable GPU every test prints `skipped: <reason>` and passes,
//! except under `REQUIRE_GPU=1`, where it fails (see `tests/common/gpu.rs`).

mod common;
#[path = "common/gpu.rs"]
mod gpu;
mod perm_diagonal_suite;

use std::time::Instant;

use half::bf16;
use parascan::backend::cuda::CudaBackend;
use parascan::backend::launch::KernelRunner;
use parascan::kernels::perm_diagonal::{plan_perm_diagonal, PdBuffers, PdShape, PdWorkspace};
use parascan::kernels::{launch_scan_buffers, scan_host};
use parascan::{oracle, DType, PlanRequest, Storage};

fn cuda() -> Option<CudaBackend> {
    gpu::cuda_or_skip()
}

#[test]
fn matches_oracle() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::run_cases(
        &cuda,
        &perm_diagonal_suite::standard_cases(),
        0x6000,
        "cuda",
    );
}

#[test]
fn measured_depth_equals_formula() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::run_depth_plans(&cuda, "cuda depth");
}

#[test]
fn errors_before_any_launch() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_errors(&cuda);
}

#[test]
fn workspace_is_reused_and_launches_are_in_order() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_workspace_reuse(&cuda);
}

/// The look-back (P4) folding predecessors' aggregates (prefixes published
/// only every n-th chunk).
#[test]
fn lookback_aggregate_path() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_lookback_aggregate_path(&cuda, "cuda look-back");
}

/// Look-back blocks past the contract's grid do nothing.
#[test]
fn lookback_surplus_blocks_do_nothing() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_lookback_surplus_blocks(&cuda, "cuda surplus");
}

#[test]
fn final_state_only() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_final_state_only(&cuda);
}

#[test]
fn bad_perm_on_the_device_path_is_clamped() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_bad_perm_is_clamped(&cuda);
}

/// Long sequences with few problems: the GPU.md PD shape `B = 16, T = 2^20,
/// n = 5`, and `n = 64` at `T = 2^16`; every plan, f32 and bf16, against the
/// oracle; prints each plan's time and effective bandwidth (bytes of perm,
/// d, b, h per second; not asserted).
#[test]
fn large_shapes_all_plans() {
    let Some(cuda) = cuda() else { return };
    let shape = PdShape::new(16, gpu::scaled(&cuda, 1 << 20, 1 << 10), 5);
    large_case::<f32>(&cuda, shape, 0x7000);
    large_case::<bf16>(&cuda, shape, 0x7100);
    // n = 64 at T = 2^20 is 10^9 slots (14 GB of inputs and outputs, and this
    // file also runs under compute-sanitizer): T = 2^16 here, the full shape
    // belongs to the benchmark harness.
    let shape = PdShape::new(16, gpu::scaled(&cuda, 1 << 16, 1 << 8), 64);
    large_case::<f32>(&cuda, shape, 0x7200);
    large_case::<bf16>(&cuda, shape, 0x7300);
}

fn large_case<S: Storage + bytemuck::Pod>(cuda: &CudaBackend, shape: PdShape, seed: u64) {
    let requests = [
        PlanRequest::Sequential,
        PlanRequest::Chunk(64),
        PlanRequest::Chunk(1 << 12),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::LookBack,
    ];
    let inp = perm_diagonal_suite::inputs::<S>(shape.batch, shape.len, shape.n, seed);
    let problem = inp.problem(shape.batch, shape.len, shape.n, true);
    let (want, want_t) = oracle::perm_diagonal(&problem);
    let tol = common::tolerance::<S>(shape.len);
    let mut ws = PdWorkspace::new();
    for request in requests {
        let (h, h_t, plan) = scan_host(cuda, &mut ws, &problem, request)
            .unwrap_or_else(|e| panic!("{} n={} {request}: {e}", S::DTYPE, shape.n));
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
        let secs = time_plan(cuda, &mut ws, &inp, shape, request);
        let bytes = shape.elements() * (1 + 3 * std::mem::size_of::<S>());
        eprintln!(
            "  {:>9.3} ms {:>7.1} GB/s  err {e:.2e}  {plan}",
            secs * 1e3,
            bytes as f64 / secs / 1e9
        );
    }
}

/// Median seconds of one launch sequence (device-resident data, warm workspace).
fn time_plan<S: Storage + bytemuck::Pod>(
    cuda: &CudaBackend,
    ws: &mut PdWorkspace,
    inp: &perm_diagonal_suite::Inputs<S>,
    shape: PdShape,
    request: PlanRequest,
) -> f64 {
    let plan = plan_perm_diagonal(shape, S::DTYPE, request, cuda.sm_count() as usize).unwrap();
    let perm = cuda.upload(&inp.perm).unwrap();
    let d = cuda.upload(&inp.d).unwrap();
    let b = cuda.upload(&inp.b).unwrap();
    let size = std::mem::size_of::<S>();
    let h = cuda.alloc(shape.elements() * size).unwrap();
    let h_t = cuda.alloc(shape.states() * size).unwrap();
    let bufs = || PdBuffers {
        perm: (&perm).into(),
        d: (&d).into(),
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

/// Measured depth on a long sequence: every plan kind, both team shapes.
#[test]
fn large_depth() {
    let Some(cuda) = cuda() else { return };
    let mut ws = PdWorkspace::new();
    let mut kinds = [0usize; 5];
    for n in [5, 64] {
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(333),
            PlanRequest::Chunk(gpu::scaled(&cuda, 1 << 21, 1 << 15)),
            PlanRequest::MinDepth,
            PlanRequest::Auto,
            PlanRequest::LookBack,
        ] {
            let plan = plan_perm_diagonal(
                PdShape::new(1, gpu::scaled(&cuda, 1 << 18, 1 << 12) + 3, n),
                DType::F32,
                request,
                cuda.sm_count() as usize,
            )
            .unwrap();
            kinds[plan.kind as usize] += 1;
            let depth = perm_diagonal_suite::check_depth(&cuda, &mut ws, &plan).unwrap();
            eprintln!("  depth {depth:>8}  {plan}");
        }
    }
    assert!(kinds.iter().all(|&k| k > 0), "P0..P4 = {kinds:?}");
}

#[test]
fn kernel_scan_face() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_kernel_scan(&cuda);
}

#[test]
fn s5_word_problem_is_exact() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_s5_exact(&cuda);
}

#[test]
fn no_writes_outside_the_outputs() {
    let Some(cuda) = cuda() else { return };
    perm_diagonal_suite::check_no_writes_outside(&cuda);
}
