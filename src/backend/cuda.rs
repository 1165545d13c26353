//! CUDA backend: cudarc (driver API, dynamically loaded) over the PTX that
//! `build.rs` compiled from `kernels/*.cu`.
//!
//! Opening the backend never panics. Each way it can be unusable becomes an
//! [`Error::BackendUnavailable`] with the reason in words:
//! - the crate was built without nvcc, so there is no PTX;
//! - the CUDA driver library (`libcuda.so`) is not installed;
//! - the driver finds no device, or not the requested one;
//! - the PTX targets a newer architecture than the device;
//! - context creation or module loading fails.
//!
//! The driver library is probed *before* any other cudarc call: with
//! `dynamic-loading`, cudarc resolves `libcuda` lazily and panics when it is
//! missing. As a last line of defence every driver interaction during
//! start-up also runs under [`std::panic::catch_unwind`], with the panic
//! message turned into the error instead of printed.

use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::error::{Error, Result};
use crate::ptx;

const BACKEND: &str = "cuda";

/// One PTX module of this build, loaded into the context on first use.
struct LazyModule {
    name: &'static str,
    text: &'static str,
    /// The module and whether it came from a prebuilt cubin.
    loaded: Mutex<Option<(Arc<CudaModule>, bool)>>,
}

/// The lock, even if a thread panicked while holding it (the slot holds
/// either nothing or a loaded module: never a half-written value).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Threads per block of the copy probe: a multiple of the warp size small
/// enough that eight blocks fit on one SM.
const COPY_BLOCK: u32 = 256;

/// A CUDA device with the project's kernels loaded.
///
/// Cheap to clone and to share between threads (`Send + Sync`): the
/// context, stream and loaded modules are reference counted, so a clone, or
/// [`on_stream`](Self::on_stream) for another stream of the same context,
/// never loads or JIT-compiles a module again.
#[derive(Clone)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Arc<[LazyModule]>,
    name: String,
    compute_capability: (i32, i32),
    sm_count: u32,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .field("sm_count", &self.sm_count)
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name).collect::<Vec<_>>(),
            )
            .field("prebuilt", &self.prebuilt_modules())
            .finish()
    }
}

impl CudaBackend {
    /// Opens device `ordinal` on a new stream of its primary context.
    /// Modules load on first use ([`load_all`](Self::load_all) loads them
    /// now).
    pub fn new(ordinal: usize) -> Result<Self> {
        ensure_loadable()?;
        guarded("opening the device", || {
            let count = CudaContext::device_count().map_err(|e| {
                unavailable(format!(
                    "the driver found no usable device ({})",
                    describe(e)
                ))
            })?;
            if count <= 0 {
                return Err(unavailable(
                    "the CUDA driver is installed but reports no device".into(),
                ));
            }
            if ordinal >= count as usize {
                return Err(unavailable(format!(
                    "device {ordinal} requested but only {count} device(s) present"
                )));
            }
            let ctx = CudaContext::new(ordinal).map_err(|e| {
                unavailable(format!(
                    "creating a context on device {ordinal} failed ({})",
                    describe(e)
                ))
            })?;
            let stream = ctx
                .new_stream()
                .map_err(|e| cuda_error("creating a stream", e))?;
            Self::with_stream(stream)
        })
    }

