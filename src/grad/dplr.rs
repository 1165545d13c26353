//! Backward pass of the DPLR family.
//!
//! With `G_t = ∂L/∂H_t` (total), the adjoint is
//! `G_t = A_{t+1}ᵀ G_{t+1} + E_t`, where `A_{t+1}ᵀ = diag(w) + Σ_r v_r u_rᵀ`
//! is the next step's transition with `u` and `v` swapped (still low rank,
//! applied in `O(R·n·m)` by [`dplr::lmul`]) and `E_t = ∂L/∂H_t` (direct):
//! `q_t y_tᵀ`-shaped for the readout (`E_t = q_t d_out_tᵀ`) or `d_out_t`
//! itself for all states. It runs as a reverse scan on the engine with
//! dense chunk aggregates, like the forward. Then
//!
//! - `∂L/∂w_t[i] = Σ_j G_t[i,j]·H_{t-1}[i,j]`,
//! - `∂L/∂u_{t,r} = G_t (H_{t-1}ᵀ v_{t,r})`, `∂L/∂v_{t,r} = H_{t-1} (G_tᵀ u_{t,r})`,
//! - `∂L/∂k_t = G_t x_t`, `∂L/∂x_t = G_tᵀ k_t`,
//! - `∂L/∂q_t = H_t d_out_t` (readout), `∂L/∂H_0 = A_0ᵀ G_0`.
//!
//! Memory beyond the inputs and the returned gradients: the adjoint states
//! `G` (`B·T·n·m` scalars of the compute type) and, unless the caller
//! passes the forward states, `B·T·n·m` scalars of `S` for them (recomputed
//! by one forward scan in [`DplrOutput::States`] mode); plus the engine's
//! dense chunk aggregates as for the forward
//! ([`LinearProblem::cpu_scratch_bytes`]).
//!
//! [`dplr_kernels`] runs the adjoint on any [`KernelRunner`] for the
//! readout: `E_t = q_t d_out_tᵀ` is rank one, so the adjoint is itself a
//! DPLR scan (`w_{t+1}`, `u`↔`v` of step `t + 1`, key `q_t`, value
//! `d_out_t`; identity at the last step) run right to left by the `_rev_`
//! kernels of `kernels/dplr.cu` in all-states mode; the contractions above
//! stay on the host (they need `G_t` and `H_{t-1}` together, `O(R·n·m)` per
//! step, one pass). Memory there: the adjoint's steps (`B·T·(2R+1)·n`
//! scalars of `S`), `G` as `S` from the device (`B·T·n·m`) and in the
//! compute type (`B·T·n·m`), and the states as above.

use rayon::prelude::*;

use super::check_buf;
use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::family::dplr::{self, Dplr, DplrOutput};
use crate::family::LinearProblem;
use crate::kernels::dplr::{scan_dplr_reverse, DplrPlan, DplrWorkspace};
use crate::kernels::scan_host;
use crate::mem::try_vec;
use crate::scan::{self, Plan, PlanRequest, ScanOp};
use num_traits::Zero;

/// Gradients of a DPLR scan's inputs. `P` is the plan of the reverse
/// scan: [`Plan`] on the CPU engine, [`DplrPlan`] on the kernels.
#[derive(Clone, Debug)]
pub struct DplrGrads<S, P = Plan> {
    /// `∂L/∂w`: `[B,T,n]`.
    pub w: Vec<S>,
    /// `∂L/∂u`: `[B,T,R,n]`.
    pub u: Vec<S>,
    /// `∂L/∂v`: `[B,T,R,n]`.
    pub v: Vec<S>,
    /// `∂L/∂k`: `[B,T,n]`.
    pub k: Vec<S>,
    /// `∂L/∂x`: `[B,T,m]`.
    pub x: Vec<S>,
    /// `∂L/∂q`: `[B,T,n]` for [`DplrOutput::Readout`], `None` for states.
    pub q: Option<Vec<S>>,
    /// `∂L/∂H_0`: `[B,n,m]`.
    pub h0: Vec<S>,
    /// The plan of the reverse scan.
    pub plan: P,
}

