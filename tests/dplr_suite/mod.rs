//! The DPLR-kernel suite shared by `tests/emu_dplr.rs` (SIMT emulator) and
//! `tests/cuda_dplr.rs` (GPU): the orchestration in
//! `parascan::kernels::dplr` checked on any `KernelRunner` against the f64
//! oracle (`parascan::oracle::dplr`, dense textbook steps).
//!
//! Include it with `mod common; mod dplr_suite;` (it uses `crate::common`).
// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

#![allow(dead_code)]

use std::cell::Cell;

use half::{bf16, f16};
use parascan::backend::launch::{DeviceBuffer, KernelArg, KernelRunner, LaunchConfig};
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::kernels::dplr::{
    plan_dplr, DplrIo, DplrPlan, DplrPlanKind, DplrShape, DplrWorkspace,
};
use parascan::kernels::KernelScan;
use parascan::kernels::{launch_scan, measure_depth, measure_depth_outputs, scan_host};
use parascan::{oracle, DType, Error, PlanRequest, Storage};
use rand::Rng;

use crate::common;

// ---------------------------------------------------------------------------
// A runner that counts what the orchestration asks for
// ---------------------------------------------------------------------------

/// Wraps a runner and counts launches, allocations and synchronizations.
pub struct Counter<'r, R> {
    inner: &'r R,
    pub launches: Cell<usize>,
    pub allocs: Cell<usize>,
    pub syncs: Cell<usize>,
}

impl<'r, R: KernelRunner> Counter<'r, R> {
    pub fn new(inner: &'r R) -> Self {
        Counter {
            inner,
            launches: Cell::new(0),
            allocs: Cell::new(0),
            syncs: Cell::new(0),
        }
    }
}

impl<R: KernelRunner> KernelRunner for Counter<'_, R> {
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
        self.launches.set(self.launches.get() + 1);
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

/// `(B, T, n, m, R)`.
pub type Dims = (usize, usize, usize, usize, usize);

// ---------------------------------------------------------------------------
// Inputs and cases
// ---------------------------------------------------------------------------

/// How the transitions are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Params {
    /// `w ∈ [0.6, 0.99)` (10 % negative), `u, v` uniform of scale `0.7/√n`.
    Random,
    /// DeltaNet: `w = 1`, unit keys `κ`, `u = −β κ`, `v = κ`, `β ∈ (0, 1)`
    /// (rank 1 uses `k = κ`).
    DeltaNet,
}

/// One problem shape, plan request and option set.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub batch: usize,
    pub len: usize,
    pub n: usize,
    pub m: usize,
    pub rank: usize,
    pub request: PlanRequest,
    pub h0: bool,
    pub output: DplrOutput,
    pub params: Params,
}

impl Case {
    pub fn new(
        (batch, len, n, m, rank): Dims,
        request: PlanRequest,
        h0: bool,
        output: DplrOutput,
    ) -> Self {
        Case {
            batch,
            len,
            n,
            m,
            rank,
            request,
            h0,
            output,
            params: Params::Random,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "B={} T={} n={} m={} R={} {} {} {:?} {:?}",
            self.batch,
            self.len,
            self.n,
            self.m,
            self.rank,
            self.request,
            if self.h0 { "h0" } else { "no-h0" },
            self.output,
            self.params
        )
    }
}

