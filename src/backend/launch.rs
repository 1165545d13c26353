//! The kernel-launch abstraction shared by the CUDA and the emulated backend.
//!
//! A scan is planned once, in Rust, as a sequence of kernel launches over
//! device buffers. [`KernelRunner`] is the small interface that sequence
//! needs (allocate, copy, poison, launch by name, synchronize), so the same
//! orchestration code drives
//! - `CudaBackend` (feature `cuda`): the GPU, through the CUDA driver API, with the PTX that
//!   `build.rs` compiled from `kernels/*.cu`;
//! - [`EmuBackend`](super::emu::EmuBackend): the same `kernels/*.cu` compiled
//!   for the CPU by the host C++ compiler, run by the SIMT emulator, so that
//!   every CI run executes the real kernel code without a GPU.
//!
//! Kernel arguments are passed the way the driver API's `cuLaunchKernel`
//! takes them: one value per kernel parameter, in order, of exactly the
//! parameter's C type ([`KernelArg`]). Pointers are device addresses
//! ([`DeviceBuffer::ptr`], plus a byte offset for a sub-range): a
//! `CUdeviceptr` on the GPU, a host address in the emulator.
//!
//! Both runners check what they can before a launch: the configuration
//! against CUDA's limits ([`LaunchConfig::validate`]), that the kernel exists,
//! the number of arguments, and (when this build has PTX) each argument's
//! size against the kernel's PTX signature. The emulator also checks that
//! every non-null pointer argument lies inside one of its live buffers.
//! What no runner can check is that the kernel stays inside the buffers it
//! is given: that is the kernel's contract, as on the GPU.

use std::collections::HashMap;
use std::fmt;
#[cfg(feature = "cuda")]
use std::sync::Arc;
use std::sync::OnceLock;

#[cfg(feature = "cuda")]
use cudarc::driver::{
    result as cu_result, sys, CudaSlice, CudaStream, DriverError, LaunchConfig as CuLaunchConfig,
    PushKernelArg,
};

#[cfg(feature = "cuda")]
use super::cuda::CudaBackend;
use super::emu::HostMemory;
use crate::error::{Error, Result};
use crate::ptx;

/// Most threads in one block (CUDA, every architecture since sm_20).
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Largest `block[0]` and `block[1]`.
pub const MAX_BLOCK_DIM_XY: u32 = 1024;
/// Largest `block[2]`.
pub const MAX_BLOCK_DIM_Z: u32 = 64;
/// Largest `grid[0]`.
pub const MAX_GRID_DIM_X: u32 = i32::MAX as u32;
/// Largest `grid[1]` and `grid[2]`.
pub const MAX_GRID_DIM_YZ: u32 = 65535;
/// Most dynamic shared memory per block on sm_90 (227 KiB, with the opt-in
/// attribute that the CUDA runner sets when a launch needs more than 48 KiB).
pub const MAX_SHARED_BYTES: u32 = 227 * 1024;
/// Dynamic shared memory a kernel may use without opting in.
pub const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// A kernel argument passed by value, as the driver API's `void** kernelParams` expects.
///
/// The variant must match the kernel parameter's C type exactly: `Ptr` for
/// any pointer, `I32` for `int`, `U32` for `unsigned`, `I64` for
/// `long long`, `U64` for `unsigned long long` / `size_t`, `F32` for
/// `float`, `F64` for `double`.
#[derive(Clone, Copy, Debug)]
pub enum KernelArg {
    /// A device address (`CUdeviceptr` on CUDA, a host address in the
    /// emulator), e.g. [`DeviceBuffer::ptr`]; 0 is a null pointer.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `long long`.
    I64(i64),
    /// `unsigned long long` (and `size_t` on 64-bit targets).
    U64(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
}

impl KernelArg {
    /// Size of the value in bytes (the size of the matching C parameter).
    pub fn size_bytes(&self) -> usize {
        match self {
            KernelArg::I32(_) | KernelArg::U32(_) | KernelArg::F32(_) => 4,
            KernelArg::Ptr(_) | KernelArg::I64(_) | KernelArg::U64(_) | KernelArg::F64(_) => 8,
        }
    }

