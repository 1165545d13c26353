//! The CPU backend: validates, plans and runs any [`LinearProblem`] on the
//! rayon engine of [`crate::scan`].

use crate::error::{Error, Result};
use crate::family::LinearProblem;
use crate::scan::{Plan, PlanRequest};

/// The native Rust engine, on a rayon pool.
#[derive(Debug)]
pub struct Cpu {
    pool: Option<rayon::ThreadPool>,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu { pool: None }
    }
}

/// What a call returns besides the outputs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ScanOutput<S> {
    /// All outputs (states, or a readout), in the family's output layout.
    pub out: Vec<S>,
    /// Final states `h_T`.
    pub h_last: Vec<S>,
    /// The plan that ran.
    pub plan: Plan,
}

impl Cpu {
    /// The engine on rayon's global pool (all cores).
    pub fn new() -> Self {
        Cpu::default()
    }

    /// The engine on a private pool of `threads` workers.
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::size("threads", 0, "≥ 1"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::BackendUnavailable {
                backend: "cpu",
                reason: e.to_string(),
            })?;
        Ok(Cpu { pool: Some(pool) })
    }

    /// Worker threads this engine uses.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
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
        let plan = self.plan(problem, request)?;
        if out.len() != problem.output_len() {
            return Err(Error::shape(
                "out",
                problem.output_shape(),
                problem.output_len(),
                out.len(),
            ));
        }
        if h_last.len() != problem.final_len() {
            return Err(Error::shape(
                "h_last",
                problem.final_shape(),
                problem.final_len(),
                h_last.len(),
            ));
        }
        match &self.pool {
            Some(pool) => pool.install(|| problem.run_cpu(&plan, out, h_last)),
            None => problem.run_cpu(&plan, out, h_last),
        }
        Ok(plan)
    }

    /// Like [`Cpu::scan_into`], allocating the outputs.
    pub fn scan<P: LinearProblem>(
        &self,
        problem: &P,
        request: PlanRequest,
    ) -> Result<ScanOutput<P::Out>> {
        problem.validate()?;
        let mut out = vec![P::Out::default(); problem.output_len()];
        let mut h_last = vec![P::Out::default(); problem.final_len()];
        let plan = self.scan_into(problem, request, &mut out, &mut h_last)?;
        Ok(ScanOutput { out, h_last, plan })
    }
}
