//! Iterated 3×3 matrix products mod `m`, by the dense (block-diagonal) scan
//! and by DPLR transitions.
//!
//! Merrill et al., "Why Are Linear RNNs More Parallelizable?": dense and
//! DPLR linear RNNs can compute iterated 3×3 matrix products (a problem
//! beyond PD LRNNs); Lemma 6 writes a matrix as a product of rank-1 updates
//! of the identity, so that a DPLR RNN running three steps per matrix
//! computes the same product.
//!
//! `T` random matrices `M_1..M_T` with entries in `0..m` (`m = 7`) are made,
//! each as a product of three rank-1 updates of the identity,
//! `M_t = (I + u_3 v_3ᵀ)(I + u_2 v_2ᵀ)(I + u_1 v_1ᵀ) mod m` with integer
//! `u, v ∈ {0..m-1}³` and `1 + vᵀu ≢ 0 (mod m)` (so every `M_t` is
//! invertible mod `m` and the product does not collapse to zero), and the product `P = M_T ⋯ M_1 mod m` is computed
//! three ways and compared exactly:
//!
//! 1. sequentially, in integers, reducing mod `m` after every product;
//! 2. by [`BlockDiagonal`] (`blocks = 1`, `block = 3`, `f64`): three batch
//!    rows per segment with `h_0 = e_1, e_2, e_3`, so the final states are
//!    the columns of the segment's product;
//! 3. by [`Dplr`] (`n = m_cols = 3`, `h_0 = I`, `k = 0`, `x = 0`, so
//!    `H_T` is the product): first over the `3T` rank-1 steps
//!    (`w = 1`, `R = 1`), then over dense products written as DPLR with
//!    `w = 0`, `R = 3`, `u_r = column r`, `v_r = e_r`.
//!
//! ## Why segments
//!
//! A scan over `f64` multiplies integers without reducing them, and `f64`
//! is exact only below 2^53. All entries are non-negative, so every partial
//! sum the engine forms (in any order) is at most the corresponding entry of
//! the product of the factors, bounded by `‖A‖_∞^L` over `L` steps. With
//! `‖M‖_∞ ≤ 3·(m−1) = 18` a segment of `L = 8` matrices stays below
//! `18^8 ≈ 1.1·10^10`; a rank-1 step has `‖I + u vᵀ‖_∞ ≤ 1 + 3·(m−1)² = 109`,
//! so a DPLR segment holds 6 steps (`109^6 ≈ 1.7·10^12`). The work is
//! therefore a tree: every level scans segments (as independent batch rows,
//! in parallel), reduces the segment products mod `m`, and hands them to the
//! next level, until one matrix is left. The depth is the sum over levels of
//! each level's measured scan depth (plus one elementwise mod per level), so
//! it grows with `log T`, versus `T` (dense) or `3T` (DPLR) sequentially.
//!
//! ```text
//! cargo run --release --example iterated_matmul [-- --max-log2 16]
//! ```

use parascan::backend::Cpu;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::scan::depth::measure;
use parascan::{Plan, PlanRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The modulus.
const MODULUS: i64 = 7;
/// Matrix size.
const K: usize = 3;
/// Matrices per segment at the dense levels.
const DENSE_SEGMENT: usize = 8;
/// Rank-1 steps per segment at the first DPLR level (two matrices).
const RANK1_SEGMENT: usize = 6;
/// The plan every level's scan runs under.
const REQUEST: PlanRequest = PlanRequest::MinDepth;

/// A 3×3 integer matrix, row-major, entries in `0..MODULUS` when reduced.
type Mat = [[i64; K]; K];
/// A rank-1 update `I + u vᵀ`.
type Rank1 = ([i64; K], [i64; K]);

const IDENTITY: Mat = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];

fn mul_mod(a: &Mat, b: &Mat) -> Mat {
    let mut c = [[0i64; K]; K];
    for (r, row) in c.iter_mut().enumerate() {
        for (col, e) in row.iter_mut().enumerate() {
            *e = (0..K).map(|j| a[r][j] * b[j][col]).sum::<i64>() % MODULUS;
        }
    }
    c
}

