// driver.cpp: an emulated CUDA driver (libcuda.so.1) over the SIMT emulator.
//
// It implements the part of the CUDA driver API that cudarc's `driver`
// module calls, so that a program loading libcuda dynamically (parascan's
// CUDA backend, its tests, the CLI, the device bundle) opens one emulated
// device and runs for real on the CPU. Kernels are the emulator's own host
// compiled copies of kernels/*.cu, found by name: loading a module (PTX text
// or a cubin) only reads which entry points the image declares.
//
// What is modelled, and why:
// - Streams run asynchronously, each on its own thread, in order; events
//   complete when the stream reaches them. A missing synchronize before
//   reading results, an event read too early or a wait on the wrong stream
//   therefore shows up as it would on a GPU (stale data, CUDA_ERROR_NOT_READY).
// - Launch arguments are copied at enqueue time (the kernel's parameter
//   sizes come from the emulator's registry), as the driver does.
// - Device memory is the emulator's guarded buffers (ps_emu_alloc): host
//   memory with a PROT_NONE page on each side; the buffer ends at the upper
//   guard page (PS_EMU_GUARD=start puts its start at the lower one instead),
//   so a kernel reading or writing outside its buffers faults; the launch
//   fails with CUDA_ERROR_ILLEGAL_ADDRESS and the buffer it missed on
//   stderr. Fresh allocations are filled with 0xFF bytes (NaN) so unwritten
//   output shows.
// - Copies and memsets must lie inside one live allocation
//   (CUDA_ERROR_INVALID_VALUE otherwise); more than 48 KiB of dynamic shared
//   memory needs the function attribute, as on the GPU.
// - Kernel failures (barrier divergence, __trap(), shared-memory overrun,
//   illegal addresses)
//   are reported by the next synchronizing call on that stream, with the
//   emulator's message on stderr. Unlike a GPU, the error is not sticky: it
//   is returned once and the context stays usable.
// - Memory ordering between blocks: the emulator's weak-memory mode (see
//   kernels/emu/README.md) holds __stcg stores back until a fence.
// Not modelled: real concurrency between blocks and streams (timing), the
// rest of the memory model, graphs, memory pools beyond the default, peer
// access, IPC.
//
// Environment: PS_EMU_FIBER_ORDER (forward|reverse|shuffle, default shuffle),
// PS_EMU_SEED, PS_EMU_GUARD (end|start), PS_EMU_POISON (0 disables the
// 0xFF fill), PS_EMU_SM_COUNT, PS_EMU_COMPUTE_CAPABILITY (e.g. 9.0),
// PS_EMU_TOTAL_MEM_MIB, PS_EMU_DRIVER_TRACE=1 (every call on stderr), plus
// the emulator's own (PS_EMU_WORKERS, PS_EMU_STACK_KIB, ...).

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ps_emu.h"

// ---------------------------------------------------------------------------
// The driver API's types and constants (values as in CUDA 13.0's cuda.h).
// ---------------------------------------------------------------------------

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
struct EmuContext;
struct EmuStream;
struct EmuEvent;
struct EmuModule;
struct EmuFunction;
typedef EmuContext* CUcontext;
typedef EmuStream* CUstream;
typedef EmuEvent* CUevent;
typedef EmuModule* CUmodule;
typedef EmuFunction* CUfunction;
typedef void (*CUhostFn)(void* userData);
typedef size_t (*CUoccupancyB2DSize)(int blockSize);

constexpr CUresult CUDA_SUCCESS = 0;
constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
constexpr CUresult CUDA_ERROR_INVALID_DEVICE = 101;
constexpr CUresult CUDA_ERROR_INVALID_IMAGE = 200;
constexpr CUresult CUDA_ERROR_INVALID_CONTEXT = 201;
constexpr CUresult CUDA_ERROR_NO_BINARY_FOR_GPU = 209;
constexpr CUresult CUDA_ERROR_UNSUPPORTED_LIMIT = 215;
constexpr CUresult CUDA_ERROR_INVALID_PTX = 218;
constexpr CUresult CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222;
constexpr CUresult CUDA_ERROR_FILE_NOT_FOUND = 301;
constexpr CUresult CUDA_ERROR_INVALID_HANDLE = 400;
constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
constexpr CUresult CUDA_ERROR_NOT_READY = 600;
constexpr CUresult CUDA_ERROR_ILLEGAL_ADDRESS = 700;
constexpr CUresult CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701;
constexpr CUresult CUDA_ERROR_ILLEGAL_INSTRUCTION = 715;
constexpr CUresult CUDA_ERROR_LAUNCH_FAILED = 719;
constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;
constexpr CUresult CUDA_ERROR_UNKNOWN = 999;

