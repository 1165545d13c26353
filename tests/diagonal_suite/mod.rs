//! The Diagonal-kernel suite shared by `tests/emu_diagonal.rs` (SIMT
//! emulator) and `tests/cuda_diagonal.rs` (GPU): the same orchestration
//! (`parascan::kernels::diagonal`) checked on any `KernelRunner`.
//!
//! Include it with `mod common; mod diagonal_suite;` (it uses `crate::common`).
// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::time::Instant;

use half::{bf16, f16};
use parascan::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use parascan::family::diagonal::Diagonal;
use parascan::family::Layout;
use parascan::kernels::diagonal::{
    plan_diagonal, DiagShape, DiagonalBuffers, DiagonalIo, DiagonalWorkspace, GpuPlan, GpuPlanKind,
    MAX_CHUNKS, MAX_SCAN_TILE,
};
use parascan::kernels::{
    launch_scan, launch_scan_buffers, measure_depth, measure_depth_outputs, scan_host,
};
use parascan::{oracle, DType, Error, PlanRequest, Storage};
use rand::Rng;

use crate::common;

/// Plans and launches in one call on raw addresses (the suite's shorthand).
///
/// # Safety
/// As [`launch_scan`]: every address in `io` is live memory of `runner`
/// of the size its shape implies.
unsafe fn scan_diagonal_device<R: KernelRunner>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    dtype: DType,
    layout: Layout,
    shape: DiagShape,
    io: DiagonalIo,
    request: PlanRequest,
) -> parascan::Result<GpuPlan> {
    let plan = plan_diagonal(shape, layout, dtype, request, runner.sm_count())?;
    // SAFETY: forwarded to the caller.
    unsafe { launch_scan(runner, ws, &plan, io) }?;
    Ok(plan)
}

// ---------------------------------------------------------------------------
// A runner that records what the orchestration asks for
// ---------------------------------------------------------------------------

/// Wraps a runner and records launches (in order), allocations, fills and
/// synchronizations, to check that errors come before any launch and that
/// the device path never synchronizes.
pub struct Recorder<'r, R> {
    inner: &'r R,
    pub launches: RefCell<Vec<String>>,
    pub allocs: Cell<usize>,
    pub syncs: Cell<usize>,
}

impl<'r, R: KernelRunner> Recorder<'r, R> {
    pub fn new(inner: &'r R) -> Self {
        Recorder {
            inner,
            launches: RefCell::new(Vec::new()),
            allocs: Cell::new(0),
            syncs: Cell::new(0),
        }
    }

    pub fn launch_count(&self) -> usize {
        self.launches.borrow().len()
    }
}

impl<R: KernelRunner> KernelRunner for Recorder<'_, R> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn alloc(&self, bytes: usize) -> parascan::Result<DeviceBuffer> {
        self.allocs.set(self.allocs.get() + 1);
        self.inner.alloc(bytes)
    }
    fn upload<T: bytemuck::Pod>(&self, host: &[T]) -> parascan::Result<DeviceBuffer> {
        self.allocs.set(self.allocs.get() + 1);
        self.inner.upload(host)
    }
    fn download<T: bytemuck::Pod>(
        &self,
        buf: &DeviceBuffer,
        host: &mut [T],
    ) -> parascan::Result<()> {
        self.inner.download(buf, host)
    }
    fn fill(&self, buf: &DeviceBuffer, byte: u8) -> parascan::Result<()> {
        self.inner.fill(buf, byte)
    }
    unsafe fn launch(
        &self,
        kernel: &str,
        cfg: LaunchConfig,
        args: &[KernelArg],
    ) -> parascan::Result<()> {
        self.launches.borrow_mut().push(kernel.to_string());
        unsafe { self.inner.launch(kernel, cfg, args) }
    }
    fn synchronize(&self) -> parascan::Result<()> {
        self.syncs.set(self.syncs.get() + 1);
        self.inner.synchronize()
    }
    fn sm_count(&self) -> usize {
        self.inner.sm_count()
    }
}

// ---------------------------------------------------------------------------
// Correctness against the f64 oracle
// ---------------------------------------------------------------------------

/// One problem shape and plan request.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub batch: usize,
    pub len: usize,
    pub dim: usize,
    pub layout: Layout,
    pub request: PlanRequest,
    pub h0: bool,
}

impl Case {
    pub fn new(
        (batch, len, dim): (usize, usize, usize),
        layout: Layout,
        request: PlanRequest,
        h0: bool,
    ) -> Self {
        Case {
            batch,
            len,
            dim,
            layout,
            request,
            h0,
        }
    }

    fn describe(&self) -> String {
        format!(
            "B={} T={} D={} {} {} {}",
            self.batch,
            self.len,
            self.dim,
            self.layout,
            self.request,
            if self.h0 { "h0" } else { "no-h0" }
        )
    }
}

/// Random inputs as in the kernels' selftest: `|a| ∈ [0.6, 0.999)` with
/// 10 % negative, `b, h0 ∈ [−1, 1)`, rounded to `S`.
pub fn inputs<S: Storage>(
    batch: usize,
    len: usize,
    dim: usize,
    seed: u64,
) -> (Vec<S>, Vec<S>, Vec<S>) {
    let mut rng = common::rng(seed);
    let n = batch * len * dim;
    let a = (0..n)
        .map(|_| {
            let m = rng.gen_range(0.6..0.999);
            S::from_f64(if rng.gen_bool(0.1) { -m } else { m })
        })
        .collect();
    let b = common::uniform(&mut rng, n, -1.0, 1.0);
    let h0 = common::uniform(&mut rng, batch * dim, -1.0, 1.0);
    (a, b, h0)
}

