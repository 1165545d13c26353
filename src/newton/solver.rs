//! The Newton solver on the CPU engine: every iteration linearizes the cell
//! around the current guess of all states and solves the linear recurrence
//! with the scan of the Jacobian's family.

use std::time::Instant;

use rayon::prelude::*;

use super::cell::Cell;
use super::report::{Diverged, Mode, SolveReport, StopReason};
use super::{InitialGuess, NewtonOptions, NonlinearProblem, Policy, Verdict, Watch};
use crate::backend::Cpu;
use crate::dtype::{Real, Storage};
use crate::error::{Error, Result};
use crate::family::block_diagonal::BlockDiagonal;
use crate::family::diagonal::Diagonal;
use crate::family::varlen::Varlen;
use crate::family::Layout;
use crate::mem::{checked_product, try_vec};
use crate::scan::depth::measure;
use crate::scan::segmented::{Segments, SeqOffset};
use crate::scan::Plan;

/// The states `h_1..h_T` of every sequence and how they were found.
#[derive(Clone, Debug)]
pub struct Solution<T> {
    /// `[B, T, n]`: `h_t` for `t = 1..T`.
    pub states: Vec<T>,
    /// `[B, n]`: the final state `h_T` of every sequence (the last step of
    /// `states`), to carry into the next chunk of a stream as its `h0`.
    pub h_t: Vec<T>,
    /// What the solve did.
    pub report: SolveReport,
}

/// Runs `h_t = f(h_{t-1}, x_t)` step by step for every sequence (in
/// parallel over the batch): the reference and the fallback. Returns
/// `[B, T, n]`.
pub fn sequential<T: Real, C: Cell<T> + ?Sized>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
) -> Result<Vec<T>> {
    sequential_with(cpu, cell, problem, None)
}

/// [`sequential`], restarting from each packed sequence's `h0` at its
/// first step when `seg` is given.
pub(crate) fn sequential_with<T: Real, C: Cell<T> + ?Sized>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    seg: Option<&SegStarts<'_, T>>,
) -> Result<Vec<T>> {
    problem.validate(cell)?;
    let (n, len, din) = (cell.state_dim(), problem.len, cell.input_dim());
    // `validate` checked that `B·T·n` and its bytes fit in usize.
    let mut states = try_vec("states", problem.batch * len * n, T::zero())?;
    cpu.install_for::<T, _>(|| {
        states
            .par_chunks_mut(len * n)
            .enumerate()
            .for_each(|(b, seq)| {
                let start = match problem.h0 {
                    Some(h0) => h0[b * n..(b + 1) * n].to_vec(),
                    None => vec![T::zero(); n],
                };
                // The previous state is read where it was written (no copy
                // per step: for small `n` that call cost as much as the cell).
                for t in 0..len {
                    let (done, rest) = seq.split_at_mut(t * n);
                    let prev: &[T] = match seg.and_then(|g| g.start(b, t)) {
                        Some(h0) => h0,
                        None if t > 0 => &done[(t - 1) * n..],
                        None => &start,
                    };
                    let x = &problem.x[(b * len + t) * din..(b * len + t + 1) * din];
                    cell.step(prev, x, &mut rest[..n]);
                }
            })
    });
    Ok(states)
}

/// Solves `problem` for `cell` with `options` on the CPU engine.
///
/// Errors: invalid shapes or options (before any work); divergence under
/// [`Policy::Error`] returns [`Error::Diverged`] carrying the residual
/// history and the best iterate.
pub fn solve<T, C>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    options: &NewtonOptions<'_, T>,
) -> Result<Solution<T>>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
{
    solve_with(cpu, cell, problem, options, None)
}