namespace {

// Device attributes (CUdevice_attribute) the emulated device answers.
enum : int {
    A_MAX_THREADS_PER_BLOCK = 1,
    A_MAX_BLOCK_DIM_X = 2,
    A_MAX_BLOCK_DIM_Y = 3,
    A_MAX_BLOCK_DIM_Z = 4,
    A_MAX_GRID_DIM_X = 5,
    A_MAX_GRID_DIM_Y = 6,
    A_MAX_GRID_DIM_Z = 7,
    A_MAX_SHARED_MEMORY_PER_BLOCK = 8,
    A_TOTAL_CONSTANT_MEMORY = 9,
    A_WARP_SIZE = 10,
    A_MAX_PITCH = 11,
    A_MAX_REGISTERS_PER_BLOCK = 12,
    A_CLOCK_RATE = 13,
    A_TEXTURE_ALIGNMENT = 14,
    A_GPU_OVERLAP = 15,
    A_MULTIPROCESSOR_COUNT = 16,
    A_CONCURRENT_KERNELS = 31,
    A_ECC_ENABLED = 32,
    A_PCI_BUS_ID = 33,
    A_PCI_DEVICE_ID = 34,
    A_MEMORY_CLOCK_RATE = 36,
    A_GLOBAL_MEMORY_BUS_WIDTH = 37,
    A_L2_CACHE_SIZE = 38,
    A_MAX_THREADS_PER_MULTIPROCESSOR = 39,
    A_ASYNC_ENGINE_COUNT = 40,
    A_UNIFIED_ADDRESSING = 41,
    A_COMPUTE_CAPABILITY_MAJOR = 75,
    A_COMPUTE_CAPABILITY_MINOR = 76,
    A_STREAM_PRIORITIES_SUPPORTED = 78,
    A_GLOBAL_L1_CACHE_SUPPORTED = 79,
    A_LOCAL_L1_CACHE_SUPPORTED = 80,
    A_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR = 81,
    A_MAX_REGISTERS_PER_MULTIPROCESSOR = 82,
    A_MANAGED_MEMORY = 83,
    A_COMPUTE_PREEMPTION_SUPPORTED = 90,
    A_COOPERATIVE_LAUNCH = 95,
    A_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    A_MAX_BLOCKS_PER_MULTIPROCESSOR = 106,
    A_MAX_PERSISTING_L2_CACHE_SIZE = 108,
    A_RESERVED_SHARED_MEMORY_PER_BLOCK = 111,
    A_MEMORY_POOLS_SUPPORTED = 115,
    A_CLUSTER_LAUNCH = 120,
    A_MAX = 148,
};

// Function attributes (CUfunction_attribute).
enum : int {
    F_MAX_THREADS_PER_BLOCK = 0,
    F_SHARED_SIZE_BYTES = 1,
    F_CONST_SIZE_BYTES = 2,
    F_LOCAL_SIZE_BYTES = 3,
    F_NUM_REGS = 4,
    F_PTX_VERSION = 5,
    F_BINARY_VERSION = 6,
    F_CACHE_MODE_CA = 7,
    F_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
    F_PREFERRED_SHARED_MEMORY_CARVEOUT = 9,
    F_MAX = 16,
};

constexpr unsigned CU_EVENT_DISABLE_TIMING = 0x2;
constexpr int kDefaultSharedBytes = 48 * 1024;
constexpr int kOptinSharedBytes = 227 * 1024;
constexpr int kDriverVersion = 13000;
// PTX ISA of CUDA 13.0's JIT: newer PTX is rejected, as the real driver does.
constexpr int kPtxIsaMajor = 9, kPtxIsaMinor = 0;

// ---------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

bool env_flag(const char* name) {
    const char* v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

// Every failure says why on stderr: a CUresult alone rarely tells.
CUresult fail(CUresult code, const std::string& why) {
    fprintf(stderr, "parascan emulated CUDA driver: %s\n", why.c_str());
    return code;
}

bool tracing() {
    static const bool on = env_flag("PS_EMU_DRIVER_TRACE");
    return on;
}

#define TRACE(...)                                                                  \
    do {                                                                            \
        if (tracing()) fprintf(stderr, "ps_emu_driver: " __VA_ARGS__), fputc('\n', stderr); \
    } while (0)

long env_long(const char* name, long fallback) {
    const char* v = getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    long x = strtol(v, &end, 10);
    return end && *end == 0 && x > 0 ? x : fallback;
}

// ---------------------------------------------------------------------------
// The device
// ---------------------------------------------------------------------------

struct Device {
    int attrs[A_MAX] = {};
    std::string name;
    size_t total_mem = 0;
};

Device make_device() {
    Device d;
    int major = 9, minor = 0;
    if (const char* cc = getenv("PS_EMU_COMPUTE_CAPABILITY")) {
        int a = 0, b = 0;
        if (sscanf(cc, "%d.%d", &a, &b) == 2 && a > 0 && b >= 0) major = a, minor = b;
    }
    int sms = static_cast<int>(env_long("PS_EMU_SM_COUNT", 132));
    d.total_mem = static_cast<size_t>(env_long("PS_EMU_TOTAL_MEM_MIB", 81559)) << 20;
    int* a = d.attrs;
    // An H100 SXM's geometry, so the planners choose what they would there.
    a[A_MAX_THREADS_PER_BLOCK] = 1024;
    a[A_MAX_BLOCK_DIM_X] = 1024;
    a[A_MAX_BLOCK_DIM_Y] = 1024;
    a[A_MAX_BLOCK_DIM_Z] = 64;
    a[A_MAX_GRID_DIM_X] = 2147483647;
    a[A_MAX_GRID_DIM_Y] = 65535;
    a[A_MAX_GRID_DIM_Z] = 65535;
    a[A_MAX_SHARED_MEMORY_PER_BLOCK] = kDefaultSharedBytes;
    a[A_TOTAL_CONSTANT_MEMORY] = 65536;
    a[A_WARP_SIZE] = 32;
    a[A_MAX_PITCH] = 2147483647;
    a[A_MAX_REGISTERS_PER_BLOCK] = 65536;
    a[A_CLOCK_RATE] = 1980000;
    a[A_TEXTURE_ALIGNMENT] = 512;
    a[A_GPU_OVERLAP] = 1;
    a[A_MULTIPROCESSOR_COUNT] = sms;
    a[A_CONCURRENT_KERNELS] = 1;
    a[A_ECC_ENABLED] = 1;
    a[A_PCI_BUS_ID] = 0;
    a[A_PCI_DEVICE_ID] = 0;
    a[A_MEMORY_CLOCK_RATE] = 2619000;
    a[A_GLOBAL_MEMORY_BUS_WIDTH] = 5120;
    a[A_L2_CACHE_SIZE] = 50 * 1024 * 1024;
    a[A_MAX_THREADS_PER_MULTIPROCESSOR] = 2048;
    a[A_ASYNC_ENGINE_COUNT] = 3;
    a[A_UNIFIED_ADDRESSING] = 1;
    a[A_COMPUTE_CAPABILITY_MAJOR] = major;
    a[A_COMPUTE_CAPABILITY_MINOR] = minor;
    a[A_STREAM_PRIORITIES_SUPPORTED] = 1;
    a[A_GLOBAL_L1_CACHE_SUPPORTED] = 1;
    a[A_LOCAL_L1_CACHE_SUPPORTED] = 1;
    a[A_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR] = 228 * 1024;
    a[A_MAX_REGISTERS_PER_MULTIPROCESSOR] = 65536;
    a[A_MANAGED_MEMORY] = 0;
    a[A_COMPUTE_PREEMPTION_SUPPORTED] = 1;
    a[A_COOPERATIVE_LAUNCH] = 0;
    a[A_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN] = kOptinSharedBytes;
    a[A_MAX_BLOCKS_PER_MULTIPROCESSOR] = 32;
    a[A_MAX_PERSISTING_L2_CACHE_SIZE] = 0;
    a[A_RESERVED_SHARED_MEMORY_PER_BLOCK] = 1024;
    a[A_MEMORY_POOLS_SUPPORTED] = 1;
    a[A_CLUSTER_LAUNCH] = 0;
    d.name = fmt("parascan emulated CUDA driver (H100 geometry: %d SMs, sm_%d%d)", sms, major, minor);
    return d;
}

Device& device() {
    static Device d = make_device();
    return d;
}

std::atomic<bool> g_initialized{false};

CUresult need_init() {
    return g_initialized.load() ? CUDA_SUCCESS
                                : fail(CUDA_ERROR_NOT_INITIALIZED, "cuInit has not been called");
}

// ---------------------------------------------------------------------------
// Device memory: guarded mappings
// ---------------------------------------------------------------------------

struct Allocation {
    char* map = nullptr;  // host memory: its mapping (device memory is ps_emu_alloc's)
    size_t map_bytes = 0;
    char* ptr = nullptr;  // what the caller got
    size_t bytes = 0;     // what the caller asked for
    bool host = false;    // page-locked host memory (cuMemHostAlloc)
};

std::mutex g_mem_mu;
std::map<uintptr_t, Allocation> g_allocs;  // by ptr
std::atomic<size_t> g_used{0};

size_t free_device_bytes() {
    size_t total = device().total_mem;
    return total - std::min(total, g_used.load());
}

size_t page_bytes() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

CUresult map_allocation(size_t bytes, bool host, char** out) {
    if (bytes > (size_t(1) << 46)) return CUDA_ERROR_OUT_OF_MEMORY;
    Allocation a;
    a.bytes = bytes;
    a.host = host;
    if (host) {
        // Page-locked host memory: a plain mapping (kernels never touch it).
        const size_t page = page_bytes();
        a.map_bytes = round_up(bytes ? bytes : 1, page);
        void* m = mmap(nullptr, a.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
        a.map = a.ptr = static_cast<char*>(m);
    } else {
        // The emulator's guarded buffer: a kernel stepping outside it fails
        // its launch with an illegal address (CUDA_ERROR_ILLEGAL_ADDRESS).
        a.ptr = static_cast<char*>(ps_emu_alloc(bytes, PS_EMU_GUARD_DEFAULT));
        if (!a.ptr) return CUDA_ERROR_OUT_OF_MEMORY;
        const char* poison = getenv("PS_EMU_POISON");
        if (!(poison && strcmp(poison, "0") == 0)) memset(a.ptr, 0xFF, bytes);
    }
    {
        std::lock_guard<std::mutex> lock(g_mem_mu);
        g_allocs[reinterpret_cast<uintptr_t>(a.ptr)] = a;
    }
    if (!host) g_used += bytes;
    *out = a.ptr;
    return CUDA_SUCCESS;
}

// Removes the allocation starting exactly at p and returns its mapping.
bool take_allocation(uintptr_t p, bool host, Allocation* out) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end() || it->second.host != host) return false;
    *out = it->second;
    g_allocs.erase(it);
    return true;
}

void unmap_allocation(const Allocation& a) {
    if (a.host)
        munmap(a.map, a.map_bytes);
    else
        ps_emu_free(a.ptr);
    if (!a.host) g_used -= a.bytes;
}

// The live allocation holding [p, p + n), if any.
bool find_range(uintptr_t p, size_t n, bool host, Allocation* out) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    const Allocation& a = it->second;
    uintptr_t lo = reinterpret_cast<uintptr_t>(a.ptr);
    if (a.host != host || p < lo || n > a.bytes || p - lo > a.bytes - n) return false;
    if (out) *out = a;
    return true;
}

