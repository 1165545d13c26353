//! Variable-length rows of the sweep: what packing costs against padding.
//!
//! For each family in [`SweepConfig::varlen`](super::SweepConfig) and
//! `T ≤ varlen_max_t`, every CPU forward row of a `[B,T,·]` instance is
//! followed by two rows ([`RowKind::Varlen`]) under the same plan, both
//! over the same `B·T` tokens cut into `N = 4·B` sequences of random
//! lengths (uniform cut points, drawn once per length; empty sequences
//! included):
//!
//! - `varlen N=…`: one call over the packed axis (`B = 1`, `T' = B·T`,
//!   `cu_seqlens` offsets, [`Varlen`]); every sequence starts from zero
//!   and gets its own `h_T`.
//! - `padded N=… ×F`: the same sequences as an equal-length batch
//!   `[N, L_max, ·]`, the layout a caller without `cu_seqlens` pads to;
//!   `F = N·L_max / (B·T)` is the slots processed per useful token.
//!
//! Both rows count the useful tokens only (elements, bytes, GB/s and
//! % copy BW are those of `B·T` tokens), so the two medians compare the
//! cost of the same work. Depth is measured over the engine's depth
//! counters for the plan and length each row runs (`T'` or `L_max`).
//! Under `--backend cuda|emu` these rows are skipped (reported as such):
//! the packed kernels are timed by `bench`, not yet by the sweep.

use super::cases::{mix_seed, Inputs, SplitMix, View};
use super::config::Shape;
use super::report::{Row, RowKind};
use super::timing::{self, Timing};
use super::{fnv1a, Result, Runner};
use crate::dtype::Storage;
use crate::family::varlen::Varlen;
use crate::family::LinearProblem;
use crate::scan::{Plan, PlanRequest};

/// The inputs of one grid point's varlen rows.
pub(super) struct VarlenCase<S> {
    /// The packed axis: `B = 1`, `T' = B·T`.
    packed: Inputs<S>,
    /// `[N, L_max]`.
    padded: Inputs<S>,
    /// `cu_seqlens`: `N + 1` offsets into `T'`.
    offsets: Vec<usize>,
}

/// `n` sequence lengths summing to `total`, from `n − 1` uniform cut
/// points (deterministic in `seed`); zeros occur.
fn cut_lengths(total: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix(seed);
    let mut cuts: Vec<usize> = (1..n)
        .map(|_| (rng.next_u64() % (total as u64 + 1)) as usize)
        .collect();
    cuts.push(0);
    cuts.push(total);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| w[1] - w[0]).collect()
}

/// `Shape` with batch `b` (the family instance is otherwise unchanged).
fn with_batch(shape: Shape, b: usize) -> Shape {
    match shape {
        Shape::Diagonal { dim, layout, .. } => Shape::Diagonal {
            batch: b,
            dim,
            layout,
        },
        Shape::PermDiagonal { n, .. } => Shape::PermDiagonal { batch: b, n },
        Shape::BlockDiagonal { blocks, block, .. } => Shape::BlockDiagonal {
            batch: b,
            blocks,
            block,
        },
        Shape::Dplr {
            n, m, rank, output, ..
        } => Shape::Dplr {
            batch: b,
            n,
            m,
            rank,
            output,
        },
    }
}

/// Times `cpu.scan_into` of `p` under `request` into fresh buffers.
fn time_problem<P: LinearProblem<Out: Storage>>(
    runner: &Runner<'_, '_>,
    p: &P,
    request: PlanRequest,
) -> Result<(Timing, Plan)> {
    let cpu = runner.cpu;
    let plan = cpu.plan(p, request)?;
    let mut out = vec![P::Out::default(); p.output_len()];
    let mut last = vec![P::Out::default(); p.final_len()];
    let timing = timing::time_runs(&runner.config.timing, || {
        cpu.scan_into(p, request, &mut out, &mut last).map(|_| ())
    })?;
    std::hint::black_box((&out, &last));
    Ok((timing, plan))
}

impl Runner<'_, '_> {
    /// Whether grid point `(shape, len)` gets varlen rows.
    pub(super) fn wants_varlen(&self, shape: Shape, len: usize) -> bool {
        len <= self.config.varlen_max_t && self.config.varlen.contains(&shape.family())
    }

    /// Progress steps of the varlen rows (two per family instance, dtype,
    /// length and plan that gets them).
    pub(super) fn varlen_steps(config: &super::SweepConfig) -> usize {
        2 * super::config::follow_up_cases(config, &config.varlen, config.varlen_max_t)
    }

