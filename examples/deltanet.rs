//! A DeltaNet layer's recurrence (the delta rule) in flash-linear-attention's
//! conventions, on the DPLR family.
//!
//! fla's `chunk_delta_rule` takes `q, k: [B,T,H,K]`, `v: [B,T,H,V]`,
//! `β: [B,T,H]` (keys L2-normalized) and returns `o: [B,T,H,V]` and the
//! final state `[B,H,K,V]`:
//!
//! ```text
//! S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ      (S: K×V)
//! o_t = S_tᵀ q_t
//! ```
//!
//! That is DPLR with one `K×V` state per (batch, head): `w = 1`, rank 1,
//! `u = −β k`, `v = k` (so `A_t = I − β_t k_t k_tᵀ`), input key `k`, input
//! value `β v`, readout query `q`. The heads become batch rows
//! (`[B,T,H,K] → [B·H,T,K]`, a host transpose here; variable lengths and a
//! strided head axis without the copy are the next step for the API).
//!
//! The same generic function runs on the CPU engine, on the emulated kernels
//! and on CUDA device 0 when one opens (through [`Engine`]), and each result
//! is checked against the delta rule evaluated step by step in f64.
//!
//! ```text
//! cargo run --release --example deltanet [-- <T>]
//! ```

use parascan::backend::emu::EmuBackend;
use parascan::backend::{Cpu, Engine};
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::PlanRequest;

/// Batch, heads, key and value dimensions.
const B: usize = 2;
const H: usize = 3;
const K: usize = 16;
const V: usize = 8;

/// A small deterministic generator (the example needs no RNG crate).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// One layer's inputs in fla's layout.
struct Inputs {
    len: usize,
    q: Vec<f32>,    // [B,T,H,K]
    k: Vec<f32>,    // [B,T,H,K], unit rows
    v: Vec<f32>,    // [B,T,H,V]
    beta: Vec<f32>, // [B,T,H]
}

impl Inputs {
    fn new(len: usize) -> Self {
        let mut g = Lcg(0xde17a);
        let mut v = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..n).map(|_| g.uniform(lo, hi)).collect()
        };
        let q = v(B * len * H * K, -1.0, 1.0);
        let mut k = v(B * len * H * K, -1.0, 1.0);
        for row in k.chunks_mut(K) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Inputs {
            len,
            q,
            k,
            v: v(B * len * H * V, -1.0, 1.0),
            beta: v(B * len * H, 0.05, 0.95),
        }
    }

    /// `[B,T,H,w]` → `[B·H,T,w]`.
    fn heads_to_batch(&self, x: &[f32], w: usize) -> Vec<f32> {
        let t_len = self.len;
        let mut out = vec![0.0; x.len()];
        for b in 0..B {
            for t in 0..t_len {
                for h in 0..H {
                    let src = ((b * t_len + t) * H + h) * w;
                    let dst = ((b * H + h) * t_len + t) * w;
                    out[dst..dst + w].copy_from_slice(&x[src..src + w]);
                }
            }
        }
        out
    }

    /// The delta rule step by step in f64: `(o: [B,T,H,V], S_T: [B,H,K,V])`.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let t_len = self.len;
        let mut o = vec![0.0; B * t_len * H * V];
        let mut s_final = vec![0.0; B * H * K * V];
        for b in 0..B {
            for h in 0..H {
                let mut s = vec![0.0f64; K * V];
                for t in 0..t_len {
                    let bth = (b * t_len + t) * H + h;
                    let k = &self.k[bth * K..][..K];
                    let q = &self.q[bth * K..][..K];
                    let v = &self.v[bth * V..][..V];
                    let beta = f64::from(self.beta[bth]);
                    for j in 0..V {
                        // (v − Sᵀ k)_j, then S += β k (·)ᵀ.
                        let sk: f64 = (0..K).map(|i| s[i * V + j] * f64::from(k[i])).sum();
                        let delta = f64::from(v[j]) - sk;
                        for i in 0..K {
                            s[i * V + j] += beta * f64::from(k[i]) * delta;
                        }
                    }
                    for j in 0..V {
                        o[bth * V + j] = (0..K).map(|i| s[i * V + j] * f64::from(q[i])).sum();
                    }
                }
                s_final[(b * H + h) * K * V..][..K * V].copy_from_slice(&s);
            }
        }
        (o, s_final)
    }
}

