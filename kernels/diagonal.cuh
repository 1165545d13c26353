// diagonal.cuh: the Diagonal family's scan building blocks (element policies, vector
// loads, thread-serial runs, [B,D,T] tiles, Blelloch block scans, and the single-pass
// look-back), in namespace psd. diagonal.cu instantiates them as the Diagonal kernels
// (its header comment is the launch contract); newton.cu reuses the [B,T,D] look-back
// with a step source that evaluates a cell, fusing Newton's assemble into the scan.
#ifndef PARASCAN_DIAGONAL_CUH
#define PARASCAN_DIAGONAL_CUH

#include <stdint.h>

#include "emu/portable.cuh"
#include "parascan.cuh"

#ifndef PS_DIAG_DROP_BARRIER
#define PS_DIAG_DROP_BARRIER 0
#endif
// Planted look-back bugs (lb_plant below): emulator builds only.
#ifndef PS_LB_PLANTS
#define PS_LB_PLANTS 0
#endif
#if PS_LB_PLANTS && defined(PS_EMULATION) && !defined(__CUDA_ARCH__)
#include <stdlib.h>
#endif

#define PSD_DEV __device__ __forceinline__
// Full unrolling of the fixed-trip loops (register arrays must only see constant indices).
#if defined(__CUDACC__) || defined(__clang__)
#define PSD_UNROLL _Pragma("unroll")
#else
#define PSD_UNROLL _Pragma("GCC unroll 16")
#endif

namespace psd {

// Steps per thread and tile in the BDT kernels (a multiple of every vector width).
constexpr int kStepsPerThread = 8;
// Largest Blelloch tile (2 * 1024 threads).
constexpr int kMaxScanTile = 2048;

PSD_DEV bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

PSD_DEV long long min_ll(long long x, long long y) { return x < y ? x : y; }

// Reverse scans (REV = true): the skeletons walk steps s = 0..T-1 in their own order
// (chunks, carries, look-back chains, depth and the "last step" that writes hT are all in
// s), and step s lives at time t = T-1-s in memory, so h_t = a_t * h_{t+1} + b_t from
// h0 = the state after t = T-1, and hT is the state at t = 0. Only the memory index
// changes: every plan keeps its depth and its bytes (the 16-byte vectors of a thread's K
// steps are the same aligned vectors, read or written with their values in reverse).
template <bool REV>
PSD_DEV long long step_time(long long s, long long T) {
    return REV ? T - 1 - s : s;
}

// 16 bytes <-> storage values, with explicit bit moves. The 16-byte accesses go through
// __ldg / __stwb (intrinsics nvcc cannot split; a plain uint4 dereference or a union
// was split into 4- and 8-byte accesses by the optimizer).
template <typename S>
struct Vec16;
template <>
struct Vec16<float> {
    static constexpr int N = 4;
    PSD_DEV static void unpack(const uint4& u, float* r) {
        r[0] = __uint_as_float(u.x);
        r[1] = __uint_as_float(u.y);
        r[2] = __uint_as_float(u.z);
        r[3] = __uint_as_float(u.w);
    }
    PSD_DEV static uint4 pack(const float* r) {
        return make_uint4(__float_as_uint(r[0]), __float_as_uint(r[1]), __float_as_uint(r[2]),
                          __float_as_uint(r[3]));
    }
};
template <>
struct Vec16<unsigned> {
    static constexpr int N = 4;
    PSD_DEV static void unpack(const uint4& u, unsigned* r) {
        r[0] = u.x;
        r[1] = u.y;
        r[2] = u.z;
        r[3] = u.w;
    }
    PSD_DEV static uint4 pack(const unsigned* r) { return make_uint4(r[0], r[1], r[2], r[3]); }
};
template <>
struct Vec16<double> {
    static constexpr int N = 2;
    PSD_DEV static double join(unsigned lo, unsigned hi) {
        return __longlong_as_double(static_cast<long long>((static_cast<unsigned long long>(hi) << 32) | lo));
    }
    PSD_DEV static unsigned lo(double x) {
        return static_cast<unsigned>(static_cast<unsigned long long>(__double_as_longlong(x)));
    }
    PSD_DEV static unsigned hi(double x) {
        return static_cast<unsigned>(static_cast<unsigned long long>(__double_as_longlong(x)) >> 32);
    }
    PSD_DEV static void unpack(const uint4& u, double* r) {
        r[0] = join(u.x, u.y);
        r[1] = join(u.z, u.w);
    }
    PSD_DEV static uint4 pack(const double* r) { return make_uint4(lo(r[0]), hi(r[0]), lo(r[1]), hi(r[1])); }
};
#if defined(PS_HAS_HALF)
// 16-bit storage: two values per 32-bit word, the lower address in the low half.
template <typename H>
struct Vec16Half {
    static constexpr int N = 8;
    PSD_DEV static unsigned short bits(__half x) { return __half_as_ushort(x); }
    PSD_DEV static unsigned short bits(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
    PSD_DEV static void from_bits(unsigned short u, __half& x) { x = __ushort_as_half(u); }
    PSD_DEV static void from_bits(unsigned short u, __nv_bfloat16& x) { x = __ushort_as_bfloat16(u); }
    PSD_DEV static void split(unsigned w, H* r) {
        from_bits(static_cast<unsigned short>(w & 0xffffu), r[0]);
        from_bits(static_cast<unsigned short>(w >> 16), r[1]);
    }
    PSD_DEV static unsigned word(const H* r) {
        return static_cast<unsigned>(bits(r[0])) | (static_cast<unsigned>(bits(r[1])) << 16);
    }
    PSD_DEV static void unpack(const uint4& u, H* r) {
        split(u.x, r);
        split(u.y, r + 2);
        split(u.z, r + 4);
        split(u.w, r + 6);
    }
    PSD_DEV static uint4 pack(const H* r) { return make_uint4(word(r), word(r + 2), word(r + 4), word(r + 6)); }
};
template <>
struct Vec16<__half> : Vec16Half<__half> {};
template <>
struct Vec16<__nv_bfloat16> : Vec16Half<__nv_bfloat16> {};
#endif

// ---------------------------------------------------------------------------------------
// Element policies: the scan templates below only talk to these.
// ---------------------------------------------------------------------------------------

// Real values: storage S, compute T, combine from parascan.cuh's Diagonal.
template <typename S, typename T>
struct DiagOps {
    using In = S;
    using Out = S;
    using Raw = S;  // what a load keeps in registers before widening
    using Elem = ps::DiagElem<T>;
    using State = T;
    using Fam = ps::Diagonal<T>;
    static constexpr bool kReads = true;
    // Steps a BTD/sequential thread keeps in flight per array (double-buffered).
    static constexpr int kBatch = sizeof(S) == 8 ? 8 : 16;

    PSD_DEV static Elem identity() { return Fam::identity(); }
    PSD_DEV static Elem combine(const Elem& x, const Elem& y) { return Fam::combine(x, y); }
    PSD_DEV static State apply(const Elem& e, State h) { return Fam::apply(e, h); }
    PSD_DEV static Raw load(const In* p) { return *p; }
    PSD_DEV static Elem make(Raw a, Raw b) {
        return Elem{static_cast<T>(ps::widen(a)), static_cast<T>(ps::widen(b))};
    }
    PSD_DEV static State initial(const In* h0, long long lane) {
        return h0 ? ps::load<T>(h0 + lane) : T(0);
    }
    PSD_DEV static Out narrow(State x) { return ps::Narrow<S>::from(x); }
    PSD_DEV static Elem shfl_up(const Elem& e, unsigned off) {
        return Elem{__shfl_up_sync(PS_FULL_MASK, e.a, off), __shfl_up_sync(PS_FULL_MASK, e.b, off)};
    }
    PSD_DEV static Elem shfl_down(const Elem& e, unsigned off) {
        return Elem{__shfl_down_sync(PS_FULL_MASK, e.a, off), __shfl_down_sync(PS_FULL_MASK, e.b, off)};
    }
    PSD_DEV static Elem shfl_idx(const Elem& e, int src) {
        return Elem{__shfl_sync(PS_FULL_MASK, e.a, src), __shfl_sync(PS_FULL_MASK, e.b, src)};
    }
    PSD_DEV static State shfl_state(State x, int src) { return __shfl_sync(PS_FULL_MASK, x, src); }
    // Look-back payloads bypass L1 (ld/st.cg): a block may have cached a neighbouring
    // slot's line before this slot was published.
    PSD_DEV static Elem load_agg(const Elem* p) { return Elem{__ldcg(&p->a), __ldcg(&p->b)}; }
    PSD_DEV static void store_agg(Elem* p, const Elem& e) {
        __stcg(&p->a, e.a);
        __stcg(&p->b, e.b);
    }
    PSD_DEV static State load_state(const State* p) { return __ldcg(p); }
    PSD_DEV static void store_state(State* p, State x) { __stcg(p, x); }
    // The look-back may fold predecessors' aggregates (timing-dependent, see lookback).
    static constexpr bool kChainOnly = false;
};

// Depth counting: same skeleton, element = depth of the longest combine chain.
struct DepthOps {
    using In = unsigned;
    using Out = unsigned;
    using Raw = unsigned;
    using Elem = unsigned;
    using State = unsigned;
    static constexpr bool kReads = false;
    static constexpr int kBatch = 16;

