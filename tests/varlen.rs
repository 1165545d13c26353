//! Variable-length batches (`cu_seqlens`) and in-place state on the CPU
//! engine, for every family and every plan.
//!
//! The reference for a packed problem is each sequence run on its own: the
//! f64 oracle on that sequence's inputs from that sequence's `h0` (outputs
//! and `h_T`), and a separate CPU call per sequence. Under the sequential
//! plan the packed run does exactly the per-sequence arithmetic, so it must
//! agree with the separate calls bit for bit; under chunked plans it must be
//! within [`common::tolerance`] of the oracle, per sequence. Zero-length
//! sequences must return `h_T = h0` exactly.

mod common;

use common::{rng, tolerance, uniform};
use parascan::backend::Cpu;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::diagonal::Diagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::varlen::{InPlaceScan, Segmentable, Varlen};
use parascan::family::{Layout, LinearProblem};
use parascan::{oracle, Error, PlanRequest, Storage};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// The chunk the partitions are aligned to ("multiples of the chunk").
const CHUNK: usize = 4;

/// Every plan kind of the CPU engine, with chunks that do and do not divide
/// the sequence lengths.
fn plans() -> Vec<PlanRequest> {
    vec![
        PlanRequest::Sequential,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(CHUNK),
        PlanRequest::Chunk(3),
        PlanRequest::Chunk(16),
        PlanRequest::Auto,
    ]
}

/// Per-step tensors of one problem, `[B,T,w]` each (`[B,w,T]` when `bdt`),
/// and permutations `[B,T,n]` for PermDiagonal.
#[derive(Clone, Debug)]
struct Fields<S> {
    batch: usize,
    len: usize,
    bdt: bool,
    widths: Vec<usize>,
    data: Vec<Vec<S>>,
    perm_n: usize,
    perm8: Vec<u8>,
    perm16: Vec<u16>,
}

impl<S: Storage> Fields<S> {
    /// Batch row `b`, steps `r`, as a one-row problem's tensors.
    fn sub(&self, b: usize, r: Range<usize>) -> Self {
        let t = self.len;
        let data = self
            .widths
            .iter()
            .zip(&self.data)
            .map(|(&w, d)| {
                if self.bdt {
                    (0..w)
                        .flat_map(|j| {
                            d[(b * w + j) * t + r.start..(b * w + j) * t + r.end].to_vec()
                        })
                        .collect()
                } else {
                    d[(b * t + r.start) * w..(b * t + r.end) * w].to_vec()
                }
            })
            .collect();
        let n = self.perm_n;
        let cut = |p: usize| (b * t + p) * n;
        Fields {
            batch: 1,
            len: r.len(),
            bdt: self.bdt,
            widths: self.widths.clone(),
            data,
            perm_n: n,
            perm8: if n > 0 {
                self.perm8[cut(r.start)..cut(r.end)].to_vec()
            } else {
                vec![]
            },
            perm16: if n > 0 {
                self.perm16[cut(r.start)..cut(r.end)].to_vec()
            } else {
                vec![]
            },
        }
    }

    /// Flat index of output element `j` of step `t` of row `b` (`w` per step).
    fn out_index(&self, b: usize, t: usize, j: usize, w: usize) -> usize {
        if self.bdt {
            (b * w + j) * self.len + t
        } else {
            (b * self.len + t) * w + j
        }
    }
}

