//! Criterion benchmarks of the CPU engine, one group per family, each with
//! the machine's copy bandwidth measured alongside (the `copy` group moves
//! the same bytes as the diagonal f32 case) so ratios come from one run.
//! The `fma_peak` group is the compute yardstick (elements = flops); the
//! block-diagonal, dense and DPLR groups count flops too (elements = the
//! flops of one sequential pass, as the sweep's `% FMA` column does), so
//! their throughput reads against the probe's GFLOP/s. The
//! `newton_diag_gru` times one Newton iteration (the difference of its two
//! `solve` cases) next to one Diagonal scan of the same shape.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use parascan::backend::Cpu;
use parascan::family::diagonal::Diagonal;
use parascan::family::{Layout, LinearProblem};
use parascan::{PlanRequest, Storage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn uniform<S: Storage>(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<S> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| S::from_f64(r.gen_range(lo..hi))).collect()
}

/// Benchmarks one problem under several plans, throughput in bytes moved,
/// or in flops (criterion's elements) when `flops` is given.
fn bench_problem<P: LinearProblem>(
    c: &mut Criterion,
    group: &str,
    label: &str,
    p: &P,
    plans: &[PlanRequest],
    flops: Option<u64>,
) {
    let cpu = Cpu::new();
    let mut out = vec![P::Out::default(); p.output_len()];
    let mut last = vec![P::Out::default(); p.final_len()];
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(match flops {
        Some(f) => Throughput::Elements(f),
        None => Throughput::Bytes(p.bytes_moved() as u64),
    });
    for &plan in plans {
        g.bench_with_input(BenchmarkId::new(label, plan), &plan, |bench, &plan| {
            bench.iter(|| {
                cpu.scan_into(p, plan, &mut out, &mut last)
                    .expect("valid problem")
            })
        });
    }
    g.finish();
}

const PLANS: [PlanRequest; 3] = [
    PlanRequest::Sequential,
    PlanRequest::Auto,
    PlanRequest::Chunk(64),
];

