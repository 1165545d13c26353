//! The PermDiagonal-kernel suite shared by `tests/emu_perm_diagonal.rs`
//! (SIMT emulator) and `tests/cuda_perm_diagonal.rs` (GPU): the
//! orchestration of `parascan::kernels::perm_diagonal` checked on any
//! `KernelRunner` against the f64 oracle.
//!
//! Include it with `mod common; mod perm_diagonal_suite;` (it uses `crate::common`).
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
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::kernels::perm_diagonal::{
    plan_perm_diagonal, PdBuffers, PdGpuPlan, PdIo, PdPlanKind, PdShape, PdTeams, PdWorkspace,
    MAX_CHUNKS, ONE_LEVEL_MAX_CHUNKS,
};
use parascan::kernels::{
    launch_scan, launch_scan_buffers, measure_depth, measure_depth_outputs, scan_host,
};
use parascan::{oracle, DType, Error, PlanRequest, Storage};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::common;

/// Plans and launches in one call on raw addresses (the suite's shorthand).
///
/// # Safety
/// As [`launch_scan`]: every address in `io` is live memory of `runner`
/// of the size its shape implies.
unsafe fn scan_perm_diagonal_device<R: KernelRunner>(
    runner: &R,
    ws: &mut PdWorkspace,
    dtype: DType,
    shape: PdShape,
    io: PdIo,
    request: PlanRequest,
) -> parascan::Result<PdGpuPlan> {
    let plan = plan_perm_diagonal(shape, dtype, request, runner.sm_count())?;
    // SAFETY: forwarded to the caller.
    unsafe { launch_scan(runner, ws, &plan, io) }?;
    Ok(plan)
}

// ---------------------------------------------------------------------------
// A runner that records what the orchestration asks for
// ---------------------------------------------------------------------------

/// Wraps a runner and records launches (in order), allocations and
/// synchronizations: errors must come before any launch or allocation, and
/// the device path must never synchronize.
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
// Inputs
// ---------------------------------------------------------------------------

/// Random PD inputs: `perm` rows uniform permutations of `0..n`, `|d| ∈
/// [0.5, 1)` with a random sign, `b, h0 ∈ [−1, 1)`, rounded to `S`.
pub struct Inputs<S> {
    pub perm: Vec<u8>,
    pub d: Vec<S>,
    pub b: Vec<S>,
    pub h0: Vec<S>,
}

pub fn inputs<S: Storage>(batch: usize, len: usize, n: usize, seed: u64) -> Inputs<S> {
    let mut rng = common::rng(seed);
    let mut perm = Vec::with_capacity(batch * len * n);
    let mut row: Vec<u8> = (0..n).map(|i| i as u8).collect();
    for _ in 0..batch * len {
        row.shuffle(&mut rng);
        perm.extend_from_slice(&row);
    }
    let total = batch * len * n;
    let d = (0..total)
        .map(|_| {
            let m: f64 = rng.gen_range(0.5..1.0);
            S::from_f64(if rng.gen::<bool>() { m } else { -m })
        })
        .collect();
    let b = common::uniform(&mut rng, total, -1.0, 1.0);
    let h0 = common::uniform(&mut rng, batch * n, -1.0, 1.0);
    Inputs { perm, d, b, h0 }
}

impl<S: Storage> Inputs<S> {
    pub fn problem(&self, batch: usize, len: usize, n: usize, h0: bool) -> PermDiagonal<'_, S, u8> {
        PermDiagonal {
            perm: &self.perm,
            d: &self.d,
            b: &self.b,
            h0: h0.then_some(&self.h0[..]),
            batch,
            len,
            n,
        }
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
    pub n: usize,
    pub request: PlanRequest,
    pub h0: bool,
}

impl Case {
    pub fn new((batch, len, n): (usize, usize, usize), request: PlanRequest, h0: bool) -> Self {
        Case {
            batch,
            len,
            n,
            request,
            h0,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "B={} T={} n={} {} {}",
            self.batch,
            self.len,
            self.n,
            self.request,
            if self.h0 { "h0" } else { "no-h0" }
        )
    }
}

/// The plan must be what the request asks for.
pub fn check_plan_shape(case: &Case, plan: &PdGpuPlan) -> Result<(), String> {
    let t = case.len;
    let ok = match case.request {
        PlanRequest::Sequential => plan.kind == PdPlanKind::Sequential,
        PlanRequest::Chunk(c) if c >= t => plan.kind == PdPlanKind::SinglePass && plan.chunk == t,
        PlanRequest::Chunk(c) => {
            let nc = t.div_ceil(c);
            let kind = if nc <= ONE_LEVEL_MAX_CHUNKS {
                PdPlanKind::Chunked
            } else {
                PdPlanKind::TwoLevel
            };
            plan.kind == kind && plan.chunk == c && plan.chunks == nc
        }
        PlanRequest::LookBack => {
            plan.kind == PdPlanKind::LookBack && plan.chunks == t.div_ceil(plan.chunk)
        }
        PlanRequest::MinDepth | PlanRequest::Auto => plan.chunks == t.div_ceil(plan.chunk),
    };
    let launches = match plan.kind {
        PdPlanKind::Sequential | PdPlanKind::SinglePass => 1,
        PdPlanKind::LookBack => 2,
        PdPlanKind::Chunked => 3,
        PdPlanKind::TwoLevel => 5,
    };
    let teams = if case.n <= 32 {
        PdTeams::Small
    } else {
        PdTeams::Wide
    };
    let suffix = format!("_{}", plan.dtype);
    if !ok
        || plan.launches.len() != launches
        || plan.teams != teams
        || !plan
            .launches
            .iter()
            .all(|l| l.kernel.ends_with(&suffix) || l.kernel == "pd_lb_clear")
    {
        return Err(format!("unexpected plan for {}: {plan}", case.describe()));
    }
    Ok(())
}