/// DeltaNet on any engine: `(o: [B,T,H,V], S_T: [B,H,K,V])`.
fn deltanet(engine: &impl Engine, x: &Inputs) -> parascan::Result<(Vec<f32>, Vec<f32>)> {
    let t_len = x.len;
    let (q, k) = (x.heads_to_batch(&x.q, K), x.heads_to_batch(&x.k, K));
    let v = x.heads_to_batch(&x.v, V);
    let beta = x.heads_to_batch(&x.beta, 1);
    let rows = B * H * t_len;
    let w = vec![1.0f32; rows * K];
    let u: Vec<f32> = (0..rows * K).map(|i| -beta[i / K] * k[i]).collect();
    let bv: Vec<f32> = (0..rows * V).map(|i| beta[i / V] * v[i]).collect();
    let problem = Dplr {
        w: &w,
        u: &u,
        v: &k,
        k: &k,
        x: &bv,
        q: Some(&q),
        h0: None,
        batch: B * H,
        len: t_len,
        n: K,
        m: V,
        rank: 1,
        output: DplrOutput::Readout,
    };
    let run = engine.run(&problem, PlanRequest::Auto)?;
    // y: [B·H,T,V] → o: [B,T,H,V]; the final states are already [B,H,K,V].
    let mut o = vec![0.0; run.out.len()];
    for b in 0..B {
        for h in 0..H {
            for t in 0..t_len {
                let src = ((b * H + h) * t_len + t) * V;
                let dst = ((b * t_len + t) * H + h) * V;
                o[dst..dst + V].copy_from_slice(&run.out[src..src + V]);
            }
        }
    }
    Ok((o, run.h_last))
}

fn worst(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

/// Runs every engine at length `len` and checks each against the f64
/// reference; returns the worst error per engine.
pub fn run(len: usize) -> Result<Vec<(String, f64)>, String> {
    let inputs = Inputs::new(len.max(1));
    let (want_o, want_s) = inputs.reference();
    let mut results = Vec::new();
    let mut check = |name: String, got: parascan::Result<(Vec<f32>, Vec<f32>)>| {
        let (o, s) = got.map_err(|e| format!("{name}: {e}"))?;
        let err = worst(&o, &want_o).max(worst(&s, &want_s));
        // f32 arithmetic against f64, the state a contraction of unit-key
        // projections: errors stay near f32 rounding times a few hundred steps.
        if err.is_nan() || err >= 2e-4 {
            return Err(format!(
                "{name}: error {err:.2e} against the f64 delta rule"
            ));
        }
        results.push((name, err));
        Ok(())
    };
    check("cpu".into(), deltanet(&Cpu::new(), &inputs))?;
    check("emu".into(), deltanet(&EmuBackend::default(), &inputs))?;
    match parascan::backend::cuda::CudaBackend::new(0) {
        Ok(cuda) => check(
            format!("cuda ({})", cuda.device_name()),
            deltanet(&cuda, &inputs),
        )?,
        Err(e) => println!("cuda: skipped ({e})"),
    }
    Ok(results)
}

#[allow(dead_code)]
fn main() {
    let len = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("T must be a positive integer"))
        .unwrap_or(2048);
    match run(len) {
        Ok(results) => {
            println!("DeltaNet, [B,T,H,K,V] = [{B},{len},{H},{K},{V}], fla layout:");
            for (name, err) in results {
                println!("  {name:<40} max rel error vs f64 delta rule {err:.2e}  ok");
            }
        }
        Err(e) => {
            eprintln!("deltanet: {e}");
            std::process::exit(1);
        }
    }
}