    PSD_DEV static Elem identity() { return ps::DepthCounter::identity(); }
    PSD_DEV static Elem combine(Elem x, Elem y) { return ps::DepthCounter::combine(x, y); }
    // Applying a map to a state is one combine, too.
    PSD_DEV static State apply(Elem e, State h) { return ps::DepthCounter::combine(e, h); }
    PSD_DEV static Raw load(const In*) { return 0u; }  // never dereferences
    PSD_DEV static Elem make(Raw, Raw) { return 0u; }  // every input step has depth 0
    PSD_DEV static State initial(const In*, long long) { return 0u; }
    PSD_DEV static Out narrow(State x) { return x; }
    PSD_DEV static Elem shfl_up(Elem e, unsigned off) { return __shfl_up_sync(PS_FULL_MASK, e, off); }
    PSD_DEV static Elem shfl_down(Elem e, unsigned off) { return __shfl_down_sync(PS_FULL_MASK, e, off); }
    PSD_DEV static Elem shfl_idx(Elem e, int src) { return __shfl_sync(PS_FULL_MASK, e, src); }
    PSD_DEV static State shfl_state(State x, int src) { return __shfl_sync(PS_FULL_MASK, x, src); }
    PSD_DEV static Elem load_agg(const Elem* p) { return __ldcg(p); }
    PSD_DEV static void store_agg(Elem* p, Elem e) { __stcg(p, e); }
    PSD_DEV static State load_state(const State* p) { return __ldcg(p); }
    PSD_DEV static void store_state(State* p, State x) { __stcg(p, x); }
    // Depth is measured on the deterministic worst case of the look-back: every block
    // waits for its predecessor's inclusive prefix (a chain of one combine per chunk).
    static constexpr bool kChainOnly = true;
};

// K consecutive raw values from a 16-byte aligned address, as K*sizeof/16 vector loads.
template <class Ops, int K>
PSD_DEV void load_vec(const typename Ops::In* __restrict__ p, typename Ops::Raw (&r)[K]) {
    using In = typename Ops::In;
    constexpr int V = Vec16<In>::N;
    static_assert(K % V == 0, "K must be a multiple of the vector width");
    if constexpr (!Ops::kReads) {
PSD_UNROLL
        for (int k = 0; k < K; ++k) r[k] = Ops::load(p);
    } else {
        const uint4* __restrict__ q = reinterpret_cast<const uint4*>(p);
PSD_UNROLL
        for (int v = 0; v < K / V; ++v) Vec16<In>::unpack(__ldg(q + v), r + v * V);
    }
}

// K consecutive outputs to a 16-byte aligned address.
template <class Ops, int K>
PSD_DEV void store_vec(typename Ops::Out* __restrict__ p, const typename Ops::State (&x)[K]) {
    using Out = typename Ops::Out;
    constexpr int V = Vec16<Out>::N;
    static_assert(K % V == 0, "K must be a multiple of the vector width");
    uint4* __restrict__ q = reinterpret_cast<uint4*>(p);
PSD_UNROLL
    for (int v = 0; v < K / V; ++v) {
        Out o[V];
PSD_UNROLL
        for (int j = 0; j < V; ++j) o[j] = Ops::narrow(x[v * V + j]);
        __stwb(q + v, Vec16<Out>::pack(o));
    }
}

// ---------------------------------------------------------------------------------------
// Thread-serial run over `len` steps at base + i*stride (BTD chunks, sequential kernels).
// REDUCE: acc <- acc (+) step for every step. Otherwise: hh <- apply(step, hh) and the
// result is written to h (if non-null). Loads are double-buffered: the next kBatch steps
// are requested before the current ones are consumed, so 1-2 batches are in flight.
// ---------------------------------------------------------------------------------------
template <class Ops, bool REDUCE>
PSD_DEV void serial_run(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                        typename Ops::Out* __restrict__ h, long long base, long long stride, long long len,
                        typename Ops::State& hh, typename Ops::Elem& acc) {
    using Raw = typename Ops::Raw;
    constexpr int U = Ops::kBatch;
    Raw ca[U], cb[U], na[U], nb[U];
    // Running pointers, bumped by `stride` per step: keeps the address arithmetic to one
    // 64-bit add per load instead of U precomputed 64-bit offsets held in registers.
    const typename Ops::In* pa = a + base;
    const typename Ops::In* pb = b + base;
    typename Ops::Out* ph = h ? h + base : nullptr;
PSD_UNROLL
    for (int u = 0; u < U; ++u) {
        ca[u] = Raw{};
        cb[u] = Raw{};
        na[u] = Raw{};
        nb[u] = Raw{};
        if (u < len) {
            ca[u] = Ops::load(pa);
            cb[u] = Ops::load(pb);
        }
        pa += stride;
        pb += stride;
    }
    for (long long j = 0; j < len; j += U) {
        if (j + U < len) {
PSD_UNROLL
            for (int u = 0; u < U; ++u) {
                if (j + U + u < len) {
                    na[u] = Ops::load(pa);
                    nb[u] = Ops::load(pb);
                }
                pa += stride;
                pb += stride;
            }
        }
PSD_UNROLL
        for (int u = 0; u < U; ++u) {
            if (j + u < len) {
                const typename Ops::Elem e = Ops::make(ca[u], cb[u]);
                if (REDUCE) {
                    acc = Ops::combine(acc, e);
                } else {
                    hh = Ops::apply(e, hh);
                    if (ph) *ph = Ops::narrow(hh);
                }
            }
            if (ph) ph += stride;
        }
PSD_UNROLL
        for (int u = 0; u < U; ++u) {
            ca[u] = na[u];
            cb[u] = nb[u];
        }
    }
}

// One thread per (lane, chunk) of the [B,T,D] layout; d varies fastest across threads,
// so a warp reads 32 consecutive channels of one time step (coalesced).
// REDUCE writes the chunk aggregate to agg; otherwise rescans from the carry-in.
template <class Ops, bool REDUCE, bool REV = false>
PSD_DEV void btd_chunk(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                       typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                       const typename Ops::State* __restrict__ carry, const typename Ops::In* __restrict__ h0,
                       typename Ops::Elem* __restrict__ agg, int B, int T, int D, int C) {
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long w = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (w >= static_cast<long long>(B) * nchunks * D) return;  // no barriers in this kernel
    const long long d = w % D;
    const long long r = w / D;
    const long long c = r % nchunks;
    const long long bb = r / nchunks;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);
    const long long base = (bb * T + step_time<REV>(t0, T)) * D + d;
    const long long lane = bb * D + d;
    typename Ops::State hh{};
    typename Ops::Elem acc = Ops::identity();
    if (!REDUCE) hh = carry ? carry[w] : Ops::initial(h0, lane);  // carry index == w
    serial_run<Ops, REDUCE>(a, b, h, base, REV ? -static_cast<long long>(D) : D, len, hh, acc);
    if (REDUCE) {
        agg[w] = acc;
    } else if (hT && c == nchunks - 1) {
        hT[lane] = Ops::narrow(hh);
    }
}

// One thread per lane of the [B,D,T] layout, looping over all of T (the baseline).
template <class Ops, bool REV = false>
PSD_DEV void bdt_sequential(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                            typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                            const typename Ops::In* __restrict__ h0, int B, int T, int D) {
    const long long lane = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (lane >= static_cast<long long>(B) * D) return;
    typename Ops::State hh = Ops::initial(h0, lane);
    typename Ops::Elem acc = Ops::identity();
    serial_run<Ops, false>(a, b, h, lane * T + step_time<REV>(0, T), REV ? -1 : 1, T, hh, acc);
    if (hT) hT[lane] = Ops::narrow(hh);
}

// ---------------------------------------------------------------------------------------
// One [B,D,T] tile of blockDim.x * K steps, shared by the chunk kernels and the look-back:
// bdt_tile_scan loads this thread's K steps from s (steps at or past t1 are the identity;
// 16-byte vectors when vec_in and the K steps are all real), folds them serially, scans the
// folds across the warp with shuffles (inclusive, Kogge-Stone: incl), lane 31 publishes the
// warp total to s_tot[wid], one barrier, then every thread folds the warp totals serially:
// W = its warp's exclusive prefix, run = the tile's total. bdt_tile_store then rescans the
// thread's steps from the state hin entering the tile and writes them to h (nullable) and,
// at step T - 1, to hT[lane].
// ---------------------------------------------------------------------------------------
template <class Ops, int K, bool REV = false>
PSD_DEV void bdt_tile_scan(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                           long long row, long long s, long long t1, bool vec_in, typename Ops::Elem (&e)[K],
                           typename Ops::Elem* s_tot, typename Ops::Elem& incl, typename Ops::Elem& W,
                           typename Ops::Elem& run, long long T) {
    using Elem = typename Ops::Elem;
    using Raw = typename Ops::Raw;
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const int nw = blockDim.x >> 5;
    if (vec_in && s + K <= t1) {
        // Steps s..s+K-1 are times [s, s+K) forward, [T-s-K, T-s) in reverse (aligned
        // alike: T, s and K are multiples of the vector width).
        const long long v0 = REV ? T - s - K : s;
        Raw ra[K], rb[K];
        load_vec<Ops, K>(a + row + v0, ra);
        load_vec<Ops, K>(b + row + v0, rb);
PSD_UNROLL
        for (int k = 0; k < K; ++k) e[k] = REV ? Ops::make(ra[K - 1 - k], rb[K - 1 - k]) : Ops::make(ra[k], rb[k]);
    } else {
PSD_UNROLL
        for (int k = 0; k < K; ++k) {
            const long long t = row + step_time<REV>(s + k, T);
            e[k] = s + k < t1 ? Ops::make(Ops::load(a + t), Ops::load(b + t)) : Ops::identity();
        }
    }
    Elem x = e[0];
PSD_UNROLL
    for (int k = 1; k < K; ++k) x = Ops::combine(x, e[k]);
    incl = x;
PSD_UNROLL
    for (unsigned off = 1; off < 32; off <<= 1) {
        const Elem y = Ops::shfl_up(incl, off);
        if (lid >= static_cast<int>(off)) incl = Ops::combine(y, incl);
    }
    if (lid == 31) s_tot[wid] = incl;
#if PS_DIAG_DROP_BARRIER == 2
    if (!REV) __syncthreads();  // a deliberately broken build: the reverse kernels race
#else
    __syncthreads();
#endif
    run = s_tot[0];
    W = Ops::identity();
    for (int w = 1; w < nw; ++w) {
        if (w == wid) W = run;
        run = Ops::combine(run, s_tot[w]);
    }
}

template <class Ops, int K, bool REV = false>
PSD_DEV void bdt_tile_store(const typename Ops::Elem (&e)[K], const typename Ops::Elem& incl,
                            const typename Ops::Elem& W, typename Ops::State hin, typename Ops::Out* __restrict__ h,
                            typename Ops::Out* __restrict__ hT, long long row, long long s, long long t1, int T,
                            bool vec_out, long long lane) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    Elem ex = Ops::shfl_up(incl, 1);
    if ((threadIdx.x & 31) == 0) ex = Ops::identity();
    State hh = Ops::apply(ex, Ops::apply(W, hin));
    State o[K];
PSD_UNROLL
    for (int k = 0; k < K; ++k) {
        hh = Ops::apply(e[k], hh);
        o[k] = hh;
    }
    if (h) {
        if (vec_out && s + K <= t1) {
            if (REV) {
                State r[K];
PSD_UNROLL
                for (int k = 0; k < K; ++k) r[k] = o[K - 1 - k];
                store_vec<Ops, K>(h + row + (T - s - K), r);
            } else {
                store_vec<Ops, K>(h + row + s, o);
            }
        } else {
PSD_UNROLL
            for (int k = 0; k < K; ++k)
                if (s + k < t1) h[row + step_time<REV>(s + k, T)] = Ops::narrow(o[k]);
        }
    }
    if (hT && t1 == T && s <= T - 1 && T - 1 < s + K) {
PSD_UNROLL
        for (int k = 0; k < K; ++k)
            if (s + k == T - 1) hT[lane] = Ops::narrow(o[k]);
    }
}

