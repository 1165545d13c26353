//! The BlockDiagonal-kernel suite shared by `tests/emu_block_diagonal.rs`
//! (SIMT emulator) and `tests/cuda_block_diagonal.rs` (GPU): the same
//! orchestration (`parascan::kernels::block_diagonal`) on any `KernelRunner`.
//!
//! Include it with `mod common; mod diagonal_suite; mod block_diagonal_suite;`
//! (it uses `crate::common` and the launch recorder of `diagonal_suite`).
// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

#![allow(dead_code)]

use std::time::Instant;

use half::{bf16, f16};
use parascan::backend::launch::KernelRunner;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::kernels::block_diagonal::{
    plan_block_diagonal, BlockDiagonalBuffers, BlockDiagonalIo, BlockDiagonalWorkspace, BlockPlan,
    BlockPlanKind, BlockShape, SUPPORTED_BLOCKS,
};
use parascan::kernels::KernelScan;
use parascan::kernels::{
    launch_scan, launch_scan_buffers, measure_depth, measure_depth_outputs, scan_host,
};
use parascan::{oracle, DType, Error, PlanRequest, Storage};

use crate::common;
use crate::diagonal_suite::Recorder;

/// Plans and launches in one call on raw addresses (the suite's shorthand).
///
/// # Safety
/// As [`launch_scan`]: every address in `io` is live memory of `runner`
/// of the size its shape implies.
unsafe fn scan_block_diagonal_device<R: KernelRunner>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    dtype: DType,
    shape: BlockShape,
    io: BlockDiagonalIo,
    request: PlanRequest,
) -> parascan::Result<BlockPlan> {
    let plan = plan_block_diagonal(shape, dtype, request, runner.sm_count())?;
    // SAFETY: forwarded to the caller.
    unsafe { launch_scan(runner, ws, &plan, io) }?;
    Ok(plan)
}

/// One problem shape and plan request.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub shape: BlockShape,
    pub request: PlanRequest,
    pub h0: bool,
}

impl Case {
    fn describe(&self) -> String {
        let s = self.shape;
        format!(
            "B={} T={} nb={} k={} {} {}",
            s.batch,
            s.len,
            s.blocks,
            s.block,
            self.request,
            if self.h0 { "h0" } else { "no-h0" }
        )
    }
}

/// Random inputs: every entry of `A` uniform in `±0.95/k` (each row's
/// absolute sum stays below 1, so the recurrence is stable for any `T`),
/// `b, h0 ∈ [−1, 1)`, rounded to `S`.
pub fn inputs<S: Storage>(shape: BlockShape, seed: u64) -> (Vec<S>, Vec<S>, Vec<S>) {
    let mut rng = common::rng(seed);
    let scale = 0.95 / shape.block as f64;
    let a = common::uniform(&mut rng, shape.a_elements(), -scale, scale);
    let b = common::uniform(&mut rng, shape.elements(), -1.0, 1.0);
    let h0 = common::uniform(&mut rng, shape.state_elements(), -1.0, 1.0);
    (a, b, h0)
}

/// The plan must be what the request asks for.
fn check_plan_shape(case: &Case, plan: &BlockPlan) -> Result<(), String> {
    let t = case.shape.len;
    let ok = match case.request {
        PlanRequest::Sequential => plan.kind == BlockPlanKind::Sequential,
        PlanRequest::Chunk(c) if c >= t => plan.kind == BlockPlanKind::SinglePass,
        PlanRequest::Chunk(c) => {
            plan.kind == BlockPlanKind::Tree && plan.chunk == c && plan.chunks == t.div_ceil(c)
        }
        // Only the Diagonal kernels have a look-back plan: the planner refuses it.
        PlanRequest::LookBack => false,
        PlanRequest::MinDepth | PlanRequest::Auto => plan.chunks == t.div_ceil(plan.chunk),
    };
    let launches = match plan.kind {
        BlockPlanKind::Sequential | BlockPlanKind::SinglePass => 1,
        BlockPlanKind::Tree => 2 * plan.levels.len() - 1,
    };
    let prefix = format!("bd{}_", case.shape.block);
    let suffix = format!("_{}", plan.dtype);
    if !ok
        || plan.launches.len() != launches
        || !plan
            .launches
            .iter()
            .all(|l| l.kernel.starts_with(&prefix) && l.kernel.ends_with(&suffix))
    {
        return Err(format!("unexpected plan for {}: {plan}", case.describe()));
    }
    Ok(())
}

