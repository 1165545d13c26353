//! PTX compiled from `kernels/*.cu` at build time.
//!
//! `build.rs` runs nvcc on every kernel source (target `sm_90` unless
//! `PARASCAN_CUDA_ARCH` says otherwise) and generates the constants below.
//! When no nvcc was found the crate still builds: [`PTX_BUILT`] is `false`,
//! [`MODULES`] is empty, and the CUDA backend reports itself unavailable
//! instead of failing at run time. Run `scripts/install-cuda-toolchain.sh`
//! to get the pinned CUDA 13.0 compiler and rebuild.
//!
//! Constants (generated):
//! - [`PTX_BUILT`]: whether nvcc compiled the kernels for this build;
//! - [`NVCC_VERSION`]: the compiler version, e.g. `13.0.88`, or `""`;
//! - [`CUDA_ARCH`]: the PTX target, e.g. `sm_90`;
//! - [`MODULES`]: `(kernel file stem, PTX text)`, e.g. `("copy", ".version 9.0 …")`.

include!(concat!(env!("OUT_DIR"), "/ptx.rs"));

/// The PTX text of the module built from `kernels/<name>.cu`, if any.
///
/// ```
/// if parascan::ptx::PTX_BUILT {
///     assert!(parascan::ptx::module("copy").is_some());
/// }
/// assert!(parascan::ptx::module("no-such-kernel").is_none());
/// ```
pub fn module(name: &str) -> Option<&'static str> {
    MODULES
        .iter()
        .find(|(stem, _)| *stem == name)
        .map(|(_, ptx)| *ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_match_build_state() {
        if PTX_BUILT {
            assert!(!NVCC_VERSION.is_empty());
            let copy = module("copy").expect("kernels/copy.cu is always compiled");
            assert!(copy.contains(".entry copy_f32"));
            assert!(copy.contains(&format!(".target {CUDA_ARCH}")));
        } else {
            assert!(MODULES.is_empty());
            assert!(NVCC_VERSION.is_empty());
        }
        assert!(!CUDA_ARCH.is_empty());
    }
}