    /// The value in the first [`size_bytes`](Self::size_bytes) bytes (native
    /// byte order) of a zeroed 8-byte slot. Every argument gets such a slot,
    /// so a kernel that reads a wider parameter than it was given reads
    /// zeros inside the slot rather than past it.
    fn slot(&self) -> u64 {
        let mut bytes = [0u8; 8];
        match *self {
            KernelArg::Ptr(v) | KernelArg::U64(v) => bytes = v.to_ne_bytes(),
            KernelArg::I64(v) => bytes = v.to_ne_bytes(),
            KernelArg::F64(v) => bytes = v.to_ne_bytes(),
            KernelArg::I32(v) => bytes[..4].copy_from_slice(&v.to_ne_bytes()),
            KernelArg::U32(v) => bytes[..4].copy_from_slice(&v.to_ne_bytes()),
            KernelArg::F32(v) => bytes[..4].copy_from_slice(&v.to_ne_bytes()),
        }
        u64::from_ne_bytes(bytes)
    }
}

impl From<&DeviceBuffer> for KernelArg {
    /// The buffer's start address.
    fn from(buf: &DeviceBuffer) -> Self {
        KernelArg::Ptr(buf.ptr())
    }
}

macro_rules! kernel_arg_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for KernelArg {
            fn from(v: $t) -> Self {
                KernelArg::$variant(v)
            }
        })*
    };
}
kernel_arg_from!(i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64);

/// The zeroed 8-byte argument slots of a launch (see [`KernelArg::slot`]).
pub(crate) fn arg_slots(args: &[KernelArg]) -> Vec<u64> {
    args.iter().map(KernelArg::slot).collect()
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A one-dimensional launch: `grid` blocks of `block` threads, no dynamic
    /// shared memory.
    pub fn linear(grid: u32, block: u32) -> Self {
        LaunchConfig {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_bytes: 0,
        }
    }

    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_shared_bytes(self, bytes: u32) -> Self {
        LaunchConfig {
            shared_bytes: bytes,
            ..self
        }
    }

    /// Threads per block (saturating, so an invalid configuration still
    /// gives a number to report).
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| u64::from(d)).product()
    }

    /// Number of blocks in the grid.
    pub fn num_blocks(&self) -> u64 {
        self.grid.iter().map(|&d| u64::from(d)).product()
    }

    /// Checks the configuration against CUDA's limits (sm_90): every
    /// dimension nonzero, `block` ≤ (1024, 1024, 64) and at most 1024
    /// threads, `grid` ≤ (2³¹−1, 65535, 65535), dynamic shared memory
    /// ≤ 227 KiB. Returns what is wrong, in words.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [gx, gy, gz] = self.grid;
        let [bx, by, bz] = self.block;
        if self.grid.contains(&0) || self.block.contains(&0) {
            return Err(format!(
                "grid ({gx}, {gy}, {gz}) and block ({bx}, {by}, {bz}) must have no zero dimension"
            ));
        }
        if bx > MAX_BLOCK_DIM_XY || by > MAX_BLOCK_DIM_XY || bz > MAX_BLOCK_DIM_Z {
            return Err(format!(
                "block ({bx}, {by}, {bz}) exceeds CUDA's per-dimension limits \
                 ({MAX_BLOCK_DIM_XY}, {MAX_BLOCK_DIM_XY}, {MAX_BLOCK_DIM_Z})"
            ));
        }
        let threads = self.threads_per_block();
        if threads > u64::from(MAX_THREADS_PER_BLOCK) {
            return Err(format!(
                "block ({bx}, {by}, {bz}) has {threads} threads; at most {MAX_THREADS_PER_BLOCK} allowed"
            ));
        }
        if gx > MAX_GRID_DIM_X || gy > MAX_GRID_DIM_YZ || gz > MAX_GRID_DIM_YZ {
            return Err(format!(
                "grid ({gx}, {gy}, {gz}) exceeds CUDA's limits \
                 ({MAX_GRID_DIM_X}, {MAX_GRID_DIM_YZ}, {MAX_GRID_DIM_YZ})"
            ));
        }
        if self.shared_bytes > MAX_SHARED_BYTES {
            return Err(format!(
                "{} bytes of dynamic shared memory requested; at most {MAX_SHARED_BYTES} (227 KiB) per block",
                self.shared_bytes
            ));
        }
        Ok(())
    }
}

