//! The CUDA driver as the backend sees it: launches with `kernelParams` and
//! with `extra`, stream ordering of copies, events and kernels, module
//! loading by name, and — on the emulated driver (`scripts/emulated-driver.sh`)
//! — the checks a GPU would make less visible: copies outside an
//! allocation, a kernel running past the end of its buffer (guard pages),
//! PTX newer than the driver, unimplemented entry points.
//!
//! Without a CUDA device every test prints `skipped: <reason>` and passes,
//! except under `REQUIRE_GPU=1` / `REQUIRE_CUDA=1` (see `tests/common/gpu.rs`).

#[path = "common/gpu.rs"]
mod gpu;

use std::ffi::c_void;

use cudarc::driver::{result, sys, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use parascan::backend::cuda::CudaBackend;

fn cuda() -> Option<CudaBackend> {
    gpu::cuda_or_skip()
}

fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32) * 0.5 - 7.0).collect()
}

/// `copy_f32(src, dst, n)` launched through `cuLaunchKernel`'s `extra`
/// argument buffer gives the same result as through `kernelParams`.
#[test]
fn launch_with_kernel_params_and_with_extra() {
    let Some(cuda) = cuda() else { return };
    let stream: &std::sync::Arc<CudaStream> = cuda.stream();
    let n = 1000usize;
    let host = input(n);
    let src = stream.clone_htod(&host).unwrap();
    let mut dst_params = stream.alloc_zeros::<f32>(n).unwrap();
    let dst_extra = stream.alloc_zeros::<f32>(n).unwrap();
    let func = cuda.function("copy", "copy_f32").unwrap();
    let n_arg = n as u64;
    let cfg = LaunchConfig {
        grid_dim: (2, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = stream.launch_builder(&func);
    builder.arg(&src).arg(&mut dst_params).arg(&n_arg);
    // SAFETY: copy_f32(const float*, float*, unsigned long long) gets two
    // buffers of n floats and n.
    unsafe { builder.launch(cfg) }.unwrap();

    // The same launch with the parameters packed into one buffer (three
    // 8-byte values: two device pointers and n).
    {
        let (src_ptr, _g1) = cudarc::driver::DevicePtr::device_ptr(&src, stream);
        let (dst_ptr, _g2) = cudarc::driver::DevicePtr::device_ptr(&dst_extra, stream);
        let mut packed = [src_ptr, dst_ptr, n_arg];
        let mut size = std::mem::size_of_val(&packed);
        let mut extra = [
            1usize as *mut c_void, // CU_LAUNCH_PARAM_BUFFER_POINTER
            packed.as_mut_ptr().cast::<c_void>(),
            2usize as *mut c_void, // CU_LAUNCH_PARAM_BUFFER_SIZE
            (&mut size as *mut usize).cast::<c_void>(),
            std::ptr::null_mut(), // CU_LAUNCH_PARAM_END
        ];
        // SAFETY: the function handle is live, the stream belongs to the
        // current context, and the packed buffer matches the kernel's
        // parameter layout (three 8-byte values, 24 bytes).
        let status = unsafe {
            sys::cuLaunchKernel(
                func.cu_function(),
                2,
                1,
                1,
                128,
                1,
                1,
                0,
                stream.cu_stream(),
                std::ptr::null_mut(),
                extra.as_mut_ptr(),
            )
        };
        assert_eq!(status, sys::CUresult::CUDA_SUCCESS);
    }
    let a = stream.clone_dtoh(&dst_params).unwrap();
    let b = stream.clone_dtoh(&dst_extra).unwrap();
    assert_eq!(a, host);
    assert_eq!(b, host);
}

/// Work queued on a stream runs in order, after the host copies queued
/// before it, and an event recorded after it completes no earlier.
#[test]
fn stream_order_and_events() {
    let Some(cuda) = cuda() else { return };
    let stream = cuda.stream();
    let n = 1 << 14;
    let first = input(n);
    let second: Vec<f32> = first.iter().map(|x| x * 3.0).collect();
    let mut src = stream.clone_htod(&first).unwrap();
    let mut dst = stream.alloc_zeros::<f32>(n).unwrap();
    let func = cuda.function("copy", "copy_f32").unwrap();
    let n_arg = n as u64;
    let cfg = LaunchConfig::for_num_elems(n as u32);
    let start = stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .unwrap();
    for host in [&first, &second] {
        stream.memcpy_htod(host.as_slice(), &mut src).unwrap();
        let mut builder = stream.launch_builder(&func);
        builder.arg(&src).arg(&mut dst).arg(&n_arg);
        // SAFETY: as above.
        unsafe { builder.launch(cfg) }.unwrap();
    }
    let end = stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .unwrap();
    end.synchronize().unwrap();
    let ms = start.elapsed_ms(&end).unwrap();
    assert!(ms >= 0.0 && ms.is_finite(), "elapsed {ms} ms");
    assert_eq!(stream.clone_dtoh(&dst).unwrap(), second);
}

/// A kernel the module does not declare is `CUDA_ERROR_NOT_FOUND`, and the
/// backend says which.
#[test]
fn unknown_kernel_is_not_found() {
    let Some(cuda) = cuda() else { return };
    let err = cuda.function("copy", "no_such_kernel").unwrap_err();
    assert!(
        err.to_string().contains("no_such_kernel"),
        "the error names the kernel: {err}"
    );
    assert!(cuda.function("no_such_module", "copy_f32").is_err());
}

/// Only the emulated driver: what it checks that a GPU would report late or
/// not at all.
#[test]
fn emulated_driver_checks() {
    let Some(cuda) = cuda() else { return };
    if !cuda.is_emulated() {
        eprintln!("skipped: emulated-driver checks on {}", cuda.device_name());
        return;
    }
    assert!(cuda.device_name().contains("H100 geometry"));
    let ctx = cuda.context();
    let sms = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .unwrap();
    let expected_sms = std::env::var("PS_EMU_SM_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(132);
    assert_eq!(sms, expected_sms);
    assert_eq!(
        ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_WARP_SIZE)
            .unwrap(),
        32
    );

    let stream = cuda.stream();
    let buf = stream.alloc_zeros::<f32>(100).unwrap();
    let (ptr, _guard) = cudarc::driver::DevicePtr::device_ptr(&buf, stream);
    let mut host = vec![0f32; 101];
    // One element more than the allocation holds.
    // SAFETY: the host slice has room for 101 floats; the device range is
    // deliberately too long, which the driver must refuse.
    let status = unsafe {
        sys::cuMemcpyDtoH_v2(
            host.as_mut_ptr().cast::<c_void>(),
            ptr,
            101 * std::mem::size_of::<f32>(),
        )
    };
    assert_eq!(status, sys::CUresult::CUDA_ERROR_INVALID_VALUE);
    // SAFETY: as above, for a range starting inside and ending past it.
    let status = unsafe { sys::cuMemsetD8_v2(ptr + 8, 0, 400) };
    assert_eq!(status, sys::CUresult::CUDA_ERROR_INVALID_VALUE);

    // PTX newer than the 13.0 driver is refused, as the real one does.
    let newer = ".version 9.9\n.target sm_90\n.address_size 64\n.visible .entry k()\n{\n ret;\n}\n";
    let err = ctx.load_module(Ptx::from_src(newer)).unwrap_err();
    assert_eq!(err.0, sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
    // A kernel a module declares but the emulator never compiled.
    let alien = ".version 9.0\n.target sm_90\n.address_size 64\n.visible .entry alien_kernel()\n{\n ret;\n}\n";
    let module = ctx.load_module(Ptx::from_src(alien)).unwrap();
    let err = module.load_function("alien_kernel").unwrap_err();
    assert_eq!(err.0, sys::CUresult::CUDA_ERROR_NOT_FOUND);

    // An entry point the emulated driver does not implement is an error,
    // not a missing symbol.
    let mut graph: sys::CUgraph = std::ptr::null_mut();
    // SAFETY: the out pointer is valid; the call is expected to fail.
    let status = unsafe { sys::cuGraphCreate(&mut graph, 0) };
    assert_eq!(status, sys::CUresult::CUDA_ERROR_NOT_SUPPORTED);
    let _ = result::ctx::synchronize();
}

/// On the emulated driver, a kernel that writes past its output buffer
/// touches the guard page: the launch fails with
/// `CUDA_ERROR_ILLEGAL_ADDRESS` at the next synchronize (the emulator's
/// message, naming the kernel and the buffer, goes to stderr), and the
/// context stays usable for the next launch.
///
/// A device fault poisons the context for every thread that uses it (as on
/// a GPU), so the overrun runs in a process of its own: the other tests of
/// this executable share the primary context.
#[test]
fn emulated_guard_page_catches_an_overrun() {
    const CHILD: &str = "PARASCAN_TEST_OVERRUN_CHILD";
    let Some(cuda) = cuda() else { return };
    if !cuda.is_emulated() {
        eprintln!("skipped: guard pages are an emulated-driver check");
        return;
    }
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "emulated_guard_page_catches_an_overrun",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the overrun test in its own process: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let stream = cuda.stream();
    // 1024 floats: one page, so the end touches the guard page in either
    // placement (PS_EMU_GUARD=end or start).
    let n = 1024usize;
    let host = input(n + 64);
    let src = stream.clone_htod(&host).unwrap();
    let mut dst = stream.alloc_zeros::<f32>(n).unwrap();
    let func = cuda.function("copy", "copy_f32").unwrap();
    // 64 elements more than dst holds.
    let n_arg = (n + 64) as u64;
    let mut builder = stream.launch_builder(&func);
    builder.arg(&src).arg(&mut dst).arg(&n_arg);
    // SAFETY: deliberately not: the kernel writes past `dst`, which the
    // emulated driver's guard page catches (this runs only there).
    unsafe { builder.launch(LaunchConfig::for_num_elems(n as u32 + 64)) }.unwrap();
    let err = stream
        .synchronize()
        .expect_err("the overrun went unnoticed");
    assert_eq!(
        err.0,
        sys::CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
        "the overrun is an illegal address: {err:?}"
    );

    // The same launch within bounds now runs and copies.
    let mut ok = stream.alloc_zeros::<f32>(n).unwrap();
    let n_ok = n as u64;
    let mut builder = stream.launch_builder(&func);
    builder.arg(&src).arg(&mut ok).arg(&n_ok);
    // SAFETY: copy_f32 gets a source of n + 64 floats, a destination of n
    // and n.
    unsafe { builder.launch(LaunchConfig::for_num_elems(n as u32)) }.unwrap();
    let back = stream.clone_dtoh(&ok).unwrap();
    assert_eq!(back, host[..n]);
}

/// The copy probe that every bandwidth ratio is quoted against moves the
/// bytes it claims to (it checks its own destination) and times them with
/// completed events.
#[test]
fn copy_probe_measures_a_real_copy() {
    let Some(cuda) = cuda() else { return };
    let gbs = cuda
        .copy_bandwidth_gbs(gpu::scaled(&cuda, 256 << 20, 4 << 20), 5)
        .unwrap();
    assert!(gbs.is_finite() && gbs > 0.0, "bandwidth {gbs}");
}

/// Device times of queued work come from events that have completed.
#[test]
fn device_times_of_queued_work() {
    use parascan::backend::launch::{KernelArg, KernelRunner, LaunchConfig};
    let Some(cuda) = cuda() else { return };
    let n = 1 << 16;
    let src = cuda.upload(&input(n)).unwrap();
    let dst = cuda.alloc(n * 4).unwrap();
    let args = [
        KernelArg::from(&src),
        KernelArg::from(&dst),
        KernelArg::U64(n as u64),
    ];
    let times = cuda
        .device_times(3, &mut || unsafe {
            cuda.launch("copy_f32", LaunchConfig::linear(64, 256), &args)
        })
        .unwrap();
    assert_eq!(times.len(), 3);
    assert!(
        times.iter().all(|t| t.is_finite() && *t >= 0.0),
        "{times:?}"
    );
    let mut out = vec![0f32; n];
    cuda.download(&dst, &mut out).unwrap();
    assert_eq!(out, input(n));
}

/// A clone and a backend rebound to another stream share the loaded
/// modules, run kernels on their own stream, and can move across threads.
#[test]
fn backend_clones_and_rebinds_to_another_stream() {
    use parascan::backend::launch::{KernelArg, KernelRunner, LaunchConfig};
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CudaBackend>();
    let Some(cuda) = cuda() else { return };
    let other = cuda.context().new_stream().unwrap();
    let rebound = cuda.on_stream(other.clone()).unwrap();
    assert!(std::sync::Arc::ptr_eq(rebound.stream(), &other));
    assert!(std::sync::Arc::ptr_eq(rebound.context(), cuda.context()));
    let clone = cuda.clone();
    let n = 4096;
    let want = input(n);
    std::thread::scope(|scope| {
        for runner in [&cuda, &clone, &rebound] {
            let want = &want;
            scope.spawn(move || {
                let src = runner.upload(want).unwrap();
                let dst = runner.alloc(n * 4).unwrap();
                let args = [
                    KernelArg::from(&src),
                    KernelArg::from(&dst),
                    KernelArg::U64(n as u64),
                ];
                unsafe { runner.launch("copy_f32", LaunchConfig::linear(16, 256), &args) }.unwrap();
                let mut out = vec![0f32; n];
                runner.download(&dst, &mut out).unwrap();
                assert_eq!(&out, want);
            });
        }
    });
    // A buffer of one stream is refused on another, not raced on.
    let buf = cuda.alloc(16).unwrap();
    assert!(rebound.fill(&buf, 0).is_err());
}

/// Modules load on first use: opening the backend loads none, a Diagonal
/// scan loads only `diagonal`, a clone and a rebind to another stream share
/// what is loaded, and `load_all` loads the rest.
#[test]
fn modules_load_on_first_use_and_are_shared() {
    use parascan::family::{diagonal::Diagonal, Layout};
    use parascan::kernels::{scan_host, DiagonalWorkspace};
    use parascan::PlanRequest;

    // A fresh backend of its own: other tests' backends share nothing.
    let Some(cuda) = cuda() else { return };
    assert!(
        cuda.loaded_modules().is_empty(),
        "opening loaded {:?}",
        cuda.loaded_modules()
    );
    let (batch, len, dim) = (1, 64, 4);
    let a = vec![0.5f32; batch * len * dim];
    let b = vec![1.0f32; batch * len * dim];
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Btd,
    };
    let mut ws = DiagonalWorkspace::new();
    let (_, h_t, _) = scan_host(&cuda, &mut ws, &problem, PlanRequest::Auto).unwrap();
    // h → b / (1 − a) = 2 (64 steps of a = 1/2 from zero: 2 − 2^-63).
    assert!(h_t.iter().all(|&h| (h - 2.0).abs() < 1e-6), "{h_t:?}");
    assert_eq!(cuda.loaded_modules(), vec!["diagonal"]);

    let other = cuda.context().new_stream().unwrap();
    let rebound = cuda.on_stream(other).unwrap();
    assert_eq!(rebound.loaded_modules(), vec!["diagonal"]);
    let clone = cuda.clone();
    clone.load_all().unwrap();
    assert_eq!(
        cuda.loaded_modules().len(),
        parascan::ptx::MODULES.len(),
        "load_all through a clone loads for every clone"
    );
}

/// A raw `CUstream` owned by someone else (as cubecl hands out): parascan
/// runs on it, leaves it alive when dropped, and its results match a
/// backend of its own.
#[test]
fn borrowed_raw_stream_runs_and_stays_alive() {
    use parascan::family::{diagonal::Diagonal, Layout};
    use parascan::kernels::{scan_host, DiagonalWorkspace};
    use parascan::PlanRequest;

    let Some(cuda) = cuda() else { return };
    let (batch, len, dim) = (2, 300, 3);
    let a: Vec<f32> = (0..batch * len * dim)
        .map(|i| 0.5 + 0.4 * ((i % 7) as f32 / 7.0))
        .collect();
    let b: Vec<f32> = (0..batch * len * dim)
        .map(|i| ((i % 5) as f32) - 2.0)
        .collect();
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch,
        len,
        dim,
        layout: Layout::Btd,
    };
    let mut ws = DiagonalWorkspace::new();
    let (h_own, t_own, _) = scan_host(&cuda, &mut ws, &problem, PlanRequest::Auto).unwrap();

    cuda.context().bind_to_thread().unwrap();
    // The other library's stream: created and destroyed outside parascan.
    let raw = result::stream::create(result::stream::StreamKind::NonBlocking).unwrap();
    {
        // SAFETY: `raw` is a live stream of device 0's primary context and
        // is destroyed only after this backend and its buffers are gone.
        let borrowed = unsafe { CudaBackend::from_raw_stream(0, raw) }.unwrap();
        assert_eq!(borrowed.stream().cu_stream(), raw);
        let mut ws = DiagonalWorkspace::new();
        let (h, t, _) = scan_host(&borrowed, &mut ws, &problem, PlanRequest::Auto).unwrap();
        assert_eq!(h, h_own);
        assert_eq!(t, t_own);
    }
    // Still alive after the backend is gone: it can be waited for.
    // SAFETY: `raw` was created above and not destroyed yet.
    unsafe { result::stream::synchronize(raw) }.unwrap();
    // SAFETY: nothing uses `raw` any more (the backend and its buffers are
    // dropped and the stream is idle).
    unsafe { result::stream::destroy(raw) }.unwrap();
}