/// One family's problem over [`Fields`], with its oracle.
trait Fam<S: Storage> {
    type P<'a>: Segmentable<Out = S> + InPlaceScan<Out = S>
    where
        S: 'a;
    /// Scalars of one state.
    fn state(&self) -> usize;
    /// Output scalars per step.
    fn out_w(&self) -> usize;
    /// Random inputs for `batch × len` steps.
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S>;
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> Self::P<'a>;
    fn oracle(&self, p: &Self::P<'_>) -> (Vec<f64>, Vec<f64>);
}

fn fields<S: Storage>(
    r: &mut ChaCha8Rng,
    batch: usize,
    len: usize,
    bdt: bool,
    spec: &[(usize, f64, f64)],
) -> Fields<S> {
    Fields {
        batch,
        len,
        bdt,
        widths: spec.iter().map(|s| s.0).collect(),
        data: spec
            .iter()
            .map(|&(w, lo, hi)| uniform(r, batch * len * w, lo, hi))
            .collect(),
        perm_n: 0,
        perm8: vec![],
        perm16: vec![],
    }
}

struct DiagFam {
    dim: usize,
    layout: Layout,
}
impl<S: Storage> Fam<S> for DiagFam {
    type P<'a> = Diagonal<'a, S>;
    fn state(&self) -> usize {
        self.dim
    }
    fn out_w(&self) -> usize {
        self.dim
    }
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S> {
        let d = self.dim;
        fields(
            r,
            batch,
            len,
            self.layout == Layout::Bdt,
            &[(d, 0.3, 1.0), (d, -1.0, 1.0)],
        )
    }
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> Diagonal<'a, S> {
        Diagonal {
            a: &f.data[0],
            b: &f.data[1],
            h0,
            batch: f.batch,
            len: f.len,
            dim: self.dim,
            layout: self.layout,
        }
    }
    fn oracle(&self, p: &Diagonal<'_, S>) -> (Vec<f64>, Vec<f64>) {
        oracle::diagonal(p)
    }
}

struct PdFam {
    n: usize,
}
impl<S: Storage> Fam<S> for PdFam {
    type P<'a> = PermDiagonal<'a, S, u8>;
    fn state(&self) -> usize {
        self.n
    }
    fn out_w(&self) -> usize {
        self.n
    }
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S> {
        let n = self.n;
        let mut f = fields(r, batch, len, false, &[(n, -1.0, 1.0), (n, -1.0, 1.0)]);
        let mut row: Vec<usize> = (0..n).collect();
        let mut perm = Vec::with_capacity(batch * len * n);
        for _ in 0..batch * len {
            row.shuffle(r);
            perm.extend_from_slice(&row);
        }
        f.perm_n = n;
        f.perm8 = perm.iter().map(|&i| i as u8).collect();
        f.perm16 = perm.iter().map(|&i| i as u16).collect();
        f
    }
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> PermDiagonal<'a, S, u8> {
        PermDiagonal {
            perm: &f.perm8,
            d: &f.data[0],
            b: &f.data[1],
            h0,
            batch: f.batch,
            len: f.len,
            n: self.n,
        }
    }
    fn oracle(&self, p: &PermDiagonal<'_, S, u8>) -> (Vec<f64>, Vec<f64>) {
        oracle::perm_diagonal(p)
    }
}

/// PermDiagonal with `u16` indices (same data as [`PdFam`]).
struct Pd16Fam {
    n: usize,
}
impl<S: Storage> Fam<S> for Pd16Fam {
    type P<'a> = PermDiagonal<'a, S, u16>;
    fn state(&self) -> usize {
        self.n
    }
    fn out_w(&self) -> usize {
        self.n
    }
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S> {
        <PdFam as Fam<S>>::gen(&PdFam { n: self.n }, r, batch, len)
    }
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> PermDiagonal<'a, S, u16> {
        PermDiagonal {
            perm: &f.perm16,
            d: &f.data[0],
            b: &f.data[1],
            h0,
            batch: f.batch,
            len: f.len,
            n: self.n,
        }
    }
    fn oracle(&self, p: &PermDiagonal<'_, S, u16>) -> (Vec<f64>, Vec<f64>) {
        oracle::perm_diagonal(p)
    }
}

