//! parascan inside a candle-core 0.11 (`cuda`) build: the kernels run on
//! the stream of the model's device (`candle_core::CudaDevice::cuda_stream()`
//! returns this `Arc<CudaStream>`), so they are ordered with candle's own
//! work on that stream without extra synchronization.

use std::sync::Arc;

use cudarc::driver::CudaStream;
use parascan::backend::cuda::CudaBackend;
use parascan::family::{diagonal::Diagonal, Layout};
use parascan::kernels::{scan_host, DiagonalWorkspace};
use parascan::PlanRequest;

/// `h_T` of the scan `h_t = a_t h_{t-1} + b_t` (`[B,T,D]`, zero `h0`) on
/// the caller's stream.
pub fn final_state(
    stream: Arc<CudaStream>,
    a: &[f32],
    b: &[f32],
    (batch, len, dim): (usize, usize, usize),
) -> parascan::Result<Vec<f32>> {
    let cuda = CudaBackend::from_stream(stream)?;
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
