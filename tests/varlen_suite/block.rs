//! Packed variable-length batches on the BlockDiagonal kernels, shared by
//! `tests/emu_varlen_block.rs` (SIMT emulator, every fiber order) and
//! `tests/cuda_varlen.rs`: every sequence against the f64 oracle on that
//! sequence alone and a separate kernel call on it ([`super::check_sequence`]);
//! an empty sequence returns its `h0` bit for bit. The partitions, plans
//! and chunk come from the parent module (the BlockDiagonal kernels have no
//! look-back plan: it is skipped here and its typed error tested apart).

use parascan::backend::launch::KernelRunner;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::varlen::Varlen;
use parascan::kernels::KernelScan;
use parascan::{oracle, PlanRequest, Storage};

use super::{check_empty, check_sequence, offsets, plans};
use crate::common::{rng, uniform};

/// One packed BlockDiagonal problem's data: `a`: `[B,T,nb,k,k]`; `b`:
/// `[B,T,n]`; `h0`: `[B,N,n]`.
pub struct PackedBd<S> {
    pub batch: usize,
    pub blocks: usize,
    pub block: usize,
    pub cu: Vec<usize>,
    pub a: Vec<S>,
    pub b: Vec<S>,
    pub h0: Vec<S>,
}

impl<S: Storage + bytemuck::Pod> PackedBd<S> {
    /// Block entries in `±0.9/k` (row sums below 0.9: contractions), inputs
    /// and `h0` in `[-1, 1)`.
    pub fn new(lens: &[usize], batch: usize, blocks: usize, block: usize, seed: u64) -> Self {
        let cu = offsets(lens);
        let t = *cu.last().unwrap();
        let mut r = rng(seed);
        let n = blocks * block;
        let scale = 0.9 / block as f64;
        PackedBd {
            batch,
            blocks,
            block,
            a: uniform(&mut r, batch * t * blocks * block * block, -scale, scale),
            b: uniform(&mut r, batch * t * n, -1.0, 1.0),
            h0: uniform(&mut r, batch * lens.len() * n, -1.0, 1.0),
            cu,
        }
    }

    pub fn len(&self) -> usize {
        *self.cu.last().unwrap()
    }

    pub fn n(&self) -> usize {
        self.blocks * self.block
    }

    pub fn sequences(&self) -> usize {
        self.cu.len() - 1
    }

    pub fn problem(&self) -> BlockDiagonal<'_, S> {
        BlockDiagonal {
            a: &self.a,
            b: &self.b,
            h0: None,
            batch: self.batch,
            len: self.len(),
            blocks: self.blocks,
            block: self.block,
        }
    }

    /// Checks a packed run's outputs `out` (`[B,T,n]`) and final states
    /// `h_last` (`[B,N,n]`) sequence by sequence. `Err` names the first
    /// sequence that differs.
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, n, ns) = (self.len(), self.n(), self.sequences());
        let per_step = self.blocks * self.block * self.block;
        if out.len() != self.batch * t * n || h_last.len() != self.batch * ns * n {
            return Err(format!(
                "{what}: output lengths {} and {}",
                out.len(),
                h_last.len()
            ));
        }
        for b in 0..self.batch {
            for s in 0..ns {
                let h_t = &h_last[(b * ns + s) * n..(b * ns + s + 1) * n];
                let h0 = if with_h0 {
                    self.h0[(b * ns + s) * n..(b * ns + s + 1) * n].to_vec()
                } else {
                    vec![S::from_f64(0.0); n]
                };
                let (o0, o1) = (self.cu[s], self.cu[s + 1]);
                let len = o1 - o0;
                if len == 0 {
                    check_empty(what, b, s, h_t, &h0)?;
                    continue;
                }
                let sa = &self.a[(b * t + o0) * per_step..(b * t + o1) * per_step];
                let sb = &self.b[(b * t + o0) * n..(b * t + o1) * n];
                let got = &out[(b * t + o0) * n..(b * t + o1) * n];
                let alone = BlockDiagonal {
                    a: sa,
                    b: sb,
                    h0: Some(&h0),
                    batch: 1,
                    len,
                    blocks: self.blocks,
                    block: self.block,
                };
                let (want_h, want_t) = oracle::block_diagonal(&alone);
                let sep = alone
                    .kernel_scan(runner, PlanRequest::Auto)
                    .map_err(|e| format!("{what}: separate call: {e}"))?;
                check_sequence(
                    what,
                    b,
                    s,
                    len,
                    got,
                    h_t,
                    (&want_h, &want_t),
                    (&sep.out, &sep.h_last),
                )?;
            }
        }
        Ok(())
    }
}

/// Runs the packed BlockDiagonal problem of `lens` under every plan of the
/// BlockDiagonal kernels on `runner` and checks every sequence.
#[allow(clippy::too_many_arguments)]
pub fn check_partition_bd<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    lens: &[usize],
    batch: usize,
    blocks: usize,
    block: usize,
    with_h0: bool,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let data = PackedBd::<S>::new(lens, batch, blocks, block, seed);
    if data.len() == 0 {
        return Ok(());
    }
    let h0 = with_h0.then_some(&data.h0[..]);
    let packed = Varlen::new(data.problem(), &data.cu, h0).map_err(|e| e.to_string())?;
    for (req, kind) in plans() {
        if req == PlanRequest::LookBack {
            continue;
        }
        let what = format!("{what} BD {lens:?} B={batch} nb={blocks} k={block} h0={with_h0} {req}");
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
    Ok(())
}