/// Runs `case` with storage `S` through `scan_host` (outputs
/// poisoned) and compares with the f64 oracle on the same rounded inputs.
pub fn run_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut PdWorkspace,
    case: &Case,
    seed: u64,
) -> Result<PdGpuPlan, String> {
    let ctx = format!(
        "{} {} {} (seed {seed})",
        runner.backend_name(),
        S::DTYPE,
        case.describe()
    );
    let inp = inputs::<S>(case.batch, case.len, case.n, seed);
    let problem = inp.problem(case.batch, case.len, case.n, case.h0);
    let (h, h_t, plan) =
        scan_host(runner, ws, &problem, case.request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    check_plan_shape(case, &plan).map_err(|e| format!("{ctx}: {e}"))?;
    let (want, want_t) = oracle::perm_diagonal(&problem);
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
    // h_T is the very value stored at t = T - 1.
    let (t, n) = (case.len, case.n);
    for bb in 0..case.batch {
        let last = &h[(bb * t + t - 1) * n..(bb * t + t) * n];
        let fin = &h_t[bb * n..(bb + 1) * n];
        if bytemuck::cast_slice::<S, u8>(last) != bytemuck::cast_slice::<S, u8>(fin) {
            return Err(format!(
                "{ctx}: h_T of problem {bb} differs from h at t = T"
            ));
        }
    }
    Ok(plan)
}

/// `run_case` for f32, f64, f16 and bf16.
pub fn run_case_all_dtypes<R: KernelRunner>(
    runner: &R,
    ws: &mut PdWorkspace,
    case: &Case,
    seed: u64,
) -> Result<(), String> {
    run_case::<R, f32>(runner, ws, case, seed)?;
    run_case::<R, f64>(runner, ws, case, seed + 1)?;
    run_case::<R, f16>(runner, ws, case, seed + 2)?;
    run_case::<R, bf16>(runner, ws, case, seed + 3)?;
    Ok(())
}

/// Every request kind: sequential, chunks of one step, an odd and a
/// power-of-two chunk, min-depth, auto and the look-back.
pub const REQUESTS: [PlanRequest; 7] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(1),
    PlanRequest::Chunk(3),
    PlanRequest::Chunk(16),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
    PlanRequest::LookBack,
];

/// The correctness cases: n = 1, 2, 5, 31, 32 (small kernels, every team
/// width) and 33, 64, 100, 256 (wide kernels, 2, 4 and 8 slots per lane);
/// T = 1, odd T below the chunk, T not a multiple of the chunk, T ≫ chunk;
/// `h0` given in every other case.
pub fn standard_cases() -> Vec<Case> {
    use PlanRequest::*;
    let mut cases = Vec::new();
    let mut h0 = false;
    let mut push = |shape, requests: &[PlanRequest]| {
        for &r in requests {
            h0 = !h0;
            cases.push(Case::new(shape, r, h0));
        }
    };
    for n in [2, 5, 64, 256] {
        push((1, 1, n), &REQUESTS);
        push((2, 7, n), &REQUESTS);
        push((3, 37, n), &REQUESTS);
        push((2, 300, n), &REQUESTS);
        // Single pass exactly at T, and one step short of it (a 1-step last chunk).
        push((3, 37, n), &[Chunk(37), Chunk(36), Chunk(64)]);
    }
    for n in [1, 3, 31, 32, 33, 100, 129] {
        push((2, 45, n), &[Sequential, Chunk(4), Chunk(45), LookBack]);
    }
    // The look-back over several chunks (and windows of 32) for every team shape:
    // n = 5 (C = 768), 1 (C = 4096), 32, 64, 100 and 200 (C = 8).
    push((1, 2500, 5), &[LookBack]);
    push((2, 9000, 1), &[LookBack]);
    push((2, 700, 32), &[LookBack]);
    push((2, 1200, 64), &[LookBack]);
    push((1, 600, 100), &[LookBack]);
    push((2, 300, 200), &[LookBack]);
    // Many chunks (deep scan trees; more than 1024 chunks: the two-level scan, with a
    // partial last tile) and many problems (many blocks).
    push((1, 2500, 5), &[Chunk(1), Chunk(2)]);
    push((2, 1200, 64), &[Chunk(1), Chunk(2)]);
    push((2, 1100, 200), &[Chunk(1)]);
    push((3, 5000, 2), &[Chunk(1)]);
    push((40, 20, 5), &[Chunk(3), Sequential]);
    cases
}

/// Runs every case for every dtype, collecting failures; panics listing
/// them, or when a plan kind (P0–P3) or team shape was not covered.
pub fn run_cases<R: KernelRunner>(runner: &R, cases: &[Case], seed: u64, label: &str) {
    let start = Instant::now();
    let mut ws = PdWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 5];
    let mut teams = [0usize; 2];
    for (i, case) in cases.iter().enumerate() {
        let case_start = Instant::now();
        if let Err(e) = run_case_all_dtypes(runner, &mut ws, case, seed + 16 * i as u64) {
            failures.push(e);
        }
        if let Ok(p) = plan_perm_diagonal(
            PdShape::new(case.batch, case.len, case.n),
            DType::F32,
            case.request,
            runner.sm_count(),
        ) {
            kinds[p.kind as usize] += 1;
            teams[p.teams as usize] += 1;
        }
        let dt = case_start.elapsed().as_secs_f64();
        if dt > 2.0 {
            eprintln!("  slow case ({dt:.1} s): {}", case.describe());
        }
    }
    eprintln!(
        "{label}: {} cases x 4 dtypes, plans P0..P4 = {kinds:?}, small/wide = {teams:?}, \
         {} failure(s), {:.1} s",
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
    assert!(
        kinds.iter().chain(&teams).all(|&k| k > 0),
        "{label}: every plan kind and team shape must be covered: P0..P4 = {kinds:?}, \
         small/wide = {teams:?}"
    );
}

