//! Emulated-kernel backend: the `kernels/*.cu` sources, compiled for the CPU
//! by the host C++ compiler (see `build.rs` and `kernels/emu/README.md`), run
//! by the SIMT emulator in `kernels/emu/launcher.cpp`.
//!
//! Each block runs on one OS thread (up to [`EmuBackend::workers`] at once),
//! each CUDA thread is a fiber, and `__syncthreads`/warp primitives are
//! barriers among the fibers. After every barrier the fibers resume in the
//! backend's [`FiberOrder`], so a missing barrier gives an order-dependent
//! result: run tests under all of [`FiberOrder::ALL`].
//!
//! It exists for correctness, not speed: every CI run executes the real
//! kernel code without a GPU. Launches are synchronous; "device" buffers are
//! host mappings of their own with a guard page on each side, one end of the
//! buffer against its guard page ([`GuardPlacement`]), filled with `0xFF`
//! bytes (NaN) when allocated. A kernel that leaves the CUDA subset or
//! diverges at a barrier makes [`KernelRunner::launch`] return an
//! [`Error::Launch`] naming the kernel, block, thread and source line; one
//! that loads or stores outside every buffer, an [`Error::IllegalAddress`]
//! with the address's distance from the nearest buffer. The emulator also
//! holds `__stcg` stores back from other blocks until a fence (weak-memory
//! mode, `kernels/emu/README.md`).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use super::launch::{
    arg_slots, check_args, ptx_kernel, DeviceBuffer, KernelArg, KernelRunner, LaunchConfig,
};
use crate::error::{Error, Result};

pub(crate) const BACKEND: &str = "emu";

/// The C ABI version (`PS_EMU_ABI_VERSION` in `kernels/emu/ps_emu.h`) these
/// bindings are written for.
const ABI_VERSION: c_int = 2;

/// Most worker threads the runtime accepts.
const MAX_WORKERS: usize = 1024;

/// `PS_EMU_ERR_ILLEGAL_ADDRESS` of `ps_emu.h`.
const ERR_ILLEGAL_ADDRESS: c_int = 9;

/// The C ABI of `kernels/emu/launcher.cpp` (`kernels/emu/ps_emu.h`).
mod ffi {
    use super::{c_char, c_int, c_uint, c_ulonglong, c_void};

    extern "C" {
        pub fn ps_emu_launch(
            kernel_name: *const c_char,
            gx: c_uint,
            gy: c_uint,
            gz: c_uint,
            bx: c_uint,
            by: c_uint,
            bz: c_uint,
            shared_bytes: c_uint,
            args: *mut *mut c_void,
            fiber_order: c_int,
            seed: c_ulonglong,
            num_workers: c_int,
        ) -> c_int;
        pub fn ps_emu_last_error() -> *const c_char;
        pub fn ps_emu_kernel_count() -> c_int;
        pub fn ps_emu_kernel_name(i: c_int) -> *const c_char;
        pub fn ps_emu_kernel_num_params(kernel_name: *const c_char) -> c_int;
        pub fn ps_emu_abi_version() -> c_int;
        pub fn ps_emu_alloc(bytes: c_ulonglong, guard: c_int) -> *mut c_void;
        pub fn ps_emu_free(p: *mut c_void) -> c_int;
        pub fn ps_emu_last_fault(
            address: *mut c_ulonglong,
            buffer: *mut c_ulonglong,
            buffer_bytes: *mut c_ulonglong,
            distance: *mut i64,
            is_write: *mut c_int,
        ) -> c_int;
    }
}

/// The order in which the emulator resumes the fibers (CUDA threads) of a
/// block at its start and after every barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FiberOrder {
    /// Thread 0 first.
    Forward,
    /// The last thread first.
    Reverse,
    /// A fresh pseudo-random permutation after every barrier, determined by
    /// the backend's seed and the block index.
    Shuffle,
}

impl FiberOrder {
    /// Every order; a kernel's tests should pass under each.
    pub const ALL: [FiberOrder; 3] = [
        FiberOrder::Forward,
        FiberOrder::Reverse,
        FiberOrder::Shuffle,
    ];