/// The plan must be what the request asks for.
pub fn check_plan_shape(case: &Case, plan: &GpuPlan) -> Result<(), String> {
    let t = case.len;
    let ok = match case.request {
        PlanRequest::Sequential => plan.kind == GpuPlanKind::Sequential && plan.launches.len() == 1,
        PlanRequest::Chunk(c) if c >= t => {
            plan.kind == GpuPlanKind::SinglePass && plan.chunk == t && plan.launches.len() == 1
        }
        PlanRequest::Chunk(c) => {
            let nc = t.div_ceil(c);
            let kind = if nc <= MAX_SCAN_TILE {
                GpuPlanKind::OneLevel
            } else {
                GpuPlanKind::TwoLevel
            };
            plan.kind == kind && plan.chunk == c && plan.chunks == nc
        }
        PlanRequest::MinDepth | PlanRequest::Auto => plan.chunks == t.div_ceil(plan.chunk),
        PlanRequest::LookBack => {
            plan.kind == GpuPlanKind::LookBack && plan.chunks == t.div_ceil(plan.chunk)
        }
    };
    let launches = match plan.kind {
        GpuPlanKind::Sequential | GpuPlanKind::SinglePass => 1,
        GpuPlanKind::LookBack => 2,
        GpuPlanKind::OneLevel => 3,
        GpuPlanKind::TwoLevel => 5,
    };
    let expected_kernel_layout = if case.dim == 1 {
        Layout::Bdt
    } else {
        case.layout
    };
    let suffix = format!("_{}", plan.dtype);
    if !ok
        || plan.launches.len() != launches
        || plan.kernel_layout != expected_kernel_layout
        || !plan
            .launches
            .iter()
            .all(|l| l.kernel.ends_with(&suffix) || l.kernel == "diag_lb_clear")
    {
        return Err(format!("unexpected plan for {}: {plan}", case.describe()));
    }
    Ok(())
}

/// Runs `case` with storage `S` through `scan_host` and compares with
/// the f64 oracle on the same (rounded) inputs. Returns the plan.
pub fn run_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    case: &Case,
    seed: u64,
) -> Result<GpuPlan, String> {
    let ctx = format!(
        "{} {} {} (seed {seed})",
        runner.backend_name(),
        S::DTYPE,
        case.describe()
    );
    let (a, b, h0) = inputs::<S>(case.batch, case.len, case.dim, seed);
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: case.h0.then_some(&h0[..]),
        batch: case.batch,
        len: case.len,
        dim: case.dim,
        layout: case.layout,
    };
    let (h, h_t, plan) =
        scan_host(runner, ws, &problem, case.request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    check_plan_shape(case, &plan).map_err(|e| format!("{ctx}: {e}"))?;
    let (want, want_t) = oracle::diagonal(&problem);
    if let Some(i) = h.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: h[{i}] = {:?} (unwritten or NaN)", h[i]));
    }
    if let Some(i) = h_t.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: h_T[{i}] = {:?} (unwritten or NaN)", h_t[i]));
    }
    let tol = common::tolerance::<S>(case.len);
    let e = oracle::rel_l2(&h, &want);
    let e_t = oracle::rel_l2(&h_t, &want_t);
    if !(e <= tol && e_t <= tol) {
        return Err(format!(
            "{ctx}: relative L2 error h {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        ));
    }
    // h_T is the very register stored at t = T.
    let (bsz, t, d) = (case.batch, case.len, case.dim);
    for bb in 0..bsz {
        for c in 0..d {
            let i = match case.layout {
                Layout::Btd => (bb * t + t - 1) * d + c,
                Layout::Bdt => (bb * d + c) * t + t - 1,
            };
            if bytemuck::bytes_of(&h_t[bb * d + c]) != bytemuck::bytes_of(&h[i]) {
                return Err(format!(
                    "{ctx}: h_T[{}] = {:?} differs from h at t = T ({:?})",
                    bb * d + c,
                    h_t[bb * d + c],
                    h[i]
                ));
            }
        }
    }
    Ok(plan)
}

/// Every request kind, with a chunk of one step, an odd one and a power of two.
pub const REQUESTS: [PlanRequest; 7] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(1),
    PlanRequest::Chunk(3),
    PlanRequest::Chunk(16),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
    PlanRequest::LookBack,
];

/// The correctness cases, for both layouts, `h0` given in every other one.
pub fn standard_cases() -> Vec<Case> {
    use PlanRequest::*;
    let mut cases = Vec::new();
    let mut h0 = false;
    let mut push = |shape, requests: &[PlanRequest]| {
        for layout in [Layout::Btd, Layout::Bdt] {
            for &r in requests {
                h0 = !h0;
                cases.push(Case::new(shape, layout, r, h0));
            }
        }
    };
    // (B, T, D): T = 1; odd T; T < C; T not a multiple of C; D = 1 (the
    // [B,D,T] kernels for both layouts); D = 64; T ≫ C; B = 1..3.
    for shape in [
        (1, 1, 1),
        (2, 1, 3),
        (1, 7, 3),
        (3, 37, 2),
        (2, 100, 1),
        (1, 300, 64),
        (3, 513, 5),
        (2, 1000, 3),
    ] {
        push(shape, &REQUESTS);
    }
    push((3, 37, 2), &[Chunk(64), Chunk(37), Chunk(36)]);
    push((2, 1000, 3), &[Chunk(256), Chunk(999)]);
    // More than 2048 chunks: P3.
    push((1, 2500, 2), &[Chunk(1)]);
    push((2, 4200, 1), &[Chunk(2)]);
    push((3, 2100, 3), &[Chunk(1)]);
    // Look-back across many chunks: [B,D,T] chunks of 4096 steps, [B,T,D]
    // chunks of 128 steps for 32-channel groups (D = 70: a partial group).
    push((1, 9000, 2), &[LookBack]);
    push((2, 1500, 70), &[LookBack]);
    cases
}