/// With `h = None` only `h_T` is written, bit-identical to a full run's.
pub fn check_final_state_only<R: KernelRunner>(runner: &R) {
    let mut ws = PdWorkspace::new();
    for n in [5, 64] {
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(5000),
            PlanRequest::Chunk(10),
            PlanRequest::Chunk(1),
        ] {
            let (batch, len) = (2, 300);
            let inp = inputs::<f32>(batch, len, n, 99);
            let problem = inp.problem(batch, len, n, true);
            let (_, full_t, plan) = scan_host(runner, &mut ws, &problem, request).unwrap();
            let dp = runner.upload(&inp.perm).unwrap();
            let dd = runner.upload(&inp.d).unwrap();
            let db = runner.upload(&inp.b).unwrap();
            let dh0 = runner.upload(&inp.h0).unwrap();
            let dht = runner.alloc(batch * n * 4).unwrap();
            runner.fill(&dht, 0xFF).unwrap();
            let io = PdIo {
                perm: dp.ptr(),
                d: dd.ptr(),
                b: db.ptr(),
                h: None,
                ends: parascan::kernels::Ends {
                    h0: Some(dh0.ptr()),
                    h_t: dht.ptr(),
                },
            };
            unsafe { launch_scan(runner, &mut ws, &plan, io) }.unwrap();
            runner.synchronize().unwrap();
            let mut got = vec![0f32; batch * n];
            runner.download(&dht, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&full_t), "h = None changed h_T: {plan}");
        }
    }
}