// ---------------------------------------------------------------------------------------
// [B,D,T] chunk: one block per (lane, chunk), walking the chunk in tiles of NT*K steps.
// Per tile: each thread loads K consecutive steps (16-byte vectors when aligned), folds
// them serially, the warp scans the 32 thread aggregates with shuffles (inclusive,
// Kogge-Stone), lane 31 publishes the warp total to shared memory, one barrier, then
// every thread folds the warp totals serially (its warp's exclusive prefix W and the
// tile total). Warp-total slots alternate between two banks so that one barrier per
// tile suffices (a bank is rewritten two tiles later, after an intervening barrier).
// REDUCE: chunk aggregate = identity (+) tile totals, written by thread 0.
// RESCAN: h at the thread's first step = apply(lane prefix, apply(W, h_tile_in)),
// then K serial steps; h_tile_in advances by the tile total.
// ---------------------------------------------------------------------------------------
template <class Ops, bool RESCAN, bool REV = false>
PSD_DEV void bdt_chunk(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                       typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                       const typename Ops::State* __restrict__ carry, const typename Ops::In* __restrict__ h0,
                       typename Ops::Elem* __restrict__ agg, int B, int T, int D, int C) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    using In = typename Ops::In;
    using Out = typename Ops::Out;
    constexpr int K = kStepsPerThread;
    constexpr int VI = Vec16<In>::N;
    constexpr int VO = Vec16<Out>::N;
    PS_SHARED(Elem, s_tot, 64);

    if (blockDim.x & 31u) __trap();  // contract: whole warps (shuffles use the full mask)
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long bid = blockIdx.x;
    const long long c = bid % nchunks;
    const long long lane = bid / nchunks;
    if (lane >= static_cast<long long>(B) * D) return;  // whole block: no barrier divergence
    const long long row = lane * T;
    const long long t0 = c * C;
    const long long t1 = min_ll(t0 + C, T);
    const int tid = threadIdx.x;
    const bool vec_in = Ops::kReads && T % VI == 0 && C % VI == 0 && aligned16(a) && aligned16(b);
    const bool vec_out = T % VO == 0 && C % VO == 0 && aligned16(h);
    const long long bb = lane / D;
    const long long d = lane % D;
    const long long cidx = (bb * nchunks + c) * D + d;

    State hin{};
    if (RESCAN) hin = carry ? carry[cidx] : Ops::initial(h0, lane);
    Elem acc = Ops::identity();
    int bank = 0;
    const long long tile = static_cast<long long>(blockDim.x) * K;
    for (long long ts = t0; ts < t1; ts += tile) {  // uniform across the block
        const long long s = ts + static_cast<long long>(tid) * K;
        Elem e[K], incl, W, run;
        bdt_tile_scan<Ops, K, REV>(a, b, row, s, t1, vec_in, e, s_tot + bank * 32, incl, W, run, T);
        if (!RESCAN) {
            acc = Ops::combine(acc, run);
        } else {
            bdt_tile_store<Ops, K, REV>(e, incl, W, hin, h, hT, row, s, t1, T, vec_out, lane);
            hin = Ops::apply(run, hin);
        }
        bank ^= 1;
    }
    if (!RESCAN && tid == 0) agg[cidx] = acc;
}

// ---------------------------------------------------------------------------------------
// Blelloch exclusive scan of s[0..n) in shared memory, n = 2*blockDim.x (a power of
// two): up-sweep (reduce) then down-sweep, combine(earlier, later) order throughout.
// Returns the total of all n elements in thread 0's `total`.
// ---------------------------------------------------------------------------------------
template <class Ops>
PSD_DEV void blelloch_exclusive(typename Ops::Elem* s, int n, typename Ops::Elem& total) {
    const int tid = threadIdx.x;
    int offset = 1;
    for (int d = n >> 1; d > 0; d >>= 1) {
        __syncthreads();
        if (tid < d) {
            const int ai = offset * (2 * tid + 1) - 1;
            const int bi = offset * (2 * tid + 2) - 1;
            s[bi] = Ops::combine(s[ai], s[bi]);
        }
        offset <<= 1;
    }
    __syncthreads();
    if (tid == 0) {
        total = s[n - 1];
        s[n - 1] = Ops::identity();
    }
    for (int d = 1; d < n; d <<= 1) {
        offset >>= 1;
#if PS_DIAG_DROP_BARRIER != 1
        __syncthreads();
#endif
        if (tid < d) {
            const int ai = offset * (2 * tid + 1) - 1;
            const int bi = offset * (2 * tid + 2) - 1;
            const typename Ops::Elem left = s[ai];
            s[ai] = s[bi];
            s[bi] = Ops::combine(s[bi], left);
        }
    }
    __syncthreads();
}

