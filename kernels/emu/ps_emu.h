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
#define PS_EMU_ABI_VERSION 1

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
    PS_EMU_ERR_RESOURCES = 8         /* out of memory / threads */
};

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