/// The device path cannot check permutations; the kernels clamp every
/// index to `n − 1` instead of reading out of bounds. A problem whose
/// `perm` bytes are all ≥ n must give exactly the oracle of the clamped
/// permutation (`h_t[i] = d_t[i] · h_{t−1}[n−1] + b_t[i]`).
pub fn check_bad_perm_is_clamped<R: KernelRunner>(runner: &R) {
    let mut ws = PdWorkspace::new();
    for n in [5, 64] {
        for request in [PlanRequest::Sequential, PlanRequest::Chunk(4)] {
            let (batch, len) = (2, 30);
            let mut inp = inputs::<f32>(batch, len, n, 7);
            let bad: Vec<u8> = (0..batch * len * n)
                .map(|i| (n + i % (256 - n)) as u8)
                .collect();
            inp.perm = vec![(n - 1) as u8; batch * len * n];
            let (want, want_t) = oracle::perm_diagonal(&inp.problem(batch, len, n, true));
            let shape = PdShape::new(batch, len, n);
            let dp = runner.upload(&bad).unwrap();
            let dd = runner.upload(&inp.d).unwrap();
            let db = runner.upload(&inp.b).unwrap();
            let dh0 = runner.upload(&inp.h0).unwrap();
            let dh = runner.alloc(shape.elements() * 4).unwrap();
            let dht = runner.alloc(shape.states() * 4).unwrap();
            let io = PdIo {
                perm: dp.ptr(),
                d: dd.ptr(),
                b: db.ptr(),
                h: Some(dh.ptr()),
                ends: parascan::kernels::Ends {
                    h0: Some(dh0.ptr()),
                    h_t: dht.ptr(),
                },
            };
            let plan = unsafe {
                scan_perm_diagonal_device(runner, &mut ws, DType::F32, shape, io, request)
            }
            .unwrap();
            runner.synchronize().unwrap();
            let mut h = vec![0f32; shape.elements()];
            let mut h_t = vec![0f32; shape.states()];
            runner.download(&dh, &mut h).unwrap();
            runner.download(&dht, &mut h_t).unwrap();
            let tol = common::tolerance::<f32>(len);
            let (e, e_t) = (oracle::rel_l2(&h, &want), oracle::rel_l2(&h_t, &want_t));
            assert!(e <= tol && e_t <= tol, "{plan}: {e:.3e} {e_t:.3e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Measured depth
// ---------------------------------------------------------------------------

/// Runs the `_depth` kernels for `plan` and checks every output (every
/// problem, step and slot) against the per-step formula, `h_T` against the
/// last step's, and the maximum against `plan.depth`.
pub fn check_depth<R: KernelRunner>(
    runner: &R,
    ws: &mut PdWorkspace,
    plan: &PdGpuPlan,
) -> Result<u64, String> {
    let ctx = format!("{} depth [{plan}]", runner.backend_name());
    let (h, h_t) = measure_depth_outputs(runner, ws, plan).map_err(|e| format!("{ctx}: {e}"))?;
    let PdShape { batch, len, n } = plan.shape;
    let formula: Vec<u64> = (0..len).map(|t| plan.depth_at(t)).collect();
    let mut bad = Vec::new();
    for bb in 0..batch {
        for (t, &want) in formula.iter().enumerate() {
            for i in 0..n {
                let got = h[(bb * len + t) * n + i];
                if u64::from(got) != want && bad.len() < 5 {
                    bad.push(format!("h[b={bb}, t={t}, i={i}] = {got}, formula {want}"));
                }
            }
        }
        for i in 0..n {
            let got = h_t[bb * n + i];
            if u64::from(got) != formula[len - 1] && bad.len() < 5 {
                bad.push(format!(
                    "h_T[b={bb}, i={i}] = {got}, formula {}",
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

/// Depth plans: several `T`, `C`, `n`, every plan kind and team shape.
pub fn depth_plans(sm_count: usize) -> Vec<PdGpuPlan> {
    use PlanRequest::*;
    let specs: &[((usize, usize, usize), PlanRequest)] = &[
        ((1, 1024, 5), Chunk(64)),
        ((2, 1000, 3), Chunk(7)),
        ((1, 2500, 2), Chunk(1)),
        ((2, 1500, 64), Chunk(1)),
        ((1, 5000, 3), Chunk(2)),
        ((1, 77, 5), Sequential),
        ((1, 77, 64), Sequential),
        ((1, 77, 5), Chunk(100)),
        ((2, 600, 64), MinDepth),
        ((2, 3000, 5), Auto),
        ((1, 300, 256), Chunk(3)),
        ((3, 200, 100), Chunk(16)),
        ((1, 1, 8), Auto),
        ((1, 9, 40), MinDepth),
        ((1, 2000, 5), LookBack),
        ((2, 9000, 1), LookBack),
        ((2, 700, 64), LookBack),
        ((1, 300, 100), LookBack),
        ((2, 100, 256), LookBack),
        ((3, 7, 3), LookBack),
    ];
    specs
        .iter()
        .map(|&((b, t, n), r)| {
            plan_perm_diagonal(PdShape::new(b, t, n), DType::F32, r, sm_count)
                .unwrap_or_else(|e| panic!("plan B={b} T={t} n={n} {r}: {e}"))
        })
        .collect()
}

pub fn run_depth_plans<R: KernelRunner>(runner: &R, label: &str) {
    let start = Instant::now();
    let mut ws = PdWorkspace::new();
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

/// Every bad input is a typed error naming the argument, before any launch
/// or allocation.
pub fn check_errors<R: KernelRunner>(inner: &R) {
    let runner = Recorder::new(inner);
    let mut ws = PdWorkspace::new();
    let (bsz, t, n) = (2usize, 10usize, 5usize);
    let total = bsz * t * n;
    // perm = identity, d = 0.5, b = 0.25.
    let perm: Vec<u8> = (0..total).map(|i| (i % n) as u8).collect();
    let d = vec![0.5f32; total];
    let x = vec![0.25f32; total];
    let h0 = vec![1.0f32; bsz * n];
    let good = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &x,
        h0: Some(&h0),
        batch: bsz,
        len: t,
        n,
    };
    let scan =
        |p: &PermDiagonal<'_, f32, u8>, ws: &mut PdWorkspace, r| scan_host(&runner, ws, p, r);
    // Invalid permutations: a repeated index and an index out of range.
    let mut repeated = perm.clone();
    repeated[3 * n + 1] = repeated[3 * n];
    match scan(
        &PermDiagonal {
            perm: &repeated,
            ..good
        },
        &mut ws,
        PlanRequest::Auto,
    ) {
        Err(Error::NotPermutation {
            batch: 0, step: 3, ..
        }) => {}
        other => panic!("expected NotPermutation at (0, 3), got {other:?}"),
    }
    let mut out_of_range = perm.clone();
    out_of_range[(t + 7) * n + 2] = n as u8;
    match scan(
        &PermDiagonal {
            perm: &out_of_range,
            ..good
        },
        &mut ws,
        PlanRequest::Chunk(3),
    ) {
        Err(Error::NotPermutation {
            batch: 1, step: 7, ..
        }) => {}
        other => panic!("expected NotPermutation at (1, 7), got {other:?}"),
    }
    let short_f = vec![0.5f32; total - 1];
    let short_p = vec![0u8; total - 1];
    expect_shape_error(
        scan(
            &PermDiagonal {
                perm: &short_p,
                ..good
            },
            &mut ws,
            PlanRequest::Auto,
        ),
        "perm",
    );
    expect_shape_error(
        scan(
            &PermDiagonal {
                d: &short_f,
                ..good
            },
            &mut ws,
            PlanRequest::Auto,
        ),
        "d",
    );
    expect_shape_error(
        scan(
            &PermDiagonal {
                b: &short_f,
                ..good
            },
            &mut ws,
            PlanRequest::Auto,
        ),
        "b",
    );
    expect_shape_error(
        scan(
            &PermDiagonal {
                h0: Some(&h0[1..]),
                ..good
            },
            &mut ws,
            PlanRequest::Auto,
        ),
        "h0",
    );
    for (arg, bad) in [
        (
            "len",
            PermDiagonal {
                len: 0,
                perm: &[],
                d: &[],
                b: &[],
                ..good
            },
        ),
        (
            "batch",
            PermDiagonal {
                batch: 0,
                perm: &[],
                d: &[],
                b: &[],
                h0: None,
                ..good
            },
        ),
        (
            "n",
            PermDiagonal {
                n: 0,
                perm: &[],
                d: &[],
                b: &[],
                h0: None,
                ..good
            },
        ),
        ("n", PermDiagonal { n: 257, ..good }),
    ] {
        expect_size_error(scan(&bad, &mut ws, PlanRequest::Auto), arg);
    }
    assert!(matches!(
        scan(&good, &mut ws, PlanRequest::Chunk(0)),
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
    let dp = inner.upload(&perm).unwrap();
    let dd = inner.upload(&d).unwrap();
    let db = inner.upload(&x).unwrap();
    let dh0 = inner.upload(&h0).unwrap();
    let dh = inner.alloc(total * 4).unwrap();
    let dht = inner.alloc(bsz * n * 4).unwrap();
    let dshort = inner.alloc((total - 1) * 4).unwrap();
    let dperm_f32 = inner.alloc(total * 4).unwrap();
    let dbn_short = inner.alloc((bsz * n - 1) * 4).unwrap();
    let shape = PdShape::new(bsz, t, n);
    let plan =
        plan_perm_diagonal(shape, DType::F32, PlanRequest::Chunk(3), runner.sm_count()).unwrap();
    let bufs = || PdBuffers {
        perm: (&dp).into(),
        d: (&dd).into(),
        b: (&db).into(),
        h: Some((&dh).into()),
        ends: parascan::kernels::EndBuffers {
            h0: Some((&dh0).into()),
            h_t: (&dht).into(),
        },
    };
    for (arg, bad) in [
        (
            "perm",
            PdBuffers {
                perm: (&dperm_f32).into(),
                ..bufs()
            },
        ),
        (
            "d",
            PdBuffers {
                d: (&dshort).into(),
                ..bufs()
            },
        ),
        (
            "b",
            PdBuffers {
                b: (&dshort).into(),
                ..bufs()
            },
        ),
        (
            "h",
            PdBuffers {
                h: Some((&dshort).into()),
                ..bufs()
            },
        ),
        (
            "h0",
            PdBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: Some((&dbn_short).into()),
                    ..bufs().ends
                },
                ..bufs()
            },
        ),
        (
            "h_t",
            PdBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: None,
                    h_t: (&dbn_short).into(),
                },
                ..bufs()
            },
        ),
    ] {
        expect_shape_error(launch_scan_buffers(&runner, &mut ws, &plan, bad), arg);
    }
    // A plan for f64 needs twice the bytes.
    let plan64 =
        plan_perm_diagonal(shape, DType::F64, PlanRequest::Chunk(3), runner.sm_count()).unwrap();
    expect_shape_error(launch_scan_buffers(&runner, &mut ws, &plan64, bufs()), "d");

    // Raw pointers: null, misaligned, overlapping.
    let io = PdIo {
        perm: dp.ptr(),
        d: dd.ptr(),
        b: db.ptr(),
        h: Some(dh.ptr()),
        ends: parascan::kernels::Ends {
            h0: Some(dh0.ptr()),
            h_t: dht.ptr(),
        },
    };
    for (arg, bad) in [
        ("perm", PdIo { perm: 0, ..io }),
        ("d", PdIo { d: 0, ..io }),
        (
            "h_t",
            PdIo {
                ends: parascan::kernels::Ends { h_t: 0, ..io.ends },
                ..io
            },
        ),
        (
            "b",
            PdIo {
                b: db.ptr() + 2,
                ..io
            },
        ),
        (
            "h",
            PdIo {
                h: Some(dd.ptr() + 8),
                ..io
            },
        ),
        (
            "h_t",
            PdIo {
                ends: parascan::kernels::Ends {
                    h0: None,
                    h_t: dh.ptr() + 4 * (total as u64 - 1),
                },
                ..io
            },
        ),
    ] {
        expect_size_error(unsafe { launch_scan(&runner, &mut ws, &plan, bad) }, arg);
    }
    // Shapes the kernels cannot take, through the device entry point.
    assert!(matches!(
        unsafe {
            scan_perm_diagonal_device(
                &runner,
                &mut ws,
                DType::F32,
                PdShape::new(1, MAX_CHUNKS + 1, 2),
                io,
                PlanRequest::Chunk(1),
            )
        },
        Err(Error::Plan(_))
    ));
    for (arg, bad_shape) in [
        ("len", PdShape::new(1, 1 << 31, 1)),
        ("n", PdShape::new(2, 10, 0)),
        ("n", PdShape::new(2, 10, 300)),
        ("batch", PdShape::new(0, 10, 3)),
    ] {
        expect_size_error(
            unsafe {
                scan_perm_diagonal_device(
                    &runner,
                    &mut ws,
                    DType::F32,
                    bad_shape,
                    io,
                    PlanRequest::Auto,
                )
            },
            arg,
        );
    }
    // Tampered plans.
    let mut tampered = plan.clone();
    tampered.chunk = 2;
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &tampered, io) },
        Err(Error::Plan(_))
    ));
    let mut tampered = plan.clone();
    tampered.tree = 2;
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &tampered, io) },
        Err(Error::Plan(_))
    ));
    assert_eq!(
        runner.launch_count(),
        0,
        "a launch happened before an error"
    );

    // The good call still works, with exactly the plan's launches.
    launch_scan_buffers(&runner, &mut ws, &plan, bufs()).unwrap();
    let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel).collect();
    assert_eq!(*runner.launches.borrow(), names);
    assert_eq!(
        runner.syncs.get(),
        0,
        "the device path must not synchronize"
    );
    inner.synchronize().unwrap();
    let mut out = vec![0f32; bsz * n];
    inner.download(&dht, &mut out).unwrap();
    // Identity perm, d = 0.5, b = 0.25 from h0 = 1: h_t = 0.5 + 0.5^11.
    let want = 0.5 + 0.5 * 0.5f32.powi(10);
    assert!(
        out.iter().all(|&v| (v - want).abs() < 1e-6),
        "{out:?} vs {want}"
    );
}

