//! A GRU layer's forward pass through Newton's method on the device, as a
//! streaming model runs it.
//!
//! The layer (ParaRNN's GRU with diagonal recurrent weights), per batch
//! row, for inputs `u_t: [d_in]` and state `h: [n]`:
//!
//! ```text
//! [x_z | x_r | x_c] = W u_t + β              (input projection, on the host)
//! z = σ(x_z + a_z⊙h),  r = σ(x_r + a_r⊙h),  c = tanh(x_c + a_c⊙(r⊙h))
//! h_t = (1 − z)⊙h_{t-1} + z⊙c
//! ```
//!
//! The sequence arrives in chunks; each chunk starts from the previous
//! chunk's final state (`h0` in, `h_T` out). It runs on
//! 1. the CPU engine ([`newton::solve`], `Solution::h_t` carried over),
//! 2. the kernels on the SIMT emulator,
//! 3. the kernels on CUDA device 0 when one opens,
//!
//! the kernels through [`newton::solve_device`] on typed device tensors,
//! with one [`NewtonWorkspace`] for every chunk: the first chunk warms it,
//! the later ones allocate nothing and (in the fixed-iteration mode) read
//! nothing back, which the example counts with a [`CountingRunner`]. Both
//! kernel modes run: adaptive (residual checked every iteration) and a
//! fixed iteration count, whose answer is then checked once with
//! [`newton::residual_device`]. Every result is compared with a sequential
//! f64 GRU written out below.
//!
//! ```text
//! cargo run --release --example gru_layer [-- <T>]
//! ```

use parascan::backend::counting::CountingRunner;
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::backend::Cpu;
use parascan::kernels::DeviceTensor;
use parascan::newton::{
    self, DeviceCell, DeviceOptions, DeviceProblem, DeviceStates, DiagGru, Iterations,
    NewtonOptions, NewtonWorkspace, NonlinearProblem,
};

/// Batch, input features, state units, chunks per sequence.
const B: usize = 2;
const D_IN: usize = 6;
const N: usize = 16;
const CHUNKS: usize = 4;
/// Iterations of the fixed mode: Newton on this contractive cell meets
/// f32 accuracy in fewer (the adaptive mode's report says how many).
const FIXED_ITERS: usize = 8;

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

/// The layer's weights and one batch of input sequences.
struct Layer {
    len: usize,
    /// `[3N, D_IN]`, row-major.
    w: Vec<f32>,
    /// `[3N]`.
    beta: Vec<f32>,
    a_z: Vec<f32>,
    a_r: Vec<f32>,
    a_c: Vec<f32>,
    /// `[B, T, D_IN]`.
    u: Vec<f32>,
}

impl Layer {
    fn new(len: usize) -> Self {
        let mut g = Lcg(0x9e37_79b9_7f4a_7c15);
        let scale = 1.0 / (D_IN as f32).sqrt();
        let mut draw = |k: usize, lo: f32, hi: f32| (0..k).map(|_| g.uniform(lo, hi)).collect();
        Layer {
            len,
            w: draw(3 * N * D_IN, -scale, scale),
            beta: draw(3 * N, -0.2, 0.2),
            a_z: draw(N, -0.9, 0.9),
            a_r: draw(N, -0.9, 0.9),
            a_c: draw(N, -0.9, 0.9),
            u: draw(B * len * D_IN, -1.0, 1.0),
        }
    }

    fn cell(&self) -> parascan::Result<DiagGru<f32>> {
        DiagGru::new(self.a_z.clone(), self.a_r.clone(), self.a_c.clone())
    }

    /// The projected inputs `x: [B, t1−t0, 3N]` of steps `t0..t1` (f32, on
    /// the host: a model would run this matmul on its own device).
    fn project(&self, t0: usize, t1: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(B * (t1 - t0) * 3 * N);
        for bi in 0..B {
            for t in t0..t1 {
                let u = &self.u[(bi * self.len + t) * D_IN..][..D_IN];
                for (row, beta) in self.w.chunks_exact(D_IN).zip(&self.beta) {
                    x.push(beta + row.iter().zip(u).map(|(w, u)| w * u).sum::<f32>());
                }
            }
        }
        x
    }