/// Runs `case` with storage `S` through `scan_host` (outputs
/// poisoned) and compares with the f64 oracle on the same rounded inputs.
pub fn run_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    case: &Case,
    seed: u64,
) -> Result<BlockPlan, String> {
    let ctx = format!(
        "{} {} {} (seed {seed})",
        runner.backend_name(),
        S::DTYPE,
        case.describe()
    );
    let s = case.shape;
    let (a, b, h0) = inputs::<S>(s, seed);
    let problem = BlockDiagonal {
        a: &a,
        b: &b,
        h0: case.h0.then_some(&h0[..]),
        batch: s.batch,
        len: s.len,
        blocks: s.blocks,
        block: s.block,
    };
    let (h, h_t, plan) =
        scan_host(runner, ws, &problem, case.request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    check_plan_shape(case, &plan).map_err(|e| format!("{ctx}: {e}"))?;
    if let Some(i) = h.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: h[{i}] = {:?} (unwritten or NaN)", h[i]));
    }
    if let Some(i) = h_t.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{ctx}: h_T[{i}] = {:?} (unwritten or NaN)", h_t[i]));
    }
    let (want, want_t) = oracle::block_diagonal(&problem);
    let tol = common::tolerance::<S>(s.len);
    let e = oracle::rel_l2(&h, &want);
    let e_t = oracle::rel_l2(&h_t, &want_t);
    if !(e <= tol && e_t <= tol) {
        return Err(format!(
            "{ctx}: relative L2 error h {e:.3e}, h_T {e_t:.3e} > {tol:.3e}"
        ));
    }
    // h_T is the very value stored at t = T - 1.
    let n = s.n();
    for bb in 0..s.batch {
        let last = &h[((bb * s.len) + s.len - 1) * n..(bb * s.len + s.len) * n];
        let got = &h_t[bb * n..(bb + 1) * n];
        if bytemuck::cast_slice::<S, u8>(last) != bytemuck::cast_slice::<S, u8>(got) {
            return Err(format!("{ctx}: h_T of row {bb} differs from h at t = T"));
        }
    }
    Ok(plan)
}

/// Every request kind: sequential, chunks of 1 (deepest tree), 3 (odd) and
/// 16, min-depth, auto.
pub const REQUESTS: [PlanRequest; 6] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(1),
    PlanRequest::Chunk(3),
    PlanRequest::Chunk(16),
    PlanRequest::MinDepth,
    PlanRequest::Auto,
];

/// `(B, T, nb)` shapes per block size: `T = 1`, odd and below the chunk of
/// 16, not a multiple of it, and much longer than it (small `B·nb` and
/// short `T` for the large blocks, whose products the emulator pays for).
pub fn shapes_for(k: usize) -> Vec<(usize, usize, usize)> {
    match k {
        1..=8 => vec![
            (2, 1, 3),
            (1, 2, 1),
            (1, 7, 2),
            (3, 37, 2),
            (2, 300, 1),
            (1, 1000, 3),
        ],
        16 => vec![(1, 1, 1), (2, 7, 1), (1, 37, 2), (1, 120, 1), (2, 300, 1)],
        32 => vec![(1, 1, 1), (1, 7, 1), (2, 37, 2), (1, 100, 1)],
        _ => vec![(1, 1, 1), (1, 5, 1), (2, 19, 1), (1, 40, 1)],
    }
}

/// Every supported `k` × shape × request, `h0` given in every other case.
pub fn standard_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut h0 = false;
    for k in SUPPORTED_BLOCKS {
        for (batch, len, blocks) in shapes_for(k) {
            for request in REQUESTS {
                h0 = !h0;
                cases.push(Case {
                    shape: BlockShape::new(batch, len, blocks, k),
                    request,
                    h0,
                });
            }
        }
    }
    cases
}

