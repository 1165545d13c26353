//! The launch abstraction (`KernelRunner`) on the emulated-kernel backend,
//! with `kernels/copy.cu`, and the same checks on CUDA when a GPU is present.

// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

#[path = "common/gpu.rs"]
mod gpu;

use parascan::backend::emu::{EmuBackend, FiberOrder};
use parascan::backend::launch::{
    ptx_kernel_names, KernelArg, KernelRunner, LaunchConfig, MAX_SHARED_BYTES,
};
use parascan::Error;

const F32: usize = std::mem::size_of::<f32>();
/// The poison that `fill(.., 0xFF)` leaves: a NaN.
const POISON: u32 = u32::MAX;

/// Lengths with every tail the float4 path leaves (n mod 4 = 0..3), a single
/// element, an empty copy, and lengths that need many grid-stride rounds.
const LENGTHS: &[usize] = &[0, 1, 3, 4, 5, 7, 64, 1027, 4099];

/// A one-block launch, a grid whose threads each see several elements, and a
/// block size that is not a multiple of the warp size.
fn configs() -> Vec<LaunchConfig> {
    vec![
        LaunchConfig::linear(1, 256),
        LaunchConfig::linear(3, 64),
        LaunchConfig::linear(8, 128),
        LaunchConfig::linear(2, 33),
    ]
}

fn runners() -> Vec<EmuBackend> {
    vec![
        EmuBackend::forward(),
        EmuBackend::reverse(),
        EmuBackend::shuffled(1),
        EmuBackend::shuffled(0x5eed_cafe),
    ]
}

/// Copies `n` floats with `copy_f32` from `src_off` elements into one buffer
/// to `dst_off` elements into a poisoned one, and checks that exactly the
/// target range changed and holds the source bits.
fn check_copy<R: KernelRunner>(
    runner: &R,
    n: usize,
    cfg: LaunchConfig,
    src_off: usize,
    dst_off: usize,
) -> Result<(), String> {
    let context = format!(
        "{} copy of {n} floats, {cfg:?}, offsets {src_off}/{dst_off}",
        runner.backend_name()
    );
    let host: Vec<f32> = (0..n + src_off).map(|i| i as f32 * 0.5 - 7.25).collect();
    let src = runner
        .upload(&host)
        .map_err(|e| format!("{context}: {e}"))?;
    let dst_len = dst_off + n + 3;
    let dst = runner
        .alloc(dst_len * F32)
        .map_err(|e| format!("{context}: {e}"))?;
    runner
        .fill(&dst, 0xFF)
        .map_err(|e| format!("{context}: {e}"))?;
    let args = [
        KernelArg::Ptr(src.ptr() + (src_off * F32) as u64),
        KernelArg::Ptr(dst.ptr() + (dst_off * F32) as u64),
        KernelArg::U64(n as u64),
    ];
    unsafe { runner.launch("copy_f32", cfg, &args) }.map_err(|e| format!("{context}: {e}"))?;
    runner
        .synchronize()
        .map_err(|e| format!("{context}: {e}"))?;
    let mut out = vec![0f32; dst_len];
    runner
        .download(&dst, &mut out)
        .map_err(|e| format!("{context}: {e}"))?;
    for (i, v) in out.iter().enumerate() {
        let expected = if (dst_off..dst_off + n).contains(&i) {
            host[src_off + i - dst_off].to_bits()
        } else {
            POISON
        };
        if v.to_bits() != expected {
            return Err(format!(
                "{context}: element {i} is {v} ({:#010x}), expected {:#010x}",
                v.to_bits(),
                expected
            ));
        }
    }
    Ok(())
}

/// Every length and configuration, aligned and through misaligned views
/// (which take the kernel's scalar path).
fn check_all_copies<R: KernelRunner>(runner: &R) {
    for cfg in configs() {
        for &n in LENGTHS {
            for (src_off, dst_off) in [(0, 0), (1, 0), (0, 3), (2, 2)] {
                if let Err(e) = check_copy(runner, n, cfg, src_off, dst_off) {
                    panic!("{e}");
                }
            }
        }
    }
}

#[test]
fn copy_kernel_is_compiled_in() {
    // Fails when the emulator library loses its registrations (a link
    // without +whole-archive).
    let names = EmuBackend::kernel_names();
    assert!(
        names.iter().any(|n| n == "copy_f32"),
        "emulated kernels: {names:?}"
    );
    assert_eq!(EmuBackend::kernel_num_params("copy_f32"), Some(3));
}