// Loads one tile of a lane's aggregates (identity past n) into s.
template <class Ops>
PSD_DEV void load_tile(const typename Ops::Elem* __restrict__ agg, typename Ops::Elem* s, long long bb, long long d,
                       int D, long long n, long long c0, int m) {
    for (int i = threadIdx.x; i < m; i += blockDim.x) {
        const long long c = c0 + i;
        s[i] = c < n ? agg[(bb * n + c) * D + d] : Ops::identity();
    }
}

template <class Ops>
PSD_DEV void scan_one_level(const typename Ops::Elem* __restrict__ agg, typename Ops::State* __restrict__ carry,
                            const typename Ops::In* __restrict__ h0, int B, int D, int n) {
    using Elem = typename Ops::Elem;
    PS_SHARED(Elem, s, kMaxScanTile);
    const int m = 2 * blockDim.x;
    if (n > m || m > kMaxScanTile) __trap();  // contract: 2*blockDim.x >= n, blockDim.x <= 1024
    const long long lane = blockIdx.x;
    if (lane >= static_cast<long long>(B) * D) return;  // whole block
    const long long bb = lane / D;
    const long long d = lane % D;
    load_tile<Ops>(agg, s, bb, d, D, n, 0, m);
    Elem total;
    blelloch_exclusive<Ops>(s, m, total);
    const typename Ops::State h = Ops::initial(h0, lane);
    for (int i = threadIdx.x; i < n; i += blockDim.x) carry[(bb * n + i) * D + d] = Ops::apply(s[i], h);
}

template <class Ops>
PSD_DEV void scan_tiles(typename Ops::Elem* __restrict__ agg, typename Ops::Elem* __restrict__ tile_agg, int B,
                        int D, int n) {
    using Elem = typename Ops::Elem;
    PS_SHARED(Elem, s, kMaxScanTile);
    const int m = 2 * blockDim.x;
    if (m > kMaxScanTile) __trap();
    const long long lane = blockIdx.x;
    if (lane >= static_cast<long long>(B) * D) return;  // whole block
    const long long ntiles = (static_cast<long long>(n) + m - 1) / m;
    const long long tile = blockIdx.y;
    const long long bb = lane / D;
    const long long d = lane % D;
    const long long c0 = tile * m;
    load_tile<Ops>(agg, s, bb, d, D, n, c0, m);
    Elem total;
    blelloch_exclusive<Ops>(s, m, total);
    for (int i = threadIdx.x; i < m; i += blockDim.x)
        if (c0 + i < n) agg[(bb * n + c0 + i) * D + d] = s[i];
    if (threadIdx.x == 0) tile_agg[(bb * ntiles + tile) * D + d] = total;
}

template <class Ops>
PSD_DEV void scan_apply(const typename Ops::Elem* __restrict__ agg, const typename Ops::State* __restrict__ tile_carry,
                        typename Ops::State* __restrict__ carry, int B, int D, int n, int TL) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(B) * n * D) return;
    const long long ntiles = (static_cast<long long>(n) + TL - 1) / TL;
    const long long d = i % D;
    const long long r = i / D;
    const long long c = r % n;
    const long long bb = r / n;
    carry[i] = Ops::apply(agg[i], tile_carry[(bb * ntiles + c / TL) * D + d]);
}

// ---------------------------------------------------------------------------------------
// Single pass with decoupled look-back (plan P4): every element is read once.
//
// A "chain" is a run of chunks whose carries feed each other: one lane ([B,D,T]) or one
// group of 32 consecutive channels of a batch row ([B,T,D]). Block `id` (a ticket taken
// with atomicAdd, so that every smaller ticket belongs to a block that is already running)
// owns chunk c = id / chains of chain id % chains. It loads its chunk into registers,
// reduces it, publishes the aggregate, looks back over its predecessors' status words for
// its carry-in, publishes its inclusive prefix (a State: h0 is folded in from chunk 0 on)
// and rescans from registers. Status word of (chain, c) at index c*chains + chain;
// the ticket counter follows the last status word; both start at zero (diag_lb_clear).
//
// Publishing: payload stores (st.cg) by the lanes of one warp, __syncwarp(), then one
// status store with release semantics by lane 0 (st.release.gpu). Reading: status loads
// with acquire semantics (ld.acquire.gpu) until non-empty, then payload loads (ld.cg) by
// the acquiring thread or by threads that a barrier orders after it. No __threadfence:
// see "Memory ordering" below. Waiting is only ever for a smaller ticket, which always
// progresses (on the GPU it is resident; in the emulator it runs on another worker or
// has finished).
//
// Memory ordering (PTX memory model, sm_70+). The payload a successor reads must be the
// one its publisher wrote, not a stale value, and without a full fence (fence.sc.gpu,
// i.e. __threadfence(), on both sides: two per publication and one per wait before).
//   * Publisher. Lane j of the publishing warp stores its payload part (a weak st.cg)
//     and then reaches __syncwarp() (bar.warp.sync orders memory among the participating
//     lanes), after which lane 0 performs the status store as st.release.gpu. A release
//     is cumulative: every memory operation that precedes it in causality order (lane
//     0's own program order, and the other lanes' stores ordered before it by the warp
//     barrier) is visible to any thread whose acquire observes the released value.
//   * Reader. A thread polls the status word with ld.acquire.gpu. Once it observes a
//     non-empty value written by the release above, the release synchronizes with that
//     acquire (both are morally strong: same word, .gpu scope covers both blocks), so
//     the publisher's payload stores happen before everything after the acquire in the
//     reader's program order, and before everything another thread of the reader's
//     block does after a barrier that follows the acquire (__syncwarp in lb_window,
//     __syncthreads in the block-wide window loads): causality order is transitive.
//   * Payload loads stay ld.cg (L2): the acquire already forbids a stale L1 hit, but a
//     neighbouring slot's line may have been cached by this SM before the slot was
//     written, and .cg costs nothing here (every payload is read once).
//   * A status word only ever goes empty -> aggregate -> prefix, and a reader acts only
//     on the value it acquired; the payload of that value was stored before its release
//     (the aggregate before status 1, the prefix before status 2), so either value
//     finds its payload complete.
// The emulator models this with its weak-memory mode (kernels/emu/README.md): a __stcg
// store is held in the storing thread's buffer until that thread fences, so the
// emulator's release (every lane of the publishing warp releases its own held stores
// before the __syncwarp: the model of the release's cumulativity over the warp) is what
// makes a payload visible to other blocks. -DPS_LB_DROP_RELEASE=1 makes the status store
// relaxed (st.relaxed.gpu; in the emulator, no lane releases): a planted bug whose
// successors read unpublished payloads, which the emulated suites must catch.
// ---------------------------------------------------------------------------------------

#ifndef PS_LB_DROP_RELEASE
#define PS_LB_DROP_RELEASE 0
#endif

// Planted look-back bugs for the emulated suites, so that what the tests catch can be
// re-checked whenever the look-back changes. An emulator build with -DPS_LB_PLANTS=1
// (CXXFLAGS; never a GPU build) reads the environment variable PS_LB_PLANT once per
// process and plants that bug in every look-back (Diagonal [B,D,T] and [B,T,D], the
// varlen and Newton passes built on them, PermDiagonal):
//   1 the window fold combines in the wrong order (a later aggregate before an earlier),
//   2 the carry-in ignores the folded aggregates (the nearest inclusive prefix alone),
//   3 the __syncthreads between the carry-in's shared-memory write and its readers is
//     dropped,
//   4 the status store releases nothing (the emulator's model of -DPS_LB_DROP_RELEASE=1).
// Unset or 0: no bug, the production code. Without -DPS_LB_PLANTS, lb_plant is constant
// false and the code is that of a build without plants.
#if PS_LB_PLANTS && defined(PS_EMULATION) && !defined(__CUDA_ARCH__)
inline int lb_plant_selected() {
    static const int selected = [] {
        const char* v = getenv("PS_LB_PLANT");
        return v ? atoi(v) : 0;
    }();
    return selected;
}
inline bool lb_plant(int which) { return lb_plant_selected() == which; }
#else
PSD_DEV constexpr bool lb_plant(int) { return false; }
#endif

constexpr unsigned kLbEmpty = 0u;
constexpr unsigned kLbAggregate = 1u;
constexpr unsigned kLbPrefix = 2u;
// Steps per thread of the look-back kernels (a multiple of every vector width).
constexpr int kLbSteps = 16;

// Spin cap: polls of one status word before the block gives up with __trap(), so that a
// protocol or planner bug fails the launch (a typed launch error) instead of hanging the
// GPU. 0 = unbounded (the default under nvcc; the device bundle compiles with
// -DPS_LB_SPIN_CAP=4194304, i.e. seconds of polling). The emulator's poll is one fiber
// switch (tens of ns), and a predecessor on another worker thread may be descheduled by a
// loaded host for a while: 2^24 polls there is still at least ~1 s.
#ifndef PS_LB_SPIN_CAP
#ifdef PS_EMULATION
#define PS_LB_SPIN_CAP (1u << 24)
#else
#define PS_LB_SPIN_CAP 0u
#endif
#endif

