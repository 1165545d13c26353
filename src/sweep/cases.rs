//! Random inputs for every family, and one type-erased problem type so the
//! sweep and `check` can treat all families alike.
//!
//! Inputs keep the states bounded however long the sequence (so long-`T`
//! timings measure arithmetic on normal numbers, and errors stay relative
//! to values of order one):
//! - diagonal: decays `a ∈ [0.5, 1)`, `b ∈ [−1, 1)`;
//! - perm-diagonal: uniformly random permutations, `|d| < 1`, `b ∈ [−1, 1)`;
//! - block-diagonal / dense: block entries in `[−1, 1)/k`, so every row's
//!   absolute sum is below 1 (an ∞-norm contraction), `b ∈ [−1, 1)`;
//! - DPLR: DeltaNet-like, `w = 1`, `u_r = −β_r κ_r`, `v_r = κ_r` with unit
//!   `κ_0 = k_t` (the input key) and further random unit `κ_r`,
//!   `β_r ∈ [0, 1)/R`, so `A_t = I − Σ β_r κ_r κ_rᵀ` has eigenvalues in
//!   `(0, 1]`; `x, q ∈ [−1, 1)`.
//!
//! `h_0`, when given, is uniform in `[−1, 1)`. Generation is parallel, with
//! SplitMix64 as the generator: element `i` of a uniform tensor is a pure
//! function of `(seed, i)`, and permutations and DPLR factors use one
//! SplitMix64 stream per block of rows, so the inputs depend only on the
//! seed, not on the thread count. SplitMix64 (rather than ChaCha) because
//! generation must not dominate a sweep: a `T = 2^20` case draws ~10^8
//! values, and these are benchmark inputs, not cryptography.

use rayon::prelude::*;

use super::config::Shape;
use super::Result;
use crate::dtype::Storage;
use crate::error::Error;
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::diagonal::Diagonal;
use crate::family::dplr::{Dplr, DplrOutput};
use crate::family::perm_diagonal::PermDiagonal;
use crate::family::{Layout, LinearProblem};
use crate::kernels::KernelScan;
use crate::oracle;
use crate::scan::plan::ScanShape;
use crate::scan::Plan;

/// Any family's problem behind one type: forwards every call to the
/// family's own [`LinearProblem`] impl, so
/// [`crate::backend::Cpu::scan_into`] and the sweep take all families
/// alike. Only the outer call is dynamic; the engine inside `run_cpu` is
/// the family's monomorphized code.
pub struct AnyProblem<'a, S>(Box<dyn LinearProblem<Out = S> + 'a>);

impl<'a, S: Storage> AnyProblem<'a, S> {
    /// Wraps a family's problem.
    pub fn new(p: impl LinearProblem<Out = S> + 'a) -> Self {
        AnyProblem(Box::new(p))
    }
}

impl<S: Storage> LinearProblem for AnyProblem<'_, S> {
    type Out = S;
    fn family(&self) -> &'static str {
        self.0.family()
    }
    fn validate(&self) -> crate::Result<()> {
        self.0.validate()
    }
    fn check_finite(&self) -> crate::Result<()> {
        self.0.check_finite()
    }
    fn scan_shape(&self) -> ScanShape {
        self.0.scan_shape()
    }
    fn output_len(&self) -> usize {
        self.0.output_len()
    }
    fn output_shape(&self) -> String {
        self.0.output_shape()
    }
    fn final_len(&self) -> usize {
        self.0.final_len()
    }
    fn final_shape(&self) -> String {
        self.0.final_shape()
    }
    fn bytes_moved(&self) -> usize {
        self.0.bytes_moved()
    }
    fn run_cpu(&self, plan: &Plan, out: &mut [S], h_last: &mut [S]) {
        self.0.run_cpu(plan, out, h_last)
    }
}

