//! parascan: parallel-over-time evaluation of recurrent sequence models.
//!
//! Linear recurrences `h_t = A_t h_{t-1} + b_t` of several transition
//! families run as chunked work-efficient Blelloch scans ([`scan`]); every
//! run states its plan (chunk size, depth, work) and depth can be measured
//! by running the same engine over depth counters ([`scan::depth`]).
//!
//! See `SPEC.md`-level docs in the README for the families and layouts.

pub mod backend;
pub mod check;
pub mod dtype;
pub mod error;
pub mod family;
pub mod kernels;
pub mod oracle;
pub mod ptx;
pub mod scan;
pub mod sweep;

pub use dtype::{DType, Real, Storage};
pub use error::{Error, Result};
pub use scan::{Plan, PlanRequest};
