// selftest.cpp: self-test of the CPU emulator (simt.h + launcher.cpp).
//
// Launches the kernels of selftest_kernels.cu, selftest_scan.cu (three
// variants) and ../copy.cu through the C ABI (ps_emu_launch), exactly as the
// Rust side will, and checks their results.
//
//   selftest                       every fiber order, then the global tests
//   selftest --order forward|reverse|shuffle [--seed N]
//                                  the per-order tests under one order
//   selftest --global              missing-barrier demonstration, f16/bf16
//                                  conversions, stack overflow, timings
//
// Exit status 0 when every check passed. Build and run: selftest.sh.

#include "ps_emu.h"
#include "simt.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

// kernels/copy.cu is compiled as its own translation unit; it has no
// PS_REGISTER_KERNEL line, so it is registered from here.
extern "C" void copy_f32(const float* __restrict__ src, float* __restrict__ dst, unsigned long long n);
PS_REGISTER_KERNEL(copy_f32);

// Host hook called by st_atomics: which OS threads ran blocks.
static std::mutex g_note_mu;
static std::set<std::thread::id> g_note_threads;
extern "C" void ps_selftest_note_block(unsigned block) {
    {
        std::lock_guard<std::mutex> lock(g_note_mu);
        g_note_threads.insert(std::this_thread::get_id());
    }
    // Slow the first blocks down so that every worker gets to start even on a
    // loaded machine (the test checks that more than one worker ran blocks).
    if (block < 8) std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

namespace {

int g_checks = 0;
int g_failures = 0;
const char* g_context = "";

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        ++g_checks;                                                                       \
        if (!(cond)) {                                                                    \
            ++g_failures;                                                                 \
            fprintf(stderr, "FAIL [%s] %s:%d: %s: ", g_context, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

struct Order {
    int code;
    unsigned long long seed;
    const char* name;
};

int launch(const char* kernel, dim3 grid, dim3 block, unsigned smem, std::vector<void*> args,
           const Order& o, int workers = 2) {
    return ps_emu_launch(kernel, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem,
                         args.empty() ? nullptr : args.data(), o.code, o.seed, workers);
}

#define LAUNCH_OK(...)                                                                      \
    do {                                                                                    \
        int rc_ = launch(__VA_ARGS__);                                                      \
        CHECK(rc_ == PS_EMU_OK, "launch failed (%d): %s", rc_, ps_emu_last_error());        \
    } while (0)

uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float quiet_nan_poison() {
    float f;
    uint32_t u = 0xffffffffu;
    memcpy(&f, &u, 4);
    return f;
}

// Small integers: every sum below is exact in float.
std::vector<float> small_ints(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> d(-8, 8);
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(d(rng));
    return v;
}

// ---------------------------------------------------------------------------
// Per-order tests
// ---------------------------------------------------------------------------

void test_block_reduce(const Order& o) {
    for (unsigned bs : {32u, 64u, 256u, 1024u}) {
        int n = static_cast<int>(bs * 5 - 7);
        unsigned blocks = (static_cast<unsigned>(n) + bs - 1) / bs;
        auto in = small_ints(static_cast<size_t>(n), bs);
        std::vector<float> out(blocks, -1.0f);
        const float* pin = in.data();
        float* pout = out.data();
        LAUNCH_OK("st_block_reduce", dim3(blocks), dim3(bs), 0, {&pin, &pout, &n}, o);
        for (unsigned b = 0; b < blocks; ++b) {
            float ref = 0;
            for (unsigned i = b * bs; i < std::min<unsigned>((b + 1) * bs, static_cast<unsigned>(n)); ++i)
                ref += in[i];
            CHECK(out[b] == ref, "block size %u block %u: %g != %g", bs, b, out[b], ref);
        }
    }
}

bool run_scan(const char* kernel, unsigned bs, unsigned blocks, const Order& o, int workers,
              std::string* why) {
    int n = static_cast<int>(bs * blocks - bs / 3);
    auto in = small_ints(static_cast<size_t>(n), 7 + bs);
    std::vector<float> out(static_cast<size_t>(n), quiet_nan_poison());
    const float* pin = in.data();
    float* pout = out.data();
    int rc = launch(kernel, dim3(blocks), dim3(bs), 0, {&pin, &pout, &n}, o, workers);
    if (rc != PS_EMU_OK) {
        *why = std::string("launch failed: ") + ps_emu_last_error();
        return false;
    }
    for (int b = 0; b * static_cast<int>(bs) < n; ++b) {
        float acc = 0;
        for (int i = b * static_cast<int>(bs); i < std::min(n, (b + 1) * static_cast<int>(bs)); ++i) {
            acc += in[static_cast<size_t>(i)];
            if (out[static_cast<size_t>(i)] != acc) {
                char buf[160];
                snprintf(buf, sizeof buf, "element %d: %g, expected %g", i,
                         static_cast<double>(out[static_cast<size_t>(i)]), static_cast<double>(acc));
                *why = buf;
                return false;
            }
        }
    }
    return true;
}

void test_scan(const Order& o) {
    for (unsigned bs : {32u, 96u, 256u, 1024u}) {
        std::string why;
        bool ok = run_scan("st_scan_hs", bs, 3, o, 2, &why);
        CHECK(ok, "st_scan_hs block size %u: %s", bs, why.c_str());
    }
}

void test_blelloch(const Order& o) {
    for (unsigned bs : {32u, 128u, 512u}) {
        const unsigned m = 2 * bs;
        int n = static_cast<int>(m * 3 - 5);
        unsigned blocks = (static_cast<unsigned>(n) + m - 1) / m;
        auto in = small_ints(static_cast<size_t>(n), 99 + bs);
        std::vector<float> out(static_cast<size_t>(n), quiet_nan_poison());
        const float* pin = in.data();
        float* pout = out.data();
        LAUNCH_OK("st_blelloch_dyn", dim3(blocks), dim3(bs), m * 4, {&pin, &pout, &n}, o);
        bool ok = true;
        for (unsigned b = 0; b < blocks && ok; ++b) {
            float acc = 0;
            for (unsigned i = b * m; i < std::min<unsigned>((b + 1) * m, static_cast<unsigned>(n)); ++i) {
                if (out[i] != acc) {
                    CHECK(false, "block size %u element %u: %g != %g", bs, i, out[i], acc);
                    ok = false;
                    break;
                }
                acc += in[i];
            }
        }
    }
}

void test_atomics(const Order& o) {
    int n = 100003;
    std::vector<int> in(static_cast<size_t>(n));
    std::mt19937 rng(5);
    std::uniform_int_distribution<int> d(-1000000, 1000000);
    long long ref_sum = 0;
    int ref_max = -2147483647, ref_min = 2147483647;
    for (auto& x : in) {
        x = d(rng);
        ref_sum += x;
        ref_max = std::max(ref_max, x);
        ref_min = std::min(ref_min, x);
    }
    unsigned long long sum = 0, exch_slot = 0, exch_sum = 0;
    int maxv = -2147483647 - 1, minv = 2147483647;
    float fcount = 0;
    unsigned cas_count = 0;
    const int* pin = in.data();
    unsigned long long* psum = &sum;
    int* pmax = &maxv;
    int* pmin = &minv;
    float* pf = &fcount;
    unsigned* pcas = &cas_count;
    unsigned long long* pslot = &exch_slot;
    unsigned long long* pxs = &exch_sum;
    {
        std::lock_guard<std::mutex> lock(g_note_mu);
        g_note_threads.clear();
    }
    LAUNCH_OK("st_atomics", dim3(256), dim3(128), 0,
              {&pin, &n, &psum, &pmax, &pmin, &pf, &pcas, &pslot, &pxs}, o, 4);
    CHECK(static_cast<long long>(sum) == ref_sum, "sum %lld != %lld", static_cast<long long>(sum), ref_sum);
    CHECK(maxv == ref_max, "max %d != %d", maxv, ref_max);
    CHECK(minv == ref_min, "min %d != %d", minv, ref_min);
    CHECK(fcount == static_cast<float>(n), "float count %g != %d", fcount, n);
    CHECK(cas_count == static_cast<unsigned>(n), "CAS count %u != %d", cas_count, n);
    CHECK(static_cast<long long>(exch_sum + exch_slot) == ref_sum,
          "atomicExch lost a value: %lld != %lld", static_cast<long long>(exch_sum + exch_slot), ref_sum);
    size_t threads;
    {
        std::lock_guard<std::mutex> lock(g_note_mu);
        threads = g_note_threads.size();
    }
    CHECK(threads >= 2, "only %zu worker thread(s) ran the 256 blocks", threads);
}

void test_poison(const Order& o) {
    const unsigned blocks = 3;
    std::vector<float> st(blocks * 64, 0.0f), dy(blocks * 64, 0.0f);
    std::vector<int> si(blocks, 0);
    float* pst = st.data();
    int* psi = si.data();
    float* pdy = dy.data();
    // One worker: every block reuses the arena the previous block wrote.
    LAUNCH_OK("st_poison", dim3(blocks), dim3(64), 64 * 4, {&pst, &psi, &pdy}, o, 1);
    for (unsigned i = 0; i < blocks * 64; ++i) {
        CHECK(std::isnan(st[i]) && bits_of(st[i]) == 0xffffffffu,
              "static shared read before write gave %g (bits %08x)", st[i], bits_of(st[i]));
        CHECK(std::isnan(dy[i]), "dynamic shared read before write gave %g", dy[i]);
    }
    for (unsigned b = 0; b < blocks; ++b) CHECK(si[b] == -1, "int shared read before write gave %d", si[b]);
}

void test_half_kernel(const Order& o) {
    int n = 64;
    std::vector<float> in(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) in[static_cast<size_t>(i)] = 1.0f / static_cast<float>(3 + i) * static_cast<float>(i % 2 ? -1 : 1) * static_cast<float>(1 << (i % 20));
    in[0] = 1.0f / 3.0f;
    std::vector<__half> h(static_cast<size_t>(n));
    std::vector<__nv_bfloat16> b(static_cast<size_t>(n));
    std::vector<float> hb(static_cast<size_t>(n)), bb(static_cast<size_t>(n)), hn(static_cast<size_t>(n)), bn(static_cast<size_t>(n));
    const float* pin = in.data();
    __half* ph = h.data();
    __nv_bfloat16* pb = b.data();
    float *phb = hb.data(), *pbb = bb.data(), *phn = hn.data(), *pbn = bn.data();
    LAUNCH_OK("st_half", dim3(2), dim3(32), 0, {&pin, &ph, &pb, &phb, &pbb, &phn, &pbn, &n}, o);
    CHECK(__half_as_ushort(h[0]) == 0x3555, "1/3 -> f16 bits %04x", __half_as_ushort(h[0]));
    CHECK(__bfloat16_as_ushort(b[0]) == 0x3eab, "1/3 -> bf16 bits %04x", __bfloat16_as_ushort(b[0]));
    CHECK(bb[0] == 0.333984375f, "1/3 -> bf16 -> f32 = %.9g", bb[0]);
    CHECK(hb[0] == 0.333251953125f, "1/3 -> f16 -> f32 = %.12g", hb[0]);
    for (int i = 0; i < n; ++i) {
        const size_t k = static_cast<size_t>(i), nb = static_cast<size_t>(i ^ 1);
        CHECK(hb[k] == __half2float(__float2half_rn(in[k])), "f16 element %d", i);
        CHECK(bb[k] == __bfloat162float(__float2bfloat16_rn(in[k])), "bf16 element %d", i);
        CHECK(hn[k] == hb[nb], "f16 shuffle element %d: %g != %g", i, hn[k], hb[nb]);
        CHECK(bn[k] == bb[nb], "bf16 shuffle element %d: %g != %g", i, bn[k], bb[nb]);
    }
}

// Shuffle source lane as the PTX ISA defines shfl.sync (mode, b, c).
int ptx_shfl_source(int mode, int lane, int b, int width) {
    const int segmask = (32 - width) & 0x1f;
    const int cval = mode == 1 ? 0 : 0x1f;  // CUDA passes clamp 0 for .up
    const int bval = b & 0x1f;
    const int max_lane = (lane & segmask) | (cval & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool pval = true;
    switch (mode) {
        case 0: j = min_lane | (bval & ~segmask); pval = j <= max_lane; break;  // idx
        case 1: j = lane - bval; pval = j >= max_lane; break;                    // up
        case 2: j = lane + bval; pval = j <= max_lane; break;                    // down
        case 3: j = lane ^ bval; pval = j <= max_lane; break;                    // bfly
    }
    return pval ? j : lane;
}

void test_shfl_modes(const Order& o) {
    for (int width : {32, 16, 8, 4, 2, 1}) {
        std::vector<int> out(64 * 4, -7);
        int* p = out.data();
        LAUNCH_OK("st_shfl_modes", dim3(1), dim3(64), 0, {&p, &width}, o);
        for (int t = 0; t < 64; ++t) {
            const int lane = t % 32, warp_base = t - lane;
            const int b[4] = {(t * 7 + 3) % 40 - 4, 3, 3, 5};
            for (int mode = 0; mode < 4; ++mode) {
                const int src = warp_base + ptx_shfl_source(mode, lane, b[mode], width);
                const int want = src * 10 + 1;
                CHECK(out[static_cast<size_t>(t * 4 + mode)] == want, "width %d thread %d mode %d: %d != %d",
                      width, t, mode, out[static_cast<size_t>(t * 4 + mode)], want);
            }
        }
    }
}

void test_shfl_types(const Order& o) {
    std::vector<double> d(32);
    std::vector<long long> ll(32);
    std::vector<unsigned> red(5, 0);
    double* pd = d.data();
    long long* pll = ll.data();
    unsigned* pr = red.data();
    LAUNCH_OK("st_shfl_types", dim3(1), dim3(32), 0, {&pd, &pll, &pr}, o);
    for (int t = 0; t < 32; ++t) {
        CHECK(d[static_cast<size_t>(t)] == 0.5 + (t ^ 1), "double xor shuffle lane %d", t);
        const long long want = (1LL << 40) + (t + 2 < 32 ? t + 2 : t);
        CHECK(ll[static_cast<size_t>(t)] == want, "long long down shuffle lane %d", t);
    }
    CHECK(red[0] == 496, "__reduce_add_sync %u", red[0]);
    CHECK(red[1] == 6, "__reduce_max_sync %u", red[1]);
    CHECK(red[2] == 0x22222222u, "__match_any_sync %08x", red[2]);
    CHECK(red[3] == 1, "__any_sync %u", red[3]);
    CHECK(red[4] == 0, "__all_sync %u", red[4]);
}

void test_partial_warp(const Order& o) {
    std::vector<int> out(40 * 5, -7);
    int* p = out.data();
    LAUNCH_OK("st_partial_warp", dim3(1), dim3(40), 0, {&p}, o);
    for (int t = 0; t < 40; ++t) {
        const int lane = t % 32, base = t - lane, lanes = t < 32 ? 32 : 8;
        const int down = lane + 4 < lanes ? 100 + t + 4 : 100 + t;
        const int* r = &out[static_cast<size_t>(t * 5)];
        CHECK(r[0] == down, "thread %d: shfl_down %d != %d", t, r[0], down);
        CHECK(r[1] == 100 + base, "thread %d: shfl from lane 0 %d", t, r[1]);
        const unsigned mask = lanes == 32 ? 0xffffffffu : 0xffu;
        CHECK(static_cast<unsigned>(r[2]) == mask, "thread %d: ballot %08x", t, static_cast<unsigned>(r[2]));
        CHECK(r[3] == 1, "thread %d: all %d", t, r[3]);
        CHECK(static_cast<unsigned>(r[4]) == mask, "thread %d: activemask %08x", t, static_cast<unsigned>(r[4]));
    }
}

void test_sync_count(const Order& o) {
    std::vector<int> out(5, -7);
    int* p = out.data();
    LAUNCH_OK("st_sync_count", dim3(2), dim3(100), 0, {&p}, o);
    CHECK(out[0] == 34, "__syncthreads_count %d", out[0]);
    CHECK(out[1] == 1, "__syncthreads_and %d", out[1]);
    CHECK(out[2] == 1, "__syncthreads_or %d", out[2]);
    CHECK(out[3] == 0, "__syncthreads_and (one false) %d", out[3]);
    CHECK(out[4] == 100, "__syncthreads_count(1) %d", out[4]);
}

void test_spin_flag(const Order& o) {
    std::vector<int> out(2, 0);
    int* p = out.data();
    LAUNCH_OK("st_spin_flag", dim3(2), dim3(64), 0, {&p}, o);
    CHECK(out[0] == 1 || out[0] == 2, "spin result %d", out[0]);
    CHECK(out[1] == 42, "flag %d", out[1]);
}

void test_builtins(const Order& o) {
    const dim3 grid(2, 3, 2), block(4, 2, 3);
    const unsigned nb = 12, nt = 24;
    std::vector<unsigned> out(nb * nt * 4, 0xdeadbeefu);
    unsigned* p = out.data();
    LAUNCH_OK("st_builtins", grid, block, 0, {&p}, o, 3);
    for (unsigned g = 0; g < nb * nt; ++g) {
        const unsigned* r = &out[g * 4];
        CHECK(r[0] == g / nt && r[1] == g % nt && r[2] == 32 && r[3] == nb,
              "slot %u: %u %u %u %u", g, r[0], r[1], r[2], r[3]);
    }
}

void test_template_shared(const Order& o) {
    std::vector<float> f(4, 0);
    std::vector<int> i(2, 0);
    float* pf = f.data();
    int* pi = i.data();
    LAUNCH_OK("st_template_shared", dim3(2), dim3(128), 0, {&pf, &pi}, o);
    for (int b = 0; b < 2; ++b) {
        CHECK(f[static_cast<size_t>(b * 2)] == 192.0f, "float total %g", f[static_cast<size_t>(b * 2)]);
        CHECK(f[static_cast<size_t>(b * 2 + 1)] == 256.0f, "float total (2nd) %g", f[static_cast<size_t>(b * 2 + 1)]);
        CHECK(i[static_cast<size_t>(b)] == 8128, "int total %d", i[static_cast<size_t>(b)]);
    }
}

void test_copy(const Order& o) {
    struct Case {
        unsigned long long n;
        size_t src_off, dst_off;
        unsigned grid, block;
    };
    const Case cases[] = {
        {1000003, 0, 0, 40, 256},  // aligned: float4 body + scalar tail
        {1001, 1, 1, 3, 128},      // misaligned views: scalar path
        {1001, 0, 2, 3, 128},      // only dst misaligned
        {3, 0, 0, 1, 32},          // shorter than one vector
        {0, 0, 0, 2, 64},          // nothing to copy
    };
    for (const Case& c : cases) {
        std::vector<float> src(c.n + 8), dst(c.n + 8, quiet_nan_poison());
        for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) * 0.5f + 1.0f;
        const float* ps = src.data() + c.src_off;
        float* pd = dst.data() + c.dst_off;
        unsigned long long n = c.n;
        LAUNCH_OK("copy_f32", dim3(c.grid), dim3(c.block), 0, {&ps, &pd, &n}, o);
        bool ok = true;
        for (size_t i = 0; i < dst.size() && ok; ++i) {
            const bool inside = i >= c.dst_off && i < c.dst_off + c.n;
            if (inside && dst[i] != src[i - c.dst_off + c.src_off]) ok = false;
            if (!inside && !std::isnan(dst[i])) ok = false;
            if (!ok) CHECK(false, "copy_f32 n=%llu src+%zu dst+%zu: element %zu wrong", c.n, c.src_off, c.dst_off, i);
        }
    }
}

struct ErrCase {
    const char* kernel;
    unsigned threads;
    int code;
    const char* needle;
};

void test_errors(const Order& o) {
    std::vector<int> buf(1024, 0);
    int* p = buf.data();
    const ErrCase cases[] = {
        {"st_err_exit_before_barrier", 64, PS_EMU_ERR_DIVERGENCE, "thread 5 exited while 63 threads wait at __syncthreads()"},
        {"st_err_different_barriers", 64, PS_EMU_ERR_DIVERGENCE, "threads wait at different barriers"},
        {"st_err_warp_exit", 64, PS_EMU_ERR_DIVERGENCE, "thread 3 (lane 3 of warp 0) exited while 31 lanes of its warp wait at __shfl_down_sync"},
        {"st_err_warp_vs_block", 64, PS_EMU_ERR_DIVERGENCE, "wait at __shfl_xor_sync"},
        {"st_err_partial_mask", 32, PS_EMU_ERR_UNSUPPORTED, "mask 0x0000ffff"},
        {"st_err_shared_overflow", 64, PS_EMU_ERR_SHARED_MEMORY, "past the end of 's'"},
        {"st_err_trap", 64, PS_EMU_ERR_KERNEL_FAULT, "thread 7: __trap()"},
        {"st_err_static_too_big", 32, PS_EMU_ERR_SHARED_MEMORY, "48 KiB"},
    };
    for (const ErrCase& c : cases) {
        int rc = launch(c.kernel, dim3(2), dim3(c.threads), 0, {&p}, o);
        const char* msg = ps_emu_last_error();
        CHECK(rc == c.code && strstr(msg, c.needle) && strstr(msg, c.kernel),
              "%s: rc %d (want %d), message \"%s\" (want \"%s\")", c.kernel, rc, c.code, msg, c.needle);
    }
    // Launch-level errors.
    struct {
        const char* kernel;
        dim3 grid, block;
        unsigned smem;
        int order, workers;
        bool null_args;
        int code;
        const char* needle;
    } const bad[] = {
        {"no_such_kernel", dim3(1), dim3(32), 0, o.code, 1, false, PS_EMU_ERR_UNKNOWN_KERNEL, "unknown kernel 'no_such_kernel'"},
        {"st_block_reduce", dim3(1), dim3(1025), 0, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "invalid block (1025,1,1)"},
        {"st_block_reduce", dim3(1), dim3(32, 32, 2), 0, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "invalid block"},
        {"st_block_reduce", dim3(1), dim3(1, 1, 65), 0, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "invalid block"},
        {"st_block_reduce", dim3(0), dim3(32), 0, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "invalid grid (0,1,1)"},
        {"st_block_reduce", dim3(1, 65536), dim3(32), 0, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "invalid grid"},
        {"st_block_reduce", dim3(1), dim3(32), 300000, o.code, 1, false, PS_EMU_ERR_LAUNCH_CONFIG, "dynamic shared memory"},
        {"st_block_reduce", dim3(1), dim3(32), 0, 7, 1, false, PS_EMU_ERR_INVALID_ARGUMENT, "fiber_order 7"},
        {"st_block_reduce", dim3(1), dim3(32), 0, o.code, -1, false, PS_EMU_ERR_INVALID_ARGUMENT, "num_workers -1"},
        {"st_block_reduce", dim3(1), dim3(32), 0, o.code, 1, true, PS_EMU_ERR_INVALID_ARGUMENT, "takes 3 parameters but args is null"},
    };
    for (const auto& c : bad) {
        int rc = ps_emu_launch(c.kernel, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z,
                               c.smem, c.null_args ? nullptr : reinterpret_cast<void**>(&p), c.order,
                               o.seed, c.workers);
        const char* msg = ps_emu_last_error();
        CHECK(rc == c.code && strstr(msg, c.needle), "%s: rc %d (want %d), message \"%s\"", c.kernel, rc,
              c.code, msg);
    }
    CHECK(ps_emu_launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, 0, 0, 1) == PS_EMU_ERR_INVALID_ARGUMENT,
          "null kernel name accepted");
    // A null entry inside args.
    {
        void* args[3] = {nullptr, nullptr, nullptr};
        int rc = ps_emu_launch("st_block_reduce", 1, 1, 1, 32, 1, 1, 0, args, o.code, o.seed, 1);
        CHECK(rc == PS_EMU_ERR_INVALID_ARGUMENT && strstr(ps_emu_last_error(), "args[0] is null"),
              "null args[0]: rc %d, \"%s\"", rc, ps_emu_last_error());
    }
    // Everything still works after the failures, and success clears the message.
    test_block_reduce(o);
    CHECK(ps_emu_last_error()[0] == '\0', "last error not cleared: %s", ps_emu_last_error());
}

void test_registry() {
    const int count = ps_emu_kernel_count();
    CHECK(count >= 25, "only %d kernels registered", count);
    bool sorted = true, found_copy = false;
    for (int i = 0; i < count; ++i) {
        const char* name = ps_emu_kernel_name(i);
        if (i > 0 && strcmp(ps_emu_kernel_name(i - 1), name) >= 0) sorted = false;
        if (strcmp(name, "copy_f32") == 0) found_copy = true;
    }
    CHECK(sorted, "kernel names are not sorted");
    CHECK(found_copy, "copy_f32 is not registered");
    CHECK(ps_emu_kernel_name(count) == nullptr && ps_emu_kernel_name(-1) == nullptr, "out-of-range name");
    CHECK(ps_emu_kernel_num_params("copy_f32") == 3, "copy_f32 params %d", ps_emu_kernel_num_params("copy_f32"));
    CHECK(ps_emu_kernel_num_params("st_atomics") == 9, "st_atomics params");
    CHECK(ps_emu_kernel_num_params("nope") == -1, "unknown kernel params");
    CHECK(ps_emu_abi_version() == PS_EMU_ABI_VERSION, "ABI version");
}

void test_concurrent(const Order& o) {
    // Launches from several host threads at once (e.g. parallel cargo tests).
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int k = 0; k < 3; ++k) {
        ts.emplace_back([&, k] {
            for (int rep = 0; rep < 10; ++rep) {
                std::string why;
                if (!run_scan("st_scan_hs", 128, 4, o, 1 + k, &why)) {
                    ++bad;
                    fprintf(stderr, "concurrent launch: %s\n", why.c_str());
                }
            }
        });
    }
    for (auto& t : ts) t.join();
    CHECK(bad.load() == 0, "%d concurrent launches went wrong", bad.load());
}

void run_order(const Order& o) {
    g_context = o.name;
    const int before = g_failures;
    auto t0 = std::chrono::steady_clock::now();
    test_block_reduce(o);
    test_scan(o);
    test_blelloch(o);
    test_atomics(o);
    test_poison(o);
    test_half_kernel(o);
    test_shfl_modes(o);
    test_shfl_types(o);
    test_partial_warp(o);
    test_sync_count(o);
    test_spin_flag(o);
    test_builtins(o);
    test_template_shared(o);
    test_copy(o);
    test_errors(o);
    test_concurrent(o);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    printf("order %-8s: %s (%.0f ms)\n", o.name, g_failures == before ? "all checks passed" : "FAILED", ms);
}

// ---------------------------------------------------------------------------
// Global tests
// ---------------------------------------------------------------------------

void test_missing_barrier() {
    g_context = "missing-barrier";
    const char* variants[3] = {"st_scan_hs", "st_scan_hs_drop_read", "st_scan_hs_drop_write"};
    const Order orders[] = {
        {PS_EMU_ORDER_FORWARD, 0, "forward"},   {PS_EMU_ORDER_REVERSE, 0, "reverse"},
        {PS_EMU_ORDER_SHUFFLE, 1, "shuffle#1"}, {PS_EMU_ORDER_SHUFFLE, 2, "shuffle#2"},
        {PS_EMU_ORDER_SHUFFLE, 3, "shuffle#3"},
    };
    printf("missing-barrier demonstration (Hillis-Steele scan, 4 blocks of 256 threads):\n");
    printf("  %-24s", "kernel");
    for (const Order& o : orders) printf(" %-10s", o.name);
    printf("\n");
    for (int v = 0; v < 3; ++v) {
        printf("  %-24s", variants[v]);
        int wrong = 0;
        for (const Order& o : orders) {
            std::string why;
            const bool ok = run_scan(variants[v], 256, 4, o, 2, &why);
            wrong += !ok;
            printf(" %-10s", ok ? "right" : "WRONG");
            if (v == 0) CHECK(ok, "complete scan wrong under %s: %s", o.name, why.c_str());
        }
        printf("\n");
        if (v > 0) CHECK(wrong > 0, "%s (a barrier removed) gave the right answer under every order", variants[v]);
    }
}

#ifdef __FLT16_MAX__
unsigned short ref_f16_bits(float f) {
    _Float16 h = static_cast<_Float16>(f);
    unsigned short u;
    memcpy(&u, &h, 2);
    return u;
}
#endif

// Round-to-nearest-even f32 -> bf16 by the usual bit trick (an independent
// formulation from simt.h's).
unsigned short ref_bf16_bits(float f) {
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<unsigned short>(u >> 16);
}

float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void test_conversions() {
    g_context = "f16/bf16";
    struct Known {
        float x;
        unsigned short f16, bf16;
    };
    const Known known[] = {
        {1.0f / 3.0f, 0x3555, 0x3eab},
        {1.0f, 0x3c00, 0x3f80},
        {-2.5f, 0xc100, 0xc020},
        {0.1f, 0x2e66, 0x3dcd},
        {65504.0f, 0x7bff, 0x4780},
        {65519.0f, 0x7bff, 0x4780},
        {65520.0f, 0x7c00, 0x4780},         // f16 overflow by rounding
        {5.9604644775390625e-08f, 0x0001, 0x3380},  // 2^-24: smallest f16 subnormal
        {2.98023223876953125e-08f, 0x0000, 0x3300},  // 2^-25: tie, rounds to even (zero)
        {8.94069671630859375e-08f, 0x0002, 0x33c0},  // 3 * 2^-25: tie, rounds to even (2)
        {6.103515625e-05f, 0x0400, 0x3880},  // 2^-14: smallest f16 normal
        {1.00048828125f, 0x3c00, 0x3f80},    // 1 + 2^-11: tie, to even
        {1.00146484375f, 0x3c02, 0x3f80},    // 1 + 3 * 2^-11: tie, to even (up)
        {1.00390625f, 0x3c04, 0x3f80},       // 1 + 2^-8: bf16 tie, to even
        {1.01171875f, 0x3c0c, 0x3f82},       // 1 + 3 * 2^-8: bf16 tie, up
        {-0.0f, 0x8000, 0x8000},
        {INFINITY, 0x7c00, 0x7f80},
        {-INFINITY, 0xfc00, 0xff80},
        {3.4028234663852886e38f, 0x7c00, 0x7f80},  // FLT_MAX: bf16 rounds up to inf
        {1e-40f, 0x0000, 0x0001},                // f32 subnormal
    };
    for (const Known& k : known) {
        const unsigned short h = __half_as_ushort(__float2half_rn(k.x));
        const unsigned short b = __bfloat16_as_ushort(__float2bfloat16_rn(k.x));
        CHECK(h == k.f16, "f16(%.9g) = %04x, expected %04x", k.x, h, k.f16);
        CHECK(b == k.bf16, "bf16(%.9g) = %04x, expected %04x", k.x, b, k.bf16);
    }
    CHECK(__bfloat162float(__float2bfloat16(1.0f / 3.0f)) == 0.333984375f, "1/3 -> bf16 -> f32");
    CHECK(__half2float(__float2half(1.0f / 3.0f)) == 0.333251953125f, "1/3 -> f16 -> f32");
    // NaN stays NaN (quiet), in both directions.
    CHECK(__hisnan(__float2half(NAN)) && std::isnan(__half2float(__float2half(NAN))), "f16 NaN");
    CHECK(__hisnan(__float2bfloat16(NAN)) && std::isnan(__bfloat162float(__float2bfloat16(NAN))), "bf16 NaN");
    CHECK(std::isnan(__half2float(__ushort_as_half(0xffff))), "0xffff is a NaN (shared-memory poison)");
    // double -> f16 rounds once: 1 + 2^-11 + 2^-40 is above the tie.
    CHECK(__half_as_ushort(__double2half(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40))) == 0x3c01,
          "double -> f16 double rounding");
    CHECK(__half_as_ushort(__half(1.0 / 3.0)) == 0x3555, "__half(double)");
    CHECK(static_cast<float>(__half(3)) == 3.0f && static_cast<float>(__nv_bfloat16(-7)) == -7.0f, "int ctors");

    // Every f16 value survives f16 -> f32 -> f16.
    int roundtrip_bad = 0;
    for (uint32_t u = 0; u < 0x10000; ++u) {
        const __half h = __ushort_as_half(static_cast<unsigned short>(u));
        const float f = __half2float(h);
        const unsigned short back = __half_as_ushort(__float2half_rn(f));
        const bool nan = (u & 0x7fff) > 0x7c00;
        if (nan ? !(std::isnan(f) && (back & 0x7fff) > 0x7c00) : back != u) ++roundtrip_bad;
        const __nv_bfloat16 b = __ushort_as_bfloat16(static_cast<unsigned short>(u));
        const float fb = __bfloat162float(b);
        const bool bnan = (u & 0x7fff) > 0x7f80;
        const unsigned short bback = __bfloat16_as_ushort(__float2bfloat16_rn(fb));
        if (bnan ? !std::isnan(fb) : bback != u) ++roundtrip_bad;
    }
    CHECK(roundtrip_bad == 0, "%d 16-bit values did not survive a round trip", roundtrip_bad);

    // Random floats (all exponents) against independent references.
    std::mt19937 rng(2024);
    int bad_f16 = 0, bad_bf16 = 0, checked = 0;
    for (int i = 0; i < (1 << 22); ++i) {
        const uint32_t u = static_cast<uint32_t>(rng());
        const float f = from_bits(u);
        if (std::isnan(f)) continue;
        ++checked;
        if (__bfloat16_as_ushort(__float2bfloat16_rn(f)) != ref_bf16_bits(f)) ++bad_bf16;
#ifdef __FLT16_MAX__
        if (__half_as_ushort(__float2half_rn(f)) != ref_f16_bits(f)) ++bad_f16;
#endif
    }
    CHECK(bad_bf16 == 0, "%d of %d random floats round to bf16 differently from the bit trick", bad_bf16, checked);
#ifdef __FLT16_MAX__
    CHECK(bad_f16 == 0, "%d of %d random floats round to f16 differently from _Float16", bad_f16, checked);
    printf("f16/bf16: known values, all 65536 round trips, %d random floats vs _Float16 and bf16 reference\n", checked);
#else
    printf("f16/bf16: known values, all 65536 round trips, %d random floats vs bf16 reference "
           "(no _Float16 in this compiler)\n", checked);
#endif
}

void test_stack_overflow() {
    g_context = "stack-overflow";
    int fds[2];
    if (pipe(fds) != 0) {
        CHECK(false, "pipe failed");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        ps_emu_set_stack_size(16 * 1024);
        std::vector<int> out(64);
        int* p = out.data();
        int depth = 1000000;
        void* args[2] = {&p, &depth};
        ps_emu_launch("st_err_stack_overflow", 1, 1, 1, 32, 1, 1, 0, args, 0, 0, 1);
        _exit(3);  // should not get here
    }
    close(fds[1]);
    std::string text;
    char buf[512];
    ssize_t k;
    while ((k = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(k));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer catches the overflow first, with its own report.
    const bool aborted = text.find("AddressSanitizer: stack-overflow") != std::string::npos;
    CHECK(aborted, "child status %d, stderr: %s", status, text.c_str());
#else
    const bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
    CHECK(aborted && text.find("fiber stack overflow in kernel 'st_err_stack_overflow'") != std::string::npos,
          "child status %d, stderr: %s", status, text.c_str());
#endif
    if (aborted) printf("stack overflow: child aborted with: %s", text.c_str());
}

double median_us(const char* kernel, dim3 grid, dim3 block, unsigned smem, std::vector<void*> args,
                 int workers, int reps) {
    std::vector<double> t;
    const Order fwd{PS_EMU_ORDER_FORWARD, 0, "forward"};
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        int rc = launch(kernel, grid, block, smem, args, fwd, workers);
        auto t1 = std::chrono::steady_clock::now();
        CHECK(rc == 0, "timing launch of %s failed: %s", kernel, ps_emu_last_error());
        t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

void timings() {
    g_context = "timing";
    std::vector<float> in(256 * 256, 1.0f), out(256 * 256);
    const float* pin = in.data();
    float* pout = out.data();
    int n256 = 256, nall = 256 * 256;
    const double scan = median_us("st_scan_hs", dim3(1), dim3(256), 0, {&pin, &pout, &n256}, 1, 300);
    const double red = median_us("st_block_reduce", dim3(1), dim3(256), 0, {&pin, &pout, &n256}, 1, 300);
    const double scan1024 = median_us("st_scan_hs", dim3(1), dim3(1024), 0, {&pin, &pout, &n256}, 1, 100);
    const double grid = median_us("st_scan_hs", dim3(256), dim3(256), 0, {&pin, &pout, &nall}, 0, 20);
    printf("timings (median, one launch, fiber order forward):\n");
    printf("  st_scan_hs      1 block x  256 threads, 17 __syncthreads      : %8.1f us\n", scan);
    printf("  st_block_reduce 1 block x  256 threads, 10 shuffles + 1 sync  : %8.1f us\n", red);
    printf("  st_scan_hs      1 block x 1024 threads, 21 __syncthreads      : %8.1f us\n", scan1024);
    printf("  st_scan_hs    256 blocks x 256 threads, default workers       : %8.1f us (%.1f us/block)\n",
           grid, grid / 256);
}

}  // namespace

int main(int argc, char** argv) {
    bool all = true, global = false;
    std::vector<Order> orders;
    unsigned long long seed = 12345;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], nullptr, 10);
        } else if (!strcmp(argv[i], "--order") && i + 1 < argc) {
            all = false;
            const char* o = argv[++i];
            if (!strcmp(o, "forward")) orders.push_back({PS_EMU_ORDER_FORWARD, 0, "forward"});
            else if (!strcmp(o, "reverse")) orders.push_back({PS_EMU_ORDER_REVERSE, 0, "reverse"});
            else if (!strcmp(o, "shuffle")) orders.push_back({PS_EMU_ORDER_SHUFFLE, 0, "shuffle"});
            else {
                fprintf(stderr, "unknown order %s\n", o);
                return 2;
            }
        } else if (!strcmp(argv[i], "--global")) {
            all = false;
            global = true;
        } else {
            fprintf(stderr, "usage: %s [--order forward|reverse|shuffle] [--seed N] [--global]\n", argv[0]);
            return 2;
        }
    }
    if (all) {
        orders = {{PS_EMU_ORDER_FORWARD, 0, "forward"},
                  {PS_EMU_ORDER_REVERSE, 0, "reverse"},
                  {PS_EMU_ORDER_SHUFFLE, 0, "shuffle"}};
        global = true;
    }
    for (Order& o : orders) {
        if (o.code == PS_EMU_ORDER_SHUFFLE) o.seed = seed;
        test_registry();
        run_order(o);
    }
    if (global) {
        test_missing_barrier();
        test_conversions();
        test_stack_overflow();
        timings();
    }
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
