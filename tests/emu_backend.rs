//! The launch abstraction (`KernelRunner`) on the emulated-kernel backend,
//! with `kernels/copy.cu`, and the same checks on CUDA when a GPU is present.

// SAFETY (every `unsafe` launch in this file): the raw-address entry points
// and `KernelRunner::launch` get buffers the test allocated on the same
// runner with at least the sizes the kernel's contract needs, or deliberately
// bad arguments that the call must reject before any kernel runs (the
// emulator additionally checks every pointer against its live buffers).

#[path = "common/gpu.rs"]
mod gpu;

use parascan::backend::emu::{EmuBackend, FiberOrder, GuardPlacement};
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
        // One end against its guard page; the start keeps the alignment the
        // length allows (up to 16 bytes).
        match runner.guard() {
            GuardPlacement::End => {
                assert_eq!((buf.ptr() + bytes as u64) % 4096, 0, "{buf:?}");
                let align = [16usize, 8, 4, 2, 1]
                    .into_iter()
                    .find(|a| bytes % a == 0)
                    .unwrap();
                assert_eq!(buf.ptr() % align as u64, 0, "{buf:?}");
            }
            GuardPlacement::Start => assert_eq!(buf.ptr() % 4096, 0, "{buf:?}"),
        }
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

/// The illegal address of a launch that must fail with one.
fn illegal_address(result: parascan::Result<()>) -> (u64, i64, String) {
    match result {
        Err(Error::IllegalAddress {
            backend,
            kernel,
            address,
            distance,
            message,
        }) => {
            assert_eq!(backend, "emu");
            assert_eq!(kernel, "copy_f32");
            let distance = distance.expect("a buffer is live");
            (address, distance, message)
        }
        Err(other) => panic!("expected Error::IllegalAddress, got {other}"),
        Ok(()) => panic!("expected Error::IllegalAddress, the launch succeeded"),
    }
}

/// `copy_f32` of `n` floats into a fresh buffer gives the source back (the
/// runner works).
fn copy_works(runner: &EmuBackend, n: usize) {
    let host: Vec<f32> = (0..n).map(|i| i as f32 - 3.5).collect();
    let src = runner.upload(&host).unwrap();
    let dst = runner.alloc(n * F32).unwrap();
    let args = [
        KernelArg::from(&src),
        KernelArg::from(&dst),
        KernelArg::from(n as u64),
    ];
    unsafe { runner.launch("copy_f32", LaunchConfig::linear(3, 64), &args) }.unwrap();
    let mut back = vec![0f32; n];
    runner.download(&dst, &mut back).unwrap();
    assert_eq!(back, host);
}

/// A kernel that stores one element past its destination touches the guard
/// page: the launch returns `Error::IllegalAddress` with the address's
/// distance from the destination's end, in both guard placements, and the
/// runner keeps working. One thread copies in order, so the first faulting
/// store is known: at the end itself (end placement) or at the next page
/// boundary (start placement: 1000 floats leave the rest of the page).
#[test]
fn a_store_past_the_end_is_a_typed_illegal_address() {
    let n = 1000usize;
    for guard in [GuardPlacement::End, GuardPlacement::Start] {
        let runner = EmuBackend::forward().with_workers(1).with_guard(guard);
        let src = runner.upload(&vec![1.25f32; n + 64]).unwrap();
        let dst = runner.alloc(n * F32).unwrap();
        let args = [
            KernelArg::from(&src),
            KernelArg::from(&dst),
            KernelArg::from((n + 64) as u64),
        ];
        let (address, distance, message) = illegal_address(unsafe {
            runner.launch("copy_f32", LaunchConfig::linear(1, 1), &args)
        });
        let end = dst.ptr() + (n * F32) as u64;
        assert_eq!(address, end + distance as u64, "{guard:?}: {message}");
        match guard {
            GuardPlacement::End => assert_eq!(distance, 0, "{message}"),
            GuardPlacement::Start => {
                assert_eq!(address % 4096, 0, "{message}");
                assert!(distance > 0 && distance < 64 * F32 as i64, "{message}");
            }
        }
        assert!(
            message.contains("bytes past the end of the device buffer"),
            "{message}"
        );
        #[cfg(target_arch = "x86_64")]
        assert!(message.contains("a store at"), "{message}");
        copy_works(&runner, n);
    }
}