#[test]
fn every_ptx_kernel_is_emulated() {
    // A kernel that nvcc compiles but that lacks PS_REGISTER_KERNEL would
    // run on the GPU but never in CI.
    let emulated = EmuBackend::kernel_names();
    let missing: Vec<&str> = ptx_kernel_names()
        .into_iter()
        .filter(|name| !emulated.iter().any(|e| e == name))
        .collect();
    assert!(
        missing.is_empty(),
        "kernels in the PTX but not registered with PS_REGISTER_KERNEL: {missing:?}"
    );
    if parascan::ptx::PTX_BUILT {
        assert!(ptx_kernel_names().contains(&"copy_f32"));
    }
}

#[test]
fn copy_is_exact_under_every_fiber_order() {
    for runner in runners() {
        eprintln!(
            "order {} (seed {}), {} workers",
            runner.order(),
            runner.seed(),
            runner.workers()
        );
        check_all_copies(&runner);
    }
}

#[test]
fn copy_with_one_and_many_workers() {
    for workers in [1, 3, 16] {
        let runner = EmuBackend::shuffled(7).with_workers(workers);
        assert_eq!(runner.sm_count(), workers);
        for &n in LENGTHS {
            check_copy(&runner, n, LaunchConfig::linear(5, 96), 0, 0).unwrap();
        }
    }
}