    /// `PS_EMU_ORDER_*` of `ps_emu.h`.
    fn code(self) -> c_int {
        match self {
            FiberOrder::Forward => 0,
            FiberOrder::Reverse => 1,
            FiberOrder::Shuffle => 2,
        }
    }
}

impl fmt::Display for FiberOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FiberOrder::Forward => "forward",
            FiberOrder::Reverse => "reverse",
            FiberOrder::Shuffle => "shuffle",
        })
    }
}

impl std::str::FromStr for FiberOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "forward" => Ok(FiberOrder::Forward),
            "reverse" => Ok(FiberOrder::Reverse),
            "shuffle" | "shuffled" => Ok(FiberOrder::Shuffle),
            other => Err(Error::BackendUnavailable {
                backend: BACKEND,
                reason: format!("fiber order `{other}`: expected forward, reverse or shuffle"),
            }),
        }
    }
}

/// Which end of every emulated device buffer touches its guard page, so
/// that the first access past that end faults (an
/// [`Error::IllegalAddress`]). The other end has a guard page too, but may
/// be up to a page minus one byte away from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardPlacement {
    /// The last byte sits right below the upper guard page (the default).
    /// The start is then aligned to the largest power of two up to 16 that
    /// divides the length (a `float` array ends at the page; a length that
    /// is a multiple of 16 bytes keeps `float4` alignment).
    End,
    /// The first byte sits right above the lower guard page (page aligned).
    Start,
}

impl GuardPlacement {
    /// `PS_EMU_GUARD` from the environment: `start` gives
    /// [`GuardPlacement::Start`], anything else [`GuardPlacement::End`]
    /// (the emulated CUDA driver reads the same variable).
    pub fn from_env() -> Self {
        match std::env::var("PS_EMU_GUARD") {
            Ok(v) if v == "start" => GuardPlacement::Start,
            _ => GuardPlacement::End,
        }
    }

    /// `PS_EMU_GUARD_*` of `ps_emu.h`.
    fn code(self) -> c_int {
        match self {
            GuardPlacement::End => 1,
            GuardPlacement::Start => 2,
        }
    }
}

/// The emulated-kernel runner. Cheap to create and copy; all instances share
/// the process's kernel registry, and buffers of one work with all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuBackend {
    order: FiberOrder,
    seed: u64,
    workers: usize,
    guard: GuardPlacement,
}

impl Default for EmuBackend {
    /// Forward order, seed 0, [`EmuBackend::default_workers`] workers.
    fn default() -> Self {
        EmuBackend::new(FiberOrder::Forward, 0)
    }
}

impl EmuBackend {
    /// A runner with the given fiber order and shuffle seed (used by
    /// [`FiberOrder::Shuffle`] only; the same seed gives the same schedule)
    /// and [`EmuBackend::default_workers`] worker threads.
    pub fn new(order: FiberOrder, seed: u64) -> Self {
        EmuBackend {
            order,
            seed,
            workers: Self::default_workers(),
            guard: GuardPlacement::from_env(),
        }
    }

    /// Forward order.
    pub fn forward() -> Self {
        Self::new(FiberOrder::Forward, 0)
    }

    /// Reverse order.
    pub fn reverse() -> Self {
        Self::new(FiberOrder::Reverse, 0)
    }

    /// Shuffled order with `seed`.
    pub fn shuffled(seed: u64) -> Self {
        Self::new(FiberOrder::Shuffle, seed)
    }

    /// The same runner with `workers` OS threads running blocks (clamped to
    /// 1..=1024). With one worker, blocks run strictly in index order.
    pub fn with_workers(self, workers: usize) -> Self {
        EmuBackend {
            workers: workers.clamp(1, MAX_WORKERS),
            ..self
        }
    }

    /// The same runner with its later buffers placed against their guard
    /// pages as `guard` says (the default is [`GuardPlacement::from_env`]).
    pub fn with_guard(self, guard: GuardPlacement) -> Self {
        EmuBackend { guard, ..self }
    }

    /// Where this runner's buffers touch their guard pages.
    pub fn guard(&self) -> GuardPlacement {
        self.guard
    }

