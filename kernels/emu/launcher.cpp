// launcher.cpp: the runtime of the emulated-kernel backend.
//
// Executes a CUDA grid on the CPU: a pool of OS threads ("workers") pulls
// block indices from an atomic counter; a worker runs one block at a time,
// each CUDA thread of the block as a fiber on its own small stack. Fibers are
// cooperatively scheduled: a fiber runs until it reaches a barrier
// (__syncthreads, a warp shuffle or vote, __syncwarp) or exits; when every
// fiber of the group that a barrier covers has arrived, the group is released
// and the scheduler resumes the released fibers in the launch's fiber order
// (forward, reverse or seeded shuffle), so a missing barrier shows up as an
// order-dependent result.
//
// Context switches use a small hand-written routine on x86-64 (swapcontext
// makes a system call per switch, which would make a 256-thread block with a
// few barriers cost milliseconds) and glibc's ucontext everywhere else, or
// when a shadow stack is active, or when PS_EMU_UCONTEXT=1 is set.
//
// See kernels/emu/README.md for the CUDA subset and the C ABI (ps_emu.h).

#include "simt.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <map>
#include <cstdarg>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

// Builds with AddressSanitizer annotate the fiber switches.
#if defined(__SANITIZE_ADDRESS__)
#define PS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PS_EMU_ASAN 1
#endif
#endif
#ifndef PS_EMU_ASAN
#define PS_EMU_ASAN 0
#endif
#if PS_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace ps_emu {

thread_local BuiltinVars tls_builtins;

namespace {

// ---------------------------------------------------------------------------
// Limits (CUDA's, sm_90)
// ---------------------------------------------------------------------------

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimXY = 1024;
constexpr unsigned kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimX = 0x7fffffffu;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr size_t kMaxSharedPerBlock = 227 * 1024;  // static + dynamic, with the opt-in attribute
constexpr size_t kMaxStaticShared = 48 * 1024;     // nvcc rejects more static __shared__
constexpr size_t kRedzone = 64;                    // guard bytes after each shared region
constexpr size_t kArenaBytes = 1024 * 1024;        // per worker; holds regions and guards
constexpr size_t kStackCanary = 64;                // checked bytes at the low end of a stack
constexpr unsigned char kPoison = 0xFF;            // uninitialized shared memory: NaN / -1
constexpr unsigned char kGuardByte = 0xA5;         // redzone and stack canary pattern
constexpr size_t kDefaultStackBytes = 64 * 1024;
constexpr size_t kMinStackBytes = 16 * 1024;
constexpr size_t kMaxStackBytes = 64 * 1024 * 1024;
constexpr size_t kAltStackBytes = 64 * 1024;
constexpr unsigned kMaxWorkers = 1024;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return std::string();
    if (static_cast<size_t>(n) < sizeof buf) return std::string(buf, static_cast<size_t>(n));
    std::string s(static_cast<size_t>(n) + 1, '\0');
    va_start(ap, fmt);
    vsnprintf(&s[0], s.size(), fmt, ap);
    va_end(ap);
    s.resize(static_cast<size_t>(n));
    return s;
}

