//! Reverse scans and backward passes of the PermDiagonal, BlockDiagonal
//! (Dense) and DPLR families on the kernels, shared by
//! `tests/emu_family_reverse.rs` (SIMT emulator, every fiber order) and
//! `tests/cuda_family_reverse.rs` (CUDA, or the emulated driver): any
//! `KernelRunner`.
//!
//! - Reverse scans (`scan_*_reverse`) of every plan the family has (PD:
//!   P0–P4, the look-back included; BlockDiagonal: P0–P2; DPLR: P0–P2 in
//!   both output modes) against the f64 oracle run on the time-reversed
//!   inputs; the reverse plan is the forward plan of the same request with
//!   the `_rev_` kernels; `h_T` is bitwise the state at `t = 0`.
//! - Measured depth of reverse plans, element by element, against the
//!   forward plan's formula at the mirrored step.
//! - `grad::{perm_diagonal,block_diagonal,dplr}_kernels` against central
//!   finite differences of the f64 oracle (small shapes, relative 1e-6 in
//!   f64) and against the independent f64 sequential adjoint
//!   (`common::adjoint`, long `T`, the forward's tolerances) for every plan.
//!
//! Include it with `mod common; mod family_reverse_suite;`.

#![allow(dead_code)]

use half::f16;
use parascan::backend::launch::KernelRunner;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::grad;
use parascan::kernels::block_diagonal::{
    plan_block_diagonal, scan_block_diagonal_reverse, BlockDiagonalWorkspace, BlockPlan, BlockShape,
};
use parascan::kernels::dplr::{plan_dplr, scan_dplr_reverse, DplrPlan, DplrShape, DplrWorkspace};
use parascan::kernels::perm_diagonal::{
    plan_perm_diagonal, scan_perm_diagonal_reverse, PdGpuPlan, PdShape, PdWorkspace,
};
use parascan::kernels::{measure_depth, measure_depth_outputs, FamilyPlan, Workspace};
use parascan::{oracle, PlanRequest, Storage};
use rand::seq::SliceRandom;

use crate::common::{self, adjoint};

fn f64s<S: Storage>(v: &[S]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn cast<S: Storage>(v: &[f64]) -> Vec<S> {
    v.iter().map(|&x| S::from_f64(x)).collect()
}

/// Reverses the time axis of `[B,T,w]` data.
pub fn flip<T: Copy>(v: &[T], batch: usize, len: usize, w: usize) -> Vec<T> {
    let mut out = v.to_vec();
    for b in 0..batch {
        for t in 0..len {
            let (src, dst) = ((b * len + t) * w, (b * len + len - 1 - t) * w);
            out[dst..dst + w].copy_from_slice(&v[src..src + w]);
        }
    }
    out
}

/// The name of the reverse kernel of forward kernel `fwd`: `_rev` before
/// the dtype suffix (`pd_small_rescan_f32` → `pd_small_rescan_rev_f32`), or
/// before the width for DPLR (`dplr_rescan_n32_f32` → `dplr_rescan_rev_n32_f32`).
pub fn rev_name(fwd: &str) -> String {
    if let Some(rest) = fwd.strip_prefix("dplr_") {
        if let Some(i) = rest.find("_n") {
            return format!("dplr_{}_rev{}", &rest[..i], &rest[i..]);
        }
    }
    match fwd.rsplit_once('_') {
        Some((head, sfx)) => format!("{head}_rev_{sfx}"),
        None => fwd.to_string(),
    }
}

/// A reverse plan's launches against its forward plan's: the same count,
/// every kernel either shared or the forward one's `_rev_` form, and the
/// last launch (the one that writes `h`) a reverse kernel.
fn check_names<'a>(
    fwd: impl ExactSizeIterator<Item = &'a str>,
    rev: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), String> {
    if fwd.len() != rev.len() {
        return Err("launch counts differ".into());
    }
    let pairs: Vec<(&str, &str)> = fwd.zip(rev).collect();
    for (f, r) in &pairs {
        if f != r && rev_name(f) != *r {
            return Err(format!("forward {f} vs reverse {r}"));
        }
    }
    match pairs.last() {
        Some((f, r)) if rev_name(f) == *r => Ok(()),
        _ => Err("the last launch is not a reverse kernel".into()),
    }
}

fn check_close<S: Storage>(what: &str, got: &[S], want: &[f64], tol: f64) -> Result<(), String> {
    if let Some(i) = got.iter().position(|x| !x.to_f64().is_finite()) {
        return Err(format!("{what}[{i}] = {:?} (unwritten or NaN)", got[i]));
    }
    let e = oracle::rel_l2(got, want);
    if e <= tol {
        Ok(())
    } else {
        Err(format!("{what}: relative L2 error {e:.3e} > {tol:.1e}"))
    }
}

/// `h_T` must be bitwise the output at `t = 0` (width `w` per step).
fn check_last_is_first<S: Storage + bytemuck::Pod>(
    out: &[S],
    last: &[S],
    batch: usize,
    len: usize,
    w: usize,
) -> Result<(), String> {
    for b in 0..batch {
        let first = &out[b * len * w..b * len * w + w];
        let hl = &last[b * w..(b + 1) * w];
        if bytemuck::cast_slice::<S, u8>(first) != bytemuck::cast_slice::<S, u8>(hl) {
            return Err(format!("h_T of row {b} differs from the state at t = 0"));
        }
    }
    Ok(())
}