    /// `PS_EMU_WORKERS` from the environment when it is a positive number,
    /// else the number of CPUs.
    pub fn default_workers() -> usize {
        std::env::var("PS_EMU_WORKERS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(MAX_WORKERS)
    }

    /// The fiber order.
    pub fn order(&self) -> FiberOrder {
        self.order
    }

    /// The shuffle seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Worker threads per launch.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Names of every kernel compiled into this build, sorted.
    pub fn kernel_names() -> Vec<String> {
        // SAFETY: both functions only read the registry, which static
        // constructors filled before `main`; a name is a pointer to a string
        // literal (static storage) or null past the end.
        let count = unsafe { ffi::ps_emu_kernel_count() };
        let mut names = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count {
            // SAFETY: as above.
            let name = unsafe { ffi::ps_emu_kernel_name(i) };
            if !name.is_null() {
                // SAFETY: non-null, NUL-terminated, static storage.
                names.push(
                    unsafe { CStr::from_ptr(name) }
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        names
    }

    /// Number of parameters of kernel `name`, if it is compiled in.
    pub fn kernel_num_params(name: &str) -> Option<usize> {
        let name = CString::new(name).ok()?;
        num_params(&name)
    }
}

fn num_params(name: &CStr) -> Option<usize> {
    // SAFETY: `name` is a valid NUL-terminated string for the call; the
    // function only reads it and the registry.
    let n = unsafe { ffi::ps_emu_kernel_num_params(name.as_ptr()) };
    usize::try_from(n).ok()
}

/// The runtime's message for the last failed call on this thread.
fn last_error() -> String {
    // SAFETY: returns a pointer to a thread-local NUL-terminated string that
    // stays valid until the next ps_emu_* call on this thread; it is copied
    // before any other call.
    let msg = unsafe { ffi::ps_emu_last_error() };
    if msg.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// What a `PS_EMU_ERR_*` code means.
fn code_name(code: c_int) -> &'static str {
    match code {
        1 => "invalid argument",
        2 => "unknown kernel",
        3 => "launch configuration outside CUDA's limits",
        4 => "barrier divergence",
        5 => "outside the supported CUDA subset",
        6 => "shared memory",
        7 => "kernel fault",
        8 => "out of memory or threads",
        9 => "illegal address",
        _ => "error",
    }
}

/// The typed error of a launch that failed with `PS_EMU_ERR_ILLEGAL_ADDRESS`
/// (read right after it, on the launching thread).
fn illegal_address(kernel: &str, message: String) -> Error {
    let (mut address, mut buffer, mut buffer_bytes) = (0u64, 0u64, 0u64);
    let (mut distance, mut is_write) = (0i64, -1);
    // SAFETY: every out pointer is valid for one write; the function reads
    // the calling thread's record of its last launch.
    let kind = unsafe {
        ffi::ps_emu_last_fault(
            &mut address,
            &mut buffer,
            &mut buffer_bytes,
            &mut distance,
            &mut is_write,
        )
    };
    Error::IllegalAddress {
        backend: BACKEND,
        kernel: kernel.to_string(),
        address,
        distance: (kind == 1).then_some(distance),
        message,
    }
}

/// `Err` when the linked runtime speaks another ABI than these bindings.
fn check_abi() -> Result<()> {
    static ABI: OnceLock<c_int> = OnceLock::new();
    // SAFETY: a constant-returning function without arguments.
    let abi = *ABI.get_or_init(|| unsafe { ffi::ps_emu_abi_version() });
    if abi == ABI_VERSION {
        Ok(())
    } else {
        Err(Error::BackendUnavailable {
            backend: BACKEND,
            reason: format!(
                "the compiled emulator has C ABI version {abi}, these bindings expect {ABI_VERSION} \
                 (kernels/emu/ps_emu.h changed without src/backend/emu.rs)"
            ),
        })
    }
}

// ---------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------

/// Start address -> length in bytes of every live emulator buffer, so that a
/// launch can reject pointers that lie in none of them.
fn live_buffers() -> std::sync::MutexGuard<'static, BTreeMap<u64, usize>> {
    static LIVE: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());
    // The map stays consistent even if a holder panicked.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `[addr, addr]` lies inside (or one past the end of) a live buffer.
fn is_live(addr: u64) -> bool {
    live_buffers()
        .range(..=addr)
        .next_back()
        .is_some_and(|(&start, &len)| addr - start <= len as u64)
}

/// A guarded host mapping standing in for device memory (`ps_emu_alloc`):
/// one end of the buffer against a `PROT_NONE` page, so a kernel's first
/// access past it faults; accessed only through raw pointers (kernels write
/// to it while Rust holds shared references to the [`DeviceBuffer`]).
pub(crate) struct HostMemory {
    ptr: NonNull<u8>,
}

// SAFETY: `HostMemory` owns its mapping exclusively, like a `Box<[u8]>`,
// and has no thread affinity. All access goes through raw pointers in the
// runner's methods; ordering between threads is the caller's business, as
// with device memory shared between host threads.
unsafe impl Send for HostMemory {}
// SAFETY: see `Send`; `&HostMemory` only exposes the address.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    /// `len` usable bytes, every byte `0xFF`, placed as `guard` says.
    fn new(len: usize, guard: GuardPlacement) -> Result<Self> {
        // Emulated device memory is host memory: same budget as host buffers.
        crate::mem::check_budget("emulated device buffer", len)?;
        // SAFETY: plain call; the runtime validates the size and returns
        // null when it cannot map the memory.
        let raw = unsafe { ffi::ps_emu_alloc(len as c_ulonglong, guard.code()) };
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| Error::OutOfMemory {
            buffer: "emulated device buffer",
            bytes: len,
            reason: "the emulator could not map it (with its guard pages)".into(),
        })?;
        // SAFETY: the mapping holds `len` writable bytes from `ptr`.
        unsafe { ptr.as_ptr().write_bytes(0xFF, len) };
        live_buffers().insert(ptr.as_ptr() as u64, len);
        Ok(HostMemory { ptr })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        live_buffers().remove(&self.addr());
        // SAFETY: mapped by `ps_emu_alloc` in `new`, freed once; no kernel
        // runs on it (launches are synchronous and borrow the buffer).
        unsafe { ffi::ps_emu_free(self.ptr.as_ptr().cast::<c_void>()) };
    }
}

// ---------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------

impl KernelRunner for EmuBackend {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        Ok(DeviceBuffer::from_host(
            HostMemory::new(bytes, self.guard)?,
            bytes,
        ))
    }

