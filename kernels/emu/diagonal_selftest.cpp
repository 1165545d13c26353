// diagonal_selftest.cpp: tests kernels/diagonal.cu on the CPU emulator.
//
// Launches the Diagonal kernels through the emulator's C ABI (ps_emu_launch), in exactly
// the launch sequences documented at the top of kernels/diagonal.cu (plans P0..P3), and
// checks them against a double-precision sequential loop on the same (rounded) inputs,
// for both layouts, every storage type, h0 given and null, and then checks the depth
// instantiation (_depth kernels) against the documented depth formula, element by element.
//
//   diagonal_selftest                         every fiber order
//   diagonal_selftest --order forward|reverse|shuffle [--seed N]
//   diagonal_selftest --expect-race           for a build with -DPS_DIAG_DROP_BARRIER=1:
//                                             runs the scan plans under every order and
//                                             succeeds when at least one order FAILS
//
// Exit status 0 when every check passed. Build and run: diagonal_selftest.sh.

#include "ps_emu.h"
#include "simt.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

int g_checks = 0;
int g_failures = 0;
bool g_quiet = false;  // --expect-race: failures are the expected outcome
std::string g_context;

#define CHECK(cond, ...)                                                                              \
    do {                                                                                              \
        ++g_checks;                                                                                   \
        if (!(cond)) {                                                                                \
            ++g_failures;                                                                             \
            if (!g_quiet) {                                                                           \
                fprintf(stderr, "FAIL [%s] %s:%d: %s: ", g_context.c_str(), __FILE__, __LINE__, #cond); \
                fprintf(stderr, __VA_ARGS__);                                                         \
                fputc('\n', stderr);                                                                  \
            }                                                                                         \
        }                                                                                             \
    } while (0)

struct Order {
    int code;
    unsigned long long seed;
    const char* name;
};

// ------------------------------------------------------------------------------------
// Storage types on the host
// ------------------------------------------------------------------------------------

template <typename S>
struct Host;
template <>
struct Host<float> {
    static constexpr const char* sfx = "f32";
    static float from(double x) { return static_cast<float>(x); }
    static double to(float x) { return x; }
    static double tol(int T) { return 1e-5 * std::max(1.0, std::log2(static_cast<double>(T))); }
    using Elem = float;  // one half of an aggregate
    using State = float;
};
template <>
struct Host<double> {
    static constexpr const char* sfx = "f64";
    static double from(double x) { return x; }
    static double to(double x) { return x; }
    static double tol(int T) { return 1e-13 * std::max(1.0, std::log2(static_cast<double>(T))); }
    using Elem = double;
    using State = double;
};
template <>
struct Host<__half> {
    static constexpr const char* sfx = "f16";
    static __half from(double x) { return __float2half_rn(static_cast<float>(x)); }
    static double to(__half x) { return __half2float(x); }
    static double tol(int) { return 1e-3; }
    using Elem = float;
    using State = float;
};
template <>
struct Host<__nv_bfloat16> {
    static constexpr const char* sfx = "bf16";
    static __nv_bfloat16 from(double x) { return __float2bfloat16_rn(static_cast<float>(x)); }
    static double to(__nv_bfloat16 x) { return __bfloat162float(x); }
    static double tol(int) { return 8e-3; }
    using Elem = float;
    using State = float;
};

// 16-byte aligned, 0xFF-poisoned host buffer.
struct Buf {
    std::vector<unsigned long long> v;  // new[] alignment is >= 16 on x86-64 glibc
    unsigned char* p = nullptr;
    void alloc(size_t bytes) {
        v.assign((bytes + 64) / 8 + 2, ~0ull);
        p = reinterpret_cast<unsigned char*>(v.data());
        if (reinterpret_cast<uintptr_t>(p) & 15) p += 8;
    }
    void poison() { memset(v.data(), 0xFF, v.size() * 8); }
};

// ------------------------------------------------------------------------------------
// Plans: the launch sequences of diagonal.cu's contract
// ------------------------------------------------------------------------------------

enum Layout { BTD = 0, BDT = 1 };
enum Kind { SEQ = 0, SINGLE = 1, ONE = 2, TWO = 3 };
const char* kLayoutName[] = {"btd", "bdt"};
const char* kKindName[] = {"sequential", "single-pass", "one-level", "two-level"};
constexpr int kK = 8;  // steps per thread of the BDT kernels

struct Plan {
    Layout layout;
    Kind kind;
    int C;        // chunk (ignored by SEQ; SINGLE uses C = T)
    int nb = 64;  // BTD / sequential block
    int nt = 64;  // BDT block (multiple of 32, <= 256)
    int ns1 = 32; // TWO: first-level scan block (TL = 2*ns1)
};

long long ceil_div(long long x, long long y) { return (x + y - 1) / y; }
int pow2_at_least(long long x, int lo, int hi) {
    int p = lo;
    while (p < x && p < hi) p <<= 1;
    return p;
}

int launch(const std::string& kernel, unsigned gx, unsigned gy, unsigned block, std::vector<void*> args,
           const Order& o, std::string* err) {
    const int rc = ps_emu_launch(kernel.c_str(), gx, gy, 1, block, 1, 1, 0, args.data(), o.code, o.seed, 2);
    if (rc != PS_EMU_OK && err->empty()) *err = kernel + ": " + ps_emu_last_error();
    return rc;
}

// Runs one plan. a, b, h0 are In*, h, hT are Out*; elem/state are the scratch element sizes.
// Returns "" on success, else the launch error.
std::string run_plan(const char* sfx, size_t elem_bytes, size_t state_bytes, int B, int T, int D, const Plan& pl,
                     const void* a, const void* b, void* h, void* hT, const void* h0, const Order& o) {
    std::string err;
    const std::string L = kLayoutName[pl.layout];
    const std::string S = sfx;
    const long long lanes = static_cast<long long>(B) * D;
    if (pl.kind == SEQ) {
        const unsigned grid = static_cast<unsigned>(ceil_div(lanes, pl.nb));
        launch("diag_" + L + "_sequential_" + S, grid, 1, pl.nb, {&a, &b, &h, &hT, &h0, &B, &T, &D}, o, &err);
        return err;
    }
    int C = pl.kind == SINGLE ? T : pl.C;
    int NC = static_cast<int>(ceil_div(T, C));
    auto chunk_launch = [&](const std::string& role, std::vector<void*> args) {
        if (pl.layout == BTD) {
            launch("diag_btd_" + role + "_" + S, static_cast<unsigned>(ceil_div(lanes * NC, pl.nb)), 1, pl.nb, args, o,
                   &err);
        } else {
            launch("diag_bdt_" + role + "_" + S, static_cast<unsigned>(lanes * NC), 1, pl.nt, args, o, &err);
        }
    };
    if (pl.kind == SINGLE) {
        const void* carry = nullptr;
        chunk_launch("rescan", {&a, &b, &h, &hT, &carry, &h0, &B, &T, &D, &C});
        return err;
    }
    Buf agg, carry;
    agg.alloc(static_cast<size_t>(lanes * NC) * elem_bytes);
    carry.alloc(static_cast<size_t>(lanes * NC) * state_bytes);
    void* pagg = agg.p;
    void* pcarry = carry.p;
    chunk_launch("reduce", {&a, &b, &pagg, &B, &T, &D, &C});
    if (pl.kind == ONE) {
        const int ns = pow2_at_least(ceil_div(NC, 2), 32, 1024);
        launch("diag_scan_" + S, static_cast<unsigned>(lanes), 1, ns, {&pagg, &pcarry, &h0, &B, &D, &NC},
               o, &err);
    } else {
        int TL = 2 * pl.ns1;
        int NTL = static_cast<int>(ceil_div(NC, TL));
        Buf tagg, tcarry;
        tagg.alloc(static_cast<size_t>(lanes * NTL) * elem_bytes);
        tcarry.alloc(static_cast<size_t>(lanes * NTL) * state_bytes);
        void* ptagg = tagg.p;
        void* ptcarry = tcarry.p;
        int nc = NC;
        launch("diag_scan_tiles_" + S, static_cast<unsigned>(lanes), static_cast<unsigned>(NTL), pl.ns1,
               {&pagg, &ptagg, &B, &D, &nc}, o, &err);
        const int ns2 = pow2_at_least(ceil_div(NTL, 2), 32, 1024);
        launch("diag_scan_" + S, static_cast<unsigned>(lanes), 1, ns2, {&ptagg, &ptcarry, &h0, &B, &D, &NTL}, o, &err);
        launch("diag_scan_apply_" + S, static_cast<unsigned>(ceil_div(lanes * NC, 256)), 1, 256,
               {&pagg, &ptcarry, &pcarry, &B, &D, &nc, &TL}, o, &err);
    }
    chunk_launch("rescan", {&a, &b, &h, &hT, &pcarry, &h0, &B, &T, &D, &C});
    return err;
}

std::string describe(int B, int T, int D, const Plan& p) {
    char buf[200];
    snprintf(buf, sizeof buf, "%s %s B=%d T=%d D=%d C=%d nb=%d nt=%d ns1=%d", kLayoutName[p.layout],
             kKindName[p.kind], B, T, D, p.kind == SINGLE ? T : p.C, p.nb, p.nt, p.ns1);
    return buf;
}

// ------------------------------------------------------------------------------------
// Values against the f64 loop
// ------------------------------------------------------------------------------------

struct Case {
    int B, T, D;
    Plan plan;
    bool misaligned = false;  // pass views shifted by one element (scalar path)
    bool no_h = false;        // h = null: only hT
};

template <typename S>
void check_values(const Case& cs, bool with_h0, const Order& o, unsigned seed) {
    using H = Host<S>;
    const int B = cs.B, T = cs.T, D = cs.D;
    const Plan& pl = cs.plan;
    const size_t n = static_cast<size_t>(B) * T * D, lanes = static_cast<size_t>(B) * D;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> ua(0.6, 0.999), ub(-1.0, 1.0), u01(0.0, 1.0);
    const size_t off = cs.misaligned ? 1 : 0;
    std::vector<S> a(n + 8), b(n + 8), h0(lanes + 8), h(n + 8), hT(lanes + 8);
    for (size_t i = 0; i < n; ++i) {
        a[i + off] = H::from(ua(rng) * (u01(rng) < 0.1 ? -1.0 : 1.0));
        b[i + off] = H::from(ub(rng));
    }
    for (size_t i = 0; i < lanes; ++i) h0[i + off] = H::from(ub(rng));
    memset(h.data(), 0xFF, h.size() * sizeof(S));
    memset(hT.data(), 0xFF, hT.size() * sizeof(S));

    // Reference: the sequential loop in double on the rounded inputs.
    std::vector<double> ref(n), refT(lanes);
    for (int bb = 0; bb < B; ++bb)
        for (int d = 0; d < D; ++d) {
            const size_t lane = static_cast<size_t>(bb) * D + d;
            double x = with_h0 ? H::to(h0[lane + off]) : 0.0;
            for (int t = 0; t < T; ++t) {
                const size_t i = pl.layout == BTD ? (static_cast<size_t>(bb) * T + t) * D + d : lane * T + t;
                x = H::to(a[i + off]) * x + H::to(b[i + off]);
                ref[i] = x;
            }
            refT[lane] = x;
        }

    const void* pa = a.data() + off;
    const void* pb = b.data() + off;
    void* ph = cs.no_h ? nullptr : static_cast<void*>(h.data() + off);
    void* phT = hT.data() + off;
    const void* ph0 = with_h0 ? static_cast<const void*>(h0.data() + off) : nullptr;
    const std::string err = run_plan(H::sfx, 2 * sizeof(typename H::Elem), sizeof(typename H::State), B, T, D, pl,
                                     pa, pb, ph, phT, ph0, o);
    g_context = std::string(o.name) + " " + H::sfx + " " + describe(B, T, D, pl) + (with_h0 ? " h0" : " no-h0") +
                (cs.misaligned ? " misaligned" : "") + (cs.no_h ? " no-h" : "");
    CHECK(err.empty(), "launch failed: %s", err.c_str());
    if (!err.empty()) return;

    auto rel_l2 = [](const std::vector<double>& got, const std::vector<double>& want) {
        double num = 0, den = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            num += (got[i] - want[i]) * (got[i] - want[i]);
            den += want[i] * want[i];
        }
        return std::sqrt(num / std::max(den, 1e-300));
    };
    const double tol = H::tol(T);
    if (!cs.no_h) {
        std::vector<double> got(n);
        for (size_t i = 0; i < n; ++i) got[i] = H::to(h[i + off]);
        const double e = rel_l2(got, ref);
        CHECK(e <= tol, "h: relative L2 error %.3g > %.3g", e, tol);
        // Outside the array nothing was written.
        bool guard = true;
        for (size_t i = 0; i < off; ++i) guard &= std::isnan(H::to(h[i]));
        for (size_t i = n + off; i < h.size(); ++i) guard &= std::isnan(H::to(h[i]));
        CHECK(guard, "h: a write outside the array");
        // hT is the same register as the last h.
        bool same = true;
        for (int bb = 0; bb < B; ++bb)
            for (int d = 0; d < D; ++d) {
                const size_t lane = static_cast<size_t>(bb) * D + d;
                const size_t i = pl.layout == BTD ? (static_cast<size_t>(bb) * T + (T - 1)) * D + d : lane * T + T - 1;
                same &= memcmp(&hT[lane + off], &h[i + off], sizeof(S)) == 0;
            }
        CHECK(same, "hT differs from h at t = T");
    } else {
        bool untouched = true;
        for (size_t i = 0; i < h.size(); ++i) untouched &= std::isnan(H::to(h[i]));
        CHECK(untouched, "h written although null was passed");
    }
    std::vector<double> gotT(lanes);
    for (size_t i = 0; i < lanes; ++i) gotT[i] = H::to(hT[i + off]);
    const double eT = rel_l2(gotT, refT);
    CHECK(eT <= tol, "hT: relative L2 error %.3g > %.3g", eT, tol);
}