/// [`solve`], with packed sequences when `seg` is given (their starts
/// read their own `h0`; the scans are segmented).
pub(crate) fn solve_with<T, C>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    options: &NewtonOptions<'_, T>,
    seg: Option<&SegStarts<'_, T>>,
) -> Result<Solution<T>>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
{
    problem.validate(cell)?;
    options.validate(cell, problem)?;
    let (batch, len, n) = (problem.batch, problem.len, cell.state_dim());
    let mut report = SolveReport::new(cell.name(), options.mode, batch, len, n);
    if options.mode == Mode::Sequential {
        let t0 = Instant::now();
        let states = sequential_with(cpu, cell, problem, seg)?;
        report.cell_s = t0.elapsed().as_secs_f64();
        report.depth = len as u64;
        report.converged = true;
        report.stop = StopReason::Sequential;
        let h_t = last_states(&states, batch, len, n)?;
        return Ok(Solution {
            states,
            h_t,
            report,
        });
    }

    let mut st = State::new(cpu, cell, problem, options, seg)?;
    let t0 = Instant::now();
    let mut h = st.initial_guess(cpu, options.initial)?;
    report.cell_s += t0.elapsed().as_secs_f64();

    let cap = options.max_iters;
    let mut watch = Watch::new();
    // The best iterate so far: `h` itself while `best_is_h`, else `best`.
    // Kept by swapping buffers (the fused path) or copying into one reused
    // buffer, only when `h` is about to be replaced.
    let mut best: Option<Vec<T>> = None;
    let mut best_is_h = false;
    loop {
        // One pass: f, the scan inputs and the residual at the current guess.
        let t0 = Instant::now();
        let chunk_max = if st.fused.is_some() {
            st.fused_pass(cpu, &h)
        } else {
            st.assemble(cpu, &h)
        };
        let t1 = Instant::now();
        let (residual, hmax) = chunk_max.iter().fold((0.0f64, 0.0f64), |(r, m), &(a, b)| {
            (max_nan(r, a), m.max(b))
        });
        report.cell_s += (t1 - t0).as_secs_f64();
        report.check_s += t1.elapsed().as_secs_f64();
        let (verdict, improved) = watch.observe(&mut report, residual, hmax, options);
        if improved {
            best_is_h = true;
        }
        match verdict {
            Verdict::Converged => break,
            Verdict::Continue => {}
            Verdict::Diverged(why) => match options.policy {
                Policy::Error => {
                    let best_residual = watch.best().unwrap_or(f64::NAN);
                    let best_h = match best {
                        Some(b) if !best_is_h => b,
                        _ => h,
                    };
                    return Err(Error::Diverged(Box::new(Diverged {
                        cell: cell.name().to_string(),
                        mode: options.mode,
                        reason: why,
                        residuals: report.residuals,
                        best_residual,
                        best_iterate: best_h.iter().map(|&x| to_f64(x)).collect(),
                    })));
                }
                Policy::FallbackSequential => {
                    let t0 = Instant::now();
                    h = sequential_with(cpu, cell, problem, seg)?;
                    report.cell_s += t0.elapsed().as_secs_f64();
                    report.depth += len as u64;
                    report.converged = true;
                    report.fell_back = true;
                    report.stop = StopReason::Fallback(why);
                    break;
                }
            },
        }
        if report.iterations >= cap {
            report.stop = StopReason::MaxIters;
            break;
        }

        let t0 = Instant::now();
        let keep = std::mem::take(&mut best_is_h).then_some(&mut best);
        let scan_depth = if st.fused.is_some() {
            st.fused_finish(cpu, &mut h, keep)?
        } else {
            if let Some(best) = keep {
                save_best(best, &h)?;
            }
            st.linear_solve(cpu, &mut h, options)?
        };
        report.scan_s += t0.elapsed().as_secs_f64();
        report.depth += scan_depth;
        report.scan_depths.push(scan_depth);
        report.iterations += 1;
    }
    let h_t = last_states(&h, batch, len, n)?;
    Ok(Solution {
        states: h,
        h_t,
        report,
    })
}

/// `h_T` of every sequence of `[B, T, n]` states: `[B, n]`.
pub(crate) fn last_states<T: Copy>(
    states: &[T],
    batch: usize,
    len: usize,
    n: usize,
) -> Result<Vec<T>> {
    let Some(&first) = states.first() else {
        return Ok(Vec::new());
    };
    let mut out = try_vec("h_t", batch * n, first)?;
    for (dst, seq) in out.chunks_exact_mut(n).zip(states.chunks_exact(len * n)) {
        dst.copy_from_slice(&seq[(len - 1) * n..]);
    }
    Ok(out)
}

/// NaN-propagating max (a NaN residual must not hide behind `f64::max`).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Buffers of one solve.
struct State<'p, 'c, T, C: ?Sized> {
    cell: &'c C,
    problem: &'p NonlinearProblem<'p, T>,
    /// Packed sequences: where the carry restarts, and from which `h0`.
    seg: Option<&'p SegStarts<'p, T>>,
    mode: Mode,
    n: usize,
    /// Scalars per step of the scan's transition (`n`, or `n·k`).
    alen: usize,
    /// Block size of the scan (1: Diagonal).
    k: usize,
    /// `[B, T, alen]` transitions of the linear recurrence.
    a: Vec<T>,
    /// `[B, T, n]` offsets `b_t = f_t − A_t h_{t-1}` (`= f_t` for Picard).
    b: Vec<T>,
    /// `[B, n]` final states of the scan (unused beyond the scan's contract).
    h_last: Vec<T>,
    /// Scratch output of the scan.
    h_new: Vec<T>,
    /// Scan depth by `(T, chunk)` (measured once).
    depth_cache: Vec<((usize, usize), u64)>,
    /// The plan of the fused pass, when it runs (see
    /// [`State::fused_pass`]); then `b` stays empty, and so does `a`
    /// under a one-chunk plan.
    fused: Option<Plan>,
}