/// Launch order, no synchronization and no allocation once warm.
pub fn check_workspace_reuse<R: KernelRunner>(inner: &R) {
    let runner = Recorder::new(inner);
    let mut ws = PdWorkspace::new();
    let shape = PdShape::new(2, 1500, 5);
    let total = shape.elements();
    // A cyclic shift: slot i reads slot i+1; with d = 0.9, b = 0.1 every slot
    // follows h_t = 0.9 h_{t-1} + 0.1 from zeros.
    let perm: Vec<u8> = (0..total).map(|i| ((i % 5 + 1) % 5) as u8).collect();
    let dp = inner.upload(&perm).unwrap();
    let dd = inner.upload(&vec![0.9f32; total]).unwrap();
    let db = inner.upload(&vec![0.1f32; total]).unwrap();
    let dh = inner.alloc(total * 4).unwrap();
    let dht = inner.alloc(shape.states() * 4).unwrap();
    let io = PdIo {
        perm: dp.ptr(),
        d: dd.ptr(),
        b: db.ptr(),
        h: Some(dh.ptr()),
        ends: parascan::kernels::Ends {
            h0: None,
            h_t: dht.ptr(),
        },
    };
    let run = |ws: &mut PdWorkspace, request| {
        let before = runner.launch_count();
        let plan =
            unsafe { scan_perm_diagonal_device(&runner, ws, DType::F32, shape, io, request) }
                .unwrap();
        let issued: Vec<String> = runner.launches.borrow()[before..].to_vec();
        let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel).collect();
        assert_eq!(issued, names, "launch order of {plan}");
        plan
    };
    let first = run(&mut ws, PlanRequest::Chunk(1));
    assert_eq!(first.kind, PdPlanKind::TwoLevel);
    assert!(ws.capacity_bytes() >= first.scratch_bytes());
    let allocs = (ws.allocations(), runner.allocs.get());
    for request in [
        PlanRequest::Chunk(1),
        PlanRequest::Chunk(7),
        PlanRequest::Chunk(100),
        PlanRequest::Sequential,
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
    inner.synchronize().unwrap();
    let mut out = vec![0f32; total];
    inner.download(&dh, &mut out).unwrap();
    for t in [0usize, 1, 1499] {
        let want = 1.0 - 0.9f64.powi(t as i32 + 1);
        for i in 0..5 {
            let got = f64::from(out[t * 5 + i]);
            assert!(
                (got - want).abs() < 1e-4,
                "h[t={t}, i={i}] = {got}, want {want}"
            );
        }
    }
    // A larger plan grows the workspace.
    let plan = plan_perm_diagonal(
        PdShape::new(4, 1000, 64),
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
// The family-independent face (what `check` and `sweep` drive)
// ---------------------------------------------------------------------------

/// `KernelScan` on a PD problem: the plan summary matches the planner, the
/// scan matches the oracle, the measured depth matches the formula, and a
/// prepared run writes the same outputs as `kernel_scan`.
pub fn check_kernel_scan<R: KernelRunner>(runner: &R) {
    use parascan::kernels::KernelScan;
    for (n, request) in [(5, PlanRequest::Chunk(9)), (64, PlanRequest::Auto)] {
        let (batch, len) = (2, 200);
        let inp = inputs::<f32>(batch, len, n, 0x77 + n as u64);
        let problem = inp.problem(batch, len, n, true);
        let summary = problem.kernel_plan(runner.sm_count(), request).unwrap();
        let plan = plan_perm_diagonal(
            PdShape::new(batch, len, n),
            DType::F32,
            request,
            runner.sm_count(),
        )
        .unwrap();
        assert_eq!(summary, plan.summary());
        assert_eq!(summary.chunks, len.div_ceil(summary.chunk));
        let outputs = problem.kernel_scan(runner, request).unwrap();
        assert_eq!(outputs.plan, summary);
        let (want, want_t) = oracle::perm_diagonal(&problem);
        let tol = common::tolerance::<f32>(len);
        assert!(oracle::rel_l2(&outputs.out, &want) <= tol, "{plan}");
        assert!(oracle::rel_l2(&outputs.h_last, &want_t) <= tol, "{plan}");
        assert_eq!(
            problem.kernel_depth(runner, request).unwrap(),
            summary.depth_formula
        );
        let (prepared, mut run) = problem.kernel_prepare(runner, request).unwrap();
        assert_eq!(prepared, summary);
        run().unwrap();
        run().unwrap();
        runner.synchronize().unwrap();
        // Invalid permutations are refused by every method, before any launch.
        let mut bad = inp.perm.clone();
        bad[n] = bad[n + 1];
        let bad_problem = PermDiagonal {
            perm: &bad,
            ..problem
        };
        let rec = Recorder::new(runner);
        assert!(matches!(
            bad_problem.kernel_plan(rec.sm_count(), request),
            Err(Error::NotPermutation { .. })
        ));
        assert!(matches!(
            bad_problem.kernel_scan(&rec, request),
            Err(Error::NotPermutation { .. })
        ));
        assert!(matches!(
            bad_problem.kernel_depth(&rec, request),
            Err(Error::NotPermutation { .. })
        ));
        assert!(bad_problem.kernel_prepare(&rec, request).is_err());
        assert_eq!((rec.launch_count(), rec.allocs.get()), (0, 0));
    }
}

// ---------------------------------------------------------------------------
// The S5 word problem, exactly
// ---------------------------------------------------------------------------

/// The S5 word problem (SPEC §6) on the kernels: `d = 1`, `b = 0`,
/// `h0 = (0, 1, 2, 3, 4)`, so `h_t` is `h0` permuted by the composition of
/// the first `t` permutations (`h_t[i] = h_{t−1}[π_t(i)]`). Small integers
/// are exact in every dtype, so every output must equal direct composition
/// bit for bit, under every plan (P0–P3).
pub fn check_s5_exact<R: KernelRunner>(runner: &R) {
    fn run<R: KernelRunner, S: Storage + bytemuck::Pod>(runner: &R) {
        let (batch, len, n) = (3, 2100, 5);
        let inp = inputs::<S>(batch, len, n, 0x55);
        let ones = vec![S::from_f64(1.0); batch * len * n];
        let zeros = vec![S::from_f64(0.0); batch * len * n];
        let h0: Vec<S> = (0..batch * n)
            .map(|k| S::from_f64((k % n) as f64))
            .collect();
        let problem = PermDiagonal {
            perm: &inp.perm,
            d: &ones,
            b: &zeros,
            h0: Some(&h0),
            batch,
            len,
            n,
        };
        // Direct composition on integers.
        let mut want = Vec::with_capacity(batch * len * n);
        for bb in 0..batch {
            let mut h: Vec<usize> = (0..n).collect();
            for t in 0..len {
                let row = &inp.perm[(bb * len + t) * n..(bb * len + t + 1) * n];
                h = row.iter().map(|&p| h[p as usize]).collect();
                want.extend(h.iter().map(|&x| x as f64));
            }
        }
        let mut ws = PdWorkspace::new();
        let mut kinds = [0usize; 5];
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(len),
            PlanRequest::Chunk(7),
            PlanRequest::Chunk(1),
            PlanRequest::MinDepth,
            PlanRequest::LookBack,
        ] {
            let (h, h_t, plan) = scan_host(runner, &mut ws, &problem, request).unwrap();
            kinds[plan.kind as usize] += 1;
            let got: Vec<f64> = h.iter().map(|x| x.to_f64()).collect();
            if let Some(k) = (0..got.len()).find(|&k| got[k] != want[k]) {
                panic!(
                    "{plan}: h[{k}] = {}, direct composition {}",
                    got[k], want[k]
                );
            }
            for bb in 0..batch {
                let last = (bb * len + len - 1) * n;
                for i in 0..n {
                    assert_eq!(h_t[bb * n + i].to_f64(), want[last + i], "{plan}");
                }
            }
        }
        assert!(kinds.iter().all(|&k| k > 0), "P0..P4 = {kinds:?}");
    }
    run::<R, f32>(runner);
    run::<R, bf16>(runner);
}

/// Nothing is written outside `h` and `h_T`: both sit inside larger buffers
/// whose guard bytes must come back untouched (small and wide kernels, a
/// partial last chunk, P0–P3).
pub fn check_no_writes_outside<R: KernelRunner>(runner: &R) {
    const GUARD: usize = 4096;
    const FILL: u8 = 0xA5;
    let mut ws = PdWorkspace::new();
    for n in [5, 33] {
        let shape = PdShape::new(3, 1103, n);
        let inp = inputs::<f32>(shape.batch, shape.len, n, 0x99);
        let (want, want_t) = oracle::perm_diagonal(&inp.problem(shape.batch, shape.len, n, true));
        let dp = runner.upload(&inp.perm).unwrap();
        let dd = runner.upload(&inp.d).unwrap();
        let db = runner.upload(&inp.b).unwrap();
        let dh0 = runner.upload(&inp.h0).unwrap();
        let (h_bytes, t_bytes) = (shape.elements() * 4, shape.states() * 4);
        let dh = runner.alloc(h_bytes + 2 * GUARD).unwrap();
        let dht = runner.alloc(t_bytes + 2 * GUARD).unwrap();
        for request in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(2000),
            PlanRequest::Chunk(10),
            PlanRequest::Chunk(1),
        ] {
            runner.fill(&dh, FILL).unwrap();
            runner.fill(&dht, FILL).unwrap();
            let io = PdIo {
                perm: dp.ptr(),
                d: dd.ptr(),
                b: db.ptr(),
                h: Some(dh.ptr() + GUARD as u64),
                ends: parascan::kernels::Ends {
                    h0: Some(dh0.ptr()),
                    h_t: dht.ptr() + GUARD as u64,
                },
            };
            let plan = unsafe {
                scan_perm_diagonal_device(runner, &mut ws, DType::F32, shape, io, request)
            }
            .unwrap();
            runner.synchronize().unwrap();
            let mut h = vec![0u8; h_bytes + 2 * GUARD];
            let mut h_t = vec![0u8; t_bytes + 2 * GUARD];
            runner.download(&dh, &mut h).unwrap();
            runner.download(&dht, &mut h_t).unwrap();
            for (name, buf, len) in [("h", &h, h_bytes), ("h_T", &h_t, t_bytes)] {
                let outside = buf[..GUARD].iter().chain(&buf[GUARD + len..]);
                assert!(
                    outside.into_iter().all(|&x| x == FILL),
                    "{plan}: a guard byte around {name} was written"
                );
            }
            let vals: &[f32] = bytemuck::cast_slice(&h[GUARD..GUARD + h_bytes]);
            let vals_t: &[f32] = bytemuck::cast_slice(&h_t[GUARD..GUARD + t_bytes]);
            let tol = common::tolerance::<f32>(shape.len);
            let (e, e_t) = (oracle::rel_l2(vals, &want), oracle::rel_l2(vals_t, &want_t));
            assert!(e <= tol && e_t <= tol, "{plan}: {e:.3e} {e_t:.3e}");
        }
    }
}

