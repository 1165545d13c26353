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
//! # A guide for model code
//!
//! - **Describe the recurrence** with a problem of one family
//!   ([`family`]): [`Diagonal`](family::diagonal::Diagonal) (Mamba/S4/LRU-style
//!   decays), [`PermDiagonal`](family::perm_diagonal::PermDiagonal),
//!   [`BlockDiagonal`](family::block_diagonal::BlockDiagonal) / dense, and
//!   [`Dplr`](family::dplr::Dplr) (DeltaNet-style `diag(w) + u vᵀ` on a
//!   matrix state, with a readout). Problems borrow host slices; shapes and
//!   layouts are in each type's docs. Every problem validates itself and
//!   every call returns a typed [`Error`] naming the bad argument.
//! - **Run it on the CPU** with [`backend::Cpu`] (every family; `scan`
//!   returns the outputs, `h_T` and the plan).
//! - **Run it on the kernels** with [`kernels`]: each family has a planner
//!   (inspect launches, scratch, depth before running); the entry points
//!   are shared by every family ([`kernels::face`]): [`kernels::scan_host`]
//!   uploads, runs and downloads, and [`kernels::launch_scan_buffers`] runs
//!   on typed device memory with a reusable [`kernels::Workspace`] (no
//!   allocation once warm, no synchronization), over
//!   any [`KernelRunner`](backend::launch::KernelRunner): the CUDA backend
//!   (feature `cuda`: `backend::cuda::CudaBackend`, which can run on the
//!   stream of candle or cubecl — see the README) or the SIMT emulator
//!   ([`backend::emu::EmuBackend`]), which runs the same CUDA sources on
//!   the CPU for tests.
//! - **Nonlinear cells** (`DiagGru`, `DiagLstm`, `Elman`, or your own
//!   [`Cell`](newton::Cell)) are solved in parallel over time by
//!   [`newton::solve`] (CPU), [`newton::solve_kernels`] (kernels, host
//!   memory) and [`newton::solve_device`] (kernels, device memory: a
//!   reusable [`newton::NewtonWorkspace`], no allocation once warm, and a
//!   fixed-iteration mode that never reads back); every path returns
//!   `h_T`.
//! - **Check results** against [`oracle`], the f64 sequential reference
//!   each family is tested with.
//! - **Numerics** are the same on every backend: IEEE arithmetic, except
//!   that f32 arithmetic (f32, f16, bf16 storage) flushes subnormals to zero
//!   (the kernels are built with `-ftz=true`; the CPU engine and the
//!   emulator do the same) while f64 keeps IEEE subnormals; see
//!   [`backend::Cpu`].
//!
//! Features: `cli` (the binary; default), `dynamic-loading` (the CUDA
//! backend, cudarc loading the driver at run time for CUDA 13.0; default),
//! `cuda` (the CUDA backend choosing no cudarc linking mode, for crates
//! whose own cudarc does), `serde`.
//!
//! The README lists the families, layouts and the command-line tool.

pub mod backend;
#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod check;
pub mod dtype;
pub mod error;
pub mod family;
pub mod grad;
pub mod kernels;
pub mod mem;
pub mod newton;
pub mod oracle;
pub mod ptx;
pub mod scan;
#[cfg(feature = "cli")]
pub mod sweep;
pub mod vmath;

mod simd;

pub use dtype::{DType, Real, Storage};
pub use error::{Error, Result};
pub use scan::{Plan, PlanRequest};
