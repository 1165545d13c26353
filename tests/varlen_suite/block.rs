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
use parascan::{oracle, Storage};

use super::{check_plans, check_sequences, offsets, separate};
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
    /// `h_last` (`[B,N,n]`) sequence by sequence ([`check_sequences`]).
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, n) = (self.len(), self.n());
        let per_step = self.blocks * self.block * self.block;
        let h0s = with_h0.then_some(&self.h0[..]);
        let dims = (self.batch, n, &self.cu[..]);
        check_sequences(dims, h0s, (out, h_last), what, |row, steps, h0| {
            let (o0, o1) = (row * t + steps.start, row * t + steps.end);
            let alone = BlockDiagonal {
                a: &self.a[o0 * per_step..o1 * per_step],
                b: &self.b[o0 * n..o1 * n],
                h0: Some(h0),
                batch: 1,
                len: steps.len(),
                blocks: self.blocks,
                block: self.block,
            };
            separate(runner, &alone, oracle::block_diagonal(&alone), what)
        })
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
    let runs = format!("{what} BD {lens:?} B={batch} nb={blocks} k={block} h0={with_h0}");
    check_plans(runner, &packed, false, &runs, |out, h_last, what| {
        data.check(runner, with_h0, out, h_last, what)
    })
}
