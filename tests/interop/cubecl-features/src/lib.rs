//! parascan inside a cubecl-cuda / burn-cuda build: cubecl hands out raw
//! `CUstream` handles of the device's primary context, which parascan
//! borrows (it neither destroys the stream nor synchronizes it).

use cudarc::driver::sys::CUstream;
use parascan::backend::cuda::CudaBackend;
use parascan::family::{diagonal::Diagonal, Layout};
use parascan::kernels::{scan_host, DiagonalWorkspace};
use parascan::PlanRequest;

/// `h_T` of the scan `h_t = a_t h_{t-1} + b_t` (`[B,T,D]`, zero `h0`) on a
/// stream owned by cubecl.
///
/// # Safety
/// `stream` must be a live stream of device `ordinal`'s primary context
/// and stay alive until this returns.
pub unsafe fn final_state(
    ordinal: usize,
    stream: CUstream,
    a: &[f32],
    b: &[f32],
    (batch, len, dim): (usize, usize, usize),
) -> parascan::Result<Vec<f32>> {
    // SAFETY: forwarded to the caller (see above).
    let cuda = unsafe { CudaBackend::from_raw_stream(ordinal, stream) }?;
    let problem = Diagonal {
        a,
        b,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Btd,
    };
    let mut ws = DiagonalWorkspace::new();
    let (_, h_t, _) = scan_host(&cuda, &mut ws, &problem, PlanRequest::Auto)?;
    Ok(h_t)
}