impl<'p, 'c, T, C> State<'p, 'c, T, C>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
{
    fn new(
        cpu: &Cpu,
        cell: &'c C,
        problem: &'p NonlinearProblem<'p, T>,
        options: &NewtonOptions<'_, T>,
        seg: Option<&'p SegStarts<'p, T>>,
    ) -> Result<Self> {
        let n = cell.state_dim();
        let k = match options.mode {
            Mode::Newton | Mode::Damped { .. } => cell.structure().block(n),
            _ => 1,
        };
        // `validate` checked `batch × len × n` and `n × k`; the transitions
        // `[B, T, n·k]` can still overflow or exceed memory.
        let steps = problem.batch * problem.len;
        let states = steps * n;
        // Picard keeps an all-zero `a` of diagonal size so one loop serves all modes.
        let alen = n * k;
        let a_len = checked_product(
            "a",
            &[
                ("batch", problem.batch),
                ("len", problem.len),
                ("state_dim", n),
                ("block", k),
            ],
        )?;
        let h_new = try_vec("h_new", states, T::zero())?;
        let fused = if k == 1 && options.mode != Mode::Picard {
            // The plan the Diagonal scan of this solve would run (planning
            // reads only the shape; `h_new` stands in for `a` and `b`).
            let p = Diagonal {
                a: &h_new,
                b: &h_new,
                h0: problem.h0,
                batch: problem.batch,
                len: problem.len,
                dim: n,
                layout: Layout::Btd,
            };
            // A plan error surfaces from the unfused scan, as before.
            cpu.plan(&p, options.plan).ok()
        } else {
            None
        };
        // The fused pass keeps no `b`; a chunked one keeps the running
        // products of `A` in `a` (one `[B,T,n]` array instead of two).
        let (a_len, b_len) = match fused {
            Some(p) if p.chunks == 1 => (0, 0),
            Some(_) => (states, 0),
            None => (a_len, states),
        };
        Ok(Self {
            cell,
            problem,
            seg,
            mode: options.mode,
            n,
            alen,
            k,
            a: try_vec("a", a_len, T::zero())?,
            b: try_vec("b", b_len, T::zero())?,
            h_last: try_vec(
                "h_last",
                problem.batch * seg.map_or(1, |g| g.segs.count()) * n,
                T::zero(),
            )?,
            h_new,
            depth_cache: Vec::new(),
            fused,
        })
    }

    /// The measured depth of `plan` over this solve's `T` (cached).
    fn depth_of(&mut self, cpu: &Cpu, plan: &Plan) -> u64 {
        let len = self.problem.len;
        let key = (len, plan.chunk);
        match self.depth_cache.iter().find(|(k, _)| *k == key) {
            Some(&(_, d)) => d,
            None => {
                let d = cpu.install_for::<T, _>(|| measure(len, plan)).depth;
                self.depth_cache.push((key, d));
                d
            }
        }
    }

    /// One fused Newton pass for a diagonal transition whose scan is one
    /// chunk (the sequential plan, which the planner picks when the batch
    /// alone keeps every core busy): per sequence, one sweep over `t`
    /// evaluates `f_t` and `A_t` at the guess `h`, reduces the residual
    /// `|h_t − f_t|`, forms `b_t = f_t − A_t h_{t-1}` and advances the
    /// scan `h'_t = A_t h'_{t-1} + b_t` into `h_new`, with no `[B,T,n]`
    /// arrays for `a` and `b`. The arithmetic is the unfused path's,
    /// operation for operation, so the iterates are bit-identical; the
    /// scan's time is counted in `cell_s`. Returns per-sequence
    /// `(max residual, max |h|)`.
    fn fused_pass(&mut self, cpu: &Cpu, h: &[T]) -> Vec<(f64, f64)> {
        if let Some(plan) = self.fused.filter(|p| p.chunks > 1) {
            return self.fused_pass_chunked(cpu, h, plan.chunk);
        }
        let (n, len) = (self.n, self.problem.len);
        let din = self.cell.input_dim();
        let (cell, problem, mode, seg) = (self.cell, self.problem, self.mode, self.seg);
        let scale = match mode {
            Mode::Damped { shrink, .. } => <T as Storage>::from_f64(1.0 / (1.0 + shrink)),
            _ => T::one(),
        };
        cpu.install_for::<T, _>(|| {
            self.h_new
                .par_chunks_mut(len * n)
                .enumerate()
                .map(|(bi, out)| {
                    let zero = vec![T::zero(); n];
                    let start: &[T] = match problem.h0 {
                        Some(h0) => &h0[bi * n..(bi + 1) * n],
                        None => &zero,
                    };
                    let mut f = vec![T::zero(); n];
                    let mut a = vec![T::zero(); n];
                    let mut acc = RowMax::default();
                    let seq = &h[bi * len * n..(bi + 1) * len * n];
                    for t in 0..len {
                        // A packed sequence's first step starts from its h0.
                        let reset = seg.and_then(|g| g.start(bi, t));
                        let prev = match reset {
                            Some(h0) => h0,
                            None if t > 0 => &seq[(t - 1) * n..t * n],
                            None => start,
                        };
                        let x = &problem.x[(bi * len + t) * din..(bi * len + t + 1) * din];
                        match mode {
                            Mode::QuasiNewton => cell.step_jacobian_diag(prev, x, &mut f, &mut a),
                            _ => cell.step_jacobian(prev, x, &mut f, &mut a),
                        }
                        let (done, rest) = out.split_at_mut(t * n);
                        let hn_prev = match reset {
                            Some(h0) => h0,
                            None if t > 0 => &done[(t - 1) * n..],
                            None => start,
                        };
                        let cur = &seq[t * n..(t + 1) * n];
                        fused_row(&f, &a, prev, cur, hn_prev, &mut rest[..n], scale, &mut acc);
                    }
                    acc.finish()
                })
                .collect()
        })
    }

