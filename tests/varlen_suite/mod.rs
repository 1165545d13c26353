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

use std::ops::Range;

use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::backend::launch::KernelRunner;
use parascan::family::diagonal::Diagonal;
use parascan::family::varlen::Varlen;
use parascan::family::Layout;
use parascan::kernels::{scan_host_planned, GpuPlanKind, KernelScan, Workspace};
use parascan::{oracle, Error, PlanRequest, Storage};
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

    /// Checks a packed run's outputs `out` (`[B,T,D]`) and final states
    /// `h_last` (`[B,N,D]`) sequence by sequence against the f64 oracle
    /// and against a separate call per sequence on `runner`
    /// ([`check_sequences`]).
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, d) = (self.len(), self.dim);
        let h0s = with_h0.then_some(&self.h0[..]);
        let dims = (self.batch, d, &self.cu[..]);
        check_sequences(dims, h0s, (out, h_last), what, |row, steps, h0| {
            let r = (row * t + steps.start) * d..(row * t + steps.end) * d;
            let alone = Diagonal {
                a: &self.a[r.clone()],
                b: &self.b[r],
                h0: Some(h0),
                batch: 1,
                len: steps.len(),
                dim: d,
                layout: Layout::Btd,
            };
            separate(runner, &alone, oracle::diagonal(&alone), what)
        })
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
    let runs = format!("{what} {lens:?} B={batch} D={dim} h0={with_h0}");
    check_plans(runner, &packed, true, &runs, |out, h_last, what| {
        data.check(runner, with_h0, out, h_last, what)
    })?;
    let (out, last) = device_api(runner, &packed, |plan| {
        plan.inner.lookback_prefix_every = 3;
    })
    .map_err(|e| format!("{what} (device API): {e}"))?;
    let what = format!("{what} look-back prefix every 3rd chunk");
    data.check(runner, with_h0, &out, &last, &what)
}

/// `packed` through the device API (`launch_scan_buffers` on its uploaded
/// inputs and poisoned outputs, by [`scan_host_planned`]) on its look-back
/// plan after `edit`: e.g. a plan whose chunks publish an inclusive prefix
/// only every third chunk, so that successors go through the aggregate
/// path. Returns every output and the final states.
pub fn device_api<K: KernelScan, R: KernelRunner>(
    runner: &R,
    packed: &K,
    edit: impl FnOnce(&mut K::Plan),
) -> parascan::Result<Outputs<K::Elem>> {
    let mut plan = packed.plan(runner.sm_count(), PlanRequest::LookBack)?;
    edit(&mut plan);
    let (out, last, _) = scan_host_planned(runner, &mut Workspace::new(), packed, plan)?;
    Ok((out, last))
}

/// One very long sequence among many short (and empty) ones.
pub fn long_among_short(long: usize) -> Vec<usize> {
    let mut lens: Vec<usize> = (0..24).map(|i| i % 3).collect();
    lens.insert(11, long);
    lens
}

/// `r` is the typed error of bad offsets: [`Error::SeqOffsets`] naming
/// `cu_seqlens` at `index`.
pub fn expect_offsets<T: std::fmt::Debug>(r: parascan::Result<T>, index: usize) {
    match r {
        Err(Error::SeqOffsets { arg, index: i, .. }) => {
            assert_eq!(arg, "cu_seqlens");
            assert_eq!(i, index);
        }
        other => panic!("expected Error::SeqOffsets at {index}, got {other:?}"),
    }
}

/// Runs `packed` under every plan of [`plans`] on `runner` (through
/// [`KernelScan::kernel_scan`]; the look-back plan only if `lookback`),
/// checks that the plans with a required kind ran it, and checks each run's
/// outputs and final states with `check(out, h_last, what)`.
pub fn check_plans<K: KernelScan, R: KernelRunner>(
    runner: &R,
    packed: &K,
    lookback: bool,
    what: &str,
    check: impl Fn(&[K::Elem], &[K::Elem], &str) -> Result<(), String>,
) -> Result<(), String> {
    for (req, kind) in plans() {
        if req == PlanRequest::LookBack && !lookback {
            continue;
        }
        let what = format!("{what} {req}");
        let run = packed
            .kernel_scan(runner, req)
            .map_err(|e| format!("{what}: {e}"))?;
        if let Some(kind) = kind {
            if !run.plan.kind.starts_with(kind.label()) {
                return Err(format!("{what}: ran {} instead of {}", run.plan.kind, kind));
            }
        }
        check(&run.out, &run.h_last, &what)?;
    }
    Ok(())
}

/// Every output and the final states of a run.
pub type Outputs<S> = (Vec<S>, Vec<S>);

/// One sequence run alone: the f64 oracle's outputs and final state, and a
/// separate kernel call's.
pub type Alone<S> = (Outputs<f64>, Outputs<S>);

/// `problem` (one sequence) alone: `oracle` (the f64 oracle's outputs and
/// final state on it) and a separate kernel call on `runner`.
pub fn separate<K: KernelScan, R: KernelRunner>(
    runner: &R,
    problem: &K,
    oracle: (Vec<f64>, Vec<f64>),
    what: &str,
) -> Result<Alone<K::Elem>, String> {
    let sep = problem
        .kernel_scan(runner, PlanRequest::Auto)
        .map_err(|e| format!("{what}: separate call: {e}"))?;
    Ok((oracle, (sep.out, sep.h_last)))
}

/// Checks a packed run's outputs `out` (`[B,T,S]`) and final states
/// `h_last` (`[B,N,S]`) sequence by sequence, for `(B, S, offsets)` in
/// `dims` and the initial states `h0s` (`[B,N,S]`, or zeros): an empty
/// sequence must return its `h0` bit for bit ([`check_empty`]), any other
/// the outputs of `alone(row, steps, h0)`, the steps `steps` of row `row`
/// run alone from `h0` ([`check_sequence`]). `Err` names the first
/// sequence that differs.
pub fn check_sequences<S: Storage + bytemuck::Pod>(
    (batch, width, cu): (usize, usize, &[usize]),
    h0s: Option<&[S]>,
    (out, h_last): (&[S], &[S]),
    what: &str,
    alone: impl Fn(usize, Range<usize>, &[S]) -> Result<Alone<S>, String>,
) -> Result<(), String> {
    let (t, ns) = (*cu.last().unwrap(), cu.len() - 1);
    if out.len() != batch * t * width || h_last.len() != batch * ns * width {
        return Err(format!(
            "{what}: output lengths {} and {}",
            out.len(),
            h_last.len()
        ));
    }
    for b in 0..batch {
        for s in 0..ns {
            let state = (b * ns + s) * width..(b * ns + s + 1) * width;
            let h_t = &h_last[state.clone()];
            let h0 = h0s.map_or_else(|| vec![S::from_f64(0.0); width], |h0s| h0s[state].to_vec());
            let len = cu[s + 1] - cu[s];
            if len == 0 {
                check_empty(what, b, s, h_t, &h0)?;
                continue;
            }
            let got = &out[(b * t + cu[s]) * width..(b * t + cu[s + 1]) * width];
            let (want, sep) = alone(b, cu[s]..cu[s + 1], &h0)?;
            check_sequence(
                what,
                b,
                s,
                len,
                got,
                h_t,
                (&want.0, &want.1),
                (&sep.0, &sep.1),
            )?;
        }
    }
    Ok(())
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
