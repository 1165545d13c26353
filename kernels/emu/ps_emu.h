/* ps_emu.h: C ABI of the emulated-kernel runtime (kernels/emu/launcher.cpp).
 *
 * Plain C so that Rust (or anything else) can bind it with FFI. Mirrors the
 * driver API's cuLaunchKernel: a kernel is found by its name and receives its
 * arguments as an array of pointers to the argument values.
 *
 * Thread safety: every function may be called from any thread, and launches
 * from different threads may run concurrently. ps_emu_last_error() is per
 * calling thread (like errno).
 */
#ifndef PS_EMU_H
#define PS_EMU_H

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this ABI; bumped on any incompatible change. */
#define PS_EMU_ABI_VERSION 2

/* fiber_order: the order in which the scheduler resumes the fibers of a
 * block after every barrier (and at the start). A race that a barrier should
 * have prevented gives different results under different orders. */
enum {
    PS_EMU_ORDER_FORWARD = 0, /* thread 0 first */
    PS_EMU_ORDER_REVERSE = 1, /* last thread first */
    PS_EMU_ORDER_SHUFFLE = 2  /* a fresh pseudo-random permutation after every barrier (seeded) */
};

/* Return codes of ps_emu_launch. The message of the last failure on the
 * calling thread is ps_emu_last_error(). */
enum {
    PS_EMU_OK = 0,
    PS_EMU_ERR_INVALID_ARGUMENT = 1, /* null name, null args, bad fiber_order or num_workers */
    PS_EMU_ERR_UNKNOWN_KERNEL = 2,   /* no kernel registered under that name (or registered twice) */
    PS_EMU_ERR_LAUNCH_CONFIG = 3,    /* grid / block / shared-memory size outside CUDA's limits */
    PS_EMU_ERR_DIVERGENCE = 4,       /* barrier divergence: a thread exited or waits elsewhere */
    PS_EMU_ERR_UNSUPPORTED = 5,      /* outside the CUDA subset (partial mask, bad width, ...) */
    PS_EMU_ERR_SHARED_MEMORY = 6,    /* shared memory over the limits or written out of bounds */
    PS_EMU_ERR_KERNEL_FAULT = 7,     /* __trap(), an escaped C++ exception, a fiber stack overrun */
    PS_EMU_ERR_RESOURCES = 8,        /* out of memory / threads */
    PS_EMU_ERR_ILLEGAL_ADDRESS = 9   /* a load or store outside every live buffer (guard page) */
};

/* Which end of a buffer from ps_emu_alloc touches its guard page. */
enum {
    PS_EMU_GUARD_DEFAULT = 0, /* the PS_EMU_GUARD environment variable: "start", else end */
    PS_EMU_GUARD_END = 1,     /* the last byte sits right below the upper guard page */
    PS_EMU_GUARD_START = 2    /* the first byte sits right above the lower guard page */
};

/* Device memory for kernels: `bytes` (0 allowed) of read-write memory in a
 * mapping of its own with a PROT_NONE page on each side, every byte 0xFF.
 * With PS_EMU_GUARD_END the buffer ends exactly at the upper guard page; its
 * start is then aligned to the largest power of two <= 16 that divides
 * `bytes` (so a float array ends at the page, a float4 array is 16-byte
 * aligned). With PS_EMU_GUARD_START it starts at the lower guard page (page
 * aligned). A kernel access outside the buffer that reaches a guard page
 * fails the launch with PS_EMU_ERR_ILLEGAL_ADDRESS. NULL when the memory
 * cannot be mapped. Thread-safe. */
void* ps_emu_alloc(unsigned long long bytes, int guard);
/* Frees a buffer from ps_emu_alloc: 0, or -1 when p is not one. */
int ps_emu_free(void* p);

/* The illegal address of the last launch on this thread that failed with
 * PS_EMU_ERR_ILLEGAL_ADDRESS. Returns 0 (nothing written) when that was not
 * the last launch's failure; 1 with *address, and the live ps_emu_alloc
 * buffer nearest to it (*buffer, *buffer_bytes) and the signed distance
 * *distance: >= 0 is that many bytes past the buffer's end (0 = the first
 * byte after it), < 0 is before its start; 2 with *address only when no
 * buffer was live. *is_write: 1 store, 0 load, -1 unknown. */
int ps_emu_last_fault(unsigned long long* address, unsigned long long* buffer,
                      unsigned long long* buffer_bytes, long long* distance, int* is_write);

/* Launches `kernel_name` on a gx*gy*gz grid of bx*by*bz-thread blocks with
 * `shared_bytes` of dynamic shared memory, and returns when the grid is done
 * (the call is synchronous). args[i] points to the value of parameter i.
 * fiber_order: PS_EMU_ORDER_*; seed: used by PS_EMU_ORDER_SHUFFLE.
 * num_workers: OS threads running blocks (the calling thread is one of them);
 * 0 = the PS_EMU_WORKERS environment variable, else the number of CPUs.
 * Returns PS_EMU_OK or an error code (message: ps_emu_last_error()). */
int ps_emu_launch(const char* kernel_name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                  unsigned by, unsigned bz, unsigned shared_bytes, void** args, int fiber_order,
                  unsigned long long seed, int num_workers);

/* Message of the last failed call on this thread ("" if none). Valid until
 * the next ps_emu_* call on this thread. */
const char* ps_emu_last_error(void);

/* Registered kernels, sorted by name: count, names (NULL when out of range),
 * and parameter count by name (-1 if unknown). */
int ps_emu_kernel_count(void);
const char* ps_emu_kernel_name(int i);
int ps_emu_kernel_num_params(const char* kernel_name);

/* sizeof and alignof of parameter i of a kernel (what a by-value copy of its
 * launch arguments needs). Returns 0, or -1 for an unknown kernel or an i out
 * of range. */
int ps_emu_kernel_param_layout(const char* kernel_name, int i, unsigned long long* size,
                               unsigned long long* align);

/* Name of the kernel whose block the calling thread is running, or NULL.
 * Async-signal-safe (for fault handlers). */
const char* ps_emu_current_kernel(void);

/* Size of each fiber's stack for later launches, in bytes (rounded up to the
 * page size, at least 16 KiB). 0 only queries. Returns the size in effect
 * before the call. The default is 64 KiB, or PS_EMU_STACK_KIB from the
 * environment. */
unsigned long long ps_emu_set_stack_size(unsigned long long bytes);

/* PS_EMU_ABI_VERSION of the compiled runtime. */
int ps_emu_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* PS_EMU_H */
