//! Newton's iteration count: flat for a contractive GRU, growing with `T`
//! for a state machine.
//!
//! Merrill et al., "Why Are Linear RNNs More Parallelizable?": linear RNNs
//! evaluate in log depth (one scan), while nonlinear RNNs can express
//! problems that no log-depth circuit is believed to solve. Newton's method
//! (DEER, ParaRNN) still parallelizes a nonlinear RNN: every iteration is one
//! log-depth scan of the linearized recurrence, so the total depth is
//! *iterations × log T*, and everything hinges on the iteration count.
//!
//! Two cells side by side, each solved by Newton from the `f(0, x_t)` warm
//! start and by the sequential loop:
//!
//! 1. **Contractive `DiagGru`** (recurrent weights `|a| < 0.5`): the
//!    Jacobians are contractions, errors die out along the sequence, and
//!    Newton converges in the same handful of iterations at every `T`. Depth
//!    grows like `log T`: the parallel evaluation pays off.
//! 2. **Parity machine** ([`Parity`], `h' = σ(β(x + h − 2xh − ½))`, a
//!    smooth `h XOR x` with `β = 20`): every state depends on every earlier
//!    input bit, but in the saturated regime the Jacobian is nearly zero, so
//!    the linearization around a wrong guess carries (almost) no information
//!    from one step to the next. Each iteration fixes about one more step of
//!    the sequence (after `k` iterations the first `k` states are exact), so
//!    Newton needs about `T` iterations: depth `≈ T · log T`, *worse* than the
//!    sequential loop's `T`. The state carries information over arbitrary
//!    distances, which is exactly what makes nonlinear RNNs harder to
//!    parallelize than linear ones. (The same parity function *is* easy for a
//!    linear RNN: `h' = (1 − 2x)·h` in the ±1 encoding is a Diagonal scan.)
//!
//! Checks: the GRU's Newton states equal the sequential loop's within
//! `1e-5`; the parity machine's states, read as bits (`h > ½`), equal the
//! running XOR of the input bits computed in integers, exactly, for both
//! Newton and the sequential loop; the GRU's iteration count varies by at
//! most one over all `T`, and the parity machine needs at least `T/2`.
//!
//! ```text
//! cargo run --release --example newton_hardness [-- --max-log2 14]
//! ```

use std::time::Instant;

use parascan::backend::Cpu;
use parascan::newton::{
    sequential, solve, DiagGru, NewtonOptions, NonlinearProblem, Parity, SolveReport,
};
use parascan::PlanRequest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// GRU units.
const GRU_UNITS: usize = 16;
/// Parity-machine units (independent bit streams).
const PARITY_UNITS: usize = 4;
/// Longest `T` of the parity machine: Newton's cost grows as `T²` there.
const PARITY_MAX_LOG2: u32 = 11;
/// Scan plan of every Newton iteration: depth `≈ 2·16 + 2·log2(T/16)`.
const PLAN: PlanRequest = PlanRequest::Chunk(16);

/// One solve's numbers for the table.
struct Line {
    iterations: usize,
    depth: u64,
    newton_ms: f64,
    sequential_ms: f64,
}

fn options(len: usize) -> NewtonOptions<'static, f32> {
    NewtonOptions {
        plan: PLAN,
        // Never more than T undamped iterations (the exact-prefix bound).
        max_iters: len,
        growth_patience: None,
        ..Default::default()
    }
}

fn converged(rep: &SolveReport, what: &str) -> Result<(), String> {
    if rep.converged {
        Ok(())
    } else {
        Err(format!("{what}: Newton did not converge: {rep:?}"))
    }
}

fn gru_case(cpu: &Cpu, cell: &DiagGru<f32>, len: usize, seed: u64) -> Result<Line, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x: Vec<f32> = (0..len * 3 * GRU_UNITS)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len,
    };
    let t0 = Instant::now();
    let sol = solve(cpu, cell, &problem, &options(len)).map_err(|e| e.to_string())?;
    let newton_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let want = sequential(cpu, cell, &problem).map_err(|e| e.to_string())?;
    let sequential_ms = t0.elapsed().as_secs_f64() * 1e3;
    converged(&sol.report, "diag-gru")?;
    let err = sol
        .states
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if err > 1e-5 {
        return Err(format!(
            "diag-gru T={len}: max |newton − sequential| = {err:e}"
        ));
    }
    Ok(Line {
        iterations: sol.report.iterations,
        depth: sol.report.depth,
        newton_ms,
        sequential_ms,
    })
}