    /// Uses a stream the caller owns (and its context), e.g. the stream of a
    /// tensor library that shares cudarc (candle's
    /// `CudaDevice::cuda_stream()`), so scans run inside its model without
    /// extra synchronization: every launch and copy of this backend is
    /// queued on `stream`, in call order, after the work already on it.
    ///
    /// Ownership: the backend keeps the `Arc` (and so the stream and its
    /// context) alive while it or a clone exists. What stays the caller's:
    /// ordering with work on *other* streams (record an event and make
    /// `stream` wait on it), and synchronizing before reading results on
    /// the host outside parascan (parascan's own downloads synchronize).
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        ensure_loadable()?;
        guarded("loading kernels into the caller's context", || {
            Self::with_stream(stream)
        })
    }

    /// Borrows a raw `CUstream` owned by another library, e.g. cubecl /
    /// burn-cuda, which run on streams of the device's primary context.
    /// The stream is not destroyed when the backend is dropped; the
    /// primary context is retained (and released on drop) as by [`new`](Self::new).
    ///
    /// The same ordering rules as [`from_stream`](Self::from_stream): work
    /// is queued on `stream` in call order; ordering with other streams and
    /// host reads outside parascan are the caller's.
    ///
    /// # Safety
    /// `stream` must be a valid stream of device `ordinal`'s primary
    /// context (or null, the legacy default stream), and must outlive the
    /// returned backend, its clones and every buffer allocated through them.
    pub unsafe fn from_raw_stream(ordinal: usize, stream: sys::CUstream) -> Result<Self> {
        ensure_loadable()?;
        guarded("borrowing the caller's stream", || {
            let ctx = CudaContext::new(ordinal)
                .map_err(|e| unavailable(format!("device {ordinal}: {}", describe(e))))?;
            // SAFETY: the caller guarantees `stream` is a live stream of this
            // (primary) context that outlives everything built on it.
            let stream = unsafe { ctx.wrap_borrowed_stream(stream) };
            Self::with_stream(stream)
        })
    }

    fn with_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context().clone();
        let ordinal = ctx.ordinal();
        let name = ctx
            .name()
            .map_err(|e| cuda_error("querying the device name", e))?;
        let compute_capability = ctx
            .compute_capability()
            .map_err(|e| cuda_error("querying the compute capability", e))?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| cuda_error("querying the SM count", e))?;

        // PTX for a newer architecture cannot be JIT-compiled down; say so in
        // terms of the build setting instead of the driver's
        // "no binary for GPU".
        if let Some(needed) = arch_number(ptx::CUDA_ARCH) {
            let have = compute_capability.0 * 10 + compute_capability.1;
            if have < needed {
                return Err(unavailable(format!(
                    "device {ordinal} ({name}) is sm_{have} but the kernels were built for {}; \
                     rebuild with PARASCAN_CUDA_ARCH=sm_{have}",
                    ptx::CUDA_ARCH
                )));
            }
        }

        // Modules load on first use (see `module`): a model that runs one
        // family never JIT-compiles the others.
        let modules = ptx::MODULES
            .iter()
            .map(|&(name, text)| LazyModule {
                name,
                text,
                loaded: Mutex::new(None),
            })
            .collect();
        Ok(CudaBackend {
            ctx,
            stream,
            modules,
            name,
            compute_capability,
            sm_count: sm_count.max(1) as u32,
        })
    }

    /// The same device and loaded kernels on another stream of the same
    /// context (e.g. the stream a model runs on): no module is loaded again.
    /// Buffers belong to the stream that allocated them (see
    /// [`KernelRunner`](super::launch::KernelRunner)), so allocate anew on
    /// the returned backend.
    ///
    /// Errors: `stream` belongs to another context.
    pub fn on_stream(&self, stream: Arc<CudaStream>) -> Result<Self> {
        if stream.context() != &self.ctx {
            return Err(Error::BackendUnavailable {
                backend: BACKEND,
                reason: format!(
                    "the stream belongs to another CUDA context than device {} ({}) whose \
                     kernels are loaded; open a backend on that context with from_stream",
                    self.ctx.ordinal(),
                    self.name
                ),
            });
        }
        Ok(CudaBackend {
            stream,
            ..self.clone()
        })
    }

    /// The modules loaded so far from prebuilt device code
    /// ([`CUBIN_DIR_ENV`]) rather than JIT-compiled from PTX (modules load
    /// on first use; [`load_all`](Self::load_all) loads every one).
    pub fn prebuilt_modules(&self) -> Vec<&'static str> {
        self.modules
            .iter()
            .filter(|m| matches!(lock(&m.loaded).as_ref(), Some((_, true))))
            .map(|m| m.name)
            .collect()
    }

    /// The modules loaded so far (each `kernels/<name>.cu` loads on its
    /// first launch), in build order.
    pub fn loaded_modules(&self) -> Vec<&'static str> {
        self.modules
            .iter()
            .filter(|m| lock(&m.loaded).is_some())
            .map(|m| m.name)
            .collect()
    }

    /// Loads every module now (JIT-compiling the PTX of those without a
    /// prebuilt cubin), so that no later launch pays for it: call before
    /// timing, or to find a module the device cannot load at start-up.
    /// Clones and [`on_stream`](Self::on_stream) rebinds share the loaded
    /// modules.
    pub fn load_all(&self) -> Result<()> {
        for m in self.modules.iter() {
            self.module(m)?;
        }
        Ok(())
    }

    /// The module, loading it on first use (once per backend and its clones).
    fn module(&self, m: &LazyModule) -> Result<Arc<CudaModule>> {
        let mut loaded = lock(&m.loaded);
        if let Some((module, _)) = loaded.as_ref() {
            return Ok(module.clone());
        }
        let (major, minor) = self.compute_capability;
        let device_arch = format!("sm_{major}{minor}");
        // Prebuilt device code when it matches this build's PTX and this
        // device (no JIT); the PTX whenever that fails.
        let cubin = std::env::var_os(CUBIN_DIR_ENV)
            .map(PathBuf::from)
            .and_then(|dir| prebuilt_cubin(&dir, m.name, m.text, &device_arch))
            .and_then(|bin| self.ctx.load_module(Ptx::from_binary(bin)).ok());
        let (module, prebuilt) = match cubin {
            Some(module) => (module, true),
            None => {
                let module = guarded(&format!("loading PTX module `{}`", m.name), || {
                    self.ctx
                        .load_module(Ptx::from_src(m.text))
                        .map_err(|e| Error::Cuda {
                            context: format!(
                                "loading PTX module `{}` ({}, nvcc {}) on device {} ({})",
                                m.name,
                                ptx::CUDA_ARCH,
                                ptx::NVCC_VERSION,
                                self.ctx.ordinal(),
                                self.name
                            ),
                            message: describe(e),
                        })
                })?;
                (module, false)
            }
        };
        *loaded = Some((module.clone(), prebuilt));
        Ok(module)
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`, or
    /// `parascan emulated CUDA driver (H100 geometry: ...)` on the emulated
    /// driver.
    pub fn device_name(&self) -> String {
        self.name.clone()
    }

    /// Whether the device is the emulated CUDA driver
    /// (`scripts/emulated-driver.sh`): the CUDA code path runs for real, but
    /// on the CPU, so nothing measured on it is a GPU result.
    pub fn is_emulated(&self) -> bool {
        self.name.starts_with(EMULATED_DEVICE_PREFIX)
    }

    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Number of streaming multiprocessors (sizes grid-stride launches).
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// The context the kernels are loaded in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this backend goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Kernel `function` of the module built from `kernels/<module>.cu`.
    pub fn function(&self, module: &str, function: &str) -> Result<CudaFunction> {
        let m = self
            .modules
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| Error::Cuda {
                context: format!("looking up kernel `{function}`"),
                message: format!(
                    "no PTX module `{module}` in this build (modules: {})",
                    self.modules
                        .iter()
                        .map(|m| m.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        self.module(m)?.load_function(function).map_err(|e| {
            cuda_error(
                &format!("loading kernel `{function}` from module `{module}`"),
                e,
            )
        })
    }

    /// Device copy bandwidth in GB/s (1e9 bytes/s): the reference every
    /// scan's throughput is compared with.
    ///
    /// Copies `bytes` bytes (rounded down to whole f32) from one device
    /// buffer to another with `copy_f32`, after a warm-up, `reps` times, each
    /// timed with CUDA events; returns the median of
    /// `(bytes read + bytes written) / time`. Use a size several times the
    /// L2 cache (e.g. 256 MiB) to measure DRAM rather than cache.
    pub fn copy_bandwidth_gbs(&self, bytes: usize, reps: usize) -> Result<f64> {
        let n = bytes / std::mem::size_of::<f32>();
        if n == 0 {
            return Err(Error::size("bytes", bytes, "at least 4 (one f32)"));
        }
        if reps == 0 {
            return Err(Error::size("reps", reps, "at least 1"));
        }
        let func = self.function("copy", "copy_f32")?;
        let stream = &self.stream;
        let mut src = stream
            .alloc_zeros::<f32>(n)
            .map_err(|e| cuda_error("allocating the copy source", e))?;
        // A pattern the destination cannot hold by accident, checked at the
        // end: a probe that copied nothing would report any bandwidth.
        const PATTERN: u8 = 0x3F;
        {
            let (ptr, _record) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut src, stream);
            // SAFETY: `ptr` is the start of `src`, a live allocation of `n`
            // f32 (4n bytes) on this stream, which the borrow keeps alive
            // until the memset has been queued.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, PATTERN, n * 4, stream.cu_stream())
            }
            .map_err(|e| cuda_error("filling the copy source", e))?;
        }
        let mut dst = stream
            .alloc_zeros::<f32>(n)
            .map_err(|e| cuda_error("allocating the copy destination", e))?;

        // Enough resident threads to saturate memory (8 blocks of 256 per
        // SM), no more: the kernel strides over the rest.
        let vec_items = n.div_ceil(4);
        let blocks = vec_items
            .div_ceil(COPY_BLOCK as usize)
            .min(self.sm_count as usize * 8)
            .max(1);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (COPY_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let n_arg = n as u64;
        let launch = |dst: &mut cudarc::driver::CudaSlice<f32>| -> Result<()> {
            let mut builder = stream.launch_builder(&func);
            builder.arg(&src).arg(dst).arg(&n_arg);
            // SAFETY: `copy_f32(const float*, float*, unsigned long long n)`
            // receives two f32 buffers of exactly `n` elements and `n` as
            // u64, matching its signature; it only touches indices < n.
            unsafe { builder.launch(cfg) }
                .map(|_| ())
                .map_err(|e| cuda_error("launching copy_f32", e))
        };

        for _ in 0..3 {
            launch(&mut dst)?;
        }
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut events = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = stream
                .record_event(timing)
                .map_err(|e| cuda_error("recording an event", e))?;
            launch(&mut dst)?;
            let end = stream
                .record_event(timing)
                .map_err(|e| cuda_error("recording an event", e))?;
            events.push((start, end));
        }
        stream
            .synchronize()
            .map_err(|e| cuda_error("running copy_f32", e))?;
        let moved = 2.0 * (n * std::mem::size_of::<f32>()) as f64;
        let mut rates = Vec::with_capacity(reps);
        for (start, end) in &events {
            let ms = start
                .elapsed_ms(end)
                .map_err(|e| cuda_error("reading event times", e))?;
            // A zero interval would give infinity; the event clock resolves
            // about half a microsecond, so clamp to that.
            let secs = (f64::from(ms) * 1e-3).max(5e-7);
            rates.push(moved / secs / 1e9);
        }
        let copied = stream
            .clone_dtoh(&dst.slice(n - 1..))
            .map_err(|e| cuda_error("reading back the copy", e))?;
        if copied[0].to_bits() != u32::from_ne_bytes([PATTERN; 4]) {
            return Err(Error::Cuda {
                context: "checking the copy probe".into(),
                message: format!(
                    "copy_f32 left {:?} in the last element instead of the source's bytes",
                    copied[0]
                ),
            });
        }
        Ok(median(&mut rates))
    }
}

/// How the emulated CUDA driver's device name begins
/// ([`CudaBackend::is_emulated`]).
pub const EMULATED_DEVICE_PREFIX: &str = "parascan emulated CUDA driver";

/// Environment variable naming a folder of device code compiled ahead of
/// time from this build's PTX (`scripts/device-bundle.sh` makes one):
/// `<module>.<sm_XY>.cubin`, used for a device of compute capability X.Y
/// only when `<module>.<sm_XY>.ptx-fnv` holds [`ptx_fingerprint`] of the
/// PTX this binary embeds. Loading a cubin skips the driver's JIT
/// compilation of the PTX, about a minute for all modules; a missing,
/// stale or unloadable cubin falls back to the PTX.
pub const CUBIN_DIR_ENV: &str = "PARASCAN_CUBIN_DIR";

/// FNV-1a (64 bit) of a module's PTX text, as 16 lowercase hex digits: the
/// key that ties a prebuilt cubin to the PTX it was compiled from.
pub fn ptx_fingerprint(ptx: &str) -> String {
    let h = ptx.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// The prebuilt cubin of `module` for `arch` in `dir`, if its fingerprint
/// file matches `ptx`.
fn prebuilt_cubin(dir: &Path, module: &str, ptx: &str, arch: &str) -> Option<Vec<u8>> {
    let key = std::fs::read_to_string(dir.join(format!("{module}.{arch}.ptx-fnv"))).ok()?;
    if key.trim() != ptx_fingerprint(ptx) {
        return None;
    }
    std::fs::read(dir.join(format!("{module}.{arch}.cubin"))).ok()
}

/// One line for `parascan info`: what PTX this build has and what the
/// driver says, e.g. `PTX built for sm_90 with nvcc 13.0.88 (1 module(s));
/// driver 13.0; device 0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)`.
pub fn cuda_status() -> String {
    let ptx_part = if ptx::PTX_BUILT {
        format!(
            "PTX built for {} with nvcc {} ({} module(s))",
            ptx::CUDA_ARCH,
            ptx::NVCC_VERSION,
            ptx::MODULES.len()
        )
    } else {
        "no PTX (nvcc was not found at build time; run scripts/install-cuda-toolchain.sh and rebuild)"
            .to_string()
    };
    if !driver_library_present() {
        return format!("{ptx_part}; CUDA driver library (libcuda.so) not found");
    }
    let driver = driver_version()
        .map(|v| format!("driver {v}"))
        .unwrap_or_else(|| "driver library present".to_string());
    if !ptx::PTX_BUILT {
        return match quietly(CudaContext::device_count) {
            Ok(Ok(n)) => format!("{ptx_part}; {driver}, {n} device(s)"),
            Ok(Err(e)) => format!("{ptx_part}; {driver}, no usable device ({})", describe(e)),
            Err(_) => format!("{ptx_part}; {driver}, but the library is unusable"),
        };
    }
    // Every module loads here (on first use otherwise), so `info` shows
    // whether the device takes them all.
    match CudaBackend::new(0).and_then(|dev| dev.load_all().map(|()| dev)) {
        Ok(dev) => {
            let (major, minor) = dev.compute_capability();
            let prebuilt = match dev.prebuilt_modules().len() {
                0 => String::new(),
                n => format!("; {n} module(s) from prebuilt cubins"),
            };
            format!(
                "{ptx_part}; {driver}; device 0: {} (sm_{major}{minor}, {} SMs){prebuilt}",
                dev.device_name(),
                dev.sm_count()
            )
        }
        Err(Error::BackendUnavailable { reason, .. }) => format!("{ptx_part}; {driver}; {reason}"),
        Err(e) => format!("{ptx_part}; {driver}; {e}"),
    }
}

/// Whether the CUDA driver library can be loaded. Cached: the answer cannot
/// change during a run, and loading a library is not free.
pub fn driver_library_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // Asking the version loads the library under `dynamic-loading` (a
        // missing library is a panic, caught here) and is a plain call
        // under the other linking modes, where the library is linked in.
        // It needs no `cuInit`.
        quietly(|| {
            let mut version: std::ffi::c_int = 0;
            // SAFETY: cuDriverGetVersion writes one int through the valid
            // pointer; loading libcuda runs only the initializers every CUDA
            // program runs.
            unsafe { sys::cuDriverGetVersion(&mut version) }
        })
        .is_ok()
    })
}

