//! Reverse Diagonal scans and the Diagonal backward pass on the kernels,
//! shared by `tests/emu_diagonal_reverse.rs` (SIMT emulator, every fiber
//! order) and `tests/cuda_diagonal_reverse.rs` (CUDA, or the emulated
//! driver): any `KernelRunner`.
//!
//! - Reverse scans (`scan_diagonal_reverse`) of every dtype × layout × plan
//!   (P0–P4) × the forward suite's shapes against the f64 oracle run on the
//!   time-reversed inputs; the reverse plan is the forward plan with the
//!   `_rev_` kernels; `h_T` is bitwise `h` at `t = 0`.
//! - The look-back's aggregate path in reverse (`lookback_prefix_every`).
//! - Measured depth of reverse plans, element by element, against the
//!   forward plan's formula at the mirrored step.
//! - `grad::diagonal_kernels` against central finite differences of the
//!   f64 oracle (small shapes, relative 1e-6 in f64) and the independent
//!   f64 sequential adjoint (`common::adjoint`, long `T`, the forward's
//!   tolerances) for every plan.
//!
//! Include it with `mod common; mod diagonal_suite; mod diagonal_reverse_suite;`.

#![allow(dead_code)]

use std::time::Instant;

use half::{bf16, f16};
use parascan::backend::launch::KernelRunner;
use parascan::family::diagonal::Diagonal;
use parascan::family::Layout;
use parascan::grad;
use parascan::kernels::diagonal::{
    plan_diagonal, scan_diagonal_reverse, DiagShape, DiagonalWorkspace, GpuPlan,
};
use parascan::kernels::{measure_depth, measure_depth_outputs, scan_host_planned};
use parascan::{oracle, DType, PlanRequest, Storage};

use crate::common::{self, adjoint};
use crate::diagonal_suite::{self, Case};

/// Reverses the time axis of data in `layout` (`[B,T,D]` or `[B,D,T]`).
pub fn flip<T: Copy>(v: &[T], batch: usize, len: usize, dim: usize, layout: Layout) -> Vec<T> {
    let (rows, w) = match layout {
        Layout::Btd => (batch, dim),
        Layout::Bdt => (batch * dim, 1),
    };
    let mut out = v.to_vec();
    for r in 0..rows {
        for t in 0..len {
            let (src, dst) = ((r * len + t) * w, (r * len + len - 1 - t) * w);
            out[dst..dst + w].copy_from_slice(&v[src..src + w]);
        }
    }
    out
}

/// The reverse plan must be the forward plan of the same request with the
/// `_rev_` kernels in place of those that touch `a`, `b`, `h`.
pub fn check_reverse_plan(fwd: &GpuPlan, rev: &GpuPlan) -> Result<(), String> {
    let sfx = format!("_{}", fwd.dtype);
    let rev_sfx = format!("_rev_{}", fwd.dtype);
    let same = fwd.kind == rev.kind
        && fwd.chunk == rev.chunk
        && fwd.chunks == rev.chunks
        && fwd.chunk_block == rev.chunk_block
        && fwd.scratch == rev.scratch
        && fwd.depth == rev.depth
        && rev.reverse
        && !fwd.reverse
        && fwd.launches.len() == rev.launches.len();
    let names_ok = fwd.launches.iter().zip(&rev.launches).all(|(f, r)| {
        f.role == r.role
            && f.cfg == r.cfg
            && if f.kernel.starts_with("diag_scan") || f.kernel == "diag_lb_clear" {
                r.kernel == f.kernel
            } else {
                f.kernel.strip_suffix(&sfx) == r.kernel.strip_suffix(&rev_sfx)
                    && r.kernel.ends_with(&rev_sfx)
            }
    });
    if same && names_ok {
        Ok(())
    } else {
        Err(format!(
            "reverse plan {rev} is not the forward plan {fwd} reversed"
        ))
    }
}