fn report(label: &str, what: &str, runs: usize, failures: Vec<String>) {
    eprintln!("{label}: {runs} {what}, {} failure(s)", failures.len());
    assert!(
        failures.is_empty(),
        "{label} {what}:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// PermDiagonal.
// ---------------------------------------------------------------------------

/// PD requests: every plan kind (P3 needs more than 1024 chunks).
fn pd_requests(len: usize) -> Vec<PlanRequest> {
    let mut r = vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(len),
        PlanRequest::Chunk(16),
        PlanRequest::Chunk(3),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
        PlanRequest::LookBack,
    ];
    if len > 2048 {
        r.push(PlanRequest::Chunk(2));
    }
    r
}

fn random_perms(r: &mut rand_chacha::ChaCha8Rng, rows: usize, n: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|_| {
            let mut p: Vec<u8> = (0..n).map(|i| i as u8).collect();
            p.shuffle(r);
            p
        })
        .collect()
}

fn pd_reverse_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut PdWorkspace,
    (batch, len, n): (usize, usize, usize),
    request: PlanRequest,
    seed: u64,
) -> Result<PdGpuPlan, String> {
    let mut r = common::rng(seed);
    let tot = batch * len * n;
    let perm = random_perms(&mut r, batch * len, n);
    let d: Vec<S> = common::uniform(&mut r, tot, -0.99, 0.99);
    let b: Vec<S> = common::uniform(&mut r, tot, -1.0, 1.0);
    let h0: Vec<S> = common::uniform(&mut r, batch * n, -1.0, 1.0);
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: Some(&h0),
        batch,
        len,
        n,
    };
    let ctx = format!(
        "{} pd reverse {} B={batch} T={len} n={n} {request}",
        runner.backend_name(),
        S::DTYPE
    );
    let (h, h_t, plan) =
        scan_perm_diagonal_reverse(runner, ws, &p, request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    let fwd = plan_perm_diagonal(plan.shape, S::DTYPE, request, runner.sm_count())
        .map_err(|e| format!("{ctx}: {e}"))?;
    let same = fwd.kind == plan.kind
        && fwd.chunk == plan.chunk
        && fwd.scratch == plan.scratch
        && fwd.depth == plan.depth
        && plan.reverse
        && fwd
            .launches
            .iter()
            .zip(&plan.launches)
            .all(|(f, r)| f.cfg == r.cfg);
    if !same {
        return Err(format!("{ctx}: not the forward plan {fwd} reversed"));
    }
    check_names(
        fwd.launches.iter().map(|l| l.kernel),
        plan.launches.iter().map(|l| l.kernel),
    )
    .map_err(|e| format!("{ctx}: {e}"))?;
    let (fp, fd, fb) = (
        flip(&perm, batch, len, n),
        flip(&d, batch, len, n),
        flip(&b, batch, len, n),
    );
    let (want, want_t) = oracle::perm_diagonal(&PermDiagonal {
        perm: &fp,
        d: &fd,
        b: &fb,
        ..p
    });
    let tol = common::tolerance::<S>(len);
    check_close("h", &h, &flip(&want, batch, len, n), tol).map_err(|e| format!("{ctx}: {e}"))?;
    check_close("h_T", &h_t, &want_t, tol).map_err(|e| format!("{ctx}: {e}"))?;
    check_last_is_first(&h, &h_t, batch, len, n).map_err(|e| format!("{ctx}: {e}"))?;
    Ok(plan)
}