fn copy(c: &mut Criterion) {
    use rayon::prelude::*;
    // 2^26 f32 elements × 12 bytes: the diagonal case's traffic.
    let n = 3 << 25;
    let src = vec![1.0f32; n / 2];
    let mut dst = vec![0.0f32; n / 2];
    let mut g = c.benchmark_group("copy");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((n * 4) as u64));
    g.bench_function("par_copy_768MiB", |b| {
        b.iter(|| {
            dst.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    g.finish();
}

fn diagonal(c: &mut Criterion) {
    // 2^26 elements: the size the bandwidth target is stated at.
    let (batch, len, dim) = (16, 65536, 64);
    let n = batch * len * dim;
    let a: Vec<f32> = uniform(n, 0.5, 1.0, 1);
    let b: Vec<f32> = uniform(n, -1.0, 1.0, 2);
    for layout in [Layout::Btd, Layout::Bdt] {
        let p = Diagonal {
            a: &a,
            b: &b,
            h0: None,
            batch,
            len,
            dim,
            layout,
        };
        bench_problem(c, "diagonal_f32", &format!("{layout}"), &p, &PLANS, None);
    }
    let a16: Vec<bf16> = uniform(n, 0.5, 1.0, 1);
    let b16: Vec<bf16> = uniform(n, -1.0, 1.0, 2);
    let p = Diagonal {
        a: &a16,
        b: &b16,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Btd,
    };
    bench_problem(
        c,
        "diagonal_bf16",
        "[B,T,D]",
        &p,
        &[PlanRequest::Auto],
        None,
    );
}

fn perm_diagonal(c: &mut Criterion) {
    use parascan::family::perm_diagonal::PermDiagonal;
    let (batch, len) = (16, 1 << 16);
    for n in [5usize, 64] {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        let mut perm = Vec::with_capacity(batch * len * n);
        let mut row: Vec<u8> = (0..n as u8).collect();
        for _ in 0..batch * len {
            // Fisher–Yates: a fresh uniform permutation per step.
            for i in (1..n).rev() {
                row.swap(i, r.gen_range(0..=i));
            }
            perm.extend_from_slice(&row);
        }
        let d: Vec<f32> = uniform(batch * len * n, -1.0, 1.0, 4);
        let b: Vec<f32> = uniform(batch * len * n, -1.0, 1.0, 5);
        let p = PermDiagonal {
            perm: &perm,
            d: &d,
            b: &b,
            h0: None,
            batch,
            len,
            n,
        };
        bench_problem(c, "perm_diagonal_f32", &format!("n={n}"), &p, &PLANS, None);
    }
}

fn block_diagonal(c: &mut Criterion) {
    use parascan::family::block_diagonal::BlockDiagonal;
    let (batch, len) = (8, 1 << 14);
    for (blocks, block) in [(16usize, 4usize), (1, 16)] {
        let n = blocks * block;
        let k = block as f64;
        let a: Vec<f32> = uniform(batch * len * blocks * block * block, -1.0 / k, 1.0 / k, 6);
        let b: Vec<f32> = uniform(batch * len * n, -1.0, 1.0, 7);
        let p = BlockDiagonal {
            a: &a,
            b: &b,
            h0: None,
            batch,
            len,
            blocks,
            block,
        };
        bench_problem(
            c,
            "block_diagonal_f32",
            &format!("nb={blocks},k={block}"),
            &p,
            &PLANS,
            // One block matrix-vector product per step: 2·nb·k² flops.
            Some((2 * batch * len * blocks * block * block) as u64),
        );
    }
}

fn dplr(c: &mut Criterion) {
    use parascan::family::dplr::{Dplr, DplrOutput};
    let (batch, len, n, m, rank) = (4, 1 << 12, 64, 64, 1);
    // DeltaNet-like: w = 1, u = −β k, v = k with unit k (bounded states).
    let mut r = ChaCha8Rng::seed_from_u64(8);
    let mut k = vec![0.0f32; batch * len * n];
    for row in k.chunks_mut(n) {
        let v: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        row.iter_mut().zip(&v).for_each(|(o, x)| *o = x / norm);
    }
    let beta: Vec<f32> = uniform(batch * len, 0.1, 0.9, 9);
    let u: Vec<f32> = k
        .iter()
        .enumerate()
        .map(|(i, x)| -beta[i / n] * x)
        .collect();
    let w = vec![1.0f32; batch * len * n];
    let x: Vec<f32> = uniform(batch * len * m, -1.0, 1.0, 10);
    let q: Vec<f32> = uniform(batch * len * n, -1.0, 1.0, 11);
    let p = Dplr {
        w: &w,
        u: &u,
        v: &k,
        k: &k,
        x: &x,
        q: Some(&q),
        h0: None,
        batch,
        len,
        n,
        m,
        rank,
        output: DplrOutput::Readout,
    };
    bench_problem(
        c,
        "dplr_f32",
        "deltanet_n64_m64_r1_readout",
        &p,
        &[PlanRequest::Sequential, PlanRequest::Auto],
        // Per step: scale, one rank-one update (4·n·m), k xᵀ, readout.
        Some((batch * len * n * m * (3 + 4 * rank + 2)) as u64),
    );
}

fn fma_peak(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("a thread pool");
    let mut g = c.benchmark_group("fma_peak");
    g.sample_size(10);
    // `cpu_fma_gflops` times itself; criterion reports its wall time, and
    // the probe's own GFLOP/s is printed once for the record.
    let iters = 1 << 18;
    let gflops = parascan::sweep::bandwidth::cpu_fma_gflops(&pool, iters, 5).expect("probe");
    println!(
        "fma_peak: {gflops:.1} GFLOP/s (f32, {} threads)",
        pool.current_num_threads()
    );
    g.bench_function("probe_1x", |b| {
        b.iter(|| parascan::sweep::bandwidth::cpu_fma_gflops(&pool, iters, 1).expect("probe"))
    });
    g.finish();
}

fn newton_diag_gru(c: &mut Criterion) {
    use parascan::newton::{solve, DiagGru, Mode, NewtonOptions, NonlinearProblem};
    let cpu = Cpu::new();
    let mut g = c.benchmark_group("newton_diag_gru");
    g.sample_size(10);
    // The batch fills the cores (one-chunk fused pass), and one long
    // sequence (chunked fused pass).
    for (batch, len, n) in [(8, 4096, 256), (1, 65536, 16)] {
        let shape = format!("[{batch},{len},{n}]");
        let w = |s| uniform::<f32>(n, -0.5, 0.5, s);
        let cell = DiagGru::new(w(20), w(21), w(22)).expect("finite weights");
        let x: Vec<f32> = uniform(batch * len * 3 * n, -1.0, 1.0, 23);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch,
            len,
        };
        g.throughput(Throughput::Elements((batch * len * n) as u64));
        // Tolerances of zero: every solve runs exactly `max_iters` iterations,
        // so `iters=2` minus `iters=1` is one Newton iteration.
        for iters in [1usize, 2] {
            let options = NewtonOptions {
                mode: Mode::Newton,
                max_iters: iters,
                atol: 0.0,
                rtol: 0.0,
                growth_patience: None,
                plan: PlanRequest::Auto,
                ..Default::default()
            };
            g.bench_function(format!("solve_iters={iters}_{shape}"), |b| {
                b.iter(|| solve(&cpu, &cell, &problem, &options).expect("solve"))
            });
        }
        let seq = NewtonOptions {
            mode: Mode::Sequential,
            ..Default::default()
        };
        g.bench_function(format!("sequential_{shape}"), |b| {
            b.iter(|| solve(&cpu, &cell, &problem, &seq).expect("solve"))
        });
        let a: Vec<f32> = uniform(batch * len * n, 0.5, 1.0, 24);
        let bb: Vec<f32> = uniform(batch * len * n, -1.0, 1.0, 25);
        let p = Diagonal {
            a: &a,
            b: &bb,
            h0: None,
            batch,
            len,
            dim: n,
            layout: Layout::Btd,
        };
        let mut out = vec![0.0f32; p.output_len()];
        let mut last = vec![0.0f32; p.final_len()];
        g.bench_function(format!("diagonal_scan_auto_{shape}"), |b| {
            b.iter(|| {
                cpu.scan_into(&p, PlanRequest::Auto, &mut out, &mut last)
                    .expect("valid problem")
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    copy,
    fma_peak,
    diagonal,
    perm_diagonal,
    block_diagonal,
    dplr,
    newton_diag_gru
);
criterion_main!(benches);