/// Device memory owned by a runner (host memory for the emulator, a `CudaSlice<u8>` for CUDA).
///
/// Freed when dropped (on CUDA, stream-ordered after the work already
/// queued). Use a buffer only with the runner that allocated it (on CUDA:
/// the same stream; copies and fills reject others). Emulator buffers work
/// with every [`EmuBackend`](super::emu::EmuBackend).
pub struct DeviceBuffer {
    ptr: u64,
    len: usize,
    memory: Memory,
}

/// What backs a [`DeviceBuffer`].
enum Memory {
    /// A guarded host mapping of the emulator (`ps_emu_alloc`).
    Host(HostMemory),
    /// Device memory; at least one byte even for an empty buffer (the driver
    /// rejects empty allocations).
    #[cfg(feature = "cuda")]
    Cuda(CudaSlice<u8>),
}

impl DeviceBuffer {
    /// The start address, for [`KernelArg::Ptr`]: a `CUdeviceptr` on CUDA,
    /// a host address in the emulator (one end of the buffer against a guard
    /// page). Add a byte offset for a sub-range.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes, as requested.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name of the backend that owns it (`"cuda"` or `"emu"`).
    pub fn backend_name(&self) -> &'static str {
        match self.memory {
            Memory::Host(_) => super::emu::BACKEND,
            #[cfg(feature = "cuda")]
            Memory::Cuda(_) => CUDA,
        }
    }

    pub(crate) fn from_host(memory: HostMemory, len: usize) -> Self {
        DeviceBuffer {
            ptr: memory.addr(),
            len,
            memory: Memory::Host(memory),
        }
    }

    #[cfg(feature = "cuda")]
    fn from_cuda(slice: CudaSlice<u8>, len: usize, stream: &CudaStream) -> Self {
        // A CudaSlice's address does not change; read it once. (The guard
        // only records an event for cudarc's multi-stream tracking.)
        let ptr = {
            let (ptr, _guard) = cudarc::driver::DevicePtr::device_ptr(&slice, stream);
            ptr
        };
        DeviceBuffer {
            ptr,
            len,
            memory: Memory::Cuda(slice),
        }
    }

    /// The emulator's allocation, or an error naming the actual owner.
    pub(crate) fn host_memory(&self, runner: &'static str) -> Result<&HostMemory> {
        // Without the `cuda` feature every buffer is the emulator's.
        #[cfg(not(feature = "cuda"))]
        let _ = runner;
        match &self.memory {
            Memory::Host(m) => Ok(m),
            #[cfg(feature = "cuda")]
            Memory::Cuda(_) => Err(self.wrong_backend(runner)),
        }
    }

    /// The device allocation, if it was made on `stream`. Launches pass raw
    /// addresses, which cudarc's cross-stream tracking cannot see, so a
    /// buffer is only used on the stream of the runner that allocated it.
    #[cfg(feature = "cuda")]
    fn cuda_slice(&self, stream: &Arc<CudaStream>) -> Result<&CudaSlice<u8>> {
        match &self.memory {
            Memory::Cuda(s) if Arc::ptr_eq(s.stream(), stream) => Ok(s),
            Memory::Cuda(_) => Err(Error::BackendUnavailable {
                backend: CUDA,
                reason: "the buffer was allocated by a CUDA runner on another stream".into(),
            }),
            Memory::Host(_) => Err(self.wrong_backend(CUDA)),
        }
    }

    #[cfg(feature = "cuda")]
    fn wrong_backend(&self, runner: &'static str) -> Error {
        Error::BackendUnavailable {
            backend: runner,
            reason: format!(
                "a buffer allocated by the {} backend was passed to the {runner} backend",
                self.backend_name()
            ),
        }
    }

    /// Checks that `host` has exactly this buffer's size, for a download.
    pub(crate) fn check_host_len<T: bytemuck::Pod>(&self, host: &[T]) -> Result<()> {
        let elem = std::mem::size_of::<T>();
        if elem == 0 || self.len % elem != 0 {
            return Err(Error::size(
                "host",
                elem,
                format!(
                    "an element size that divides the device buffer's {} bytes",
                    self.len
                ),
            ));
        }
        let expected = self.len / elem;
        if host.len() != expected {
            return Err(Error::shape(
                "host",
                format!("device buffer of {} bytes", self.len),
                expected,
                host.len(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("backend", &self.backend_name())
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len_bytes", &self.len)
            .finish()
    }
}

/// The operations a launch sequence needs, implemented by every backend that
/// runs `kernels/*.cu`.
///
/// Work is ordered: every call acts after the calls made before it on the
/// same runner. The CUDA runner queues allocations, copies, fills and
/// launches on its stream (a download returns when its data is on the
/// host); the emulator runs each call to completion before returning.
pub trait KernelRunner {
    /// `"cuda"` or `"emu"`.
    fn backend_name(&self) -> &'static str;

    /// A buffer of `bytes` bytes; contents unspecified (the emulator fills
    /// new buffers with `0xFF` bytes so that reading them shows up as NaN).
    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer>;

    /// A new buffer holding a copy of `host`.
    fn upload<T: bytemuck::Pod>(&self, host: &[T]) -> Result<DeviceBuffer>;

    /// Copies the whole buffer into `host`, whose size in bytes must equal
    /// the buffer's.
    fn download<T: bytemuck::Pod>(&self, buf: &DeviceBuffer, host: &mut [T]) -> Result<()>;

    /// Sets every byte of `buf` to `byte` (poison with `0xFF`: NaN for
    /// f32/f64/f16/bf16, -1 for integers).
    fn fill(&self, buf: &DeviceBuffer, byte: u8) -> Result<()>;

    /// Launches kernel `kernel` (an `extern "C"` name from `kernels/*.cu`)
    /// with `args`, one per kernel parameter. Validates `cfg` (nonzero
    /// dimensions, at most 1024 threads per block, dynamic shared memory at
    /// most 227 KiB), the kernel's existence and the argument count, and
    /// argument sizes where the PTX signature is known; every violation is
    /// an [`Error::Launch`], never a panic.
    ///
    /// # Safety
    /// The pointers in `args` must address live buffers of this runner large
    /// enough for what the kernel accesses given the other arguments: the
    /// kernel's contract, which no runner can check (on the GPU a violation
    /// is a device fault; in the emulator it corrupts host memory). The
    /// safe entry points are `kernels::launch_scan_buffers`.
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()>;

    /// Waits until all work queued on this runner is done.
    fn synchronize(&self) -> Result<()>;

    /// Number of streaming multiprocessors (planner input); the emulator reports its worker count.
    fn sm_count(&self) -> usize;

    /// Seconds each of `reps` runs of `work` took, where `work` only queues
    /// work on this runner (launches, copies, fills; no synchronize).
    ///
    /// Waits for earlier work first. The CUDA runner records an event before
    /// and after every run on its stream and synchronizes once at the end,
    /// so the times are device times without host round trips; the default
    /// (the emulator, whose calls run to completion) times each run with the
    /// wall clock, plus a `synchronize`.
    fn device_times(&self, reps: usize, work: &mut dyn FnMut() -> Result<()>) -> Result<Vec<f64>> {
        self.synchronize()?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let start = std::time::Instant::now();
            work()?;
            self.synchronize()?;
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

// ---------------------------------------------------------------------------
// Kernel signatures from the PTX of this build
// ---------------------------------------------------------------------------

/// A kernel as declared in this build's PTX.
#[derive(Debug)]
pub(crate) struct PtxKernel {
    /// The `kernels/<module>.cu` file it comes from.
    pub(crate) module: &'static str,
    /// Size in bytes of each parameter (`None` for a type the parser does
    /// not know).
    pub(crate) param_sizes: Vec<Option<usize>>,
}

/// Every `.entry` of [`ptx::MODULES`] by name; a name defined in two modules
/// maps to an error (kernel names must be unique across `kernels/*.cu`).
fn ptx_kernels() -> &'static HashMap<&'static str, std::result::Result<PtxKernel, String>> {
    static INDEX: OnceLock<HashMap<&'static str, std::result::Result<PtxKernel, String>>> =
        OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: HashMap<&'static str, std::result::Result<PtxKernel, String>> =
            HashMap::new();
        for &(module, text) in ptx::MODULES {
            for (name, param_sizes) in parse_ptx_entries(text) {
                match index.get_mut(name) {
                    None => {
                        index.insert(
                            name,
                            Ok(PtxKernel {
                                module,
                                param_sizes,
                            }),
                        );
                    }
                    Some(existing) => {
                        if let Ok(first) = existing {
                            *existing = Err(format!(
                                "defined in both kernels/{}.cu and kernels/{module}.cu",
                                first.module
                            ));
                        }
                    }
                }
            }
        }
        index
    })
}

/// Names of every kernel (`.entry`) in this build's PTX, sorted; empty when
/// nvcc was not found at build time.
pub fn ptx_kernel_names() -> Vec<&'static str> {
    if !ptx::PTX_BUILT {
        return Vec::new();
    }
    let mut names: Vec<&'static str> = ptx_kernels().keys().copied().collect();
    names.sort_unstable();
    names
}

/// The PTX declaration of `kernel`: `Ok(None)` when this build has no PTX
/// (no nvcc), an error when the PTX has no such kernel (or two).
pub(crate) fn ptx_kernel(kernel: &str) -> std::result::Result<Option<&'static PtxKernel>, String> {
    if !ptx::PTX_BUILT {
        return Ok(None);
    }
    match ptx_kernels().get(kernel) {
        Some(Ok(k)) => Ok(Some(k)),
        Some(Err(e)) => Err(e.clone()),
        None => Err(format!(
            "no kernel of that name in this build's PTX ({} kernels in {} modules)",
            ptx_kernels().len(),
            ptx::MODULES.len()
        )),
    }
}

/// Checks `args` against a kernel's PTX parameter list: the count, and each
/// size where the PTX type is known.
pub(crate) fn check_args(
    kernel: &PtxKernel,
    args: &[KernelArg],
) -> std::result::Result<(), String> {
    if kernel.param_sizes.len() != args.len() {
        return Err(format!(
            "{} argument(s) given, the kernel (kernels/{}.cu) takes {}",
            args.len(),
            kernel.module,
            kernel.param_sizes.len()
        ));
    }
    for (i, (arg, size)) in args.iter().zip(&kernel.param_sizes).enumerate() {
        if let Some(size) = *size {
            if size != arg.size_bytes() {
                return Err(format!(
                    "argument {i} is {arg:?} ({} bytes) but parameter {i} of the kernel has {size} bytes",
                    arg.size_bytes()
                ));
            }
        }
    }
    Ok(())
}

/// `(name, parameter sizes)` of every `.entry` in a PTX text, e.g.
/// `.visible .entry copy_f32(.param .u64 copy_f32_param_0, ...)`.
fn parse_ptx_entries(text: &'static str) -> Vec<(&'static str, Vec<Option<usize>>)> {
    let mut entries = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".entry") {
        rest = &rest[at + ".entry".len()..];
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let after = rest.trim_start();
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(after.len());
        if name_len == 0 {
            continue;
        }
        let name = &after[..name_len];
        rest = after[name_len..].trim_start();
        let mut params = Vec::new();
        if let Some(list) = rest.strip_prefix('(') {
            let end = list.find(')').unwrap_or(list.len());
            params = list[..end]
                .split(',')
                .map(str::trim)
                .filter(|decl| !decl.is_empty())
                .map(ptx_param_size)
                .collect();
            rest = &list[end..];
        }
        entries.push((name, params));
    }
    entries
}