// Look-back protocol settings. LbProbe (emulator tests only) never publishes chunk 1 of
// chain 0 and traps after few polls: its successors must end in a launch error, not a hang.
struct LbProduction {
    static constexpr unsigned kSpinCap = PS_LB_SPIN_CAP;
    static constexpr long long kWithheld = -1;
};
struct LbProbe {
    static constexpr unsigned kSpinCap = 1u << 12;
    static constexpr long long kWithheld = 1;
};
template <class Lb>
PSD_DEV bool lb_withheld(long long chain, long long c) {
    return Lb::kWithheld >= 0 && chain == 0 && c == Lb::kWithheld;
}

// A status load with acquire semantics (see "Memory ordering" above).
PSD_DEV unsigned lb_peek(const unsigned* p) {
#if defined(__CUDA_ARCH__)
    unsigned s;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(s) : "l"(p) : "memory");
    return s;
#elif defined(PS_EMULATION)
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
    return *reinterpret_cast<const volatile unsigned*>(p);
#endif
}

// The status store: release semantics (relaxed in the -DPS_LB_DROP_RELEASE=1 plant).
PSD_DEV void lb_store(unsigned* p, unsigned s) {
#if defined(__CUDA_ARCH__)
#if PS_LB_DROP_RELEASE
    asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(s) : "memory");
#else
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(s) : "memory");
#endif
#elif defined(PS_EMULATION)
    __atomic_store_n(p, s, __ATOMIC_RELEASE);
#else
    *reinterpret_cast<volatile unsigned*>(p) = s;
#endif
}

// Spins until the status word is non-empty (with `want` != kLbEmpty: until it equals `want`).
// Every poll is an acquire, so the payload loads that follow (in this thread, or in threads
// a barrier orders after it) see what the publisher wrote before its release.
// __nanosleep also lets the emulator run the block's other fibers.
template <class Lb>
PSD_DEV unsigned lb_wait(const unsigned* p, unsigned want) {
    unsigned s = lb_peek(p);
    unsigned polls = 0;
    while (want == kLbEmpty ? s == kLbEmpty : s != want) {
        if (Lb::kSpinCap != 0u && ++polls >= Lb::kSpinCap) __trap();
        __nanosleep(32);
        s = lb_peek(p);
    }
    return s;
}

// Called by every lane of one warp after each lane stored its part of the payload: the warp
// barrier orders every lane's payload stores before lane 0's release of the status word.
PSD_DEV void lb_publish(unsigned* p, unsigned s) {
#if defined(PS_EMULATION) && !defined(__CUDA_ARCH__) && !PS_LB_DROP_RELEASE
    // Emulator: each lane releases its own held-back __stcg stores (weak-memory mode), the
    // model of lane 0's release being cumulative over the stores the barrier orders first.
    if (!lb_plant(4)) __threadfence();
#endif
    __syncwarp();
    if ((threadIdx.x & 31) == 0) lb_store(p, s);
}

// The block's ticket, taken by thread 0 and shared (contains a __syncthreads).
PSD_DEV long long lb_ticket(unsigned* counter) {
    PS_SHARED_VAR(unsigned, s_ticket);
    if (threadIdx.x == 0) s_ticket = atomicAdd(counter, 1u);
    __syncthreads();
    return static_cast<long long>(s_ticket);
}

// One round trip of the 32-chunk look-back window, by a whole warp: lane l polls chunk
// cj - l of `chain` until it is published, and every lane gets the lane of the nearest
// chunk with an inclusive prefix (32: none in the window; chunk 0 always publishes one, so
// lanes past it, cj - l < 0, never matter). The __syncwarp orders lane l's acquire (in
// lb_wait) before any lane's payload loads of chunk cj - l.
template <class Lb, typename I>
PSD_DEV int lb_window(const unsigned* status, I cj, I chain, I chains) {
    const I cc = cj - static_cast<I>(threadIdx.x & 31);
    const unsigned st = cc >= 0 ? lb_wait<Lb>(status + cc * chains + chain, kLbEmpty) : kLbPrefix;
    const unsigned pmask = __ballot_sync(PS_FULL_MASK, st == kLbPrefix);
    __syncwarp();
    return pmask ? __ffs(static_cast<int>(pmask)) - 1 : 32;
}

// Look-back of a one-lane chain ([B,D,T]) by one whole warp: publishes `total` (the
// chunk's aggregate, in every lane) and returns the carry-in. Lane l inspects chunk
// cj - l, so one round trip covers 32 predecessors (CUB's window); the aggregates in
// front of the nearest inclusive prefix are reduced with shuffles (earlier = higher lane).
template <class Ops, class Lb>
PSD_DEV typename Ops::State lookback_lane(unsigned* status, typename Ops::Elem* lagg, typename Ops::State* lpre,
                                          long long chain, long long chains, long long c,
                                          const typename Ops::Elem& total, typename Ops::State h_init,
                                          int prefix_every) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    const int lid = threadIdx.x & 31;
    const long long me = c * chains + chain;
    const bool publish = !lb_withheld<Lb>(chain, c);
    State hin = h_init;
    if (c > 0) {
        if (publish) {
            if (lid == 0) Ops::store_agg(lagg + me, total);
            lb_publish(status + me, kLbAggregate);
        }
        if constexpr (Ops::kChainOnly) {
            State p{};
            if (lid == 0) {
                lb_wait<Lb>(status + me - chains, kLbPrefix);
                p = Ops::load_state(lpre + me - chains);
            }
            hin = Ops::shfl_state(p, 0);
        } else {
            Elem acc = Ops::identity();
            bool have_acc = false;
            for (long long cj = c - 1;; cj -= 32) {
                const long long cc = cj - lid;
                const int lp = lb_window<Lb>(status, cj, chain, chains);
                Elem v = Ops::identity();
                State pv{};
                if (lid < lp) v = Ops::load_agg(lagg + cc * chains + chain);
                if (lid == lp) pv = Ops::load_state(lpre + cc * chains + chain);
                if (lp > 0) {
PSD_UNROLL
                    for (unsigned off = 1; off < 32; off <<= 1) {
                        const Elem o = Ops::shfl_down(v, off);
                        if (lid + static_cast<int>(off) < 32)
                            v = lb_plant(1) ? Ops::combine(v, o) : Ops::combine(o, v);  // plant: order swapped
                    }
                    const Elem win = Ops::shfl_idx(v, 0);
                    acc = have_acc ? Ops::combine(win, acc) : win;
                    have_acc = true;
                }
                if (lp < 32) {
                    const State p = Ops::shfl_state(pv, lp);
                    hin = have_acc && !lb_plant(2) ? Ops::apply(acc, p) : p;
                    break;
                }
            }
        }
    }
    if (publish && (Ops::kChainOnly || c % prefix_every == 0)) {
        if (lid == 0) Ops::store_state(lpre + me, Ops::apply(total, hin));
        lb_publish(status + me, kLbPrefix);
    }
    return hin;
}

// Most warps of a [B,T,D] look-back block (its kernels run 256 threads at most).
constexpr int kLbMaxWarps = 8;