struct BdFam {
    blocks: usize,
    block: usize,
}
impl<S: Storage> Fam<S> for BdFam {
    type P<'a> = BlockDiagonal<'a, S>;
    fn state(&self) -> usize {
        self.blocks * self.block
    }
    fn out_w(&self) -> usize {
        self.blocks * self.block
    }
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S> {
        let (nb, k) = (self.blocks, self.block);
        // Entries within ±1/(2k): every block's norm is at most 1/2.
        let s = 0.5 / k as f64;
        fields(
            r,
            batch,
            len,
            false,
            &[(nb * k * k, -s, s), (nb * k, -1.0, 1.0)],
        )
    }
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> BlockDiagonal<'a, S> {
        BlockDiagonal {
            a: &f.data[0],
            b: &f.data[1],
            h0,
            batch: f.batch,
            len: f.len,
            blocks: self.blocks,
            block: self.block,
        }
    }
    fn oracle(&self, p: &BlockDiagonal<'_, S>) -> (Vec<f64>, Vec<f64>) {
        oracle::block_diagonal(p)
    }
}

struct DplrFam {
    n: usize,
    m: usize,
    rank: usize,
    output: DplrOutput,
}
impl<S: Storage> Fam<S> for DplrFam {
    type P<'a> = Dplr<'a, S>;
    fn state(&self) -> usize {
        self.n * self.m
    }
    fn out_w(&self) -> usize {
        match self.output {
            DplrOutput::Readout => self.m,
            DplrOutput::States => self.n * self.m,
        }
    }
    fn gen(&self, r: &mut ChaCha8Rng, batch: usize, len: usize) -> Fields<S> {
        let (n, m, rk) = (self.n, self.m, self.rank);
        // ‖Σ_r u_r v_rᵀ‖ ≤ 1/4 and w < 1: the states stay bounded.
        let s = (0.25 / (rk * n) as f64).sqrt();
        fields(
            r,
            batch,
            len,
            false,
            &[
                (n, 0.5, 1.0),
                (rk * n, -s, s),
                (rk * n, -s, s),
                (n, -1.0, 1.0),
                (m, -1.0, 1.0),
                (n, -1.0, 1.0),
            ],
        )
    }
    fn make<'a>(&self, f: &'a Fields<S>, h0: Option<&'a [S]>) -> Dplr<'a, S> {
        Dplr {
            w: &f.data[0],
            u: &f.data[1],
            v: &f.data[2],
            k: &f.data[3],
            x: &f.data[4],
            q: Some(&f.data[5]),
            h0,
            batch: f.batch,
            len: f.len,
            n: self.n,
            m: self.m,
            rank: self.rank,
            output: self.output,
        }
    }
    fn oracle(&self, p: &Dplr<'_, S>) -> (Vec<f64>, Vec<f64>) {
        oracle::dplr(p)
    }
}

fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// Packs random inputs into sequences of `lens` (each row of `batch`), runs
/// the packed problem under every plan and checks every sequence against
/// its own oracle run and its own CPU call.
fn check_partition<S: Storage, F: Fam<S>>(
    fam: &F,
    lens: &[usize],
    batch: usize,
    with_h0: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let cu = offsets(lens);
    let t = *cu.last().unwrap();
    prop_assume!(t >= 1);
    let mut r = rng(seed);
    let data = fam.gen(&mut r, batch, t);
    let (n_seq, st, w) = (lens.len(), fam.state(), fam.out_w());
    let h0: Vec<S> = uniform(&mut r, batch * n_seq * st, -1.0, 1.0);
    let h0_arg = with_h0.then_some(&h0[..]);
    let zeros = vec![S::from_f64(0.0); st];
    let h0_of = |b: usize, s: usize| -> &[S] {
        if with_h0 {
            &h0[(b * n_seq + s) * st..(b * n_seq + s + 1) * st]
        } else {
            &zeros
        }
    };
    let tol = tolerance::<S>(t);
    let cpu = Cpu::new();
    let packed = Varlen::new(fam.make(&data, None), &cu, h0_arg)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for req in plans() {
        let run = cpu
            .scan(&packed, req)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(run.h_last.len(), batch * n_seq * st);
        for b in 0..batch {
            for s in 0..n_seq {
                let h_t = &run.h_last[(b * n_seq + s) * st..(b * n_seq + s + 1) * st];
                let steps = cu[s]..cu[s + 1];
                if steps.is_empty() {
                    prop_assert_eq!(h_t, h0_of(b, s), "empty sequence {} ({})", s, req);
                    continue;
                }
                let sub = data.sub(b, steps.clone());
                let sub_h0 = h0_of(b, s).to_vec();
                let (want_out, want_h) = fam.oracle(&fam.make(&sub, Some(&sub_h0)));
                let got_out: Vec<S> = (0..sub.len)
                    .flat_map(|k| (0..w).map(move |j| (k, j)))
                    .map(|(k, j)| run.out[data.out_index(b, steps.start + k, j, w)])
                    .collect();
                let want_out: Vec<f64> = (0..sub.len)
                    .flat_map(|k| (0..w).map(move |j| (k, j)))
                    .map(|(k, j)| want_out[sub.out_index(0, k, j, w)])
                    .collect();
                let (e_out, e_h) = (
                    oracle::rel_l2(&got_out, &want_out),
                    oracle::rel_l2(h_t, &want_h),
                );
                prop_assert!(
                    e_out <= tol && e_h <= tol,
                    "sequence {} of {:?}, row {}, {}: out error {:.2e}, h_T error {:.2e} > {:.2e}",
                    s,
                    lens,
                    b,
                    req,
                    e_out,
                    e_h,
                    tol
                );
                if req == PlanRequest::Sequential {
                    // A separate call per sequence (in-place state): the
                    // same arithmetic, so the same bits.
                    let alone = fam.make(&sub, None);
                    let mut out = vec![S::from_f64(0.0); alone.output_len()];
                    let mut state = sub_h0.clone();
                    cpu.scan_in_place(&alone, req, &mut out, &mut state)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let got_seq: Vec<S> = (0..sub.len)
                        .flat_map(|k| (0..w).map(move |j| (k, j)))
                        .map(|(k, j)| out[sub.out_index(0, k, j, w)])
                        .collect();
                    prop_assert_eq!(&got_out, &got_seq, "sequence {} outputs vs its own call", s);
                    prop_assert_eq!(h_t, &state[..], "sequence {} h_T vs its own call", s);
                }
            }
        }
    }
    Ok(())
}

/// A sequence length: 0, 1, odd, a multiple of the chunk, or anything up to 40.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        (1usize..10).prop_map(|k| 2 * k + 1),
        (1usize..4).prop_map(|k| k * CHUNK),
        2usize..40,
    ]
}

fn lengths() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(length(), 1..9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn diagonal_btd_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        check_partition::<f32, _>(&DiagFam { dim: 3, layout: Layout::Btd }, &lens, batch, h0, seed)?;
    }

    #[test]
    fn diagonal_bdt_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        check_partition::<f32, _>(&DiagFam { dim: 3, layout: Layout::Bdt }, &lens, batch, h0, seed)?;
    }

    #[test]
    fn perm_diagonal_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        check_partition::<f32, _>(&PdFam { n: 5 }, &lens, batch, h0, seed)?;
    }

    #[test]
    fn perm_diagonal_u16_partitions(lens in lengths(), h0 in any::<bool>(), seed in any::<u64>()) {
        check_partition::<f32, _>(&Pd16Fam { n: 4 }, &lens, 1, h0, seed)?;
    }

    #[test]
    fn block_diagonal_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        check_partition::<f32, _>(&BdFam { blocks: 2, block: 3 }, &lens, batch, h0, seed)?;
    }

    #[test]
    fn dplr_readout_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        let fam = DplrFam { n: 3, m: 2, rank: 2, output: DplrOutput::Readout };
        check_partition::<f32, _>(&fam, &lens, batch, h0, seed)?;
    }

    #[test]
    fn dplr_states_partitions(lens in lengths(), batch in 1usize..3, h0 in any::<bool>(), seed in any::<u64>()) {
        let fam = DplrFam { n: 2, m: 3, rank: 1, output: DplrOutput::States };
        check_partition::<f32, _>(&fam, &lens, batch, h0, seed)?;
    }

    #[test]
    fn f64_partitions_every_family(lens in lengths(), seed in any::<u64>()) {
        check_partition::<f64, _>(&DiagFam { dim: 2, layout: Layout::Btd }, &lens, 1, true, seed)?;
        check_partition::<f64, _>(&DiagFam { dim: 2, layout: Layout::Bdt }, &lens, 2, true, seed)?;
        check_partition::<f64, _>(&PdFam { n: 3 }, &lens, 1, true, seed)?;
        check_partition::<f64, _>(&BdFam { blocks: 1, block: 2 }, &lens, 1, true, seed)?;
        let fam = DplrFam { n: 2, m: 2, rank: 1, output: DplrOutput::Readout };
        check_partition::<f64, _>(&fam, &lens, 1, true, seed)?;
    }
}

