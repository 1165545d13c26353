//! Packed variable-length batches (`cu_seqlens`) on the Diagonal kernels,
//! shared by `tests/emu_varlen.rs` (SIMT emulator, every fiber order) and
//! `tests/cuda_varlen.rs` (a GPU, or the emulated CUDA driver in CI).
//!
//! The reference of a packed run is every sequence on its own: the f64
//! oracle on that sequence's inputs from that sequence's `h0` (outputs and
//! `h_T`), and a separate kernel call per sequence on the same runner. A
//! zero-length sequence must return `h_T = h0` bit for bit.
//!
//! Include it with `mod common; mod varlen_suite;`. The PermDiagonal and
//! BlockDiagonal counterparts of [`Packed`] and [`check_partition`] are in
//! [`perm`] and [`block`]; they compare sequences with [`check_empty`] and
//! [`check_sequence`].
#![allow(dead_code)]

pub mod block;
pub mod perm;

use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::backend::launch::KernelRunner;
use parascan::family::diagonal::Diagonal;
use parascan::family::varlen::Varlen;
use parascan::family::Layout;
use parascan::kernels::varlen::{plan_diagonal_varlen, VarlenBuffers, VarlenWorkspace};
use parascan::kernels::{launch_scan_buffers, DiagShape, GpuPlanKind, KernelScan};
use parascan::{oracle, PlanRequest, Storage};
use proptest::prelude::*;

use crate::common::{rng, tolerance, uniform};

/// The chunk the partitions are aligned to ("multiples of the chunk").
pub const CHUNK: usize = 4;

/// The emulator under every fiber order (forward, reverse, shuffled).
pub fn orders() -> Vec<EmuBackend> {
    let runners = vec![
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(0x5eed),
    ];
    let seen: Vec<FiberOrder> = runners.iter().map(EmuBackend::order).collect();
    assert_eq!(seen, FiberOrder::ALL, "every fiber order is covered");
    runners
}

/// A sequence length: 0, 1, odd, a multiple of the chunk, or anything up to 40.
pub fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        (1usize..10).prop_map(|k| 2 * k + 1),
        (1usize..4).prop_map(|k| k * CHUNK),
        2usize..40,
    ]
}

/// A random partition: 1 to 7 sequence lengths.
pub fn lengths() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(length(), 1..8)
}

/// Every plan kind (the Diagonal and PermDiagonal kernels share the labels P0–P4) with the kind it must resolve
/// to (`None`: whatever the planner picks), on chunks that do and do not
/// divide the sequence lengths.
pub fn plans() -> Vec<(PlanRequest, Option<GpuPlanKind>)> {
    vec![
        (PlanRequest::Sequential, Some(GpuPlanKind::Sequential)),
        (PlanRequest::Chunk(CHUNK), None),
        (PlanRequest::Chunk(3), None),
        (PlanRequest::MinDepth, None),
        (PlanRequest::Auto, None),
        (PlanRequest::LookBack, Some(GpuPlanKind::LookBack)),
    ]
}

/// Offsets `[0, l0, l0 + l1, …]`.
pub fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// One packed problem's data: `a`, `b`: `[B,T,D]`; `h0`: `[B,N,D]`.
pub struct Packed<S> {
    pub batch: usize,
    pub dim: usize,
    pub cu: Vec<usize>,
    pub a: Vec<S>,
    pub b: Vec<S>,
    pub h0: Vec<S>,
}

impl<S: Storage + bytemuck::Pod> Packed<S> {
    pub fn new(lens: &[usize], batch: usize, dim: usize, seed: u64) -> Self {
        let cu = offsets(lens);
        let t = *cu.last().unwrap();
        let mut r = rng(seed);
        Packed {
            batch,
            dim,
            a: uniform(&mut r, batch * t * dim, 0.5, 1.0),
            b: uniform(&mut r, batch * t * dim, -1.0, 1.0),
            h0: uniform(&mut r, batch * lens.len() * dim, -1.0, 1.0),
            cu,
        }
    }

    pub fn len(&self) -> usize {
        *self.cu.last().unwrap()
    }

    pub fn sequences(&self) -> usize {
        self.cu.len() - 1
    }