/// Size of one PTX parameter declaration such as `.param .u64 .ptr .align 1
/// k_param_0` or `.param .align 8 .b8 k_param_3[16]`.
fn ptx_param_size(decl: &str) -> Option<usize> {
    let tokens: Vec<&str> = decl.split_whitespace().collect();
    let elem = tokens.iter().find_map(|t| match *t {
        ".b8" | ".u8" | ".s8" => Some(1),
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => Some(2),
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => Some(4),
        ".b64" | ".u64" | ".s64" | ".f64" => Some(8),
        _ => None,
    })?;
    let name = tokens.last()?;
    match name.split_once('[') {
        None => Some(elem),
        Some((_, count)) => count
            .trim_end_matches(']')
            .parse::<usize>()
            .ok()
            .map(|n| n * elem),
    }
}

// ---------------------------------------------------------------------------
// CUDA
// ---------------------------------------------------------------------------

#[cfg(feature = "cuda")]
const CUDA: &str = "cuda";

/// The CUDA runner (only with the `cuda` feature).
#[cfg(feature = "cuda")]
mod cuda_runner {
    use super::*;

    fn cuda_error(context: String, e: DriverError) -> Error {
        Error::Cuda {
            context,
            message: describe(e),
        }
    }

    /// `CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered`.
    fn describe(e: DriverError) -> String {
        match (e.error_name(), e.error_string()) {
            (Ok(name), Ok(text)) => {
                format!("{}: {}", name.to_string_lossy(), text.to_string_lossy())
            }
            _ => format!("{:?}", e.0),
        }
    }

