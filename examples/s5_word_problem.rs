//! The S5 word problem with a permutation-diagonal (PD) scan.
//!
//! Merrill et al., "Why Are Linear RNNs More Parallelizable?": a PD linear
//! RNN composes a word of permutations of 5 elements (the S5 word problem,
//! NC¹-complete) with a scan of logarithmic depth.
//!
//! A stream of `T` random permutations `π_1..π_T` of `{0..4}` (seeded) is fed
//! to [`PermDiagonal`] with `n = 5`, `d = 1`, `b = 0`. The family's rule
//! `(A_t h)_i = h_{π_t(i)}` gives `h_t = h_{t-1}[π_t]`, so
//!
//! ```text
//! h_T[i] = h_0[π_1(π_2(…π_T(i)))]
//! ```
//!
//! With `h_0 = (0, 1, 2, 3, 4)` (one batch row carrying each slot's label)
//! `h_T` *is* the composed permutation `π_1∘π_2∘…∘π_T`; this is the same
//! information as five one-hot rows `h_0 = e_j` (row `j` of that version is
//! the indicator of `h_T = j`), in a fifth of the memory. Labels below 2^24
//! are exact in `f32` and `d = 1, b = 0` only moves them, so the check is
//! exact: every output `h_t` against the recurrence, and `h_T` against a
//! direct right-to-left evaluation `π_1(π_2(…π_T(i)))` for each `i`.
//!
//! ```text
//! cargo run --release --example s5_word_problem [-- --max-log2 20]
//! ```

use parascan::backend::Cpu;
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::scan::depth::measure;
use parascan::PlanRequest;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Elements permuted.
const N: usize = 5;
/// Min-depth (one-step chunks) is only run up to this `T`: its Blelloch
/// tree has one heap-allocated element per step and is slow on the CPU.
const MIN_DEPTH_MAX_LOG2: u32 = 14;

/// `T` random permutations of `0..N`, `[T, N]` row after row.
fn random_word(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut word = Vec::with_capacity(len * N);
    let mut p: [u8; N] = [0, 1, 2, 3, 4];
    for _ in 0..len {
        p.shuffle(&mut rng);
        word.extend_from_slice(&p);
    }
    word
}

/// `π_1(π_2(…π_T(i)))` for every `i`, evaluated point by point from the
/// last permutation to the first (independent of the scan's order).
fn compose_direct(word: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let mut x = i;
        for p in word.chunks_exact(N).rev() {
            x = p[x] as usize;
        }
        *o = x as u8;
    }
    out
}

/// Every prefix state `h_t = h_{t-1}[π_t]` from `h_0 = (0..N)`, `[T, N]`.
fn prefixes_sequential(word: &[u8]) -> Vec<u8> {
    let mut h: [u8; N] = [0, 1, 2, 3, 4];
    let mut out = Vec::with_capacity(word.len());
    for p in word.chunks_exact(N) {
        let mut next = [0u8; N];
        for (nx, &pi) in next.iter_mut().zip(p) {
            *nx = h[pi as usize];
        }
        h = next;
        out.extend_from_slice(&h);
    }
    out
}

/// Runs the check for `T = 2^10, 2^12, …, 2^max_log2`, printing one line per
/// plan; `Err` on the first mismatch or engine error.
pub fn run(max_log2: u32) -> Result<(), String> {
    let cpu = Cpu::new();
    println!(
        "S5 word problem by PD scan (n = {N}, d = 1, b = 0), {} CPU threads",
        cpu.threads()
    );
    println!(
        "{:>8}  {:<11} {:>8} {:>10} {:>12} {:>12}  exact",
        "T", "plan", "depth", "work", "scan ms", "direct ms"
    );
    let mut log2 = 10;
    while log2 <= max_log2 {
        let len = 1usize << log2;
        let word = random_word(len, 0x55 + log2 as u64);
        let d = vec![1.0f32; len * N];
        let b = vec![0.0f32; len * N];
        let h0: Vec<f32> = (0..N).map(|i| i as f32).collect();
        let problem = PermDiagonal::<f32, u8> {
            perm: &word,
            d: &d,
            b: &b,
            h0: Some(&h0),
            batch: 1,
            len,
            n: N,
        };

        let t0 = Instant::now();
        let composed = compose_direct(&word);
        let direct_ms = t0.elapsed().as_secs_f64() * 1e3;
        let prefixes = prefixes_sequential(&word);

        let mut requests = Vec::new();
        if log2 <= MIN_DEPTH_MAX_LOG2 {
            requests.push(PlanRequest::MinDepth);
        }
        requests.push(PlanRequest::Chunk(64));
        requests.push(PlanRequest::Sequential);
        for request in requests {
            let t0 = Instant::now();
            let out = cpu
                .scan(&problem, request)
                .map_err(|e| format!("T = {len}, {request}: {e}"))?;
            let scan_ms = t0.elapsed().as_secs_f64() * 1e3;
            let measured = measure(len, &out.plan);

            if let Some(t) = (0..len)
                .find(|&t| (0..N).any(|i| out.out[t * N + i] != f32::from(prefixes[t * N + i])))
            {
                return Err(format!(
                    "T = {len}, {request}: h_{} = {:?}, expected {:?}",
                    t + 1,
                    &out.out[t * N..(t + 1) * N],
                    &prefixes[t * N..(t + 1) * N]
                ));
            }
            if (0..N).any(|i| out.h_last[i] != f32::from(composed[i])) {
                return Err(format!(
                    "T = {len}, {request}: h_T = {:?}, direct composition gives {:?}",
                    out.h_last, composed
                ));
            }
            let plan = match request {
                PlanRequest::Chunk(c) => format!("chunk={c}"),
                other => other.to_string(),
            };
            println!(
                "{:>8}  {:<11} {:>8} {:>10} {:>12.3} {:>12.3}  yes",
                len, plan, measured.depth, measured.work, scan_ms, direct_ms
            );
        }
        println!("{:>8}  composed permutation π_1∘…∘π_T = {:?}", "", composed);
        log2 += 2;
    }
    Ok(())
}

/// `--max-log2 N` from the command line (default 20).
fn max_log2_arg() -> Result<u32, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut max_log2 = 20;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--max-log2" => {
                let v = args.get(i + 1).ok_or("--max-log2 needs a value")?;
                max_log2 = v
                    .parse()
                    .map_err(|_| format!("--max-log2 {v}: expected an integer"))?;
                if !(10..=26).contains(&max_log2) {
                    return Err(format!("--max-log2 {max_log2}: expected 10..=26"));
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