/// Owned random inputs of one problem (sizes included), in storage type
/// `S`.
#[derive(Clone, Debug)]
pub enum Inputs<S> {
    /// See [`Diagonal`].
    Diagonal {
        /// `[B,T,D]` or `[B,D,T]`.
        a: Vec<S>,
        /// Same shape as `a`.
        b: Vec<S>,
        /// `[B,D]`.
        h0: Option<Vec<S>>,
        /// `B`.
        batch: usize,
        /// `T`.
        len: usize,
        /// `D`.
        dim: usize,
        /// Layout of `a`, `b`.
        layout: Layout,
    },
    /// See [`PermDiagonal`].
    PermDiagonal {
        /// `[B,T,n]`, each row a permutation of `0..n`.
        perm: Vec<u8>,
        /// `[B,T,n]`.
        d: Vec<S>,
        /// `[B,T,n]`.
        b: Vec<S>,
        /// `[B,n]`.
        h0: Option<Vec<S>>,
        /// `B`.
        batch: usize,
        /// `T`.
        len: usize,
        /// `n`.
        n: usize,
    },
    /// See [`BlockDiagonal`].
    BlockDiagonal {
        /// `[B,T,nb,k,k]`.
        a: Vec<S>,
        /// `[B,T,n]`.
        b: Vec<S>,
        /// `[B,n]`.
        h0: Option<Vec<S>>,
        /// `B`.
        batch: usize,
        /// `T`.
        len: usize,
        /// `nb`.
        blocks: usize,
        /// `k`.
        block: usize,
    },
    /// See [`Dplr`].
    Dplr {
        /// `[B,T,n]`.
        w: Vec<S>,
        /// `[B,T,R,n]`.
        u: Vec<S>,
        /// `[B,T,R,n]`.
        v: Vec<S>,
        /// `[B,T,n]`.
        k: Vec<S>,
        /// `[B,T,m]`.
        x: Vec<S>,
        /// `[B,T,n]` (readout only).
        q: Option<Vec<S>>,
        /// `[B,n,m]`.
        h0: Option<Vec<S>>,
        /// `B`.
        batch: usize,
        /// `T`.
        len: usize,
        /// `n`.
        n: usize,
        /// `m`.
        m: usize,
        /// `R`.
        rank: usize,
        /// What the scan writes.
        output: DplrOutput,
    },
}

/// Elements (or about that many scalars of rows) per generation task.
const GEN_BLOCK: usize = 1 << 14;

/// The SplitMix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derives an independent seed from `(seed, salt)` (one SplitMix64 step).
pub fn mix_seed(seed: u64, salt: u64) -> u64 {
    mix64(seed ^ salt.wrapping_mul(GOLDEN).wrapping_add(GOLDEN))
}

/// A sequential SplitMix64 stream.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    #[inline(always)]
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }
    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline(always)]
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in `0..=hi` (`hi < 2^32`) by multiply-shift; the bias,
    /// below `2^-24` for `hi ≤ 256`, is irrelevant for benchmark inputs.
    #[inline(always)]
    fn up_to(&mut self, hi: usize) -> usize {
        (((self.next_u64() >> 32) * (hi as u64 + 1)) >> 32) as usize
    }
}

/// `n` values uniform in `[lo, hi)`, rounded to `S`; stream `stream` of
/// `seed`. Element `i` is SplitMix64 at position `i` of the stream, so the
/// values do not depend on the thread count (generated in parallel on the
/// current rayon pool).
pub fn uniform<S: Storage>(n: usize, lo: f64, hi: f64, seed: u64, stream: u64) -> Vec<S> {
    let mut v = vec![S::default(); n];
    let key = mix_seed(seed, stream);
    let scale = (hi - lo) * (1.0 / (1u64 << 53) as f64);
    v.par_chunks_mut(GEN_BLOCK)
        .enumerate()
        .for_each(|(bi, block)| {
            let base = (bi * GEN_BLOCK) as u64;
            for (j, x) in block.iter_mut().enumerate() {
                let z = key.wrapping_add((base + j as u64 + 1).wrapping_mul(GOLDEN));
                *x = S::from_f64(lo + (mix64(z) >> 11) as f64 * scale);
            }
        });
    v
}

/// `rows` random permutations of `0..n` (Fisher–Yates), row-major.
fn permutations(rows: usize, n: usize, seed: u64, stream: u64) -> Vec<u8> {
    let mut v = vec![0u8; rows * n];
    let key = mix_seed(seed, stream);
    let rows_per_block = (GEN_BLOCK / n.max(1)).max(1);
    v.par_chunks_mut(rows_per_block * n)
        .enumerate()
        .for_each(|(bi, block)| {
            let mut rng = SplitMix(mix_seed(key, bi as u64));
            for row in block.chunks_mut(n) {
                for (j, x) in row.iter_mut().enumerate() {
                    // n ≤ 256 is checked by Shape::validate.
                    *x = j as u8;
                }
                for j in (1..n).rev() {
                    row.swap(j, rng.up_to(j));
                }
            }
        });
    v
}

/// A unit vector with entries drawn uniform in `[−1, 1)` then normalized.
fn unit_vector(rng: &mut SplitMix, out: &mut [f64]) {
    for x in out.iter_mut() {
        *x = rng.unit() * 2.0 - 1.0;
    }
    let norm = out.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm < 1e-6 {
        // Vanishingly unlikely; any unit vector keeps the contraction.
        out.iter_mut().for_each(|x| *x = 0.0);
        out[0] = 1.0;
    } else {
        out.iter_mut().for_each(|x| *x /= norm);
    }
}