    /// The sequential f64 reference: all states `[B, T, N]` and `h_T`.
    /// Written from the formulas above, independently of parascan's cells.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let f = |v: f32| f64::from(v);
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut states = vec![0.0; B * self.len * N];
        let mut last = vec![0.0; B * N];
        for bi in 0..B {
            let mut h = [0.0f64; N];
            for t in 0..self.len {
                let u = &self.u[(bi * self.len + t) * D_IN..][..D_IN];
                let proj = |row: usize| {
                    f(self.beta[row])
                        + (0..D_IN)
                            .map(|k| f(self.w[row * D_IN + k]) * f(u[k]))
                            .sum::<f64>()
                };
                for (i, hi) in h.iter_mut().enumerate() {
                    let z = sigmoid(proj(i) + f(self.a_z[i]) * *hi);
                    let r = sigmoid(proj(N + i) + f(self.a_r[i]) * *hi);
                    let c = (proj(2 * N + i) + f(self.a_c[i]) * r * *hi).tanh();
                    *hi = (1.0 - z) * *hi + z * c;
                }
                states[(bi * self.len + t) * N..][..N].copy_from_slice(&h);
            }
            last[bi * N..][..N].copy_from_slice(&h);
        }
        (states, last)
    }

    /// Steps `t0..t1` of every chunk.
    fn chunks(&self) -> Vec<(usize, usize)> {
        let step = self.len / CHUNKS;
        (0..CHUNKS).map(|c| (c * step, (c + 1) * step)).collect()
    }
}

/// Places the states of steps `t0..t1` (`[B, t1−t0, N]`) into `[B, T, N]`.
fn scatter(all: &mut [f64], part: &[f32], len: usize, t0: usize, t1: usize) {
    let steps = t1 - t0;
    for bi in 0..B {
        let dst = &mut all[(bi * len + t0) * N..][..steps * N];
        for (d, &s) in dst.iter_mut().zip(&part[bi * steps * N..][..steps * N]) {
            *d = f64::from(s);
        }
    }
}

/// All states and `h_T` on the CPU engine, chunk by chunk.
fn on_cpu(layer: &Layer) -> parascan::Result<(Vec<f64>, Vec<f32>)> {
    let cpu = Cpu::new();
    let cell = layer.cell()?;
    let mut states = vec![0.0; B * layer.len * N];
    let mut h0: Option<Vec<f32>> = None;
    for (t0, t1) in layer.chunks() {
        let x = layer.project(t0, t1);
        let problem = NonlinearProblem {
            x: &x,
            h0: h0.as_deref(),
            batch: B,
            len: t1 - t0,
        };
        let sol = newton::solve(&cpu, &cell, &problem, &NewtonOptions::default())?;
        scatter(&mut states, &sol.states, layer.len, t0, t1);
        h0 = Some(sol.h_t);
    }
    Ok((states, h0.unwrap_or_default()))
}

