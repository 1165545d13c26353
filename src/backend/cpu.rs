//! The CPU backend: validates, plans and runs any [`LinearProblem`] on the
//! rayon engine of [`crate::scan`].

use crate::dtype::Storage;
use crate::error::{Error, Result};
use crate::family::varlen::InPlaceScan;
use crate::family::LinearProblem;
use crate::scan::{Plan, PlanRequest};

/// The native Rust engine, on rayon pools that apply parascan's subnormal
/// rule.
///
/// **Subnormal rule** (the same on every backend): f32 arithmetic — f32,
/// f16 and bf16 storage, all computed in f32 — flushes subnormal inputs and
/// results to zero (values below `f32::MIN_POSITIVE`, 1.2e-38, become ±0),
/// as GPU code built with `-ftz=true` does (parascan's kernels are) and as
/// the SIMT emulator does for f32 kernels; f64 arithmetic keeps IEEE
/// subnormals everywhere (the GPU never flushes doubles). So f32 problems
/// run on a pool whose workers set FTZ/DAZ, f64 problems on one that does
/// not.
///
/// Why flush f32: a chunk aggregate's transition is a product of many
/// decays (`0.9^4096`), which passes through the subnormal range, and x86
/// cores take ~100 cycles per subnormal operation, slowing a chunked scan
/// tenfold; the flushed values are far below every tolerance the crate
/// states. f64 subnormals (below 2.2e-308) are rarely reached, and keeping
/// them matches the GPU.
#[derive(Debug, Default)]
pub struct Cpu {
    /// A private f32 (flushing) pool, from [`Cpu::with_threads`].
    pool: Option<rayon::ThreadPool>,
    /// The private IEEE pool for f64 problems, built on first use with the
    /// private pool's thread count.
    ieee_pool: std::sync::OnceLock<Option<rayon::ThreadPool>>,
}

/// Sets (`flush`) or clears FTZ and DAZ in this thread's MXCSR (x86-64; a
/// no-op elsewhere, where the host default, IEEE, stays).
fn set_subnormal_mode(flush: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        // SAFETY: reading and writing MXCSR only changes this thread's
        // floating-point modes; FTZ/DAZ are supported by every x86-64 CPU
        // with SSE2 (all of them) and cannot fault.
        #[allow(deprecated)]
        unsafe {
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            let csr = _mm_getcsr();
            _mm_setcsr(if flush { csr | FTZ_DAZ } else { csr & !FTZ_DAZ });
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = flush;
}

fn build_pool(threads: usize, flush: bool) -> Result<rayon::ThreadPool> {
    let kind = if flush { "cpu" } else { "cpu-f64" };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("parascan-{kind}-{i}"))
        .start_handler(move |_| set_subnormal_mode(flush))
        .build()
        .map_err(|e| Error::BackendUnavailable {
            backend: "cpu",
            reason: e.to_string(),
        })
}

/// The process-wide default pools (one worker per core), built on first
/// use: the f32 (flushing) one and the f64 (IEEE) one.
fn shared_pool(flush: bool) -> Option<&'static rayon::ThreadPool> {
    static FLUSH: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    static IEEE: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let cell = if flush { &FLUSH } else { &IEEE };
    cell.get_or_init(|| build_pool(rayon::current_num_threads(), flush).ok())
        .as_ref()
}

/// Whether arithmetic in `T` follows the f32 rule (flush subnormals): every
/// scalar but the 8-byte f64.
fn flushes<T>() -> bool {
    std::mem::size_of::<T>() != std::mem::size_of::<f64>()
}

/// What a call returns besides the outputs.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ScanOutput<S> {
    /// All outputs (states, or a readout), in the family's output layout.
    pub out: Vec<S>,
    /// Final states `h_T`.
    pub h_last: Vec<S>,
    /// The plan that ran.
    pub plan: Plan,
}

impl Cpu {
    /// The engine on the shared pool (one worker per core).
    pub fn new() -> Self {
        Cpu::default()
    }