/// Runs `case` right to left with storage `S` and compares with the f64
/// oracle of the time-reversed inputs. Returns the plan.
pub fn run_reverse_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    case: &Case,
    seed: u64,
) -> Result<GpuPlan, String> {
    let (bsz, t, d, layout) = (case.batch, case.len, case.dim, case.layout);
    let ctx = format!(
        "{} reverse {} B={bsz} T={t} D={d} {layout} {} h0={} (seed {seed})",
        runner.backend_name(),
        S::DTYPE,
        case.request,
        case.h0
    );
    let (a, b, h0) = diagonal_suite::inputs::<S>(bsz, t, d, seed);
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: case.h0.then_some(&h0[..]),
        batch: bsz,
        len: t,
        dim: d,
        layout,
    };
    let (h, h_t, plan) = scan_diagonal_reverse(runner, ws, &problem, case.request)
        .map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    let fwd = plan_diagonal(
        plan.shape,
        layout,
        S::DTYPE,
        case.request,
        runner.sm_count(),
    )
    .map_err(|e| format!("{ctx}: {e}"))?;
    check_reverse_plan(&fwd, &plan).map_err(|e| format!("{ctx}: {e}"))?;
    diagonal_suite::check_plan_shape(case, &fwd).map_err(|e| format!("{ctx}: {e}"))?;
    check_against_reversed_oracle(&problem, &h, &h_t).map_err(|e| format!("{ctx}: {e}"))?;
    Ok(plan)
}