// ------------------------------------------------------------------------------------
// Depth: measured (the _depth kernels) against the formula documented in diagonal.cu
// ------------------------------------------------------------------------------------

unsigned hb(unsigned long long x) { return 63u - static_cast<unsigned>(__builtin_clzll(x)); }
unsigned pc(unsigned long long x) { return static_cast<unsigned>(__builtin_popcountll(x)); }
unsigned bl(unsigned long long x) { return x ? hb(x) + 1 : 0; }
// Blelloch exclusive prefix over leaves of depth L.
unsigned P(unsigned L, unsigned long long i) { return i == 0 ? 0 : L + hb(i) + pc(i); }

// Depth of output step i (1-based) of chunk c.
struct DepthFormula {
    Layout layout;
    Kind kind;
    int T, C, nt, TL;
    unsigned L() const {
        if (layout == BTD) return static_cast<unsigned>(C);
        const unsigned nw = static_cast<unsigned>(nt / 32);
        const unsigned J = static_cast<unsigned>(ceil_div(C, static_cast<long long>(nt) * kK));
        return kK + 3 + nw + J;
    }
    unsigned dc(long long c) const {
        switch (kind) {
            case SEQ:
            case SINGLE: return 0;
            case ONE: return P(L(), static_cast<unsigned long long>(c)) + 1;
            case TWO: {
                const long long r = c % TL, j = c / TL;
                return std::max(P(L(), static_cast<unsigned long long>(r)),
                                P(L() + hb(static_cast<unsigned long long>(TL)), static_cast<unsigned long long>(j)) + 1) +
                       1;
            }
        }
        return 0;
    }
    unsigned at(long long t) const {  // t = 0..T-1
        if (kind == SEQ) return static_cast<unsigned>(t + 1);
        const long long Cc = kind == SINGLE ? T : C;
        const long long c = t / Cc, i = t % Cc + 1;
        const unsigned d0 = dc(c);
        if (layout == BTD) return d0 + static_cast<unsigned>(i);
        const long long tile = static_cast<long long>(nt) * kK;
        const unsigned nw = static_cast<unsigned>(nt / 32);
        const long long q = (i - 1) / tile, u = ((i - 1) % tile) / kK, k = (i - 1) % kK;
        const unsigned w = static_cast<unsigned>(u / 32), l = static_cast<unsigned>(u % 32);
        const unsigned eq = q == 0 ? d0 : std::max(d0, kK + 3 + nw) + static_cast<unsigned>(q);
        const unsigned dW = w == 0 ? 0 : kK + 3 + w;
        const unsigned dx = l == 0 ? 0 : kK - 1 + bl(l - 1);
        return std::max(dx, std::max(dW, eq) + 1) + 1 + static_cast<unsigned>(k + 1);
    }
};

