//! Backward rows of the sweep: the gradient pass of a grid point.
//!
//! For each family in [`SweepConfig::backward`](super::SweepConfig) and
//! `T ≤ backward_max_t`, every forward row is followed by a backward row
//! ([`RowKind::Backward`]) under the same plan: one call of the family's
//! backward pass ([`crate::grad`]) with random `∂L/∂out` (uniform in
//! `[-1, 1]`, drawn once per length, untimed), `∂L/∂h_T = 0` and the forward
//! outputs as the saved states (DPLR's readout is not the states: its
//! backward recomputes them with one forward scan, inside the timed call).
//!
//! - Time: the whole call (`timed = backward-call`): the transposed (shifted)
//!   steps, the reverse adjoint scan, the parameter contractions and the
//!   gradient buffers' allocation; on the kernels (`--backend cuda|emu`)
//!   the `grad::*_kernels` form, uploads and downloads included, with the
//!   host parts on rayon's global pool.
//! - Depth: measured by running the reverse scan's plan over depth counters
//!   ([`crate::scan::depth::measure_reverse`] on the CPU engine, the `_rev_`
//!   depth-counting kernels on a runner); `depth_formula` is the plan's.
//!   It is the depth of the adjoint scan, the only part with a dependence
//!   along `T` (the contractions are elementwise per step), except that
//!   DPLR's readout backward also runs one forward scan first.
//! - Bytes: [`backward_bytes`], the least traffic any backward pass needs
//!   (every input a gradient depends on read once, every gradient written
//!   once), so `% copy BW` says how far the pass is from streaming.
//! - `backward_over_forward`: this median over the forward row's.

use super::cases::{mix_seed, uniform, Inputs, View};
use super::config::Shape;
use super::report::{Row, RowKind};
use super::timing::{self, Timing};
use super::{fnv1a, Result, Runner};
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::{DType, Storage};
use crate::family::dplr::{Dplr, DplrOutput};
use crate::family::LinearProblem;
use crate::grad;
use crate::kernels::{measure_depth, FamilyPlan, KernelPlanSummary, Workspace};
use crate::scan::depth::measure_reverse;
use crate::scan::{Plan, PlanRequest};

/// [`Row::timed`] of backward rows: one call of the family's backward pass
/// (`crate::grad::<family>` or its `_kernels` form).
pub const TIMED_BACKWARD_CALL: &str = "backward-call";

/// Storage scalars per batch row and step that a backward pass of `shape`
/// must at least read and write, `(reads, writes)`, not counting `u8`
/// permutation indices ([`Shape::index_bytes_per_step`], read once more):
///
/// | family | reads | writes |
/// |---|---|---|
/// | diagonal | `a`, `h`, `∂L/∂h` (`3D`) | `∂a`, `∂b` (`2D`) |
/// | perm-diagonal | `d`, `h`, `∂L/∂h` (`3n`) | `∂d`, `∂b` (`2n`) |
/// | block-diagonal | `A`, `h`, `∂L/∂h` (`nb·k² + 2n`) | `∂A`, `∂b` (`nb·k² + n`) |
/// | dplr readout | `w,u,v,k,x,q`, `∂L/∂y` (`(3+2R)n + 2m`) | `∂w,∂u,∂v,∂k,∂x,∂q` (`(3+2R)n + m`) |
/// | dplr states | `w,u,v,k,x`, `H`, `∂L/∂H` (`(2+2R)n + m + 2nm`) | `∂w,∂u,∂v,∂k,∂x` (`(2+2R)n + m`) |
///
/// (`h0` and the final-state terms are one step's worth and left out.)
pub fn backward_scalars_per_step(shape: &Shape) -> (usize, usize) {
    match *shape {
        Shape::Diagonal { dim, .. } => (3 * dim, 2 * dim),
        Shape::PermDiagonal { n, .. } => (3 * n, 2 * n),
        Shape::BlockDiagonal { blocks, block, .. } => {
            let (a, n) = (blocks * block * block, blocks * block);
            (a + 2 * n, a + n)
        }
        Shape::Dplr {
            n, m, rank, output, ..
        } => match output {
            DplrOutput::Readout => ((3 + 2 * rank) * n + 2 * m, (3 + 2 * rank) * n + m),
            DplrOutput::States => ((2 + 2 * rank) * n + m + 2 * n * m, (2 + 2 * rank) * n + m),
        },
    }
}

/// Bytes of [`backward_scalars_per_step`] over `B·T` steps in `dtype`
/// storage, permutation indices included (saturating: a report field).
pub fn backward_bytes(shape: &Shape, len: usize, dtype: DType) -> usize {
    let (reads, writes) = backward_scalars_per_step(shape);
    shape
        .batch()
        .saturating_mul(len)
        .saturating_mul((reads + writes) * dtype.size() + shape.index_bytes_per_step())
}