/// The same for a load: the source is one page of floats (its end touches
/// the guard page in both placements), the count one element more.
#[test]
fn a_load_past_the_end_is_a_typed_illegal_address() {
    let n = 1024usize;
    for guard in [GuardPlacement::End, GuardPlacement::Start] {
        let runner = EmuBackend::reverse().with_workers(1).with_guard(guard);
        let src = runner.upload(&vec![0.5f32; n]).unwrap();
        let dst = runner.alloc((n + 1) * F32).unwrap();
        let args = [
            KernelArg::from(&src),
            KernelArg::from(&dst),
            KernelArg::from((n + 1) as u64),
        ];
        let (address, distance, message) = illegal_address(unsafe {
            runner.launch("copy_f32", LaunchConfig::linear(1, 1), &args)
        });
        assert_eq!(distance, 0, "{guard:?}: {message}");
        assert_eq!(address, src.ptr() + (n * F32) as u64, "{message}");
        #[cfg(target_arch = "x86_64")]
        assert!(message.contains("a load at"), "{message}");
        copy_works(&runner, n);
    }
}

/// Many faulting launches in a row, on several workers at once and under
/// every fiber order, leave the emulator usable (no leaked state, no stuck
/// signal mask): every faulting launch is reported, every good one copies.
#[test]
fn faulting_launches_leave_the_emulator_usable() {
    for base in runners() {
        let runner = base.with_workers(3);
        for round in 0..8 {
            let n = 1000 + 16 * round;
            let src = runner.upload(&vec![2.0f32; n + 1100]).unwrap();
            let dst = runner.alloc(n * F32).unwrap();
            let args = [
                KernelArg::from(&src),
                KernelArg::from(&dst),
                KernelArg::from((n + 1100) as u64),
            ];
            let (address, distance, message) = illegal_address(unsafe {
                runner.launch("copy_f32", LaunchConfig::linear(6, 64), &args)
            });
            assert!(distance >= 0, "{message}");
            assert_eq!(
                address,
                dst.ptr() + (n * F32) as u64 + distance as u64,
                "{message}"
            );
            copy_works(&runner, n);
        }
    }
}

/// The weak-memory mode: a payload stored with `__stcg` and published by a
/// flag without a fence in between is not yet visible to the block that sees
/// the flag (it reads the poisoned previous contents); with the fence it is.
/// Either way the store has landed when the kernel ends.
#[test]
fn an_unfenced_publish_reads_stale_data() {
    let weak = std::env::var("PS_EMU_WEAK_MEMORY").map_or(true, |v| v != "0");
    for base in runners() {
        for workers in [1, 2] {
            let runner = base.with_workers(workers);
            for fenced in [1, 0] {
                let payload = runner.alloc(F32).unwrap();
                let flag = runner.upload(&[0u32]).unwrap();
                let out = runner.alloc(F32).unwrap();
                let args = [
                    KernelArg::from(&payload),
                    KernelArg::from(&flag),
                    KernelArg::from(&out),
                    KernelArg::F32(42.5),
                    KernelArg::I32(fenced),
                ];
                unsafe { runner.launch("publish_probe_f32", LaunchConfig::linear(2, 1), &args) }
                    .unwrap();
                let mut seen = [0u32];
                runner.download(&out, &mut seen).unwrap();
                let mut landed = [0f32];
                runner.download(&payload, &mut landed).unwrap();
                assert_eq!(landed[0], 42.5, "{runner:?}");
                if fenced == 1 || !weak {
                    assert_eq!(f32::from_bits(seen[0]), 42.5, "{runner:?} fenced={fenced}");
                } else {
                    assert_eq!(
                        seen[0], POISON,
                        "{runner:?}: the unfenced payload was visible"
                    );
                }
            }
        }
    }
}