// Look-back of a 32-channel chain ([B,T,D]) by the whole block, lane = channel, one
// status word per chunk for all 32 channels. Warp 0 polls the same 32-chunk window as
// lookback_lane (lb_window); the window's lp aggregates in front of the nearest prefix
// (slot q = chunk cj - q) are then loaded by all nw warps at once (warp w: slots w, w + nw,
// ...: ceil(lp / nw) <= 4 round trips for 8 warps instead of lp serial ones; one slot per
// warp at a time keeps the block within 64 registers) into shared memory, where warp 0
// folds them in order and applies them to the prefix. Every thread of the block calls it
// (block-uniform control flow, two __syncthreads per window); the carry-in is valid in
// warp 0.
// Chunk, chain and status indices are 32-bit: a status index c*chains + chain is below
// chains*NC + 1 <= 2^31 - 1, which the planner checks before any launch (the grid is one
// block per status word, and a launch's grid is below 2^31 anyway); only the payload
// offsets (status index * 32 + lane) are formed in 64 bits, where they are used. Fewer
// 64-bit values live across the look-back is what keeps the f32 kernels within 64
// registers without spills.
template <class Ops, class Lb>
PSD_DEV typename Ops::State lookback_group(unsigned* status, typename Ops::Elem* lagg, typename Ops::State* lpre,
                                           int chain, int chains, int c, const typename Ops::Elem* parts,
                                           typename Ops::State h_init, int prefix_every) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    const int lid = threadIdx.x & 31;
    const int wid = threadIdx.x >> 5;
    // The chunk's aggregate: the in-order fold of the warps' parts (shared memory, stable
    // for the whole call), formed where it is published rather than held in registers
    // across the look-back.
    const auto total = [&]() {
        Elem run = parts[lid];
        for (int w = 1; w < (static_cast<int>(blockDim.x) >> 5); ++w) run = Ops::combine(run, parts[w * 32 + lid]);
        return run;
    };
    const int me = c * chains + chain;
    const bool publish = !lb_withheld<Lb>(chain, c);
    State hin = h_init;
    if (c > 0) {
        hin = State{};  // h_init is chunk 0's only: not live across the look-back
        if (wid == 0 && publish) {
            Ops::store_agg(lagg + (static_cast<long long>(me) * 32 + lid), total());
            lb_publish(status + me, kLbAggregate);
        }
        if constexpr (Ops::kChainOnly) {
            if (wid == 0) {
                lb_wait<Lb>(status + (me - chains), kLbPrefix);
                hin = Ops::load_state(lpre + (static_cast<long long>(me - chains) * 32 + lid));
            }
        } else {
            PS_SHARED(Elem, s_win, 32 * 32);
            PS_SHARED_VAR(int, s_lp);
            const int nw = blockDim.x >> 5;
            Elem acc = Ops::identity();
            bool have_acc = false;
            for (int cj = c - 1;; cj -= 32) {
                if (wid == 0) {
                    const int lp = lb_window<Lb>(status, cj, chain, chains);
                    if (lid == 0) s_lp = lp;
                }
                // Also orders warp 0's acquires (lb_wait's polls) before every warp's loads.
                __syncthreads();
                const int lp = s_lp;
                // Slot q is chunk cj - q >= 1 (chunk 0 always publishes a prefix, so lp <= cj).
                for (int q = wid; q < lp; q += nw)
                    s_win[q * 32 + lid] = Ops::load_agg(lagg + (static_cast<long long>((cj - q) * chains + chain) * 32 + lid));
                State pv{};
                if (wid == 0 && lp < 32)
                    pv = Ops::load_state(lpre + (static_cast<long long>((cj - lp) * chains + chain) * 32 + lid));
                __syncthreads();
                if (wid == 0) {
                    for (int q = 0; q < lp; ++q) {  // slot q precedes slot q - 1 in time
                        const Elem e = s_win[q * 32 + lid];
                        acc = have_acc ? (lb_plant(1) ? Ops::combine(acc, e) : Ops::combine(e, acc)) : e;
                        have_acc = true;
                    }
                    if (lp < 32) hin = have_acc && !lb_plant(2) ? Ops::apply(acc, pv) : pv;
                }
                if (lp < 32) break;
            }
        }
    }
    if (wid == 0 && publish && (Ops::kChainOnly || c % prefix_every == 0)) {
        Ops::store_state(lpre + (static_cast<long long>(me) * 32 + lid), Ops::apply(total(), hin));
        lb_publish(status + me, kLbPrefix);
    }
    return hin;
}

// The lane bb*D + d of a [B,T,D] flat index (bb*T + t)*D + d with 0 <= t < T: recomputed
// where hT is written (one thread per chain) instead of keeping bb and d in registers
// across the look-back.
PSD_DEV long long lb_btd_lane(long long i, int T, int D) {
    const long long q = i / D;  // bb*T + t
    return q / T * D + (i - q * D);
}

// The exclusive prefix of this warp's part among the block's (parts[w*32 + lane], w < warp):
// folded from shared memory after the look-back rather than kept in registers across it
// (same combines in the same order, so the same values and depth as folding before it).
template <class Ops>
PSD_DEV typename Ops::Elem lb_warp_prefix(const typename Ops::Elem* parts) {
    const int lid = threadIdx.x & 31;
    const int wid = threadIdx.x >> 5;
    typename Ops::Elem W = Ops::identity();
    if (wid > 0) {
        W = parts[lid];
        for (int w = 1; w < wid; ++w) W = Ops::combine(W, parts[w * 32 + lid]);
    }
    return W;
}

// ---------------------------------------------------------------------------------------
// 16-bit look-back (f16/bf16 storage, f32 compute): kLbSteps16 = 32 steps per thread, twice
// the f32 kernels' 16, so a block moves the same bytes per chunk as an f32 block (a
// look-back's latency is paid once per 2x the elements) while holding as many registers:
// the raw inputs stay packed, two 16-bit values per 32-bit word, and each step is widened
// to its f32 element where it is used (the fold, then the rescan). Same protocol, chunk
// geometry (C = blockDim.x * 32 on [B,D,T], blockDim.x / 32 * 32 on [B,T,D]) and outputs.
// ---------------------------------------------------------------------------------------
constexpr int kLbSteps16 = 32;

// Whether Ops takes the packed 16-bit look-back.
template <class Ops>
constexpr bool kLbPacked = Ops::kReads && sizeof(typename Ops::In) == 2;

#if defined(PS_HAS_HALF)
// Packed 16-bit values: value `hi` (0: low half, 1: high half) of word w.
template <typename S>
PSD_DEV S half_of(unsigned w, int hi) {
    S x;
    Vec16<S>::from_bits(static_cast<unsigned short>(hi ? w >> 16 : w & 0xffffu), x);
    return x;
}
template <typename S>
PSD_DEV unsigned half_bits(S x) {
    return static_cast<unsigned>(Vec16<S>::bits(x));
}
PSD_DEV void put_half(unsigned& w, int hi, unsigned bits) {
    w = hi ? (w & 0xffffu) | (bits << 16) : (w & 0xffff0000u) | bits;
}

// Warp scan and block combine of one thread's fold x (bdt_tile_scan's second half): incl,
// W (the warp's exclusive prefix) and run (the tile total), one barrier.
template <class Ops, bool REV>
PSD_DEV void bdt_tile_combine(typename Ops::Elem x, typename Ops::Elem* s_tot, typename Ops::Elem& incl,
                              typename Ops::Elem& W, typename Ops::Elem& run) {
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const int nw = blockDim.x >> 5;
    incl = x;
PSD_UNROLL
    for (unsigned off = 1; off < 32; off <<= 1) {
        const typename Ops::Elem y = Ops::shfl_up(incl, off);
        if (lid >= static_cast<int>(off)) incl = Ops::combine(y, incl);
    }
    if (lid == 31) s_tot[wid] = incl;
#if PS_DIAG_DROP_BARRIER == 2
    if (!REV) __syncthreads();  // a deliberately broken build: the reverse kernels race
#else
    __syncthreads();
#endif
    run = s_tot[0];
    W = Ops::identity();
    for (int w = 1; w < nw; ++w) {
        if (w == wid) W = run;
        run = Ops::combine(run, s_tot[w]);
    }
}

// [B,D,T], 16-bit: thread u of the block holds steps [u*32, u*32 + 32) of the chunk as 16
// words of a and 16 of b (memory position p = time - v0 in word p/2, half p%2; step k sits
// at position k forward, 31 - k in reverse), loaded as 4 + 4 16-byte vectors when aligned.
template <class Ops, class Lb, bool REV>
PSD_DEV void bdt_lookback_packed(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                                 typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                                 const typename Ops::In* __restrict__ h0, unsigned* __restrict__ status,
                                 typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre,
                                 int B, int T, int D, int C, int prefix_every) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    using S = typename Ops::In;
    constexpr int K = kLbSteps16;
    constexpr int KW = K / 2;
    constexpr int V = Vec16<S>::N;  // 8 values per 16-byte vector
    PS_SHARED(Elem, s_tot, 32);
    PS_SHARED_VAR(State, s_hin);
    if ((blockDim.x & 31u) != 0 || static_cast<long long>(blockDim.x) * K != C || prefix_every < 1) __trap();
    const long long lanes = static_cast<long long>(B) * D;
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long id = lb_ticket(status + lanes * nchunks);
    if (id >= lanes * nchunks) return;  // surplus tickets (uniform per block)
    const long long c = id / lanes;
    const long long lane = id % lanes;
    const long long row = lane * T;
    const long long t1 = min_ll(c * C + C, T);
    const long long s = c * C + static_cast<long long>(threadIdx.x) * K;
    const bool full = s + K <= t1;
    const bool vec_in = full && T % V == 0 && aligned16(a) && aligned16(b);
    const bool vec_out = full && h && T % V == 0 && aligned16(h);
    unsigned wa[KW], wb[KW];
    if (vec_in) {
        const long long v0 = REV ? T - s - K : s;
        const uint4* __restrict__ qa = reinterpret_cast<const uint4*>(a + row + v0);
        const uint4* __restrict__ qb = reinterpret_cast<const uint4*>(b + row + v0);
PSD_UNROLL
        for (int v = 0; v < K / V; ++v) {
            const uint4 ua = __ldg(qa + v);
            const uint4 ub = __ldg(qb + v);
            wa[4 * v] = ua.x;
            wa[4 * v + 1] = ua.y;
            wa[4 * v + 2] = ua.z;
            wa[4 * v + 3] = ua.w;
            wb[4 * v] = ub.x;
            wb[4 * v + 1] = ub.y;
            wb[4 * v + 2] = ub.z;
            wb[4 * v + 3] = ub.w;
        }
    } else {
        const unsigned one = half_bits<S>(Ops::narrow(State(1)));
        const unsigned zero = half_bits<S>(Ops::narrow(State(0)));
PSD_UNROLL
        for (int p = 0; p < K; ++p) {
            const int k = REV ? K - 1 - p : p;
            unsigned xa = one, xb = zero;  // steps past the chunk: the identity
            if (s + k < t1) {
                const long long t = row + step_time<REV>(s + k, T);
                xa = half_bits<S>(a[t]);
                xb = half_bits<S>(b[t]);
            }
            if ((p & 1) == 0) {
                wa[p >> 1] = xa;
                wb[p >> 1] = xb;
            } else {
                put_half(wa[p >> 1], 1, xa);
                put_half(wb[p >> 1], 1, xb);
            }
        }
    }