    pub fn problem(&self) -> Diagonal<'_, S> {
        Diagonal {
            a: &self.a,
            b: &self.b,
            h0: None,
            batch: self.batch,
            len: self.len(),
            dim: self.dim,
            layout: Layout::Btd,
        }
    }

    /// Row `b`, sequence `s`: its `a`, `b` (`[1,len,D]`) and `h0` (`[1,D]`).
    fn sub(&self, b: usize, s: usize) -> (Vec<S>, Vec<S>, Vec<S>) {
        let (t, d, n) = (self.len(), self.dim, self.sequences());
        let r = (b * t + self.cu[s]) * d..(b * t + self.cu[s + 1]) * d;
        let h0 = self.h0[(b * n + s) * d..(b * n + s + 1) * d].to_vec();
        (self.a[r.clone()].to_vec(), self.b[r].to_vec(), h0)
    }

    /// Checks a packed run's outputs `out` (`[B,T,D]`) and final states
    /// `h_last` (`[B,N,D]`) sequence by sequence against the f64 oracle
    /// and against a separate call per sequence on `runner`. `Err` names
    /// the first sequence that differs.
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, d, n) = (self.len(), self.dim, self.sequences());
        if out.len() != self.batch * t * d || h_last.len() != self.batch * n * d {
            return Err(format!(
                "{what}: output lengths {} and {}",
                out.len(),
                h_last.len()
            ));
        }
        for b in 0..self.batch {
            for s in 0..n {
                let h_t = &h_last[(b * n + s) * d..(b * n + s + 1) * d];
                let (sa, sb, sh0) = self.sub(b, s);
                let h0 = if with_h0 {
                    sh0
                } else {
                    vec![S::from_f64(0.0); d]
                };
                let len = self.cu[s + 1] - self.cu[s];
                if len == 0 {
                    let same =
                        bytemuck::cast_slice::<S, u8>(h_t) == bytemuck::cast_slice::<S, u8>(&h0);
                    if !same {
                        return Err(format!("{what}: empty sequence {s} of row {b}: h_T != h0"));
                    }
                    continue;
                }
                let got = &out[(b * t + self.cu[s]) * d..(b * t + self.cu[s + 1]) * d];
                let alone = Diagonal {
                    a: &sa,
                    b: &sb,
                    h0: Some(&h0),
                    batch: 1,
                    len,
                    dim: d,
                    layout: Layout::Btd,
                };
                let (want_h, want_t) = oracle::diagonal(&alone);
                let tol = tolerance::<S>(len);
                let (e_h, e_t) = (oracle::rel_l2(got, &want_h), oracle::rel_l2(h_t, &want_t));
                if !(e_h <= tol && e_t <= tol) {
                    return Err(format!(
                        "{what}: sequence {s} (len {len}) of row {b}: oracle error h {e_h:.2e}, \
                         h_T {e_t:.2e} > {tol:.2e}"
                    ));
                }
                let sep = alone
                    .kernel_scan(runner, PlanRequest::Auto)
                    .map_err(|e| format!("{what}: separate call: {e}"))?;
                let as_f64 = |v: &[S]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
                let (s_h, s_t) = (
                    oracle::rel_l2(got, &as_f64(&sep.out)),
                    oracle::rel_l2(h_t, &as_f64(&sep.h_last)),
                );
                if !(s_h <= 2.0 * tol && s_t <= 2.0 * tol) {
                    return Err(format!(
                        "{what}: sequence {s} (len {len}) of row {b}: differs from its own call: \
                         h {s_h:.2e}, h_T {s_t:.2e} > {:.2e}",
                        2.0 * tol
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs the packed problem of `lens` under every plan on `runner` (through
/// [`KernelScan::kernel_scan`]) and checks every sequence; also the device
/// API with a look-back plan that publishes prefixes only every third chunk
/// (successors go through the aggregate path).
pub fn check_partition<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    lens: &[usize],
    batch: usize,
    dim: usize,
    with_h0: bool,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let data = Packed::<S>::new(lens, batch, dim, seed);
    if data.len() == 0 {
        return Ok(());
    }
    let h0 = with_h0.then_some(&data.h0[..]);
    let packed = Varlen::new(data.problem(), &data.cu, h0).map_err(|e| e.to_string())?;
    for (req, kind) in plans() {
        let what = format!("{what} {lens:?} B={batch} D={dim} h0={with_h0} {req}");
        let run = packed
            .kernel_scan(runner, req)
            .map_err(|e| format!("{what}: {e}"))?;
        if let Some(kind) = kind {
            if !run.plan.kind.starts_with(kind.label()) {
                return Err(format!("{what}: ran {} instead of {}", run.plan.kind, kind));
            }
        }
        data.check(runner, with_h0, &run.out, &run.h_last, &what)?;
    }
    lookback_aggregate_path(runner, &data, with_h0, what)
}

/// The device API (`launch_scan_buffers`) on a look-back plan whose chunks
/// publish an inclusive prefix only every third chunk.
fn lookback_aggregate_path<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    data: &Packed<S>,
    with_h0: bool,
    what: &str,
) -> Result<(), String> {
    let shape = DiagShape::new(data.batch, data.len(), data.dim);
    let mut plan = plan_diagonal_varlen(
        shape,
        &data.cu,
        S::DTYPE,
        PlanRequest::LookBack,
        runner.sm_count(),
    )
    .map_err(|e| e.to_string())?;
    plan.inner.lookback_prefix_every = 3;
    let e = |e: parascan::Error| format!("{what} (device API): {e}");
    let a = runner.upload(&data.a).map_err(e)?;
    let b = runner.upload(&data.b).map_err(e)?;
    let h0 = runner.upload(&data.h0).map_err(e)?;
    let h = runner
        .alloc(data.a.len() * std::mem::size_of::<S>())
        .map_err(e)?;
    let h_t = runner
        .alloc(data.h0.len() * std::mem::size_of::<S>())
        .map_err(e)?;
    runner.fill(&h_t, 0xFF).map_err(e)?;
    let mut ws = VarlenWorkspace::new();
    let bufs = VarlenBuffers {
        a: (&a).into(),
        b: (&b).into(),
        h0: with_h0.then(|| (&h0).into()),
        h: (&h).into(),
        h_t: (&h_t).into(),
    };
    launch_scan_buffers(runner, &mut ws, &plan, bufs).map_err(e)?;
    let mut out = vec![S::from_f64(0.0); data.a.len()];
    let mut last = vec![S::from_f64(0.0); data.h0.len()];
    runner.download(&h, &mut out).map_err(e)?;
    runner.download(&h_t, &mut last).map_err(e)?;
    data.check(
        runner,
        with_h0,
        &out,
        &last,
        &format!("{what} look-back prefix every 3rd chunk"),
    )
}

/// One very long sequence among many short (and empty) ones.
pub fn long_among_short(long: usize) -> Vec<usize> {
    let mut lens: Vec<usize> = (0..24).map(|i| i % 3).collect();
    lens.insert(11, long);
    lens
}

/// An empty sequence `s` of row `row` must return its `h0` bit for bit.
pub fn check_empty<S: Storage + bytemuck::Pod>(
    what: &str,
    row: usize,
    s: usize,
    h_t: &[S],
    h0: &[S],
) -> Result<(), String> {
    if bytemuck::cast_slice::<S, u8>(h_t) != bytemuck::cast_slice::<S, u8>(h0) {
        return Err(format!(
            "{what}: empty sequence {s} of row {row}: h_T != h0"
        ));
    }
    Ok(())
}

/// Sequence `s` (of `len ≥ 1` steps) of row `row` of a packed run: its
/// outputs `got` and final state `h_t` against the f64 oracle on that
/// sequence alone (`want`: outputs, final state; tolerance
/// [`tolerance`]) and against a separate kernel call on it (`alone`:
/// outputs, final state; twice the tolerance).
#[allow(clippy::too_many_arguments)]
pub fn check_sequence<S: Storage>(
    what: &str,
    row: usize,
    s: usize,
    len: usize,
    got: &[S],
    h_t: &[S],
    want: (&[f64], &[f64]),
    alone: (&[S], &[S]),
) -> Result<(), String> {
    let tol = tolerance::<S>(len);
    let (e_h, e_t) = (oracle::rel_l2(got, want.0), oracle::rel_l2(h_t, want.1));
    if !(e_h <= tol && e_t <= tol) {
        return Err(format!(
            "{what}: sequence {s} (len {len}) of row {row}: oracle error h {e_h:.2e}, \
             h_T {e_t:.2e} > {tol:.2e}"
        ));
    }
    let as_f64 = |v: &[S]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let (s_h, s_t) = (
        oracle::rel_l2(got, &as_f64(alone.0)),
        oracle::rel_l2(h_t, &as_f64(alone.1)),
    );
    if !(s_h <= 2.0 * tol && s_t <= 2.0 * tol) {
        return Err(format!(
            "{what}: sequence {s} (len {len}) of row {row}: differs from its own call: \
             h {s_h:.2e}, h_T {s_t:.2e} > {:.2e}",
            2.0 * tol
        ));
    }
    Ok(())
}
