//! Host-side orchestration of the handwritten kernels: one small safe
//! wrapper per kernel family.
//!
//! Each wrapper turns a problem and a [`PlanRequest`](crate::PlanRequest)
//! into an inspectable GPU plan (which kernels, in which order, with which
//! launch shapes and scratch), and issues that launch sequence on any
//! [`KernelRunner`](crate::backend::launch::KernelRunner): the CUDA backend
//! on a GPU, the SIMT emulator everywhere else. The emulator runs the same
//! `kernels/*.cu` sources, so the code path CI tests is the one the GPU runs.
//!
//! - [`diagonal`]: the Diagonal family (`kernels/diagonal.cu`), both layouts,
//!   f32/f16/bf16/f64 storage, and its depth-counting instantiation.

pub mod diagonal;

pub use diagonal::{
    launch_diagonal, launch_diagonal_buffers, measure_diagonal_depth,
    measure_diagonal_depth_outputs, plan_diagonal, scan_diagonal, scan_diagonal_device, DiagShape,
    DiagonalBuffers, DiagonalIo, DiagonalWorkspace, GpuPlan, GpuPlanKind, Launch, LaunchRole,
    ScratchSizes,
};