    /// The fused pass under a chunked plan (chunks of `chunk` steps), the
    /// CPU scan's three phases with the cell inside the first:
    ///
    /// 1. every chunk of every sequence, in parallel: evaluate `f_t` and
    ///    `A_t` at the guess, reduce the residual, form `b_t`, and scan the
    ///    chunk from a zero state, writing `y_t` (the chunk-local state) into
    ///    `h_new` and the running product `P_t = A_t ⋯ A_first` into `a`
    ///    (zero once a sequence's `h0` is in `y`: the first chunk, and after
    ///    a packed sequence's start);
    /// 2. per sequence, the carries between chunks: `c_{k+1} = P_last ⊙ c_k
    ///    + y_last` over the chunk ends (a short serial loop: `N·n` work);
    /// 3. every chunk but the first, in parallel: `h_t = y_t + P_t ⊙ c_k`.
    ///
    /// Same results as the unfused path up to rounding (the carry enters
    /// through `P_t` instead of step by step).
    fn fused_pass_chunked(&mut self, cpu: &Cpu, h: &[T], chunk: usize) -> Vec<(f64, f64)> {
        let (n, len, batch) = (self.n, self.problem.len, self.problem.batch);
        let din = self.cell.input_dim();
        let (cell, problem, mode, seg) = (self.cell, self.problem, self.mode, self.seg);
        let scale = match mode {
            Mode::Damped { shrink, .. } => <T as Storage>::from_f64(1.0 / (1.0 + shrink)),
            _ => T::one(),
        };
        let chunks = len.div_ceil(chunk);
        let (y, p) = (&mut self.h_new, &mut self.a);
        cpu.install_for::<T, _>(|| {
            // Phase 1. Tasks are (row, chunk) pairs in row-major order.
            let tasks: Vec<(&mut [T], &mut [T])> = y
                .chunks_mut(len * n)
                .zip(p.chunks_mut(len * n))
                .flat_map(|(yr, pr)| yr.chunks_mut(chunk * n).zip(pr.chunks_mut(chunk * n)))
                .collect();
            let sums: Vec<RowMax<T>> = tasks
                .into_par_iter()
                .enumerate()
                .map(|(i, (yc, pc))| {
                    let (bi, ci) = (i / chunks, i % chunks);
                    let zero = vec![T::zero(); n];
                    let ones = vec![T::one(); n];
                    let start: &[T] = match problem.h0 {
                        Some(h0) => &h0[bi * n..(bi + 1) * n],
                        None => &zero,
                    };
                    let mut f = vec![T::zero(); n];
                    let mut a = vec![T::zero(); n];
                    let mut acc = RowMax::default();
                    let seq = &h[bi * len * n..(bi + 1) * len * n];
                    let t0 = ci * chunk;
                    for (j, t) in (t0..t0 + yc.len() / n).enumerate() {
                        let reset = seg.and_then(|g| g.start(bi, t));
                        let prev = match reset {
                            Some(h0) => h0,
                            None if t > 0 => &seq[(t - 1) * n..t * n],
                            None => start,
                        };
                        let x = &problem.x[(bi * len + t) * din..(bi * len + t + 1) * din];
                        match mode {
                            Mode::QuasiNewton => cell.step_jacobian_diag(prev, x, &mut f, &mut a),
                            _ => cell.step_jacobian(prev, x, &mut f, &mut a),
                        }
                        let (ydone, yrest) = yc.split_at_mut(j * n);
                        let (pdone, prest) = pc.split_at_mut(j * n);
                        // Where the chunk-local scan continues from, and
                        // whether a carry still enters (P) or not (0).
                        let (y_prev, p_prev): (&[T], &[T]) = match reset {
                            Some(h0) => (h0, &zero),
                            None if j > 0 => (&ydone[(j - 1) * n..], &pdone[(j - 1) * n..]),
                            None if t == 0 => (start, &zero),
                            None => (&zero, &ones),
                        };
                        let cur = &seq[t * n..(t + 1) * n];
                        fused_chunk_row(
                            FusedIn {
                                f: &f,
                                a: &a,
                                prev,
                                cur,
                                y_prev,
                                p_prev,
                            },
                            &mut yrest[..n],
                            &mut prest[..n],
                            scale,
                            &mut acc,
                        );
                    }
                    acc
                })
                .collect();

            // Phase 2: the carry into every chunk (row-major, `[B, N, n]`).
            let mut carries = vec![T::zero(); batch * chunks * n];
            for (bi, cr) in carries.chunks_mut(chunks * n).enumerate() {
                for ci in 1..chunks {
                    let end = (bi * len + ci * chunk - 1) * n;
                    let (yl, pl) = (&y[end..end + n], &p[end..end + n]);
                    let (before, now) = cr.split_at_mut(ci * n);
                    let c_prev = &before[(ci - 1) * n..];
                    carry_step(&mut now[..n], pl, c_prev, yl);
                }
            }

            // Phase 3: add each chunk's carry (the first chunk has none).
            let tasks: Vec<(&mut [T], &[T])> = y
                .chunks_mut(len * n)
                .zip(p.chunks(len * n))
                .flat_map(|(yr, pr)| yr.chunks_mut(chunk * n).zip(pr.chunks(chunk * n)))
                .collect();
            tasks
                .into_par_iter()
                .enumerate()
                .filter(|(i, _)| i % chunks > 0)
                .for_each(|(i, (yc, pc))| add_carry(yc, pc, &carries[i * n..(i + 1) * n]));

            sums.chunks(chunks)
                .map(|row| {
                    row.iter()
                        .fold(RowMax::default(), |m, r| m.merge(r))
                        .finish()
                })
                .collect()
        })
    }