void check_depth(int B, int T, int D, const Plan& pl, const Order& o) {
    const size_t n = static_cast<size_t>(B) * T * D, lanes = static_cast<size_t>(B) * D;
    std::vector<unsigned> h(n + 4, ~0u), hT(lanes + 4, ~0u);
    g_context = std::string(o.name) + " depth " + describe(B, T, D, pl);
    // a, b, h0 are not read by the depth kernels: pass null.
    const std::string err = run_plan("depth", 4, 4, B, T, D, pl, nullptr, nullptr, h.data(), hT.data(), nullptr, o);
    CHECK(err.empty(), "launch failed: %s", err.c_str());
    if (!err.empty()) return;
    const DepthFormula f{pl.layout, pl.kind, T, pl.C, pl.nt, 2 * pl.ns1};
    int bad = 0;
    unsigned maxd = 0;
    for (int bb = 0; bb < B; ++bb)
        for (int d = 0; d < D; ++d)
            for (int t = 0; t < T; ++t) {
                const size_t lane = static_cast<size_t>(bb) * D + d;
                const size_t i = pl.layout == BTD ? (static_cast<size_t>(bb) * T + t) * D + d : lane * T + t;
                const unsigned want = f.at(t);
                maxd = std::max(maxd, h[i]);
                if (h[i] != want && bad++ < 3)
                    CHECK(false, "depth of h[b=%d, d=%d, t=%d] = %u, formula %u", bb, d, t, h[i], want);
                if (t == T - 1 && hT[lane] != want && bad++ < 3)
                    CHECK(false, "depth of hT[b=%d, d=%d] = %u, formula %u", bb, d, hT[lane], want);
            }
    CHECK(bad == 0, "%d depth mismatches", bad);
    if (o.code == PS_EMU_ORDER_FORWARD)
        printf("  depth %-62s max %u\n", describe(B, T, D, pl).c_str(), maxd);
}