// ---------------------------------------------------------------------------
// The look-back (P4): aggregate path, surplus blocks, withheld publications
// ---------------------------------------------------------------------------

/// Look-back shapes with several chunks per problem, every team shape: more
/// than 32 chunks (several windows) for n = 64 and n = 200.
pub fn lookback_shapes() -> [(usize, usize, usize); 4] {
    [
        (2, 2000, 5),  // 3 chunks of 768 (6 teams per warp)
        (1, 2500, 64), // 40 chunks of 64: two windows
        (2, 400, 200), // 50 chunks of 8, one step per team
        (1, 700, 100), // 22 chunks of 32
    ]
}

/// P4 with inclusive prefixes published only every `n`-th chunk
/// ([`PdGpuPlan::lookback_prefix_every`]): successors must fold their
/// predecessors' aggregates (across several 32-chunk windows), a path that
/// otherwise only timing exercises. Every dtype, against the oracle,
/// outputs poisoned first.
pub fn check_lookback_aggregate_path<R: KernelRunner>(runner: &R, label: &str) {
    let start = Instant::now();
    let mut ws = PdWorkspace::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    for (bsz, t, n) in lookback_shapes() {
        let nc = plan_perm_diagonal(
            PdShape::new(bsz, t, n),
            DType::F32,
            PlanRequest::LookBack,
            runner.sm_count(),
        )
        .map(|p| p.chunks as u32)
        .unwrap_or(1);
        for every in [2u32, 5, 37, nc.max(1)] {
            let seed = 0xabc0 + 64 * u64::from(every) + t as u64 + n as u64;
            let case = Case::new((bsz, t, n), PlanRequest::LookBack, every % 2 == 0);
            let r = aggregate_path_case::<R, f32>(runner, &mut ws, &case, every, seed)
                .and_then(|()| {
                    aggregate_path_case::<R, f64>(runner, &mut ws, &case, every, seed + 1)
                })
                .and_then(|()| {
                    aggregate_path_case::<R, f16>(runner, &mut ws, &case, every, seed + 2)
                })
                .and_then(|()| {
                    aggregate_path_case::<R, bf16>(runner, &mut ws, &case, every, seed + 3)
                });
            runs += 1;
            if let Err(e) = r {
                failures.push(e);
            }
        }
    }
    eprintln!(
        "{label}: {runs} look-back aggregate-path runs x 4 dtypes, {} failure(s), {:.1} s",
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
}

fn aggregate_path_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut PdWorkspace,
    case: &Case,
    every: u32,
    seed: u64,
) -> Result<(), String> {
    let (bsz, t, n) = (case.batch, case.len, case.n);
    let shape = PdShape::new(bsz, t, n);
    let inp = inputs::<S>(bsz, t, n, seed);
    let problem = inp.problem(bsz, t, n, case.h0);
    let mut plan = plan_perm_diagonal(shape, S::DTYPE, PlanRequest::LookBack, runner.sm_count())
        .map_err(|e| e.to_string())?;
    plan.lookback_prefix_every = every;
    let ctx = format!("{} {} [{plan}]", runner.backend_name(), S::DTYPE);
    let e = |x: Error| format!("{ctx}: {x}");
    let dp = runner.upload(&inp.perm).map_err(e)?;
    let dd = runner.upload(&inp.d).map_err(e)?;
    let db = runner.upload(&inp.b).map_err(e)?;
    let dh0 = runner.upload(&inp.h0).map_err(e)?;
    let size = std::mem::size_of::<S>();
    let dh = runner.alloc(shape.elements() * size).map_err(e)?;
    let dht = runner.alloc(shape.states() * size).map_err(e)?;
    runner.fill(&dh, 0xFF).map_err(e)?;
    runner.fill(&dht, 0xFF).map_err(e)?;
    let bufs = PdBuffers {
        perm: (&dp).into(),
        d: (&dd).into(),
        b: (&db).into(),
        h: Some((&dh).into()),
        ends: parascan::kernels::EndBuffers {
            h0: case.h0.then_some((&dh0).into()),
            h_t: (&dht).into(),
        },
    };
    launch_scan_buffers(runner, ws, &plan, bufs).map_err(e)?;
    runner.synchronize().map_err(e)?;
    let mut h = vec![S::default(); shape.elements()];
    let mut h_t = vec![S::default(); shape.states()];
    runner.download(&dh, &mut h).map_err(e)?;
    runner.download(&dht, &mut h_t).map_err(e)?;
    let (want, want_t) = oracle::perm_diagonal(&problem);
    let tol = common::tolerance::<S>(t);
    let (err, err_t) = (oracle::rel_l2(&h, &want), oracle::rel_l2(&h_t, &want_t));
    if !(err <= tol && err_t <= tol) {
        return Err(format!(
            "{ctx}: relative L2 error h {err:.3e}, h_T {err_t:.3e} > {tol:.3e}"
        ));
    }
    Ok(())
}

