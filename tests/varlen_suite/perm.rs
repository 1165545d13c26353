//! Packed variable-length batches on the PermDiagonal kernels, shared by
//! `tests/emu_varlen_perm.rs` (SIMT emulator, every fiber order) and
//! `tests/cuda_varlen.rs`: the reference of a packed run is every sequence
//! on its own, the f64 oracle on that sequence's inputs from that
//! sequence's `h0`, and a separate kernel call per sequence on the same
//! runner; an empty sequence must return `h_T = h0` bit for bit. The
//! partitions, plans and chunk come from the parent module.

use parascan::backend::launch::KernelRunner;
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::varlen::Varlen;
use parascan::kernels::perm_diagonal::PdShape;
use parascan::kernels::varlen_perm::{
    plan_perm_diagonal_varlen, VarlenPdBuffers, VarlenPdWorkspace,
};
use parascan::kernels::{launch_scan_buffers, KernelScan};
use parascan::{oracle, PlanRequest, Storage};
use rand::seq::SliceRandom;

use super::{check_empty, check_sequence, offsets, plans};
use crate::common::{rng, uniform};

/// One packed PD problem's data: `perm`, `d`, `b`: `[B,T,n]`; `h0`: `[B,N,n]`.
pub struct PackedPd<S> {
    pub batch: usize,
    pub n: usize,
    pub cu: Vec<usize>,
    pub perm: Vec<u8>,
    pub d: Vec<S>,
    pub b: Vec<S>,
    pub h0: Vec<S>,
}

impl<S: Storage + bytemuck::Pod> PackedPd<S> {
    /// Random permutations, scales in `[0.5, 1)` of random sign (so a
    /// carry that leaked across a boundary shows), inputs and `h0` in
    /// `[-1, 1)`.
    pub fn new(lens: &[usize], batch: usize, n: usize, seed: u64) -> Self {
        let cu = offsets(lens);
        let t = *cu.last().unwrap();
        let mut r = rng(seed);
        let mut perm = Vec::with_capacity(batch * t * n);
        let mut row: Vec<u8> = (0..n).map(|i| i as u8).collect();
        for _ in 0..batch * t {
            row.shuffle(&mut r);
            perm.extend_from_slice(&row);
        }
        let mut d: Vec<S> = uniform(&mut r, batch * t * n, 0.5, 1.0);
        let sign: Vec<f64> = uniform(&mut r, d.len(), -1.0, 1.0);
        for (x, s) in d.iter_mut().zip(sign) {
            if s < 0.0 {
                *x = S::from_f64(-x.to_f64());
            }
        }
        PackedPd {
            batch,
            n,
            perm,
            d,
            b: uniform(&mut r, batch * t * n, -1.0, 1.0),
            h0: uniform(&mut r, batch * lens.len() * n, -1.0, 1.0),
            cu,
        }
    }

    pub fn len(&self) -> usize {
        *self.cu.last().unwrap()
    }

    pub fn sequences(&self) -> usize {
        self.cu.len() - 1
    }

    pub fn problem(&self) -> PermDiagonal<'_, S> {
        PermDiagonal {
            perm: &self.perm,
            d: &self.d,
            b: &self.b,
            h0: None,
            batch: self.batch,
            len: self.len(),
            n: self.n,
        }
    }

    /// Row `b`, sequence `s`: its `perm`, `d`, `b` (`[1,len,n]`) and `h0` (`[1,n]`).
    fn sub(&self, b: usize, s: usize) -> (Vec<u8>, Vec<S>, Vec<S>, Vec<S>) {
        let (t, n, ns) = (self.len(), self.n, self.sequences());
        let r = (b * t + self.cu[s]) * n..(b * t + self.cu[s + 1]) * n;
        let h0 = self.h0[(b * ns + s) * n..(b * ns + s + 1) * n].to_vec();
        (
            self.perm[r.clone()].to_vec(),
            self.d[r.clone()].to_vec(),
            self.b[r].to_vec(),
            h0,
        )
    }

    /// Checks a packed run's outputs `out` (`[B,T,n]`) and final states
    /// `h_last` (`[B,N,n]`) sequence by sequence against the f64 oracle and
    /// a separate call per sequence on `runner`. `Err` names the first
    /// sequence that differs.
    pub fn check<R: KernelRunner>(
        &self,
        runner: &R,
        with_h0: bool,
        out: &[S],
        h_last: &[S],
        what: &str,
    ) -> Result<(), String> {
        let (t, n, ns) = (self.len(), self.n, self.sequences());
        if out.len() != self.batch * t * n || h_last.len() != self.batch * ns * n {
            return Err(format!(
                "{what}: output lengths {} and {}",
                out.len(),
                h_last.len()
            ));
        }
        for b in 0..self.batch {
            for s in 0..ns {
                let h_t = &h_last[(b * ns + s) * n..(b * ns + s + 1) * n];
                let (sp, sd, sb, sh0) = self.sub(b, s);
                let h0 = if with_h0 {
                    sh0
                } else {
                    vec![S::from_f64(0.0); n]
                };
                let len = self.cu[s + 1] - self.cu[s];
                if len == 0 {
                    check_empty(what, b, s, h_t, &h0)?;
                    continue;
                }
                let got = &out[(b * t + self.cu[s]) * n..(b * t + self.cu[s + 1]) * n];
                let alone = PermDiagonal {
                    perm: &sp,
                    d: &sd,
                    b: &sb,
                    h0: Some(&h0),
                    batch: 1,
                    len,
                    n,
                };
                let (want_h, want_t) = oracle::perm_diagonal(&alone);
                let sep = alone
                    .kernel_scan(runner, PlanRequest::Auto)
                    .map_err(|e| format!("{what}: separate call: {e}"))?;
                check_sequence(
                    what,
                    b,
                    s,
                    len,
                    got,
                    h_t,
                    (&want_h, &want_t),
                    (&sep.out, &sep.h_last),
                )?;
            }
        }
        Ok(())
    }
}