// ------------------------------------------------------------------------------------
// The test matrix
// ------------------------------------------------------------------------------------

Plan mk(Layout l, Kind k, int C, int nt = 64, int ns1 = 32, int nb = 64) {
    Plan p;
    p.layout = l;
    p.kind = k;
    p.C = C;
    p.nt = nt;
    p.ns1 = ns1;
    p.nb = nb;
    return p;
}

std::vector<Case> value_cases() {
    std::vector<Case> cs;
    for (Layout l : {BTD, BDT}) {
        // T = 1; D = 1.
        cs.push_back({1, 1, 1, mk(l, SEQ, 1)});
        cs.push_back({1, 1, 1, mk(l, SINGLE, 1)});
        cs.push_back({2, 1, 3, mk(l, ONE, 4)});
        // Odd T, T not a multiple of C, D = 3, B = 2.
        cs.push_back({2, 7, 3, mk(l, ONE, 3, 32)});
        cs.push_back({2, 7, 3, mk(l, SEQ, 7, 32, 32, 32)});
        // D = 100, B = 3, NC = 5.
        cs.push_back({3, 33, 100, mk(l, ONE, 8, 32)});
        cs.push_back({3, 33, 100, mk(l, SINGLE, 8, 32)});
        // T < C.
        cs.push_back({1, 100, 64, mk(l, ONE, 256, 64)});
        // D = 64, NC = 16, vector path (T, C multiples of 8).
        cs.push_back({2, 1000, 64, mk(l, ONE, 64, 64)});
        // T >> C: NC = 128, one- and two-level scans.
        cs.push_back({1, 4096, 3, mk(l, ONE, 32, 32)});
        cs.push_back({1, 4096, 3, mk(l, TWO, 32, 32, 32)});
        cs.push_back({1, 5003, 1, mk(l, TWO, 40, 32, 32)});
        // C % 8 == 4: f32 vector loads with a partial last thread per chunk (scalar
        // fallback for that thread); scalar everywhere for the 16-bit types. BTD block 48.
        cs.push_back({2, 1004, 3, mk(l, ONE, 500, 32, 32, 48)});
        // Two levels with B = 2, D = 3 (tile aggregates of several lanes).
        cs.push_back({2, 1500, 3, mk(l, TWO, 8, 64, 32)});
        // Several tiles per BDT chunk; odd T (scalar path) and vector path.
        cs.push_back({2, 2053, 5, mk(l, ONE, 1024, 64)});
        cs.push_back({1, 4096, 2, mk(l, ONE, 1024, 32)});
        // Single pass over several tiles, 256-thread blocks.
        cs.push_back({1, 5000, 2, mk(l, SINGLE, 0, 256)});
        cs.push_back({1, 3000, 2, mk(l, SINGLE, 0, 128)});
        // Misaligned views (scalar path everywhere), h = null.
        {
            Case c{2, 64, 4, mk(l, ONE, 16, 32)};
            c.misaligned = true;
            cs.push_back(c);
        }
        {
            Case c{1, 100, 3, mk(l, ONE, 16, 32)};
            c.no_h = true;
            cs.push_back(c);
        }
    }
    // NC = 2500 > 2048: two levels with full 2048-aggregate tiles (1024-thread blocks).
    cs.push_back({1, 5000, 1, mk(BDT, TWO, 2, 32, 1024)});
    cs.push_back({1, 5000, 1, mk(BTD, TWO, 2, 32, 1024)});
    return cs;
}