fn rank1_matrix((u, v): &Rank1) -> Mat {
    let mut a = IDENTITY;
    for (r, row) in a.iter_mut().enumerate() {
        for (c, e) in row.iter_mut().enumerate() {
            *e += u[r] * v[c];
        }
    }
    a
}

/// `T` matrices, each given by its three rank-1 factors (applied first to
/// last) and its value `(I + u_3 v_3ᵀ)(I + u_2 v_2ᵀ)(I + u_1 v_1ᵀ) mod m`.
fn random_matrices(len: usize, seed: u64) -> (Vec<[Rank1; 3]>, Vec<Mat>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vec3 = || -> [i64; K] { std::array::from_fn(|_| rng.gen_range(0..MODULUS)) };
    // det(I + u vᵀ) = 1 + vᵀu: redraw until it is nonzero mod m, so every
    // M_t is invertible mod m and the running product never collapses to 0.
    let mut invertible_rank1 = || loop {
        let (u, v) = (vec3(), vec3());
        if (1 + (0..K).map(|j| u[j] * v[j]).sum::<i64>()) % MODULUS != 0 {
            return (u, v);
        }
    };
    let factors: Vec<[Rank1; 3]> = (0..len)
        .map(|_| std::array::from_fn(|_| invertible_rank1()))
        .collect();
    let mats = factors
        .iter()
        .map(|f| {
            f.iter()
                .fold(IDENTITY, |p, r1| mul_mod(&rank1_matrix(r1), &p))
        })
        .collect();
    (factors, mats)
}

/// Longest run of steps with `‖A‖_∞ ≤ norm` whose product stays below 2^53.
fn max_exact_segment(norm: f64) -> usize {
    (53.0 * 2f64.ln() / norm.ln()).floor() as usize
}

/// Reads an exact non-negative integer below 2^53 out of an `f64` and
/// reduces it mod `m`.
fn exact_mod(x: f64, what: &str) -> Result<i64, String> {
    if x.fract() != 0.0 || !(0.0..9.007_199_254_740_992e15).contains(&x) {
        return Err(format!("{what}: {x} is not an exact non-negative integer"));
    }
    Ok((x as i64) % MODULUS)
}

/// Depths of the levels of one tree reduction.
#[derive(Default)]
struct Depths {
    levels: usize,
    scan_depth: u64,
}

impl Depths {
    /// Adds a level that scanned segments of `seg` steps under `plan` (the
    /// plan the engine ran).
    fn add(&mut self, seg: usize, plan: &Plan) {
        self.levels += 1;
        self.scan_depth += measure(seg, plan).depth;
    }
    /// Scan depth plus one elementwise mod per level.
    fn total(&self) -> u64 {
        self.scan_depth + self.levels as u64
    }
}

/// One dense level: products of consecutive segments of `mats` (padded with
/// identities), reduced mod `m`.
fn dense_level(cpu: &Cpu, mats: &[Mat]) -> Result<(Vec<Mat>, Plan), String> {
    let seg = DENSE_SEGMENT;
    let groups = mats.len().div_ceil(seg);
    let batch = K * groups;
    let mut a = vec![0.0f64; batch * seg * K * K];
    let b = vec![0.0f64; batch * seg * K];
    let mut h0 = vec![0.0f64; batch * K];
    for g in 0..groups {
        for j in 0..K {
            let row = g * K + j;
            h0[row * K + j] = 1.0; // e_j: the scan tracks column j
            for s in 0..seg {
                let m = mats.get(g * seg + s).unwrap_or(&IDENTITY);
                let at = (row * seg + s) * K * K;
                for r in 0..K {
                    for c in 0..K {
                        a[at + r * K + c] = m[r][c] as f64;
                    }
                }
            }
        }
    }
    let problem = BlockDiagonal {
        a: &a,
        b: &b,
        h0: Some(&h0),
        batch,
        len: seg,
        blocks: 1,
        block: K,
    };
    let run = cpu.scan(&problem, REQUEST).map_err(|e| e.to_string())?;
    let mut out = vec![[[0i64; K]; K]; groups];
    for (g, p) in out.iter_mut().enumerate() {
        // Batch row g·K + j ends in column j of segment g's product.
        for (r, row) in p.iter_mut().enumerate() {
            for (j, e) in row.iter_mut().enumerate() {
                *e = exact_mod(run.h_last[(g * K + j) * K + r], "dense scan")?;
            }
        }
    }
    Ok((out, run.plan))
}