/// Estimated peak bytes of one backward case beyond what the forward
/// case holds: `∂L/∂out`, the gradients and the transposed steps (each
/// about the inputs' size), the adjoint states, and for DPLR the
/// recomputed states and the adjoint in the compute type; plus the
/// reverse scan's own scratch, as the forward's.
pub fn backward_extra_bytes(shape: &Shape, len: usize, chunk: usize, dtype: DType) -> usize {
    let (ins, outs) = shape.scalars_per_step();
    let lanes = shape.lanes();
    let dense = match shape {
        Shape::Dplr { .. } => 3 * lanes,
        _ => lanes,
    };
    let per_step = (outs + 2 * ins + dense) * dtype.size().max(4) + shape.index_bytes_per_step();
    shape
        .batch()
        .saturating_mul(len)
        .saturating_mul(per_step)
        .saturating_add(shape.estimate_bytes(len, chunk, dtype))
}

/// `Some(states)` when the family's backward takes the forward outputs as
/// its saved states; `None` for DPLR's readout (its backward recomputes
/// them).
fn saved_states<'s, S>(view: &View<'_, S>, out: &'s [S]) -> Option<&'s [S]> {
    match view {
        View::Dplr(Dplr {
            output: DplrOutput::Readout,
            ..
        }) => None,
        _ => Some(out),
    }
}

/// One backward pass of `view` on the CPU engine; returns the reverse
/// scan's plan.
fn cpu_backward<S: Storage>(
    cpu: &Cpu,
    view: &View<'_, S>,
    states: Option<&[S]>,
    d_out: &[S],
    request: PlanRequest,
) -> crate::Result<Plan> {
    let st = states.unwrap_or(&[]);
    Ok(match view {
        View::Diagonal(p) => grad::diagonal(cpu, p, st, d_out, None, request)?.plan,
        View::PermDiagonal(p) => grad::perm_diagonal(cpu, p, st, d_out, None, request)?.plan,
        View::BlockDiagonal(p) => grad::block_diagonal(cpu, p, st, d_out, None, request)?.plan,
        View::Dplr(p) => grad::dplr(cpu, p, states, d_out, None, request)?.plan,
    })
}

/// Times `call` (one backward pass on a runner returning its reverse plan)
/// under `policy`, then measures the last plan's depth on the runner's
/// depth-counting kernels (`cached` when already known for its key).
fn time_kernel_backward<P, R>(
    runner: &R,
    policy: &super::TimingPolicy,
    ws: &mut Workspace<P::Scratch>,
    cached: &mut std::collections::HashMap<String, u64>,
    mut call: impl FnMut(&mut Workspace<P::Scratch>) -> crate::Result<P>,
) -> crate::Result<(Timing, KernelPlanSummary, u64)>
where
    P: FamilyPlan,
    R: KernelRunner,
{
    let mut last = None;
    let timing = timing::time_runs(policy, || {
        last = Some(call(ws)?);
        Ok::<(), crate::Error>(())
    })?;
    let plan = last.ok_or_else(|| crate::Error::Plan("no timed backward run".into()))?;
    let summary = plan.summary();
    let key = format!("{} reverse", summary.depth_key);
    let depth = match cached.get(&key) {
        Some(&d) => d,
        None => {
            let d = measure_depth(runner, ws, &plan)?;
            cached.insert(key, d);
            d
        }
    };
    Ok((timing, summary, depth))
}

impl Runner<'_, '_> {
    /// Whether grid point `(shape, len)` gets backward rows.
    pub(super) fn wants_backward(&self, shape: Shape, len: usize) -> bool {
        len <= self.config.backward_max_t && self.config.backward.contains(&shape.family())
    }

    /// Progress steps of the backward rows (one per family instance, dtype,
    /// length and plan that gets one).
    pub(super) fn backward_steps(config: &super::SweepConfig) -> usize {
        super::config::follow_up_cases(config, &config.backward, config.backward_max_t)
    }

    /// Random `∂L/∂out` for `inputs` (uniform in `[-1, 1]`).
    pub(super) fn backward_d_out<S: Storage>(&self, inputs: &Inputs<S>) -> Vec<S> {
        let shape = inputs.shape();
        let seed = mix_seed(
            self.config.seed,
            fnv1a(&format!("{} backward/{}", shape.label(), inputs.len())),
        );
        let n = inputs.problem().output_len();
        self.pool.install(|| uniform::<S>(n, -1.0, 1.0, seed, 0xd0))
    }

    /// `Some(reason)` when the backward case of `forward` exceeds the
    /// memory cap.
    fn backward_over_cap(&self, forward: &Row, dtype: DType, shape: Shape) -> Option<String> {
        let need = backward_extra_bytes(&shape, forward.len, forward.chunk, dtype);
        (need > self.config.max_case_bytes).then(|| {
            format!(
                "backward needs ~{} MiB > cap {} MiB",
                need >> 20,
                self.config.max_case_bytes >> 20
            )
        })
    }