std::string describe_range(uintptr_t p, size_t n) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.upper_bound(p);
    std::string near;
    if (it != g_allocs.begin()) {
        auto prev = std::prev(it);
        if (!prev->second.host) {
            uintptr_t lo = prev->first;
            near = fmt(" (the nearest buffer below is 0x%llx, %zu bytes; the range ends %lld bytes past it)",
                       static_cast<unsigned long long>(lo), prev->second.bytes,
                       static_cast<long long>(p + n) - static_cast<long long>(lo + prev->second.bytes));
        }
    }
    return fmt("[0x%llx, +%zu) is not inside one live device allocation%s",
               static_cast<unsigned long long>(p), n, near.c_str());
}

CUresult check_device_range(CUdeviceptr p, size_t n, const char* what) {
    if (n == 0) return CUDA_SUCCESS;
    if (find_range(p, n, false, nullptr)) return CUDA_SUCCESS;
    return fail(CUDA_ERROR_INVALID_VALUE, fmt("%s: %s", what, describe_range(p, n).c_str()));
}

bool is_pinned(const void* p, size_t n) {
    return find_range(reinterpret_cast<uintptr_t>(p), n, true, nullptr);
}

// ---------------------------------------------------------------------------
// Contexts, streams, events
// ---------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

}  // namespace

struct EmuStream {
    EmuContext* ctx = nullptr;
    unsigned flags = 0;
    int priority = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<CUresult()>> queue;
    uint64_t enqueued = 0, done = 0;
    CUresult error = CUDA_SUCCESS;  // first failure not yet reported
    bool stop = false;
    std::thread worker;

    void run() {
        std::unique_lock<std::mutex> lock(mu);
        for (;;) {
            cv.wait(lock, [&] { return stop || !queue.empty(); });
            if (queue.empty()) return;
            auto op = std::move(queue.front());
            queue.pop_front();
            lock.unlock();
            CUresult r = op();
            lock.lock();
            if (r != CUDA_SUCCESS && error == CUDA_SUCCESS) error = r;
            ++done;
            cv.notify_all();
        }
    }

    uint64_t enqueue(std::function<CUresult()> op) {
        std::lock_guard<std::mutex> lock(mu);
        queue.push_back(std::move(op));
        cv.notify_all();
        return ++enqueued;
    }

    // Waits until operation `ticket` (and everything before it) has run.
    // `report`: return the first unreported failure and mark it reported;
    // otherwise leave it for the next synchronizing call (an implicit wait,
    // as in cuMemFree, must not swallow a kernel's failure).
    CUresult wait_for(uint64_t ticket, bool report = true) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return done >= ticket; });
        if (!report) return CUDA_SUCCESS;
        CUresult r = error;
        error = CUDA_SUCCESS;
        return r;
    }

    CUresult synchronize(bool report = true) {
        uint64_t ticket;
        {
            std::lock_guard<std::mutex> lock(mu);
            ticket = enqueued;
        }
        return wait_for(ticket, report);
    }

    bool idle() {
        std::lock_guard<std::mutex> lock(mu);
        return done == enqueued;
    }

    void start() { worker = std::thread([this] { run(); }); }

    void shut_down() {
        {
            std::lock_guard<std::mutex> lock(mu);
            stop = true;
            cv.notify_all();
        }
        if (worker.joinable()) worker.join();
    }
};

struct EmuEvent {
    unsigned flags = 0;
    std::mutex mu;
    std::condition_variable cv;
    uint64_t recorded = 0;   // generation of the latest record call
    uint64_t completed = 0;  // generation the stream has reached
    Clock::time_point when{};

    bool complete_locked() const { return completed >= recorded; }
};

struct EmuContext {
    CUdevice dev = 0;
    bool primary = false;
    int refs = 0;
    unsigned flags = 0;
    std::mutex mu;
    std::set<EmuStream*> streams;
    EmuStream* null_stream = nullptr;
    size_t limits[16] = {};
};

struct EmuModule {
    EmuContext* ctx = nullptr;
    std::string kind;  // "PTX" or "cubin"
    std::set<std::string> entries;
    std::mutex mu;
    std::map<std::string, std::unique_ptr<EmuFunction>> functions;
};

struct EmuFunction {
    EmuModule* module = nullptr;
    std::string name;
    std::vector<size_t> sizes, aligns;
    std::atomic<int> max_dynamic_shared{kDefaultSharedBytes};
    std::atomic<int> carveout{-1};
};

namespace {

std::mutex g_ctx_mu;
EmuContext* g_primary = nullptr;
std::set<EmuStream*> g_streams;
std::set<EmuEvent*> g_events;
std::set<EmuModule*> g_modules;
thread_local std::vector<EmuContext*> t_ctx_stack;

EmuContext* current_ctx() { return t_ctx_stack.empty() ? nullptr : t_ctx_stack.back(); }

bool valid_ctx(EmuContext* c) { return c && c == g_primary; }

EmuStream* new_stream(EmuContext* ctx, unsigned flags, int priority) {
    auto* s = new EmuStream;
    s->ctx = ctx;
    s->flags = flags;
    s->priority = priority;
    s->start();
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    g_streams.insert(s);
    std::lock_guard<std::mutex> l2(ctx->mu);
    ctx->streams.insert(s);
    return s;
}

// The stream an API call names: 0 (legacy), 1 (CU_STREAM_LEGACY) and
// 2 (CU_STREAM_PER_THREAD) are the current context's own stream.
CUresult resolve_stream(CUstream s, EmuStream** out) {
    uintptr_t v = reinterpret_cast<uintptr_t>(s);
    if (v <= 2) {
        EmuContext* ctx = current_ctx();
        if (!valid_ctx(ctx)) return fail(CUDA_ERROR_INVALID_CONTEXT, "no current context for the null stream");
        std::lock_guard<std::mutex> lock(ctx->mu);
        if (!ctx->null_stream) {
            ctx->null_stream = new EmuStream;
            ctx->null_stream->ctx = ctx;
            ctx->null_stream->start();
        }
        *out = ctx->null_stream;
        return CUDA_SUCCESS;
    }
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    if (!g_streams.count(s)) return fail(CUDA_ERROR_INVALID_HANDLE, "unknown or destroyed stream");
    *out = s;
    return CUDA_SUCCESS;
}

CUresult resolve_event(CUevent e) {
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    return e && g_events.count(e) ? CUDA_SUCCESS
                                  : fail(CUDA_ERROR_INVALID_HANDLE, "unknown or destroyed event");
}

// Every stream of the context (and its null stream) finished; with
// `report`, the first unreported failure, if any.
CUresult synchronize_context(EmuContext* ctx, bool report = true) {
    std::vector<EmuStream*> all;
    {
        std::lock_guard<std::mutex> lock(ctx->mu);
        all.assign(ctx->streams.begin(), ctx->streams.end());
        if (ctx->null_stream) all.push_back(ctx->null_stream);
    }
    CUresult first = CUDA_SUCCESS;
    for (EmuStream* s : all) {
        CUresult r = s->synchronize(report);
        if (first == CUDA_SUCCESS) first = r;
    }
    return first;
}

// Waits for all queued work (cuMemFree's implicit synchronization); the
// failures stay for the streams' next synchronizing calls to report.
void wait_for_device() {
    EmuContext* ctx;
    {
        std::lock_guard<std::mutex> lock(g_ctx_mu);
        ctx = g_primary;
    }
    if (ctx) synchronize_context(ctx, false);
}

// ---------------------------------------------------------------------------
// Modules: which entry points an image declares
// ---------------------------------------------------------------------------

bool is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c == '.';
}

