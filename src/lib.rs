//! parascan: parallel-over-time evaluation of recurrent sequence models.
//!
//! Linear recurrences `h_t = A_t h_{t-1} + b_t` of several transition
//! families run as chunked work-efficient Blelloch scans ([`scan`]); every
//! run states its plan (chunk size, depth, work) and depth can be measured
//! by running the same engine over depth counters ([`scan::depth`]).
//!
//! ```
//! use parascan::backend::Cpu;
//! use parascan::family::{diagonal::Diagonal, Layout};
//! use parascan::PlanRequest;
//!
//! let (batch, len, dim) = (2, 1000, 4);
//! let a = vec![0.9f32; batch * len * dim]; // decays, [B,T,D]
//! let b = vec![0.1f32; batch * len * dim]; // inputs, [B,T,D]
//! let problem = Diagonal { a: &a, b: &b, h0: None, batch, len, dim, layout: Layout::Btd };
//!
//! let cpu = Cpu::new();
//! let plan = cpu.plan(&problem, PlanRequest::Chunk(64))?; // inspect before running
//! assert!(plan.depth <= 2 * 64 + 2 * 4); // ≈ 2C + 2·log2(T/C), versus T = 1000
//! let run = cpu.scan(&problem, PlanRequest::Chunk(64))?; // out: [B,T,D], h_last: [B,D]
//! assert!((run.h_last[0] - 1.0).abs() < 1e-4); // h → b / (1 − a) = 1
//! # Ok::<(), parascan::Error>(())
//! ```
//!
//! The README lists the families, layouts and the command-line tool.

pub mod backend;
pub mod bench;
pub mod check;
pub mod dtype;
pub mod error;
pub mod family;
pub mod kernels;
pub mod mem;
pub mod newton;
pub mod oracle;
pub mod ptx;
pub mod scan;
pub mod sweep;
pub mod vmath;

mod simd;

pub use dtype::{DType, Real, Storage};
pub use error::{Error, Result};
pub use scan::{Plan, PlanRequest};