/// DeltaNet-like keys and low-rank factors for `rows = B·T` steps:
/// `(k [rows,n], u [rows,R,n], v [rows,R,n])`.
fn dplr_factors<S: Storage>(
    rows: usize,
    n: usize,
    rank: usize,
    seed: u64,
    stream: u64,
) -> (Vec<S>, Vec<S>, Vec<S>) {
    let mut k = vec![S::default(); rows * n];
    let mut u = vec![S::default(); rows * rank * n];
    let mut v = vec![S::default(); rows * rank * n];
    let seed = mix_seed(seed, stream);
    let rows_per_block = (GEN_BLOCK / (n * (rank + 1)).max(1)).max(1);
    k.par_chunks_mut(rows_per_block * n)
        .zip(u.par_chunks_mut(rows_per_block * rank * n))
        .zip(v.par_chunks_mut(rows_per_block * rank * n))
        .enumerate()
        .for_each(|(i, ((kb, ub), vb))| {
            let mut rng = SplitMix(mix_seed(seed, i as u64));
            let mut kappa = vec![0.0f64; n];
            let rows_here = kb.len() / n;
            for row in 0..rows_here {
                for r in 0..rank {
                    unit_vector(&mut rng, &mut kappa);
                    let beta = rng.unit() / rank as f64;
                    if r == 0 {
                        // The transition's first direction is the input key.
                        for (dst, &x) in kb[row * n..(row + 1) * n].iter_mut().zip(&kappa) {
                            *dst = S::from_f64(x);
                        }
                    }
                    let off = (row * rank + r) * n;
                    for j in 0..n {
                        ub[off + j] = S::from_f64(-beta * kappa[j]);
                        vb[off + j] = S::from_f64(kappa[j]);
                    }
                }
            }
        });
    (k, u, v)
}

impl<S: Storage> Inputs<S> {
    /// Random inputs of `shape` with `len` steps (see the module docs for
    /// the distributions); `h_0` is drawn when `with_h0`.
    pub fn generate(shape: Shape, len: usize, with_h0: bool, seed: u64) -> Result<Self> {
        shape.validate()?;
        if len == 0 {
            return Err(Error::size("len", 0, "T ≥ 1").into());
        }
        let bt = crate::mem::checked_product("len", &[("batch", shape.batch()), ("len", len)])?;
        let h0 = |count: usize| with_h0.then(|| uniform::<S>(count, -1.0, 1.0, seed, 99));
        Ok(match shape {
            Shape::Diagonal { batch, dim, layout } => Inputs::Diagonal {
                a: uniform(bt * dim, 0.5, 1.0, seed, 1),
                b: uniform(bt * dim, -1.0, 1.0, seed, 2),
                h0: h0(batch * dim),
                batch,
                len,
                dim,
                layout,
            },
            Shape::PermDiagonal { batch, n } => Inputs::PermDiagonal {
                perm: permutations(bt, n, seed, 1),
                d: uniform(bt * n, -1.0, 1.0, seed, 2),
                b: uniform(bt * n, -1.0, 1.0, seed, 3),
                h0: h0(batch * n),
                batch,
                len,
                n,
            },
            Shape::BlockDiagonal {
                batch,
                blocks,
                block,
            } => {
                let scale = 1.0 / block as f64;
                Inputs::BlockDiagonal {
                    a: uniform(bt * blocks * block * block, -scale, scale, seed, 1),
                    b: uniform(bt * blocks * block, -1.0, 1.0, seed, 2),
                    h0: h0(batch * blocks * block),
                    batch,
                    len,
                    blocks,
                    block,
                }
            }
            Shape::Dplr {
                batch,
                n,
                m,
                rank,
                output,
            } => {
                let (k, u, v) = dplr_factors(bt, n, rank, seed, 1);
                Inputs::Dplr {
                    w: vec![S::from_f64(1.0); bt * n],
                    u,
                    v,
                    k,
                    x: uniform(bt * m, -1.0, 1.0, seed, 2),
                    q: (output == DplrOutput::Readout).then(|| uniform(bt * n, -1.0, 1.0, seed, 3)),
                    h0: h0(batch * n * m),
                    batch,
                    len,
                    n,
                    m,
                    rank,
                    output,
                }
            }
        })
    }

    /// The shape these inputs were drawn for.
    pub fn shape(&self) -> Shape {
        match *self {
            Inputs::Diagonal {
                batch, dim, layout, ..
            } => Shape::Diagonal { batch, dim, layout },
            Inputs::PermDiagonal { batch, n, .. } => Shape::PermDiagonal { batch, n },
            Inputs::BlockDiagonal {
                batch,
                blocks,
                block,
                ..
            } => Shape::BlockDiagonal {
                batch,
                blocks,
                block,
            },
            Inputs::Dplr {
                batch,
                n,
                m,
                rank,
                output,
                ..
            } => Shape::Dplr {
                batch,
                n,
                m,
                rank,
                output,
            },
        }
    }