    /// Ends a fused iteration: the scan's result becomes the iterate (with
    /// relaxation for damped Newton); the replaced iterate goes to `keep`
    /// when given (by swapping buffers, not copying). Returns the scan's
    /// measured depth.
    fn fused_finish(
        &mut self,
        cpu: &Cpu,
        h: &mut Vec<T>,
        keep: Option<&mut Option<Vec<T>>>,
    ) -> Result<u64> {
        let Some(plan) = self.fused else {
            return Ok(0);
        };
        let depth = self.depth_of(cpu, &plan);
        Ok(match self.mode {
            Mode::Damped { relax, .. } if relax != 1.0 => {
                if let Some(best) = keep {
                    save_best(best, h)?;
                }
                relax_into(cpu, h, &self.h_new, relax);
                depth + 1
            }
            _ => {
                std::mem::swap(h, &mut self.h_new);
                if let Some(best) = keep {
                    match best {
                        Some(b) => std::mem::swap(b, &mut self.h_new),
                        None => {
                            let fresh = try_vec("h_new", h.len(), T::zero())?;
                            *best = Some(std::mem::replace(&mut self.h_new, fresh));
                        }
                    }
                }
                depth
            }
        })
    }

    fn initial_guess(&self, cpu: &Cpu, guess: InitialGuess<'_, T>) -> Result<Vec<T>> {
        let (n, len, din) = (self.n, self.problem.len, self.cell.input_dim());
        let states = self.problem.batch * len * n;
        Ok(match guess {
            InitialGuess::Zeros => try_vec("h", states, T::zero())?,
            InitialGuess::Given(h) => {
                let mut v = try_vec("h", h.len(), T::zero())?;
                v.copy_from_slice(h);
                v
            }
            InitialGuess::FirstStep => {
                let mut h = try_vec("h", states, T::zero())?;
                let zero = vec![T::zero(); n];
                let x = self.problem.x;
                cpu.install_for::<T, _>(|| {
                    h.par_chunks_mut(n)
                        .enumerate()
                        .with_min_len(64)
                        .for_each(|(s, out)| self.cell.step(&zero, &x[s * din..(s + 1) * din], out))
                });
                h
            }
        })
    }

    /// Evaluates `f` (and the mode's transition) at the guess `h`, fills
    /// `a` and `b`, and returns per-task `(max residual, max |h|)`.
    fn assemble(&mut self, cpu: &Cpu, h: &[T]) -> Vec<(f64, f64)> {
        let (n, len, alen, k) = (self.n, self.problem.len, self.alen, self.k);
        let din = self.cell.input_dim();
        let (cell, problem, mode, seg) = (self.cell, self.problem, self.mode, self.seg);
        let scale = match mode {
            Mode::Damped { shrink, .. } => <T as Storage>::from_f64(1.0 / (1.0 + shrink)),
            _ => T::one(),
        };
        let zero = vec![T::zero(); n];
        // Steps per task: enough to amortize rayon's per-task cost.
        const STEPS: usize = 256;
        let (a, b) = (&mut self.a, &mut self.b);
        cpu.install_for::<T, _>(|| {
            b.par_chunks_mut(STEPS * n)
                .zip(a.par_chunks_mut(STEPS * alen))
                .enumerate()
                .map(|(ci, (bs, as_))| {
                    let mut acc = RowMax::default();
                    for (j, (bt, at)) in bs.chunks_mut(n).zip(as_.chunks_mut(alen)).enumerate() {
                        let s = ci * STEPS + j;
                        let (bi, t) = (s / len, s % len);
                        let reset = seg.and_then(|g| g.start(bi, t));
                        let prev: &[T] = if let Some(h0) = reset {
                            h0
                        } else if t > 0 {
                            &h[(s - 1) * n..s * n]
                        } else {
                            match problem.h0 {
                                Some(h0) => &h0[bi * n..(bi + 1) * n],
                                None => &zero,
                            }
                        };
                        let x = &problem.x[s * din..(s + 1) * din];
                        // `bt` receives f first, then becomes b = f − A·prev.
                        match mode {
                            Mode::Picard => cell.step(prev, x, bt),
                            Mode::QuasiNewton => cell.step_jacobian_diag(prev, x, bt, at),
                            _ => cell.step_jacobian(prev, x, bt, at),
                        }
                        let cur = &h[s * n..(s + 1) * n];
                        residual_row(cur, bt, &mut acc);
                        if mode == Mode::Picard {
                            continue; // A = 0: b = f.
                        }
                        if scale != T::one() {
                            at.iter_mut().for_each(|v| *v = *v * scale);
                        }
                        // Block by block (no index division per entry).
                        for ((bb, ab), hp) in bt
                            .chunks_exact_mut(k)
                            .zip(at.chunks_exact(k * k))
                            .zip(prev.chunks_exact(k))
                        {
                            for (bv, row) in bb.iter_mut().zip(ab.chunks_exact(k)) {
                                let ah = row
                                    .iter()
                                    .zip(hp)
                                    .fold(T::zero(), |acc, (&a, &h)| acc + a * h);
                                *bv = *bv - ah;
                            }
                        }
                    }
                    acc.finish()
                })
                .collect()
        })
    }