/// Inputs `(w, u, v, k, x, q, h0)` for `case`, rounded to `S`.
#[allow(clippy::type_complexity)]
pub fn inputs<S: Storage>(
    case: &Case,
    seed: u64,
) -> (Vec<S>, Vec<S>, Vec<S>, Vec<S>, Vec<S>, Vec<S>, Vec<S>) {
    let mut rng = common::rng(seed);
    let (b, t, n, m, r) = (case.batch, case.len, case.n, case.m, case.rank);
    let bt = b * t;
    let (w, u, v, k) = match case.params {
        Params::Random => {
            let w = (0..bt * n)
                .map(|_| {
                    let a = rng.gen_range(0.6..0.99);
                    S::from_f64(if rng.gen_bool(0.1) { -a } else { a })
                })
                .collect();
            let s = 0.7 / (n as f64).sqrt();
            let u = common::uniform(&mut rng, bt * r * n, -s, s);
            let v = common::uniform(&mut rng, bt * r * n, -s, s);
            let k = common::uniform(&mut rng, bt * n, -1.0, 1.0);
            (w, u, v, k)
        }
        Params::DeltaNet => {
            let mut u = Vec::with_capacity(bt * r * n);
            let mut v = Vec::with_capacity(bt * r * n);
            let mut k = Vec::with_capacity(bt * n);
            for _ in 0..bt {
                let beta: f64 = rng.gen_range(0.05..0.95);
                let mut key = |out_u: &mut Vec<S>, out_v: &mut Vec<S>| -> Vec<f64> {
                    let raw: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
                    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-3);
                    let unit: Vec<f64> = raw.iter().map(|x| x / norm).collect();
                    out_u.extend(unit.iter().map(|&x| S::from_f64(-beta * x / r as f64)));
                    out_v.extend(unit.iter().map(|&x| S::from_f64(x)));
                    unit
                };
                let first = key(&mut u, &mut v);
                for _ in 1..r {
                    key(&mut u, &mut v);
                }
                k.extend(first.iter().map(|&x| S::from_f64(x)));
            }
            (vec![S::from_f64(1.0); bt * n], u, v, k)
        }
    };
    let x = common::uniform(&mut rng, bt * m, -1.0, 1.0);
    let q = common::uniform(&mut rng, bt * n, -1.0, 1.0);
    let h0 = common::uniform(&mut rng, b * n * m, -1.0, 1.0);
    (w, u, v, k, x, q, h0)
}

/// The plan must be what the request asks for.
pub fn check_plan_shape(case: &Case, plan: &DplrPlan) -> Result<(), String> {
    let t = case.len;
    let ok = match case.request {
        PlanRequest::Sequential => plan.kind == DplrPlanKind::Sequential,
        PlanRequest::Chunk(c) if c >= t => plan.kind == DplrPlanKind::SinglePass,
        PlanRequest::Chunk(c) => {
            plan.kind == DplrPlanKind::Chunked && plan.chunk == c && plan.chunks == t.div_ceil(c)
        }
        // Only the Diagonal kernels have a look-back plan: the planner refuses it.
        PlanRequest::LookBack => false,
        PlanRequest::MinDepth | PlanRequest::Auto => plan.chunks == t.div_ceil(plan.chunk),
    };
    let launches = match plan.kind {
        DplrPlanKind::Sequential | DplrPlanKind::SinglePass => 1,
        DplrPlanKind::Chunked => 2 * plan.levels + 1,
    };
    let suffix = format!("_{}", plan.dtype);
    if !ok
        || plan.launches.len() != launches
        || !plan.launches.iter().all(|l| l.kernel.ends_with(&suffix))
    {
        return Err(format!("unexpected plan for {}: {plan}", case.describe()));
    }
    Ok(())
}

/// Runs `case` with storage `S` through `scan_host` (outputs poisoned) and
/// compares with the f64 oracle on the same rounded inputs. Returns the plan.
pub fn run_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DplrWorkspace,
    case: &Case,
    seed: u64,
) -> Result<DplrPlan, String> {
    let ctx = format!(
        "{} {} {} (seed {seed})",
        runner.backend_name(),
        S::DTYPE,
        case.describe()
    );
    let (w, u, v, k, x, q, h0) = inputs::<S>(case, seed);
    let problem = Dplr {
        w: &w,
        u: &u,
        v: &v,
        k: &k,
        x: &x,
        q: (case.output == DplrOutput::Readout).then_some(&q[..]),
        h0: case.h0.then_some(&h0[..]),
        batch: case.batch,
        len: case.len,
        n: case.n,
        m: case.m,
        rank: case.rank,
        output: case.output,
    };
    let (out, h_t, plan) =
        scan_host(runner, ws, &problem, case.request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    check_plan_shape(case, &plan).map_err(|e| format!("{ctx}: {e}"))?;
    if let Some(i) = out.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: out[{i}] = {:?} (unwritten or NaN)", out[i]));
    }
    if let Some(i) = h_t.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: h_T[{i}] = {:?} (unwritten or NaN)", h_t[i]));
    }
    let (want, want_t) = oracle::dplr(&problem);
    let tol = common::tolerance::<S>(case.len);
    let e = oracle::rel_l2(&out, &want);
    let e_t = oracle::rel_l2(&h_t, &want_t);
    if !(e <= tol && e_t <= tol) {
        return Err(format!(
            "{ctx}: relative L2 error out {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        ));
    }
    if case.output == DplrOutput::States {
        // h_T is the very register stored at t = T.
        let nm = case.n * case.m;
        for b in 0..case.batch {
            let last = &out[((b + 1) * case.len - 1) * nm..(b + 1) * case.len * nm];
            let fin = &h_t[b * nm..(b + 1) * nm];
            if bytemuck::cast_slice::<S, u8>(last) != bytemuck::cast_slice::<S, u8>(fin) {
                return Err(format!(
                    "{ctx}: h_T of problem {b} differs from the state at t = T"
                ));
            }
        }
    }
    Ok(plan)
}

/// Every request kind: sequential, single pass, chunks of 1, 3 (odd) and 8
/// (one staged batch), min-depth, auto.
pub const REQUESTS: [PlanRequest; 7] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(1000),
    PlanRequest::Chunk(1),
    PlanRequest::Chunk(3),
    PlanRequest::Chunk(8),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
];