    /// The backward row that follows CPU forward row `forward`: the
    /// family's backward pass on the CPU engine under `request`, with
    /// `out` (the forward outputs) as the saved states.
    pub(super) fn backward_cpu<S: Storage>(
        &mut self,
        inputs: &Inputs<S>,
        out: &[S],
        d_out: &[S],
        request: PlanRequest,
        forward: &Row,
    ) -> Result<()> {
        let shape = inputs.shape();
        if let Some(why) = self.backward_over_cap(forward, S::DTYPE, shape) {
            let label = format!("{} backward", shape.label());
            self.skip(&label, S::DTYPE, inputs.len(), request.to_string(), why, 1);
            return Ok(());
        }
        self.progress.set_message(format!(
            "{} backward {} T={} {request}",
            shape.label(),
            S::DTYPE,
            inputs.len()
        ));
        let view = inputs.view();
        let states = saved_states(&view, out);
        let cpu = self.cpu;
        let mut last = None;
        let timing = timing::time_runs(&self.config.timing, || {
            last = Some(cpu_backward(cpu, &view, states, d_out, request)?);
            Ok::<(), crate::Error>(())
        })?;
        let plan = last.ok_or_else(|| crate::Error::Plan("no timed backward run".into()))?;
        let pool = self.pool;
        let len = inputs.len();
        let measured = *self
            .reverse_depth_cache
            .entry((len, plan.chunk))
            .or_insert_with(|| pool.install(|| measure_reverse(len, &plan)));
        let row = Row {
            plan: request.to_string(),
            chunk: plan.chunk,
            chunks: plan.chunks,
            depth: measured.depth,
            work: measured.work,
            depth_formula: plan.depth,
            work_formula: plan.work,
            ..self.backward_row(forward, shape, S::DTYPE, &timing, "cpu")
        };
        self.push_row(row);
        Ok(())
    }

    /// The backward row that follows kernel forward row `forward`: the
    /// family's `grad::*_kernels` on `runner` under `request`, `states`
    /// being the forward outputs (computed on the CPU engine, untimed).
    pub(super) fn backward_kernels<R: KernelRunner, S: Storage + bytemuck::Pod>(
        &mut self,
        runner: &R,
        inputs: &Inputs<S>,
        out: &[S],
        d_out: &[S],
        request: PlanRequest,
        forward: &Row,
    ) -> Result<()> {
        let shape = inputs.shape();
        if let Some(why) = self.backward_over_cap(forward, S::DTYPE, shape) {
            let label = format!("{} backward", shape.label());
            self.skip(&label, S::DTYPE, inputs.len(), request.to_string(), why, 1);
            return Ok(());
        }
        self.progress.set_message(format!(
            "{} backward {} T={} {request}",
            shape.label(),
            S::DTYPE,
            inputs.len()
        ));
        let view = inputs.view();
        let states = saved_states(&view, out);
        let st = states.unwrap_or(&[]);
        let policy = self.config.timing;
        let cache = &mut self.gpu_depth_cache;
        let (timing, summary, depth) = match &view {
            View::Diagonal(p) => {
                time_kernel_backward(runner, &policy, &mut Workspace::new(), cache, |ws| {
                    Ok(grad::diagonal_kernels(runner, ws, p, st, d_out, None, request)?.plan)
                })?
            }
            View::PermDiagonal(p) => {
                time_kernel_backward(runner, &policy, &mut Workspace::new(), cache, |ws| {
                    Ok(grad::perm_diagonal_kernels(runner, ws, p, st, d_out, None, request)?.plan)
                })?
            }
            View::BlockDiagonal(p) => {
                time_kernel_backward(runner, &policy, &mut Workspace::new(), cache, |ws| {
                    Ok(grad::block_diagonal_kernels(runner, ws, p, st, d_out, None, request)?.plan)
                })?
            }
            View::Dplr(p) => {
                time_kernel_backward(runner, &policy, &mut Workspace::new(), cache, |ws| {
                    Ok(grad::dplr_kernels(runner, ws, p, states, d_out, None, request)?.plan)
                })?
            }
        };
        let row = Row {
            plan: format!("{request} [{} reverse]", summary.kind),
            chunk: summary.chunk,
            chunks: summary.chunks,
            depth,
            work: 0,
            depth_formula: summary.depth_formula,
            work_formula: 0,
            ..self.backward_row(forward, shape, S::DTYPE, &timing, runner.backend_name())
        };
        self.push_row(row);
        Ok(())
    }

    /// The fields of a backward row every backend fills the same way (the
    /// plan fields are the caller's).
    fn backward_row(
        &self,
        forward: &Row,
        shape: Shape,
        dtype: DType,
        timing: &Timing,
        backend: &str,
    ) -> Row {
        let secs = timing.median_s.max(1e-12);
        let bytes = backward_bytes(&shape, forward.len, dtype);
        let gb_per_s = bytes as f64 / secs / 1e9;
        Row {
            kind: RowKind::Backward,
            backend: backend.to_string(),
            timed: TIMED_BACKWARD_CALL.to_string(),
            label: format!("{} backward", forward.label),
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            melem_per_s: forward.elements as f64 / secs / 1e6,
            bytes_moved: bytes,
            gb_per_s,
            pct_copy_bw: 100.0 * gb_per_s / self.copy_gbs,
            iterations: None,
            // No per-step flop count is claimed for the backward.
            flops: 0,
            pct_fma_peak: 0.0,
            backward_over_forward: Some(timing.median_s * 1e3 / forward.median_ms.max(1e-12)),
            ..forward.clone()
        }
    }
}