/// Runs the packed PD problem of `lens` under every plan on `runner`
/// (through [`KernelScan::kernel_scan`]) and checks every sequence; also
/// the device API with a look-back plan that publishes prefixes only every
/// third chunk (successors go through the aggregate path).
#[allow(clippy::too_many_arguments)]
pub fn check_partition_pd<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    lens: &[usize],
    batch: usize,
    n: usize,
    with_h0: bool,
    seed: u64,
    what: &str,
) -> Result<(), String> {
    let data = PackedPd::<S>::new(lens, batch, n, seed);
    if data.len() == 0 {
        return Ok(());
    }
    let h0 = with_h0.then_some(&data.h0[..]);
    let packed = Varlen::new(data.problem(), &data.cu, h0).map_err(|e| e.to_string())?;
    for (req, kind) in plans() {
        let what = format!("{what} PD {lens:?} B={batch} n={n} h0={with_h0} {req}");
        let run = packed
            .kernel_scan(runner, req)
            .map_err(|e| format!("{what}: {e}"))?;
        if let Some(kind) = kind {
            if !run.plan.kind.starts_with(kind.label()) {
                return Err(format!("{what}: ran {} instead of {}", run.plan.kind, kind));
            }
        }
        data.check(runner, with_h0, &run.out, &run.h_last, &what)?;
    }
    lookback_aggregate_path(runner, &data, with_h0, what)
}

/// The device API (`launch_scan_buffers`) on a look-back plan whose chunks
/// publish an inclusive prefix only every third chunk.
fn lookback_aggregate_path<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    data: &PackedPd<S>,
    with_h0: bool,
    what: &str,
) -> Result<(), String> {
    let shape = PdShape::new(data.batch, data.len(), data.n);
    let mut plan = plan_perm_diagonal_varlen(
        shape,
        &data.cu,
        S::DTYPE,
        PlanRequest::LookBack,
        runner.sm_count(),
    )
    .map_err(|e| e.to_string())?;
    plan.inner.lookback_prefix_every = 3;
    let e = |e: parascan::Error| format!("{what} PD (device API): {e}");
    let perm = runner.upload(&data.perm).map_err(e)?;
    let d = runner.upload(&data.d).map_err(e)?;
    let b = runner.upload(&data.b).map_err(e)?;
    let h0 = runner.upload(&data.h0).map_err(e)?;
    let h = runner
        .alloc(data.d.len() * std::mem::size_of::<S>())
        .map_err(e)?;
    let h_t = runner
        .alloc(data.h0.len() * std::mem::size_of::<S>())
        .map_err(e)?;
    runner.fill(&h_t, 0xFF).map_err(e)?;
    let mut ws = VarlenPdWorkspace::new();
    let bufs = VarlenPdBuffers {
        perm: (&perm).into(),
        d: (&d).into(),
        b: (&b).into(),
        h0: with_h0.then(|| (&h0).into()),
        h: (&h).into(),
        h_t: (&h_t).into(),
    };
    launch_scan_buffers(runner, &mut ws, &plan, bufs).map_err(e)?;
    let mut out = vec![S::from_f64(0.0); data.d.len()];
    let mut last = vec![S::from_f64(0.0); data.h0.len()];
    runner.download(&h, &mut out).map_err(e)?;
    runner.download(&h_t, &mut last).map_err(e)?;
    data.check(
        runner,
        with_h0,
        &out,
        &last,
        &format!("{what} PD look-back prefix every 3rd chunk"),
    )
}