/// `run_case` for f32, f64, f16 and bf16.
pub fn run_case_all_dtypes<R: KernelRunner>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    case: &Case,
    seed: u64,
) -> Result<(), String> {
    run_case::<R, f32>(runner, ws, case, seed)?;
    run_case::<R, f64>(runner, ws, case, seed + 1)?;
    run_case::<R, f16>(runner, ws, case, seed + 2)?;
    run_case::<R, bf16>(runner, ws, case, seed + 3)?;
    Ok(())
}

/// Runs every case for every dtype, collecting failures; panics listing
/// them, or when a plan kind (P0–P4) was not covered.
pub fn run_cases<R: KernelRunner>(runner: &R, cases: &[Case], seed: u64, label: &str) {
    let kinds = run_cases_any_kinds(runner, cases, seed, label);
    assert!(
        kinds.iter().all(|&k| k > 0),
        "{label}: every plan kind must be covered, got P0..P4 = {kinds:?}"
    );
}

/// Runs every case for every dtype, collecting failures; panics listing
/// them. Returns how many cases ran P0, P1, P2, P3, P4.
pub fn run_cases_any_kinds<R: KernelRunner>(
    runner: &R,
    cases: &[Case],
    seed: u64,
    label: &str,
) -> [usize; 5] {
    let start = Instant::now();
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 5];
    for (i, case) in cases.iter().enumerate() {
        let case_start = Instant::now();
        match run_case_all_dtypes(runner, &mut ws, case, seed + 16 * i as u64) {
            Ok(()) => {}
            Err(e) => failures.push(e),
        }
        // The plan kind, for the coverage summary.
        if let Ok(p) = plan_diagonal(
            DiagShape::new(case.batch, case.len, case.dim),
            case.layout,
            DType::F32,
            case.request,
            runner.sm_count(),
        ) {
            kinds[p.kind as usize] += 1;
        }
        let dt = case_start.elapsed().as_secs_f64();
        if dt > 2.0 {
            eprintln!("  slow case ({dt:.1} s): {}", case.describe());
        }
    }
    eprintln!(
        "{label}: {} cases x 4 dtypes, plans P0/P1/P2/P3/P4 = {kinds:?}, {} failure(s), {:.1} s",
        cases.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{label}: {} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    kinds
}

/// With `h = None` only `h_T` is written, bit-identical to a full run's.
pub fn check_final_state_only<R: KernelRunner>(runner: &R) {
    let mut ws = DiagonalWorkspace::new();
    for layout in [Layout::Btd, Layout::Bdt] {
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(5000),
            PlanRequest::Chunk(10),
            PlanRequest::Chunk(1),
        ] {
            let shape = DiagShape::new(2, 2200, 3);
            let (a, b, h0) = inputs::<f32>(shape.batch, shape.len, shape.dim, 99);
            let problem = Diagonal {
                a: &a,
                b: &b,
                h0: Some(&h0),
                batch: shape.batch,
                len: shape.len,
                dim: shape.dim,
                layout,
            };
            let (_, full_t, plan) = scan_host(runner, &mut ws, &problem, request).unwrap();
            let da = runner.upload(&a).unwrap();
            let db = runner.upload(&b).unwrap();
            let dh0 = runner.upload(&h0).unwrap();
            let dht = runner.alloc(shape.lanes() * 4).unwrap();
            runner.fill(&dht, 0xFF).unwrap();
            let io = DiagonalIo {
                a: da.ptr(),
                b: db.ptr(),
                h: None,
                ends: parascan::kernels::Ends {
                    h0: Some(dh0.ptr()),
                    h_t: dht.ptr(),
                },
            };
            unsafe { launch_scan(runner, &mut ws, &plan, io) }.unwrap();
            runner.synchronize().unwrap();
            let mut got = vec![0f32; shape.lanes()];
            runner.download(&dht, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&full_t), "h = None changed h_T: {plan}");
        }
    }
}

// ---------------------------------------------------------------------------
// Measured depth
// ---------------------------------------------------------------------------

/// Runs the `_depth` kernels for `plan` and checks every output against
/// the per-element formula and the maximum against `plan.depth`.
pub fn check_depth<R: KernelRunner>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    plan: &GpuPlan,
) -> Result<u64, String> {
    let ctx = format!("{} depth [{plan}]", runner.backend_name());
    let (h, h_t) = measure_depth_outputs(runner, ws, plan).map_err(|e| format!("{ctx}: {e}"))?;
    let DiagShape { batch, len, dim } = plan.shape;
    let formula: Vec<u64> = (0..len).map(|t| plan.depth_at(t)).collect();
    let mut bad = Vec::new();
    for bb in 0..batch {
        for c in 0..dim {
            for (t, &want) in formula.iter().enumerate() {
                let i = match plan.layout {
                    Layout::Btd => (bb * len + t) * dim + c,
                    Layout::Bdt => (bb * dim + c) * len + t,
                };
                if u64::from(h[i]) != want && bad.len() < 5 {
                    bad.push(format!(
                        "h[b={bb}, d={c}, t={t}] = {}, formula {want}",
                        h[i]
                    ));
                }
            }
            let lane = bb * dim + c;
            if u64::from(h_t[lane]) != formula[len - 1] && bad.len() < 5 {
                bad.push(format!(
                    "h_T[{lane}] = {}, formula {}",
                    h_t[lane],
                    formula[len - 1]
                ));
            }
        }
    }
    if !bad.is_empty() {
        return Err(format!("{ctx}: {}", bad.join("; ")));
    }
    let measured = measure_depth(runner, ws, plan).map_err(|e| format!("{ctx}: {e}"))?;
    if measured != plan.depth || formula.iter().copied().max() != Some(plan.depth) {
        return Err(format!(
            "{ctx}: measured max depth {measured}, plan formula {}",
            plan.depth
        ));
    }
    Ok(measured)
}