/// The backward pass of `problem`.
///
/// - `states`: every forward state `H_t`, `[B,T,n,m]` (the `out` of a
///   forward scan in [`DplrOutput::States`] mode); `None` recomputes them
///   with one forward scan under `request`;
/// - `d_out`: `∂L/∂out_t` in the problem's output mode: `[B,T,m]` for the
///   readout, `[B,T,n,m]` for all states;
/// - `d_h_last`: `∂L/∂H_T`, `[B,n,m]` (zeros when `None`).
pub fn dplr<S: Storage>(
    cpu: &Cpu,
    problem: &Dplr<'_, S>,
    states: Option<&[S]>,
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<DplrGrads<S>> {
    check_args(problem, d_out, d_h_last)?;
    let all = Dplr {
        output: DplrOutput::States,
        ..*problem
    };
    let recomputed;
    let states = match states {
        Some(h) => {
            check_buf("states", h, all.output_len(), || all.output_shape())?;
            h
        }
        None => {
            recomputed = cpu.scan(&all, request)?.out;
            &recomputed
        }
    };

    let plan = cpu.plan(problem, request)?;
    crate::mem::check_budget("cpu scan scratch", problem.cpu_scratch_bytes(&plan)?)?;
    let nm = problem.n * problem.m;
    let mut g = try_vec(
        "adjoint",
        problem.batch * problem.len * nm,
        S::Compute::zero(),
    )?;
    let op = AdjointOp {
        p: problem,
        d_out,
        d_h_last,
    };
    cpu.install_for::<S, _>(|| scan::run_reverse(&op, &plan, &mut g));
    param_grads(cpu, problem, states, d_out, &g, plan)
}

/// [`dplr()`] for the readout ([`DplrOutput::Readout`]) with the adjoint
/// scan on `runner` (module docs): the reverse DPLR kernels (any plan of
/// [`DplrPlan::reversed`]) in
/// all-states mode, and with `states == None` the forward states
/// recomputed by one forward kernel scan in all-states mode under
/// `request`. The contractions run on the host (rayon's global pool).
///
/// Errors: as [`dplr()`]; [`Error::Unsupported`] for
/// [`DplrOutput::States`] (its direct gradient `d_out_t` is a full `n×m`
/// matrix, not a DPLR input: use [`dplr()`] on the CPU engine); the
/// kernels' plan and launch errors.
pub fn dplr_kernels<R, S>(
    runner: &R,
    ws: &mut DplrWorkspace,
    problem: &Dplr<'_, S>,
    states: Option<&[S]>,
    d_out: &[S],
    d_h_last: Option<&[S]>,
    request: PlanRequest,
) -> Result<DplrGrads<S, DplrPlan>>
where
    R: KernelRunner,
    S: Storage + bytemuck::Pod,
{
    check_args(problem, d_out, d_h_last)?;
    let q = match (problem.output, problem.q) {
        (DplrOutput::Readout, Some(q)) => q,
        _ => {
            return Err(Error::Unsupported {
                what: "grad::dplr_kernels",
                by: "DPLR in all-states mode".into(),
                hint: "its direct gradient is a full n×m matrix per step, not a rank-one                        DPLR input; use grad::dplr on the CPU engine"
                    .into(),
            })
        }
    };
    let cpu = Cpu::new();
    let all = Dplr {
        output: DplrOutput::States,
        q: None,
        ..*problem
    };
    let recomputed;
    let states = match states {
        Some(h) => {
            check_buf("states", h, all.output_len(), || all.output_shape())?;
            h
        }
        None => {
            recomputed = scan_host(runner, ws, &all, request)?.0;
            &recomputed
        }
    };
    let (w_t, u_t, v_t) = shifted_transposed(&cpu, problem)?;
    let adjoint = Dplr {
        w: &w_t,
        u: &u_t,
        v: &v_t,
        k: q,
        x: d_out,
        q: None,
        h0: d_h_last,
        output: DplrOutput::States,
        ..*problem
    };
    let (g_s, _, plan) = scan_dplr_reverse(runner, ws, &adjoint, request)?;
    drop((w_t, u_t, v_t));
    let mut g = try_vec("adjoint", g_s.len(), S::Compute::zero())?;
    cpu.install_for::<S, _>(|| {
        g.par_iter_mut()
            .zip(g_s.par_iter())
            .for_each(|(d, s)| *d = s.load())
    });
    drop(g_s);
    param_grads(&cpu, problem, states, d_out, &g, plan)
}

/// The problem's own checks and the gradient buffers' lengths.
fn check_args<S: Storage>(
    problem: &Dplr<'_, S>,
    d_out: &[S],
    d_h_last: Option<&[S]>,
) -> Result<()> {
    problem.validate()?;
    check_buf("d_out", d_out, problem.output_len(), || {
        problem.output_shape()
    })?;
    if let Some(g) = d_h_last {
        check_buf("d_h_last", g, problem.final_len(), || problem.final_shape())?;
    }
    Ok(())
}

/// The adjoint's transitions as DPLR steps: at step `t`, `A_{t+1}ᵀ`
/// (`w_{t+1}`, `u` and `v` of step `t + 1` swapped), and the identity
/// (`w = 1`, `u = v = 0`) at the last step. Returns `(w, u, v)`.
#[allow(clippy::type_complexity)]
fn shifted_transposed<S: Storage>(
    cpu: &Cpu,
    problem: &Dplr<'_, S>,
) -> Result<(Vec<S>, Vec<S>, Vec<S>)> {
    let (t_len, n, rank) = (problem.len, problem.n, problem.rank);
    let rn = rank * n;
    let mut w_t = try_vec("w_next", problem.w.len(), S::default())?;
    let mut u_t = try_vec("u_next", problem.u.len(), S::default())?;
    let mut v_t = try_vec("v_next", problem.v.len(), S::default())?;
    let (one, zero) = (
        S::store(<S::Compute as num_traits::One>::one()),
        S::store(S::Compute::zero()),
    );
    cpu.install_for::<S, _>(|| {
        w_t.par_chunks_mut(n)
            .zip(u_t.par_chunks_mut(rn))
            .zip(v_t.par_chunks_mut(rn))
            .enumerate()
            .for_each(|(s, ((w, u), v))| {
                if s % t_len == t_len - 1 {
                    w.fill(one);
                    u.fill(zero);
                    v.fill(zero);
                    return;
                }
                let next = s + 1;
                w.copy_from_slice(&problem.w[next * n..(next + 1) * n]);
                // Transpose: u and v swapped.
                u.copy_from_slice(&problem.v[next * rn..(next + 1) * rn]);
                v.copy_from_slice(&problem.u[next * rn..(next + 1) * rn]);
            })
    });
    Ok((w_t, u_t, v_t))
}

/// Every parameter gradient from the adjoint states `g` (compute type,
/// `[B,T,n,m]`) and the forward states (module docs).
fn param_grads<S: Storage, P>(
    cpu: &Cpu,
    problem: &Dplr<'_, S>,
    states: &[S],
    d_out: &[S],
    g: &[S::Compute],
    plan: P,
) -> Result<DplrGrads<S, P>> {
    let (bsz, t_len, n, m, rank) = (
        problem.batch,
        problem.len,
        problem.n,
        problem.m,
        problem.rank,
    );
    let nm = n * m;

    let btn = bsz * t_len * n;
    let mut dw = try_vec("d_w", btn, S::default())?;
    let mut du = try_vec("d_u", btn * rank, S::default())?;
    let mut dv = try_vec("d_v", btn * rank, S::default())?;
    let mut dk = try_vec("d_k", btn, S::default())?;
    let mut dx = try_vec("d_x", bsz * t_len * m, S::default())?;
    let mut dq = match problem.output {
        DplrOutput::Readout => Some(try_vec("d_q", btn, S::default())?),
        DplrOutput::States => None,
    };
    let zero = S::Compute::zero();
    let zeros = vec![zero; nm];
    cpu.install_for::<S, _>(|| {
        let dq_rows: Vec<Option<&mut [S]>> = match dq.as_mut() {
            Some(v) => v.chunks_mut(n).map(Some).collect(),
            None => (0..bsz * t_len).map(|_| None).collect(),
        };
        dw.par_chunks_mut(n)
            .zip(du.par_chunks_mut(rank * n))
            .zip(dv.par_chunks_mut(rank * n))
            .zip(dk.par_chunks_mut(n))
            .zip(dx.par_chunks_mut(m))
            .zip(dq_rows)
            .enumerate()
            .for_each_init(
                || (vec![zero; nm], vec![zero; m]),
                |(hp, proj), (s, (((((dw, du), dv), dk), dx), dq))| {
                    let (b, t) = (s / t_len, s % t_len);
                    // H_{t-1} in compute precision.
                    if t > 0 {
                        for (d, v) in hp.iter_mut().zip(&states[(s - 1) * nm..s * nm]) {
                            *d = v.load();
                        }
                    } else {
                        match problem.h0 {
                            Some(h0) => {
                                for (d, v) in hp.iter_mut().zip(&h0[b * nm..(b + 1) * nm]) {
                                    *d = v.load();
                                }
                            }
                            None => hp.copy_from_slice(&zeros),
                        }
                    }
                    let gt = &g[s * nm..(s + 1) * nm];
                    for i in 0..n {
                        let mut acc = zero;
                        for j in 0..m {
                            acc = acc + gt[i * m + j] * hp[i * m + j];
                        }
                        dw[i] = S::store(acc);
                    }
                    let (u, v) = (
                        &problem.u[s * rank * n..(s + 1) * rank * n],
                        &problem.v[s * rank * n..(s + 1) * rank * n],
                    );
                    for r in 0..rank {
                        let (u_r, v_r) = (&u[r * n..(r + 1) * n], &v[r * n..(r + 1) * n]);
                        // du_r = G (H_{t-1}ᵀ v_r).
                        proj.fill(zero);
                        for i in 0..n {
                            let vi = v_r[i].load();
                            for j in 0..m {
                                proj[j] = proj[j] + vi * hp[i * m + j];
                            }
                        }
                        for i in 0..n {
                            let mut acc = zero;
                            for j in 0..m {
                                acc = acc + gt[i * m + j] * proj[j];
                            }
                            du[r * n + i] = S::store(acc);
                        }
                        // dv_r = H_{t-1} (Gᵀ u_r).
                        proj.fill(zero);
                        for i in 0..n {
                            let ui = u_r[i].load();
                            for j in 0..m {
                                proj[j] = proj[j] + ui * gt[i * m + j];
                            }
                        }
                        for i in 0..n {
                            let mut acc = zero;
                            for j in 0..m {
                                acc = acc + hp[i * m + j] * proj[j];
                            }
                            dv[r * n + i] = S::store(acc);
                        }
                    }
                    let x = &problem.x[s * m..(s + 1) * m];
                    let k = &problem.k[s * n..(s + 1) * n];
                    for i in 0..n {
                        let mut acc = zero;
                        for j in 0..m {
                            acc = acc + gt[i * m + j] * x[j].load();
                        }
                        dk[i] = S::store(acc);
                    }
                    for j in 0..m {
                        let mut acc = zero;
                        for i in 0..n {
                            acc = acc + gt[i * m + j] * k[i].load();
                        }
                        dx[j] = S::store(acc);
                    }
                    if let Some(dq) = dq {
                        let ht = &states[s * nm..(s + 1) * nm];
                        let gy = &d_out[s * m..(s + 1) * m];
                        for i in 0..n {
                            let mut acc = zero;
                            for j in 0..m {
                                acc = acc + ht[i * m + j].load() * gy[j].load();
                            }
                            dq[i] = S::store(acc);
                        }
                    }
                },
            );
    });

    // ∂L/∂H_0 = A_0ᵀ G_0.
    let mut dh0 = try_vec("d_h0", problem.final_len(), S::default())?;
    let mut scratch = vec![zero; rank * m];
    let mut buf = vec![zero; nm];
    for b in 0..bsz {
        let s = b * t_len;
        buf.copy_from_slice(&g[s * nm..(s + 1) * nm]);
        let (u, v) = (
            &problem.u[s * rank * n..(s + 1) * rank * n],
            &problem.v[s * rank * n..(s + 1) * rank * n],
        );
        // Transpose: `u` and `v` swapped.
        dplr::lmul(
            n,
            m,
            rank,
            &problem.w[s * n..(s + 1) * n],
            v,
            u,
            &mut buf,
            &mut scratch,
        );
        for (d, &x) in dh0[b * nm..(b + 1) * nm].iter_mut().zip(&buf) {
            *d = S::store(x);
        }
    }
    Ok(DplrGrads {
        w: dw,
        u: du,
        v: dv,
        k: dk,
        x: dx,
        q: dq,
        h0: dh0,
        plan,
    })
}

/// The adjoint recurrence as a (reverse) scan: step `t` is
/// `G ↦ A_{t+1}ᵀ G + E_t` (`A_Tᵀ := I`), elements are dense `(M, N)`.
struct AdjointOp<'p, 'a, S> {
    p: &'p Dplr<'a, S>,
    d_out: &'p [S],
    d_h_last: Option<&'p [S]>,
}

/// A dense aggregate `G ↦ M G + N` with scratch for the low-rank products.
#[derive(Clone, Debug)]
struct Agg<C> {
    m: Vec<C>,
    n: Vec<C>,
    scratch: Vec<C>,
}

/// A running adjoint state with scratch.
#[derive(Clone, Debug)]
struct State<C> {
    g: Vec<C>,
    scratch: Vec<C>,
}

impl<S: Storage> AdjointOp<'_, '_, S> {
    /// `(w, u, v)` of forward step `s + 1` (flat step index), or `None` at
    /// the sequence's last step.
    fn next(&self, p: usize, t: usize) -> Option<(&[S], &[S], &[S])> {
        let (n, r, len) = (self.p.n, self.p.rank, self.p.len);
        if t + 1 == len {
            return None;
        }
        let s = p * len + t + 1;
        Some((
            &self.p.w[s * n..(s + 1) * n],
            &self.p.u[s * r * n..(s + 1) * r * n],
            &self.p.v[s * r * n..(s + 1) * r * n],
        ))
    }

    /// `dst += E_t`, the direct gradient of step `t`'s output as an `n×m`
    /// matrix.
    fn add_direct(&self, p: usize, t: usize, dst: &mut [S::Compute]) {
        let (n, m) = (self.p.n, self.p.m);
        let s = p * self.p.len + t;
        match self.p.output {
            DplrOutput::States => {
                for (d, e) in dst.iter_mut().zip(&self.d_out[s * n * m..(s + 1) * n * m]) {
                    *d = *d + e.load();
                }
            }
            DplrOutput::Readout => {
                let q = self.p.q.expect("validated: Readout has q");
                let (q, gy) = (&q[s * n..(s + 1) * n], &self.d_out[s * m..(s + 1) * m]);
                for (row, qi) in dst.chunks_exact_mut(m).zip(q) {
                    let qi = qi.load();
                    for (d, y) in row.iter_mut().zip(gy) {
                        *d = *d + qi * y.load();
                    }
                }
            }
        }
    }

    fn scratch_len(&self) -> usize {
        self.p.rank * self.p.n.max(self.p.m)
    }
}

impl<S: Storage> ScanOp for AdjointOp<'_, '_, S> {
    type Agg = Agg<S::Compute>;
    type State = State<S::Compute>;
    type Out = S::Compute;

    fn problems(&self) -> usize {
        self.p.batch
    }
    fn len(&self) -> usize {
        self.p.len
    }
    fn out_per_step(&self) -> usize {
        self.p.n * self.p.m
    }
    fn identity(&self) -> Self::Agg {
        let (n, m) = (self.p.n, self.p.m);
        let mut e = Agg {
            m: vec![S::Compute::zero(); n * n],
            n: vec![S::Compute::zero(); n * m],
            scratch: Vec::new(),
        };
        dplr::identity(n, m, &mut e.m, &mut e.n);
        e
    }
    fn leaf(&self, p: usize, t: usize) -> Self::Agg {
        let mut e = self.identity();
        e.scratch = vec![S::Compute::zero(); self.scratch_len()];
        self.fold(&mut e, p, t);
        e
    }
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        if agg.scratch.len() < self.scratch_len() {
            agg.scratch.resize(self.scratch_len(), S::Compute::zero());
        }
        if let Some((w, u, v)) = self.next(p, t) {
            // Transpose: `u` and `v` swapped.
            dplr::lmul(n, n, r, w, v, u, &mut agg.m, &mut agg.scratch);
            dplr::lmul(n, m, r, w, v, u, &mut agg.n, &mut agg.scratch);
        }
        self.add_direct(p, t, &mut agg.n);
    }
    fn combine(&self, e1: &Self::Agg, e2: &Self::Agg) -> Self::Agg {
        let (n, m) = (self.p.n, self.p.m);
        let mut e = Agg {
            m: vec![S::Compute::zero(); n * n],
            n: vec![S::Compute::zero(); n * m],
            scratch: Vec::new(),
        };
        dplr::combine(n, m, &e1.m, &e1.n, &e2.m, &e2.n, &mut e.m, &mut e.n);
        e
    }
    fn initial(&self, p: usize) -> Self::State {
        let nm = self.p.n * self.p.m;
        let g = match self.d_h_last {
            Some(g) => g[p * nm..(p + 1) * nm].iter().map(|x| x.load()).collect(),
            None => vec![S::Compute::zero(); nm],
        };
        State {
            g,
            scratch: vec![S::Compute::zero(); self.p.rank * self.p.m],
        }
    }
    fn apply(&self, e: &Self::Agg, h: &Self::State) -> Self::State {
        let (n, m) = (self.p.n, self.p.m);
        let mut g = vec![S::Compute::zero(); n * m];
        dplr::apply(n, m, &e.m, &e.n, &h.g, &mut g);
        State {
            g,
            scratch: vec![S::Compute::zero(); self.p.rank * m],
        }
    }
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [S::Compute]) {
        let (n, m, r) = (self.p.n, self.p.m, self.p.rank);
        if h.scratch.len() < r * m {
            h.scratch.resize(r * m, S::Compute::zero());
        }
        if let Some((w, u, v)) = self.next(p, t) {
            dplr::lmul(n, m, r, w, v, u, &mut h.g, &mut h.scratch);
        }
        self.add_direct(p, t, &mut h.g);
        out.copy_from_slice(&h.g);
    }
}