CUresult parse_ptx(const char* text, EmuModule* m) {
    const char* v = strstr(text, ".version");
    const char* t = strstr(text, ".target");
    if (!v || !t) return fail(CUDA_ERROR_INVALID_IMAGE, "module image is neither a cubin nor PTX text");
    int major = 0, minor = 0;
    if (sscanf(v + 8, " %d.%d", &major, &minor) != 2)
        return fail(CUDA_ERROR_INVALID_PTX, "PTX has an unreadable .version");
    if (major > kPtxIsaMajor || (major == kPtxIsaMajor && minor > kPtxIsaMinor))
        return fail(CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
                    fmt("PTX ISA %d.%d is newer than this driver's %d.%d (CUDA 13.0)", major, minor,
                        kPtxIsaMajor, kPtxIsaMinor));
    int arch = 0;
    if (sscanf(t + 7, " sm_%d", &arch) == 1) {
        const int* a = device().attrs;
        int have = a[A_COMPUTE_CAPABILITY_MAJOR] * 10 + a[A_COMPUTE_CAPABILITY_MINOR];
        if (arch > have)
            return fail(CUDA_ERROR_NO_BINARY_FOR_GPU,
                        fmt("PTX targets sm_%d but the device is sm_%d", arch, have));
    }
    for (const char* p = strstr(text, ".entry"); p; p = strstr(p + 6, ".entry")) {
        const char* q = p + 6;
        if (*q != ' ' && *q != '\t') continue;
        while (*q == ' ' || *q == '\t') ++q;
        const char* s = q;
        while (is_ident(*q)) ++q;
        if (q > s) m->entries.insert(std::string(s, q));
    }
    return CUDA_SUCCESS;
}

template <typename T>
T read_at(const unsigned char* image, size_t off) {
    T v;
    memcpy(&v, image + off, sizeof v);
    return v;
}

// A cubin is an ELF64 file for EM_CUDA; kernels are its function symbols
// marked as entries (STO_CUDA_ENTRY in st_other).
CUresult parse_cubin(const unsigned char* image, EmuModule* m) {
    if (image[4] != 2 || image[5] != 1) return fail(CUDA_ERROR_INVALID_IMAGE, "cubin is not a little-endian ELF64 file");
    if (read_at<uint16_t>(image, 18) != 190) return fail(CUDA_ERROR_INVALID_IMAGE, "ELF image is not for EM_CUDA");
    uint32_t flags = read_at<uint32_t>(image, 48);
    int arch = static_cast<int>((flags >> 8) & 0xff);
    const int* a = device().attrs;
    int have = a[A_COMPUTE_CAPABILITY_MAJOR] * 10 + a[A_COMPUTE_CAPABILITY_MINOR];
    if (arch != have)
        return fail(CUDA_ERROR_NO_BINARY_FOR_GPU, fmt("cubin is for sm_%d but the device is sm_%d", arch, have));
    uint64_t shoff = read_at<uint64_t>(image, 40);
    uint16_t shentsize = read_at<uint16_t>(image, 58), shnum = read_at<uint16_t>(image, 60);
    if (shentsize < 64 || shnum == 0 || shnum > 65000) return fail(CUDA_ERROR_INVALID_IMAGE, "cubin has no sections");
    for (unsigned i = 0; i < shnum; ++i) {
        size_t sh = shoff + size_t(i) * shentsize;
        if (read_at<uint32_t>(image, sh + 4) != 2) continue;  // SHT_SYMTAB
        uint64_t off = read_at<uint64_t>(image, sh + 24), size = read_at<uint64_t>(image, sh + 32);
        uint32_t link = read_at<uint32_t>(image, sh + 40);
        uint64_t entsize = read_at<uint64_t>(image, sh + 56);
        if (link >= shnum || entsize < 24) continue;
        uint64_t stroff = read_at<uint64_t>(image, shoff + size_t(link) * shentsize + 24);
        for (uint64_t s = 0; s + entsize <= size; s += entsize) {
            size_t sym = off + s;
            uint32_t name = read_at<uint32_t>(image, sym);
            unsigned char info = image[sym + 4], other = image[sym + 5];
            if ((info & 0xf) == 2 && (other & 0x10))  // STT_FUNC, STO_CUDA_ENTRY
                m->entries.insert(reinterpret_cast<const char*>(image + stroff + name));
        }
    }
    if (m->entries.empty()) return fail(CUDA_ERROR_INVALID_IMAGE, "cubin declares no kernels");
    return CUDA_SUCCESS;
}

CUresult load_module(CUmodule* out, const void* image) {
    if (CUresult r = need_init()) return r;
    if (!out || !image) return CUDA_ERROR_INVALID_VALUE;
    EmuContext* ctx = current_ctx();
    if (!valid_ctx(ctx)) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuModuleLoadData without a current context");
    auto m = std::make_unique<EmuModule>();
    m->ctx = ctx;
    const unsigned char* bytes = static_cast<const unsigned char*>(image);
    CUresult r;
    if (memcmp(bytes, "\x7f" "ELF", 4) == 0) {
        m->kind = "cubin";
        r = parse_cubin(bytes, m.get());
    } else if (read_at<uint32_t>(bytes, 0) == 0xBA55ED50u) {
        r = fail(CUDA_ERROR_NOT_SUPPORTED, "fatbinary images are not supported; load PTX or a cubin");
    } else {
        m->kind = "PTX";
        r = parse_ptx(static_cast<const char*>(image), m.get());
    }
    if (r != CUDA_SUCCESS) return r;
    TRACE("module (%s) with %zu kernels", m->kind.c_str(), m->entries.size());
    EmuModule* raw = m.release();
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    g_modules.insert(raw);
    *out = raw;
    return CUDA_SUCCESS;
}

CUresult resolve_function(CUfunction f) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    return g_modules.count(f->module) ? CUDA_SUCCESS
                                      : fail(CUDA_ERROR_INVALID_HANDLE, "function of an unloaded module");
}

// ---------------------------------------------------------------------------
// Launches
// ---------------------------------------------------------------------------

int fiber_order() {
    static const int order = [] {
        const char* o = getenv("PS_EMU_FIBER_ORDER");
        if (!o || !*o || strcmp(o, "shuffle") == 0) return int(PS_EMU_ORDER_SHUFFLE);
        if (strcmp(o, "forward") == 0) return int(PS_EMU_ORDER_FORWARD);
        if (strcmp(o, "reverse") == 0) return int(PS_EMU_ORDER_REVERSE);
        fprintf(stderr, "parascan emulated CUDA driver: PS_EMU_FIBER_ORDER=%s is not forward, reverse or shuffle; using shuffle\n", o);
        return int(PS_EMU_ORDER_SHUFFLE);
    }();
    return order;
}

std::atomic<unsigned long long> g_launches{0};

CUresult map_emu_error(int code) {
    switch (code) {
        case PS_EMU_OK: return CUDA_SUCCESS;
        case PS_EMU_ERR_LAUNCH_CONFIG: return CUDA_ERROR_INVALID_VALUE;
        case PS_EMU_ERR_UNKNOWN_KERNEL: return CUDA_ERROR_NOT_FOUND;
        case PS_EMU_ERR_SHARED_MEMORY: return CUDA_ERROR_ILLEGAL_ADDRESS;
        case PS_EMU_ERR_ILLEGAL_ADDRESS: return CUDA_ERROR_ILLEGAL_ADDRESS;
        case PS_EMU_ERR_UNSUPPORTED: return CUDA_ERROR_ILLEGAL_INSTRUCTION;
        case PS_EMU_ERR_RESOURCES: return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
        default: return CUDA_ERROR_LAUNCH_FAILED;  // divergence, __trap(), faults
    }
}

CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                unsigned bz, unsigned shared, CUstream hs, void** params, void** extra) {
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_function(f)) return r;
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    const int* a = device().attrs;
    unsigned long long threads = 1ull * bx * by * bz;
    if (!gx || !gy || !gz || !bx || !by || !bz || gx > unsigned(a[A_MAX_GRID_DIM_X]) ||
        gy > unsigned(a[A_MAX_GRID_DIM_Y]) || gz > unsigned(a[A_MAX_GRID_DIM_Z]) ||
        bx > unsigned(a[A_MAX_BLOCK_DIM_X]) || by > unsigned(a[A_MAX_BLOCK_DIM_Y]) ||
        bz > unsigned(a[A_MAX_BLOCK_DIM_Z]))
        return fail(CUDA_ERROR_INVALID_VALUE, fmt("kernel '%s': grid (%u,%u,%u) or block (%u,%u,%u) outside the device's limits",
                                                   f->name.c_str(), gx, gy, gz, bx, by, bz));
    if (threads > unsigned(a[A_MAX_THREADS_PER_BLOCK]))
        return fail(CUDA_ERROR_INVALID_VALUE, fmt("kernel '%s': %llu threads per block (at most %d)", f->name.c_str(), threads,
                                                  a[A_MAX_THREADS_PER_BLOCK]));
    if (shared > unsigned(f->max_dynamic_shared.load()))
        return fail(CUDA_ERROR_INVALID_VALUE,
                    fmt("kernel '%s': %u bytes of dynamic shared memory but the function allows %d "
                        "(raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)",
                        f->name.c_str(), shared, f->max_dynamic_shared.load()));
    // Copy the arguments now: the caller may reuse its memory once we return.
    const size_t n = f->sizes.size();
    std::vector<size_t> offsets(n);
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) {
        total = round_up(total, f->aligns[i]);
        offsets[i] = total;
        total += f->sizes[i];
    }
    auto storage = std::make_shared<std::vector<unsigned char>>(total + 16);
    if (params && extra) return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: both kernelParams and extra given");
    if (params) {
        for (size_t i = 0; i < n; ++i) {
            if (!params[i]) return fail(CUDA_ERROR_INVALID_VALUE, fmt("kernel '%s': kernelParams[%zu] is null", f->name.c_str(), i));
            memcpy(storage->data() + offsets[i], params[i], f->sizes[i]);
        }
    } else if (extra) {
        const void* buffer = nullptr;
        size_t buffer_bytes = 0;
        bool have_size = false;
        for (size_t i = 0; extra[i] != nullptr; i += 2) {
            uintptr_t key = reinterpret_cast<uintptr_t>(extra[i]);
            if (key == 1) buffer = extra[i + 1];
            else if (key == 2 && extra[i + 1]) buffer_bytes = *static_cast<size_t*>(extra[i + 1]), have_size = true;
            else return fail(CUDA_ERROR_INVALID_VALUE, fmt("cuLaunchKernel: unknown extra key %llu", static_cast<unsigned long long>(key)));
        }
        if (!buffer || !have_size || buffer_bytes < total)
            return fail(CUDA_ERROR_INVALID_VALUE,
                        fmt("kernel '%s': the extra argument buffer holds %zu bytes, the parameters need %zu",
                            f->name.c_str(), buffer_bytes, total));
        memcpy(storage->data(), buffer, total);
    } else if (n > 0) {
        return fail(CUDA_ERROR_INVALID_VALUE, fmt("kernel '%s' takes %zu parameters but none were given", f->name.c_str(), n));
    }
    std::string name = f->name;
    unsigned long long seed = static_cast<unsigned long long>(env_long("PS_EMU_SEED", 0x5eed)) ^ (g_launches++ * 0x9E3779B97F4A7C15ull);
    TRACE("launch %s grid (%u,%u,%u) block (%u,%u,%u) shared %u", name.c_str(), gx, gy, gz, bx, by, bz, shared);
    s->enqueue([=]() -> CUresult {
        std::vector<void*> args(n);
        for (size_t i = 0; i < n; ++i) args[i] = storage->data() + offsets[i];
        int rc = ps_emu_launch(name.c_str(), gx, gy, gz, bx, by, bz, shared, args.data(), fiber_order(), seed, 0);
        if (rc == PS_EMU_OK) return CUDA_SUCCESS;
        return fail(map_emu_error(rc), fmt("kernel '%s' failed: %s", name.c_str(), ps_emu_last_error()));
    });
    return CUDA_SUCCESS;
}

// ---------------------------------------------------------------------------
// Copies
// ---------------------------------------------------------------------------

// Host to device: pageable sources are staged now (the caller may reuse them
// at once, as with the real driver); page-locked ones are read when the
// stream gets there.
CUresult copy_htod(CUdeviceptr dst, const void* src, size_t n, CUstream hs, bool sync) {
    if (CUresult r = need_init()) return r;
    if (n && !src) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_device_range(dst, n, "copy to the device")) return r;
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    std::function<CUresult()> op;
    if (is_pinned(src, n)) {
        op = [=] { memcpy(reinterpret_cast<void*>(dst), src, n); return CUDA_SUCCESS; };
    } else {
        auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                                   static_cast<const unsigned char*>(src) + n);
        op = [=] { memcpy(reinterpret_cast<void*>(dst), staged->data(), n); return CUDA_SUCCESS; };
    }
    uint64_t t = s->enqueue(std::move(op));
    return sync ? s->wait_for(t) : CUDA_SUCCESS;
}

// Device to host: into pageable memory the call returns when the copy is
// done (the real driver stages it the same way); into page-locked memory an
// async copy returns at once.
CUresult copy_dtoh(void* dst, CUdeviceptr src, size_t n, CUstream hs, bool sync) {
    if (CUresult r = need_init()) return r;
    if (n && !dst) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_device_range(src, n, "copy from the device")) return r;
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    uint64_t t = s->enqueue([=] { memcpy(dst, reinterpret_cast<const void*>(src), n); return CUDA_SUCCESS; });
    return sync || !is_pinned(dst, n) ? s->wait_for(t) : CUDA_SUCCESS;
}

CUresult copy_dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream hs, bool sync) {
    if (CUresult r = need_init()) return r;
    if (CUresult r = check_device_range(src, n, "device-to-device copy source")) return r;
    if (CUresult r = check_device_range(dst, n, "device-to-device copy destination")) return r;
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    uint64_t t = s->enqueue([=] {
        memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
        return CUDA_SUCCESS;
    });
    return sync ? s->wait_for(t) : CUDA_SUCCESS;
}

template <typename T>
CUresult memset_n(CUdeviceptr dst, T value, size_t count, CUstream hs, bool sync) {
    if (CUresult r = need_init()) return r;
    if (count > SIZE_MAX / sizeof(T)) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_device_range(dst, count * sizeof(T), "memset")) return r;
    if (dst % sizeof(T)) return fail(CUDA_ERROR_INVALID_VALUE, "memset destination is misaligned for its element size");
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    uint64_t t = s->enqueue([=] {
        T* p = reinterpret_cast<T*>(dst);
        for (size_t i = 0; i < count; ++i) p[i] = value;
        return CUDA_SUCCESS;
    });
    return sync ? s->wait_for(t) : CUDA_SUCCESS;
}