/// One very long sequence among many short (and empty) ones.
fn long_among_short() -> Vec<usize> {
    let mut lens: Vec<usize> = (0..40).map(|i| i % 3).collect();
    lens.insert(17, 700);
    lens
}

#[test]
fn one_long_among_many_short_every_family() {
    let lens = long_among_short();
    let run = |r: Result<(), TestCaseError>| r.expect("long among short");
    run(check_partition::<f32, _>(
        &DiagFam {
            dim: 4,
            layout: Layout::Btd,
        },
        &lens,
        1,
        true,
        1,
    ));
    run(check_partition::<f32, _>(
        &DiagFam {
            dim: 4,
            layout: Layout::Bdt,
        },
        &lens,
        2,
        true,
        2,
    ));
    run(check_partition::<f32, _>(
        &PdFam { n: 6 },
        &lens,
        1,
        true,
        3,
    ));
    run(check_partition::<f32, _>(
        &BdFam {
            blocks: 2,
            block: 2,
        },
        &lens,
        1,
        true,
        4,
    ));
    let fam = DplrFam {
        n: 3,
        m: 3,
        rank: 1,
        output: DplrOutput::Readout,
    };
    run(check_partition::<f32, _>(&fam, &lens, 1, true, 5));
}

#[test]
fn half_precision_partitions_within_tolerance() {
    let lens = [3usize, 0, 9, 1, 8, 5];
    check_partition::<half::bf16, _>(
        &DiagFam {
            dim: 3,
            layout: Layout::Btd,
        },
        &lens,
        1,
        true,
        6,
    )
    .expect("bf16");
    check_partition::<half::f16, _>(&PdFam { n: 4 }, &lens, 1, true, 7).expect("f16");
}

/// The offsets may come as `i32`, `u32`, `i64` or `u64` (PyTorch's dtypes)
/// with the same results as `usize`.
#[test]
fn offset_integer_types_agree() {
    let fam = DiagFam {
        dim: 2,
        layout: Layout::Btd,
    };
    let data = <DiagFam as Fam<f32>>::gen(&fam, &mut rng(8), 1, 10);
    let cpu = Cpu::new();
    let base = cpu
        .scan(
            &Varlen::new(fam.make(&data, None), &[0usize, 4, 4, 10], None).unwrap(),
            PlanRequest::Chunk(3),
        )
        .unwrap();
    let runs = [
        cpu.scan(
            &Varlen::new(fam.make(&data, None), &[0i32, 4, 4, 10], None).unwrap(),
            PlanRequest::Chunk(3),
        ),
        cpu.scan(
            &Varlen::new(fam.make(&data, None), &[0u32, 4, 4, 10], None).unwrap(),
            PlanRequest::Chunk(3),
        ),
        cpu.scan(
            &Varlen::new(fam.make(&data, None), &[0i64, 4, 4, 10], None).unwrap(),
            PlanRequest::Chunk(3),
        ),
        cpu.scan(
            &Varlen::new(fam.make(&data, None), &[0u64, 4, 4, 10], None).unwrap(),
            PlanRequest::Chunk(3),
        ),
    ];
    for r in runs {
        let r = r.unwrap();
        assert_eq!(r.out, base.out);
        assert_eq!(r.h_last, base.h_last);
    }
}