    /// `bytes` of uninitialized device memory on the backend's stream (one byte
    /// for an empty buffer: the driver rejects empty allocations).
    fn alloc_slice(backend: &CudaBackend, bytes: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: `alloc` is unsafe only because the new memory is
        // uninitialized. Device memory is never read as Rust values except
        // through `download` into `Pod` types, for which any bytes are valid.
        unsafe { backend.stream().alloc::<u8>(bytes.max(1)) }
            .map_err(|e| cuda_error(format!("allocating {bytes} bytes"), e))
    }

    impl KernelRunner for CudaBackend {
        fn backend_name(&self) -> &'static str {
            CUDA
        }

        fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
            let slice = alloc_slice(self, bytes)?;
            Ok(DeviceBuffer::from_cuda(slice, bytes, self.stream()))
        }

        fn upload<T: bytemuck::Pod>(&self, host: &[T]) -> Result<DeviceBuffer> {
            let bytes: &[u8] = bytemuck::cast_slice(host);
            let mut slice = alloc_slice(self, bytes.len())?;
            if !bytes.is_empty() {
                self.stream().memcpy_htod(bytes, &mut slice).map_err(|e| {
                    cuda_error(format!("copying {} bytes to the device", bytes.len()), e)
                })?;
            }
            Ok(DeviceBuffer::from_cuda(slice, bytes.len(), self.stream()))
        }

        fn download<T: bytemuck::Pod>(&self, buf: &DeviceBuffer, host: &mut [T]) -> Result<()> {
            let slice = buf.cuda_slice(self.stream())?;
            buf.check_host_len(host)?;
            if buf.is_empty() {
                return Ok(());
            }
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(host);
            // Into pageable host memory the copy is complete when this returns.
            self.stream()
                .memcpy_dtoh(slice, bytes)
                .map_err(|e| cuda_error(format!("copying {} bytes to the host", buf.len), e))
        }

        fn fill(&self, buf: &DeviceBuffer, byte: u8) -> Result<()> {
            // Only this runner's buffers: `ptr` must be a device address.
            buf.cuda_slice(self.stream())?;
            if buf.is_empty() {
                return Ok(());
            }
            let stream = self.stream();
            self.context()
                .bind_to_thread()
                .map_err(|e| cuda_error("binding the context".into(), e))?;
            // SAFETY: `buf.ptr()..buf.ptr() + buf.len_bytes()` lies inside the
            // live device allocation of `buf` (allocated with at least that many
            // bytes), which the borrow keeps alive for this call; its release is
            // queued on the same stream, hence after this memset.
            unsafe { cu_result::memset_d8_async(buf.ptr(), byte, buf.len, stream.cu_stream()) }
                .map_err(|e| cuda_error(format!("filling {} bytes", buf.len), e))
        }

        unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
            let fail = |message: String| Error::Launch {
                backend: CUDA,
                kernel: kernel.to_string(),
                message,
            };
            cfg.validate().map_err(fail)?;
            // `CudaBackend::new` fails without PTX, so it is always present here.
            let ptx_kernel = ptx_kernel(kernel)
                .map_err(fail)?
                .ok_or_else(|| fail("this build has no PTX".into()))?;
            check_args(ptx_kernel, args).map_err(fail)?;

            self.context()
                .bind_to_thread()
                .map_err(|e| cuda_error("binding the context".into(), e))?;
            let func = self.function(ptx_kernel.module, kernel)?;
            if cfg.shared_bytes > DEFAULT_SHARED_BYTES {
                func.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_bytes as i32,
                )
                .map_err(|e| {
                    fail(format!(
                        "allowing {} bytes of dynamic shared memory: {}",
                        cfg.shared_bytes,
                        describe(e)
                    ))
                })?;
            }

            let slots = arg_slots(args);
            let mut builder = self.stream().launch_builder(&func);
            for slot in &slots {
                builder.arg(slot);
            }
            let cu_cfg = CuLaunchConfig {
                grid_dim: (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
                block_dim: (cfg.block[0], cfg.block[1], cfg.block[2]),
                shared_mem_bytes: cfg.shared_bytes,
            };
            // SAFETY: the kernel exists in the loaded PTX and `slots` holds one
            // value per parameter, each with the parameter's size (checked
            // against the PTX signature above) in an 8-byte slot that outlives
            // the call (the driver copies the values while launching). Pointer
            // arguments and sizes meeting the kernel's contract is the caller's
            // obligation (documented on `KernelRunner::launch`); a violation is
            // a device fault reported by a later call, not host memory
            // corruption.
            unsafe { builder.launch(cu_cfg) }
                .map(|_| ())
                .map_err(|e| fail(describe(e)))
        }

        fn synchronize(&self) -> Result<()> {
            self.stream()
                .synchronize()
                .map_err(|e| cuda_error("synchronizing the stream".into(), e))
        }

        fn sm_count(&self) -> usize {
            CudaBackend::sm_count(self) as usize
        }

        fn device_times(
            &self,
            reps: usize,
            work: &mut dyn FnMut() -> Result<()>,
        ) -> Result<Vec<f64>> {
            let stream = self.stream();
            self.synchronize()?;
            let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
            let record = || {
                stream
                    .record_event(timing)
                    .map_err(|e| cuda_error("recording a timing event".into(), e))
            };
            let mut events = Vec::with_capacity(reps);
            for _ in 0..reps {
                let start = record()?;
                work()?;
                events.push((start, record()?));
            }
            self.synchronize()?;
            events
                .iter()
                .map(|(start, end)| {
                    start
                        .elapsed_ms(end)
                        .map(|ms| f64::from(ms) * 1e-3)
                        .map_err(|e| cuda_error("reading event times".into(), e))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_limits() {
        assert!(LaunchConfig::linear(1, 1).validate().is_ok());
        assert!(LaunchConfig::linear(MAX_GRID_DIM_X, 1024)
            .validate()
            .is_ok());
        assert!(LaunchConfig::linear(1, 1024)
            .with_shared_bytes(MAX_SHARED_BYTES)
            .validate()
            .is_ok());
        let bad = [
            LaunchConfig::linear(0, 32),
            LaunchConfig::linear(1, 0),
            LaunchConfig::linear(1, 1025),
            LaunchConfig {
                grid: [1, 1, 1],
                block: [32, 32, 2],
                shared_bytes: 0,
            },
            LaunchConfig {
                grid: [1, 1, 1],
                block: [1, 1, 65],
                shared_bytes: 0,
            },
            LaunchConfig {
                grid: [1, 65536, 1],
                block: [32, 1, 1],
                shared_bytes: 0,
            },
            LaunchConfig::linear(1, 32).with_shared_bytes(MAX_SHARED_BYTES + 1),
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?} should be rejected");
        }
    }

    #[test]
    fn arg_slots_hold_values_in_their_first_bytes() {
        let args = [
            KernelArg::I32(-2),
            KernelArg::U32(7),
            KernelArg::F32(1.5),
            KernelArg::F64(-0.25),
            KernelArg::Ptr(0x1234_5678_9abc),
        ];
        let slots = arg_slots(&args);
        let first4 = |s: u64| <[u8; 4]>::try_from(&s.to_ne_bytes()[..4]).unwrap();
        assert_eq!(i32::from_ne_bytes(first4(slots[0])), -2);
        assert_eq!(u32::from_ne_bytes(first4(slots[1])), 7);
        assert_eq!(f32::from_ne_bytes(first4(slots[2])), 1.5);
        assert_eq!(&slots[0].to_ne_bytes()[4..], &[0; 4]);
        assert_eq!(f64::from_bits(slots[3]), -0.25);
        assert_eq!(slots[4], 0x1234_5678_9abc);
        assert_eq!(KernelArg::from(3u64).size_bytes(), 8);
        assert_eq!(KernelArg::from(3i32).size_bytes(), 4);
    }

    #[test]
    fn parses_ptx_signatures() {
        let text: &'static str = "\
.version 9.0\n.target sm_90\n.address_size 64\n\n\
.visible .entry copy_f32(\n\t.param .u64 .ptr .align 1 copy_f32_param_0,\n\
\t.param .u64 copy_f32_param_1,\n\t.param .u32 copy_f32_param_2\n)\n{\n\tret;\n}\n\
.visible .entry no_params()\n{\n\tret;\n}\n\
.entry with_struct(\n\t.param .align 8 .b8 with_struct_param_0[24],\n\t.param .f64 with_struct_param_1\n)\n{\n}\n";
        let entries = parse_ptx_entries(text);
        assert_eq!(
            entries,
            vec![
                ("copy_f32", vec![Some(8), Some(8), Some(4)]),
                ("no_params", vec![]),
                ("with_struct", vec![Some(24), Some(8)]),
            ]
        );
    }

    #[test]
    fn build_ptx_has_copy_signature() {
        match ptx_kernel("copy_f32") {
            Ok(Some(k)) => {
                assert_eq!(k.module, "copy");
                assert_eq!(k.param_sizes, vec![Some(8), Some(8), Some(8)]);
                let ok = [KernelArg::Ptr(0), KernelArg::Ptr(0), KernelArg::U64(1)];
                assert!(check_args(k, &ok).is_ok());
                let narrow = [KernelArg::Ptr(0), KernelArg::Ptr(0), KernelArg::U32(1)];
                assert!(check_args(k, &narrow).is_err());
                assert!(check_args(k, &ok[..2]).is_err());
            }
            // Only without PTX (no nvcc at build time).
            Ok(None) => {}
            Err(e) => panic!("copy_f32 missing from the PTX: {e}"),
        }
        if ptx::PTX_BUILT {
            assert!(ptx_kernel("no_such_kernel").is_err());
        }
    }
}