CUresult free_device(CUdeviceptr p, CUstream hs, bool async) {
    if (CUresult r = need_init()) return r;
    if (p == 0) return CUDA_SUCCESS;
    if (!async) {
        // cuMemFree waits for work that may still use the memory.
        wait_for_device();
        Allocation a;
        if (!take_allocation(p, false, &a))
            return fail(CUDA_ERROR_INVALID_VALUE, fmt("cuMemFree of 0x%llx, which is not the start of a live allocation", p));
        unmap_allocation(a);
        return CUDA_SUCCESS;
    }
    EmuStream* s = nullptr;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (!find_range(p, 1, false, nullptr))
        return fail(CUDA_ERROR_INVALID_VALUE, fmt("cuMemFreeAsync of 0x%llx, which is not a live allocation", p));
    s->enqueue([=] {
        Allocation a;
        if (!take_allocation(p, false, &a))
            return fail(CUDA_ERROR_INVALID_VALUE, fmt("cuMemFreeAsync of 0x%llx, which is not the start of a live allocation", p));
        unmap_allocation(a);
        return CUDA_SUCCESS;
    });
    return CUDA_SUCCESS;
}

struct ErrorText {
    int code;
    const char* name;
    const char* text;
};

const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {CUDA_ERROR_UNSUPPORTED_LIMIT, "CUDA_ERROR_UNSUPPORTED_LIMIT", "limit is not supported on this architecture"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the provided PTX was compiled with an unsupported toolchain."},
    {CUDA_ERROR_FILE_NOT_FOUND, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_ILLEGAL_INSTRUCTION, "CUDA_ERROR_ILLEGAL_INSTRUCTION", "an illegal instruction was encountered"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

CUresult unimplemented(const char* name) {
    return fail(CUDA_ERROR_NOT_SUPPORTED, fmt("%s is not implemented by the emulated driver", name));
}

int occupancy(CUfunction f, int block, size_t dynamic_shared) {
    const int* a = device().attrs;
    if (block <= 0) return 0;
    int warps = (block + 31) / 32;
    int by_threads = a[A_MAX_THREADS_PER_MULTIPROCESSOR] / (warps * 32);
    // Registers are unknown here: assume 32 per thread, a typical figure.
    int by_regs = a[A_MAX_REGISTERS_PER_MULTIPROCESSOR] / (warps * 32 * 32);
    size_t per_block = dynamic_shared + size_t(a[A_RESERVED_SHARED_MEMORY_PER_BLOCK]);
    int by_shared = static_cast<int>(size_t(a[A_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR]) / per_block);
    (void)f;
    int n = a[A_MAX_BLOCKS_PER_MULTIPROCESSOR];
    for (int lim : {by_threads, by_regs, by_shared}) n = lim < n ? lim : n;
    return n;
}

}  // namespace

// ---------------------------------------------------------------------------
// The exported entry points
// ---------------------------------------------------------------------------

extern "C" {

CUresult cuInit(unsigned flags) {
    if (flags != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit flags must be 0");
    g_initialized = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* v) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = kDriverVersion;
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    for (const ErrorText& t : kErrors)
        if (t.code == e) return *s = t.name, CUDA_SUCCESS;
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    for (const ErrorText& t : kErrors)
        if (t.code == e) return *s = t.text, CUDA_SUCCESS;
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuDeviceGetCount(int* n) {
    if (CUresult r = need_init()) return r;
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (CUresult r = need_init()) return r;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return fail(CUDA_ERROR_INVALID_DEVICE, fmt("device %d requested; the emulated driver has one device (0)", ordinal));
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, static_cast<size_t>(len), "%s", device().name.c_str());
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (attr <= 0 || attr >= A_MAX) return fail(CUDA_ERROR_INVALID_VALUE, fmt("unknown device attribute %d", attr));
    *v = device().attrs[attr];
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = device().total_mem;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    memcpy(uuid, "parascan-emu-gpu", 16);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid_v2(uuid, d); }

CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    *major = device().attrs[A_COMPUTE_CAPABILITY_MAJOR];
    *minor = device().attrs[A_COMPUTE_CAPABILITY_MINOR];
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* out, CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    // The primary context lives as long as the process: streams and modules
    // of a released context may still be referenced by late destructors.
    if (!g_primary) {
        g_primary = new EmuContext;
        g_primary->primary = true;
        g_primary->limits[0] = 1024;  // CU_LIMIT_STACK_SIZE
    }
    ++g_primary->refs;
    *out = g_primary;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    if (!g_primary || g_primary->refs <= 0) return fail(CUDA_ERROR_INVALID_CONTEXT, "primary context released more often than retained");
    --g_primary->refs;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned* flags, int* active) {
    if (CUresult r = need_init()) return r;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    *flags = g_primary ? g_primary->flags : 0;
    *active = g_primary && g_primary->refs > 0;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext c) {
    if (CUresult r = need_init()) return r;
    if (c && !valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    if (t_ctx_stack.empty()) {
        if (c) t_ctx_stack.push_back(c);
    } else if (c) {
        t_ctx_stack.back() = c;
    } else {
        t_ctx_stack.pop_back();
    }
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* c) {
    if (CUresult r = need_init()) return r;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    *c = current_ctx();
    return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent_v2(CUcontext c) {
    if (CUresult r = need_init()) return r;
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    t_ctx_stack.push_back(c);
    return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent_v2(CUcontext* c) {
    if (CUresult r = need_init()) return r;
    if (t_ctx_stack.empty()) return CUDA_ERROR_INVALID_CONTEXT;
    if (c) *c = t_ctx_stack.back();
    t_ctx_stack.pop_back();
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice* d) {
    if (CUresult r = need_init()) return r;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(current_ctx())) return CUDA_ERROR_INVALID_CONTEXT;
    *d = 0;
    return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
    if (CUresult r = need_init()) return r;
    EmuContext* c = current_ctx();
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    return synchronize_context(c);
}

CUresult cuCtxGetApiVersion(CUcontext c, unsigned* v) {
    if (CUresult r = need_init()) return r;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (c && !valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    *v = kDriverVersion;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetFlags(unsigned* flags) {
    if (CUresult r = need_init()) return r;
    EmuContext* c = current_ctx();
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    *flags = c->flags;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetFlags(unsigned flags) {
    if (CUresult r = need_init()) return r;
    EmuContext* c = current_ctx();
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    c->flags = flags;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetLimit(size_t* v, int limit) {
    if (CUresult r = need_init()) return r;
    EmuContext* c = current_ctx();
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    if (limit < 0 || limit >= 16) return CUDA_ERROR_UNSUPPORTED_LIMIT;
    *v = c->limits[limit];
    return CUDA_SUCCESS;
}

CUresult cuCtxSetLimit(int limit, size_t v) {
    if (CUresult r = need_init()) return r;
    EmuContext* c = current_ctx();
    if (!valid_ctx(c)) return CUDA_ERROR_INVALID_CONTEXT;
    if (limit < 0 || limit >= 16) return CUDA_ERROR_UNSUPPORTED_LIMIT;
    c->limits[limit] = v;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
    if (CUresult r = need_init()) return r;
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCacheConfig(int* config) {
    if (CUresult r = need_init()) return r;
    if (!config) return CUDA_ERROR_INVALID_VALUE;
    *config = 0;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCacheConfig(int) { return need_init(); }

// Streams ------------------------------------------------------------------

CUresult cuStreamCreateWithPriority(CUstream* out, unsigned flags, int priority) {
    if (CUresult r = need_init()) return r;
    if (!out || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    EmuContext* c = current_ctx();
    if (!valid_ctx(c)) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuStreamCreate without a current context");
    *out = new_stream(c, flags, priority);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* out, unsigned flags) { return cuStreamCreateWithPriority(out, flags, 0); }

CUresult cuStreamDestroy_v2(CUstream hs) {
    if (CUresult r = need_init()) return r;
    if (reinterpret_cast<uintptr_t>(hs) <= 2) return CUDA_ERROR_INVALID_HANDLE;
    {
        std::lock_guard<std::mutex> lock(g_ctx_mu);
        if (!g_streams.count(hs)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy of an unknown stream");
        g_streams.erase(hs);
    }
    {
        std::lock_guard<std::mutex> lock(hs->ctx->mu);
        hs->ctx->streams.erase(hs);
    }
    // As on the GPU, work already queued still runs; the call does not wait
    // for it, so the stream retires on a detached thread.
    std::thread([hs] {
        hs->shut_down();
        delete hs;
    }).detach();
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream hs) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    return s->synchronize();
}

CUresult cuStreamQuery(CUstream hs) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    return s->idle() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuStreamGetFlags(CUstream hs, unsigned* flags) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (!flags) return CUDA_ERROR_INVALID_VALUE;
    *flags = s->flags;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetPriority(CUstream hs, int* priority) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (!priority) return CUDA_ERROR_INVALID_VALUE;
    *priority = s->priority;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetCtx(CUstream hs, CUcontext* c) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    *c = s->ctx;
    return CUDA_SUCCESS;
}

CUresult cuStreamIsCapturing(CUstream hs, int* status) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    *status = 0;  // CU_STREAM_CAPTURE_STATUS_NONE
    return CUDA_SUCCESS;
}

CUresult cuStreamWaitEvent(CUstream hs, CUevent e, unsigned flags) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    if (CUresult r = resolve_event(e)) return r;
    if (flags > 1) return CUDA_ERROR_INVALID_VALUE;
    uint64_t target;
    {
        std::lock_guard<std::mutex> lock(e->mu);
        target = e->recorded;
    }
    // Waits for the record that was current at the call, as CUDA defines it.
    s->enqueue([e, target] {
        std::unique_lock<std::mutex> lock(e->mu);
        e->cv.wait(lock, [&] { return e->completed >= target; });
        return CUDA_SUCCESS;
    });
    return CUDA_SUCCESS;
}

CUresult cuLaunchHostFunc(CUstream hs, CUhostFn fn, void* data) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (!fn) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    s->enqueue([fn, data] {
        fn(data);
        return CUDA_SUCCESS;
    });
    return CUDA_SUCCESS;
}

// Events -------------------------------------------------------------------

CUresult cuEventCreate(CUevent* out, unsigned flags) {
    if (CUresult r = need_init()) return r;
    if (!out || flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(current_ctx())) return CUDA_ERROR_INVALID_CONTEXT;
    auto* e = new EmuEvent;
    e->flags = flags;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    g_events.insert(e);
    *out = e;
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent e) {
    if (CUresult r = need_init()) return r;
    {
        std::lock_guard<std::mutex> lock(g_ctx_mu);
        if (!e || !g_events.count(e)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventDestroy of an unknown event");
        g_events.erase(e);
    }
    // A stream may still hold a record or wait on it: keep the object (a few
    // bytes) rather than risk a use after free in the emulator itself.
    return CUDA_SUCCESS;
}

CUresult cuEventRecordWithFlags(CUevent e, CUstream hs, unsigned) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_event(e)) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    uint64_t gen;
    {
        std::lock_guard<std::mutex> lock(e->mu);
        gen = ++e->recorded;
    }
    s->enqueue([e, gen] {
        std::lock_guard<std::mutex> lock(e->mu);
        if (gen > e->completed) {
            e->completed = gen;
            e->when = Clock::now();
        }
        e->cv.notify_all();
        return CUDA_SUCCESS;
    });
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent e, CUstream hs) { return cuEventRecordWithFlags(e, hs, 0); }

CUresult cuEventQuery(CUevent e) {
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_event(e)) return r;
    std::lock_guard<std::mutex> lock(e->mu);
    return e->complete_locked() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuEventSynchronize(CUevent e) {
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_event(e)) return r;
    std::unique_lock<std::mutex> lock(e->mu);
    e->cv.wait(lock, [&] { return e->complete_locked(); });
    return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
    if (CUresult r = need_init()) return r;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_event(start)) return r;
    if (CUresult r = resolve_event(end)) return r;
    if ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING)
        return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime on an event created with CU_EVENT_DISABLE_TIMING");
    Clock::time_point a, b;
    {
        std::lock_guard<std::mutex> lock(start->mu);
        if (!start->recorded) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: the start event was never recorded");
        if (!start->complete_locked()) return CUDA_ERROR_NOT_READY;
        a = start->when;
    }
    {
        std::lock_guard<std::mutex> lock(end->mu);
        if (!end->recorded) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: the end event was never recorded");
        if (!end->complete_locked()) return CUDA_ERROR_NOT_READY;
        b = end->when;
    }
    *ms = std::chrono::duration<float, std::milli>(b - a).count();
    return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }

// Memory -------------------------------------------------------------------

CUresult cuMemAlloc_v2(CUdeviceptr* out, size_t bytes) {
    if (CUresult r = need_init()) return r;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes");
    if (!valid_ctx(current_ctx())) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuMemAlloc without a current context");
    if (size_t free = free_device_bytes(); bytes > free)
        return fail(CUDA_ERROR_OUT_OF_MEMORY, fmt("cuMemAlloc of %zu bytes: the emulated device has %zu of %zu bytes free", bytes,
                                                  free, device().total_mem));
    char* p = nullptr;
    if (CUresult r = map_allocation(bytes, false, &p)) return fail(r, fmt("cuMemAlloc of %zu bytes: the host has no room for it", bytes));
    *out = reinterpret_cast<CUdeviceptr>(p);
    TRACE("alloc %zu bytes at %p", bytes, static_cast<void*>(p));
    return CUDA_SUCCESS;
}

CUresult cuMemAllocAsync(CUdeviceptr* out, size_t bytes, CUstream hs) {
    EmuStream* s = nullptr;
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_stream(hs, &s)) return r;
    // The address is needed now; the memory is usable by the stream's later
    // work, which is all stream-ordered allocation promises.
    return cuMemAlloc_v2(out, bytes);
}

CUresult cuMemFree_v2(CUdeviceptr p) { return free_device(p, nullptr, false); }

CUresult cuMemFreeAsync(CUdeviceptr p, CUstream hs) { return free_device(p, hs, true); }

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    if (CUresult r = need_init()) return r;
    if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
    *total = device().total_mem;
    *free_bytes = free_device_bytes();
    return CUDA_SUCCESS;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr* base, size_t* size, CUdeviceptr p) {
    if (CUresult r = need_init()) return r;
    Allocation a;
    if (!find_range(p, 1, false, &a)) return fail(CUDA_ERROR_NOT_FOUND, fmt("0x%llx is not inside a live allocation", p));
    if (base) *base = reinterpret_cast<CUdeviceptr>(a.ptr);
    if (size) *size = a.bytes;
    return CUDA_SUCCESS;
}

