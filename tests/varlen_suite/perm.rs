//! Packed variable-length batches on the PermDiagonal kernels, shared by
//! `tests/emu_varlen_perm.rs` (SIMT emulator, every fiber order) and
//! `tests/cuda_varlen.rs`: the reference of a packed run is every sequence
//! on its own, the f64 oracle on that sequence's inputs from that
//! sequence's `h0`, and a separate kernel call per sequence on the same
//! runner; an empty sequence must return `h_T = h0` bit for bit. The
//! partitions, plans and chunk come from the parent module.

use parascan::backend::launch::KernelRunner;
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::varlen::Varlen;
use parascan::{oracle, Storage};
use rand::seq::SliceRandom;

use super::{check_plans, check_sequences, device_api, offsets, separate};
use crate::common::{rng, uniform};

/// One packed PD problem's data: `perm`, `d`, `b`: `[B,T,n]`; `h0`: `[B,N,n]`.
pub struct PackedPd<S> {
    pub batch: usize,
    pub n: usize,
    pub cu: Vec<usize>,
    pub perm: Vec<u8>,
    pub d: Vec<S>,
    pub b: Vec<S>,
    pub h0: Vec<S>,
}

impl<S: Storage + bytemuck::Pod> PackedPd<S> {
    /// Random permutations, scales in `[0.5, 1)` of random sign (so a
    /// carry that leaked across a boundary shows), inputs and `h0` in
    /// `[-1, 1)`.
    pub fn new(lens: &[usize], batch: usize, n: usize, seed: u64) -> Self {
        let cu = offsets(lens);
        let t = *cu.last().unwrap();
        let mut r = rng(seed);
        let mut perm = Vec::with_capacity(batch * t * n);
        let mut row: Vec<u8> = (0..n).map(|i| i as u8).collect();
        for _ in 0..batch * t {
            row.shuffle(&mut r);
            perm.extend_from_slice(&row);
        }
        let mut d: Vec<S> = uniform(&mut r, batch * t * n, 0.5, 1.0);
        let sign: Vec<f64> = uniform(&mut r, d.len(), -1.0, 1.0);
        for (x, s) in d.iter_mut().zip(sign) {
            if s < 0.0 {
                *x = S::from_f64(-x.to_f64());
            }
        }
        PackedPd {
            batch,
            n,
            perm,
            d,
            b: uniform(&mut r, batch * t * n, -1.0, 1.0),
            h0: uniform(&mut r, batch * lens.len() * n, -1.0, 1.0),
            cu,
        }
    }

    pub fn len(&self) -> usize {
        *self.cu.last().unwrap()
    }

    pub fn sequences(&self) -> usize {
        self.cu.len() - 1
    }

    pub fn problem(&self) -> PermDiagonal<'_, S> {
        PermDiagonal {
            perm: &self.perm,
            d: &self.d,
            b: &self.b,
            h0: None,
            batch: self.batch,
            len: self.len(),
            n: self.n,
        }
    }

    /// Checks a packed run's outputs `out` (`[B,T,n]`) and final states
    /// `h_last` (`[B,N,n]`) sequence by sequence against the f64 oracle and
    /// a separate call per sequence on `runner` ([`check_sequences`]).
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, n) = (self.len(), self.n);
        let h0s = with_h0.then_some(&self.h0[..]);
        let dims = (self.batch, n, &self.cu[..]);
        check_sequences(dims, h0s, (out, h_last), what, |row, steps, h0| {
            let r = (row * t + steps.start) * n..(row * t + steps.end) * n;
            let alone = PermDiagonal {
                perm: &self.perm[r.clone()],
                d: &self.d[r.clone()],
                b: &self.b[r],
                h0: Some(h0),
                batch: 1,
                len: steps.len(),
                n,
            };
            separate(runner, &alone, oracle::perm_diagonal(&alone), what)
        })
    }
}

/// Runs the packed PD problem of `lens` under every plan on `runner`
/// (through `KernelScan::kernel_scan`) and checks every sequence; also
/// the device API with a look-back plan that publishes prefixes only every
/// third chunk (successors go through the aggregate path).
#[allow(clippy::too_many_arguments)]
pub fn check_partition_pd<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    lens: &[usize],
    batch: usize,
    n: usize,
    with_h0: bool,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let data = PackedPd::<S>::new(lens, batch, n, seed);
    if data.len() == 0 {
        return Ok(());
    }
    let h0 = with_h0.then_some(&data.h0[..]);
    let packed = Varlen::new(data.problem(), &data.cu, h0).map_err(|e| e.to_string())?;
    let runs = format!("{what} PD {lens:?} B={batch} n={n} h0={with_h0}");
    check_plans(runner, &packed, true, &runs, |out, h_last, what| {
        data.check(runner, with_h0, out, h_last, what)
    })?;
    let (out, last) = device_api(runner, &packed, |plan| {
        plan.inner.lookback_prefix_every = 3;
    })
    .map_err(|e| format!("{what} PD (device API): {e}"))?;
    let what = format!("{what} PD look-back prefix every 3rd chunk");
    data.check(runner, with_h0, &out, &last, &what)
}