struct DepthCase {
    int B, T, D;
    Plan plan;
};

std::vector<DepthCase> depth_cases() {
    std::vector<DepthCase> cs;
    for (Layout l : {BTD, BDT}) {
        cs.push_back({1, 1, 1, mk(l, SEQ, 1)});
        cs.push_back({2, 37, 3, mk(l, SEQ, 1, 32, 32, 32)});
        cs.push_back({1, 1, 2, mk(l, SINGLE, 1)});
        cs.push_back({1, 777, 2, mk(l, SINGLE, 0, 32)});
        cs.push_back({1, 3000, 1, mk(l, SINGLE, 0, 128)});
        cs.push_back({2, 100, 3, mk(l, ONE, 7, 32)});
        cs.push_back({1, 1000, 2, mk(l, ONE, 16, 64)});
        cs.push_back({1, 4100, 1, mk(l, ONE, 1024, 64)});
        cs.push_back({1, 2500, 1, mk(l, ONE, 64, 256)});
        cs.push_back({1, 3000, 1, mk(l, TWO, 8, 32, 32)});
        cs.push_back({1, 5000, 2, mk(l, TWO, 5, 96, 64)});
        cs.push_back({1, 4500, 1, mk(l, TWO, 2, 32, 1024)});
    }
    return cs;
}