CUresult cuMemHostAlloc(void** out, size_t bytes, unsigned) {
    if (CUresult r = need_init()) return r;
    if (!out || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    char* p = nullptr;
    if (CUresult r = map_allocation(bytes, true, &p)) return r;
    *out = p;
    return CUDA_SUCCESS;
}

CUresult cuMemAllocHost_v2(void** out, size_t bytes) { return cuMemHostAlloc(out, bytes, 0); }

CUresult cuMemFreeHost(void* p) {
    if (CUresult r = need_init()) return r;
    wait_for_device();
    Allocation a;
    if (!take_allocation(reinterpret_cast<uintptr_t>(p), true, &a))
        return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFreeHost of memory cuMemHostAlloc did not return");
    unmap_allocation(a);
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) { return copy_htod(dst, src, n, nullptr, true); }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) { return copy_htod(dst, src, n, s, false); }
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) { return copy_dtoh(dst, src, n, nullptr, true); }
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) { return copy_dtoh(dst, src, n, s, false); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_dtod(dst, src, n, nullptr, true); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { return copy_dtod(dst, src, n, s, false); }
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { return memset_n<unsigned char>(dst, v, n, nullptr, true); }
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) { return memset_n<unsigned char>(dst, v, n, s, false); }
CUresult cuMemsetD16_v2(CUdeviceptr dst, unsigned short v, size_t n) { return memset_n<unsigned short>(dst, v, n, nullptr, true); }
CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream s) { return memset_n<unsigned short>(dst, v, n, s, false); }
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) { return memset_n<unsigned>(dst, v, n, nullptr, true); }
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, CUstream s) { return memset_n<unsigned>(dst, v, n, s, false); }