    /// The inputs of grid point `(shape, len)`'s varlen rows; `None` (and
    /// the rows skipped) when the padded batch exceeds the memory cap.
    pub(super) fn varlen_case<S: Storage>(
        &mut self,
        shape: Shape,
        len: usize,
    ) -> Result<Option<VarlenCase<S>>> {
        let cfg = self.config;
        let total = shape.batch() * len;
        let n = 4 * shape.batch();
        let seed = mix_seed(
            cfg.seed,
            fnv1a(&format!(
                "{} varlen/{}/{len}",
                shape.label(),
                S::DTYPE.name()
            )),
        );
        let lengths = cut_lengths(total, n, seed);
        let l_max = lengths.iter().copied().max().unwrap_or(0).max(1);
        let padded_shape = with_batch(shape, n);
        let need = padded_shape.estimate_bytes(l_max, l_max, S::DTYPE);
        if need > cfg.max_case_bytes {
            let why = format!(
                "padded batch [{n},{l_max}] needs ~{} MiB > cap {} MiB",
                need >> 20,
                cfg.max_case_bytes >> 20
            );
            let label = format!("{} varlen", shape.label());
            self.skip(&label, S::DTYPE, len, "*".into(), why, 2 * cfg.plans.len());
            return Ok(None);
        }
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(lengths.iter().scan(0, |acc, &l| {
                *acc += l;
                Some(*acc)
            }))
            .collect();
        let (packed, padded) = self.pool.install(|| {
            Ok::<_, super::SweepError>((
                Inputs::<S>::generate(with_batch(shape, 1), total, false, seed ^ 1)?,
                Inputs::<S>::generate(padded_shape, l_max, false, seed ^ 2)?,
            ))
        })?;
        Ok(Some(VarlenCase {
            packed,
            padded,
            offsets,
        }))
    }

    /// The two varlen rows that follow CPU forward row `forward`.
    pub(super) fn varlen_rows<S: Storage>(
        &mut self,
        case: &VarlenCase<S>,
        request: PlanRequest,
        forward: &Row,
    ) -> Result<()> {
        let shape = case.packed.shape();
        let n = case.offsets.len() - 1;
        self.progress.set_message(format!(
            "{} varlen {} T={} {request}",
            shape.label(),
            S::DTYPE,
            forward.len
        ));
        let offsets = &case.offsets;
        let (timing, plan) = match case.packed.view() {
            View::Diagonal(p) => time_problem(self, &Varlen::new(p, offsets, None)?, request)?,
            View::PermDiagonal(p) => time_problem(self, &Varlen::new(p, offsets, None)?, request)?,
            View::BlockDiagonal(p) => time_problem(self, &Varlen::new(p, offsets, None)?, request)?,
            View::Dplr(p) => time_problem(self, &Varlen::new(p, offsets, None)?, request)?,
        };
        let packed_len = case.packed.len();
        let row = Row {
            label: format!("{} varlen N={n}", forward.label),
            shape: format!("cu_seqlens N={n} over [1,{packed_len},·]"),
            batch: 1,
            len: packed_len,
            ..self.varlen_row(forward, &timing, &plan, request, packed_len)
        };
        self.push_row(row);

        let (timing, plan) = time_problem(self, &case.padded.problem(), request)?;
        let l_max = case.padded.len();
        let slots = (n * l_max) as f64 / (forward.batch * forward.len).max(1) as f64;
        let row = Row {
            label: format!("{} padded N={n} ×{slots:.2}", forward.label),
            shape: format!("[{n},{l_max},·] padded"),
            batch: n,
            len: l_max,
            ..self.varlen_row(forward, &timing, &plan, request, l_max)
        };
        self.push_row(row);
        Ok(())
    }

    /// A varlen row's timing and plan fields over `forward`'s (same tokens,
    /// bytes and flops), depth measured for `plan` over `len` steps; the
    /// caller sets label, shape, batch and length.
    fn varlen_row(
        &mut self,
        forward: &Row,
        timing: &Timing,
        plan: &Plan,
        request: PlanRequest,
        len: usize,
    ) -> Row {
        let measured = self.measured(len, plan);
        let secs = timing.median_s.max(1e-12);
        let gb_per_s = forward.bytes_moved as f64 / secs / 1e9;
        Row {
            kind: RowKind::Varlen,
            backend: "cpu".to_string(),
            timed: super::TIMED_HOST_CALL.to_string(),
            plan: request.to_string(),
            chunk: plan.chunk,
            chunks: plan.chunks,
            depth: measured.depth,
            work: measured.work,
            depth_formula: plan.depth,
            work_formula: plan.work,
            reps: timing.reps,
            median_ms: timing.median_s * 1e3,
            min_ms: timing.min_s * 1e3,
            melem_per_s: forward.elements as f64 / secs / 1e6,
            gb_per_s,
            pct_copy_bw: 100.0 * gb_per_s / self.copy_gbs,
            pct_fma_peak: super::pct_fma(forward.flops, secs, self.fma_gflops),
            backward_over_forward: None,
            ..forward.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cut_lengths;

    #[test]
    fn cut_lengths_cover_the_total() {
        for (total, n) in [(0, 1), (1, 4), (128, 8), (262_144, 16)] {
            let l = cut_lengths(total, n, 42);
            assert_eq!(l.len(), n);
            assert_eq!(l.iter().sum::<usize>(), total);
        }
    }
}
