//! Backends: where a scan runs.
//!
//! - [`cpu::Cpu`]: the native rayon engine, every family, and the fast path
//!   on machines without a GPU.
//! - `cuda` (feature `cuda`): cudarc over PTX compiled by `build.rs` from
//!   `kernels/*.cu`.
//! - [`emu`]: the SIMT emulator running the same kernels on the CPU.
//! - [`counting::CountingRunner`]: wraps any kernel runner and counts its
//!   allocations, read-backs and launches (a diagnostic for code that must
//!   not allocate or read back once warm).
//!
//! [`Engine`] is the one face of all of them for generic code: `run` a
//! problem of any family with kernels and get the same outputs shape.
//!
//! [`BackendKind::auto`] picks CUDA when a device works, else the CPU, and
//! says why.

pub mod counting;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod emu;
pub mod engine;
pub mod launch;

pub use cpu::Cpu;
pub use engine::Engine;

/// Which engine to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum BackendKind {
    /// The native Rust engine.
    Cpu,
    /// NVIDIA GPU through the CUDA driver.
    Cuda,
    /// The SIMT emulator running the CUDA kernels on the CPU (slow: small
    /// sizes only; shows the kernels' own measured depth).
    Emu,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Emu => "emu",
        })
    }
}

impl std::str::FromStr for BackendKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" | "gpu" => Ok(BackendKind::Cuda),
            "emu" => Ok(BackendKind::Emu),
            other => Err(crate::Error::BackendUnavailable {
                backend: "unknown",
                reason: format!("`{other}`: expected cpu, cuda or emu"),
            }),
        }
    }
}

impl BackendKind {
    /// CUDA when a device can be opened and has scan kernels, else CPU;
    /// the string says which and why.
    #[cfg(feature = "cuda")]
    pub fn auto() -> (BackendKind, String) {
        match cuda::CudaBackend::new(0) {
            Ok(dev) if HAS_SCAN_KERNELS => {
                (BackendKind::Cuda, format!("cuda: {}", dev.device_name()))
            }
            Ok(dev) => (
                BackendKind::Cpu,
                format!(
                    "cpu ({} found, but this build has no scan kernels yet)",
                    dev.device_name()
                ),
            ),
            Err(e) => (BackendKind::Cpu, format!("cpu ({e})")),
        }
    }

    /// CPU: this build has no CUDA backend (the `cuda` feature is off).
    #[cfg(not(feature = "cuda"))]
    pub fn auto() -> (BackendKind, String) {
        (
            BackendKind::Cpu,
            "cpu (built without the `cuda` feature)".to_string(),
        )
    }
}

/// Whether this build's CUDA backend has scan kernels: every family with
/// kernels ([`crate::kernels`]) runs on them; families without fall back
/// to the CPU engine per case (labelled `cpu` in the reports).
pub const HAS_SCAN_KERNELS: bool = true;