// Modules and functions ----------------------------------------------------

CUresult cuModuleLoadData(CUmodule* out, const void* image) { return load_module(out, image); }

CUresult cuModuleLoadDataEx(CUmodule* out, const void* image, unsigned, void*, void**) {
    return load_module(out, image);
}

CUresult cuModuleLoad(CUmodule* out, const char* path) {
    if (CUresult r = need_init()) return r;
    if (!path) return CUDA_ERROR_INVALID_VALUE;
    FILE* f = fopen(path, "rb");
    if (!f) return fail(CUDA_ERROR_FILE_NOT_FOUND, fmt("cannot open module file %s", path));
    std::vector<char> data;
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + got);
    fclose(f);
    data.push_back(0);
    return load_module(out, data.data());
}

CUresult cuModuleUnload(CUmodule m) {
    if (CUresult r = need_init()) return r;
    std::lock_guard<std::mutex> lock(g_ctx_mu);
    if (!m || !g_modules.count(m)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleUnload of an unknown module");
    // Launches already queued copied what they need; the functions stay
    // allocated (handles may linger in callers) but are no longer valid.
    g_modules.erase(m);
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* out, CUmodule m, const char* name) {
    if (CUresult r = need_init()) return r;
    if (!out || !name) return CUDA_ERROR_INVALID_VALUE;
    {
        std::lock_guard<std::mutex> lock(g_ctx_mu);
        if (!m || !g_modules.count(m)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleGetFunction on an unknown module");
    }
    if (!m->entries.count(name))
        return fail(CUDA_ERROR_NOT_FOUND, fmt("kernel '%s' is not an entry point of this %s module", name, m->kind.c_str()));
    std::lock_guard<std::mutex> lock(m->mu);
    auto it = m->functions.find(name);
    if (it == m->functions.end()) {
        int n = ps_emu_kernel_num_params(name);
        if (n < 0)
            return fail(CUDA_ERROR_NOT_FOUND,
                        fmt("kernel '%s' is in the module but was not compiled into the emulator (is it registered with PS_REGISTER_KERNEL?)", name));
        auto f = std::make_unique<EmuFunction>();
        f->module = m;
        f->name = name;
        for (int i = 0; i < n; ++i) {
            unsigned long long size = 0, align = 0;
            ps_emu_kernel_param_layout(name, i, &size, &align);
            f->sizes.push_back(size);
            f->aligns.push_back(align ? align : 1);
        }
        it = m->functions.emplace(name, std::move(f)).first;
    }
    *out = it->second.get();
    return CUDA_SUCCESS;
}

CUresult cuModuleGetGlobal_v2(CUdeviceptr*, size_t*, CUmodule, const char* name) {
    return fail(CUDA_ERROR_NOT_FOUND, fmt("module global '%s': the emulated driver has no module globals", name ? name : "(null)"));
}

CUresult cuFuncGetAttribute(int* v, int attr, CUfunction f) {
    if (CUresult r = need_init()) return r;
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_function(f)) return r;
    const int* a = device().attrs;
    switch (attr) {
        case F_MAX_THREADS_PER_BLOCK: *v = a[A_MAX_THREADS_PER_BLOCK]; break;
        case F_NUM_REGS: *v = 32; break;  // unknown on the CPU; a typical figure
        case F_PTX_VERSION:
        case F_BINARY_VERSION: *v = a[A_COMPUTE_CAPABILITY_MAJOR] * 10 + a[A_COMPUTE_CAPABILITY_MINOR]; break;
        case F_MAX_DYNAMIC_SHARED_SIZE_BYTES: *v = f->max_dynamic_shared.load(); break;
        case F_PREFERRED_SHARED_MEMORY_CARVEOUT: *v = f->carveout.load(); break;
        default:
            if (attr < 0 || attr >= F_MAX) return fail(CUDA_ERROR_INVALID_VALUE, fmt("unknown function attribute %d", attr));
            *v = 0;
    }
    return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction f, int attr, int v) {
    if (CUresult r = need_init()) return r;
    if (CUresult r = resolve_function(f)) return r;
    switch (attr) {
        case F_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            if (v < 0 || v > kOptinSharedBytes)
                return fail(CUDA_ERROR_INVALID_VALUE, fmt("kernel '%s': %d bytes of dynamic shared memory requested, at most %d",
                                                          f->name.c_str(), v, kOptinSharedBytes));
            f->max_dynamic_shared = v;
            return CUDA_SUCCESS;
        case F_PREFERRED_SHARED_MEMORY_CARVEOUT:
            if (v < -1 || v > 100) return CUDA_ERROR_INVALID_VALUE;
            f->carveout = v;
            return CUDA_SUCCESS;
        default:
            return fail(CUDA_ERROR_INVALID_VALUE, fmt("function attribute %d cannot be set", attr));
    }
}

CUresult cuFuncSetCacheConfig(CUfunction f, int) {
    if (CUresult r = need_init()) return r;
    return resolve_function(f);
}

CUresult cuFuncGetName(const char** name, CUfunction f) {
    if (CUresult r = need_init()) return r;
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_function(f)) return r;
    *name = f->name.c_str();
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, CUstream s, void** params, void** extra) {
    return launch(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, CUfunction f, int block, size_t shared, unsigned) {
    if (CUresult r = need_init()) return r;
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_function(f)) return r;
    *n = occupancy(f, block, shared);
    return CUDA_SUCCESS;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, CUfunction f, int block, size_t shared) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, f, block, shared, 0);
}

CUresult cuOccupancyMaxPotentialBlockSizeWithFlags(int* min_grid, int* block, CUfunction f, CUoccupancyB2DSize shared_of,
                                                   size_t shared, int limit, unsigned) {
    if (CUresult r = need_init()) return r;
    if (!min_grid || !block) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_function(f)) return r;
    int best = 32, best_threads = 0;
    int cap = limit > 0 && limit < 1024 ? limit : 1024;
    for (int b = 32; b <= cap; b += 32) {
        size_t sh = shared_of ? shared_of(b) : shared;
        int threads = occupancy(f, b, sh) * b;
        if (threads >= best_threads) best_threads = threads, best = b;
    }
    *block = best;
    *min_grid = occupancy(f, best, shared_of ? shared_of(best) : shared) * device().attrs[A_MULTIPROCESSOR_COUNT];
    return CUDA_SUCCESS;
}

CUresult cuOccupancyMaxPotentialBlockSize(int* min_grid, int* block, CUfunction f, CUoccupancyB2DSize shared_of,
                                          size_t shared, int limit) {
    return cuOccupancyMaxPotentialBlockSizeWithFlags(min_grid, block, f, shared_of, shared, limit, 0);
}

CUresult cuOccupancyAvailableDynamicSMemPerBlock(size_t* bytes, CUfunction f, int blocks, int block) {
    if (CUresult r = need_init()) return r;
    if (!bytes || blocks <= 0 || block <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = resolve_function(f)) return r;
    const int* a = device().attrs;
    size_t per = size_t(a[A_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR]) / size_t(blocks);
    per = per > size_t(a[A_RESERVED_SHARED_MEMORY_PER_BLOCK]) ? per - a[A_RESERVED_SHARED_MEMORY_PER_BLOCK] : 0;
    *bytes = per < size_t(kOptinSharedBytes) ? per : size_t(kOptinSharedBytes);
    return CUDA_SUCCESS;
}

// Everything else cudarc can resolve: an error with a message, never a
// missing symbol (cudarc would panic) or a crash.
#define PS_DRIVER_STUB(name) \
    CUresult name() { return unimplemented(#name); }
#include "driver_stubs.inc"
#undef PS_DRIVER_STUB

}  // extern "C"