/// Bytes after each scratch buffer that a look-back launch must not touch.
const CANARY: usize = 256;
const CANARY_BYTE: u8 = 0xA5;

/// One P4 launch of `kernel` over f32 inputs by hand (the plan's grid plus
/// `extra` blocks), scratch followed by canaries. Returns the launch's
/// result, `(h, h_T)` and whether every canary byte survived.
#[allow(clippy::type_complexity)]
fn lookback_by_hand<R: KernelRunner>(
    runner: &R,
    plan: &PdGpuPlan,
    kernel: &str,
    extra: u32,
    seed: u64,
) -> Result<(parascan::Result<()>, Vec<f32>, Vec<f32>, bool), String> {
    let e = |x: Error| x.to_string();
    let PdShape { batch, len, n } = plan.shape;
    let inp = inputs::<f32>(batch, len, n, seed);
    let dp = runner.upload(&inp.perm).map_err(e)?;
    let dd = runner.upload(&inp.d).map_err(e)?;
    let db = runner.upload(&inp.b).map_err(e)?;
    let dh0 = runner.upload(&inp.h0).map_err(e)?;
    let dh = runner.alloc(plan.shape.elements() * 4).map_err(e)?;
    let dht = runner.alloc(plan.shape.states() * 4).map_err(e)?;
    let sc = plan.scratch;
    let sizes = [sc.status, sc.agg_perm, sc.agg_d, sc.agg_b, sc.carry];
    let mut scratch = Vec::new();
    for bytes in sizes {
        let buf = runner.alloc(bytes + CANARY).map_err(e)?;
        runner.fill(&buf, CANARY_BYTE).map_err(e)?;
        scratch.push(buf);
    }
    runner.fill(&dh, 0xFF).map_err(e)?;
    runner.fill(&dht, 0xFF).map_err(e)?;
    let (clear, main) = (plan.launches[0], plan.launches[1]);
    let i = |x: usize| KernelArg::I32(x as i32);
    unsafe {
        runner.launch(
            clear.kernel,
            clear.cfg,
            &[KernelArg::Ptr(scratch[0].ptr()), i(sc.status / 4)],
        )
    }
    .map_err(e)?;
    let mut cfg = main.cfg;
    cfg.grid[0] += extra;
    let p = |b: &DeviceBuffer| KernelArg::Ptr(b.ptr());
    let result = unsafe {
        runner.launch(
            kernel,
            cfg,
            &[
                p(&dp),
                p(&dd),
                p(&db),
                p(&dh),
                p(&dht),
                p(&dh0),
                p(&scratch[0]),
                p(&scratch[1]),
                p(&scratch[2]),
                p(&scratch[3]),
                p(&scratch[4]),
                i(batch),
                i(len),
                i(n),
                i(plan.chunk),
                KernelArg::I32(plan.lookback_prefix_every as i32),
            ],
        )
    };
    let result = result.and_then(|()| runner.synchronize());
    let mut h = vec![0f32; plan.shape.elements()];
    let mut h_t = vec![0f32; plan.shape.states()];
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

/// A grid larger than the contract's: the surplus blocks' tickets own no
/// chunk, so they must write nothing (canaries after every scratch buffer)
/// and leave the result exact. Works on any runner.
pub fn check_lookback_surplus_blocks<R: KernelRunner>(runner: &R, label: &str) {
    let mut failures = Vec::new();
    for (bsz, t, n) in [(2, 2000, 5), (1, 300, 64), (2, 50, 200)] {
        let shape = PdShape::new(bsz, t, n);
        let plan = plan_perm_diagonal(shape, DType::F32, PlanRequest::LookBack, runner.sm_count())
            .expect("look-back plan");
        for (extra, every) in [(1u32, 1u32), (7, 1), (33, 2)] {
            let mut plan = plan.clone();
            plan.lookback_prefix_every = every;
            let ctx = format!("{label}: +{extra} blocks [{plan}]");
            let seed = 0x5_0000 + u64::from(extra) + t as u64;
            match lookback_by_hand(runner, &plan, plan.launches[1].kernel, extra, seed) {
                Err(e) => failures.push(format!("{ctx}: {e}")),
                Ok((Err(e), ..)) => failures.push(format!("{ctx}: launch failed: {e}")),
                Ok((Ok(()), h, h_t, intact)) => {
                    let inp = inputs::<f32>(bsz, t, n, seed);
                    let (want, want_t) = oracle::perm_diagonal(&inp.problem(bsz, t, n, true));
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

/// The look-back probe kernels (`pd_lookback<SPL>_probe_<sfx>`, emulator only)
/// never publish chunk 1 of problem 0: its successors spin until the spin
/// cap and trap, which must surface as a typed launch error.
pub fn check_lookback_withheld_traps<R: KernelRunner>(runner: &R, label: &str) {
    let mut failures = Vec::new();
    for (bsz, t, n) in [(2, 2000, 5), (1, 300, 64)] {
        let shape = PdShape::new(bsz, t, n);
        let plan = plan_perm_diagonal(shape, DType::F32, PlanRequest::LookBack, runner.sm_count())
            .expect("look-back plan");
        assert!(
            plan.chunks >= 3,
            "{plan}: the probe needs a chunk after chunk 1"
        );
        for sfx in ["f32", "depth"] {
            let spl = if n <= 32 { 1 } else { 2 };
            let kernel = format!("pd_lookback{spl}_probe_{sfx}");
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