/// Depth plans: several `T`, `C`, layouts, every plan kind.
pub fn depth_plans(sm_count: usize) -> Vec<GpuPlan> {
    use PlanRequest::*;
    let specs: &[((usize, usize, usize), Layout, PlanRequest)] = &[
        ((1, 1024, 2), Layout::Btd, Chunk(64)),
        ((2, 1000, 3), Layout::Btd, Chunk(7)),
        ((1, 2500, 2), Layout::Btd, Chunk(1)),
        ((1, 77, 3), Layout::Btd, Sequential),
        ((1, 77, 3), Layout::Btd, Chunk(100)),
        ((2, 600, 2), Layout::Btd, MinDepth),
        ((2, 3000, 2), Layout::Btd, Auto),
        ((1, 3000, 2), Layout::Bdt, Chunk(300)),
        ((1, 5000, 2), Layout::Bdt, Chunk(2048)),
        ((2, 300, 1), Layout::Bdt, Chunk(1)),
        ((1, 4500, 1), Layout::Bdt, Chunk(2)),
        ((1, 3000, 2), Layout::Bdt, Chunk(5000)),
        ((1, 77, 3), Layout::Bdt, Sequential),
        ((1, 6000, 2), Layout::Bdt, MinDepth),
        ((2, 4000, 2), Layout::Bdt, Auto),
        ((1, 1, 2), Layout::Bdt, Auto),
        ((1, 9, 2), Layout::Bdt, MinDepth),
        ((1, 9000, 2), Layout::Bdt, LookBack),
        ((2, 300, 1), Layout::Btd, LookBack),
        ((1, 1, 2), Layout::Bdt, LookBack),
        ((2, 1000, 3), Layout::Btd, LookBack),
        ((1, 77, 40), Layout::Btd, LookBack),
        ((1, 5, 3), Layout::Btd, LookBack),
    ];
    // The f16/bf16 look-back geometry (32 steps per thread, chunks twice as
    // long), measured by its own depth kernels.
    let specs16: &[((usize, usize, usize), Layout, DType)] = &[
        ((1, 20000, 2), Layout::Bdt, DType::F16),
        ((1, 3, 2), Layout::Bdt, DType::Bf16),
        ((2, 1000, 3), Layout::Btd, DType::Bf16),
        ((1, 77, 40), Layout::Btd, DType::F16),
    ];
    let mut plans: Vec<GpuPlan> = specs
        .iter()
        .map(|&((b, t, d), layout, r)| {
            plan_diagonal(DiagShape::new(b, t, d), layout, DType::F32, r, sm_count)
                .unwrap_or_else(|e| panic!("plan B={b} T={t} D={d} {layout} {r}: {e}"))
        })
        .collect();
    for &((b, t, d), layout, dtype) in specs16 {
        let plan = plan_diagonal(
            DiagShape::new(b, t, d),
            layout,
            dtype,
            PlanRequest::LookBack,
            sm_count,
        )
        .unwrap_or_else(|e| panic!("plan B={b} T={t} D={d} {layout} {dtype:?} P4: {e}"));
        let threads = match plan.kernel_layout {
            Layout::Bdt => plan.chunk_block as usize,
            Layout::Btd => plan.chunk_block as usize / 32,
        };
        assert_eq!(plan.chunk, threads * 32, "16-bit P4: 32 steps per thread");
        plans.push(plan);
    }
    plans
}

