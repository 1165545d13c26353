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
//! value `β v`, readout query `q`.
//!
//! Two runs, each checked against the delta rule evaluated step by step in
//! f64:
//!
//! - **Packed, fla's varlen call** (`cu_seqlens`, `B = 1`): the `[1,T,H,K]`
//!   tensors are taken as they are ([`DplrHeads`] over [`Strided`] views, no
//!   transpose, no copy), the sequences packed on `T` with one initial
//!   state each (`[N,H,K,V]`) and one final state each out, on the CPU
//!   engine through [`Varlen`]. (Packed DPLR kernels are not built yet; the
//!   packed Diagonal kernels are, see `parascan::kernels::varlen`.)
//! - **Fixed length on every engine**: the heads become batch rows
//!   (`[B,T,H,K] → [B·H,T,K]`, a host transpose) and the same generic
//!   function runs on the CPU engine, on the emulated kernels and on CUDA
//!   device 0 when one opens (through [`Engine`]).
//!
//! ```text
//! cargo run --release --example deltanet [-- <T>]
//! ```

use parascan::backend::emu::EmuBackend;
use parascan::backend::{Cpu, Engine};
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::heads::{DplrHeads, Strided};
use parascan::family::varlen::Varlen;
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
    let packed = Packed::new(len.max(1));
    let (packed_o, packed_s) = packed.reference();
    let (o, s) = packed.run().map_err(|e| format!("cpu packed: {e}"))?;
    let err = worst(&o, &packed_o).max(worst(&s, &packed_s));
    if err.is_nan() || err >= 2e-4 {
        return Err(format!(
            "cpu packed (cu_seqlens): error {err:.2e} against the f64 delta rule"
        ));
    }
    let packed_err = err;
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
    results.push((
        "cpu packed (cu_seqlens, [1,T,H,K] views)".into(),
        packed_err,
    ));
    Ok(results)
}

/// fla's varlen call: `B = 1`, `N` sequences packed on `T` (`cu_seqlens`),
/// `q, k: [1,T,H,K]`, `v: [1,T,H,V]`, `β: [1,T,H]`, one initial state per
/// sequence `[N,H,K,V]`.
struct Packed {
    cu_seqlens: Vec<i32>,
    x: Inputs,
    h0: Vec<f32>, // [N,H,K,V]
}

impl Packed {
    /// Lengths around `len / 4` with an empty and a one-step sequence.
    fn new(len: usize) -> Self {
        let q = (len / 4).max(1);
        let lens = [q, 0, 1, q + 3, 2 * q + 1];
        let mut cu_seqlens = vec![0i32];
        for l in lens {
            cu_seqlens.push(cu_seqlens.last().unwrap() + l as i32);
        }
        // Inputs::new draws B rows; the packed call uses the first row only.
        let total = *cu_seqlens.last().unwrap() as usize;
        let x = Inputs::new(total);
        let mut g = Lcg(0x5eed);
        let h0 = (0..lens.len() * H * K * V)
            .map(|_| g.uniform(-0.5, 0.5))
            .collect();
        Packed { cu_seqlens, x, h0 }
    }

    fn sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    /// Row 0 of a `[B,T,H,w]` tensor of the inputs: `[1,T,H,w]`.
    fn row0<'a>(&self, t: &'a [f32], w: usize) -> &'a [f32] {
        &t[..self.x.len * H * w]
    }

    /// `(o: [1,T,H,V], S_T: [N,H,K,V])` on the CPU engine, packed.
    fn run(&self) -> parascan::Result<(Vec<f32>, Vec<f32>)> {
        let t_len = self.x.len;
        let (q, k) = (self.row0(&self.x.q, K), self.row0(&self.x.k, K));
        let v = self.row0(&self.x.v, V);
        let beta = self.row0(&self.x.beta, 1);
        // The per-step factors are computed in the [1,T,H,·] layout itself.
        let w = vec![1.0f32; t_len * H * K];
        let u: Vec<f32> = (0..t_len * H * K).map(|i| -beta[i / K] * k[i]).collect();
        let bv: Vec<f32> = (0..t_len * H * V).map(|i| beta[i / V] * v[i]).collect();
        fn view(x: &[f32], t_len: usize, w: usize) -> Strided<'_, f32> {
            Strided::contiguous(x, t_len, H, w)
        }
        let problem = DplrHeads {
            w: view(&w, t_len, K),
            u: view(&u, t_len, K),
            v: view(k, t_len, K),
            k: view(k, t_len, K),
            x: view(&bv, t_len, V),
            q: Some(view(q, t_len, K)),
            h0: None,
            batch: 1,
            len: t_len,
            heads: H,
            n: K,
            m: V,
            rank: 1,
            output: DplrOutput::Readout,
        };
        let packed = Varlen::new(problem, &self.cu_seqlens, Some(&self.h0))?;
        let run = Cpu::new().scan(&packed, PlanRequest::Auto)?;
        // y: [1,H,T,V] → o: [1,T,H,V]; h_T is already fla's [N,H,K,V].
        let mut o = vec![0.0; run.out.len()];
        for h in 0..H {
            for t in 0..t_len {
                let src = (h * t_len + t) * V;
                let dst = (t * H + h) * V;
                o[dst..dst + V].copy_from_slice(&run.out[src..src + V]);
            }
        }
        Ok((o, run.h_last))
    }

    /// The delta rule step by step in f64, sequence by sequence from its
    /// own initial state: `(o: [1,T,H,V], S_T: [N,H,K,V])`.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let t_len = self.x.len;
        let n = self.sequences();
        let mut o = vec![0.0; t_len * H * V];
        let mut s_final = vec![0.0; n * H * K * V];
        for seq in 0..n {
            let (t0, t1) = (
                self.cu_seqlens[seq] as usize,
                self.cu_seqlens[seq + 1] as usize,
            );
            for h in 0..H {
                let base = (seq * H + h) * K * V;
                let mut s: Vec<f64> = self.h0[base..base + K * V]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect();
                for t in t0..t1 {
                    let th = t * H + h;
                    let k = &self.x.k[th * K..][..K];
                    let q = &self.x.q[th * K..][..K];
                    let v = &self.x.v[th * V..][..V];
                    let beta = f64::from(self.x.beta[th]);
                    for j in 0..V {
                        let sk: f64 = (0..K).map(|i| s[i * V + j] * f64::from(k[i])).sum();
                        let delta = f64::from(v[j]) - sk;
                        for i in 0..K {
                            s[i * V + j] += beta * f64::from(k[i]) * delta;
                        }
                    }
                    for j in 0..V {
                        o[th * V + j] = (0..K).map(|i| s[i * V + j] * f64::from(q[i])).sum();
                    }
                }
                s_final[base..base + K * V].copy_from_slice(&s);
            }
        }
        (o, s_final)
    }
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
