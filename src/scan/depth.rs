//! Measuring depth: the same engine run over an element that carries a
//! depth counter instead of numbers.
//!
//! Every combine returns `max(inputs) + 1`; inputs (steps, `h_0`) and the
//! identity have depth 0. The largest depth written to any output is the
//! critical path of the algorithm the engine actually ran, and the number
//! of combines it performed is its work.

use super::{Plan, ScanOp};
use std::sync::atomic::{AtomicU64, Ordering};

/// A [`ScanOp`] whose elements and states are depth counters.
#[derive(Debug, Default)]
pub struct DepthOp {
    len: usize,
    work: AtomicU64,
}

impl DepthOp {
    /// One sequence of `len` steps.
    pub fn new(len: usize) -> Self {
        DepthOp {
            len,
            work: AtomicU64::new(0),
        }
    }

    fn tick(&self) {
        self.work.fetch_add(1, Ordering::Relaxed);
    }
}

impl ScanOp for DepthOp {
    type Agg = u64;
    type State = u64;
    type Out = u64;

    fn problems(&self) -> usize {
        1
    }
    fn len(&self) -> usize {
        self.len
    }
    fn out_per_step(&self) -> usize {
        1
    }
    fn identity(&self) -> u64 {
        0
    }
    fn leaf(&self, _p: usize, _t: usize) -> u64 {
        0
    }
    fn fold(&self, agg: &mut u64, _p: usize, _t: usize) {
        self.tick();
        *agg += 1; // max(agg, leaf = 0) + 1
    }
    fn combine(&self, earlier: &u64, later: &u64) -> u64 {
        self.tick();
        (*earlier).max(*later) + 1
    }
    fn initial(&self, _p: usize) -> u64 {
        0
    }
    fn apply(&self, agg: &u64, h: &u64) -> u64 {
        self.tick();
        (*agg).max(*h) + 1
    }
    fn advance(&self, h: &mut u64, _p: usize, _t: usize, out: &mut [u64]) {
        self.tick();
        *h += 1;
        out[0] = *h;
    }
}

/// Depth and work of one run, as measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Measured {
    /// Longest chain of combines from any input to any output.
    pub depth: u64,
    /// Combines performed.
    pub work: u64,
}

/// Runs the CPU engine under `plan` on a depth-counting sequence of `len`
/// steps and returns what it measured.
pub fn measure(len: usize, plan: &Plan) -> Measured {
    let op = DepthOp::new(len);
    let mut out = vec![0u64; len];
    let finals = super::run(&op, plan, &mut out);
    let depth = out.iter().copied().chain(finals).max().unwrap_or(0);
    Measured {
        depth,
        work: op.work.load(Ordering::Relaxed),
    }
}

/// [`measure`] for the right-to-left engine ([`super::run_reverse`]), as
/// the backward passes run it.
pub fn measure_reverse(len: usize, plan: &Plan) -> Measured {
    let op = DepthOp::new(len);
    let mut out = vec![0u64; len];
    let finals = super::run_reverse(&op, plan, &mut out);
    let depth = out.iter().copied().chain(finals).max().unwrap_or(0);
    Measured {
        depth,
        work: op.work.load(Ordering::Relaxed),
    }
}