/// The product `M_T ⋯ M_1 mod m` by dense levels.
fn dense_product(cpu: &Cpu, mats: &[Mat]) -> Result<(Mat, Depths), String> {
    let mut depths = Depths::default();
    let mut level = mats.to_vec();
    loop {
        let (next, plan) = dense_level(cpu, &level)?;
        level = next;
        depths.add(DENSE_SEGMENT, &plan);
        if level.len() == 1 {
            return Ok((level[0], depths));
        }
    }
}

/// One DPLR level over `steps` steps of rank `rank`, in segments of `seg`
/// (padded with identity steps `w = 1, u = v = 0`): each segment is a batch
/// row with `H_0 = I`, so its `H_T` is the segment's product. `fill(i, w, u,
/// v)` writes step `i`'s `w: [n]`, `u, v: [R,n]`.
fn dplr_level(
    cpu: &Cpu,
    steps: usize,
    rank: usize,
    seg: usize,
    fill: impl Fn(usize, &mut [f64], &mut [f64], &mut [f64]),
) -> Result<(Vec<Mat>, Plan), String> {
    let groups = steps.div_ceil(seg);
    let total = groups * seg;
    let mut w = vec![1.0f64; total * K];
    let mut u = vec![0.0f64; total * rank * K];
    let mut v = vec![0.0f64; total * rank * K];
    for i in 0..steps {
        fill(
            i,
            &mut w[i * K..(i + 1) * K],
            &mut u[i * rank * K..(i + 1) * rank * K],
            &mut v[i * rank * K..(i + 1) * rank * K],
        );
    }
    let k = vec![0.0f64; total * K];
    let x = vec![0.0f64; total * K];
    let h0: Vec<f64> = (0..groups)
        .flat_map(|_| IDENTITY.iter().flatten().map(|&e| e as f64))
        .collect();
    let problem = Dplr {
        w: &w,
        u: &u,
        v: &v,
        k: &k,
        x: &x,
        q: None,
        h0: Some(&h0),
        batch: groups,
        len: seg,
        n: K,
        m: K,
        rank,
        output: DplrOutput::States,
    };
    let run = cpu.scan(&problem, REQUEST).map_err(|e| e.to_string())?;
    let mut out = vec![[[0i64; K]; K]; groups];
    for (g, p) in out.iter_mut().enumerate() {
        // Batch row g ends in H_T = segment g's product, row-major.
        for (r, row) in p.iter_mut().enumerate() {
            for (c, e) in row.iter_mut().enumerate() {
                *e = exact_mod(run.h_last[(g * K + r) * K + c], "DPLR scan")?;
            }
        }
    }
    Ok((out, run.plan))
}