    /// `T`.
    pub fn len(&self) -> usize {
        match *self {
            Inputs::Diagonal { len, .. }
            | Inputs::PermDiagonal { len, .. }
            | Inputs::BlockDiagonal { len, .. }
            | Inputs::Dplr { len, .. } => len,
        }
    }

    /// Always false: generation rejects `T = 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `h_0` was drawn.
    pub fn has_h0(&self) -> bool {
        match self {
            Inputs::Diagonal { h0, .. }
            | Inputs::PermDiagonal { h0, .. }
            | Inputs::BlockDiagonal { h0, .. }
            | Inputs::Dplr { h0, .. } => h0.is_some(),
        }
    }

    /// The family's problem over these inputs.
    pub fn problem(&self) -> AnyProblem<'_, S> {
        match self.view() {
            View::Diagonal(p) => AnyProblem::new(p),
            View::PermDiagonal(p) => AnyProblem::new(p),
            View::BlockDiagonal(p) => AnyProblem::new(p),
            View::Dplr(p) => AnyProblem::new(p),
        }
    }

    /// The f64 sequential oracle's `(out, h_T)` on these (already rounded)
    /// inputs.
    pub fn oracle(&self) -> (Vec<f64>, Vec<f64>) {
        match self.view() {
            View::Diagonal(p) => oracle::diagonal(&p),
            View::PermDiagonal(p) => oracle::perm_diagonal(&p),
            View::BlockDiagonal(p) => oracle::block_diagonal(&p),
            View::Dplr(p) => oracle::dplr(&p),
        }
    }

    /// The family's problem struct borrowing these inputs.
    pub fn view(&self) -> View<'_, S> {
        match self {
            Inputs::Diagonal {
                a,
                b,
                h0,
                batch,
                len,
                dim,
                layout,
            } => View::Diagonal(Diagonal {
                a,
                b,
                h0: h0.as_deref(),
                batch: *batch,
                len: *len,
                dim: *dim,
                layout: *layout,
            }),
            Inputs::PermDiagonal {
                perm,
                d,
                b,
                h0,
                batch,
                len,
                n,
            } => View::PermDiagonal(PermDiagonal {
                perm,
                d,
                b,
                h0: h0.as_deref(),
                batch: *batch,
                len: *len,
                n: *n,
            }),
            Inputs::BlockDiagonal {
                a,
                b,
                h0,
                batch,
                len,
                blocks,
                block,
            } => View::BlockDiagonal(BlockDiagonal {
                a,
                b,
                h0: h0.as_deref(),
                batch: *batch,
                len: *len,
                blocks: *blocks,
                block: *block,
            }),
            Inputs::Dplr {
                w,
                u,
                v,
                k,
                x,
                q,
                h0,
                batch,
                len,
                n,
                m,
                rank,
                output,
            } => View::Dplr(Dplr {
                w,
                u,
                v,
                k,
                x,
                q: q.as_deref(),
                h0: h0.as_deref(),
                batch: *batch,
                len: *len,
                n: *n,
                m: *m,
                rank: *rank,
                output: *output,
            }),
        }
    }
}

/// A family's problem struct borrowing an [`Inputs`].
#[derive(Clone, Copy, Debug)]
pub enum View<'a, S> {
    /// Diagonal.
    Diagonal(Diagonal<'a, S>),
    /// Permutation-diagonal with `u8` permutations.
    PermDiagonal(PermDiagonal<'a, S, u8>),
    /// Block-diagonal (dense when `blocks = 1`).
    BlockDiagonal(BlockDiagonal<'a, S>),
    /// Diagonal plus low rank.
    Dplr(Dplr<'a, S>),
}

/// Something to do with a problem whose family has kernels (see
/// [`View::visit_kernels`]); a visitor because [`KernelScan`]'s methods are
/// generic over the runner, so the problem cannot be a trait object.
pub trait KernelVisitor<S> {
    /// What the visit returns.
    type Out;
    /// Called with the problem.
    fn visit<P: KernelScan<Elem = S>>(self, problem: &P) -> Self::Out;
}

impl<S: Storage + bytemuck::Pod> View<'_, S> {
    /// Runs `visitor` on the problem when its family has kernels in
    /// `kernels/*.cu`; `None` for families that run on the CPU engine only.
    pub fn visit_kernels<V: KernelVisitor<S>>(&self, visitor: V) -> Option<V::Out> {
        match self {
            View::Diagonal(p) => Some(visitor.visit(p)),
            View::PermDiagonal(p) => Some(visitor.visit(p)),
            View::BlockDiagonal(p) => Some(visitor.visit(p)),
            View::Dplr(p) => Some(visitor.visit(p)),
        }
    }
}