#define PSD_PK_ELEM(k)                                                                                   \
    Ops::make(half_of<S>(wa[(REV ? K - 1 - (k) : (k)) >> 1], (REV ? K - 1 - (k) : (k)) & 1),             \
              half_of<S>(wb[(REV ? K - 1 - (k) : (k)) >> 1], (REV ? K - 1 - (k) : (k)) & 1))
    Elem x = PSD_PK_ELEM(0);
PSD_UNROLL
    for (int k = 1; k < K; ++k) x = Ops::combine(x, PSD_PK_ELEM(k));
    Elem incl, W, run;
    bdt_tile_combine<Ops, REV>(x, s_tot, incl, W, run);
    if ((threadIdx.x >> 5) == 0) {
        const State hin = lookback_lane<Ops, Lb>(status, lagg, lpre, lane, lanes, c, run, Ops::initial(h0, lane),
                                                 prefix_every);
        if (threadIdx.x == 0) s_hin = hin;
    }
    if (!lb_plant(3)) __syncthreads();
    Elem ex = Ops::shfl_up(incl, 1);
    if ((threadIdx.x & 31) == 0) ex = Ops::identity();
    State hh = Ops::apply(ex, Ops::apply(W, s_hin));
    if (vec_out) {
        // 8 steps per 16-byte vector, written as soon as it is complete.
        uint4* __restrict__ q = reinterpret_cast<uint4*>(h + row + (REV ? T - s - K : s));
PSD_UNROLL
        for (int g = 0; g < K / V; ++g) {
            S o[V];
PSD_UNROLL
            for (int j = 0; j < V; ++j) {
                hh = Ops::apply(PSD_PK_ELEM(g * V + j), hh);
                o[REV ? V - 1 - j : j] = Ops::narrow(hh);
                if (hT && s + g * V + j == T - 1) hT[lane] = Ops::narrow(hh);
            }
            __stwb(q + (REV ? K / V - 1 - g : g), Vec16<S>::pack(o));
        }
    } else {
PSD_UNROLL
        for (int k = 0; k < K; ++k) {
            hh = Ops::apply(PSD_PK_ELEM(k), hh);
            if (s + k < t1) {
                if (h) h[row + step_time<REV>(s + k, T)] = Ops::narrow(hh);
                if (hT && s + k == T - 1) hT[lane] = Ops::narrow(hh);
            }
        }
    }
#undef PSD_PK_ELEM
}

// Where a packed [B,T,D] look-back step may be replaced: LbNoResets for the Diagonal
// kernels; varlen.cu's packed batches reset a sequence at its first step (the element
// (0, a*h0_s + b)). seg(t) != 0 marks such a step, and reset(bb, t, d, s, e) makes it
// from the widened element e of the inputs.
struct LbNoResets {
    static constexpr bool kAny = false;
    PSD_DEV unsigned seg(long long) const { return 0u; }
    template <class Elem>
    PSD_DEV Elem reset(long long, long long, long long, unsigned, const Elem& e) const {
        return e;
    }
};

// [B,T,D], 16-bit: warp w holds steps [w*32, w*32 + 32) of the chunk for its 32 channels,
// step k as one word (a in the low half, b in the high half); a thread's steps that a
// step source resets (Resets) are one bit each of a mask, their element made where it is
// used (widened, then reset) like every other step's.
template <class Ops, class Lb, bool REV, class Resets = LbNoResets>
PSD_DEV void btd_lookback_packed(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                                 typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                                 const typename Ops::In* __restrict__ h0, unsigned* __restrict__ status,
                                 typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre,
                                 int B, int T, int D, int C, int prefix_every, Resets resets = Resets()) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    using S = typename Ops::In;
    constexpr int K = kLbSteps16;
    PS_SHARED(Elem, s_w, kLbMaxWarps * 32);
    PS_SHARED(State, s_hin, 32);
    PS_SHARED(long long, s_base, kLbMaxWarps * 32);
    PS_SHARED(unsigned, s_resets, Resets::kAny ? kLbMaxWarps * 32 : 1);
    if ((blockDim.x & 31u) != 0 || blockDim.x > 32u * kLbMaxWarps || static_cast<long long>(blockDim.x / 32) * K != C ||
        prefix_every < 1)
        __trap();
    // Indices as in btd_lookback_steps (32-bit chunk and chain, 64-bit element offsets).
    const int groups = static_cast<int>((static_cast<long long>(D) + 31) / 32);
    const long long nblocks = static_cast<long long>(B) * groups * ((static_cast<long long>(T) + C - 1) / C);
    const long long id = lb_ticket(status + nblocks);
    if (id >= nblocks) return;  // surplus tickets (uniform per block)
    const int chains = B * groups;
    const int c = static_cast<int>(id) / chains;
    const int chain = static_cast<int>(id) - c * chains;
    const int bb = chain / groups;
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const int g0 = (chain - bb * groups) * 32;
    const bool active = lid < D - g0;
    const int d = g0 + (active ? lid : 0);
    const long long ts = static_cast<long long>(c) * C + wid * K;
    const int rem = active ? static_cast<int>(T - ts) : 0;  // step k exists iff k < rem
    const long long base = (static_cast<long long>(bb) * T + step_time<REV>(ts, T)) * D + d;
    const unsigned ident = half_bits<S>(Ops::narrow(State(1))) | (half_bits<S>(Ops::narrow(State(0))) << 16);
    unsigned w[K];
    unsigned rs = 0u;  // bit k: step k is reset
PSD_UNROLL
    for (int k = 0; k < K; ++k) {
        w[k] = ident;
        if (k < rem) {
            const long long i = REV ? base - static_cast<long long>(k) * D : base + static_cast<long long>(k) * D;
            w[k] = half_bits<S>(a[i]) | (half_bits<S>(b[i]) << 16);
            if (resets.seg(step_time<REV>(ts + k, T)) != 0u) rs |= 1u << k;
        }
    }
    // Step k's element; a reset one is rare, and rebuilt from the flat index (bi = base
    // as stored in s_base) rather than keeping batch row, time and channel in registers.
    const auto elem = [&](int k, unsigned rk, long long bi) -> Elem {
        const Elem e = Ops::make(half_of<S>(w[k], 0), half_of<S>(w[k], 1));
        if (((rk >> k) & 1u) == 0u) return e;
        const long long q = bi / D;  // bb*T + time of step 0
        const long long bq = q / T;
        const long long tk = q - bq * T + (REV ? -k : k);
        return resets.reset(bq, tk, bi - q * D, resets.seg(tk), e);
    };
    Elem x = elem(0, rs, base);
PSD_UNROLL
    for (int k = 1; k < K; ++k) x = Ops::combine(x, elem(k, rs, base));
    s_w[wid * 32 + lid] = x;
    __syncthreads();
    const State init = wid == 0 && active ? Ops::initial(h0, static_cast<long long>(bb) * D + d) : State{};
    s_base[threadIdx.x] = base;
    if (Resets::kAny) s_resets[threadIdx.x] = rs;
    const State hin = lookback_group<Ops, Lb>(status, lagg, lpre, chain, chains, c, s_w, init, prefix_every);
    if (wid == 0) s_hin[lid] = hin;
    if (!lb_plant(3)) __syncthreads();
    const long long base2 = s_base[threadIdx.x];
    const unsigned rs2 = Resets::kAny ? s_resets[threadIdx.x] : 0u;
    State hh = Ops::apply(lb_warp_prefix<Ops>(s_w), s_hin[lid]);