fn parity_case(cpu: &Cpu, cell: &Parity<f32>, len: usize, seed: u64) -> Result<Line, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bits: Vec<u8> = (0..len * PARITY_UNITS)
        .map(|_| u8::from(rng.gen_range(0..3) == 0))
        .collect();
    let x: Vec<f32> = bits.iter().map(|&b| f32::from(b)).collect();
    let problem = NonlinearProblem {
        x: &x,
        h0: None,
        batch: 1,
        len,
    };
    let t0 = Instant::now();
    let sol = solve(cpu, cell, &problem, &options(len)).map_err(|e| e.to_string())?;
    let newton_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let seq = sequential(cpu, cell, &problem).map_err(|e| e.to_string())?;
    let sequential_ms = t0.elapsed().as_secs_f64() * 1e3;
    converged(&sol.report, "parity")?;
    // The exact answer: running XOR of each unit's bits, in integers.
    let mut parity = [0u8; PARITY_UNITS];
    for t in 0..len {
        for (i, p) in parity.iter_mut().enumerate() {
            let k = t * PARITY_UNITS + i;
            *p ^= bits[k];
            for (what, states) in [("newton", &sol.states), ("sequential", &seq)] {
                let got = u8::from(states[k] > 0.5);
                if got != *p {
                    return Err(format!(
                        "parity T={len}: {what} bit at t={t}, unit {i} is {got}, XOR says {p} (h = {})",
                        states[k]
                    ));
                }
            }
        }
    }
    Ok(Line {
        iterations: sol.report.iterations,
        depth: sol.report.depth,
        newton_ms,
        sequential_ms,
    })
}

/// Runs both cells for `T = 2^4, 2^6, …, 2^max_log2` (the parity machine
/// up to `2^11`), prints the table, and checks the results and the two
/// iteration-count shapes; `Err` on any failure.
pub fn run(max_log2: u32) -> Result<(), String> {
    let cpu = Cpu::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0x6a0);
    let mut w = || -> Vec<f32> { (0..GRU_UNITS).map(|_| rng.gen_range(-0.5..0.5)).collect() };
    let gru = DiagGru::new(w(), w(), w()).map_err(|e| e.to_string())?;
    let parity = Parity::new(PARITY_UNITS, 20.0f32).map_err(|e| e.to_string())?;

    println!("Newton ({PLAN} scans) versus the sequential loop; depth = measured critical path");
    println!(
        "{:>8} | {:>5} {:>7} {:>10} {:>10} | {:>6} {:>9} {:>10} {:>10}",
        "T", "GRU it", "depth", "newton ms", "seq ms", "par it", "depth", "newton ms", "seq ms"
    );
    let mut gru_iters = Vec::new();
    let mut log2 = 4;
    while log2 <= max_log2 {
        let len = 1usize << log2;
        let g = gru_case(&cpu, &gru, len, 0x100 + u64::from(log2))?;
        gru_iters.push(g.iterations);
        let p = if log2 <= PARITY_MAX_LOG2 {
            let p = parity_case(&cpu, &parity, len, 0x200 + u64::from(log2))?;
            if p.iterations < len / 2 {
                return Err(format!(
                    "parity T={len}: only {} iterations; the hard cell should need about T",
                    p.iterations
                ));
            }
            format!(
                "{:>6} {:>9} {:>10.2} {:>10.3}",
                p.iterations, p.depth, p.newton_ms, p.sequential_ms
            )
        } else {
            format!("{:>38}", "(skipped: ~T² work)")
        };
        println!(
            "{len:>8} | {:>5} {:>7} {:>10.2} {:>10.3} | {p}",
            g.iterations, g.depth, g.newton_ms, g.sequential_ms
        );
        log2 += 2;
    }
    let (lo, hi) = (
        gru_iters.iter().copied().min().unwrap_or(0),
        gru_iters.iter().copied().max().unwrap_or(0),
    );
    if hi > lo + 1 {
        return Err(format!(
            "diag-gru iteration counts {gru_iters:?} are not flat in T"
        ));
    }
    println!(
        "\nGRU: {lo}–{hi} iterations at every T (depth ~ log T); parity: ~T iterations \
         (depth ~ T·log T, above the sequential loop's T). All results checked."
    );
    Ok(())
}

fn max_log2_arg() -> Result<u32, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(14),
        [flag, v] if flag == "--max-log2" => {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("--max-log2 {v}: expected an integer"))?;
            if (4..=20).contains(&n) {
                Ok(n)
            } else {
                Err(format!("--max-log2 {n}: expected 4..=20"))
            }
        }
        _ => Err(format!(
            "unexpected arguments {args:?} (expected --max-log2 N)"
        )),
    }
}

#[allow(dead_code)] // unused where tests/examples.rs includes this file
fn main() {
    if let Err(e) = max_log2_arg().and_then(run) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