    /// The engine on a private pool of `threads` workers.
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::size("threads", 0, "≥ 1"));
        }
        Ok(Cpu {
            pool: Some(build_pool(threads, true)?),
            ieee_pool: std::sync::OnceLock::new(),
        })
    }

    /// The pool this engine runs arithmetic of the given rule on: its own,
    /// else the shared one (`None` only if no pool could be built; then
    /// rayon's global pool is used).
    fn pool_for(&self, flush: bool) -> Option<&rayon::ThreadPool> {
        match (&self.pool, flush) {
            (Some(pool), true) => Some(pool),
            (Some(pool), false) => self
                .ieee_pool
                .get_or_init(|| build_pool(pool.current_num_threads(), false).ok())
                .as_ref(),
            (None, _) => shared_pool(flush),
        }
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        self.pool_for(true)
    }

    /// Runs `f` on this engine's f32 worker pool (FTZ/DAZ set: the f32
    /// subnormal rule), so rayon iterators inside it use the same threads
    /// as the scans. Use [`install_for`](Self::install_for) for code whose
    /// arithmetic may be f64.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool() {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs `f` on the pool whose subnormal rule fits arithmetic in `T`:
    /// the IEEE pool for `f64` (8-byte scalars), the flushing pool for
    /// everything else (see [`Cpu`]).
    pub fn install_for<T, R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool_for(flushes::<T>()) {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Worker threads this engine uses.
    pub fn threads(&self) -> usize {
        match self.pool() {
            Some(p) => p.current_num_threads(),
            None => rayon::current_num_threads(),
        }
    }

    /// Resolves `request` for `problem` without running anything.
    pub fn plan<P: LinearProblem>(&self, problem: &P, request: PlanRequest) -> Result<Plan> {
        problem.validate()?;
        Plan::resolve(request, problem.scan_shape(), self.threads())
    }

    /// Runs `problem` under `request`, writing every output into `out`
    /// (`problem.output_len()` scalars) and the final states into `h_last`
    /// (`problem.final_len()` scalars). Everything is checked before any
    /// computation.
    pub fn scan_into<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
        out: &mut [P::Out],
        h_last: &mut [P::Out],
    ) -> Result<Plan> {
        self.run_into(problem, request, out, h_last, false)
    }

    /// Like [`Cpu::scan_into`], allocating the outputs.
    pub fn scan<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
    ) -> Result<ScanOutput<P::Out>> {
        self.run(problem, request, false)
    }
    /// Like [`Cpu::scan_into`], right to left: `h_t = A_t h_{t+1} + b_t`
    /// for `t = T−1, …, 0`, with `h0` the state after the last step (zeros
    /// when `None`). `out[t]` is `h_t` (or its readout) in the family's
    /// output layout and `h_last` the state at `t = 0`. Same plans, depth
    /// and work as the forward scan ([`crate::scan::run_reverse`]); a
    /// bidirectional layer is one forward and one reverse call.
    pub fn scan_reverse_into<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
        out: &mut [P::Out],
        h_last: &mut [P::Out],
    ) -> Result<Plan> {
        self.run_into(problem, request, out, h_last, true)
    }

    /// Like [`Cpu::scan_reverse_into`], allocating the outputs.
    pub fn scan_reverse<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
    ) -> Result<ScanOutput<P::Out>> {
        self.run(problem, request, true)
    }

    /// The forward scan with in-place state: `state` holds the initial
    /// states on entry and the final states on exit (`problem.final_len()`
    /// scalars: `[B, state]` for a plain problem, `[B, N, state]` for a
    /// [`Varlen`](crate::family::varlen::Varlen)), so a streaming decoder
    /// keeps one buffer. The problem must carry no `h0` of its own. Every
    /// initial state is read before any final state is written: the pass
    /// reads `state` only, and the final states are stored after it.
    /// Every check (shapes, `state`'s length and values) runs before any
    /// computation.
    pub fn scan_in_place<P: InPlaceScan>(
        &self,
        problem: &P,
        request: PlanRequest,
        out: &mut [P::Out],
        state: &mut [P::Out],
    ) -> Result<Plan> {
        problem.check_in_place()?;
        let plan = self.plan_for_buffers(problem, request, out.len(), "state", state.len())?;
        crate::family::check_finite("state", state)?;
        crate::mem::check_budget("cpu scan scratch", problem.cpu_scratch_bytes(&plan)?)?;
        let h0: &[P::Out] = state;
        let finals = self.install_for::<P::Out, _>(|| problem.run_in_place(&plan, h0, out));
        for (d, v) in state.iter_mut().zip(finals) {
            *d = <P::Out as Storage>::store(v);
        }
        Ok(plan)
    }

    /// The plan of `problem` under `request`, after checking the caller's
    /// output buffers: `out_len` scalars for every output, `final_len` for
    /// the final states (named `final_arg` in the error).
    fn plan_for_buffers<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
        out_len: usize,
        final_arg: &'static str,
        final_len: usize,
    ) -> Result<Plan> {
        let plan = self.plan(problem, request)?;
        if out_len != problem.output_len() {
            return Err(Error::shape(
                "out",
                problem.output_shape(),
                problem.output_len(),
                out_len,
            ));
        }
        if final_len != problem.final_len() {
            return Err(Error::shape(
                final_arg,
                problem.final_shape(),
                problem.final_len(),
                final_len,
            ));
        }
        Ok(plan)
    }

    /// [`scan`](Self::scan) or [`scan_reverse`](Self::scan_reverse).
    fn run<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
        reverse: bool,
    ) -> Result<ScanOutput<P::Out>> {
        problem.validate()?;
        let mut out = crate::mem::try_vec("out", problem.output_len(), P::Out::default())?;
        let mut h_last = crate::mem::try_vec("h_last", problem.final_len(), P::Out::default())?;
        let plan = self.run_into(problem, request, &mut out, &mut h_last, reverse)?;
        Ok(ScanOutput { out, h_last, plan })
    }

    /// [`scan_into`](Self::scan_into) or
    /// [`scan_reverse_into`](Self::scan_reverse_into): every check before any
    /// computation, then the pass in the asked direction on this engine's pool.
    fn run_into<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
        out: &mut [P::Out],
        h_last: &mut [P::Out],
        reverse: bool,
    ) -> Result<Plan> {
        let plan = self.plan_for_buffers(problem, request, out.len(), "h_last", h_last.len())?;
        crate::mem::check_budget("cpu scan scratch", problem.cpu_scratch_bytes(&plan)?)?;
        if reverse {
            self.install_for::<P::Out, _>(|| problem.run_cpu_reverse(&plan, out, h_last))?;
        } else {
            self.install_for::<P::Out, _>(|| problem.run_cpu(&plan, out, h_last));
        }
        Ok(plan)
    }
}