/// The f32 correctness cases: every `(n, m, R)` with `T ∈ {1, odd, < chunk,
/// ≫ chunk}`, `h0` and the output alternating.
pub fn standard_cases() -> Vec<Case> {
    use PlanRequest::*;
    let mut cases = Vec::new();
    let mut flip = 0usize;
    let mut push = |shape: Dims, requests: &[PlanRequest]| {
        for &r in requests {
            flip += 1;
            let output = if flip % 3 == 0 {
                DplrOutput::States
            } else {
                DplrOutput::Readout
            };
            cases.push(Case::new(shape, r, flip % 2 == 0, output));
        }
    };
    // (B, T, n, m, R). NMAX 32 / 64 / 128; m over one and two column tiles.
    push((1, 1, 5, 3, 1), &REQUESTS);
    push((2, 7, 8, 4, 2), &REQUESTS);
    push((1, 37, 3, 5, 3), &REQUESTS);
    push(
        (2, 50, 4, 2, 4),
        &[Sequential, Chunk(5), Chunk(64), MinDepth],
    );
    push((1, 20, 33, 17, 3), &[Sequential, Chunk(3), Chunk(8)]);
    push((1, 12, 16, 40, 4), &[Chunk(5), Auto]);
    push((2, 9, 7, 70, 1), &[Sequential, Chunk(2)]);
    push((1, 5, 65, 6, 2), &[Chunk(2)]);
    // T ≫ C with several problems: 7 up/down levels.
    push((3, 2000, 12, 7, 2), &[Chunk(16), Auto]);
    // The widest shape: tiny B·T, then more chunks.
    push((1, 3, 128, 128, 4), &[Chunk(2)]);
    push((1, 150, 128, 128, 4), &[Chunk(11)]);
    push((1, 2, 100, 9, 1), &[Sequential]);
    cases
}

/// A smaller set for the half and double types.
pub fn dtype_cases() -> Vec<Case> {
    use PlanRequest::*;
    vec![
        Case::new((2, 1, 5, 3, 1), Chunk(4), true, DplrOutput::Readout),
        Case::new((1, 37, 6, 5, 2), Chunk(3), false, DplrOutput::Readout),
        Case::new((2, 19, 4, 3, 4), Sequential, true, DplrOutput::States),
        Case::new((1, 30, 9, 4, 3), MinDepth, true, DplrOutput::States),
        Case::new((1, 25, 40, 33, 1), Chunk(4), true, DplrOutput::Readout),
    ]
}

/// DeltaNet parameterization (`w = 1`, `A = I − β κκᵀ`), rank 1 and 2.
pub fn deltanet_cases() -> Vec<Case> {
    use PlanRequest::*;
    let mut cases = vec![
        Case::new((2, 60, 16, 16, 1), Chunk(7), true, DplrOutput::Readout),
        Case::new((1, 33, 16, 8, 2), MinDepth, false, DplrOutput::States),
        Case::new((1, 40, 64, 16, 1), Chunk(16), false, DplrOutput::Readout),
    ];
    for c in &mut cases {
        c.params = Params::DeltaNet;
    }
    cases
}