// "…/kernels/foo.cu" -> "kernels/foo.cu": messages stay short and free of
// build-machine paths.
const char* short_path(const char* file) {
    if (!file) return "?";
    const char* best = nullptr;
    for (const char* p = strstr(file, "kernels/"); p; p = strstr(p + 1, "kernels/")) best = p;
    if (best) return best;
    const char* slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

std::string site(const char* what, const char* file, int line) {
    return format("%s at %s:%d", what ? what : "?", short_path(file), line);
}

size_t page_size() {
    static const size_t p = [] {
        long v = sysconf(_SC_PAGESIZE);
        return v > 0 ? static_cast<size_t>(v) : size_t(4096);
    }();
    return p;
}

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Where a kernel's illegal access landed, relative to the nearest live
// ps_emu_alloc buffer (ps_emu_last_fault).
struct FaultInfo {
    int kind = 0;  // 0 none, 1 with a nearest buffer, 2 no buffer live
    uint64_t address = 0;
    uint64_t buffer = 0;
    uint64_t buffer_bytes = 0;
    int64_t distance = 0;
    int is_write = -1;
};

thread_local std::string tls_last_error;
thread_local FaultInfo tls_last_fault;

int set_error(int code, std::string msg) {
    tls_last_error = std::move(msg);
    return code;
}

// ---------------------------------------------------------------------------
// Kernel registry
// ---------------------------------------------------------------------------

struct KernelInfo {
    const char* name;  // string literal from the registration macro: static storage
    detail::KernelEntry entry;
    int num_params;
    const size_t* sizes;   // num_params entries, static storage (the registration's)
    const size_t* aligns;  // likewise
    const char* file;
    const char* duplicate_file;  // set when another function took the same name
};

struct Registry {
    std::mutex mu;
    std::vector<KernelInfo> kernels;
    bool sorted = true;

    void sort_locked() {
        if (sorted) return;
        std::sort(kernels.begin(), kernels.end(),
                  [](const KernelInfo& a, const KernelInfo& b) { return strcmp(a.name, b.name) < 0; });
        sorted = true;
    }
    const KernelInfo* find_locked(const char* name) {
        sort_locked();
        auto it = std::lower_bound(
            kernels.begin(), kernels.end(), name,
            [](const KernelInfo& k, const char* n) { return strcmp(k.name, n) < 0; });
        if (it != kernels.end() && strcmp(it->name, name) == 0) return &*it;
        return nullptr;
    }
};

// Never destroyed: registrations run in static constructors of other
// translation units and launches may run during static destruction.
Registry& registry() {
    static Registry* r = new Registry;
    return *r;
}

// ---------------------------------------------------------------------------
// Execution contexts
// ---------------------------------------------------------------------------

#if defined(__x86_64__) && !defined(PS_EMU_USE_UCONTEXT)
#define PS_EMU_HAVE_ASM_SWITCH 1
#else
#define PS_EMU_HAVE_ASM_SWITCH 0
#endif

#if PS_EMU_HAVE_ASM_SWITCH
// void ps_emu_switch_x86_64(void** save_sp, void* load_sp)
// Saves the callee-saved registers (System V: rbx, rbp, r12-r15) on the
// current stack, stores the stack pointer in *save_sp, switches to load_sp
// and restores the same frame from there. The MXCSR and x87 control words
// are callee-saved too, but loading them costs more than the rest of the
// switch together; every fiber starts with the scheduler's and kernels do
// not change them (fesetround & co. are outside the subset).
extern "C" void ps_emu_switch_x86_64(void** save_sp, void* load_sp);
asm(R"(
    .pushsection .text
    .p2align 4
    .globl ps_emu_switch_x86_64
    .hidden ps_emu_switch_x86_64
    .type ps_emu_switch_x86_64,@function
ps_emu_switch_x86_64:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ps_emu_switch_x86_64,.-ps_emu_switch_x86_64
    .popsection
)");

// With a shadow stack the hand-made first frame would not match it; rdsspq
// is a no-op (leaves 0) when no shadow stack is active.
bool shadow_stack_active() {
    unsigned long long ssp = 0;
    asm volatile("rdsspq %0" : "+r"(ssp));
    return ssp != 0;
}
#endif

bool decide_ucontext() {
    static const bool v = [] {
#if PS_EMU_HAVE_ASM_SWITCH
        const char* e = getenv("PS_EMU_UCONTEXT");
        if (e && *e && strcmp(e, "0") != 0) return true;
        return shadow_stack_active();
#else
        return true;
#endif
    }();
    return v;
}

// Decided once per process (first launch), read on every switch.
bool g_use_ucontext = true;

inline bool use_ucontext() { return g_use_ucontext; }

// A fiber's or the scheduler's saved state: the stack pointer for the asm
// switch, or a ucontext_t (kept out of line: it is about 1 KB and would push
// the hot fields of neighbouring fibers onto different cache lines).
struct Context {
    void* sp = nullptr;
    ucontext_t* uc = nullptr;
#if PS_EMU_ASAN
    // AddressSanitizer must be told which stack the code runs on.
    const void* asan_bottom = nullptr;
    size_t asan_size = 0;
    void* asan_fake_stack = nullptr;
#endif
};

void ctx_make(Context& c, char* stack_lo, size_t stack_bytes, void (*entry)()) {
#if PS_EMU_ASAN
    // Frames abandoned by earlier blocks left their redzones poisoned.
    __asan_unpoison_memory_region(stack_lo, stack_bytes);
    c.asan_bottom = stack_lo;
    c.asan_size = stack_bytes;
#endif
#if PS_EMU_HAVE_ASM_SWITCH
    if (!use_ucontext()) {
        uintptr_t top = (reinterpret_cast<uintptr_t>(stack_lo) + stack_bytes) & ~uintptr_t(15);
        uint64_t* p = reinterpret_cast<uint64_t*>(top);
        *--p = 0;                                     // entry's return address: it never returns
        *--p = reinterpret_cast<uintptr_t>(entry);    // where the switch's `ret` goes
        for (int i = 0; i < 6; ++i) *--p = 0;         // rbp, rbx, r12-r15
        c.sp = p;
        return;
    }
#endif
    if (getcontext(c.uc) != 0) abort();
    c.uc->uc_stack.ss_sp = stack_lo;
    c.uc->uc_stack.ss_size = stack_bytes;
    c.uc->uc_link = nullptr;
    makecontext(c.uc, entry, 0);
}

inline void ctx_switch(Context& from, Context& to) {
#if PS_EMU_ASAN
    __sanitizer_start_switch_fiber(&from.asan_fake_stack, to.asan_bottom, to.asan_size);
#endif
#if PS_EMU_HAVE_ASM_SWITCH
    if (!use_ucontext())
        ps_emu_switch_x86_64(&from.sp, to.sp);
    else
#endif
        swapcontext(from.uc, to.uc);
#if PS_EMU_ASAN
    __sanitizer_finish_switch_fiber(from.asan_fake_stack, nullptr, nullptr);
#endif
}

// ---------------------------------------------------------------------------
// Launch, worker, block state
// ---------------------------------------------------------------------------

// A __stcg that other blocks do not see yet (weak-memory mode).
struct PendingStore {
    char* addr;
    unsigned fiber;
    unsigned bytes;
    unsigned char data[detail::kMaxPendingStore];
};

struct Launch {
    const KernelInfo* kernel = nullptr;
    void** args = nullptr;
    uint3 grid{1, 1, 1};
    uint3 block{1, 1, 1};
    unsigned nthreads = 1;
    size_t dynamic_shared = 0;
    int order = PS_EMU_ORDER_FORWARD;
    uint64_t seed = 0;
    uint64_t nblocks = 0;
    size_t stack_bytes = kDefaultStackBytes;
    bool weak_memory = true;
    // Subnormal policy (one rule for every backend): f32 arithmetic flushes
    // subnormal inputs and results to zero, as nvcc's -ftz=true does on the
    // GPU and the CPU engine's f32 pool does; f64 arithmetic keeps IEEE
    // subnormals. Chosen per kernel by its dtype suffix ("_f64": IEEE).
    bool flush_subnormals = true;

    std::atomic<uint64_t> next_block{0};
    std::atomic<bool> stop{false};
    std::mutex mu;
    int err_code = 0;
    std::string err;
    FaultInfo fault;

    void fail(int code, std::string msg, const FaultInfo& f = FaultInfo{}) {
        std::lock_guard<std::mutex> lock(mu);
        if (err_code == 0) {
            err_code = code;
            err = std::move(msg);
            fault = f;
        }
        stop.store(true, std::memory_order_relaxed);
    }
};

enum class FiberState : uint8_t { Runnable, Running, BlockWait, WarpWait, Done };

struct Fiber {
    Context ctx;
    char* stack_lo = nullptr;
    uint3 tid{0, 0, 0};
    unsigned index = 0, warp = 0, lane = 0;
    FiberState state = FiberState::Runnable;
    unsigned slot = 0;  // exchange buffer / barrier result this fiber reads after release
    const char* what = nullptr;
    const char* file = nullptr;
    int line = 0;
};

struct Warp {
    uint64_t slots[2][kWarpSize];
    unsigned live = 0;      // lanes that exist (partial last warp)
    unsigned exited = 0;    // lanes that returned
    unsigned nlanes = 0;
    unsigned waiting = 0;   // lanes at a warp operation
    unsigned cur = 0;       // slots[cur] collects the current operation
};

struct SharedSlot {
    const void* key;
    size_t offset;
    size_t bytes;
    const char* name;
    const char* file;
    int line;
};

struct Worker {
    // Resources, kept across blocks and launches.
    char* stacks = nullptr;
    size_t stacks_bytes = 0;
    size_t stack_bytes = 0;
    size_t guard_bytes = 0;
    size_t slot_bytes = 0;
    unsigned nslots = 0;
    char* arena = nullptr;
    char* altstack = nullptr;
    bool guarded = false;  // every stack has its guard page
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<ucontext_t> ucontexts;  // ucontext fallback only: fibers, then the scheduler
    Context sched;

    // Current launch and block.
    Launch* launch = nullptr;
    uint3 block_idx{0, 0, 0};
    unsigned nthreads = 0;
    unsigned done = 0;
    unsigned block_waiting = 0;
    int block_accum = 0;
    unsigned block_cur = 0;
    int block_result[2] = {0, 0};
    std::vector<unsigned> runnable, yielded;
    size_t pass_pos = 0;  // next index into runnable during a pass
    std::vector<SharedSlot> shared;
    size_t static_cursor = 0;
    size_t static_used = 0;
    uint64_t rng = 0;

    bool failed = false;
    int err_code = 0;
    std::string err;
    FaultInfo fault;

    // Illegal-address recovery: the fault handler jumps back to fault_jmp
    // (set by schedule_block on the scheduler's stack) while fault_armed.
    sigjmp_buf fault_jmp;
    volatile bool fault_armed = false;
    uintptr_t fault_addr = 0;
    unsigned fault_fiber = 0;
    int fault_write = -1;

    // Weak-memory mode: the running block's pending __stcg stores, and those
    // of finished blocks, which reach memory at the end of the kernel.
    std::vector<PendingStore> pending, retired;

    Worker() = default;
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() {
        if (stacks) munmap(stacks, stacks_bytes);
        if (arena) munmap(arena, kArenaBytes);
        if (altstack) munmap(altstack, kAltStackBytes);
    }

    // Makes room for `n` fibers with stacks of `bytes`. Throws bad_alloc.
    void reserve(unsigned n, size_t bytes) {
        if (!arena) {
            void* a = mmap(nullptr, kArenaBytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (a == MAP_FAILED) throw std::bad_alloc();
            arena = static_cast<char*>(a);
#if PS_EMU_ASAN
            // The range may have held fiber stacks before: clear stale poison.
            __asan_unpoison_memory_region(arena, kArenaBytes);
#endif
        }
        if (stacks && stack_bytes == bytes && nslots >= n) return;
        if (stacks) {
            munmap(stacks, stacks_bytes);
            stacks = nullptr;
        }
        unsigned want = static_cast<unsigned>(round_up(std::max(n, 32u), 32));
        guard_bytes = page_size();
        slot_bytes = guard_bytes + bytes;
        stacks_bytes = slot_bytes * want;
        void* m = mmap(nullptr, stacks_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) throw std::bad_alloc();
        stacks = static_cast<char*>(m);
#if PS_EMU_ASAN
        __asan_unpoison_memory_region(stacks, stacks_bytes);
#endif
        stack_bytes = bytes;
        nslots = want;
        // A PROT_NONE page below every stack turns an overflow into a fault
        // that the signal handler reports; if the kernel refuses (map count
        // limit), a canary checked at block end catches most overflows.
        guarded = true;
        for (unsigned i = 0; i < want && guarded; ++i)
            guarded = mprotect(stacks + i * slot_bytes, guard_bytes, PROT_NONE) == 0;
        fibers.resize(want);
        for (unsigned i = 0; i < want; ++i) fibers[i].stack_lo = stacks + i * slot_bytes + guard_bytes;
        warps.resize(want / kWarpSize);
        if (use_ucontext()) {
            ucontexts.resize(want + 1);
            for (unsigned i = 0; i < want; ++i) fibers[i].ctx.uc = &ucontexts[i];
            sched.uc = &ucontexts[want];
        }
        runnable.reserve(want);
        yielded.reserve(want);
    }
};

thread_local Worker* tls_worker = nullptr;
thread_local Fiber* tls_fiber = nullptr;

std::mutex g_pool_mu;
std::vector<std::unique_ptr<Worker>>& pool() {
    static auto* p = new std::vector<std::unique_ptr<Worker>>;
    return *p;
}

std::unique_ptr<Worker> acquire_worker(unsigned nthreads, size_t stack_bytes) {
    std::unique_ptr<Worker> w;
    {
        std::lock_guard<std::mutex> lock(g_pool_mu);
        auto& p = pool();
        if (!p.empty()) {
            auto it = std::find_if(p.begin(), p.end(), [&](const std::unique_ptr<Worker>& x) {
                return x->stack_bytes == stack_bytes && x->nslots >= nthreads;
            });
            if (it == p.end()) it = p.end() - 1;
            w = std::move(*it);
            p.erase(it);
        }
    }
    if (!w) w.reset(new Worker);
    w->reserve(nthreads, stack_bytes);
    return w;
}

// Idle workers kept for later launches (their stacks stay mapped and their
// touched pages resident): enough for a launch on every CPU from a couple of
// host threads at once.
size_t pool_limit() {
    static const size_t limit = std::max<size_t>(4, 2 * std::thread::hardware_concurrency());
    return limit;
}

void release_worker(std::unique_ptr<Worker> w) {
    if (!w) return;
    w->launch = nullptr;
    std::lock_guard<std::mutex> lock(g_pool_mu);
    if (pool().size() < pool_limit()) pool().push_back(std::move(w));
}

std::atomic<size_t> g_stack_bytes{0};

size_t normalize_stack(unsigned long long bytes) {
    size_t b = static_cast<size_t>(std::min<unsigned long long>(bytes, kMaxStackBytes));
    b = std::max(b, kMinStackBytes);
    return round_up(b, page_size());
}

size_t stack_size() {
    size_t s = g_stack_bytes.load(std::memory_order_relaxed);
    if (s) return s;
    size_t d = kDefaultStackBytes;
    if (const char* e = getenv("PS_EMU_STACK_KIB")) {
        char* end = nullptr;
        unsigned long long kib = strtoull(e, &end, 10);
        if (end != e && kib > 0) d = normalize_stack(kib * 1024ull);
    }
    size_t expected = 0;
    g_stack_bytes.compare_exchange_strong(expected, d);
    return g_stack_bytes.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------

std::string thread_name(const Worker& w, const Fiber& f) {
    const uint3 b = w.launch->block;
    if (b.y == 1 && b.z == 1) return format("thread %u", f.tid.x);
    return format("thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z);
}

std::string block_prefix(const Worker& w) {
    return format("kernel '%s' block (%u,%u,%u)", w.launch->kernel->name, w.block_idx.x,
                  w.block_idx.y, w.block_idx.z);
}

// Ends the block from the scheduler's side.
void block_fail(Worker& w, int code, std::string msg) {
    if (w.failed) return;
    w.failed = true;
    w.err_code = code;
    w.err = std::move(msg);
}

// Ends the block from inside a fiber after block_fail recorded the error:
// returns to the scheduler for good (the block's other fibers are
// abandoned). Nothing that owns heap memory may be alive in the caller's
// frame, since its destructor never runs.
[[noreturn]] void abandon_fiber() {
    Worker* w = tls_worker;
    Fiber* f = tls_fiber;
    f->state = FiberState::Done;
    ctx_switch(f->ctx, w->sched);
    abort();  // never resumed
}

[[noreturn]] void outside_kernel(const char* what, const char* file, int line) {
    fprintf(stderr, "ps_emu: %s called outside an emulated kernel (%s:%d)\n", what,
            short_path(file), line);
    abort();
}

struct FiberRef {
    Worker* w;
    Fiber* f;
};

inline FiberRef current(const char* what, const char* file, int line) {
    Fiber* f = tls_fiber;
    if (!f) outside_kernel(what, file, line);
    return FiberRef{tls_worker, f};
}

// Leaves the running context `from` (a fiber that blocked, yielded or
// finished, or the scheduler starting a pass) for the next runnable fiber of
// the current pass, or for the scheduler when the pass is over. Switching
// fiber to fiber directly halves the number of context switches.
void switch_away(Worker& w, Context& from) {
    while (w.pass_pos < w.runnable.size()) {
        Fiber& next = w.fibers[w.runnable[w.pass_pos++]];
        if (next.state != FiberState::Runnable) continue;
        next.state = FiberState::Running;
        tls_fiber = &next;
        tls_builtins.thread_idx = next.tid;
        ctx_switch(from, next.ctx);
        return;
    }
    tls_fiber = nullptr;
    ctx_switch(from, w.sched);
}

inline void suspend(Worker& w, Fiber& f) { switch_away(w, f.ctx); }

std::string deadlock_report(Worker& w) {
    const std::string pre = block_prefix(w) + ": barrier divergence: ";
    // A warp operation that cannot complete because a lane of the warp is
    // elsewhere.
    for (unsigned wi = 0; wi * kWarpSize < w.nthreads; ++wi) {
        Warp& wp = w.warps[wi];
        if (wp.waiting == 0) continue;
        const Fiber* waiter = nullptr;
        const Fiber* other = nullptr;
        for (unsigned l = 0; l < wp.nlanes; ++l) {
            const Fiber& f = w.fibers[wi * kWarpSize + l];
            if (f.state == FiberState::WarpWait) {
                if (!waiter) waiter = &f;
            } else if (!other) {
                other = &f;
            }
        }
        if (!waiter || !other) continue;
        if (other->state == FiberState::Done)
            return pre + format("%s (lane %u of warp %u) exited while %u lanes of its warp wait at ",
                                thread_name(w, *other).c_str(), other->lane, wi, wp.waiting) +
                   site(waiter->what, waiter->file, waiter->line) +
                   " (every lane of a warp must take part in each warp operation)";
        return pre + format("%u lanes of warp %u wait at ", wp.waiting, wi) +
               site(waiter->what, waiter->file, waiter->line) + " while " +
               thread_name(w, *other) + format(" (lane %u) waits at ", other->lane) +
               site(other->what, other->file, other->line);
    }
    return pre + "no thread of the block can make progress";
}

// ---------------------------------------------------------------------------
// Fiber body
// ---------------------------------------------------------------------------

// Runs the kernel for the current fiber; false (error recorded) when a C++
// exception escaped it.
bool run_kernel_body() {
    Worker* w = tls_worker;
    std::string what;
    try {
        w->launch->kernel->entry(w->launch->args);
        return true;
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
        what = "unknown exception";
    }
    w = tls_worker;
    block_fail(*w, PS_EMU_ERR_KERNEL_FAULT,
               block_prefix(*w) + " " + thread_name(*w, *tls_fiber) +
                   ": a C++ exception escaped the kernel: " + what);
    return false;
}

void fiber_entry() {
#if PS_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    if (!run_kernel_body()) abandon_fiber();
    // Fibers never migrate, but re-read the thread-locals after the kernel.
    Worker* w = tls_worker;
    Fiber* f = tls_fiber;
    f->state = FiberState::Done;
    ++w->done;
    w->warps[f->warp].exited |= 1u << f->lane;
    switch_away(*w, f->ctx);
    abort();  // a finished fiber is never resumed
}

// ---------------------------------------------------------------------------
// Scheduler
// ---------------------------------------------------------------------------

void order_runnable(Worker& w) {
    auto& r = w.runnable;
    if (r.size() < 2) return;
    if (!std::is_sorted(r.begin(), r.end())) std::sort(r.begin(), r.end());
    switch (w.launch->order) {
        case PS_EMU_ORDER_REVERSE: std::reverse(r.begin(), r.end()); break;
        case PS_EMU_ORDER_SHUFFLE:
            for (size_t i = r.size() - 1; i > 0; --i) {
                uint64_t x = splitmix64(w.rng);
                size_t j = static_cast<size_t>((static_cast<ps_emu_u128>(x) * (i + 1)) >> 64);
                std::swap(r[i], r[j]);
            }
            break;
        default: break;
    }
}

inline bool same_text(const char* a, const char* b) { return a == b || strcmp(a, b) == 0; }

bool check_guard(const char* p, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (static_cast<unsigned char>(p[i]) != kGuardByte) return false;
    return true;
}

// Releases every group whose members have all arrived. Returns false (with
// the block failed) on divergence found while doing so.
bool release_groups(Worker& w) {
    // Warps.
    for (unsigned wi = 0; wi * kWarpSize < w.nthreads; ++wi) {
        Warp& wp = w.warps[wi];
        if (wp.waiting == 0 || wp.waiting != wp.nlanes) continue;
        Fiber* lanes = &w.fibers[wi * kWarpSize];
        for (unsigned l = 1; l < wp.nlanes; ++l) {
            if (!same_text(lanes[l].what, lanes[0].what)) {
                block_fail(w, PS_EMU_ERR_DIVERGENCE,
                           block_prefix(w) +
                               format(": barrier divergence: lanes of warp %u are at different warp "
                                      "operations: lane 0 at ",
                                      wi) +
                               site(lanes[0].what, lanes[0].file, lanes[0].line) +
                               format(", lane %u at ", l) +
                               site(lanes[l].what, lanes[l].file, lanes[l].line));
                return false;
            }
        }
        for (unsigned l = 0; l < wp.nlanes; ++l) {
            lanes[l].state = FiberState::Runnable;
            w.runnable.push_back(wi * kWarpSize + l);
        }
        wp.waiting = 0;
        wp.cur ^= 1u;
    }
    // The block.
    if (w.block_waiting > 0 && w.block_waiting + w.done == w.nthreads) {
        const Fiber* first = nullptr;
        const Fiber* exited = nullptr;
        for (unsigned i = 0; i < w.nthreads; ++i) {
            const Fiber& f = w.fibers[i];
            if (f.state == FiberState::Done) {
                if (!exited) exited = &f;
            } else if (!first) {
                first = &f;
            }
        }
        if (exited) {
            block_fail(w, PS_EMU_ERR_DIVERGENCE,
                       block_prefix(w) + ": barrier divergence: " + thread_name(w, *exited) +
                           format(" exited while %u threads wait at ", w.block_waiting) +
                           site(first->what, first->file, first->line) +
                           " (every thread of the block must reach each __syncthreads; an early "
                           "return before a barrier is outside the CUDA subset)");
            return false;
        }
        for (unsigned i = 0; i < w.nthreads; ++i) {
            const Fiber& f = w.fibers[i];
            if (f.line != first->line || !same_text(f.file, first->file) ||
                !same_text(f.what, first->what)) {
                block_fail(w, PS_EMU_ERR_DIVERGENCE,
                           block_prefix(w) + ": barrier divergence: threads wait at different barriers: " +
                               thread_name(w, *first) + " at " + site(first->what, first->file, first->line) +
                               ", " + thread_name(w, f) + " at " + site(f.what, f.file, f.line));
                return false;
            }
        }
        w.block_result[w.block_cur] = w.block_accum;
        w.block_accum = 0;
        w.block_cur ^= 1u;
        for (unsigned i = 0; i < w.nthreads; ++i) {
            w.fibers[i].state = FiberState::Runnable;
            w.runnable.push_back(i);
        }
        w.block_waiting = 0;
    }
    return true;
}

// The scheduler's passes over the block until every fiber exited. Returns
// false with the block failed on an error.
bool schedule_passes(Worker& w, unsigned n) {
    for (;;) {
        order_runnable(w);
        w.pass_pos = 0;
        switch_away(w, w.sched);  // back here when the pass is over or the block failed
        tls_fiber = nullptr;
        if (w.failed) return false;
        w.runnable.swap(w.yielded);
        w.yielded.clear();
        if (!release_groups(w)) return false;
        if (w.runnable.empty()) {
            if (w.done == n) return true;
            block_fail(w, PS_EMU_ERR_DIVERGENCE, deadlock_report(w));
            return false;
        }
    }
}

FaultInfo locate_address(uintptr_t addr);
std::string describe_fault(const FaultInfo& f);

// Runs the passes with illegal-address recovery armed: a fiber that faults
// outside every buffer lands back here through fault_handler's siglongjmp
// (the block's fibers are abandoned, as with abandon_fiber) and the block
// fails with PS_EMU_ERR_ILLEGAL_ADDRESS. Nothing changes w or n after the
// sigsetjmp, so they are valid after the jump.
__attribute__((noinline)) bool schedule_block(Worker& w, unsigned n) {
    if (sigsetjmp(w.fault_jmp, 0) != 0) {
        w.fault_armed = false;
        tls_fiber = nullptr;
        FaultInfo f = locate_address(w.fault_addr);
        f.is_write = w.fault_write;
        block_fail(w, PS_EMU_ERR_ILLEGAL_ADDRESS,
                   block_prefix(w) + " " + thread_name(w, w.fibers[w.fault_fiber]) +
                       ": illegal address: " + describe_fault(f));
        w.fault = f;
        return false;
    }
    w.fault_armed = true;
    const bool ok = schedule_passes(w, n);
    w.fault_armed = false;
    return ok;
}

bool run_block_body(Worker& w, uint64_t linear);

// Runs one block to completion. Returns false with w.err set on failure.
bool run_block(Worker& w, uint64_t linear) {
    w.fault = FaultInfo{};
    const bool ok = run_block_body(w, linear);
    // A block's unreleased __stcg stores reach memory at the end of the kernel.
    if (!w.pending.empty()) {
        w.retired.insert(w.retired.end(), w.pending.begin(), w.pending.end());
        w.pending.clear();
    }
    return ok;
}

bool run_block_body(Worker& w, uint64_t linear) {
    Launch& L = *w.launch;
    const unsigned n = L.nthreads;
    w.failed = false;
    w.nthreads = n;
    w.block_idx = uint3{static_cast<unsigned>(linear % L.grid.x),
                        static_cast<unsigned>((linear / L.grid.x) % L.grid.y),
                        static_cast<unsigned>(linear / (uint64_t(L.grid.x) * L.grid.y))};
    tls_builtins.block_idx = w.block_idx;

    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w.fibers[i];
        f.tid = uint3{i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
        f.index = i;
        f.warp = i / kWarpSize;
        f.lane = i % kWarpSize;
        f.state = FiberState::Runnable;
        f.slot = 0;
        f.what = f.file = nullptr;
        f.line = 0;
        if (!w.guarded) memset(f.stack_lo, kGuardByte, kStackCanary);
        // Stack tops a page apart would all land in the same cache sets;
        // shifting each by a different number of cache lines spreads them.
        ctx_make(f.ctx, f.stack_lo, w.stack_bytes - (i % 64) * 64, fiber_entry);
    }
    for (unsigned wi = 0; wi * kWarpSize < n; ++wi) {
        Warp& wp = w.warps[wi];
        wp.nlanes = std::min(kWarpSize, n - wi * kWarpSize);
        wp.live = wp.nlanes == kWarpSize ? 0xffffffffu : ((1u << wp.nlanes) - 1u);
        wp.exited = 0;
        wp.waiting = 0;
        wp.cur = 0;
    }
    // Shared memory: [guard][dynamic][guard][static slot][guard]...
    w.shared.clear();
    memset(w.arena, kGuardByte, kRedzone);
    memset(w.arena + kRedzone, kPoison, L.dynamic_shared);
    memset(w.arena + kRedzone + L.dynamic_shared, kGuardByte, kRedzone);
    w.static_cursor = round_up(2 * kRedzone + L.dynamic_shared, 16);
    w.static_used = 0;

    w.done = 0;
    w.block_waiting = 0;
    w.block_accum = 0;
    w.block_cur = 0;
    w.rng = L.seed ^ (linear * 0xd1b54a32d192ed03ull) ^ 0x5ca1ab1e0ddba11ull;
    w.runnable.clear();
    w.yielded.clear();
    for (unsigned i = 0; i < n; ++i) w.runnable.push_back(i);

    if (!schedule_block(w, n)) return false;

    // Out-of-bounds writes into the guard zones of shared memory.
    if (!check_guard(w.arena, kRedzone))
        block_fail(w, PS_EMU_ERR_SHARED_MEMORY,
                   block_prefix(w) +
                       ": shared-memory overflow: a write landed just before the dynamic shared memory");
    else if (!check_guard(w.arena + kRedzone + L.dynamic_shared, kRedzone))
        block_fail(w, PS_EMU_ERR_SHARED_MEMORY,
                   block_prefix(w) + format(": shared-memory overflow: a write landed past the end of "
                                            "the dynamic shared memory (%zu bytes given at launch)",
                                            L.dynamic_shared));
    for (const SharedSlot& s : w.shared) {
        if (w.failed) break;
        if (!check_guard(w.arena + s.offset + s.bytes, kRedzone))
            block_fail(w, PS_EMU_ERR_SHARED_MEMORY,
                       block_prefix(w) + format(": shared-memory overflow: a write landed past the end of "
                                                "'%s' (%zu bytes, declared at %s:%d)",
                                                s.name, s.bytes, short_path(s.file), s.line));
    }
    for (unsigned i = 0; i < n && !w.failed && !w.guarded; ++i)
        if (!check_guard(w.fibers[i].stack_lo, kStackCanary))
            block_fail(w, PS_EMU_ERR_KERNEL_FAULT,
                       block_prefix(w) + " " + thread_name(w, w.fibers[i]) +
                           format(": fiber stack overflow (stacks are %zu bytes; raise PS_EMU_STACK_KIB "
                                  "or ps_emu_set_stack_size, and keep large arrays off the stack)",
                                  w.stack_bytes));
    return !w.failed;
}

// ---------------------------------------------------------------------------
// Device memory: guarded buffers (ps_emu_alloc)
// ---------------------------------------------------------------------------

// Every buffer is a mapping of its own: [guard page][body][guard page].
struct GuardedBuffer {
    char* map;
    size_t map_bytes;
    char* ptr;
    size_t bytes;
};

std::mutex& guarded_mu() {
    static auto* m = new std::mutex;  // never destroyed, like the registry
    return *m;
}
std::map<uintptr_t, GuardedBuffer>& guarded_buffers() {  // by ptr
    static auto* m = new std::map<uintptr_t, GuardedBuffer>;
    return *m;
}

int default_guard() {
    static const int g = [] {
        const char* e = getenv("PS_EMU_GUARD");
        return e && strcmp(e, "start") == 0 ? int(PS_EMU_GUARD_START) : int(PS_EMU_GUARD_END);
    }();
    return g;
}

void* guarded_alloc(unsigned long long bytes, int guard) {
    if (guard == PS_EMU_GUARD_DEFAULT) guard = default_guard();
    if ((guard != PS_EMU_GUARD_END && guard != PS_EMU_GUARD_START) || bytes > (1ull << 46))
        return nullptr;
    const size_t page = page_size();
    const size_t n = static_cast<size_t>(bytes);
    const size_t body = round_up(n ? n : 1, page);
    const size_t total = body + 2 * page;
    void* m = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* base = static_cast<char*>(m);
    if (mprotect(base + page, body, PROT_READ | PROT_WRITE) != 0) {
        munmap(m, total);
        return nullptr;
    }
    // At the end: the start keeps the largest alignment (<= 16, float4's)
    // that still lets the last byte touch the guard page.
    char* ptr = guard == PS_EMU_GUARD_START ? base + page : base + page + body - n;
    try {
        std::lock_guard<std::mutex> lock(guarded_mu());
        guarded_buffers()[reinterpret_cast<uintptr_t>(ptr)] = GuardedBuffer{base, total, ptr, n};
    } catch (...) {
        munmap(m, total);
        return nullptr;
    }
    return ptr;
}

int guarded_free(void* p) {
    GuardedBuffer b;
    {
        std::lock_guard<std::mutex> lock(guarded_mu());
        auto it = guarded_buffers().find(reinterpret_cast<uintptr_t>(p));
        if (it == guarded_buffers().end()) return -1;
        b = it->second;
        guarded_buffers().erase(it);
    }
    munmap(b.map, b.map_bytes);
    return 0;
}

// The live buffer nearest to addr and addr's signed distance from it.
FaultInfo locate_address(uintptr_t addr) {
    FaultInfo f;
    f.address = addr;
    f.kind = 2;
    std::lock_guard<std::mutex> lock(guarded_mu());
    auto& m = guarded_buffers();
    auto consider = [&](const GuardedBuffer& b) {
        const uintptr_t lo = reinterpret_cast<uintptr_t>(b.ptr), hi = lo + b.bytes;
        const int64_t d = addr >= hi ? static_cast<int64_t>(addr - hi)
                                     : addr < lo ? -static_cast<int64_t>(lo - addr) : 0;
        const uint64_t mag = d < 0 ? static_cast<uint64_t>(-d) : static_cast<uint64_t>(d);
        const uint64_t best = f.distance < 0 ? static_cast<uint64_t>(-f.distance) : static_cast<uint64_t>(f.distance);
        if (f.kind == 2 || mag < best) {
            f.kind = 1;
            f.buffer = lo;
            f.buffer_bytes = b.bytes;
            f.distance = d;
        }
    };
    auto it = m.upper_bound(addr);
    if (it != m.end()) consider(it->second);
    if (it != m.begin()) consider(std::prev(it)->second);
    return f;
}

std::string describe_fault(const FaultInfo& f) {
    const char* access = f.is_write == 1 ? "a store" : f.is_write == 0 ? "a load" : "an access";
    std::string s = format("%s at 0x%llx", access, static_cast<unsigned long long>(f.address));
    if (f.kind != 1) return s + " (no device buffer is live)";
    if (f.distance >= 0)
        return s + format(" is %lld bytes past the end of the device buffer 0x%llx (%llu bytes; the "
                          "access is at byte offset %llu)",
                          static_cast<long long>(f.distance), static_cast<unsigned long long>(f.buffer),
                          static_cast<unsigned long long>(f.buffer_bytes),
                          static_cast<unsigned long long>(f.buffer_bytes + f.distance));
    return s + format(" is %lld bytes before the start of the device buffer 0x%llx (%llu bytes)",
                      static_cast<long long>(-f.distance), static_cast<unsigned long long>(f.buffer),
                      static_cast<unsigned long long>(f.buffer_bytes));
}

// ---------------------------------------------------------------------------
// Weak-memory mode: store buffers for __stcg
// ---------------------------------------------------------------------------

bool weak_memory_enabled() {
    static const bool on = [] {
        const char* e = getenv("PS_EMU_WEAK_MEMORY");
        return !(e && strcmp(e, "0") == 0);
    }();
    return on;
}

// ---------------------------------------------------------------------------
// Stack-overflow reporting (guard pages)
// ---------------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;
std::once_flag g_handler_once;

void append(char* buf, size_t& pos, size_t cap, const char* s) {
    while (*s && pos + 1 < cap) buf[pos++] = *s++;
}
void append_uint(char* buf, size_t& pos, size_t cap, unsigned long long v) {
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v);
    while (k > 0 && pos + 1 < cap) buf[pos++] = tmp[--k];
}

void fault_handler(int sig, siginfo_t* info, void* uctx) {
    Worker* w = tls_worker;
    char* addr = static_cast<char*>(info->si_addr);
    if (w && w->stacks && w->launch && addr >= w->stacks && addr < w->stacks + w->stacks_bytes &&
        static_cast<size_t>(addr - w->stacks) % w->slot_bytes < w->guard_bytes) {
        size_t fiber = static_cast<size_t>(addr - w->stacks) / w->slot_bytes;
        char buf[512];
        size_t pos = 0;
        const size_t cap = sizeof buf;
        append(buf, pos, cap, "ps_emu: fiber stack overflow in kernel '");
        append(buf, pos, cap, w->launch->kernel->name);
        append(buf, pos, cap, "' block (");
        append_uint(buf, pos, cap, w->block_idx.x);
        append(buf, pos, cap, ",");
        append_uint(buf, pos, cap, w->block_idx.y);
        append(buf, pos, cap, ",");
        append_uint(buf, pos, cap, w->block_idx.z);
        append(buf, pos, cap, ") thread ");
        append_uint(buf, pos, cap, fiber);
        append(buf, pos, cap, ": fiber stacks are ");
        append_uint(buf, pos, cap, w->stack_bytes);
        append(buf, pos, cap, " bytes (raise PS_EMU_STACK_KIB or call ps_emu_set_stack_size; kernels "
                              "must not keep large arrays on the stack)\n");
        ssize_t ignored = write(2, buf, pos);
        (void)ignored;
        abort();
    }
    // A kernel's load or store outside every buffer (a guard page, or
    // nothing mapped): record it and return to the block's scheduler.
    Fiber* f = tls_fiber;
    if (w && f && w->launch && w->fault_armed) {
        w->fault_armed = false;
        w->fault_addr = reinterpret_cast<uintptr_t>(addr);
        w->fault_fiber = f->index;
        w->fault_write = -1;
#if defined(__x86_64__) && defined(__linux__)
        // Page-fault error code: bit 1 set for a write.
        if (sig == SIGSEGV && uctx)
            w->fault_write = (static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#endif
        // The jump leaves the handler for good: unblock the signal it runs under.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGSEGV);
        sigaddset(&set, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
        siglongjmp(w->fault_jmp, 1);
    }
    // Not ours: hand over to whoever was installed before.
    struct sigaction* old = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    // Default action: reinstall it; the faulting instruction runs again.
    signal(sig, SIG_DFL);
}

void init_once() {
    std::call_once(g_handler_once, [] {
        g_use_ucontext = decide_ucontext();
        const char* e = getenv("PS_EMU_NO_SIGNAL_HANDLER");
        if (e && *e && strcmp(e, "0") != 0) return;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
}

// The handler must run on an alternate stack (the faulting one is full).
// Threads that already have one (Rust's do) keep theirs.
struct AltStackScope {
    bool installed = false;
    explicit AltStackScope(Worker& w) {
        stack_t cur;
        if (sigaltstack(nullptr, &cur) != 0 || !(cur.ss_flags & SS_DISABLE)) return;
        if (!w.altstack) {
            void* m = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) return;
            w.altstack = static_cast<char*>(m);
        }
        stack_t ss;
        ss.ss_sp = w.altstack;
        ss.ss_size = kAltStackBytes;
        ss.ss_flags = 0;
        installed = sigaltstack(&ss, nullptr) == 0;
    }
    ~AltStackScope() {
        if (!installed) return;
        stack_t ss;
        memset(&ss, 0, sizeof ss);
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, nullptr);
    }
};

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

// Sets this thread's MXCSR flush-to-zero and denormals-are-zero bits for
// the launch and restores the caller's on exit. Fibers share their
// worker's MXCSR (the context switch does not save it), so setting it once
// per worker covers every block the worker runs. x86 only; elsewhere the
// host's default (IEEE) stays, which only matters for subnormal values.
struct SubnormalMode {
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved;
    explicit SubnormalMode(bool flush) : saved(_mm_getcsr()) {
        constexpr unsigned kFtzDaz = (1u << 15) | (1u << 6);
        _mm_setcsr(flush ? (saved | kFtzDaz) : (saved & ~kFtzDaz));
    }
    ~SubnormalMode() { _mm_setcsr(saved); }
#else
    explicit SubnormalMode(bool) {}
#endif
    SubnormalMode(const SubnormalMode&) = delete;
    SubnormalMode& operator=(const SubnormalMode&) = delete;
};

void worker_loop(Launch& L, Worker& w) {
    AltStackScope alt(w);
#if PS_EMU_ASAN
    // The scheduler runs on this thread's own stack.
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void* addr = nullptr;
        size_t size = 0;
        pthread_attr_getstack(&attr, &addr, &size);
        w.sched.asan_bottom = addr;
        w.sched.asan_size = size;
        pthread_attr_destroy(&attr);
    }
#endif
    w.launch = &L;
    SubnormalMode fp_mode(L.flush_subnormals);
    tls_worker = &w;
    tls_builtins.block_dim = L.block;
    tls_builtins.grid_dim = L.grid;
    while (!L.stop.load(std::memory_order_relaxed)) {
        uint64_t id = L.next_block.fetch_add(1, std::memory_order_relaxed);
        if (id >= L.nblocks) break;
        if (!run_block(w, id)) {
            L.fail(w.err_code, std::move(w.err), w.fault);
            break;
        }
    }
    tls_worker = nullptr;
    tls_fiber = nullptr;
    tls_builtins = BuiltinVars{};
}

void worker_thread(Launch* L, Worker* w) {
    try {
        worker_loop(*L, *w);
    } catch (const std::exception& e) {
        L->fail(PS_EMU_ERR_RESOURCES, std::string("worker failed: ") + e.what());
    } catch (...) {
        L->fail(PS_EMU_ERR_RESOURCES, "worker failed");
    }
}

int default_workers() {
    if (const char* e = getenv("PS_EMU_WORKERS")) {
        char* end = nullptr;
        long v = strtol(e, &end, 10);
        if (end != e && v > 0) return static_cast<int>(std::min<long>(v, kMaxWorkers));
    }
    unsigned hc = std::thread::hardware_concurrency();
    return hc ? static_cast<int>(hc) : 1;
}

int launch_impl(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                unsigned bz, unsigned shared_bytes, void** args, int fiber_order,
                unsigned long long seed, int num_workers) {
    if (tls_worker)
        return set_error(PS_EMU_ERR_INVALID_ARGUMENT,
                         "ps_emu_launch called from inside an emulated kernel (nested launches are not supported)");
    if (!name) return set_error(PS_EMU_ERR_INVALID_ARGUMENT, "kernel name is null");
    if (fiber_order < PS_EMU_ORDER_FORWARD || fiber_order > PS_EMU_ORDER_SHUFFLE)
        return set_error(PS_EMU_ERR_INVALID_ARGUMENT,
                         format("fiber_order %d is not 0 (forward), 1 (reverse) or 2 (shuffle)", fiber_order));
    if (num_workers < 0)
        return set_error(PS_EMU_ERR_INVALID_ARGUMENT,
                         format("num_workers %d is negative (0 picks a default)", num_workers));

    KernelInfo kernel;
    {
        Registry& reg = registry();
        std::lock_guard<std::mutex> lock(reg.mu);
        const KernelInfo* k = reg.find_locked(name);
        if (!k) {
            std::string known;
            for (size_t i = 0; i < reg.kernels.size() && i < 40; ++i) {
                known += i ? ", " : "";
                known += reg.kernels[i].name;
            }
            if (reg.kernels.size() > 40) known += ", ...";
            return set_error(PS_EMU_ERR_UNKNOWN_KERNEL,
                             format("unknown kernel '%s' (%zu registered%s%s)", name, reg.kernels.size(),
                                    known.empty() ? "" : ": ", known.c_str()));
        }
        if (k->duplicate_file)
            return set_error(PS_EMU_ERR_UNKNOWN_KERNEL,
                             format("kernel name '%s' is registered by two different functions (%s and %s)",
                                    name, short_path(k->file), short_path(k->duplicate_file)));
        kernel = *k;
    }

    if (gx == 0 || gy == 0 || gz == 0 || gx > kMaxGridDimX || gy > kMaxGridDimYZ || gz > kMaxGridDimYZ)
        return set_error(PS_EMU_ERR_LAUNCH_CONFIG,
                         format("kernel '%s': invalid grid (%u,%u,%u): each dimension must be >= 1, x <= "
                                "2^31-1, y and z <= 65535",
                                name, gx, gy, gz));
    const unsigned long long nthreads = 1ull * bx * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || bx > kMaxBlockDimXY || by > kMaxBlockDimXY || bz > kMaxBlockDimZ ||
        nthreads > kMaxThreadsPerBlock)
        return set_error(PS_EMU_ERR_LAUNCH_CONFIG,
                         format("kernel '%s': invalid block (%u,%u,%u): dimensions must be >= 1, x and y "
                                "<= 1024, z <= 64, and at most 1024 threads in all",
                                name, bx, by, bz));
    if (shared_bytes > kMaxSharedPerBlock)
        return set_error(PS_EMU_ERR_LAUNCH_CONFIG,
                         format("kernel '%s': %u bytes of dynamic shared memory exceed the 227 KiB per "
                                "block of sm_90",
                                name, shared_bytes));
    if (kernel.num_params > 0) {
        if (!args)
            return set_error(PS_EMU_ERR_INVALID_ARGUMENT,
                             format("kernel '%s' takes %d parameters but args is null", name, kernel.num_params));
        for (int i = 0; i < kernel.num_params; ++i)
            if (!args[i])
                return set_error(PS_EMU_ERR_INVALID_ARGUMENT,
                                 format("kernel '%s': args[%d] is null (each entry must point to the "
                                        "argument's value)",
                                        name, i));
    }

    Launch L;
    L.kernel = &kernel;
    L.args = args;
    L.grid = uint3{gx, gy, gz};
    L.block = uint3{bx, by, bz};
    L.nthreads = static_cast<unsigned>(nthreads);
    L.dynamic_shared = shared_bytes;
    L.order = fiber_order;
    L.seed = seed;
    L.nblocks = 1ull * gx * gy * gz;
    L.stack_bytes = stack_size();
    L.weak_memory = weak_memory_enabled();
    {
        const size_t len = strlen(name);
        L.flush_subnormals = !(len >= 4 && strcmp(name + len - 4, "_f64") == 0);
    }

    uint64_t workers = num_workers ? static_cast<uint64_t>(num_workers) : static_cast<uint64_t>(default_workers());
    workers = std::max<uint64_t>(1, std::min<uint64_t>({workers, L.nblocks, kMaxWorkers}));

    init_once();

    std::vector<std::unique_ptr<Worker>> ws;
    ws.reserve(workers);
    try {
        for (uint64_t i = 0; i < workers; ++i) ws.push_back(acquire_worker(L.nthreads, L.stack_bytes));
    } catch (const std::bad_alloc&) {
        if (ws.empty())
            return set_error(PS_EMU_ERR_RESOURCES, "cannot allocate fiber stacks / shared-memory arena");
    }

    std::vector<std::thread> threads;
    for (size_t i = 1; i < ws.size(); ++i) {
        try {
            threads.emplace_back(worker_thread, &L, ws[i].get());
        } catch (const std::system_error&) {
            break;  // fewer workers; the calling thread still runs everything left
        }
    }
    worker_thread(&L, ws[0].get());
    for (auto& t : threads) t.join();
    // The end of the kernel: every store still held back becomes visible.
    for (auto& w : ws) {
        for (const PendingStore& p : w->retired) memcpy(p.addr, p.data, p.bytes);
        w->retired.clear();
    }
    for (auto& w : ws) release_worker(std::move(w));

    if (L.err_code) {
        if (L.err_code == PS_EMU_ERR_ILLEGAL_ADDRESS) tls_last_fault = L.fault;
        return set_error(L.err_code, std::move(L.err));
    }
    return PS_EMU_OK;
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points used by simt.h
// ---------------------------------------------------------------------------

namespace detail {

WarpView warp_exchange(uint64_t value, unsigned mask, const char* what, const char* file, int line) {
    FiberRef c = current(what, file, line);
    Worker& w = *c.w;
    Fiber& f = *c.f;
    if (mask != 0xffffffffu) {
        char msg[96];
        snprintf(msg, sizeof msg, "mask 0x%08x: only the full mask 0xffffffff is supported", mask);
        kernel_error(PS_EMU_ERR_UNSUPPORTED, what, msg, file, line);
    }
    Warp& wp = w.warps[f.warp];
    f.slot = wp.cur;
    wp.slots[f.slot][f.lane] = value;
    f.what = what;
    f.file = file;
    f.line = line;
    f.state = FiberState::WarpWait;
    ++wp.waiting;
    suspend(w, f);
    return WarpView{wp.slots[f.slot], f.lane, wp.live};
}

int block_barrier(int pred, const char* what, const char* file, int line) {
    FiberRef c = current(what, file, line);
    Worker& w = *c.w;
    Fiber& f = *c.f;
    f.slot = w.block_cur;
    w.block_accum += pred ? 1 : 0;
    f.what = what;
    f.file = file;
    f.line = line;
    f.state = FiberState::BlockWait;
    ++w.block_waiting;
    suspend(w, f);
    return w.block_result[f.slot];
}

unsigned active_mask(const char* what, const char* file, int line) {
    FiberRef c = current(what, file, line);
    const Warp& wp = c.w->warps[c.f->warp];
    return wp.live & ~wp.exited;
}

void yield_fiber(const char* what, const char* file, int line) {
    FiberRef c = current(what, file, line);
    Worker& w = *c.w;
    Fiber& f = *c.f;
    f.what = what;
    f.file = file;
    f.line = line;
    f.state = FiberState::Runnable;
    w.yielded.push_back(f.index);
    suspend(w, f);
}

void kernel_error(int code, const char* what, const char* message, const char* file, int line) {
    Fiber* f = tls_fiber;
    if (!f) {
        fprintf(stderr, "ps_emu: %s: %s (outside an emulated kernel)\n",
                site(what, file, line).c_str(), message);
        abort();
    }
    Worker& w = *tls_worker;
    block_fail(w, code,
               block_prefix(w) + " " + thread_name(w, *f) + ": " + site(what, file, line) + ": " +
                   message);
    abandon_fiber();
}

void* shared_alloc(const void* key, size_t bytes, size_t align, const char* name, const char* file,
                   int line) {
    FiberRef c = current("PS_SHARED", file, line);
    Worker& w = *c.w;
    for (const SharedSlot& s : w.shared) {
        if (s.key != key) continue;
        if (s.bytes != bytes) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "'%s' requested with %zu bytes, but this block already holds it with %zu", name,
                     bytes, s.bytes);
            kernel_error(PS_EMU_ERR_SHARED_MEMORY, "PS_SHARED", msg, file, line);
        }
        return w.arena + s.offset;
    }
    align = std::max<size_t>(align, 16);
    if (align > 4096)
        kernel_error(PS_EMU_ERR_UNSUPPORTED, "PS_SHARED", "alignment above 4096 bytes", file, line);
    const Launch& L = *w.launch;
    const size_t used = w.static_used + bytes;
    char msg[256];
    if (used > kMaxStaticShared) {
        snprintf(msg, sizeof msg,
                 "'%s' brings static shared memory to %zu bytes, over the 48 KiB that nvcc allows "
                 "for static __shared__ (use dynamic shared memory)",
                 name, used);
        kernel_error(PS_EMU_ERR_SHARED_MEMORY, "PS_SHARED", msg, file, line);
    }
    if (used + L.dynamic_shared > kMaxSharedPerBlock) {
        snprintf(msg, sizeof msg,
                 "'%s' brings shared memory to %zu static + %zu dynamic bytes, over the 227 KiB "
                 "per block of sm_90",
                 name, used, L.dynamic_shared);
        kernel_error(PS_EMU_ERR_SHARED_MEMORY, "PS_SHARED", msg, file, line);
    }
    const size_t off = round_up(w.static_cursor, align);
    if (off + bytes + kRedzone > kArenaBytes)
        kernel_error(PS_EMU_ERR_SHARED_MEMORY, "PS_SHARED",
                     "too many shared-memory declarations for the emulator's arena", file, line);
    memset(w.arena + off, kPoison, bytes);
    memset(w.arena + off + bytes, kGuardByte, kRedzone);
    w.static_cursor = off + bytes + kRedzone;
    w.static_used = used;
    w.shared.push_back(SharedSlot{key, off, bytes, name, file, line});
    return w.arena + off;
}

void* dynamic_shared(size_t align, const char* name, const char* file, int line) {
    FiberRef c = current("PS_DYNAMIC_SHARED", file, line);
    if (align > 16) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "'%s': dynamic shared memory is 16-byte aligned; the type needs %zu", name, align);
        kernel_error(PS_EMU_ERR_UNSUPPORTED, "PS_DYNAMIC_SHARED", msg, file, line);
    }
    return c.w->arena + kRedzone;
}

void publish_store(void* p, const void* value, size_t bytes) {
    Worker* w = tls_worker;
    Fiber* f = tls_fiber;
    if (!f || !w->launch->weak_memory || bytes == 0 || bytes > kMaxPendingStore) {
        memcpy(p, value, bytes);
        return;
    }
    // Touch both ends now, so that a store outside every buffer faults in
    // the kernel (an illegal address) rather than when it is released.
    const volatile char* c = static_cast<const volatile char*>(p);
    (void)c[0];
    (void)c[bytes - 1];
    PendingStore ps;
    ps.addr = static_cast<char*>(p);
    ps.fiber = f->index;
    ps.bytes = static_cast<unsigned>(bytes);
    memcpy(ps.data, value, bytes);
    w->pending.push_back(ps);
}

void forward_load(const void* p, void* out, size_t bytes) {
    memcpy(out, p, bytes);
    Worker* w = tls_worker;
    if (!tls_fiber || w->pending.empty()) return;
    // The block sees its own pending stores (in program order; a later one
    // overwrites an earlier one).
    const char* lo = static_cast<const char*>(p);
    const char* hi = lo + bytes;
    for (const PendingStore& ps : w->pending) {
        const char* a = std::max<const char*>(lo, ps.addr);
        const char* b = std::min<const char*>(hi, ps.addr + ps.bytes);
        if (a < b) memcpy(static_cast<char*>(out) + (a - lo), ps.data + (a - ps.addr), static_cast<size_t>(b - a));
    }
}

void release_stores() {
    Worker* w = tls_worker;
    Fiber* f = tls_fiber;
    if (!f || w->pending.empty()) return;
    size_t keep = 0;
    for (size_t i = 0; i < w->pending.size(); ++i) {
        const PendingStore& ps = w->pending[i];
        if (ps.fiber == f->index)
            memcpy(ps.addr, ps.data, ps.bytes);
        else
            w->pending[keep++] = ps;
    }
    w->pending.resize(keep);
}

void register_kernel(const char* name, KernelEntry entry, int num_params, const size_t* sizes,
                     const size_t* aligns, const char* file) {
    Registry& reg = registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    for (KernelInfo& k : reg.kernels) {
        if (strcmp(k.name, name) != 0) continue;
        if (k.entry != entry && !k.duplicate_file) k.duplicate_file = file;
        return;
    }
    reg.kernels.push_back(KernelInfo{name, entry, num_params, sizes, aligns, file, nullptr});
    reg.sorted = false;
}

}  // namespace detail
}  // namespace ps_emu