/// `h`, `h_T` of a reverse scan of `problem` against the f64 oracle run on
/// the time-reversed inputs (flipped back), and `h_T` bitwise `h` at `t = 0`.
fn check_against_reversed_oracle<S: Storage + bytemuck::Pod>(
    problem: &Diagonal<'_, S>,
    h: &[S],
    h_t: &[S],
) -> Result<(), String> {
    let (bsz, t, d, layout) = (problem.batch, problem.len, problem.dim, problem.layout);
    let (ra, rb) = (
        flip(problem.a, bsz, t, d, layout),
        flip(problem.b, bsz, t, d, layout),
    );
    let fwd = Diagonal {
        a: &ra,
        b: &rb,
        ..*problem
    };
    let (want, want_t) = oracle::diagonal(&fwd);
    let want = flip(&want, bsz, t, d, layout);
    if let Some(i) = h.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("h[{i}] = {:?} (unwritten or NaN)", h[i]));
    }
    if let Some(i) = h_t.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("h_T[{i}] = {:?} (unwritten or NaN)", h_t[i]));
    }
    let tol = common::tolerance::<S>(t);
    let (e, e_t) = (oracle::rel_l2(h, &want), oracle::rel_l2(h_t, &want_t));
    if !(e <= tol && e_t <= tol) {
        return Err(format!(
            "relative L2 error h {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        ));
    }
    for bb in 0..bsz {
        for c in 0..d {
            let i = match layout {
                Layout::Btd => bb * t * d + c,
                Layout::Bdt => (bb * d + c) * t,
            };
            if bytemuck::bytes_of(&h_t[bb * d + c]) != bytemuck::bytes_of(&h[i]) {
                return Err(format!(
                    "h_T[{}] = {:?} differs from h at t = 0 ({:?})",
                    bb * d + c,
                    h_t[bb * d + c],
                    h[i]
                ));
            }
        }
    }
    Ok(())
}

/// Every standard case of the forward suite, every dtype, right to left;
/// panics listing the failures or when a plan kind (P0–P4) was not covered.
pub fn run_reverse_cases<R: KernelRunner>(runner: &R, seed: u64, label: &str) {
    let start = Instant::now();
    let cases = diagonal_suite::standard_cases();
    let mut ws = DiagonalWorkspace::new();
    let mut kinds = [0usize; 5];
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let s = seed + 8 * i as u64;
        let runs = [
            run_reverse_case::<R, f32>(runner, &mut ws, case, s),
            run_reverse_case::<R, f64>(runner, &mut ws, case, s + 1),
            run_reverse_case::<R, f16>(runner, &mut ws, case, s + 2),
            run_reverse_case::<R, bf16>(runner, &mut ws, case, s + 3),
        ];
        for r in runs {
            match r {
                Ok(plan) => kinds[plan.kind as usize] += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "{label}: {} reverse cases × 4 dtypes, P0..P4 = {kinds:?}, {} failure(s), {:.1} s",
        cases.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
    assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P4 = {kinds:?}");
}

/// The reverse look-back with prefixes published only every n-th chunk:
/// successors fold aggregates (several 32-chunk windows on `[B,D,T]`).
pub fn check_reverse_lookback_aggregate_path<R: KernelRunner>(runner: &R, label: &str) {
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    for ((bsz, t, d), layout) in [
        ((1, 150_000, 1), Layout::Bdt), // 37 chunks of 4096: two windows
        ((2, 2500, 40), Layout::Btd),   // 20 chunks of 128, 2 groups per row
    ] {
        let shape = DiagShape::new(bsz, t, d);
        for every in [2u32, 5, 37] {
            for dtype in [DType::F32, DType::F64] {
                let seed = 0x7ab0 + u64::from(every) + t as u64;
                let r = match dtype {
                    DType::F64 => {
                        aggregate_case::<R, f64>(runner, &mut ws, shape, layout, every, seed)
                    }
                    _ => aggregate_case::<R, f32>(runner, &mut ws, shape, layout, every, seed),
                };
                runs += 1;
                if let Err(e) = r {
                    failures.push(e);
                }
            }
        }
    }
    eprintln!("{label}: {runs} reverse look-back aggregate-path runs");
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
}

fn aggregate_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    shape: DiagShape,
    layout: Layout,
    every: u32,
    seed: u64,
) -> Result<(), String> {
    let (a, b, h0) = diagonal_suite::inputs::<S>(shape.batch, shape.len, shape.dim, seed);
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch: shape.batch,
        len: shape.len,
        dim: shape.dim,
        layout,
    };
    let mut plan = plan_diagonal(
        shape,
        layout,
        S::DTYPE,
        PlanRequest::LookBack,
        runner.sm_count(),
    )
    .and_then(|p| p.reversed())
    .map_err(|e| e.to_string())?;
    plan.lookback_prefix_every = every;
    let ctx = format!("{} every={every} [{plan}]", runner.backend_name());
    let (h, h_t, _) =
        scan_host_planned(runner, ws, &problem, plan).map_err(|e| format!("{ctx}: {e}"))?;
    check_against_reversed_oracle(&problem, &h, &h_t).map_err(|e| format!("{ctx}: {e}"))
}

/// Runs the `_rev_` `_depth` kernels of the reverse plan of every depth
/// plan of the forward suite and checks every output: `h[t]` equals the
/// forward plan's formula at step `T − 1 − t`, `h_T` that at `T − 1`,
/// and the maximum equals the forward plan's depth.
pub fn run_reverse_depth_plans<R: KernelRunner>(runner: &R, label: &str) {
    let mut ws = DiagonalWorkspace::new();
    let mut kinds = [0usize; 5];
    let mut failures = Vec::new();
    for fwd in diagonal_suite::depth_plans(runner.sm_count()) {
        let rev = plan_diagonal(
            fwd.shape,
            fwd.layout,
            fwd.dtype,
            fwd.request,
            runner.sm_count(),
        )
        .and_then(|p| p.reversed())
        .expect("reverse plan");
        kinds[rev.kind as usize] += 1;
        match check_reverse_depth(runner, &mut ws, &fwd, &rev) {
            Ok(d) => eprintln!("  reverse depth {d:>6}  {rev}"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
    assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P4 = {kinds:?}");
}

fn check_reverse_depth<R: KernelRunner>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    fwd: &GpuPlan,
    rev: &GpuPlan,
) -> Result<u64, String> {
    let ctx = format!("{} reverse depth [{rev}]", runner.backend_name());
    check_reverse_plan(fwd, rev).map_err(|e| format!("{ctx}: {e}"))?;
    let (h, h_t) = measure_depth_outputs(runner, ws, rev).map_err(|e| format!("{ctx}: {e}"))?;
    let DiagShape { batch, len, dim } = rev.shape;
    let mut bad = Vec::new();
    for bb in 0..batch {
        for c in 0..dim {
            for t in 0..len {
                let want = fwd.depth_at(len - 1 - t);
                let i = match rev.layout {
                    Layout::Btd => (bb * len + t) * dim + c,
                    Layout::Bdt => (bb * dim + c) * len + t,
                };
                if (u64::from(h[i]) != want || rev.depth_at(t) != want) && bad.len() < 5 {
                    bad.push(format!(
                        "h[b={bb}, d={c}, t={t}] = {}, forward formula at T-1-t {want}, \
                         reverse formula {}",
                        h[i],
                        rev.depth_at(t)
                    ));
                }
            }
            let lane = bb * dim + c;
            let want_t = fwd.depth_at(len - 1);
            if u64::from(h_t[lane]) != want_t && bad.len() < 5 {
                bad.push(format!("h_T[{lane}] = {}, formula {want_t}", h_t[lane]));
            }
        }
    }
    if !bad.is_empty() {
        return Err(format!("{ctx}: {}", bad.join("; ")));
    }
    let measured = measure_depth(runner, ws, rev).map_err(|e| format!("{ctx}: {e}"))?;
    if measured != fwd.depth || measured != rev.depth {
        return Err(format!(
            "{ctx}: measured {measured}, forward plan {}, reverse plan {}",
            fwd.depth, rev.depth
        ));
    }
    Ok(measured)
}

// ---------------------------------------------------------------------------
// Gradients on the kernels.
// ---------------------------------------------------------------------------

/// Requests covering P0–P4 for the gradient tests (`Chunk(1)` is P3 once
/// `T > 2048`; `Chunk(T)` is P1).
pub fn grad_requests(len: usize) -> Vec<PlanRequest> {
    vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(len),
        PlanRequest::Chunk(3),
        PlanRequest::Chunk(1),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::LookBack,
    ]
}

/// One gradient case: f64 values already rounded to the storage type.
pub struct GradCase {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub h0: Vec<f64>,
    pub gy: Vec<f64>,
    pub gh: Vec<f64>,
    pub batch: usize,
    pub len: usize,
    pub dim: usize,
    pub layout: Layout,
}

fn f64s<S: Storage>(v: &[S]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn cast<S: Storage>(v: &[f64]) -> Vec<S> {
    v.iter().map(|&x| S::from_f64(x)).collect()
}

impl GradCase {
    pub fn new<S: Storage>(
        seed: u64,
        batch: usize,
        len: usize,
        dim: usize,
        layout: Layout,
    ) -> Self {
        let mut r = common::rng(seed);
        let n = batch * len * dim;
        GradCase {
            a: f64s(&common::uniform::<S>(&mut r, n, -0.99, 0.99)),
            b: f64s(&common::uniform::<S>(&mut r, n, -1.0, 1.0)),
            h0: f64s(&common::uniform::<S>(&mut r, batch * dim, -1.0, 1.0)),
            gy: f64s(&common::uniform::<S>(&mut r, n, -1.0, 1.0)),
            gh: f64s(&common::uniform::<S>(&mut r, batch * dim, -1.0, 1.0)),
            batch,
            len,
            dim,
            layout,
        }
    }

    /// `Σ gy·h + Σ gh·h_T` of the f64 oracle.
    fn loss(&self, a: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let p = Diagonal {
            a,
            b,
            h0: Some(h0),
            batch: self.batch,
            len: self.len,
            dim: self.dim,
            layout: self.layout,
        };
        let (out, last) = oracle::diagonal(&p);
        out.iter().zip(&self.gy).map(|(x, y)| x * y).sum::<f64>()
            + last.iter().zip(&self.gh).map(|(x, y)| x * y).sum::<f64>()
    }

    /// Forward on the CPU oracle's states (rounded to `S`), backward on the
    /// kernels.
    fn kernels<R: KernelRunner, S: Storage + bytemuck::Pod>(
        &self,
        runner: &R,
        ws: &mut DiagonalWorkspace,
        request: PlanRequest,
    ) -> Result<grad::DiagonalGrads<S, GpuPlan>, String> {
        let (a, b, h0, gy, gh) = (
            cast::<S>(&self.a),
            cast::<S>(&self.b),
            cast::<S>(&self.h0),
            cast::<S>(&self.gy),
            cast::<S>(&self.gh),
        );
        let p = Diagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch: self.batch,
            len: self.len,
            dim: self.dim,
            layout: self.layout,
        };
        let (states, _) = oracle::diagonal(&p);
        let states = cast::<S>(&states);
        grad::diagonal_kernels(runner, ws, &p, &states, &gy, Some(&gh), request)
            .map_err(|e| e.to_string())
    }
}

fn rel_check<S: Storage>(what: &str, got: &[S], want: &[f64], tol: f64) -> Result<(), String> {
    let e = oracle::rel_l2(got, want);
    if e <= tol {
        Ok(())
    } else {
        Err(format!("{what}: relative L2 error {e:.3e} > {tol:.1e}"))
    }
}

/// `grad::diagonal_kernels` (f64) against central finite differences of
/// the f64 oracle, both layouts, every plan kind.
pub fn check_gradients_fd<R: KernelRunner>(runner: &R, label: &str) {
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 5];
    for layout in [Layout::Btd, Layout::Bdt] {
        let c = GradCase::new::<f64>(31, 2, 9, 3, layout);
        let fd = |x: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
            let mut y = x.to_vec();
            (0..x.len())
                .map(|i| {
                    let h = 1e-5 * x[i].abs().max(1.0);
                    y[i] = x[i] + h;
                    let up = f(&y);
                    y[i] = x[i] - h;
                    let down = f(&y);
                    y[i] = x[i];
                    (up - down) / (2.0 * h)
                })
                .collect()
        };
        let want_a = fd(&c.a, &|a| c.loss(a, &c.b, &c.h0));
        let want_b = fd(&c.b, &|b| c.loss(&c.a, b, &c.h0));
        let want_h0 = fd(&c.h0, &|h0| c.loss(&c.a, &c.b, h0));
        for request in grad_requests(c.len) {
            let what = format!("{label} fd {layout} {request}");
            let r = c.kernels::<R, f64>(runner, &mut ws, request).and_then(|g| {
                kinds[g.plan.kind as usize] += 1;
                rel_check(&format!("{what} da [{}]", g.plan), &g.a, &want_a, 1e-6)?;
                rel_check(&format!("{what} db [{}]", g.plan), &g.b, &want_b, 1e-6)?;
                rel_check(&format!("{what} dh0 [{}]", g.plan), &g.h0, &want_h0, 1e-6)
            });
            if let Err(e) = r {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // T = 9 has no P3 (it needs more than 2048 chunks): the long-T check covers it.
    assert!(
        kinds[0] > 0 && kinds[1] > 0 && kinds[2] > 0 && kinds[4] > 0,
        "{label}: P0..P4 = {kinds:?}"
    );
}

/// `grad::diagonal_kernels` against the f64 sequential adjoint on a long
/// `T`, f32 and f64, both layouts, every plan kind (P3 included).
pub fn check_gradients_long<R: KernelRunner>(runner: &R, len: usize, label: &str) {
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 5];
    for layout in [Layout::Btd, Layout::Bdt] {
        for dtype in [DType::F64, DType::F32] {
            let seed = 40 + len as u64 + (layout == Layout::Bdt) as u64;
            let c = match dtype {
                DType::F64 => GradCase::new::<f64>(seed, 2, len, 3, layout),
                _ => GradCase::new::<f32>(seed, 2, len, 3, layout),
            };
            let (da, db, dh0) = adjoint::diagonal(
                &c.a,
                &c.b,
                &c.h0,
                &c.gy,
                &c.gh,
                c.batch,
                len,
                c.dim,
                layout == Layout::Bdt,
            );
            for request in grad_requests(len) {
                let what = format!("{label} {dtype} T={len} {layout} {request}");
                let r = match dtype {
                    DType::F64 => c.kernels::<R, f64>(runner, &mut ws, request).and_then(|g| {
                        kinds[g.plan.kind as usize] += 1;
                        let tol = common::tolerance::<f64>(len);
                        rel_check(&format!("{what} da [{}]", g.plan), &g.a, &da, tol)?;
                        rel_check(&format!("{what} db"), &g.b, &db, tol)?;
                        rel_check(&format!("{what} dh0"), &g.h0, &dh0, tol)
                    }),
                    _ => c.kernels::<R, f32>(runner, &mut ws, request).and_then(|g| {
                        kinds[g.plan.kind as usize] += 1;
                        let tol = common::tolerance::<f32>(len);
                        rel_check(&format!("{what} da [{}]", g.plan), &g.a, &da, tol)?;
                        rel_check(&format!("{what} db"), &g.b, &db, tol)?;
                        rel_check(&format!("{what} dh0"), &g.h0, &dh0, tol)
                    }),
                };
                if let Err(e) = r {
                    failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if len > 2048 {
        assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P4 = {kinds:?}");
    }
}

/// `grad::diagonal_kernels` in f16 and bf16 (inputs, states and gradients
/// in the dtype, accumulation in f32) against the f64 sequential adjoint on
/// the rounded inputs, within `common::grad_tolerance`, both layouts, every
/// plan kind reached at `len` (all five when `len > 2048`).
pub fn check_gradients_half<R: KernelRunner>(runner: &R, len: usize, label: &str) {
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 5];
    let mut runs = 0;
    for layout in [Layout::Btd, Layout::Bdt] {
        for dtype in [DType::F16, DType::Bf16] {
            let seed = 70 + len as u64 + (layout == Layout::Bdt) as u64;
            let c = match dtype {
                DType::F16 => GradCase::new::<half::f16>(seed, 2, len, 3, layout),
                _ => GradCase::new::<half::bf16>(seed, 2, len, 3, layout),
            };
            let want = adjoint::diagonal(
                &c.a,
                &c.b,
                &c.h0,
                &c.gy,
                &c.gh,
                c.batch,
                len,
                c.dim,
                layout == Layout::Bdt,
            );
            for request in grad_requests(len) {
                let what = format!("{label} {dtype} T={len} {layout} {request}");
                runs += 1;
                let r = match dtype {
                    DType::F16 => half_check::<R, half::f16>(&c, runner, &mut ws, request, &want),
                    _ => half_check::<R, half::bf16>(&c, runner, &mut ws, request, &want),
                };
                match r {
                    Ok(kind) => kinds[kind] += 1,
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
        }
    }
    eprintln!(
        "{label}: {runs} diagonal f16/bf16 gradient runs, P0..P4 = {kinds:?}, {} failure(s)",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if len > 2048 {
        assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P4 = {kinds:?}");
    }
}

/// One half-precision gradient run against `want = (da, db, dh0)`;
/// returns the plan kind's index.
fn half_check<R: KernelRunner, S: Storage + bytemuck::Pod>(
    c: &GradCase,
    runner: &R,
    ws: &mut DiagonalWorkspace,
    request: PlanRequest,
    want: &(Vec<f64>, Vec<f64>, Vec<f64>),
) -> Result<usize, String> {
    let g = c.kernels::<R, S>(runner, ws, request)?;
    let tol = common::grad_tolerance::<S>(c.len);
    rel_check(&format!("da [{}]", g.plan), &g.a, &want.0, tol)?;
    rel_check("db", &g.b, &want.1, tol)?;
    rel_check("dh0", &g.h0, &want.2, tol)?;
    Ok(g.plan.kind as usize)
}