    /// Solves the assembled linear recurrence into `h` (with relaxation
    /// for damped Newton) and returns the scan's measured depth.
    fn linear_solve(
        &mut self,
        cpu: &Cpu,
        h: &mut [T],
        options: &NewtonOptions<'_, T>,
    ) -> Result<u64> {
        let (batch, len, n, k) = (self.problem.batch, self.problem.len, self.n, self.k);
        if self.mode == Mode::Picard {
            // A = 0: the solve is a copy, one parallel step.
            h.copy_from_slice(&self.b);
            return Ok(1);
        }
        let h0 = self.problem.h0;
        let plan = if k == 1 {
            let p = Diagonal {
                a: &self.a,
                b: &self.b,
                h0,
                batch,
                len,
                dim: n,
                layout: Layout::Btd,
            };
            match self.seg {
                // The carry stops at every packed sequence's start.
                Some(g) => cpu.scan_into(
                    &Varlen::new(p, g.segs.offsets(), g.h0)?,
                    options.plan,
                    &mut self.h_new,
                    &mut self.h_last,
                )?,
                None => cpu.scan_into(&p, options.plan, &mut self.h_new, &mut self.h_last)?,
            }
        } else {
            let p = BlockDiagonal {
                a: &self.a,
                b: &self.b,
                h0,
                batch,
                len,
                blocks: n / k,
                block: k,
            };
            match self.seg {
                Some(g) => cpu.scan_into(
                    &Varlen::new(p, g.segs.offsets(), g.h0)?,
                    options.plan,
                    &mut self.h_new,
                    &mut self.h_last,
                )?,
                None => cpu.scan_into(&p, options.plan, &mut self.h_new, &mut self.h_last)?,
            }
        };
        let depth = self.depth_of(cpu, &plan);
        match self.mode {
            Mode::Damped { relax, .. } if relax != 1.0 => {
                relax_into(cpu, h, &self.h_new, relax);
                Ok(depth + 1)
            }
            _ => {
                h.copy_from_slice(&self.h_new);
                Ok(depth)
            }
        }
    }
}

/// Copies the iterate `h` into the best-iterate buffer (allocated once).
fn save_best<T: Real>(best: &mut Option<Vec<T>>, h: &[T]) -> Result<()> {
    match best {
        Some(b) => b.copy_from_slice(h),
        None => {
            let mut b = try_vec("best iterate", h.len(), T::zero())?;
            b.copy_from_slice(h);
            *best = Some(b);
        }
    }
    Ok(())
}

/// `h ← h + relax·(y − h)` (damped Newton's relaxation).
fn relax_into<T: Real + Storage<Compute = T>>(cpu: &Cpu, h: &mut [T], y: &[T], relax: f64) {
    let w = <T as Storage>::from_f64(relax);
    cpu.install_for::<T, _>(|| {
        h.par_iter_mut()
            .zip(y.par_iter())
            .with_min_len(4096)
            .for_each(|(h, &y)| *h = *h + w * (y - *h))
    });
}

/// Running `(max |h − f|, max |h|)` of one task, in the compute type: the
/// conversion to f64 is exact and monotonic, so reducing first and
/// converting once gives what converting every entry would.
#[derive(Clone, Copy)]
struct RowMax<T> {
    res: T,
    hmax: T,
    nan: bool,
}

impl<T: Real> Default for RowMax<T> {
    fn default() -> Self {
        Self {
            res: T::zero(),
            hmax: T::zero(),
            nan: false,
        }
    }
}

impl<T: Real> RowMax<T> {
    /// `(residual, max |h|)` as the unfused path reports them: a NaN
    /// residual anywhere makes the residual NaN; NaN states do not count
    /// toward `max |h|` (as `f64::max` ignores them).
    /// Folds eight lanes of running maxima into `self`.
    #[inline(always)]
    fn absorb(&mut self, res: [T; 8], hmax: [T; 8], nan: [bool; 8]) {
        for l in 0..8 {
            self.nan |= nan[l];
            self.res = if res[l] > self.res { res[l] } else { self.res };
            self.hmax = if hmax[l] > self.hmax {
                hmax[l]
            } else {
                self.hmax
            };
        }
    }

    /// The maxima of two tasks together.
    fn merge(self, o: &Self) -> Self {
        Self {
            res: if o.res > self.res { o.res } else { self.res },
            hmax: if o.hmax > self.hmax {
                o.hmax
            } else {
                self.hmax
            },
            nan: self.nan | o.nan,
        }
    }

    fn finish(self) -> (f64, f64) {
        let res = if self.nan { f64::NAN } else { to_f64(self.res) };
        (res, to_f64(self.hmax))
    }
}

/// One step of the fused pass over a row of `n` units (see
/// [`State::fused_pass`]): reduces the residual of the guess `cur`
/// against `f`, and writes `hn = (s·a)·hn_prev + (f − (0 + (s·a)·prev))`
/// with the unfused path's operations in its order.
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fused_row_body<T: Real>(
    f: &[T],
    a: &[T],
    prev: &[T],
    cur: &[T],
    hn_prev: &[T],
    hn: &mut [T],
    scale: T,
    acc: &mut RowMax<T>,
) {
    let n = hn.len();
    let (f, a, prev, cur, hn_prev) = (&f[..n], &a[..n], &prev[..n], &cur[..n], &hn_prev[..n]);
    // Eight lanes of running maxima so that the reduction vectorizes.
    const L: usize = 8;
    let (mut res, mut hmax, mut nan) = ([acc.res; L], [acc.hmax; L], [false; L]);
    let mut unit = |i: usize, l: usize| {
        let d = (cur[i] - f[i]).abs();
        nan[l] |= d.is_nan();
        res[l] = if d > res[l] { d } else { res[l] };
        let c = cur[i].abs();
        hmax[l] = if c > hmax[l] { c } else { hmax[l] };
        // `x · 1 = x` exactly, so scaling unconditionally matches the
        // unfused path, which scales only when damping.
        let ai = a[i] * scale;
        let b = f[i] - (T::zero() + ai * prev[i]);
        hn[i] = ai * hn_prev[i] + b;
    };
    let full = n - n % L;
    for base in (0..full).step_by(L) {
        for l in 0..L {
            unit(base + l, l);
        }
    }
    for i in full..n {
        unit(i, i - full);
    }
    for l in 0..L {
        acc.nan |= nan[l];
        acc.res = if res[l] > acc.res { res[l] } else { acc.res };
        acc.hmax = if hmax[l] > acc.hmax {
            hmax[l]
        } else {
            acc.hmax
        };
    }
}