pub fn run_depth_plans<R: KernelRunner>(runner: &R, label: &str) {
    let start = Instant::now();
    let mut ws = DiagonalWorkspace::new();
    let plans = depth_plans(runner.sm_count());
    let mut kinds = [0usize; 5];
    let mut failures = Vec::new();
    for plan in &plans {
        kinds[plan.kind as usize] += 1;
        match check_depth(runner, &mut ws, plan) {
            Ok(d) => eprintln!("  depth {d:>6}  {plan}"),
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{label}: {} depth plans, P0..P4 = {kinds:?}, {:.1} s",
        plans.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(kinds.iter().all(|&k| k > 0), "P0..P4 = {kinds:?}");
}

// ---------------------------------------------------------------------------
// Errors, launch order, workspace reuse
// ---------------------------------------------------------------------------

fn expect_shape_error<T: std::fmt::Debug>(result: parascan::Result<T>, arg: &str) {
    match result {
        Err(Error::Shape { arg: got, .. }) if got == arg => {}
        other => panic!("expected a shape error naming `{arg}`, got {other:?}"),
    }
}

fn expect_size_error<T: std::fmt::Debug>(result: parascan::Result<T>, arg: &str) {
    match result {
        Err(Error::Size { arg: got, .. }) if got == arg => {}
        other => panic!("expected a size error naming `{arg}`, got {other:?}"),
    }
}

/// Every bad input is a typed error naming the argument, before any launch.
pub fn check_errors<R: KernelRunner>(inner: &R) {
    let runner = Recorder::new(inner);
    let mut ws = DiagonalWorkspace::new();
    let (b, t, d) = (2usize, 10usize, 3usize);
    let n = b * t * d;
    let a = vec![0.5f32; n];
    let x = vec![0.25f32; n];
    let h0 = vec![1.0f32; b * d];
    let good = Diagonal {
        a: &a,
        b: &x,
        h0: Some(&h0),
        batch: b,
        len: t,
        dim: d,
        layout: Layout::Btd,
    };
    let short = vec![0.5f32; n - 1];
    expect_shape_error(
        scan_host(
            &runner,
            &mut ws,
            &Diagonal { a: &short, ..good },
            PlanRequest::Auto,
        ),
        "a",
    );
    expect_shape_error(
        scan_host(
            &runner,
            &mut ws,
            &Diagonal { b: &short, ..good },
            PlanRequest::Auto,
        ),
        "b",
    );
    expect_shape_error(
        scan_host(
            &runner,
            &mut ws,
            &Diagonal {
                h0: Some(&h0[1..]),
                ..good
            },
            PlanRequest::Auto,
        ),
        "h0",
    );
    expect_size_error(
        scan_host(
            &runner,
            &mut ws,
            &Diagonal {
                len: 0,
                a: &[],
                b: &[],
                ..good
            },
            PlanRequest::Auto,
        ),
        "len",
    );
    expect_size_error(
        scan_host(
            &runner,
            &mut ws,
            &Diagonal {
                batch: 0,
                a: &[],
                b: &[],
                h0: None,
                ..good
            },
            PlanRequest::Auto,
        ),
        "batch",
    );
    assert!(matches!(
        scan_host(&runner, &mut ws, &good, PlanRequest::Chunk(0)),
        Err(Error::Plan(_))
    ));
    assert_eq!(
        runner.launch_count(),
        0,
        "a launch happened before an error"
    );
    assert_eq!(
        runner.allocs.get(),
        0,
        "an allocation happened before an error"
    );

    // Device buffers of the wrong size, each named.
    let da = inner.upload(&a).unwrap();
    let db = inner.upload(&x).unwrap();
    let dh0 = inner.upload(&h0).unwrap();
    let dh = inner.alloc(n * 4).unwrap();
    let dht = inner.alloc(b * d * 4).unwrap();
    let dshort = inner.alloc((n - 1) * 4).unwrap();
    let dbd_short = inner.alloc((b * d - 1) * 4).unwrap();
    let plan = plan_diagonal(
        DiagShape::new(b, t, d),
        Layout::Btd,
        DType::F32,
        PlanRequest::Chunk(3),
        runner.sm_count(),
    )
    .unwrap();
    let bufs = || DiagonalBuffers {
        a: (&da).into(),
        b: (&db).into(),
        h: Some((&dh).into()),
        ends: parascan::kernels::EndBuffers {
            h0: Some((&dh0).into()),
            h_t: (&dht).into(),
        },
    };
    for (arg, bad) in [
        (
            "a",
            DiagonalBuffers {
                a: (&dshort).into(),
                ..bufs()
            },
        ),
        (
            "b",
            DiagonalBuffers {
                b: (&dshort).into(),
                ..bufs()
            },
        ),
        (
            "h",
            DiagonalBuffers {
                h: Some((&dshort).into()),
                ..bufs()
            },
        ),
        (
            "h0",
            DiagonalBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: Some((&dbd_short).into()),
                    ..bufs().ends
                },
                ..bufs()
            },
        ),
        (
            "h_t",
            DiagonalBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: None,
                    h_t: (&dbd_short).into(),
                },
                ..bufs()
            },
        ),
        (
            "h_t",
            DiagonalBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: None,
                    h_t: (&dh).into(),
                },
                ..bufs()
            },
        ),
    ] {
        expect_shape_error(launch_scan_buffers(&runner, &mut ws, &plan, bad), arg);
    }
    // A plan for another dtype: f64 needs twice the bytes.
    let plan64 = plan_diagonal(
        DiagShape::new(b, t, d),
        Layout::Btd,
        DType::F64,
        PlanRequest::Chunk(3),
        runner.sm_count(),
    )
    .unwrap();
    expect_shape_error(launch_scan_buffers(&runner, &mut ws, &plan64, bufs()), "a");

    // Raw pointers: null, misaligned, overlapping.
    let io = DiagonalIo {
        a: da.ptr(),
        b: db.ptr(),
        h: Some(dh.ptr()),
        ends: parascan::kernels::Ends {
            h0: Some(dh0.ptr()),
            h_t: dht.ptr(),
        },
    };
    expect_size_error(
        unsafe { launch_scan(&runner, &mut ws, &plan, DiagonalIo { a: 0, ..io }) },
        "a",
    );
    expect_size_error(
        unsafe {
            launch_scan(
                &runner,
                &mut ws,
                &plan,
                DiagonalIo {
                    ends: parascan::kernels::Ends { h_t: 0, ..io.ends },
                    ..io
                },
            )
        },
        "h_t",
    );
    expect_size_error(
        unsafe {
            launch_scan(
                &runner,
                &mut ws,
                &plan,
                DiagonalIo {
                    b: db.ptr() + 2,
                    ..io
                },
            )
        },
        "b",
    );
    expect_size_error(
        unsafe {
            launch_scan(
                &runner,
                &mut ws,
                &plan,
                DiagonalIo {
                    h: Some(da.ptr() + 8),
                    ..io
                },
            )
        },
        "h",
    );
    expect_size_error(
        unsafe {
            launch_scan(
                &runner,
                &mut ws,
                &plan,
                DiagonalIo {
                    ends: parascan::kernels::Ends {
                        h0: None,
                        h_t: dh.ptr() + 4 * (n as u64 - 1),
                    },
                    ..io
                },
            )
        },
        "h_t",
    );
    // Shapes the kernels cannot take, through the device entry point.
    let huge = DiagShape::new(1, MAX_CHUNKS + 1, 2);
    assert!(matches!(
        unsafe {
            scan_diagonal_device(
                &runner,
                &mut ws,
                DType::F32,
                Layout::Btd,
                huge,
                io,
                PlanRequest::Chunk(1),
            )
        },
        Err(Error::Plan(_))
    ));
    expect_size_error(
        unsafe {
            scan_diagonal_device(
                &runner,
                &mut ws,
                DType::F32,
                Layout::Btd,
                DiagShape::new(1, 1 << 31, 1),
                io,
                PlanRequest::Auto,
            )
        },
        "len",
    );
    expect_size_error(
        unsafe {
            scan_diagonal_device(
                &runner,
                &mut ws,
                DType::F32,
                Layout::Bdt,
                DiagShape::new(2, 10, 0),
                io,
                PlanRequest::Auto,
            )
        },
        "dim",
    );
    // A tampered plan.
    let mut tampered = plan.clone();
    tampered.chunk = 2;
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &tampered, io) },
        Err(Error::Plan(_))
    ));
    assert_eq!(
        runner.launch_count(),
        0,
        "a launch happened before an error"
    );

    // The good call still works afterwards, with exactly the plan's launches.
    launch_scan_buffers(&runner, &mut ws, &plan, bufs()).unwrap();
    let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel).collect();
    assert_eq!(*runner.launches.borrow(), names);
    assert_eq!(
        runner.syncs.get(),
        0,
        "the device path must not synchronize"
    );
    inner.synchronize().unwrap();
    let mut out = vec![0f32; b * d];
    inner.download(&dht, &mut out).unwrap();
    // a = 0.5, b = 0.25 from h0 = 1: h_t = 0.5 + (1 - 0.5) 0.5^10.
    let want = 0.5 + 0.5 * 0.5f32.powi(10);
    assert!(
        out.iter().all(|&v| (v - want).abs() < 1e-6),
        "{out:?} vs {want}"
    );
}