    fn upload<T: bytemuck::Pod>(&self, host: &[T]) -> Result<DeviceBuffer> {
        let bytes: &[u8] = bytemuck::cast_slice(host);
        let memory = HostMemory::new(bytes.len(), self.guard)?;
        // SAFETY: the new allocation holds at least `bytes.len()` bytes and
        // cannot overlap the caller's slice.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), memory.ptr.as_ptr(), bytes.len());
        }
        Ok(DeviceBuffer::from_host(memory, bytes.len()))
    }

    fn download<T: bytemuck::Pod>(&self, buf: &DeviceBuffer, host: &mut [T]) -> Result<()> {
        let memory = buf.host_memory(BACKEND)?;
        buf.check_host_len(host)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(host);
        // SAFETY: the allocation (kept alive by the borrow of `buf`) holds
        // `buf.len_bytes() == bytes.len()` bytes (checked above); a `&mut`
        // slice of the caller cannot overlap it. Launches are synchronous,
        // so no kernel of this thread is writing it.
        unsafe {
            std::ptr::copy_nonoverlapping(memory.ptr.as_ptr(), bytes.as_mut_ptr(), bytes.len());
        }
        Ok(())
    }

    fn fill(&self, buf: &DeviceBuffer, byte: u8) -> Result<()> {
        let memory = buf.host_memory(BACKEND)?;
        // SAFETY: the allocation holds at least `buf.len_bytes()` bytes and
        // is kept alive by the borrow of `buf`.
        unsafe { memory.ptr.as_ptr().write_bytes(byte, buf.len_bytes()) };
        Ok(())
    }

    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[KernelArg]) -> Result<()> {
        let fail = |message: String| Error::Launch {
            backend: BACKEND,
            kernel: kernel.to_string(),
            message,
        };
        cfg.validate().map_err(fail)?;
        check_abi()?;
        let name = CString::new(kernel).map_err(|_| fail("the name contains a NUL byte".into()))?;
        let Some(n_params) = num_params(&name) else {
            let known = Self::kernel_names();
            return Err(fail(format!(
                "unknown kernel (not registered with PS_REGISTER_KERNEL in any kernels/*.cu); \
                 the emulator has {}: {}",
                known.len(),
                known.join(", ")
            )));
        };
        if n_params != args.len() {
            return Err(fail(format!(
                "{} argument(s) given, the kernel takes {n_params}",
                args.len()
            )));
        }
        // Argument sizes, when nvcc also compiled the kernel (the same source).
        if let Some(ptx) = ptx_kernel(kernel).map_err(fail)? {
            check_args(ptx, args).map_err(fail)?;
        }
        for (i, arg) in args.iter().enumerate() {
            if let KernelArg::Ptr(p) = *arg {
                if p != 0 && !is_live(p) {
                    return Err(fail(format!(
                        "argument {i}: pointer {p:#x} is not inside a live buffer of the emulator \
                         (pass DeviceBuffer::ptr() of a buffer from this backend, plus an offset)"
                    )));
                }
            }
        }

        let mut slots = arg_slots(args);
        let mut arg_ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|slot| (slot as *mut u64).cast::<c_void>())
            .collect();
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: `name` is NUL-terminated; `arg_ptrs` has one pointer per
        // kernel parameter (count checked above), each to an 8-byte slot
        // that is at least as large as the parameter (sizes checked against
        // the PTX when present; the C++ trampoline reads
        // `sizeof(parameter) <= 8` bytes) and outlives this synchronous call.
        // Pointer arguments are null or inside live buffers of this backend;
        // that the kernel stays inside them is its contract
        // (see `KernelRunner::launch`).
        let rc = unsafe {
            ffi::ps_emu_launch(
                name.as_ptr(),
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                cfg.shared_bytes,
                arg_ptrs.as_mut_ptr(),
                self.order.code(),
                self.seed,
                self.workers as c_int,
            )
        };
        match rc {
            0 => Ok(()),
            ERR_ILLEGAL_ADDRESS => Err(illegal_address(kernel, last_error())),
            _ => Err(fail(format!("{}: {}", code_name(rc), last_error()))),
        }
    }

    fn synchronize(&self) -> Result<()> {
        // Launches and copies are synchronous.
        Ok(())
    }

    fn sm_count(&self) -> usize {
        self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_matches() {
        check_abi().expect("ABI version");
    }

    #[test]
    fn copy_kernel_is_registered() {
        assert!(EmuBackend::kernel_names().iter().any(|n| n == "copy_f32"));
        assert_eq!(EmuBackend::kernel_num_params("copy_f32"), Some(3));
        assert_eq!(EmuBackend::kernel_num_params("no_such_kernel"), None);
    }

    #[test]
    fn live_buffer_ranges() {
        let a = HostMemory::new(100, GuardPlacement::End).unwrap();
        let start = a.addr();
        // The end touches the guard page: 100 bytes end at a page boundary.
        assert_eq!((start + 100) % 4096, 0);
        assert_eq!(start % 4, 0);
        let s = HostMemory::new(100, GuardPlacement::Start).unwrap();
        assert_eq!(s.addr() % 4096, 0);
        assert!(is_live(start));
        assert!(is_live(start + 100));
        assert!(!is_live(start + 101));
        drop(a);
        assert!(!is_live(start) || live_buffers().contains_key(&start));
    }

    #[test]
    fn orders_round_trip_through_strings() {
        for order in FiberOrder::ALL {
            assert_eq!(order.to_string().parse::<FiberOrder>().unwrap(), order);
        }
        assert!("sideways".parse::<FiberOrder>().is_err());
    }
}
