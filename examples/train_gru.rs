//! Training a small `DiagGru` layer with plain SGD, using only parascan's
//! parallel forward (Newton) and backward (one reverse scan) passes.
//!
//! The task is synthetic: a fixed random "teacher" layer maps a random
//! input sequence `u_t ∈ R^2` to states `y_t`; a "student" layer of the same
//! shape (input projection `x_t = W u_t + c`, recurrent weights
//! `a_z, a_r, a_c`) starts from other random weights and learns to
//! reproduce `y_t` under the mean squared error
//! `L = ½·mean_{b,t,i} (h_t − y_t)²`. Each SGD step is
//!
//! 1. forward: `newton::solve` (every iteration a parallel scan);
//! 2. backward: `newton::backward` (one reverse scan of the transposed
//!    Jacobians at the solution, then the cell's VJP) gives `∂L/∂x_t` and
//!    `∂L/∂a`; the projection's gradients are `Σ_t ∂L/∂x_t u_tᵀ`, `Σ_t ∂L/∂x_t`.
//!
//! The loss is printed as it goes down. `cargo run --release --example
//! train_gru [steps]` (default 300).

use parascan::backend::Cpu;
use parascan::newton::{backward, solve, DiagGru, NewtonOptions, NonlinearProblem};
use parascan::{PlanRequest, Result};

/// State size of the layer.
const UNITS: usize = 8;
/// Input features per step.
const FEATURES: usize = 2;

/// A small deterministic generator (xorshift), so the example needs no
/// dependencies beyond the crate.
struct Xorshift(u64);

impl Xorshift {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// A DiagGru layer with its input projection.
#[derive(Clone)]
struct Layer {
    /// `W: [3n, FEATURES]` row-major.
    w: Vec<f32>,
    /// `c: [3n]`.
    c: Vec<f32>,
    /// `[a_z | a_r | a_c]`: `[3n]`.
    a: Vec<f32>,
}

impl Layer {
    fn random(rng: &mut Xorshift, scale: f32) -> Self {
        Layer {
            w: rng.vec(3 * UNITS * FEATURES, -scale, scale),
            c: rng.vec(3 * UNITS, -0.5 * scale, 0.5 * scale),
            a: rng.vec(3 * UNITS, -0.5, 0.5),
        }
    }

    fn cell(&self) -> Result<DiagGru<f32>> {
        let n = UNITS;
        DiagGru::new(
            self.a[..n].to_vec(),
            self.a[n..2 * n].to_vec(),
            self.a[2 * n..].to_vec(),
        )
    }

    /// `x_t = W u_t + c` for every step: `[B, T, 3n]`.
    fn project(&self, u: &[f32]) -> Vec<f32> {
        u.chunks(FEATURES)
            .flat_map(|ut| {
                (0..3 * UNITS).map(move |j| {
                    let row = &self.w[j * FEATURES..(j + 1) * FEATURES];
                    row.iter()
                        .zip(ut)
                        .fold(self.c[j], |acc, (w, u)| acc + w * u)
                })
            })
            .collect()
    }

    /// The layer's states on inputs `u` (`[B, T, FEATURES]`).
    fn forward(&self, cpu: &Cpu, u: &[f32], batch: usize, len: usize) -> Result<Vec<f32>> {
        let x = self.project(u);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch,
            len,
        };
        Ok(solve(cpu, &self.cell()?, &problem, &NewtonOptions::default())?.states)
    }
}

/// Trains for `steps` SGD steps on sequences of `len` steps; returns the
/// loss before the first and after the last step.
pub fn run(steps: usize, len: usize) -> Result<(f64, f64)> {
    let batch = 4;
    let cpu = Cpu::new();
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let teacher = Layer::random(&mut rng, 1.5);
    let mut student = Layer::random(&mut rng, 0.3);
    let u = rng.vec(batch * len * FEATURES, -1.0, 1.0);
    let target = teacher.forward(&cpu, &u, batch, len)?;
    let count = target.len() as f32;
    let options = NewtonOptions::default();
    let lr = 2.0f32;

    let mut first = None;
    let mut loss = f64::NAN;
    for step in 0..=steps {
        let x = student.project(&u);
        let problem = NonlinearProblem {
            x: &x,
            h0: None,
            batch,
            len,
        };
        let cell = student.cell()?;
        let sol = solve(&cpu, &cell, &problem, &options)?;
        let diff: Vec<f32> = sol.states.iter().zip(&target).map(|(h, y)| h - y).collect();
        loss = diff.iter().map(|d| 0.5 * (*d as f64).powi(2)).sum::<f64>() / count as f64;
        first.get_or_insert(loss);
        if step % 50 == 0 || step == steps {
            println!(
                "step {step:4}  loss {loss:.6}  (newton: {} iterations, depth {})",
                sol.report.iterations, sol.report.depth
            );
        }
        if step == steps {
            break;
        }
        let d_states: Vec<f32> = diff.iter().map(|d| d / count).collect();
        let g = backward(
            &cpu,
            &cell,
            &problem,
            &sol,
            &d_states,
            None,
            PlanRequest::Auto,
        )?;
        // Projection gradients: Σ_t dx_t u_tᵀ and Σ_t dx_t.
        let mut dw = vec![0.0f32; student.w.len()];
        let mut dc = vec![0.0f32; student.c.len()];
        for (dx, ut) in g.x.chunks(3 * UNITS).zip(u.chunks(FEATURES)) {
            for j in 0..3 * UNITS {
                dc[j] += dx[j];
                for f in 0..FEATURES {
                    dw[j * FEATURES + f] += dx[j] * ut[f];
                }
            }
        }
        let sgd = |p: &mut [f32], d: &[f32]| p.iter_mut().zip(d).for_each(|(p, d)| *p -= lr * d);
        sgd(&mut student.w, &dw);
        sgd(&mut student.c, &dc);
        sgd(&mut student.a, &g.params);
    }
    Ok((first.unwrap_or(f64::NAN), loss))
}

#[allow(dead_code)]
fn main() {
    let steps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    match run(steps, 512) {
        Ok((first, last)) => println!("loss {first:.6} → {last:.6} ({:.1}× lower)", first / last),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
