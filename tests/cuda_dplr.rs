//! The DPLR kernels driven by the Rust orchestration
//! (`parascan::kernels::dplr`) on the GPU: the same suite as
//! `tests/emu_dplr.rs` (every plan kind × dtype × rank × width × output
//! against the f64 oracle, measured depth against the formula, typed errors
//! before any launch, workspace reuse), plus the DeltaNet-like benchmark
//! shape of `GPU.md` (`n = m = 64`, rank 1, `B = 64`, `T = 8192`, readout),
//! checked against the oracle and timed per plan (printed, not asserted).
//!
//! Without a usable GPU every test prints `skipped: <reason>` and passes,
//! except under `REQUIRE_GPU=1`, where it fails (see `tests/common/gpu.rs`).
//! The two benchmark tests are `#[ignore]`d so that the sanitizer passes of
//! `scripts/device-bundle.sh` stay short: run them with
//! `cuda_dplr --ignored --nocapture --test-threads=1`.

mod common;
mod dplr_suite;
#[path = "common/gpu.rs"]
mod gpu;

use std::time::Instant;

use half::bf16;
use parascan::backend::cuda::CudaBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::kernels::dplr::{plan_dplr, DplrShape, DplrWorkspace};
use parascan::kernels::scan_host;
use parascan::kernels::KernelScan;
use parascan::{oracle, PlanRequest, Storage};

fn cuda() -> Option<CudaBackend> {
    gpu::cuda_or_skip()
}

#[test]
fn matches_oracle() {
    let Some(cuda) = cuda() else { return };
    dplr_suite::run_all(&cuda, 0x6000, "cuda");
}

#[test]
fn measured_depth_equals_formula() {
    let Some(cuda) = cuda() else { return };
    dplr_suite::run_depth_plans(&cuda, "cuda depth");
}

#[test]
fn errors_before_any_launch() {
    let Some(cuda) = cuda() else { return };
    dplr_suite::check_errors(&cuda);
}

#[test]
fn workspace_is_reused() {
    let Some(cuda) = cuda() else { return };
    dplr_suite::check_workspace_reuse(&cuda);
}

/// The benchmark shape (DeltaNet parameters), f32 and bf16, every plan
/// against the oracle on problem 0, with the median time of each plan.
#[test]
#[ignore = "benchmark (~1 GB of inputs): run with --ignored on a GPU, not under compute-sanitizer"]
fn deltanet_benchmark_shape() {
    let Some(cuda) = cuda() else { return };
    bench::<f32>(&cuda, 0x7000);
    bench::<bf16>(&cuda, 0x7100);
}

fn bench<S: Storage + bytemuck::Pod>(cuda: &CudaBackend, seed: u64) {
    let mut case = dplr_suite::Case::new(
        (64, 8192, 64, 64, 1),
        PlanRequest::Auto,
        true,
        DplrOutput::Readout,
    );
    case.params = dplr_suite::Params::DeltaNet;
    let (w, u, v, k, x, q, h0) = dplr_suite::inputs::<S>(&case, seed);
    let problem = Dplr {
        w: &w,
        u: &u,
        v: &v,
        k: &k,
        x: &x,
        q: Some(&q),
        h0: Some(&h0),
        batch: case.batch,
        len: case.len,
        n: case.n,
        m: case.m,
        rank: case.rank,
        output: case.output,
    };
    // The oracle on the first problem only (it is O(T n² m)).
    let (n, m, t, r) = (case.n, case.m, case.len, case.rank);
    let one = Dplr {
        w: &w[..t * n],
        u: &u[..t * r * n],
        v: &v[..t * r * n],
        k: &k[..t * n],
        x: &x[..t * m],
        q: Some(&q[..t * n]),
        h0: Some(&h0[..n * m]),
        batch: 1,
        ..problem
    };
    let (want, want_t) = oracle::dplr(&one);
    let tol = common::tolerance::<S>(t);
    let mut ws = DplrWorkspace::new();
    let mut seq_ms = None;
    for request in [
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::Chunk(64),
        PlanRequest::Chunk(128),
        PlanRequest::Chunk(512),
    ] {
        let (out, h_t, plan) = scan_host(cuda, &mut ws, &problem, request)
            .unwrap_or_else(|e| panic!("{} {request}: {e}", S::DTYPE));
        let e = oracle::rel_l2(&out[..t * m], &want);
        let e_t = oracle::rel_l2(&h_t[..n * m], &want_t);
        assert!(
            e <= tol && e_t <= tol,
            "{plan}: relative L2 error y {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        );
        let (_, mut run) = problem.kernel_prepare(cuda, request).unwrap();
        run().unwrap();
        KernelRunner::synchronize(cuda).unwrap();
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let start = Instant::now();
                run().unwrap();
                KernelRunner::synchronize(cuda).unwrap();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let base = *seq_ms.get_or_insert(ms);
        eprintln!(
            "  {:>9.3} ms  {:>6.1}x vs sequential  {:>7.2} ns/token  err {e:.2e}  {plan}",
            ms,
            base / ms,
            ms * 1e6 / (case.batch * t) as f64
        );
    }
}

/// Time per token of the `Auto` plan from `T = 2^12` to `2^16` (printed):
/// the project wants it flat.
#[test]
#[ignore = "benchmark (up to 3 GB of inputs): run with --ignored on a GPU, not under compute-sanitizer"]
fn time_per_token_over_length() {
    let Some(cuda) = cuda() else { return };
    for log_t in 12..=16 {
        let t = 1usize << log_t;
        let case = dplr_suite::Case::new(
            (64, t, 64, 64, 1),
            PlanRequest::Auto,
            false,
            DplrOutput::Readout,
        );
        let (w, u, v, k, x, q, _) = dplr_suite::inputs::<bf16>(&case, 0x7200 + log_t);
        let problem = Dplr {
            w: &w,
            u: &u,
            v: &v,
            k: &k,
            x: &x,
            q: Some(&q),
            h0: None,
            batch: 64,
            len: t,
            n: 64,
            m: 64,
            rank: 1,
            output: DplrOutput::Readout,
        };
        let plan = plan_dplr(
            DplrShape::of(&problem),
            DplrOutput::Readout,
            parascan::DType::Bf16,
            PlanRequest::Auto,
            cuda.sm_count() as usize,
        )
        .unwrap();
        let (_, mut run) = problem.kernel_prepare(&cuda, PlanRequest::Auto).unwrap();
        run().unwrap();
        KernelRunner::synchronize(&cuda).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            run().unwrap();
        }
        KernelRunner::synchronize(&cuda).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1e3 / 5.0;
        eprintln!(
            "  T=2^{log_t}: {ms:>9.3} ms, {:>7.2} ns/token  {plan}",
            ms * 1e6 / (64 * t) as f64
        );
    }
}