/// In-place state gives the same bits as separate `h0`/`h_T` buffers, for
/// every family and plan, plain and packed.
#[test]
fn in_place_state_matches_separate_buffers() {
    fn one<S: Storage, F: Fam<S>>(fam: &F, lens: &[usize], batch: usize, seed: u64) {
        let cu = offsets(lens);
        let t = *cu.last().unwrap();
        let mut r = rng(seed);
        let data = fam.gen(&mut r, batch, t);
        let st = fam.state();
        let h0_plain: Vec<S> = uniform(&mut r, batch * st, -1.0, 1.0);
        let h0_packed: Vec<S> = uniform(&mut r, batch * lens.len() * st, -1.0, 1.0);
        let cpu = Cpu::new();
        for req in plans() {
            // Plain: [B, state].
            let want = cpu.scan(&fam.make(&data, Some(&h0_plain)), req).unwrap();
            let alone = fam.make(&data, None);
            let mut out = vec![S::from_f64(0.0); alone.output_len()];
            let mut state = h0_plain.clone();
            cpu.scan_in_place(&alone, req, &mut out, &mut state)
                .unwrap();
            assert_eq!(out, want.out, "{req}");
            assert_eq!(state, want.h_last, "{req}");
            // Packed: [B, N, state].
            let want = cpu
                .scan(
                    &Varlen::new(fam.make(&data, None), &cu, Some(&h0_packed)).unwrap(),
                    req,
                )
                .unwrap();
            let packed = Varlen::new(fam.make(&data, None), &cu, None).unwrap();
            let mut state = h0_packed.clone();
            cpu.scan_in_place(&packed, req, &mut out, &mut state)
                .unwrap();
            assert_eq!(out, want.out, "{req} packed");
            assert_eq!(state, want.h_last, "{req} packed");
        }
    }
    let lens = [5usize, 0, 12, 1, 7];
    one::<f32, _>(
        &DiagFam {
            dim: 3,
            layout: Layout::Btd,
        },
        &lens,
        2,
        10,
    );
    one::<f32, _>(
        &DiagFam {
            dim: 3,
            layout: Layout::Bdt,
        },
        &lens,
        2,
        11,
    );
    one::<f32, _>(&PdFam { n: 4 }, &lens, 2, 12);
    one::<f32, _>(
        &BdFam {
            blocks: 2,
            block: 2,
        },
        &lens,
        1,
        13,
    );
    one::<f32, _>(
        &DplrFam {
            n: 2,
            m: 3,
            rank: 1,
            output: DplrOutput::States,
        },
        &lens,
        1,
        14,
    );
}

// ---------------------------------------------------------------------------
// Bad inputs: one test per kind, each a typed error naming the argument.
// ---------------------------------------------------------------------------

fn diag_data() -> (DiagFam, Fields<f32>) {
    let fam = DiagFam {
        dim: 2,
        layout: Layout::Btd,
    };
    let data = <DiagFam as Fam<f32>>::gen(&fam, &mut rng(20), 1, 10);
    (fam, data)
}

fn expect_offsets(r: Result<impl std::fmt::Debug, Error>, index: usize) {
    match r {
        Err(Error::SeqOffsets { arg, index: i, .. }) => {
            assert_eq!((arg, i), ("cu_seqlens", index))
        }
        other => panic!("expected a cu_seqlens error at entry {index}, got {other:?}"),
    }
}

#[test]
fn offsets_too_few_entries_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(Varlen::new(fam.make(&data, None), &[] as &[usize], None), 0);
    expect_offsets(Varlen::new(fam.make(&data, None), &[0usize], None), 0);
}

#[test]
fn offsets_first_not_zero_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(
        Varlen::new(fam.make(&data, None), &[1usize, 4, 10], None),
        0,
    );
}

#[test]
fn offsets_decreasing_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(
        Varlen::new(fam.make(&data, None), &[0usize, 6, 4, 10], None),
        2,
    );
}

