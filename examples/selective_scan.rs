//! A Mamba-style selective scan (S6) as a model's forward pass runs it.
//!
//! Per batch row, channel `d < D` and state `s < N`:
//!
//! ```text
//! h_t[d,s] = exp(Δ_t[d]·A[d,s]) · h_{t-1}[d,s] + Δ_t[d]·B_t[s]·x_t[d]
//! y_t[d]   = Σ_s C_t[s] · h_t[d,s]
//! ```
//!
//! with `A < 0` (so decays lie in `(0, 1)`), a positive step size `Δ`
//! (softplus of a projection in Mamba), and input-dependent `B_t`, `C_t`.
//! That is the Diagonal family over `D·N` lanes in the `[B,T,D·N]` layout:
//! decays `a = exp(Δ·A)` and inputs `b = Δ·B·x`.
//!
//! The sequence arrives in two halves (as a streaming model sees it): the
//! second half starts from the first half's final state (`h0` in, `h_T`
//! out), on one reused workspace. It runs on
//! 1. the CPU engine,
//! 2. the kernels on the SIMT emulator (the CUDA sources, on the CPU),
//! 3. the kernels on CUDA device 0 when one opens,
//!
//! through the device API on typed device tensors, and each result is
//! checked against a sequential f64 reference written out below.
//!
//! ```text
//! cargo run --release --example selective_scan [-- <T>]
//! ```

use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::backend::Cpu;
use parascan::family::{diagonal::Diagonal, Layout};
use parascan::kernels::launch_scan_buffers;
use parascan::kernels::{
    plan_diagonal, DeviceTensor, DiagShape, DiagonalBuffers, DiagonalWorkspace,
};
use parascan::{DType, PlanRequest};

/// Batch, channels, states per channel.
const B: usize = 2;
const D: usize = 8;
const N: usize = 4;

/// A small deterministic generator (the example needs no RNG crate).
struct Lcg(u64);

impl Lcg {
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// One layer's inputs: `x, Δ: [B,T,D]`, `A: [D,N]`, `B, C: [B,T,N]`.
struct Layer {
    len: usize,
    x: Vec<f32>,
    delta: Vec<f32>,
    a_log: Vec<f32>,
    b_in: Vec<f32>,
    c_out: Vec<f32>,
}

impl Layer {
    fn new(len: usize) -> Self {
        let mut g = Lcg(0x5eed);
        let mut v = |n: usize, lo: f32, hi: f32| (0..n).map(|_| g.uniform(lo, hi)).collect();
        Layer {
            len,
            x: v(B * len * D, -1.0, 1.0),
            // Mamba's Δ = softplus(·) is positive; keep decays in (0.4, 1).
            delta: v(B * len * D, 0.01, 0.5),
            a_log: v(D * N, -1.5, -0.05),
            b_in: v(B * len * N, -1.0, 1.0),
            c_out: v(B * len * N, -1.0, 1.0),
        }
    }

    /// Decays `exp(Δ·A)` and inputs `Δ·B·x` for steps `t0..t1`, `[B,t1−t0,D·N]`.
    fn discretize(&self, t0: usize, t1: usize) -> (Vec<f32>, Vec<f32>) {
        let steps = t1 - t0;
        let mut a = Vec::with_capacity(B * steps * D * N);
        let mut b = Vec::with_capacity(B * steps * D * N);
        for bi in 0..B {
            for t in t0..t1 {
                for d in 0..D {
                    let i = (bi * self.len + t) * D + d;
                    let (dt, x) = (self.delta[i], self.x[i]);
                    for s in 0..N {
                        a.push((dt * self.a_log[d * N + s]).exp());
                        b.push(dt * self.b_in[(bi * self.len + t) * N + s] * x);
                    }
                }
            }
        }
        (a, b)
    }

    /// `y: [B,T,D]` from all states `[B,T,D·N]` of steps `t0..t1`.
    fn readout(&self, h: &[f32], t0: usize, t1: usize) -> Vec<f64> {
        let steps = t1 - t0;
        let mut y = Vec::with_capacity(B * steps * D);
        for bi in 0..B {
            for t in 0..steps {
                for d in 0..D {
                    let c = &self.c_out[(bi * self.len + t0 + t) * N..][..N];
                    let hs = &h[((bi * steps + t) * D + d) * N..][..N];
                    y.push(
                        c.iter()
                            .zip(hs)
                            .map(|(&c, &h)| f64::from(c) * f64::from(h))
                            .sum(),
                    );
                }
            }
        }
        y
    }

    /// The sequential reference in f64, straight from the definition:
    /// `(y: [B,T,D], h_T: [B,D·N])`.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; B * self.len * D];
        let mut h_t = vec![0.0; B * D * N];
        for bi in 0..B {
            let mut h = vec![0.0f64; D * N];
            for t in 0..self.len {
                let bt = bi * self.len + t;
                for d in 0..D {
                    let dt = f64::from(self.delta[bt * D + d]);
                    let x = f64::from(self.x[bt * D + d]);
                    let mut acc = 0.0;
                    for s in 0..N {
                        let decay = (dt * f64::from(self.a_log[d * N + s])).exp();
                        let hs = &mut h[d * N + s];
                        *hs = decay * *hs + dt * f64::from(self.b_in[bt * N + s]) * x;
                        acc += f64::from(self.c_out[bt * N + s]) * *hs;
                    }
                    y[bt * D + d] = acc;
                }
            }
            h_t[bi * D * N..][..D * N].copy_from_slice(&h);
        }
        (y, h_t)
    }
}