/// Reverse PD scans, small (`n ≤ 32`) and wide teams, every plan kind.
pub fn pd_reverse_cases<R: KernelRunner>(runner: &R, seed: u64, label: &str) {
    let mut ws = PdWorkspace::new();
    let mut kinds = [0usize; 5];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, shape) in [
        (2, 1000, 5),
        (1, 600, 40),
        (2, 37, 7),
        (3, 1, 5),
        (1, 2500, 3),
    ]
    .into_iter()
    .enumerate()
    {
        for request in pd_requests(shape.1) {
            let s = seed + 16 * i as u64 + runs as u64;
            let mut all = vec![
                pd_reverse_case::<R, f32>(runner, &mut ws, shape, request, s),
                pd_reverse_case::<R, f64>(runner, &mut ws, shape, request, s + 1),
            ];
            if i == 0 {
                all.push(pd_reverse_case::<R, f16>(
                    runner,
                    &mut ws,
                    shape,
                    request,
                    s + 2,
                ));
            }
            for res in all {
                runs += 1;
                match res {
                    Ok(p) => kinds[p.kind as usize] += 1,
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    eprintln!("{label}: pd reverse P0..P4 = {kinds:?}");
    report(label, "pd reverse scans", runs, failures);
    assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P4 = {kinds:?}");
}

// ---------------------------------------------------------------------------
// BlockDiagonal / Dense.
// ---------------------------------------------------------------------------

fn bd_requests(len: usize) -> Vec<PlanRequest> {
    vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(len),
        PlanRequest::Chunk(16),
        PlanRequest::Chunk(3),
        PlanRequest::Chunk(1),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
    ]
}

fn bd_inputs<S: Storage>(
    seed: u64,
    (batch, len, nb, k): (usize, usize, usize, usize),
) -> (Vec<S>, Vec<S>, Vec<S>) {
    let mut r = common::rng(seed);
    let s = 0.9 / k as f64;
    (
        common::uniform(&mut r, batch * len * nb * k * k, -s, s),
        common::uniform(&mut r, batch * len * nb * k, -1.0, 1.0),
        common::uniform(&mut r, batch * nb * k, -1.0, 1.0),
    )
}

fn bd_reverse_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    shape: (usize, usize, usize, usize),
    request: PlanRequest,
    seed: u64,
) -> Result<BlockPlan, String> {
    let (batch, len, nb, k) = shape;
    let n = nb * k;
    let (a, b, h0) = bd_inputs::<S>(seed, shape);
    let p = BlockDiagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch,
        len,
        blocks: nb,
        block: k,
    };
    let ctx = format!(
        "{} bd reverse {} B={batch} T={len} nb={nb} k={k} {request}",
        runner.backend_name(),
        S::DTYPE
    );
    let (h, h_t, plan) =
        scan_block_diagonal_reverse(runner, ws, &p, request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    let fwd = plan_block_diagonal(plan.shape, S::DTYPE, request, runner.sm_count())
        .map_err(|e| format!("{ctx}: {e}"))?;
    let same = fwd.kind == plan.kind
        && fwd.chunk == plan.chunk
        && fwd.levels == plan.levels
        && fwd.scratch_bytes == plan.scratch_bytes
        && fwd.depth == plan.depth
        && plan.reverse
        && fwd
            .launches
            .iter()
            .zip(&plan.launches)
            .all(|(f, r)| f.cfg == r.cfg && f.level == r.level && f.role == r.role);
    if !same {
        return Err(format!("{ctx}: not the forward plan {fwd} reversed"));
    }
    check_names(
        fwd.launches.iter().map(|l| l.kernel.as_str()),
        plan.launches.iter().map(|l| l.kernel.as_str()),
    )
    .map_err(|e| format!("{ctx}: {e}"))?;
    // Level 0 reverse, every level above shared.
    for (f, r) in fwd.launches.iter().zip(&plan.launches) {
        if (r.level == 0) != (f.kernel != r.kernel) {
            return Err(format!("{ctx}: level {} runs {}", r.level, r.kernel));
        }
    }
    let (fa, fb) = (flip(&a, batch, len, nb * k * k), flip(&b, batch, len, n));
    let (want, want_t) = oracle::block_diagonal(&BlockDiagonal {
        a: &fa,
        b: &fb,
        ..p
    });
    let tol = common::tolerance::<S>(len);
    check_close("h", &h, &flip(&want, batch, len, n), tol).map_err(|e| format!("{ctx}: {e}"))?;
    check_close("h_T", &h_t, &want_t, tol).map_err(|e| format!("{ctx}: {e}"))?;
    check_last_is_first(&h, &h_t, batch, len, n).map_err(|e| format!("{ctx}: {e}"))?;
    Ok(plan)
}

/// Reverse BlockDiagonal scans: blocks of 2 and 3, one dense 4×4 block,
/// every plan kind (the tree with several levels included).
pub fn bd_reverse_cases<R: KernelRunner>(runner: &R, seed: u64, label: &str) {
    let mut ws = BlockDiagonalWorkspace::new();
    let mut kinds = [0usize; 3];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, shape) in [(2, 700, 3, 2), (1, 300, 2, 3), (2, 129, 1, 4), (2, 1, 2, 2)]
        .into_iter()
        .enumerate()
    {
        for request in bd_requests(shape.1) {
            let s = seed + 16 * i as u64 + runs as u64;
            let mut all = vec![
                bd_reverse_case::<R, f32>(runner, &mut ws, shape, request, s),
                bd_reverse_case::<R, f64>(runner, &mut ws, shape, request, s + 1),
            ];
            if i == 0 {
                all.push(bd_reverse_case::<R, f16>(
                    runner,
                    &mut ws,
                    shape,
                    request,
                    s + 2,
                ));
            }
            for res in all {
                runs += 1;
                match res {
                    Ok(p) => kinds[p.kind as usize] += 1,
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    eprintln!("{label}: bd reverse P0..P2 = {kinds:?}");
    report(label, "block-diagonal reverse scans", runs, failures);
    assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P2 = {kinds:?}");
}

// ---------------------------------------------------------------------------
// DPLR.
// ---------------------------------------------------------------------------

/// DPLR inputs `(w, u, v, k, x, q, h0)` with a contractive transition.
pub struct DplrData<S> {
    pub w: Vec<S>,
    pub u: Vec<S>,
    pub v: Vec<S>,
    pub k: Vec<S>,
    pub x: Vec<S>,
    pub q: Vec<S>,
    pub h0: Vec<S>,
    pub dims: (usize, usize, usize, usize, usize),
}

impl<S: Storage> DplrData<S> {
    pub fn new(seed: u64, dims: (usize, usize, usize, usize, usize)) -> Self {
        let (batch, len, n, m, rank) = dims;
        let mut r = common::rng(seed);
        let (btn, btrn) = (batch * len * n, batch * len * rank * n);
        let s = (0.25 / (rank * n) as f64).sqrt();
        DplrData {
            w: common::uniform(&mut r, btn, 0.5, 0.95),
            u: common::uniform(&mut r, btrn, -s, s),
            v: common::uniform(&mut r, btrn, -s, s),
            k: common::uniform(&mut r, btn, -1.0, 1.0),
            x: common::uniform(&mut r, batch * len * m, -1.0, 1.0),
            q: common::uniform(&mut r, btn, -1.0, 1.0),
            h0: common::uniform(&mut r, batch * n * m, -1.0, 1.0),
            dims,
        }
    }

    pub fn problem(&self, output: DplrOutput) -> Dplr<'_, S> {
        let (batch, len, n, m, rank) = self.dims;
        Dplr {
            w: &self.w,
            u: &self.u,
            v: &self.v,
            k: &self.k,
            x: &self.x,
            q: (output == DplrOutput::Readout).then_some(&self.q[..]),
            h0: Some(&self.h0),
            batch,
            len,
            n,
            m,
            rank,
            output,
        }
    }

    fn flipped(&self) -> Self
    where
        S: Copy,
    {
        let (b, t, n, m, r) = self.dims;
        DplrData {
            w: flip(&self.w, b, t, n),
            u: flip(&self.u, b, t, r * n),
            v: flip(&self.v, b, t, r * n),
            k: flip(&self.k, b, t, n),
            x: flip(&self.x, b, t, m),
            q: flip(&self.q, b, t, n),
            h0: self.h0.clone(),
            dims: self.dims,
        }
    }

    pub fn to_f64(&self) -> DplrData<f64> {
        DplrData {
            w: f64s(&self.w),
            u: f64s(&self.u),
            v: f64s(&self.v),
            k: f64s(&self.k),
            x: f64s(&self.x),
            q: f64s(&self.q),
            h0: f64s(&self.h0),
            dims: self.dims,
        }
    }

    fn field(&mut self, i: usize) -> &mut Vec<S> {
        match i {
            0 => &mut self.w,
            1 => &mut self.u,
            2 => &mut self.v,
            3 => &mut self.k,
            4 => &mut self.x,
            5 => &mut self.q,
            _ => &mut self.h0,
        }
    }
}

const DPLR_FIELDS: [&str; 7] = ["w", "u", "v", "k", "x", "q", "h0"];

fn dplr_requests(len: usize) -> Vec<PlanRequest> {
    vec![
        PlanRequest::Sequential,
        PlanRequest::Chunk(len),
        PlanRequest::Chunk(16),
        PlanRequest::Chunk(5),
        PlanRequest::MinDepth,
        PlanRequest::Auto,
    ]
}

fn dplr_reverse_case<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DplrWorkspace,
    dims: (usize, usize, usize, usize, usize),
    output: DplrOutput,
    request: PlanRequest,
    seed: u64,
) -> Result<DplrPlan, String> {
    let (batch, len, n, m, rank) = dims;
    let d = DplrData::<S>::new(seed, dims);
    let p = d.problem(output);
    let ctx = format!(
        "{} dplr reverse {} B={batch} T={len} n={n} m={m} R={rank} {output:?} {request}",
        runner.backend_name(),
        S::DTYPE
    );
    let (out, h_t, plan) =
        scan_dplr_reverse(runner, ws, &p, request).map_err(|e| format!("{ctx}: {e}"))?;
    let ctx = format!("{ctx} [{plan}]");
    let fwd = plan_dplr(plan.shape, output, S::DTYPE, request, runner.sm_count())
        .map_err(|e| format!("{ctx}: {e}"))?;
    let same = fwd.kind == plan.kind
        && fwd.chunk == plan.chunk
        && fwd.scratch == plan.scratch
        && fwd.depth == plan.depth
        && plan.reverse
        && fwd
            .launches
            .iter()
            .zip(&plan.launches)
            .all(|(f, r)| f.cfg == r.cfg);
    if !same {
        return Err(format!("{ctx}: not the forward plan {fwd} reversed"));
    }
    check_names(
        fwd.launches.iter().map(|l| l.kernel),
        plan.launches.iter().map(|l| l.kernel),
    )
    .map_err(|e| format!("{ctx}: {e}"))?;
    let f = d.flipped();
    let (want, want_t) = oracle::dplr(&f.problem(output));
    let w = match output {
        DplrOutput::Readout => m,
        DplrOutput::States => n * m,
    };
    let tol = common::tolerance::<S>(len);
    check_close("out", &out, &flip(&want, batch, len, w), tol)
        .map_err(|e| format!("{ctx}: {e}"))?;
    check_close("h_T", &h_t, &want_t, tol).map_err(|e| format!("{ctx}: {e}"))?;
    if output == DplrOutput::States {
        check_last_is_first(&out, &h_t, batch, len, w).map_err(|e| format!("{ctx}: {e}"))?;
    }
    Ok(plan)
}

/// Reverse DPLR scans in both output modes, every plan kind, `n` on the
/// 32-wide kernels and on the 64-wide ones.
pub fn dplr_reverse_cases<R: KernelRunner>(runner: &R, seed: u64, label: &str) {
    let mut ws = DplrWorkspace::new();
    let mut kinds = [0usize; 3];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, dims) in [(2, 300, 4, 3, 2), (1, 77, 40, 5, 1), (2, 1, 3, 2, 2)]
        .into_iter()
        .enumerate()
    {
        for output in [DplrOutput::Readout, DplrOutput::States] {
            for request in dplr_requests(dims.1) {
                let s = seed + 16 * i as u64 + runs as u64;
                let mut all = vec![
                    dplr_reverse_case::<R, f32>(runner, &mut ws, dims, output, request, s),
                    dplr_reverse_case::<R, f64>(runner, &mut ws, dims, output, request, s + 1),
                ];
                if i == 0 {
                    all.push(dplr_reverse_case::<R, f16>(
                        runner,
                        &mut ws,
                        dims,
                        output,
                        request,
                        s + 2,
                    ));
                }
                for res in all {
                    runs += 1;
                    match res {
                        Ok(p) => kinds[p.kind as usize] += 1,
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
    }
    eprintln!("{label}: dplr reverse P0..P2 = {kinds:?}");
    report(label, "dplr reverse scans", runs, failures);
    assert!(kinds.iter().all(|&k| k > 0), "{label}: P0..P2 = {kinds:?}");
}

// ---------------------------------------------------------------------------
// Depth.
// ---------------------------------------------------------------------------

/// Every output of a reverse plan against the forward plan's formula at the
/// mirrored step, and `h_T` against the forward's last step; `w` outputs
/// per step and row.
fn check_reverse_depth<R: KernelRunner, P: FamilyPlan + std::fmt::Display>(
    runner: &R,
    ws: &mut Workspace<P::Scratch>,
    rev: &P,
    (batch, len, w): (usize, usize, usize),
    fwd_at: impl Fn(usize) -> u64,
    rev_at: impl Fn(usize) -> u64,
    fwd_depth: u64,
) -> Result<u64, String> {
    let ctx = format!("{} reverse depth [{rev}]", runner.backend_name());
    let (h, h_t) = measure_depth_outputs(runner, ws, rev).map_err(|e| format!("{ctx}: {e}"))?;
    let mut bad = Vec::new();
    for b in 0..batch {
        for t in 0..len {
            let want = fwd_at(len - 1 - t);
            for j in 0..w {
                let got = u64::from(h[(b * len + t) * w + j]);
                if (got != want || rev_at(t) != want) && bad.len() < 5 {
                    bad.push(format!(
                        "out[b={b}, t={t}, {j}] = {got}, forward formula at T-1-t {want}, \
                         reverse formula {}",
                        rev_at(t)
                    ));
                }
            }
        }
    }
    let want_t = fwd_at(len - 1);
    if let Some(i) = h_t.iter().position(|&x| u64::from(x) != want_t) {
        bad.push(format!("h_T[{i}] = {}, formula {want_t}", h_t[i]));
    }
    if !bad.is_empty() {
        return Err(format!("{ctx}: {}", bad.join("; ")));
    }
    let measured = measure_depth(runner, ws, rev).map_err(|e| format!("{ctx}: {e}"))?;
    if measured != fwd_depth {
        return Err(format!(
            "{ctx}: measured {measured}, forward plan {fwd_depth}"
        ));
    }
    Ok(measured)
}

/// Measured depth of reverse PD, BlockDiagonal and DPLR plans (every plan
/// kind of each) against the forward formulas, element by element.
pub fn reverse_depth_all<R: KernelRunner>(runner: &R, label: &str) {
    let sm = runner.sm_count();
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut pd_ws = PdWorkspace::new();
    for (b, t, n) in [(2, 3000, 5), (1, 700, 40), (1, 1, 3)] {
        let shape = PdShape::new(b, t, n);
        for request in pd_requests(t) {
            let dt = parascan::DType::F32;
            let (Ok(fwd), Ok(rev)) = (
                plan_perm_diagonal(shape, dt, request, sm),
                plan_perm_diagonal(shape, dt, request, sm).and_then(|p| p.reversed()),
            ) else {
                failures.push(format!("pd plan {request} for {b}x{t}x{n}"));
                continue;
            };
            runs += 1;
            let r = check_reverse_depth(
                runner,
                &mut pd_ws,
                &rev,
                (b, t, n),
                |s| fwd.depth_at(s),
                |s| rev.depth_at(s),
                fwd.depth,
            );
            match r {
                Ok(d) => eprintln!("  reverse depth {d:>6}  {rev}"),
                Err(e) => failures.push(e),
            }
        }
    }
    let mut bd_ws = BlockDiagonalWorkspace::new();
    for (b, t, nb, k) in [(1, 2000, 2, 2), (2, 100, 1, 3)] {
        let shape = BlockShape::new(b, t, nb, k);
        for request in bd_requests(t) {
            let dt = parascan::DType::F32;
            let (Ok(fwd), Ok(rev)) = (
                plan_block_diagonal(shape, dt, request, sm),
                plan_block_diagonal(shape, dt, request, sm).and_then(|p| p.reversed()),
            ) else {
                failures.push(format!("bd plan {request}"));
                continue;
            };
            runs += 1;
            let r = check_reverse_depth(
                runner,
                &mut bd_ws,
                &rev,
                (b, t, nb * k),
                |s| fwd.depth_at(s),
                |s| rev.depth_at(s),
                fwd.depth,
            );
            match r {
                Ok(d) => eprintln!("  reverse depth {d:>6}  {rev}"),
                Err(e) => failures.push(e),
            }
        }
    }
    let mut dplr_ws = DplrWorkspace::new();
    for (b, t, n, m, r) in [(1, 1000, 4, 3, 1), (2, 50, 3, 2, 2)] {
        let shape = DplrShape::new(b, t, n, m, r);
        for output in [DplrOutput::Readout, DplrOutput::States] {
            for request in dplr_requests(t) {
                let dt = parascan::DType::F32;
                let (Ok(fwd), Ok(rev)) = (
                    plan_dplr(shape, output, dt, request, sm),
                    plan_dplr(shape, output, dt, request, sm).and_then(|p| p.reversed()),
                ) else {
                    failures.push(format!("dplr plan {request}"));
                    continue;
                };
                let w = match output {
                    DplrOutput::Readout => m,
                    DplrOutput::States => n * m,
                };
                runs += 1;
                let res = check_reverse_depth(
                    runner,
                    &mut dplr_ws,
                    &rev,
                    (b, t, w),
                    |s| fwd.depth_at(s),
                    |s| rev.depth_at(s),
                    fwd.depth,
                );
                match res {
                    Ok(d) => eprintln!("  reverse depth {d:>6}  {rev}"),
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    report(label, "reverse depth plans", runs, failures);
}

// ---------------------------------------------------------------------------
// Gradients.
// ---------------------------------------------------------------------------

/// Central finite differences of `loss` with respect to every entry of `x`.
fn fd(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut y = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            y[i] = x[i] + h;
            let up = loss(&y);
            y[i] = x[i] - h;
            let down = loss(&y);
            y[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `Σ gy·out + Σ gh·h_T` of an oracle result.
fn loss_of((out, last): (Vec<f64>, Vec<f64>), gy: &[f64], gh: &[f64]) -> f64 {
    out.iter().zip(gy).map(|(a, b)| a * b).sum::<f64>()
        + last.iter().zip(gh).map(|(a, b)| a * b).sum::<f64>()
}

/// Three gradients (a family's step parameters, `b`, `h0`) and the plan
/// of the reverse scan.
type Grads3<S, P> = (Vec<S>, Vec<S>, Vec<S>, P);

/// A PD gradient case: inputs and the loss's direct gradients (as f64
/// values already rounded to the storage type).
struct PdGrad {
    perm: Vec<u8>,
    d: Vec<f64>,
    b: Vec<f64>,
    h0: Vec<f64>,
    gy: Vec<f64>,
    gh: Vec<f64>,
    dims: (usize, usize, usize),
}

impl PdGrad {
    fn new<S: Storage>(seed: u64, dims: (usize, usize, usize)) -> Self {
        let (batch, len, n) = dims;
        let mut r = common::rng(seed);
        let tot = batch * len * n;
        let perm = random_perms(&mut r, batch * len, n);
        let mut u = |k: usize, lo: f64, hi: f64| f64s(&common::uniform::<S>(&mut r, k, lo, hi));
        PdGrad {
            perm,
            d: u(tot, -0.99, 0.99),
            b: u(tot, -1.0, 1.0),
            h0: u(batch * n, -1.0, 1.0),
            gy: u(tot, -1.0, 1.0),
            gh: u(batch * n, -1.0, 1.0),
            dims,
        }
    }

    fn loss(&self, d: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let (batch, len, n) = self.dims;
        let p = PermDiagonal {
            perm: &self.perm,
            d,
            b,
            h0: Some(h0),
            batch,
            len,
            n,
        };
        loss_of(oracle::perm_diagonal(&p), &self.gy, &self.gh)
    }

    /// The kernels' gradients `(dd, db, dh0)` with the forward states from
    /// a forward kernel scan of the same request.
    fn kernels<R: KernelRunner, S: Storage + bytemuck::Pod>(
        &self,
        runner: &R,
        ws: &mut PdWorkspace,
        request: PlanRequest,
    ) -> parascan::Result<Grads3<S, PdGpuPlan>> {
        let (batch, len, n) = self.dims;
        let (d, b, h0, gy, gh) = (
            cast::<S>(&self.d),
            cast::<S>(&self.b),
            cast::<S>(&self.h0),
            cast::<S>(&self.gy),
            cast::<S>(&self.gh),
        );
        let p = PermDiagonal {
            perm: &self.perm,
            d: &d,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            n,
        };
        let (states, _, _) = parascan::kernels::scan_host(runner, ws, &p, request)?;
        let g = grad::perm_diagonal_kernels(runner, ws, &p, &states, &gy, Some(&gh), request)?;
        Ok((g.d, g.b, g.h0, g.plan))
    }
}

/// Runs `check` for every case and collects failures.
fn grads_report(label: &str, what: &str, results: Vec<Result<(), String>>) {
    let runs = results.len();
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
    report(label, what, runs, failures);
}

fn close3<S: Storage>(
    ctx: &str,
    got: (&[S], &[S], &[S]),
    want: (&[f64], &[f64], &[f64]),
    names: [&str; 3],
    tol: f64,
) -> Result<(), String> {
    check_close(&format!("{ctx} d{}", names[0]), got.0, want.0, tol)?;
    check_close(&format!("{ctx} d{}", names[1]), got.1, want.1, tol)?;
    check_close(&format!("{ctx} d{}", names[2]), got.2, want.2, tol)
}

/// PD gradients on the kernels: finite differences of the f64 oracle on a
/// small shape (f64, relative 1e-6) and the sequential adjoint on long `T`
/// (f32 and f64), small and wide teams, every plan with the look-back.
pub fn pd_gradients<R: KernelRunner>(runner: &R, long: usize, label: &str) {
    let mut ws = PdWorkspace::new();
    let mut results = Vec::new();
    let c = PdGrad::new::<f64>(0x51, (2, 9, 5));
    let want_d = fd(&c.d, |d| c.loss(d, &c.b, &c.h0));
    let want_b = fd(&c.b, |b| c.loss(&c.d, b, &c.h0));
    let want_h0 = fd(&c.h0, |h0| c.loss(&c.d, &c.b, h0));
    for request in pd_requests(9) {
        let ctx = format!("{} pd fd {request}", runner.backend_name());
        results.push(match c.kernels::<R, f64>(runner, &mut ws, request) {
            Ok((dd, db, dh0, plan)) => close3(
                &format!("{ctx} [{plan}]"),
                (&dd, &db, &dh0),
                (&want_d, &want_b, &want_h0),
                ["d", "b", "h0"],
                1e-6,
            ),
            Err(e) => Err(format!("{ctx}: {e}")),
        });
    }
    for (seed, n) in [(0x52u64, 6usize), (0x53, 40)] {
        results.extend(pd_long::<R, f64>(runner, &mut ws, seed, (2, long, n)));
        results.extend(pd_long::<R, f32>(runner, &mut ws, seed + 7, (2, long, n)));
    }
    grads_report(label, "pd gradient runs", results);
}

/// PD gradients on the kernels in f16 and bf16 (inputs, states and
/// gradients in the dtype, accumulation in f32) against the f64 sequential
/// adjoint on the rounded inputs, within `common::grad_tolerance`: small
/// and wide teams, every plan with the look-back.
pub fn pd_gradients_half<R: KernelRunner>(runner: &R, long: usize, label: &str) {
    let mut ws = PdWorkspace::new();
    let mut results = Vec::new();
    for (seed, n) in [(0x62u64, 6usize), (0x63, 40)] {
        results.extend(pd_long::<R, f16>(runner, &mut ws, seed, (2, long, n)));
        results.extend(pd_long::<R, half::bf16>(
            runner,
            &mut ws,
            seed + 7,
            (2, long, n),
        ));
    }
    grads_report(label, "pd f16/bf16 gradient runs", results);
}

fn pd_long<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut PdWorkspace,
    seed: u64,
    dims: (usize, usize, usize),
) -> Vec<Result<(), String>> {
    let (batch, len, n) = dims;
    let c = PdGrad::new::<S>(seed, dims);
    let perm: Vec<usize> = c.perm.iter().map(|&p| p as usize).collect();
    let (dd, db, dh0) =
        adjoint::perm_diagonal(&perm, &c.d, &c.b, &c.h0, &c.gy, &c.gh, batch, len, n);
    let tol = common::grad_tolerance::<S>(len);
    pd_requests(len)
        .into_iter()
        .map(|request| {
            let ctx = format!(
                "{} pd long {} T={len} n={n} {request}",
                runner.backend_name(),
                S::DTYPE
            );
            match c.kernels::<R, S>(runner, ws, request) {
                Ok((gd, gb, gh0, plan)) => close3(
                    &format!("{ctx} [{plan}]"),
                    (&gd, &gb, &gh0),
                    (&dd, &db, &dh0),
                    ["d", "b", "h0"],
                    tol,
                ),
                Err(e) => Err(format!("{ctx}: {e}")),
            }
        })
        .collect()
}

/// A BlockDiagonal gradient case.
struct BdGrad {
    a: Vec<f64>,
    b: Vec<f64>,
    h0: Vec<f64>,
    gy: Vec<f64>,
    gh: Vec<f64>,
    dims: (usize, usize, usize, usize),
}

impl BdGrad {
    fn new<S: Storage>(seed: u64, dims: (usize, usize, usize, usize)) -> Self {
        let (batch, len, nb, k) = dims;
        let (a, b, h0) = bd_inputs::<S>(seed, dims);
        let mut r = common::rng(seed ^ 0xfeed);
        let n = nb * k;
        BdGrad {
            a: f64s(&a),
            b: f64s(&b),
            h0: f64s(&h0),
            gy: f64s(&common::uniform::<S>(&mut r, batch * len * n, -1.0, 1.0)),
            gh: f64s(&common::uniform::<S>(&mut r, batch * n, -1.0, 1.0)),
            dims,
        }
    }

    fn loss(&self, a: &[f64], b: &[f64], h0: &[f64]) -> f64 {
        let (batch, len, nb, k) = self.dims;
        let p = BlockDiagonal {
            a,
            b,
            h0: Some(h0),
            batch,
            len,
            blocks: nb,
            block: k,
        };
        loss_of(oracle::block_diagonal(&p), &self.gy, &self.gh)
    }

    fn kernels<R: KernelRunner, S: Storage + bytemuck::Pod>(
        &self,
        runner: &R,
        ws: &mut BlockDiagonalWorkspace,
        request: PlanRequest,
    ) -> parascan::Result<Grads3<S, BlockPlan>> {
        let (batch, len, nb, k) = self.dims;
        let (a, b, h0, gy, gh) = (
            cast::<S>(&self.a),
            cast::<S>(&self.b),
            cast::<S>(&self.h0),
            cast::<S>(&self.gy),
            cast::<S>(&self.gh),
        );
        let p = BlockDiagonal {
            a: &a,
            b: &b,
            h0: Some(&h0),
            batch,
            len,
            blocks: nb,
            block: k,
        };
        let (states, _, _) = parascan::kernels::scan_host(runner, ws, &p, request)?;
        let g = grad::block_diagonal_kernels(runner, ws, &p, &states, &gy, Some(&gh), request)?;
        Ok((g.a, g.b, g.h0, g.plan))
    }
}

/// BlockDiagonal (and Dense) gradients on the kernels: finite differences
/// on small shapes (f64, relative 1e-6), the sequential adjoint on long `T`.
pub fn bd_gradients<R: KernelRunner>(runner: &R, long: usize, label: &str) {
    let mut ws = BlockDiagonalWorkspace::new();
    let mut results = Vec::new();
    for dims in [(2, 7, 2, 3), (1, 8, 1, 4)] {
        let c = BdGrad::new::<f64>(0x61 + dims.3 as u64, dims);
        let want_a = fd(&c.a, |a| c.loss(a, &c.b, &c.h0));
        let want_b = fd(&c.b, |b| c.loss(&c.a, b, &c.h0));
        let want_h0 = fd(&c.h0, |h0| c.loss(&c.a, &c.b, h0));
        for request in bd_requests(dims.1) {
            let ctx = format!("{} bd fd {dims:?} {request}", runner.backend_name());
            results.push(match c.kernels::<R, f64>(runner, &mut ws, request) {
                Ok((da, db, dh0, plan)) => close3(
                    &format!("{ctx} [{plan}]"),
                    (&da, &db, &dh0),
                    (&want_a, &want_b, &want_h0),
                    ["a", "b", "h0"],
                    1e-6,
                ),
                Err(e) => Err(format!("{ctx}: {e}")),
            });
        }
    }
    for (seed, nb, k) in [(0x62u64, 2usize, 3usize), (0x63, 1, 4)] {
        results.extend(bd_long::<R, f64>(runner, &mut ws, seed, (2, long, nb, k)));
        results.extend(bd_long::<R, f32>(
            runner,
            &mut ws,
            seed + 7,
            (2, long, nb, k),
        ));
    }
    grads_report(label, "block-diagonal gradient runs", results);
}

fn bd_long<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut BlockDiagonalWorkspace,
    seed: u64,
    dims: (usize, usize, usize, usize),
) -> Vec<Result<(), String>> {
    let (batch, len, nb, k) = dims;
    let c = BdGrad::new::<S>(seed, dims);
    let (da, db, dh0) = adjoint::block_diagonal(&c.a, &c.b, &c.h0, &c.gy, &c.gh, batch, len, nb, k);
    let tol = common::tolerance::<S>(len);
    bd_requests(len)
        .into_iter()
        .map(|request| {
            let ctx = format!(
                "{} bd long {} T={len} nb={nb} k={k} {request}",
                runner.backend_name(),
                S::DTYPE
            );
            match c.kernels::<R, S>(runner, ws, request) {
                Ok((ga, gb, gh0, plan)) => close3(
                    &format!("{ctx} [{plan}]"),
                    (&ga, &gb, &gh0),
                    (&da, &db, &dh0),
                    ["a", "b", "h0"],
                    tol,
                ),
                Err(e) => Err(format!("{ctx}: {e}")),
            }
        })
        .collect()
}

/// The kernels' DPLR gradients, seven of them in [`DPLR_FIELDS`] order,
/// with the forward states saved (a forward kernel scan in all-states
/// mode) or recomputed by `dplr_kernels`.
fn dplr_kernel_grads<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DplrWorkspace,
    d: &DplrData<S>,
    gy: &[S],
    gh: &[S],
    request: PlanRequest,
    saved: bool,
) -> parascan::Result<(Vec<Vec<S>>, DplrPlan)> {
    let p = d.problem(DplrOutput::Readout);
    let states = if saved {
        let all = d.problem(DplrOutput::States);
        Some(parascan::kernels::scan_host(runner, ws, &all, request)?.0)
    } else {
        None
    };
    let g = grad::dplr_kernels(runner, ws, &p, states.as_deref(), gy, Some(gh), request)?;
    let q = g.q.unwrap_or_default();
    Ok((vec![g.w, g.u, g.v, g.k, g.x, q, g.h0], g.plan))
}

/// DPLR (readout) gradients on the kernels: finite differences on a small
/// shape (f64, relative 1e-6) and the sequential adjoint on long `T`, with
/// saved and recomputed states; all-states mode is a typed error.
pub fn dplr_gradients<R: KernelRunner>(runner: &R, long: usize, label: &str) {
    let mut ws = DplrWorkspace::new();
    let mut results = Vec::new();
    let dims = (2, 7, 3, 2, 2);
    let d = DplrData::<f64>::new(0x71, dims);
    let mut r = common::rng(0x72);
    let gy: Vec<f64> = common::uniform(&mut r, dims.0 * dims.1 * dims.3, -1.0, 1.0);
    let gh: Vec<f64> = common::uniform(&mut r, dims.0 * dims.2 * dims.3, -1.0, 1.0);
    let want: Vec<Vec<f64>> = (0..7)
        .map(|f| {
            let base = d.to_f64().field(f).clone();
            fd(&base, |x| {
                let mut e = d.to_f64();
                *e.field(f) = x.to_vec();
                loss_of(oracle::dplr(&e.problem(DplrOutput::Readout)), &gy, &gh)
            })
        })
        .collect();
    for request in dplr_requests(dims.1) {
        for saved in [true, false] {
            let ctx = format!("{} dplr fd {request} saved={saved}", runner.backend_name());
            results.push(
                match dplr_kernel_grads(runner, &mut ws, &d, &gy, &gh, request, saved) {
                    Ok((got, plan)) => {
                        got.iter()
                            .zip(&want)
                            .enumerate()
                            .try_for_each(|(f, (g, w))| {
                                check_close(
                                    &format!("{ctx} [{plan}] d{}", DPLR_FIELDS[f]),
                                    g,
                                    w,
                                    1e-6,
                                )
                            })
                    }
                    Err(e) => Err(format!("{ctx}: {e}")),
                },
            );
        }
    }
    results.extend(dplr_long::<R, f64>(runner, &mut ws, 0x73, long));
    results.extend(dplr_long::<R, f32>(runner, &mut ws, 0x74, long));
    // All-states mode has no rank-one direct gradient: a typed error.
    let all = d.problem(DplrOutput::States);
    let gy_all = vec![0.0f64; dims.0 * dims.1 * dims.2 * dims.3];
    results.push(
        match grad::dplr_kernels(
            runner,
            &mut ws,
            &all,
            None,
            &gy_all,
            None,
            PlanRequest::Auto,
        ) {
            Err(parascan::Error::Unsupported { .. }) => Ok(()),
            other => Err(format!(
                "dplr_kernels in all-states mode: expected Unsupported, got {:?}",
                other.map(|g| g.plan.to_string())
            )),
        },
    );
    grads_report(label, "dplr gradient runs", results);
}

fn dplr_long<R: KernelRunner, S: Storage + bytemuck::Pod>(
    runner: &R,
    ws: &mut DplrWorkspace,
    seed: u64,
    len: usize,
) -> Vec<Result<(), String>> {
    let dims = (2, len, 4, 3, 2);
    let d = DplrData::<S>::new(seed, dims);
    let e = d.to_f64();
    let mut r = common::rng(seed + 1);
    let gy: Vec<S> = common::uniform(&mut r, dims.0 * len * dims.3, -1.0, 1.0);
    let gh: Vec<S> = common::uniform(&mut r, dims.0 * dims.2 * dims.3, -1.0, 1.0);
    let want = adjoint::dplr(
        &e.w,
        &e.u,
        &e.v,
        &e.k,
        &e.x,
        &e.q,
        &e.h0,
        &f64s(&gy),
        &f64s(&gh),
        dims,
        true,
    );
    let want = [want.w, want.u, want.v, want.k, want.x, want.q, want.h0];
    let tol = common::tolerance::<S>(len);
    dplr_requests(len)
        .into_iter()
        .map(|request| {
            let saved = request == PlanRequest::Auto;
            let ctx = format!(
                "{} dplr long {} T={len} {request} saved={saved}",
                runner.backend_name(),
                S::DTYPE
            );
            match dplr_kernel_grads(runner, ws, &d, &gy, &gh, request, saved) {
                Ok((got, plan)) => got
                    .iter()
                    .zip(&want)
                    .enumerate()
                    .try_for_each(|(f, (g, w))| {
                        check_close(&format!("{ctx} [{plan}] d{}", DPLR_FIELDS[f]), g, w, tol)
                    }),
                Err(e) => Err(format!("{ctx}: {e}")),
            }
        })
        .collect()
}