void run_order(const Order& o) {
    const auto t0 = std::chrono::steady_clock::now();
    const int before = g_failures;
    unsigned seed = 1000;
    const auto cases = value_cases();
    for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        // h0 given / null alternates so every case sees both across the four types.
        check_values<float>(c, (i + 0) % 2 == 0, o, seed++);
        check_values<__half>(c, (i + 1) % 2 == 0, o, seed++);
        check_values<__nv_bfloat16>(c, (i + 0) % 2 == 1, o, seed++);
        check_values<double>(c, (i + 1) % 2 == 1, o, seed++);
    }
    for (const DepthCase& c : depth_cases()) check_depth(c.B, c.T, c.D, c.plan, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("order %-8s %zu value cases x 4 types, %zu depth cases: %s (%.1f s)\n", o.name, cases.size(),
           depth_cases().size(), g_failures == before ? "ok" : "FAILED", s);
}

void test_registry() {
    g_context = "registry";
    const char* roles[] = {"btd_reduce", "btd_rescan", "btd_sequential", "bdt_reduce", "bdt_rescan",
                           "bdt_sequential", "scan", "scan_tiles", "scan_apply"};
    const int nparams[] = {7, 10, 8, 7, 10, 8, 6, 5, 7};
    for (const char* s : {"f32", "f16", "bf16", "f64", "depth"})
        for (int r = 0; r < 9; ++r) {
            const std::string k = std::string("diag_") + roles[r] + "_" + s;
            CHECK(ps_emu_kernel_num_params(k.c_str()) == nparams[r], "%s: %d parameters", k.c_str(),
                  ps_emu_kernel_num_params(k.c_str()));
        }
}