/// Largest `|got − want| / (1 + |want|)`.
fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

/// `(y, h_T)` of both halves on the CPU engine.
fn on_cpu(layer: &Layer) -> parascan::Result<(Vec<f64>, Vec<f32>)> {
    let cpu = Cpu::new();
    let half = layer.len / 2;
    let mut y = vec![0.0; B * layer.len * D];
    let mut h0: Option<Vec<f32>> = None;
    for (t0, t1) in [(0, half), (half, layer.len)] {
        let (a, b) = layer.discretize(t0, t1);
        let run = cpu.scan(
            &Diagonal {
                a: &a,
                b: &b,
                h0: h0.as_deref(),
                batch: B,
                len: t1 - t0,
                dim: D * N,
                layout: Layout::Btd,
            },
            PlanRequest::Auto,
        )?;
        scatter(&mut y, &layer.readout(&run.out, t0, t1), layer.len, t0, t1);
        h0 = Some(run.h_last);
    }
    Ok((y, h0.unwrap_or_default()))
}

/// `(y, h_T)` of both halves on the kernels of `runner`: typed device
/// tensors, one plan per half and one workspace for both (no allocation
/// by the second call), `h_T` of the first half passed as `h0` of the
/// second without leaving the device.
fn on_kernels<R: KernelRunner>(
    runner: &R,
    layer: &Layer,
) -> parascan::Result<(Vec<f64>, Vec<f32>)> {
    let half = layer.len / 2;
    let mut y = vec![0.0; B * layer.len * D];
    let mut ws = DiagonalWorkspace::new();
    let mut state = DeviceTensor::<f32>::alloc(runner, B * D * N)?;
    let mut next = DeviceTensor::<f32>::alloc(runner, B * D * N)?;
    let mut warm = None;
    for (i, (t0, t1)) in [(0, half), (half, layer.len)].into_iter().enumerate() {
        let (a, b) = layer.discretize(t0, t1);
        let plan = plan_diagonal(
            DiagShape::new(B, t1 - t0, D * N),
            Layout::Btd,
            DType::F32,
            PlanRequest::Auto,
            runner.sm_count(),
        )?;
        let (a, b) = (
            DeviceTensor::upload(runner, &a)?,
            DeviceTensor::upload(runner, &b)?,
        );
        let mut h = DeviceTensor::<f32>::alloc(runner, B * (t1 - t0) * D * N)?;
        launch_scan_buffers(
            runner,
            &mut ws,
            &plan,
            DiagonalBuffers {
                a: a.as_ref(),
                b: b.as_ref(),
                h: Some(h.as_mut()),
                ends: parascan::kernels::EndBuffers {
                    h0: (i > 0).then(|| state.as_ref()),
                    h_t: next.as_mut(),
                },
            },
        )?;
        std::mem::swap(&mut state, &mut next);
        scatter(
            &mut y,
            &layer.readout(&h.download(runner)?, t0, t1),
            layer.len,
            t0,
            t1,
        );
        // Both halves have the same shape: the workspace is warm after the first.
        if *warm.get_or_insert(ws.allocations()) != ws.allocations() {
            return Err(parascan::Error::Plan(
                "the warm workspace allocated again".into(),
            ));
        }
    }
    Ok((y, state.download(runner)?))
}

/// Places the readout of steps `t0..t1` into `y: [B,T,D]`.
fn scatter(y: &mut [f64], part: &[f64], len: usize, t0: usize, t1: usize) {
    let steps = t1 - t0;
    for bi in 0..B {
        y[(bi * len + t0) * D..][..steps * D].copy_from_slice(&part[bi * steps * D..][..steps * D]);
    }
}

/// Runs every backend at sequence length `len` and checks each against the
/// reference; returns the worst error per backend.
pub fn run(len: usize) -> Result<Vec<(String, f64)>, String> {
    let layer = Layer::new(len.max(2));
    let (want_y, want_t) = layer.reference();
    let mut results = Vec::new();
    let mut check = |name: String, got: parascan::Result<(Vec<f64>, Vec<f32>)>| {
        let (y, h_t) = got.map_err(|e| format!("{name}: {e}"))?;
        let h_t: Vec<f64> = h_t.iter().map(|&v| f64::from(v)).collect();
        let err = worst(&y, &want_y).max(worst(&h_t, &want_t));
        // f32 storage and arithmetic against the f64 reference.
        if err.is_nan() || err >= 1e-4 {
            return Err(format!("{name}: error {err:.2e} against the f64 reference"));
        }
        results.push((name, err));
        Ok(())
    };
    check("cpu".into(), on_cpu(&layer))?;
    check("emu".into(), on_kernels(&EmuBackend::default(), &layer))?;
    match parascan::backend::cuda::CudaBackend::new(0) {
        Ok(cuda) => check(
            format!("cuda ({})", cuda.device_name()),
            on_kernels(&cuda, &layer),
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
        .unwrap_or(4096);
    match run(len) {
        Ok(results) => {
            println!("selective scan, [B,T,D,N] = [{B},{len},{D},{N}], two halves with h0/h_T:");
            for (name, err) in results {
                println!("  {name:<40} max rel error vs f64 reference {err:.2e}  ok");
            }
        }
        Err(e) => {
            eprintln!("selective_scan: {e}");
            std::process::exit(1);
        }
    }
}
