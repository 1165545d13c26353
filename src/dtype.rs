//! Element types: the compute scalar ([`Real`]) and the storage scalar
//! ([`Storage`]).
//!
//! Every family computes in `f32` (or `f64` for `f64` data) and may store its
//! inputs and outputs as `f32`, `f64`, `f16` or `bf16`. Half-precision data is
//! widened on load and rounded once on store, as the CUDA kernels do.

use half::{bf16, f16};
use std::fmt::Debug;

/// A compute scalar: `f32` or `f64`.
pub trait Real:
    num_traits::Float + num_traits::FromPrimitive + Send + Sync + Default + Debug + 'static
{
    /// `e^x` as the CPU cells evaluate it: for `f32` the branch-free,
    /// vectorizable [`crate::vmath::exp`] (error bound there), for `f64` the
    /// standard library's.
    #[inline(always)]
    fn cell_exp(self) -> Self {
        self.exp()
    }
    /// `tanh x` as the CPU cells evaluate it ([`crate::vmath::tanh`] for
    /// `f32`, the standard library's for `f64`).
    #[inline(always)]
    fn cell_tanh(self) -> Self {
        self.tanh()
    }
    /// The logistic sigmoid `1 / (1 + e^{-x})` as the CPU cells evaluate it
    /// ([`crate::vmath::sigmoid`] for `f32`).
    #[inline(always)]
    fn cell_sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp())
    }
}
impl Real for f32 {
    #[inline(always)]
    fn cell_exp(self) -> Self {
        crate::vmath::exp(self)
    }
    #[inline(always)]
    fn cell_tanh(self) -> Self {
        crate::vmath::tanh(self)
    }
    #[inline(always)]
    fn cell_sigmoid(self) -> Self {
        crate::vmath::sigmoid(self)
    }
}
impl Real for f64 {}

/// A storage scalar: how inputs and outputs are laid out in memory.
pub trait Storage: Copy + Send + Sync + Default + Debug + PartialEq + 'static {
    /// The scalar the math runs in.
    type Compute: Real;
    /// Which dtype this is.
    const DTYPE: DType;
    /// Widen to the compute type.
    fn load(self) -> Self::Compute;
    /// Round from the compute type.
    fn store(c: Self::Compute) -> Self;
    /// Widen to f64 (the oracle's type).
    fn to_f64(self) -> f64;
    /// Round from f64 (to make inputs).
    fn from_f64(x: f64) -> Self;
}

impl Storage for f32 {
    type Compute = f32;
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(c: f32) -> Self {
        c
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Storage for f64 {
    type Compute = f64;
    const DTYPE: DType = DType::F64;
    #[inline(always)]
    fn load(self) -> f64 {
        self
    }
    #[inline(always)]
    fn store(c: f64) -> Self {
        c
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

impl Storage for f16 {
    type Compute = f32;
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(c: f32) -> Self {
        f16::from_f32(c)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
}

impl Storage for bf16 {
    type Compute = f32;
    const DTYPE: DType = DType::Bf16;
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(c: f32) -> Self {
        bf16::from_f32(c)
    }
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

/// Storage dtype, as a runtime value (CLI flags, reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// IEEE double precision (computes in f64).
    F64,
    /// IEEE half precision storage, f32 math.
    F16,
    /// bfloat16 storage, f32 math.
    Bf16,
}

impl DType {
    /// Bytes per stored element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::Bf16 => 2,
        }
    }
    /// Lower-case name (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(DType::F32),
            "f64" => Ok(DType::F64),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::Bf16),
            other => Err(format!(
                "unknown dtype `{other}`; expected f32, f64, f16 or bf16"
            )),
        }
    }
}

/// Converts a compute value to another compute type (f32 <-> f64).
#[inline(always)]
pub fn cast<A: Real, B: Real>(x: A) -> B {
    // Both are IEEE floats; the conversion cannot fail.
    B::from(x).unwrap_or_else(B::nan)
}