// A build with one Blelloch barrier removed: the one- and two-level scan plans must fail
// under at least one fiber order. Prints which.
int expect_race(const std::vector<Order>& orders) {
    g_quiet = true;
    std::vector<std::string> caught, missed;
    for (const Order& o : orders) {
        const int before = g_failures;
        unsigned seed = 77;
        for (Layout l : {BTD, BDT}) {
            check_values<float>({1, 4096, 3, mk(l, ONE, 32, 32)}, true, o, seed++);
            check_values<float>({2, 1000, 4, mk(l, TWO, 8, 32, 32)}, false, o, seed++);
            check_values<float>({1, 5000, 1, mk(l, ONE, 4, 32)}, true, o, seed++);
        }
        const int failed = g_failures - before;
        printf("  order %-8s: %d failed checks%s\n", o.name, failed, failed ? " (race caught)" : " (race missed)");
        (failed ? caught : missed).push_back(o.name);
    }
    printf("dropped barrier: caught under %zu of %zu orders\n", caught.size(), orders.size());
    return caught.empty() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<Order> orders;
    unsigned long long seed = 12345;
    bool race = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], nullptr, 10);
        } else if (!strcmp(argv[i], "--order") && i + 1 < argc) {
            const char* o = argv[++i];
            if (!strcmp(o, "forward")) orders.push_back({PS_EMU_ORDER_FORWARD, 0, "forward"});
            else if (!strcmp(o, "reverse")) orders.push_back({PS_EMU_ORDER_REVERSE, 0, "reverse"});
            else if (!strcmp(o, "shuffle")) orders.push_back({PS_EMU_ORDER_SHUFFLE, 0, "shuffle"});
            else {
                fprintf(stderr, "unknown order %s\n", o);
                return 2;
            }
        } else if (!strcmp(argv[i], "--expect-race")) {
            race = true;
        } else {
            fprintf(stderr, "usage: %s [--order forward|reverse|shuffle] [--seed N] [--expect-race]\n", argv[0]);
            return 2;
        }
    }
    if (orders.empty())
        orders = {{PS_EMU_ORDER_FORWARD, 0, "forward"},
                  {PS_EMU_ORDER_REVERSE, 0, "reverse"},
                  {PS_EMU_ORDER_SHUFFLE, 0, "shuffle"}};
    for (Order& o : orders)
        if (o.code == PS_EMU_ORDER_SHUFFLE) o.seed = seed;
    if (race) return expect_race(orders);
    test_registry();
    for (const Order& o : orders) run_order(o);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