PSD_UNROLL
    for (int k = 0; k < K; ++k) {
        if (k < rem) {
            hh = Ops::apply(elem(k, rs2, base2), hh);
            if (h) h[REV ? base2 - static_cast<long long>(k) * D : base2 + static_cast<long long>(k) * D] = Ops::narrow(hh);
            if (hT && k == rem - 1) hT[lb_btd_lane(base2, T, D)] = Ops::narrow(hh);
        }
    }
}
#endif  // PS_HAS_HALF

// [B,D,T] single pass: one block per (lane, chunk of C = blockDim.x * K steps); K = 32 only
// for the depth kernels that mirror the 16-bit geometry (the 16-bit data kernels dispatch to
// bdt_lookback_packed).
template <class Ops, class Lb = LbProduction, bool REV = false, int K = kLbSteps>
PSD_DEV void bdt_lookback(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                          typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                          const typename Ops::In* __restrict__ h0, unsigned* __restrict__ status,
                          typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre, int B,
                          int T, int D, int C, int prefix_every) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
#if defined(PS_HAS_HALF)
    if constexpr (kLbPacked<Ops>) {  // f16/bf16: 32 steps per thread, packed
        bdt_lookback_packed<Ops, Lb, REV>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);
        return;
    }
#endif
    constexpr int VI = Vec16<typename Ops::In>::N;
    constexpr int VO = Vec16<typename Ops::Out>::N;
    PS_SHARED(Elem, s_tot, 32);
    PS_SHARED_VAR(State, s_hin);
    if ((blockDim.x & 31u) != 0 || static_cast<long long>(blockDim.x) * K != C || prefix_every < 1) __trap();
    const long long lanes = static_cast<long long>(B) * D;
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long id = lb_ticket(status + lanes * nchunks);
    // A grid larger than the contract's: the surplus tickets own no chunk (uniform per block).
    if (id >= lanes * nchunks) return;
    const long long c = id / lanes;
    const long long lane = id % lanes;
    const long long row = lane * T;
    const long long t1 = min_ll(c * C + C, T);
    const long long s = c * C + static_cast<long long>(threadIdx.x) * K;
    const bool vec_in = Ops::kReads && T % VI == 0 && aligned16(a) && aligned16(b);
    const bool vec_out = T % VO == 0 && aligned16(h);
    Elem e[K], incl, W, run;
    bdt_tile_scan<Ops, K, REV>(a, b, row, s, t1, vec_in, e, s_tot, incl, W, run, T);
    if ((threadIdx.x >> 5) == 0) {
        const State hin = lookback_lane<Ops, Lb>(status, lagg, lpre, lane, lanes, c, run, Ops::initial(h0, lane),
                                             prefix_every);
        if (threadIdx.x == 0) s_hin = hin;
    }
    if (!lb_plant(3)) __syncthreads();
    bdt_tile_store<Ops, K, REV>(e, incl, W, s_hin, h, hT, row, s, t1, T, vec_out, lane);
}

// Where the [B,T,D] look-back's steps come from: step(bb, t, d, i) is the element of step
// (bb, t, d), i = (bb*T + t)*D + d its flat index, called once per real step.
// DiagSteps reads the Diagonal inputs; newton.cu's sources evaluate a cell instead.
template <class Ops>
struct DiagSteps {
    const typename Ops::In* __restrict__ a;
    const typename Ops::In* __restrict__ b;
    PSD_DEV typename Ops::Elem step(long long, long long, long long, long long i) {
        return Ops::make(Ops::load(a + i), Ops::load(b + i));
    }
};

// [B,T,D] single pass: one block per (batch row, 32-channel group, chunk of
// C = (blockDim.x / 32) * kLbSteps steps); warp w holds steps [w*K, (w+1)*K) of the chunk
// for the group's 32 channels (lane = channel: every load is one coalesced row segment).
template <class Ops, class Steps, class Lb = LbProduction, bool REV = false, int K = kLbSteps>
PSD_DEV void btd_lookback_steps(Steps& src, typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                                const typename Ops::In* __restrict__ h0, unsigned* __restrict__ status,
                                typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre,
                                int B, int T, int D, int C, int prefix_every) {
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    PS_SHARED(Elem, s_w, kLbMaxWarps * 32);
    PS_SHARED(State, s_hin, 32);
    PS_SHARED(long long, s_base, kLbMaxWarps * 32);
    PS_SHARED(int, s_rem, kLbMaxWarps * 32);
    if ((blockDim.x & 31u) != 0 || blockDim.x > 32u * kLbMaxWarps || static_cast<long long>(blockDim.x / 32) * K != C ||
        prefix_every < 1)
        __trap();
    // 32-bit chunk and chain indices (see lookback_group: chains*NC + 1 <= 2^31 - 1 is
    // checked by the planner); element offsets stay 64-bit.
    const int groups = static_cast<int>((static_cast<long long>(D) + 31) / 32);
    const long long nblocks = static_cast<long long>(B) * groups * ((static_cast<long long>(T) + C - 1) / C);
    const long long id = lb_ticket(status + nblocks);
    // A grid larger than the contract's: the surplus tickets own no chunk (uniform per block).
    if (id >= nblocks) return;
    const int chains = B * groups;
    const int c = static_cast<int>(id) / chains;
    const int chain = static_cast<int>(id) - c * chains;
    const int bb = chain / groups;
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const int g0 = (chain - bb * groups) * 32;  // first channel of the group, < D
    const bool active = lid < D - g0;
    const int d = g0 + (active ? lid : 0);
    const long long ts = static_cast<long long>(c) * C + wid * K;
    // Steps left in the sequence from this thread's first (0 for an inactive channel; in
    // [-C, T]): step k exists iff k < rem and is t = T - 1 iff k == rem - 1. One 32-bit
    // register is all the rescan needs of ts across the look-back.
    const int rem = active ? static_cast<int>(T - ts) : 0;
    // Step ts + k at time step_time(ts + k): flat index base +- k * D (REV walks back).
    const long long base = (static_cast<long long>(bb) * T + step_time<REV>(ts, T)) * D + d;

    Elem e[K];
PSD_UNROLL
    for (int k = 0; k < K; ++k)
        e[k] = k < rem ? src.step(bb, step_time<REV>(ts + k, T), d,
                                  REV ? base - static_cast<long long>(k) * D : base + static_cast<long long>(k) * D)
                       : Ops::identity();
    Elem x = e[0];
PSD_UNROLL
    for (int k = 1; k < K; ++k) x = Ops::combine(x, e[k]);
    s_w[wid * 32 + lid] = x;
    __syncthreads();
    const State init = wid == 0 && active ? Ops::initial(h0, static_cast<long long>(bb) * D + d) : State{};
    s_base[threadIdx.x] = base;
    s_rem[threadIdx.x] = rem;
    const State hin = lookback_group<Ops, Lb>(status, lagg, lpre, chain, chains, c, s_w, init, prefix_every);
    if (wid == 0) s_hin[lid] = hin;
    if (!lb_plant(3)) __syncthreads();
    const long long base2 = s_base[threadIdx.x];
    const int rem2 = s_rem[threadIdx.x];
    State hh = Ops::apply(lb_warp_prefix<Ops>(s_w), s_hin[lid]);
PSD_UNROLL
    for (int k = 0; k < K; ++k) {
        if (k < rem2) {
            hh = Ops::apply(e[k], hh);
            if (h) h[REV ? base2 - static_cast<long long>(k) * D : base2 + static_cast<long long>(k) * D] = Ops::narrow(hh);
            if (hT && k == rem2 - 1) hT[lb_btd_lane(base2, T, D)] = Ops::narrow(hh);
        }
    }
}

template <class Ops, class Lb = LbProduction, bool REV = false, int K = kLbSteps>
PSD_DEV void btd_lookback(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                          typename Ops::Out* __restrict__ h, typename Ops::Out* __restrict__ hT,
                          const typename Ops::In* __restrict__ h0, unsigned* __restrict__ status,
                          typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre, int B,
                          int T, int D, int C, int prefix_every) {
#if defined(PS_HAS_HALF)
    if constexpr (kLbPacked<Ops>) {  // f16/bf16: 32 steps per thread, packed
        btd_lookback_packed<Ops, Lb, REV>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);
        return;
    }
#endif
    DiagSteps<Ops> src{a, b};
    btd_lookback_steps<Ops, DiagSteps<Ops>, Lb, REV, K>(src, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);
}

using OpsF32 = DiagOps<float, float>;
using OpsF64 = DiagOps<double, double>;
using OpsF16 = DiagOps<__half, float>;
using OpsBF16 = DiagOps<__nv_bfloat16, float>;
using OpsDepth = DepthOps;

}  // namespace psd

#endif  // PARASCAN_DIAGONAL_CUH
