//! One face for every engine: the CPU engine and the kernels on any runner.
//!
//! Generic model code writes against [`Engine`] and runs unchanged on
//! [`Cpu`], on the SIMT emulator and on CUDA:
//!
//! ```
//! use parascan::backend::{emu::EmuBackend, Cpu, Engine};
//! use parascan::family::{diagonal::Diagonal, Layout};
//! use parascan::PlanRequest;
//!
//! fn final_state(engine: &impl Engine, a: &[f32], b: &[f32]) -> parascan::Result<Vec<f32>> {
//!     let p = Diagonal { a, b, h0: None, batch: 1, len: a.len(), dim: 1, layout: Layout::Btd };
//!     Ok(engine.run(&p, PlanRequest::Auto)?.h_last)
//! }
//!
//! let (a, b) = (vec![0.5f32; 64], vec![1.0f32; 64]);
//! let cpu = final_state(&Cpu::new(), &a, &b)?;
//! let emu = final_state(&EmuBackend::default(), &a, &b)?;
//! assert!((cpu[0] - 2.0).abs() < 1e-6 && (emu[0] - 2.0).abs() < 1e-6);
//! # Ok::<(), parascan::Error>(())
//! ```

use crate::backend::launch::KernelRunner;
use crate::backend::Cpu;
use crate::error::Result;
use crate::family::LinearProblem;
use crate::kernels::{KernelOutputs, KernelPlanSummary, KernelScan};
use crate::scan::PlanRequest;

/// Runs a linear problem of any family that has both a CPU engine and
/// kernels, returning the same [`KernelOutputs`] shape everywhere: every
/// output in the family's output layout, `h_T`, and a summary of the plan
/// that ran.
///
/// Implemented by [`Cpu`] and by every
/// [`KernelRunner`] (the CUDA backend,
/// the emulator).
pub trait Engine {
    /// A short name for reports, e.g. `cpu`, `emu`, `cuda`.
    fn engine_name(&self) -> &'static str;

    /// Validates `problem`, plans `request` and runs it; outputs are on the
    /// host when this returns.
    fn run<P>(&self, problem: &P, request: PlanRequest) -> Result<KernelOutputs<P::Out>>
    where
        P: LinearProblem + KernelScan<Elem = <P as LinearProblem>::Out>;
}

impl Engine for Cpu {
    fn engine_name(&self) -> &'static str {
        "cpu"
    }

    fn run<P>(&self, problem: &P, request: PlanRequest) -> Result<KernelOutputs<P::Out>>
    where
        P: LinearProblem + KernelScan<Elem = <P as LinearProblem>::Out>,
    {
        let run = self.scan(problem, request)?;
        let plan = run.plan;
        let scratch_bytes = problem.cpu_scratch_bytes(&plan)?;
        Ok(KernelOutputs {
            out: run.out,
            h_last: run.h_last,
            plan: KernelPlanSummary {
                kind: format!("cpu {}", plan.request),
                chunk: plan.chunk,
                chunks: plan.chunks,
                depth_formula: plan.depth,
                scratch_bytes,
                // The one-pass yardstick (the chunked CPU engine reads the
                // inputs once more in its reduce phase).
                plan_bytes: problem.bytes_moved() as u64,
                depth_key: format!("cpu:{}:{}:{}", problem.family(), plan.chunk, plan.chunks),
            },
        })
    }
}

impl<R: KernelRunner> Engine for R {
    fn engine_name(&self) -> &'static str {
        self.backend_name()
    }

    fn run<P>(&self, problem: &P, request: PlanRequest) -> Result<KernelOutputs<P::Out>>
    where
        P: LinearProblem + KernelScan<Elem = <P as LinearProblem>::Out>,
    {
        problem.kernel_scan(self, request)
    }
}
