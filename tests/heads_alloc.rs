//! Strided `[B,T,H,K]` inputs are read in place: a scan into caller-owned
//! outputs allocates only the engine's own scratch (chunk aggregates,
//! carries, per-task states), far less than one copy of the inputs.
//!
//! One test per binary: the counting allocator sees every thread of the
//! process, so no other test may run beside it.

use parascan::backend::Cpu;
use parascan::family::dplr::DplrOutput;
use parascan::family::heads::{DiagonalHeads, DplrHeads, Strided};
use parascan::PlanRequest;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the bytes requested from the system allocator.
struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts the requested sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = BYTES.load(Ordering::Relaxed);
    let r = f();
    (r, BYTES.load(Ordering::Relaxed) - before)
}

#[test]
fn strided_views_are_not_copied() {
    let cpu = Cpu::with_threads(2).unwrap();
    // Diagonal: heads 1 and 2 of a fused [B,T,3H,K] buffer.
    let (b, t, h, k) = (2, 4096, 4, 16);
    let buf: Vec<f32> = (0..b * t * 3 * h * k)
        .map(|i| 0.5 + (i % 7) as f32 * 0.05)
        .collect();
    let strides = [t * 3 * h * k, 3 * h * k, k];
    let p = DiagonalHeads {
        a: Strided {
            data: &buf[h * k..],
            strides,
        },
        b: Strided {
            data: &buf[2 * h * k..],
            strides,
        },
        h0: None,
        batch: b,
        len: t,
        heads: h,
        head_dim: k,
    };
    let mut out = vec![0f32; p.out_len()];
    let mut h_t = vec![0f32; p.state_len()];
    let input_bytes = 2 * b * t * h * k * 4;
    for req in [PlanRequest::Sequential, PlanRequest::Chunk(64)] {
        let (r, bytes) = counted(|| p.scan_into(&cpu, req, &mut out, &mut h_t));
        r.unwrap();
        assert!(
            bytes * 8 < input_bytes,
            "diagonal {req}: allocated {bytes} bytes, inputs are {input_bytes}"
        );
    }

    // DPLR: [1,T,H,·] views of fused buffers, readout.
    let (t, h, n, m) = (4096, 4, 8, 8);
    let strides = |inner: usize| [t * 3 * h * inner, 3 * h * inner, inner];
    let w: Vec<f32> = vec![0.9; t * 3 * h * n];
    let uv: Vec<f32> = vec![0.05; t * 3 * h * n];
    let kx: Vec<f32> = (0..t * 3 * h * n)
        .map(|i| ((i % 5) as f32 - 2.0) * 0.1)
        .collect();
    let p = DplrHeads {
        w: Strided {
            data: &w,
            strides: strides(n),
        },
        u: Strided {
            data: &uv[h * n..],
            strides: strides(n),
        },
        v: Strided {
            data: &uv,
            strides: strides(n),
        },
        k: Strided {
            data: &kx[h * n..],
            strides: strides(n),
        },
        x: Strided {
            data: &kx,
            strides: strides(m),
        },
        q: Some(Strided {
            data: &kx[2 * h * n..],
            strides: strides(n),
        }),
        h0: None,
        batch: 1,
        len: t,
        heads: h,
        n,
        m,
        rank: 1,
        output: DplrOutput::Readout,
    };
    let mut out = vec![0f32; p.out_len()];
    let mut h_t = vec![0f32; p.state_len()];
    let input_bytes = t * h * (5 * n + m) * 4;
    for req in [PlanRequest::Sequential, PlanRequest::Chunk(256)] {
        let (r, bytes) = counted(|| p.scan_into(&cpu, req, &mut out, &mut h_t));
        r.unwrap();
        assert!(
            bytes * 4 < input_bytes,
            "dplr {req}: allocated {bytes} bytes, inputs are {input_bytes}"
        );
    }
}