/// The inputs of one step of the chunked fused pass over a row of `n`
/// units: `f_t`, `A_t` (unscaled), the guess's `h_{t-1}` and `h_t`, and
/// the chunk-local scan's previous state and running product.
struct FusedIn<'a, T> {
    f: &'a [T],
    a: &'a [T],
    prev: &'a [T],
    cur: &'a [T],
    y_prev: &'a [T],
    p_prev: &'a [T],
}

/// One step of [`State::fused_pass_chunked`]'s first phase: reduces the
/// residual of `cur` against `f` and writes `y = (s·a)·y_prev + (f −
/// (s·a)·prev)` and `p = (s·a)·p_prev`.
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn fused_chunk_row_body<T: Real>(
    i: FusedIn<'_, T>,
    y: &mut [T],
    p: &mut [T],
    scale: T,
    acc: &mut RowMax<T>,
) {
    let n = y.len();
    let p = &mut p[..n];
    let (f, a, prev, cur) = (&i.f[..n], &i.a[..n], &i.prev[..n], &i.cur[..n]);
    let (y_prev, p_prev) = (&i.y_prev[..n], &i.p_prev[..n]);
    const L: usize = 8;
    let (mut res, mut hmax, mut nan) = ([acc.res; L], [acc.hmax; L], [false; L]);
    // A macro, not a closure: LLVM left the closure as a call per unit
    // (scalar code) in this function.
    macro_rules! unit {
        ($i:expr, $l:expr) => {{
            let (i, l) = ($i, $l);
            let d = (cur[i] - f[i]).abs();
            nan[l] |= d.is_nan();
            res[l] = if d > res[l] { d } else { res[l] };
            let c = cur[i].abs();
            hmax[l] = if c > hmax[l] { c } else { hmax[l] };
            let ai = a[i] * scale;
            let b = f[i] - (T::zero() + ai * prev[i]);
            y[i] = ai * y_prev[i] + b;
            p[i] = ai * p_prev[i];
        }};
    }
    let full = n - n % L;
    for base in (0..full).step_by(L) {
        for l in 0..L {
            unit!(base + l, l);
        }
    }
    for i in full..n {
        unit!(i, i - full);
    }
    acc.absorb(res, hmax, nan);
}

crate::simd::multiversion!(fn fused_chunk_row<T: Real>(
    i: FusedIn<'_, T>,
    y: &mut [T],
    p: &mut [T],
    scale: T,
    acc: &mut RowMax<T>,
) => fused_chunk_row_body);

/// `h = y + p ⊙ c` over a chunk of `[steps, n]` (`c: [n]`), leaving `y`
/// where `p = 0` (no carry enters there: a NaN carry must not leak into
/// a later packed sequence through `0 · NaN`).
#[inline(always)]
fn add_carry_body<T: Real>(y: &mut [T], p: &[T], c: &[T]) {
    let n = c.len();
    for (yr, pr) in y.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
        carry_step_body(yr, pr, c, &[]);
    }
}

/// `out = p ⊙ c + y` (with `y` read from `out` when `y` is empty), `out`
/// unchanged where `p = 0`.
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn carry_step_body<T: Real>(out: &mut [T], p: &[T], c: &[T], y: &[T]) {
    let n = out.len();
    let (p, c) = (&p[..n], &c[..n]);
    if y.is_empty() {
        for u in 0..n {
            out[u] = if p[u] == T::zero() {
                out[u]
            } else {
                p[u] * c[u] + out[u]
            };
        }
    } else {
        let y = &y[..n];
        for u in 0..n {
            out[u] = if p[u] == T::zero() {
                y[u]
            } else {
                p[u] * c[u] + y[u]
            };
        }
    }
}

crate::simd::multiversion!(fn add_carry<T: Real>(y: &mut [T], p: &[T], c: &[T]) => add_carry_body);

/// `out = p ⊙ c + y`, `y` where `p = 0` (phase 2's carry step).
fn carry_step<T: Real>(out: &mut [T], p: &[T], c: &[T], y: &[T]) {
    carry_step_body(out, p, c, y);
}