#[test]
fn offsets_past_the_end_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(
        Varlen::new(fam.make(&data, None), &[0usize, 11, 11], None),
        1,
    );
}

#[test]
fn offsets_short_of_the_end_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(Varlen::new(fam.make(&data, None), &[0usize, 4, 9], None), 2);
}

#[test]
fn offsets_negative_is_an_error() {
    let (fam, data) = diag_data();
    expect_offsets(Varlen::new(fam.make(&data, None), &[0i32, -4, 10], None), 1);
}

#[test]
fn per_sequence_h0_wrong_length_is_an_error() {
    let (fam, data) = diag_data();
    // Three sequences of dim 2 need 6 values; [B, D] (2 values) is refused.
    let h0 = vec![0.5f32; 2];
    match Varlen::new(fam.make(&data, None), &[0usize, 4, 4, 10], Some(&h0)) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("h0", 6, 2)),
        other => panic!("expected a shape error on h0, got {other:?}"),
    }
}

#[test]
fn problem_h0_under_cu_seqlens_is_an_error() {
    let (fam, data) = diag_data();
    let h0 = vec![0.5f32; 2];
    match Varlen::new(fam.make(&data, Some(&h0)), &[0usize, 10], None) {
        Err(Error::Unsupported { what, .. }) => assert_eq!(what, "problem.h0"),
        other => panic!("expected the problem's own h0 refused, got {other:?}"),
    }
}

#[test]
fn in_place_state_wrong_length_is_an_error() {
    let (fam, data) = diag_data();
    let p = fam.make(&data, None);
    let mut out = vec![0f32; p.output_len()];
    let mut state = vec![0f32; 3];
    match Cpu::new().scan_in_place(&p, PlanRequest::Auto, &mut out, &mut state) {
        Err(Error::Shape {
            arg, expected, got, ..
        }) => assert_eq!((arg, expected, got), ("state", 2, 3)),
        other => panic!("expected a shape error on state, got {other:?}"),
    }
}

#[test]
fn in_place_state_not_finite_is_an_error() {
    let (fam, data) = diag_data();
    let p = fam.make(&data, None);
    let mut out = vec![0f32; p.output_len()];
    let mut state = vec![0f32, f32::NAN];
    match Cpu::new().scan_in_place(&p, PlanRequest::Auto, &mut out, &mut state) {
        Err(Error::NonFinite { arg, index, .. }) => assert_eq!((arg, index), ("state", 1)),
        other => panic!("expected a non-finite error on state, got {other:?}"),
    }
}

#[test]
fn in_place_with_problem_h0_is_an_error() {
    let (fam, data) = diag_data();
    let h0 = vec![0.5f32; 2];
    let p = fam.make(&data, Some(&h0));
    let mut out = vec![0f32; p.output_len()];
    let mut state = vec![0f32; 2];
    match Cpu::new().scan_in_place(&p, PlanRequest::Auto, &mut out, &mut state) {
        Err(Error::Unsupported { what, .. }) => assert_eq!(what, "problem.h0"),
        other => panic!("expected the problem's own h0 refused, got {other:?}"),
    }
    // The same for a packed problem that carries per-sequence h0.
    let hs = vec![0.5f32; 4];
    let packed = Varlen::new(fam.make(&data, None), &[0usize, 3, 10], Some(&hs)).unwrap();
    let mut state = vec![0f32; 4];
    assert!(matches!(
        Cpu::new().scan_in_place(&packed, PlanRequest::Auto, &mut out, &mut state),
        Err(Error::Unsupported {
            what: "problem.h0",
            ..
        })
    ));
}

#[test]
fn reverse_scan_of_a_packed_problem_is_refused() {
    let (fam, data) = diag_data();
    let packed = Varlen::new(fam.make(&data, None), &[0usize, 3, 10], None).unwrap();
    assert!(matches!(
        Cpu::new().scan_reverse(&packed, PlanRequest::Auto),
        Err(Error::Unsupported { .. })
    ));
}