/// Launch order, no synchronization and no allocation once warm.
pub fn check_workspace_reuse<R: KernelRunner>(inner: &R) {
    let runner = Recorder::new(inner);
    let mut ws = DiagonalWorkspace::new();
    let shape = DiagShape::new(2, 3000, 3);
    let n = shape.elements();
    let a = inner.upload(&vec![0.9f32; n]).unwrap();
    let b = inner.upload(&vec![0.1f32; n]).unwrap();
    let h = inner.alloc(n * 4).unwrap();
    let h_t = inner.alloc(shape.lanes() * 4).unwrap();
    let io = DiagonalIo {
        a: a.ptr(),
        b: b.ptr(),
        h: Some(h.ptr()),
        ends: parascan::kernels::Ends {
            h0: None,
            h_t: h_t.ptr(),
        },
    };
    let run = |ws: &mut DiagonalWorkspace, request| {
        let before = runner.launch_count();
        let plan = unsafe {
            scan_diagonal_device(&runner, ws, DType::F32, Layout::Btd, shape, io, request)
        }
        .unwrap();
        let issued: Vec<String> = runner.launches.borrow()[before..].to_vec();
        let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel).collect();
        assert_eq!(issued, names, "launch order of {plan}");
        plan
    };
    let p3 = run(&mut ws, PlanRequest::Chunk(1));
    assert_eq!(p3.kind, GpuPlanKind::TwoLevel);
    assert!(ws.capacity_bytes() >= p3.scratch_bytes());
    let p4 = run(&mut ws, PlanRequest::LookBack);
    assert_eq!(p4.kind, GpuPlanKind::LookBack);
    let allocs = (ws.allocations(), runner.allocs.get());
    // Smaller and equal plans reuse the buffers.
    for request in [
        PlanRequest::Chunk(1),
        PlanRequest::Chunk(7),
        PlanRequest::Chunk(100),
        PlanRequest::Sequential,
        PlanRequest::LookBack,
        PlanRequest::Chunk(1),
    ] {
        run(&mut ws, request);
    }
    assert_eq!(
        (ws.allocations(), runner.allocs.get()),
        allocs,
        "allocated while warm"
    );
    assert_eq!(
        runner.syncs.get(),
        0,
        "the device path must not synchronize"
    );
    // The result is right after all that reuse.
    inner.synchronize().unwrap();
    let mut out = vec![0f32; n];
    inner.download(&h, &mut out).unwrap();
    for t in [0usize, 1, 2999] {
        let want = 0.1 * (1.0 - 0.9f64.powi(t as i32 + 1)) / 0.1;
        let got = f64::from(out[t * 3]);
        assert!((got - want).abs() < 1e-4, "h[t={t}] = {got}, want {want}");
    }
    // A larger plan grows the workspace.
    let big = DiagShape::new(4, 3000, 3);
    let plan = plan_diagonal(
        big,
        Layout::Btd,
        DType::F64,
        PlanRequest::Chunk(1),
        runner.sm_count(),
    )
    .unwrap();
    ws.reserve(&runner, plan.scratch).unwrap();
    assert!(ws.allocations() > allocs.0);
    assert!(ws.capacity_bytes() >= plan.scratch_bytes());
}

// ---------------------------------------------------------------------------
// The look-back's aggregate path
// ---------------------------------------------------------------------------