#[test]
fn buffers_are_aligned_and_poisoned() {
    let runner = EmuBackend::default();
    assert_eq!(runner.backend_name(), "emu");
    for bytes in [0, 1, 3, 17, 4096] {
        let buf = runner.alloc(bytes).unwrap();
        assert_eq!(buf.len_bytes(), bytes);
        assert_eq!(buf.ptr() % 256, 0, "{buf:?}");
        let mut back = vec![0u8; bytes];
        runner.download(&buf, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0xFF));
        runner.fill(&buf, 0x3C).unwrap();
        runner.download(&buf, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0x3C));
    }
    let data = [1.0f64, -2.5, f64::MIN_POSITIVE];
    let buf = runner.upload(&data).unwrap();
    assert_eq!(buf.len_bytes(), 24);
    let mut back = [0f64; 3];
    runner.download(&buf, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn download_checks_sizes() {
    let runner = EmuBackend::default();
    let buf = runner.upload(&[1.0f32, 2.0, 3.0]).unwrap();
    let mut short = [0f32; 2];
    assert!(matches!(
        runner.download(&buf, &mut short),
        Err(Error::Shape { .. })
    ));
    let mut long = [0f32; 4];
    assert!(runner.download(&buf, &mut long).is_err());
    // 12 bytes are not a whole number of f64.
    let mut wide = [0f64; 1];
    assert!(runner.download(&buf, &mut wide).is_err());
    let mut exact_bytes = [0u8; 12];
    runner.download(&buf, &mut exact_bytes).unwrap();
}

fn launch_error(result: parascan::Result<()>) -> String {
    match result {
        Err(Error::Launch {
            backend,
            kernel,
            message,
        }) => {
            assert_eq!(backend, "emu");
            assert!(!kernel.is_empty());
            message
        }
        Err(other) => panic!("expected Error::Launch, got {other}"),
        Ok(()) => panic!("expected Error::Launch, the launch succeeded"),
    }
}

/// Arguments for a valid 16-element copy, with the buffers they point to.
fn copy_args(
    runner: &EmuBackend,
) -> (Vec<KernelArg>, [parascan::backend::launch::DeviceBuffer; 2]) {
    let src = runner.upload(&[0.5f32; 16]).unwrap();
    let dst = runner.alloc(16 * F32).unwrap();
    let args = vec![
        KernelArg::from(&src),
        KernelArg::from(&dst),
        KernelArg::from(16u64),
    ];
    (args, [src, dst])
}

#[test]
fn unknown_kernel_is_an_error() {
    let runner = EmuBackend::default();
    let (args, _bufs) = copy_args(&runner);
    let msg = launch_error(unsafe {
        runner.launch("no_such_kernel", LaunchConfig::linear(1, 32), &args)
    });
    assert!(msg.contains("unknown kernel"), "{msg}");
    assert!(msg.contains("copy_f32"), "lists the known kernels: {msg}");
    launch_error(unsafe { runner.launch("copy_f32\0", LaunchConfig::linear(1, 32), &args) });
}

#[test]
fn bad_launch_configs_are_errors() {
    let runner = EmuBackend::default();
    let (args, _bufs) = copy_args(&runner);
    let bad = [
        LaunchConfig::linear(0, 32),
        LaunchConfig::linear(1, 0),
        LaunchConfig::linear(1, 1025),
        LaunchConfig {
            grid: [1, 1, 1],
            block: [64, 32, 1],
            shared_bytes: 0,
        },
        LaunchConfig {
            grid: [1, 1, 1],
            block: [1, 1, 65],
            shared_bytes: 0,
        },
        LaunchConfig {
            grid: [1, 1, 65536],
            block: [32, 1, 1],
            shared_bytes: 0,
        },
        LaunchConfig::linear(1, 32).with_shared_bytes(MAX_SHARED_BYTES + 1),
    ];
    for cfg in bad {
        launch_error(unsafe { runner.launch("copy_f32", cfg, &args) });
    }
    // The largest legal dynamic shared memory and a 3-D block are fine.
    unsafe {
        runner.launch(
            "copy_f32",
            LaunchConfig {
                grid: [2, 2, 1],
                block: [8, 4, 2],
                shared_bytes: MAX_SHARED_BYTES,
            },
            &args,
        )
    }
    .unwrap();
}

#[test]
fn wrong_arguments_are_errors() {
    let runner = EmuBackend::default();
    let (args, bufs) = copy_args(&runner);
    let cfg = LaunchConfig::linear(1, 32);
    let msg = launch_error(unsafe { runner.launch("copy_f32", cfg, &args[..2]) });
    assert!(msg.contains("takes 3"), "{msg}");
    let mut four = args.clone();
    four.push(KernelArg::I32(0));
    launch_error(unsafe { runner.launch("copy_f32", cfg, &four) });

    // A host pointer that is not a buffer of the emulator.
    let stray = [0f32; 16];
    let mut bad = args.clone();
    bad[1] = KernelArg::Ptr(stray.as_ptr() as u64);
    let msg = launch_error(unsafe { runner.launch("copy_f32", cfg, &bad) });
    assert!(msg.contains("argument 1"), "{msg}");
    // Past the end of a live buffer.
    bad[1] = KernelArg::Ptr(bufs[1].ptr() + bufs[1].len_bytes() as u64 + 4);
    launch_error(unsafe { runner.launch("copy_f32", cfg, &bad) });

    // A freed buffer.
    let freed = runner.alloc(64).unwrap();
    let freed_ptr = freed.ptr();
    drop(freed);
    bad[1] = KernelArg::Ptr(freed_ptr);
    if unsafe { runner.launch("copy_f32", cfg, &bad) }.is_ok() {
        // Only possible if another test reused the address meanwhile.
        eprintln!("note: freed address was reused by a concurrent allocation");
    }

    // Argument sizes are checked against the PTX signature when nvcc built it.
    let mut narrow = args.clone();
    narrow[2] = KernelArg::U32(16);
    let result = unsafe { runner.launch("copy_f32", cfg, &narrow) };
    if parascan::ptx::PTX_BUILT {
        let msg = launch_error(result);
        assert!(msg.contains("argument 2"), "{msg}");
    }

    // The valid arguments still work after all that.
    unsafe { runner.launch("copy_f32", cfg, &args) }.unwrap();
}

#[test]
fn fiber_orders_have_names() {
    let names: Vec<String> = FiberOrder::ALL.iter().map(|o| o.to_string()).collect();
    assert_eq!(names, ["forward", "reverse", "shuffle"]);
}

/// The same copy checks through the CUDA runner: one orchestration for both
/// backends. Skips without a GPU, unless `REQUIRE_GPU=1`.
#[test]
fn cuda_runs_the_same_copies() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    assert_eq!(KernelRunner::backend_name(&cuda), "cuda");
    assert!(KernelRunner::sm_count(&cuda) > 0);
    check_all_copies(&cuda);

    // Errors are errors on CUDA too.
    let src = cuda.upload(&[1.0f32; 8]).unwrap();
    let dst = cuda.alloc(8 * F32).unwrap();
    let args = [
        KernelArg::from(&src),
        KernelArg::from(&dst),
        KernelArg::U64(8),
    ];
    assert!(matches!(
        unsafe { cuda.launch("no_such_kernel", LaunchConfig::linear(1, 32), &args) },
        Err(Error::Launch { .. })
    ));
    assert!(matches!(
        unsafe { cuda.launch("copy_f32", LaunchConfig::linear(1, 2048), &args) },
        Err(Error::Launch { .. })
    ));
    assert!(matches!(
        unsafe { cuda.launch("copy_f32", LaunchConfig::linear(1, 32), &args[..2]) },
        Err(Error::Launch { .. })
    ));
    // More than 48 KiB of dynamic shared memory needs the opt-in attribute.
    unsafe {
        cuda.launch(
            "copy_f32",
            LaunchConfig::linear(1, 32).with_shared_bytes(100 * 1024),
            &args,
        )
    }
    .unwrap();
    cuda.synchronize().unwrap();
    let mut out = [0f32; 8];
    cuda.download(&dst, &mut out).unwrap();
    assert_eq!(out, [1.0; 8]);

    // An emulator buffer is rejected, not dereferenced.
    let emu_buf = EmuBackend::default().alloc(16).unwrap();
    assert!(cuda.fill(&emu_buf, 0).is_err());
}