/// Runs every case for `S`, collecting failures. Returns the plans' kinds
/// covered as counts `[P0, P1, P2]`.
pub fn run_cases<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    cases: &[Case],
    seed: u64,
    label: &str,
) -> [usize; 3] {
    let mut ws = DplrWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 3];
    for (i, case) in cases.iter().enumerate() {
        match run_case::<R, S>(runner, &mut ws, case, seed + i as u64) {
            Ok(plan) => {
                kinds[match plan.kind {
                    DplrPlanKind::Sequential => 0,
                    DplrPlanKind::SinglePass => 1,
                    DplrPlanKind::Chunked => 2,
                }] += 1
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    kinds
}

/// The whole correctness suite on one runner: f32 standard cases (every
/// plan kind must appear), the other dtypes, DeltaNet.
pub fn run_all<R: KernelRunner>(runner: &R, seed: u64, label: &str) {
    let kinds = run_cases::<R, f32>(runner, &standard_cases(), seed, label);
    assert!(
        kinds.iter().all(|&k| k > 0),
        "{label}: every plan kind must be covered, got P0..P2 = {kinds:?}"
    );
    let d = dtype_cases();
    run_cases::<R, f64>(runner, &d, seed + 1000, label);
    run_cases::<R, f16>(runner, &d, seed + 2000, label);
    run_cases::<R, bf16>(runner, &d, seed + 3000, label);
    run_cases::<R, f32>(runner, &deltanet_cases(), seed + 4000, label);
    run_cases::<R, bf16>(runner, &deltanet_cases(), seed + 5000, label);
}

// ---------------------------------------------------------------------------
// Depth
// ---------------------------------------------------------------------------

/// Checks every output's measured depth against [`DplrPlan::depth_at`] and
/// the maximum against [`DplrPlan::depth`].
pub fn check_depth<R: KernelRunner>(runner: &R, plan: &DplrPlan) -> Result<(), String> {
    let mut ws = DplrWorkspace::new();
    let (out, h_t) =
        measure_depth_outputs(runner, &mut ws, plan).map_err(|e| format!("{plan}: {e}"))?;
    let s = plan.shape;
    let per_step = out.len() / (s.batch * s.len);
    for (i, &d) in out.iter().enumerate() {
        let t = (i / per_step) % s.len;
        if u64::from(d) != plan.depth_at(t) {
            return Err(format!(
                "{plan}: output {i} (t = {t}) has depth {d}, formula {}",
                plan.depth_at(t)
            ));
        }
    }
    let last = plan.depth_at(s.len - 1);
    if let Some(&d) = h_t.iter().find(|&&d| u64::from(d) != last) {
        return Err(format!("{plan}: h_T has depth {d}, formula {last}"));
    }
    let measured = measure_depth(runner, &mut ws, plan).map_err(|e| format!("{plan}: {e}"))?;
    if measured != plan.depth {
        return Err(format!(
            "{plan}: measured depth {measured} != formula {}",
            plan.depth
        ));
    }
    Ok(())
}

/// Plans whose depth is measured: every kind, chunk counts that are and are
/// not powers of two, both outputs, all widths.
pub fn depth_plans(sm_count: usize) -> Vec<DplrPlan> {
    use PlanRequest::*;
    let mut plans = Vec::new();
    let specs: [(Dims, PlanRequest, DplrOutput); 12] = [
        ((1, 1, 3, 2, 1), Sequential, DplrOutput::Readout),
        ((2, 9, 3, 2, 2), Chunk(9), DplrOutput::States),
        ((1, 100, 4, 3, 1), Sequential, DplrOutput::Readout),
        ((2, 100, 4, 3, 1), Chunk(1), DplrOutput::Readout),
        ((1, 100, 4, 3, 3), Chunk(3), DplrOutput::States),
        ((1, 64, 5, 2, 1), Chunk(8), DplrOutput::Readout),
        ((1, 65, 5, 2, 1), Chunk(8), DplrOutput::Readout),
        ((1, 300, 2, 2, 1), Chunk(2), DplrOutput::Readout),
        ((1, 300, 2, 2, 1), MinDepth, DplrOutput::Readout),
        ((2, 500, 3, 40, 4), Auto, DplrOutput::Readout),
        ((1, 20, 70, 3, 1), Chunk(3), DplrOutput::Readout),
        ((1, 7, 128, 5, 2), Chunk(2), DplrOutput::States),
    ];
    for ((b, t, n, m, r), req, out) in specs {
        // The depth kernels are the same for every dtype.
        plans.push(
            plan_dplr(
                DplrShape::new(b, t, n, m, r),
                out,
                DType::F32,
                req,
                sm_count,
            )
            .expect("valid plan"),
        );
    }
    plans
}

pub fn run_depth_plans<R: KernelRunner>(runner: &R, label: &str) {
    let failures: Vec<String> = depth_plans(runner.sm_count())
        .iter()
        .filter_map(|p| check_depth(runner, p).err())
        .collect();
    assert!(failures.is_empty(), "{label}:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Errors before any launch, workspace reuse
// ---------------------------------------------------------------------------

/// A valid small readout problem's inputs, sized for `(b, t, n, m, r)`.
struct Owned {
    w: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
    k: Vec<f32>,
    x: Vec<f32>,
    q: Vec<f32>,
    h0: Vec<f32>,
    shape: Dims,
}

impl Owned {
    fn new(shape: Dims) -> Self {
        let (b, t, n, m, r) = shape;
        let case = Case::new(shape, PlanRequest::Auto, true, DplrOutput::Readout);
        let (w, u, v, k, x, q, h0) = inputs::<f32>(&case, 1);
        assert_eq!(
            (w.len(), u.len(), x.len(), h0.len()),
            (b * t * n, b * t * r * n, b * t * m, b * n * m)
        );
        Owned {
            w,
            u,
            v,
            k,
            x,
            q,
            h0,
            shape,
        }
    }

    fn problem(&self) -> Dplr<'_, f32> {
        let (batch, len, n, m, rank) = self.shape;
        Dplr {
            w: &self.w,
            u: &self.u,
            v: &self.v,
            k: &self.k,
            x: &self.x,
            q: Some(&self.q),
            h0: Some(&self.h0),
            batch,
            len,
            n,
            m,
            rank,
            output: DplrOutput::Readout,
        }
    }
}

fn expect_err<R: KernelRunner>(
    runner: &Counter<'_, R>,
    what: &str,
    p: &Dplr<'_, f32>,
    request: PlanRequest,
    check: impl Fn(&Error) -> bool,
) {
    let before = runner.launches.get();
    let mut ws = DplrWorkspace::new();
    match scan_host(runner, &mut ws, p, request) {
        Err(e) => assert!(check(&e), "{what}: unexpected error {e:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
    assert!(
        p.kernel_depth(runner, request).is_err(),
        "{what}: depth accepted"
    );
    assert_eq!(
        runner.launches.get(),
        before,
        "{what}: launched before failing"
    );
}

/// Bad ranks, sizes, shapes and plans are typed errors before any launch.
pub fn check_errors<R: KernelRunner>(inner: &R) {
    let runner = Counter::new(inner);
    let good = Owned::new((2, 5, 4, 3, 2));
    let is_size =
        |arg: &'static str| move |e: &Error| matches!(e, Error::Size { arg: a, .. } if *a == arg);
    let is_shape =
        |arg: &'static str| move |e: &Error| matches!(e, Error::Shape { arg: a, .. } if *a == arg);

    // Rank above the kernels' limit (the CPU engine would accept it).
    let r5 = Owned::new((1, 3, 4, 3, 5));
    expect_err(
        &runner,
        "rank 5",
        &r5.problem(),
        PlanRequest::Auto,
        is_size("rank"),
    );
    let mut p = good.problem();
    p.rank = 0;
    expect_err(&runner, "rank 0", &p, PlanRequest::Auto, is_size("rank"));
    let n129 = Owned::new((1, 2, 129, 2, 1));
    expect_err(
        &runner,
        "n 129",
        &n129.problem(),
        PlanRequest::Auto,
        is_size("n"),
    );
    let m129 = Owned::new((1, 2, 3, 129, 1));
    expect_err(
        &runner,
        "m 129",
        &m129.problem(),
        PlanRequest::Auto,
        is_size("m"),
    );
    let mut p = good.problem();
    p.len = 0;
    expect_err(&runner, "T 0", &p, PlanRequest::Auto, |e| {
        matches!(e, Error::Size { arg: "len", .. } | Error::Shape { .. })
    });
    // Shapes.
    let mut p = good.problem();
    p.w = &good.w[1..];
    expect_err(&runner, "short w", &p, PlanRequest::Auto, is_shape("w"));
    let mut p = good.problem();
    p.u = &good.u[..good.u.len() / 2];
    expect_err(
        &runner,
        "rank/u mismatch",
        &p,
        PlanRequest::Auto,
        is_shape("u"),
    );
    let mut p = good.problem();
    p.x = &good.x[2..];
    expect_err(&runner, "short x", &p, PlanRequest::Auto, is_shape("x"));
    let mut p = good.problem();
    p.q = None;
    expect_err(
        &runner,
        "readout without q",
        &p,
        PlanRequest::Auto,
        is_shape("q"),
    );
    let mut p = good.problem();
    p.h0 = Some(&good.h0[1..]);
    expect_err(&runner, "short h0", &p, PlanRequest::Auto, is_shape("h0"));
    // Plans.
    expect_err(
        &runner,
        "chunk 0",
        &good.problem(),
        PlanRequest::Chunk(0),
        |e| matches!(e, Error::Plan(_)),
    );

    // Device entry point: null and overlapping pointers, edited plans.
    let plan = plan_dplr(
        DplrShape::new(2, 5, 4, 3, 2),
        DplrOutput::Readout,
        DType::F32,
        PlanRequest::Chunk(2),
        runner.sm_count(),
    )
    .expect("plan");
    let bufs: Vec<DeviceBuffer> = [40usize, 80, 80, 40, 30, 40, 24, 30, 24]
        .iter()
        .map(|&n| runner.alloc(n * 4).expect("alloc"))
        .collect();
    let io = DplrIo {
        w: bufs[0].ptr(),
        u: bufs[1].ptr(),
        v: bufs[2].ptr(),
        k: bufs[3].ptr(),
        x: bufs[4].ptr(),
        q: Some(bufs[5].ptr()),
        out: bufs[7].ptr(),
        ends: parascan::kernels::Ends {
            h0: Some(bufs[6].ptr()),
            h_t: bufs[8].ptr(),
        },
    };
    let mut ws = DplrWorkspace::new();
    let before = runner.launches.get();
    let null_q = DplrIo { q: None, ..io };
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &plan, null_q) },
        Err(Error::Size { arg: "q", .. })
    ));
    let overlap = DplrIo { out: io.x, ..io };
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &plan, overlap) },
        Err(Error::Size { arg: "out", .. })
    ));
    let misaligned = DplrIo { k: io.k + 2, ..io };
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &plan, misaligned) },
        Err(Error::Size { arg: "k", .. })
    ));
    let mut edited = plan.clone();
    edited.chunk = 3;
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &edited, io) },
        Err(Error::Plan(_))
    ));
    assert_eq!(runner.launches.get(), before, "launched before failing");
    // The same io is fine, and the device path never synchronizes.
    let syncs = runner.syncs.get();
    unsafe { launch_scan(&runner, &mut ws, &plan, io) }.expect("valid launch");
    assert_eq!(runner.launches.get(), before + plan.launches.len());
    assert_eq!(runner.syncs.get(), syncs, "the device path synchronized");
}

/// A warm workspace allocates nothing more for the same (or a smaller) plan.
pub fn check_workspace_reuse<R: KernelRunner>(inner: &R) {
    let runner = Counter::new(inner);
    let data = Owned::new((2, 40, 6, 5, 2));
    let mut ws = DplrWorkspace::new();
    let p = data.problem();
    let (a, _, plan) = scan_host(&runner, &mut ws, &p, PlanRequest::Chunk(4)).expect("first");
    let allocs = ws.allocations();
    assert_eq!(allocs, 2, "agg and carry");
    let (b, _, _) = scan_host(&runner, &mut ws, &p, PlanRequest::Chunk(4)).expect("second");
    let (_, _, _) = scan_host(&runner, &mut ws, &p, PlanRequest::Chunk(8)).expect("smaller");
    assert_eq!(ws.allocations(), allocs, "the warm workspace reallocated");
    assert!(ws.capacity().total() >= plan.scratch.total());
    // Deterministic: the same launches give the same bits.
    assert_eq!(
        bytemuck::cast_slice::<f32, u8>(&a),
        bytemuck::cast_slice::<f32, u8>(&b)
    );
}