/// Driver API version as `major.minor`, e.g. `13.0`.
fn driver_version() -> Option<String> {
    if !driver_library_present() {
        return None;
    }
    quietly(|| {
        let mut version: std::ffi::c_int = 0;
        // SAFETY: the driver library is present (checked above), and
        // cuDriverGetVersion only writes one int through the valid pointer
        // it is given; it needs no cuInit.
        let status = unsafe { sys::cuDriverGetVersion(&mut version) };
        (status == sys::CUresult::CUDA_SUCCESS)
            .then(|| format!("{}.{}", version / 1000, (version % 1000) / 10))
    })
    .ok()
    .flatten()
}

/// The checks that must pass before any cudarc driver call.
fn ensure_loadable() -> Result<()> {
    if !ptx::PTX_BUILT {
        return Err(unavailable(
            "this build has no PTX kernels (nvcc was not found at build time; \
             run scripts/install-cuda-toolchain.sh and rebuild)"
                .into(),
        ));
    }
    if !driver_library_present() {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) is not installed or not on the loader path"
                .into(),
        ));
    }
    Ok(())
}

/// Runs driver code, turning a cudarc panic (e.g. a symbol missing from an
/// old driver) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match quietly(f) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(unavailable(format!(
                "the CUDA driver failed while {what}: {msg}"
            )))
        }
    }
}