/// The product by DPLR transitions: `3T` rank-1 steps `I + u vᵀ`, then
/// dense products as rank-3 DPLR steps (`w = 0`, `u_r` = column `r`,
/// `v_r = e_r`).
fn dplr_product(cpu: &Cpu, factors: &[[Rank1; 3]]) -> Result<(Mat, Depths), String> {
    let mut depths = Depths::default();
    let rank1: Vec<&Rank1> = factors.iter().flatten().collect();
    let (mut level, plan) = dplr_level(cpu, rank1.len(), 1, RANK1_SEGMENT, |i, _w, u, v| {
        for j in 0..K {
            u[j] = rank1[i].0[j] as f64;
            v[j] = rank1[i].1[j] as f64;
        }
    })?;
    depths.add(RANK1_SEGMENT, &plan);
    while level.len() > 1 {
        let mats = level;
        let (next, plan) = dplr_level(cpu, mats.len(), K, DENSE_SEGMENT, |i, w, u, v| {
            w.fill(0.0);
            for r in 0..K {
                for j in 0..K {
                    u[r * K + j] = mats[i][j][r] as f64; // column r
                    v[r * K + j] = if j == r { 1.0 } else { 0.0 };
                }
            }
        })?;
        level = next;
        depths.add(DENSE_SEGMENT, &plan);
    }
    Ok((level[0], depths))
}

/// Runs the check for `T = 2^4, 2^6, …, 2^max_log2`; `Err` on a mismatch.
pub fn run(max_log2: u32) -> Result<(), String> {
    let m1 = (MODULUS - 1) as f64;
    let dense_norm = K as f64 * m1;
    let rank1_norm = 1.0 + K as f64 * m1 * m1;
    if DENSE_SEGMENT > max_exact_segment(dense_norm)
        || RANK1_SEGMENT > max_exact_segment(rank1_norm)
        || RANK1_SEGMENT % 3 != 0
    {
        return Err("segment lengths exceed the f64-exact bound".into());
    }
    let cpu = Cpu::new();
    println!(
        "iterated 3x3 products mod {MODULUS}; segments: dense {DENSE_SEGMENT} (exact up to {}), \
         rank-1 DPLR {RANK1_SEGMENT} (exact up to {}); plan per level: {REQUEST}",
        max_exact_segment(dense_norm),
        max_exact_segment(rank1_norm),
    );
    println!(
        "{:>7} | {:>6} {:>7} {:>9} | {:>6} {:>7} {:>9} | exact",
        "T", "levels", "depth", "seq depth", "levels", "depth", "seq depth"
    );
    println!(
        "{:>7} | {:^24} | {:^24} |",
        "", "dense (BlockDiagonal)", "DPLR (3 rank-1 steps/M)"
    );
    let mut log2 = 4;
    while log2 <= max_log2 {
        let len = 1usize << log2;
        let (factors, mats) = random_matrices(len, 0x3a7 + log2 as u64);
        let sequential = mats.iter().fold(IDENTITY, |p, m| mul_mod(m, &p));
        let (dense, dd) = dense_product(&cpu, &mats)?;
        if dense != sequential {
            return Err(format!(
                "T = {len}: dense scan gives {dense:?}, sequential {sequential:?}"
            ));
        }
        let (dplr, pd) = dplr_product(&cpu, &factors)?;
        if dplr != dense {
            return Err(format!(
                "T = {len}: DPLR scan gives {dplr:?}, dense {dense:?}"
            ));
        }
        println!(
            "{:>7} | {:>6} {:>7} {:>9} | {:>6} {:>7} {:>9} | yes  P = {:?}",
            len,
            dd.levels,
            dd.total(),
            len,
            pd.levels,
            pd.total(),
            3 * len,
            sequential
        );
        log2 += 2;
    }
    Ok(())
}

/// `--max-log2 N` from the command line (default 16).
fn max_log2_arg() -> Result<u32, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut max_log2 = 16;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--max-log2" => {
                let v = args.get(i + 1).ok_or("--max-log2 needs a value")?;
                max_log2 = v
                    .parse()
                    .map_err(|_| format!("--max-log2 {v}: expected an integer"))?;
                if !(4..=24).contains(&max_log2) {
                    return Err(format!("--max-log2 {max_log2}: expected 4..=24"));
                }
                i += 2;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (expected --max-log2 N)"
                ))
            }
        }
    }
    Ok(max_log2)
}

#[allow(dead_code)] // unused where tests/examples.rs includes this file
fn main() {
    if let Err(e) = max_log2_arg().and_then(run) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