/// Runs every case for f32, f64, f16 and bf16; panics listing failures, or
/// when a plan kind was not covered.
pub fn run_cases<R: KernelRunner>(runner: &R, cases: &[Case], seed: u64, label: &str) {
    let start = Instant::now();
    let mut ws = BlockDiagonalWorkspace::new();
    let mut failures = Vec::new();
    let mut kinds = [0usize; 3];
    for (i, case) in cases.iter().enumerate() {
        let seed = seed + 16 * i as u64;
        let results = [
            run_case::<R, f32>(runner, &mut ws, case, seed),
            run_case::<R, f64>(runner, &mut ws, case, seed + 1),
            run_case::<R, f16>(runner, &mut ws, case, seed + 2),
            run_case::<R, bf16>(runner, &mut ws, case, seed + 3),
        ];
        for r in results {
            match r {
                Ok(p) => kinds[p.kind as usize] += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "{label}: {} cases x 4 dtypes, P0/P1/P2 = {kinds:?}, {} failure(s), {:.1} s",
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
        kinds.iter().all(|&k| k > 0),
        "{label}: P0/P1/P2 = {kinds:?}"
    );
}

/// With `h = None` only `h_T` is written, bit-identical to a full run's.
pub fn check_final_state_only<R: KernelRunner>(runner: &R) {
    let mut ws = BlockDiagonalWorkspace::new();
    let shape = BlockShape::new(2, 50, 2, 3);
    let (a, b, h0) = inputs::<f32>(shape, 99);
    let problem = BlockDiagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch: shape.batch,
        len: shape.len,
        blocks: shape.blocks,
        block: shape.block,
    };
    for request in [
        PlanRequest::Sequential,
        PlanRequest::Chunk(500),
        PlanRequest::Chunk(4),
        PlanRequest::Chunk(1),
    ] {
        let (_, full_t, plan) = scan_host(runner, &mut ws, &problem, request).unwrap();
        let da = runner.upload(&a).unwrap();
        let db = runner.upload(&b).unwrap();
        let dh0 = runner.upload(&h0).unwrap();
        let dht = runner.alloc(shape.state_elements() * 4).unwrap();
        runner.fill(&dht, 0xFF).unwrap();
        let io = BlockDiagonalIo {
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
        let mut got = vec![0f32; shape.state_elements()];
        runner.download(&dht, &mut got).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&full_t), "h = None changed h_T: {plan}");
    }
}

// ---------------------------------------------------------------------------
// Measured depth
// ---------------------------------------------------------------------------