thread_local! {
    /// Set while this thread runs driver code under [`quietly`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// `catch_unwind` that also keeps the panic hook from printing: a missing
/// driver is an expected condition here, reported through the error, and a
/// backtrace on stderr would read like a crash. Only panics on this thread
/// inside `f` are silenced; every other panic goes to the previous hook.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    result
}

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable {
        backend: BACKEND,
        reason,
    }
}

fn cuda_error(context: &str, e: DriverError) -> Error {
    Error::Cuda {
        context: context.to_string(),
        message: describe(e),
    }
}

/// `CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected`.
fn describe(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned());
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned());
    match (name, text) {
        (Ok(name), Ok(text)) => format!("{name}: {text}"),
        _ => format!("{:?}", e.0),
    }
}

/// `sm_90` / `sm_90a` / `compute_90` -> 90.
fn arch_number(arch: &str) -> Option<i32> {
    let digits: String = arch
        .trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        0.5 * (values[mid - 1] + values[mid])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_numbers() {
        assert_eq!(arch_number("sm_90"), Some(90));
        assert_eq!(arch_number("sm_90a"), Some(90));
        assert_eq!(arch_number("compute_80"), Some(80));
        assert_eq!(arch_number("gfx90a"), None);
    }

    #[test]
    fn prebuilt_cubins_need_the_matching_fingerprint() {
        assert_eq!(ptx_fingerprint(""), "cbf29ce484222325");
        assert_eq!(ptx_fingerprint("a"), "af63dc4c8601ec8c");
        let dir = std::env::temp_dir().join(format!("parascan-cubin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ptx = ".version 9.0\n.target sm_90\n";
        std::fs::write(dir.join("m.sm_90.cubin"), b"\x7fELF").unwrap();
        assert_eq!(
            prebuilt_cubin(&dir, "m", ptx, "sm_90"),
            None,
            "no fingerprint"
        );
        std::fs::write(dir.join("m.sm_90.ptx-fnv"), "0000000000000000\n").unwrap();
        assert_eq!(prebuilt_cubin(&dir, "m", ptx, "sm_90"), None, "stale");
        std::fs::write(dir.join("m.sm_90.ptx-fnv"), ptx_fingerprint(ptx) + "\n").unwrap();
        assert_eq!(
            prebuilt_cubin(&dir, "m", ptx, "sm_90").as_deref(),
            Some(&b"\x7fELF"[..])
        );
        assert_eq!(prebuilt_cubin(&dir, "m", ptx, "sm_80"), None, "other arch");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    /// Without a GPU this must be an error, never a panic; with one it must
    /// open and measure a positive bandwidth.
    #[test]
    fn open_never_panics() {
        match CudaBackend::new(0) {
            Ok(dev) => {
                assert!(!dev.device_name().is_empty());
                let gbs = dev.copy_bandwidth_gbs(1 << 24, 5).expect("copy probe runs");
                assert!(gbs.is_finite() && gbs > 0.0, "bandwidth {gbs}");
            }
            Err(Error::BackendUnavailable { backend, reason }) => {
                assert_eq!(backend, "cuda");
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("unexpected error kind: {other}"),
        }
        assert!(!cuda_status().is_empty());
    }
}