/// All states and `h_T` on the kernels of `runner`, chunk by chunk, with
/// `iterations`. The device state is carried from chunk to chunk without
/// leaving the device, and the solver's own allocations and read-backs are
/// counted: none once the workspace is warm (after the first chunk), and
/// no read-back at all with a fixed iteration count.
fn on_kernels<R: KernelRunner + Clone>(
    runner: &R,
    layer: &Layer,
    iterations: Iterations,
) -> parascan::Result<(Vec<f64>, Vec<f32>)> {
    let counted = CountingRunner::new(runner.clone());
    let runner = &counted;
    let gru = layer.cell()?;
    let cell = DeviceCell::new(runner, &gru)?;
    let chunk = layer.len / CHUNKS;
    let mut states = vec![0.0; B * layer.len * N];
    let mut ws = NewtonWorkspace::new();
    let mut h = DeviceTensor::<f32>::alloc(runner, B * chunk * N)?;
    let mut state = DeviceTensor::<f32>::alloc(runner, B * N)?;
    let mut next = DeviceTensor::<f32>::alloc(runner, B * N)?;
    let options = DeviceOptions {
        iterations,
        ..Default::default()
    };
    let tolerance = options.newton.atol;
    let fail = |why: String| Err(parascan::Error::Plan(why));
    for (i, (t0, t1)) in layer.chunks().into_iter().enumerate() {
        let x = DeviceTensor::upload(runner, &layer.project(t0, t1))?;
        let problem = DeviceProblem {
            x: x.as_ref(),
            h0: (i > 0).then(|| state.as_ref()),
            batch: B,
            len: chunk,
        };
        let before = runner.counts();
        let report = newton::solve_device(
            runner,
            &mut ws,
            &cell,
            &problem,
            DeviceStates {
                h: h.as_mut(),
                h_t: next.as_mut(),
            },
            &options,
        )?;
        let spent = runner.counts().since(&before);
        if i > 0 && spent.allocations != 0 {
            return fail(format!(
                "chunk {i}: the warm solve allocated {} buffer(s)",
                spent.allocations
            ));
        }
        match iterations {
            Iterations::Fixed(k) => {
                if spent.downloads != 0 || report.iterations != k {
                    return fail(format!(
                        "chunk {i}: a fixed solve read back {} time(s) in {} iterations",
                        spent.downloads, report.iterations
                    ));
                }
                // What the fixed mode does not check, checked once afterwards.
                let r = newton::residual_device(runner, &mut ws, &cell, &problem, h.as_ref())?;
                if r.residual.is_nan() || r.residual > tolerance * (1.0 + r.max_abs) {
                    return fail(format!(
                        "chunk {i}: residual {:.2e} after {k} iterations",
                        r.residual
                    ));
                }
            }
            Iterations::Adaptive => {
                if !report.converged {
                    return fail(format!("chunk {i}: no convergence ({:?})", report.stop));
                }
            }
        }
        drop(problem);
        std::mem::swap(&mut state, &mut next);
        scatter(&mut states, &h.download(runner)?, layer.len, t0, t1);
    }
    Ok((states, state.download(runner)?))
}

/// Worst error of `got` against `want`, relative to `1 + |want|`.
fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0, |m, e| if e.is_nan() { f64::NAN } else { m.max(e) })
}

/// Runs every backend (both kernel modes) at sequence length `len` (rounded
/// up to whole chunks) and checks each against the f64 reference; returns
/// the worst error per run.
pub fn run(len: usize) -> Result<Vec<(String, f64)>, String> {
    let layer = Layer::new(len.max(CHUNKS).div_ceil(CHUNKS) * CHUNKS);
    let (want_h, want_t) = layer.reference();
    let mut results = Vec::new();
    let mut check = |name: String, got: parascan::Result<(Vec<f64>, Vec<f32>)>| {
        let (h, h_t) = got.map_err(|e| format!("{name}: {e}"))?;
        let h_t: Vec<f64> = h_t.iter().map(|&v| f64::from(v)).collect();
        let err = worst(&h, &want_h).max(worst(&h_t, &want_t));
        // f32 arithmetic and a 1e-5 stopping tolerance against f64.
        if err.is_nan() || err >= 1e-4 {
            return Err(format!("{name}: error {err:.2e} against the f64 reference"));
        }
        results.push((name, err));
        Ok(())
    };
    let fixed = Iterations::Fixed(FIXED_ITERS);
    check("cpu".into(), on_cpu(&layer))?;
    let emu = EmuBackend::default();
    check(
        "emu, adaptive".into(),
        on_kernels(&emu, &layer, Iterations::Adaptive),
    )?;
    check("emu, fixed".into(), on_kernels(&emu, &layer, fixed))?;
    match parascan::backend::cuda::CudaBackend::new(0) {
        Ok(cuda) => {
            let name = cuda.device_name();
            check(
                format!("cuda ({name}), adaptive"),
                on_kernels(&cuda, &layer, Iterations::Adaptive),
            )?;
            check(
                format!("cuda ({name}), fixed"),
                on_kernels(&cuda, &layer, fixed),
            )?;
        }
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
            println!(
                "GRU layer, [B,T,d_in,n] = [{B},{len},{D_IN},{N}], {CHUNKS} chunks with h0/h_T:"
            );
            for (name, err) in results {
                println!("  {name:<44} max rel error vs f64 reference {err:.2e}  ok");
            }
        }
        Err(e) => {
            eprintln!("gru_layer: {e}");
            std::process::exit(1);
        }
    }
}