/// Runs the `_depth` kernels for `plan` and checks every output against
/// the per-step formula and the maximum against `plan.depth`.
pub fn check_depth<R: KernelRunner>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    plan: &BlockPlan,
) -> Result<u64, String> {
    let ctx = format!("{} depth [{plan}]", runner.backend_name());
    let (h, h_t) = measure_depth_outputs(runner, ws, plan).map_err(|e| format!("{ctx}: {e}"))?;
    let s = plan.shape;
    let n = s.n();
    let formula: Vec<u64> = (0..s.len).map(|t| plan.depth_at(t)).collect();
    let mut bad = Vec::new();
    for bb in 0..s.batch {
        for (t, &want) in formula.iter().enumerate() {
            for i in 0..n {
                let got = h[(bb * s.len + t) * n + i];
                if u64::from(got) != want && bad.len() < 5 {
                    bad.push(format!("h[b={bb}, t={t}, i={i}] = {got}, formula {want}"));
                }
            }
        }
        for i in 0..n {
            let got = h_t[bb * n + i];
            if u64::from(got) != formula[s.len - 1] && bad.len() < 5 {
                bad.push(format!(
                    "h_T[{bb}, {i}] = {got}, formula {}",
                    formula[s.len - 1]
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

/// Depth plans over several `T`, `C`, `k`, every plan kind and both radices.
pub fn depth_plans(sm_count: usize) -> Vec<BlockPlan> {
    use PlanRequest::*;
    // ((B, T, nb, k), request)
    type Spec = ((usize, usize, usize, usize), PlanRequest);
    let specs: &[Spec] = &[
        ((1, 1, 1, 2), Auto),
        ((1, 77, 2, 2), Sequential),
        ((1, 77, 1, 4), Chunk(100)),
        ((2, 300, 1, 2), Chunk(1)),
        ((1, 301, 2, 1), Chunk(3)),
        ((1, 1000, 1, 3), Chunk(16)),
        ((1, 1000, 1, 2), MinDepth),
        ((1, 2000, 1, 1), Auto),
        ((1, 33, 1, 16), Chunk(2)),
        ((1, 9, 1, 64), Chunk(1)),
        ((2, 500, 3, 8), Chunk(5)),
        ((1, 100, 1, 32), MinDepth),
        ((3, 700, 2, 4), Auto),
    ];
    specs
        .iter()
        .map(|&((b, t, nb, k), r)| {
            plan_block_diagonal(BlockShape::new(b, t, nb, k), DType::F32, r, sm_count)
                .unwrap_or_else(|e| panic!("plan B={b} T={t} nb={nb} k={k} {r}: {e}"))
        })
        .collect()
}

pub fn run_depth_plans<R: KernelRunner>(runner: &R, label: &str) {
    let start = Instant::now();
    let mut ws = BlockDiagonalWorkspace::new();
    let plans = depth_plans(runner.sm_count());
    let mut kinds = [0usize; 3];
    let mut failures = Vec::new();
    for plan in &plans {
        kinds[plan.kind as usize] += 1;
        match check_depth(runner, &mut ws, plan) {
            Ok(d) => eprintln!("  depth {d:>6}  {plan}"),
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{label}: {} depth plans, P0/P1/P2 = {kinds:?}, {:.1} s",
        plans.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(kinds.iter().all(|&k| k > 0), "P0/P1/P2 = {kinds:?}");
    // A tree with an AUTO radix > 2 is among them.
    assert!(plans
        .iter()
        .any(|p| p.kind == BlockPlanKind::Tree && p.radix > 2));
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
    let mut ws = BlockDiagonalWorkspace::new();
    let shape = BlockShape::new(2, 10, 3, 2);
    let a = vec![0.25f32; shape.a_elements()];
    let x = vec![0.5f32; shape.elements()];
    let h0 = vec![1.0f32; shape.state_elements()];
    let good = BlockDiagonal {
        a: &a,
        b: &x,
        h0: Some(&h0),
        batch: shape.batch,
        len: shape.len,
        blocks: shape.blocks,
        block: shape.block,
    };
    let short = vec![0.5f32; shape.a_elements() - 1];
    let req = PlanRequest::Auto;
    expect_shape_error(
        scan_host(&runner, &mut ws, &BlockDiagonal { a: &short, ..good }, req),
        "a",
    );
    expect_shape_error(
        scan_host(&runner, &mut ws, &BlockDiagonal { b: &x[1..], ..good }, req),
        "b",
    );
    expect_shape_error(
        scan_host(
            &runner,
            &mut ws,
            &BlockDiagonal {
                h0: Some(&h0[1..]),
                ..good
            },
            req,
        ),
        "h0",
    );
    expect_size_error(
        scan_host(
            &runner,
            &mut ws,
            &BlockDiagonal {
                len: 0,
                a: &[],
                b: &[],
                ..good
            },
            req,
        ),
        "len",
    );
    // Unsupported block sizes: a typed error naming `block` and listing the
    // supported ones, from every entry point.
    let a5 = vec![0.1f32; 2 * 10 * 5 * 5];
    let b5 = vec![0.1f32; 2 * 10 * 5];
    let p5 = BlockDiagonal {
        a: &a5,
        b: &b5,
        h0: None,
        batch: 2,
        len: 10,
        blocks: 1,
        block: 5,
    };
    for result in [
        scan_host(&runner, &mut ws, &p5, req).map(|_| ()),
        p5.kernel_plan(2, req).map(|_| ()),
        p5.kernel_depth(&runner, req).map(|_| ()),
    ] {
        match result {
            Err(Error::Size {
                arg: "block",
                got: 5,
                expected,
            }) => assert!(
                expected.contains("64") && expected.contains('3'),
                "{expected}"
            ),
            other => panic!("k = 5: expected a size error naming `block`, got {other:?}"),
        }
    }
    expect_size_error(
        plan_block_diagonal(BlockShape::new(1, 4, 1, 128), DType::F32, req, 2),
        "block",
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
    let dh = inner.alloc(shape.elements() * 4).unwrap();
    let dht = inner.alloc(shape.state_elements() * 4).unwrap();
    let dshort = inner.alloc((shape.elements() - 1) * 4).unwrap();
    let dst_short = inner.alloc((shape.state_elements() - 1) * 4).unwrap();
    let plan =
        plan_block_diagonal(shape, DType::F32, PlanRequest::Chunk(3), runner.sm_count()).unwrap();
    let bufs = || BlockDiagonalBuffers {
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
            BlockDiagonalBuffers {
                a: (&db).into(),
                ..bufs()
            },
        ),
        (
            "b",
            BlockDiagonalBuffers {
                b: (&dshort).into(),
                ..bufs()
            },
        ),
        (
            "h",
            BlockDiagonalBuffers {
                h: Some((&dshort).into()),
                ..bufs()
            },
        ),
        (
            "h0",
            BlockDiagonalBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: Some((&dst_short).into()),
                    ..bufs().ends
                },
                ..bufs()
            },
        ),
        (
            "h_t",
            BlockDiagonalBuffers {
                ends: parascan::kernels::EndBuffers {
                    h0: None,
                    h_t: (&dst_short).into(),
                },
                ..bufs()
            },
        ),
    ] {
        expect_shape_error(launch_scan_buffers(&runner, &mut ws, &plan, bad), arg);
    }
    // Raw pointers: null, misaligned, overlapping.
    let io = BlockDiagonalIo {
        a: da.ptr(),
        b: db.ptr(),
        h: Some(dh.ptr()),
        ends: parascan::kernels::Ends {
            h0: Some(dh0.ptr()),
            h_t: dht.ptr(),
        },
    };
    expect_size_error(
        unsafe { launch_scan(&runner, &mut ws, &plan, BlockDiagonalIo { a: 0, ..io }) },
        "a",
    );
    expect_size_error(
        unsafe {
            launch_scan(
                &runner,
                &mut ws,
                &plan,
                BlockDiagonalIo {
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
                BlockDiagonalIo {
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
                BlockDiagonalIo {
                    h: Some(da.ptr() + 8),
                    ..io
                },
            )
        },
        "h",
    );
    expect_size_error(
        unsafe {
            scan_block_diagonal_device(
                &runner,
                &mut ws,
                DType::F32,
                BlockShape::new(1, 10, 1, 7),
                io,
                req,
            )
        },
        "block",
    );
    // A tampered plan.
    let mut tampered = plan.clone();
    tampered.chunk = 2;
    assert!(matches!(
        unsafe { launch_scan(&runner, &mut ws, &tampered, io) },
        Err(Error::Plan(_))
    ));
    let mut tampered = plan.clone();
    tampered.levels.pop();
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
    let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel.as_str()).collect();
    assert_eq!(*runner.launches.borrow(), names);
    assert_eq!(
        runner.syncs.get(),
        0,
        "the device path must not synchronize"
    );
    inner.synchronize().unwrap();
    let mut got = vec![0f32; shape.elements()];
    inner.download(&dh, &mut got).unwrap();
    let (want, _) = oracle::block_diagonal(&good);
    let e = oracle::rel_l2(&got, &want);
    assert!(e < 1e-5, "relative error {e:.3e} after the rejected calls");
}

/// Launch order, no synchronization and no allocation once warm.
pub fn check_workspace_reuse<R: KernelRunner>(inner: &R) {
    let runner = Recorder::new(inner);
    let mut ws = BlockDiagonalWorkspace::new();
    let shape = BlockShape::new(2, 400, 2, 4);
    let (a, b, _) = inputs::<f32>(shape, 5);
    let da = inner.upload(&a).unwrap();
    let db = inner.upload(&b).unwrap();
    let h = inner.alloc(shape.elements() * 4).unwrap();
    let h_t = inner.alloc(shape.state_elements() * 4).unwrap();
    let io = BlockDiagonalIo {
        a: da.ptr(),
        b: db.ptr(),
        h: Some(h.ptr()),
        ends: parascan::kernels::Ends {
            h0: None,
            h_t: h_t.ptr(),
        },
    };
    let run = |ws: &mut BlockDiagonalWorkspace, request| {
        let before = runner.launch_count();
        let plan =
            unsafe { scan_block_diagonal_device(&runner, ws, DType::F32, shape, io, request) }
                .unwrap();
        let issued: Vec<String> = runner.launches.borrow()[before..].to_vec();
        let names: Vec<&str> = plan.launches.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(issued, names, "launch order of {plan}");
        plan
    };
    let biggest = run(&mut ws, PlanRequest::Chunk(1));
    assert!(ws.capacity_bytes() >= biggest.scratch_bytes);
    let allocs = (ws.allocations(), runner.allocs.get());
    for request in [
        PlanRequest::Chunk(1),
        PlanRequest::Chunk(7),
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::MinDepth,
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
    let mut got = vec![0f32; shape.elements()];
    inner.download(&h, &mut got).unwrap();
    let problem = BlockDiagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: shape.batch,
        len: shape.len,
        blocks: shape.blocks,
        block: shape.block,
    };
    let (want, _) = oracle::block_diagonal(&problem);
    let e = oracle::rel_l2(&got, &want);
    assert!(e < 1e-5 * 9.0, "relative error {e:.3e} after reuse");
}