/// The residual part of [`fused_row_body`] alone (the unfused path).
// Index loops over several equal-length slices: the form that vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn residual_row_body<T: Real>(cur: &[T], f: &[T], acc: &mut RowMax<T>) {
    let n = cur.len();
    let f = &f[..n];
    const L: usize = 8;
    let (mut res, mut hmax, mut nan) = ([acc.res; L], [acc.hmax; L], [false; L]);
    let mut unit = |i: usize, l: usize| {
        let d = (cur[i] - f[i]).abs();
        nan[l] |= d.is_nan();
        res[l] = if d > res[l] { d } else { res[l] };
        let c = cur[i].abs();
        hmax[l] = if c > hmax[l] { c } else { hmax[l] };
    };
    let full = n - n % L;
    for base in (0..full).step_by(L) {
        for l in 0..L {
            unit(base + l, l);
        }
    }
    for i in full..n {
        unit(i, i - full);
    }
    for l in 0..L {
        acc.nan |= nan[l];
        acc.res = if res[l] > acc.res { res[l] } else { acc.res };
        acc.hmax = if hmax[l] > acc.hmax {
            hmax[l]
        } else {
            acc.hmax
        };
    }
}

crate::simd::multiversion!(fn residual_row<T: Real>(cur: &[T], f: &[T], acc: &mut RowMax<T>) => residual_row_body);

crate::simd::multiversion!(fn fused_row<T: Real>(
    f: &[T],
    a: &[T],
    prev: &[T],
    cur: &[T],
    hn_prev: &[T],
    hn: &mut [T],
    scale: T,
    acc: &mut RowMax<T>,
) => fused_row_body);

fn to_f64<T: Real>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

/// Packed sequences for the Newton solver: where each starts and its `h0`.
pub(crate) struct SegStarts<'a, T> {
    segs: Segments,
    /// `[B, N, n]`; zeros when `None`.
    h0: Option<&'a [T]>,
    zeros: Vec<T>,
    n: usize,
}

impl<T: Real> SegStarts<'_, T> {
    /// The initial state of the sequence that starts at step `t` of row
    /// `b`, or `None` when no sequence starts there.
    #[inline]
    fn start(&self, b: usize, t: usize) -> Option<&[T]> {
        if !self.segs.is_start(t) {
            return None;
        }
        let s = b * self.segs.count() + self.segs.seq_at(t);
        Some(match self.h0 {
            Some(h0) => &h0[s * self.n..(s + 1) * self.n],
            None => &self.zeros,
        })
    }
}

/// A Newton solve of packed sequences, and every sequence's final state.
#[derive(Clone, Debug)]
pub struct VarlenSolution<T> {
    /// `[B, T, n]` states of the packed axis, and the report.
    pub solution: Solution<T>,
    /// `[B, N, n]`: each sequence's final state (its `h0` when it is empty).
    pub h_last: Vec<T>,
}

/// [`solve`] for `N` sequences packed on the time axis of `problem`
/// (`cu_seqlens`: `N + 1` offsets from 0 to `T`, as for
/// [`Varlen`]): each sequence starts from its own `h0` (`[B, N, n]`, zeros
/// when `None`; `problem.h0` must be `None`), the Newton iterations and
/// their scans run over the whole packed axis at once (the scans are
/// segmented: no carry crosses a boundary), and the residual and
/// convergence are over all sequences together. Returns the states and
/// every sequence's final state; a zero-length sequence's is its `h0`.
/// Bad offsets are [`Error::SeqOffsets`] before any work.
pub fn solve_varlen<T, C, O>(
    cpu: &Cpu,
    cell: &C,
    problem: &NonlinearProblem<'_, T>,
    cu_seqlens: &[O],
    h0: Option<&[T]>,
    options: &NewtonOptions<'_, T>,
) -> Result<VarlenSolution<T>>
where
    T: Real + Storage<Compute = T>,
    C: Cell<T> + ?Sized,
    O: SeqOffset,
{
    problem.validate(cell)?;
    if problem.h0.is_some() {
        return Err(Error::Unsupported {
            what: "problem.h0",
            by: "a packed (cu_seqlens) Newton solve".into(),
            hint: "pass the per-sequence initial states [B,N,n] as h0".into(),
        });
    }
    let segs = Segments::new("cu_seqlens", cu_seqlens, problem.len)?;
    let n = cell.state_dim();
    let count = segs.count();
    let states = checked_product(
        "h0",
        &[
            ("batch", problem.batch),
            ("sequences", count),
            ("state_dim", n),
        ],
    )?;
    if let Some(h0) = h0 {
        if h0.len() != states {
            return Err(Error::shape(
                "h0",
                format!("[B,N,n] = [{},{count},{n}]", problem.batch),
                states,
                h0.len(),
            ));
        }
        crate::family::check_finite("h0", h0)?;
    }
    let seg = SegStarts {
        segs,
        h0,
        zeros: vec![T::zero(); n],
        n,
    };
    let solution = solve_with(cpu, cell, problem, options, Some(&seg))?;
    let mut h_last = try_vec("h_last", states, T::zero())?;
    let len = problem.len;
    for b in 0..problem.batch {
        for s in 0..count {
            let dst = &mut h_last[(b * count + s) * n..(b * count + s + 1) * n];
            let r = seg.segs.range(s);
            if r.is_empty() {
                if let Some(h0) = h0 {
                    dst.copy_from_slice(&h0[(b * count + s) * n..(b * count + s + 1) * n]);
                }
            } else {
                let t = b * len + r.end - 1;
                dst.copy_from_slice(&solution.states[t * n..(t + 1) * n]);
            }
        }
    }
    Ok(VarlenSolution { solution, h_last })
}