// ---------------------------------------------------------------------------
// C ABI
// ---------------------------------------------------------------------------

extern "C" {

int ps_emu_launch(const char* kernel_name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                  unsigned by, unsigned bz, unsigned shared_bytes, void** args, int fiber_order,
                  unsigned long long seed, int num_workers) {
    using namespace ps_emu;
    try {
        tls_last_error.clear();
        tls_last_fault = FaultInfo{};
        return launch_impl(kernel_name, gx, gy, gz, bx, by, bz, shared_bytes, args, fiber_order, seed,
                           num_workers);
    } catch (const std::bad_alloc&) {
        return set_error(PS_EMU_ERR_RESOURCES, "out of memory");
    } catch (const std::exception& e) {
        return set_error(PS_EMU_ERR_RESOURCES, std::string("internal error: ") + e.what());
    } catch (...) {
        return set_error(PS_EMU_ERR_RESOURCES, "internal error");
    }
}

const char* ps_emu_last_error(void) { return ps_emu::tls_last_error.c_str(); }

int ps_emu_kernel_count(void) {
    auto& reg = ps_emu::registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    return static_cast<int>(reg.kernels.size());
}

const char* ps_emu_kernel_name(int i) {
    auto& reg = ps_emu::registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    reg.sort_locked();
    if (i < 0 || static_cast<size_t>(i) >= reg.kernels.size()) return nullptr;
    return reg.kernels[static_cast<size_t>(i)].name;
}

int ps_emu_kernel_num_params(const char* kernel_name) {
    if (!kernel_name) return -1;
    auto& reg = ps_emu::registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    const ps_emu::KernelInfo* k = reg.find_locked(kernel_name);
    return k ? k->num_params : -1;
}

int ps_emu_kernel_param_layout(const char* kernel_name, int i, unsigned long long* size,
                               unsigned long long* align) {
    if (!kernel_name || !size || !align) return -1;
    auto& reg = ps_emu::registry();
    std::lock_guard<std::mutex> lock(reg.mu);
    const ps_emu::KernelInfo* k = reg.find_locked(kernel_name);
    if (!k || i < 0 || i >= k->num_params) return -1;
    *size = k->sizes[i];
    *align = k->aligns[i];
    return 0;
}

unsigned long long ps_emu_set_stack_size(unsigned long long bytes) {
    size_t prev = ps_emu::stack_size();
    if (bytes) ps_emu::g_stack_bytes.store(ps_emu::normalize_stack(bytes));
    return prev;
}

int ps_emu_abi_version(void) { return PS_EMU_ABI_VERSION; }

void* ps_emu_alloc(unsigned long long bytes, int guard) { return ps_emu::guarded_alloc(bytes, guard); }

int ps_emu_free(void* p) { return p ? ps_emu::guarded_free(p) : -1; }

int ps_emu_last_fault(unsigned long long* address, unsigned long long* buffer,
                      unsigned long long* buffer_bytes, long long* distance, int* is_write) {
    const ps_emu::FaultInfo& f = ps_emu::tls_last_fault;
    if (f.kind == 0) return 0;
    if (address) *address = f.address;
    if (buffer) *buffer = f.buffer;
    if (buffer_bytes) *buffer_bytes = f.buffer_bytes;
    if (distance) *distance = f.distance;
    if (is_write) *is_write = f.is_write;
    return f.kind;
}

const char* ps_emu_current_kernel(void) {
    ps_emu::Worker* w = ps_emu::tls_worker;
    return w && w->launch && w->launch->kernel ? w->launch->kernel->name : nullptr;
}

}  // extern "C"