/// P4 with inclusive prefixes published only every `n`-th chunk
/// ([`GpuPlan::lookback_prefix_every`]): successors must fold their
/// predecessors' aggregates (across several 32-chunk windows for `n > 32`
/// on `[B,D,T]`), a path that otherwise only timing exercises. Every dtype,
/// both layouts, against the oracle, outputs poisoned first.
pub fn check_lookback_aggregate_path<R: KernelRunner>(runner: &R, label: &str) {
    let start = Instant::now();
    let mut ws = DiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    for (shape, layout) in [
        ((1, 150_000, 1), Layout::Bdt), // 37 chunks of 4096: two windows
        ((2, 2500, 40), Layout::Btd),   // 20 chunks of 128, 2 groups per row
        ((1, 9000, 3), Layout::Btd),    // 71 chunks: windows of one group
    ] {
        let (bsz, t, d) = shape;
        let nc = plan_diagonal(
            DiagShape::new(bsz, t, d),
            layout,
            DType::F32,
            PlanRequest::LookBack,
            runner.sm_count(),
        )
        .map(|p| p.chunks as u32)
        .unwrap_or(1);
        for every in [2u32, 5, 37, nc.max(1)] {
            for (i, dtype) in [DType::F32, DType::F64, DType::F16, DType::Bf16]
                .into_iter()
                .enumerate()
            {
                let seed = 0xabc0 + 64 * u64::from(every) + i as u64 + t as u64;
                let r = match dtype {
                    DType::F32 => {
                        aggregate_path_case::<R, f32>(runner, &mut ws, shape, layout, every, seed)
                    }
                    DType::F64 => {
                        aggregate_path_case::<R, f64>(runner, &mut ws, shape, layout, every, seed)
                    }
                    DType::F16 => {
                        aggregate_path_case::<R, f16>(runner, &mut ws, shape, layout, every, seed)
                    }
                    DType::Bf16 => {
                        aggregate_path_case::<R, bf16>(runner, &mut ws, shape, layout, every, seed)
                    }
                };
                runs += 1;
                if let Err(e) = r {
                    failures.push(e);
                }
            }
        }
    }
    eprintln!(
        "{label}: {runs} look-back aggregate-path runs, {} failure(s), {:.1} s",
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
}

fn aggregate_path_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DiagonalWorkspace,
    (bsz, t, d): (usize, usize, usize),
    layout: Layout,
    every: u32,
    seed: u64,
) -> Result<(), String> {
    let shape = DiagShape::new(bsz, t, d);
    let (a, b, h0) = inputs::<S>(bsz, t, d, seed);
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch: bsz,
        len: t,
        dim: d,
        layout,
    };
    let mut plan = plan_diagonal(
        shape,
        layout,
        S::DTYPE,
        PlanRequest::LookBack,
        runner.sm_count(),
    )
    .map_err(|e| e.to_string())?;
    plan.lookback_prefix_every = every;
    let ctx = format!(
        "{} {} every={every} [{plan}]",
        runner.backend_name(),
        S::DTYPE
    );
    let up = |v: &[S]| runner.upload(v).map_err(|e| format!("{ctx}: {e}"));
    let (da, db, dh0) = (up(&a)?, up(&b)?, up(&h0)?);
    let size = std::mem::size_of::<S>();
    let dh = runner
        .alloc(shape.elements() * size)
        .map_err(|e| e.to_string())?;
    let dht = runner
        .alloc(shape.lanes() * size)
        .map_err(|e| e.to_string())?;
    runner.fill(&dh, 0xFF).map_err(|e| e.to_string())?;
    runner.fill(&dht, 0xFF).map_err(|e| e.to_string())?;
    let bufs = || DiagonalBuffers {
        a: (&da).into(),
        b: (&db).into(),
        h: Some((&dh).into()),
        ends: parascan::kernels::EndBuffers {
            h0: Some((&dh0).into()),
            h_t: (&dht).into(),
        },
    };
    launch_scan_buffers(runner, ws, &plan, bufs()).map_err(|e| format!("{ctx}: {e}"))?;
    runner.synchronize().map_err(|e| format!("{ctx}: {e}"))?;
    let mut h = vec![S::default(); shape.elements()];
    let mut h_t = vec![S::default(); shape.lanes()];
    runner.download(&dh, &mut h).map_err(|e| e.to_string())?;
    runner.download(&dht, &mut h_t).map_err(|e| e.to_string())?;
    let (want, want_t) = oracle::diagonal(&problem);
    let tol = common::tolerance::<S>(t);
    let (e, e_t) = (oracle::rel_l2(&h, &want), oracle::rel_l2(&h_t, &want_t));
    if !(e <= tol && e_t <= tol) {
        return Err(format!(
            "{ctx}: relative L2 error h {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Look-back safety: surplus blocks, withheld publications
// ---------------------------------------------------------------------------

/// Bytes after each scratch buffer that a look-back launch must not touch.
const CANARY: usize = 256;
const CANARY_BYTE: u8 = 0xA5;

/// One P4 launch of `kernel` over f32 inputs of `shape` by hand (the plan's
/// grid plus `extra` blocks), scratch followed by canaries. Returns the
/// launch's result, `(h, h_T)` and whether every canary byte survived.
#[allow(clippy::type_complexity)]
fn lookback_by_hand<R: KernelRunner>(
    runner: &R,
    plan: &GpuPlan,
    kernel: &str,
    extra: u32,
    seed: u64,
) -> Result<(parascan::Result<()>, Vec<f32>, Vec<f32>, bool), String> {
    let e = |x: Error| x.to_string();
    let shape = plan.shape;
    let (a, b, h0) = inputs::<f32>(shape.batch, shape.len, shape.dim, seed);
    let (da, db, dh0) = (
        runner.upload(&a).map_err(e)?,
        runner.upload(&b).map_err(e)?,
        runner.upload(&h0).map_err(e)?,
    );
    let dh = runner.alloc(shape.elements() * 4).map_err(e)?;
    let dht = runner.alloc(shape.lanes() * 4).map_err(e)?;
    let sizes = [plan.scratch.status, plan.scratch.agg, plan.scratch.carry];
    let mut scratch = Vec::new();
    for bytes in sizes {
        let buf = runner.alloc(bytes + CANARY).map_err(e)?;
        runner.fill(&buf, CANARY_BYTE).map_err(e)?;
        scratch.push(buf);
    }
    runner.fill(&dh, 0xFF).map_err(e)?;
    runner.fill(&dht, 0xFF).map_err(e)?;
    let (clear, main) = (plan.launches[0], plan.launches[1]);
    let words = plan.scratch.status / 4;
    unsafe {
        runner.launch(
            clear.kernel,
            clear.cfg,
            &[
                KernelArg::Ptr(scratch[0].ptr()),
                KernelArg::I32(words as i32),
            ],
        )
    }
    .map_err(e)?;
    let mut cfg = main.cfg;
    cfg.grid[0] += extra;
    let i = |x: usize| KernelArg::I32(x as i32);
    let result = unsafe {
        runner.launch(
            kernel,
            cfg,
            &[
                KernelArg::Ptr(da.ptr()),
                KernelArg::Ptr(db.ptr()),
                KernelArg::Ptr(dh.ptr()),
                KernelArg::Ptr(dht.ptr()),
                KernelArg::Ptr(dh0.ptr()),
                KernelArg::Ptr(scratch[0].ptr()),
                KernelArg::Ptr(scratch[1].ptr()),
                KernelArg::Ptr(scratch[2].ptr()),
                i(shape.batch),
                i(shape.len),
                i(shape.dim),
                i(plan.chunk),
                KernelArg::I32(plan.lookback_prefix_every as i32),
            ],
        )
    };
    let result = result.and_then(|()| runner.synchronize());
    let mut h = vec![0f32; shape.elements()];
    let mut h_t = vec![0f32; shape.lanes()];
    runner.download(&dh, &mut h).map_err(e)?;
    runner.download(&dht, &mut h_t).map_err(e)?;
    let mut intact = true;
    for (buf, bytes) in scratch.iter().zip(sizes) {
        let mut all = vec![0u8; bytes + CANARY];
        runner.download(buf, &mut all).map_err(e)?;
        intact &= all[bytes..].iter().all(|&x| x == CANARY_BYTE);
    }
    Ok((result, h, h_t, intact))
}

/// Look-back shapes with several chunks per chain, both layouts.
fn lookback_safety_shapes() -> [((usize, usize, usize), Layout); 3] {
    [
        ((2, 700, 40), Layout::Btd), // 6 chunks of 128, 2 groups per row
        ((1, 1000, 3), Layout::Btd), // 8 chunks, one chain
        ((1, 9000, 1), Layout::Bdt), // 3 chunks of 4096
    ]
}

/// A grid larger than the contract's: the surplus blocks' tickets own no
/// chunk, so they must write nothing (canaries after every scratch buffer)
/// and leave the result exact. Works on any runner.
pub fn check_lookback_surplus_blocks<R: KernelRunner>(runner: &R, label: &str) {
    let mut failures = Vec::new();
    for ((bsz, t, d), layout) in lookback_safety_shapes() {
        let shape = DiagShape::new(bsz, t, d);
        let plan = plan_diagonal(
            shape,
            layout,
            DType::F32,
            PlanRequest::LookBack,
            runner.sm_count(),
        )
        .expect("look-back plan");
        for (extra, every) in [(1u32, 1u32), (7, 1), (33, 2)] {
            let mut plan = plan.clone();
            plan.lookback_prefix_every = every;
            let ctx = format!(
                "{label}: {} +{extra} blocks every={every} [{plan}]",
                plan.launches[1].kernel
            );
            let seed = 0x5_0000 + u64::from(extra) + t as u64;
            match lookback_by_hand(runner, &plan, plan.launches[1].kernel, extra, seed) {
                Err(e) => failures.push(format!("{ctx}: {e}")),
                Ok((Err(e), ..)) => failures.push(format!("{ctx}: launch failed: {e}")),
                Ok((Ok(()), h, h_t, intact)) => {
                    let (a, b, h0) = inputs::<f32>(bsz, t, d, seed);
                    let problem = Diagonal {
                        a: &a,
                        b: &b,
                        h0: Some(&h0),
                        batch: bsz,
                        len: t,
                        dim: d,
                        layout,
                    };
                    let (want, want_t) = oracle::diagonal(&problem);
                    let tol = common::tolerance::<f32>(t);
                    let (e, e_t) = (oracle::rel_l2(&h, &want), oracle::rel_l2(&h_t, &want_t));
                    if !(e <= tol && e_t <= tol) {
                        failures.push(format!("{ctx}: relative L2 error h {e:.3e}, h_T {e_t:.3e}"));
                    }
                    if !intact {
                        failures.push(format!("{ctx}: wrote past the scratch buffers"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The look-back probe kernels (`diag_<L>_lookback_probe_<sfx>`, emulator
/// only) never publish chunk 1 of chain 0: its successors spin until the
/// spin cap and trap, which must surface as a typed launch error.
pub fn check_lookback_withheld_traps<R: KernelRunner>(runner: &R, label: &str) {
    let mut failures = Vec::new();
    for ((bsz, t, d), layout) in lookback_safety_shapes() {
        let shape = DiagShape::new(bsz, t, d);
        let plan = plan_diagonal(
            shape,
            layout,
            DType::F32,
            PlanRequest::LookBack,
            runner.sm_count(),
        )
        .expect("look-back plan");
        assert!(
            plan.chunks >= 3,
            "{plan}: the probe needs a chunk after chunk 1"
        );
        let l = if plan.kernel_layout == Layout::Btd {
            "btd"
        } else {
            "bdt"
        };
        for sfx in ["f32", "depth"] {
            let kernel = format!("diag_{l}_lookback_probe_{sfx}");
            match lookback_by_hand(runner, &plan, &kernel, 0, 0x6_0000 + t as u64) {
                Err(e) => failures.push(format!("{label}: {kernel}: {e}")),
                Ok((Err(Error::Launch { message, .. }), ..)) if message.contains("__trap") => {}
                Ok((r, ..)) => failures.push(format!(
                    "{label}: {kernel} [{plan}]: expected a launch error from __trap(), got {r:?}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
