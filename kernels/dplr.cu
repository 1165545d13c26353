// dplr.cu: the DPLR family on matrix states (SPEC §1), evaluated in parallel over time
// with a chunked, work-efficient Blelloch scan (SPEC §2):
//   H_t = A_t H_{t-1} + k_t x_t^T,   A_t = diag(w_t) + sum_{r<R} u_{t,r} v_{t,r}^T,
//   H in R^{n x m} (row-major), readout y_t = H_t^T q_t.
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/dplr.rs implements exactly this)
// =====================================================================================
//
// Notation. B problems, T >= 1 steps, 1 <= n, m <= 128, rank 1 <= R <= 4. C >= 1 is the
// chunk length, NC = ceil(T / C). NMAX in {32, 64, 128} is the kernel's register width,
// the smallest one >= n (part of the kernel name). Every integer argument is a C `int`
// (KernelArg::I32); products are formed in 64 bits inside. Pointers are KernelArg::Ptr;
// "nullable" ones may be 0. Buffers of one launch never alias each other except where
// stated (agg and carry are updated in place by the level kernels).
//
// Layouts (storage S): w, k, q: [B,T,n]; u, v: [B,T,R,n]; x: [B,T,m]; y: [B,T,m];
// states: [B,T,n,m]; h0, hT: [B,n,m]. Scratch (compute type A): an aggregate is
// M (n x n, row-major) followed by N (n x m, row-major), E = n*(n+m) values;
// agg: A[B*NC*E], aggregate of chunk c of problem b at (b*NC + c)*E; carry: A[B*NC*n*m],
// the state entering chunk c at (b*NC + c)*n*m (chunk 0's slot is never used: chunk 0
// starts from h0).
//
// Types (kernel-name suffix):
//   suffix  storage S (inputs, y, states, h0, hT)   compute / scratch A
//   _f32    float                                    float
//   _f16    __half                                   float
//   _bf16   __nv_bfloat16                            float
//   _f64    double                                   double
//   _depth  unsigned (see DEPTH)                     unsigned
// Half-precision storage is widened on load and rounded once per stored output.
//
// Kernels (<N> = NMAX, e.g. dplr_rescan_n64_f32):
//  K1 dplr_reduce_n<N>_<sfx>(const S* w, const S* u, const S* v, const S* k, const S* x,
//                            A* agg, int B, int T, int n, int m, int R, int C)
//       agg of chunk c = fold of its steps from the identity: M = A_{t1-1}...A_{t0},
//       N = the state the chunk produces from H = 0.
//  K2 dplr_rescan_n<N>_<sfx>(const S* w, u, v, k, x, const S* q, S* y, S* states, S* hT,
//                            const A* carry, const S* h0, int B, int T, int n, int m,
//                            int R, int C)
//       Runs chunk c from its carry-in (h0 for c == 0; carry == 0 is allowed only when
//       NC == 1) and writes y (nullable; needs q), states (nullable), hT (nullable; from
//       the last chunk). h0 nullable = zeros.
//  K3 dplr_sequential_n<N>_<sfx>(w, u, v, k, x, q, y, states, hT, h0, B, T, n, m, R)
//       The baseline: K2 with C = T, one pass over all T steps.
//  K4 dplr_up_n<N>_<sfx>(A* agg, int B, int NC, int n, int m, int half)
//       Blelloch up-sweep level (node size 2*half, half = 2^(k-1), k >= 1): for every
//       p with (p+1)*2*half <= NC: agg[bi] <- combine(agg[ai], agg[bi]),
//       ai = p*2*half + half - 1, bi = p*2*half + 2*half - 1 (in place).
//       Only nodes whose range is all real chunks are formed: no padding elements.
//  K5 dplr_down_n<N>_<sfx>(const A* agg, A* carry, const S* h0, int B, int NC, int n,
//                          int m, int half)
//       Blelloch down-sweep level on states (half = 2^k, k >= 0): for every p with
//       r = p*2*half + half < NC: carry[r] <- M_L carry[src] + N_L, src = p*2*half,
//       (M_L, N_L) = agg[r - 1] (the left sibling's up-sweep total), carry[0] = h0
//       (nullable = zeros). Folding h0 in on the way down gives carries directly.
//
// Launch shapes (grid (x,1,1), block (bx,1,1)):
//   K1: bx = CB in {32, 64}; tiles = ceil((n+m)/CB) (thread j < n: column j of M,
//       n <= j < n+m: column j-n of N); grid = B*NC*tiles, block id = (b*NC + c)*tiles + tile.
//       shared = (SB*(2R+3)*NMAX + SB*CB + 4*CB)*sizeof(A), SB = 8 step slots (two
//       buffers of 4 steps): the staged step vectors, x of the block's columns, each
//       thread's R projections.
//   K2, K3: bx = CB in {32, 64}; tiles = ceil(m/CB); grid = B*NC*tiles (K3: NC = 1);
//       shared as K1.
//   K4: bx in [32, 256], a multiple of 32 (recommended round32(n+m) clamped);
//       grid = B*floor(NC/(2*half)), block id = b*npairs + p; shared = n*NMAX*sizeof(A).
//   K5: bx in [32, 128], a multiple of 32 (recommended round32(m) clamped);
//       grid = B*cnt, cnt = (NC-1-half)/(2*half) + 1; shared = n*NMAX*sizeof(A).
//   Shared memory is dynamic; above 48 KiB (n = 128 in K4/K5; R = 4 and n = 128 in
//   K1-K3; f64 sooner) the launcher must opt in (the CUDA runner does).
//
// Plans. LV = ceil(log2 NC).
//   Sequential:   K3.                                                        1 launch
//   Single pass (NC == 1): K2 with carry = 0, C = T (the same work as K3).  1 launch
//   Chunked (NC >= 2): K1; K4 for half = 1, 2, ..., 2^(LV-2) (LV-1 launches); K5 for
//       half = 2^(LV-1), ..., 2, 1 (LV launches); K2.                2*LV + 1 launches
//   Scratch: agg B*NC*E, carry B*NC*n*m values of A. Same stream, in order, no syncs.
//
// DEPTH. The _depth kernels run the same launches over counters: every matrix entry
// holds the depth of its element; a step (one combine) sets a column to its maximum
// plus one; a dense combine/apply entry is max(inputs it reads) + 1; inputs and h0
// have depth 0; y_t has the depth of H_t. Measured depth follows exactly:
//   hb = floor(log2), pc = popcount. Chunk aggregates (full chunks) have depth C; the
//   up-sweep node of 2^k chunks has depth C + k; the carry of chunk c is
//   D(c) = 0 for c == 0, else C + hb(c) + pc(c) (each set bit of c is one apply, on
//   the way down from the highest); output step i (1-based) of chunk c has depth
//   D(c) + i. Sequential and single pass: step t (1-based) has depth t.
//   Plan depth = max over steps: e.g. T = 8192, C = 256 (NC = 32): D(31) = 256 + 4 + 5,
//   depth 521 (sequential: 8192).
//
// REVERSE. dplr_{reduce,rescan,sequential}_rev_n<N>_<sfx> take K1's, K2's and K3's
// arguments, launch shapes and plans and run the scan right to left:
// H_t = A_t H_{t+1} + k_t x_t^T for t = T-1 down to 0 from h0, hT = the state at t = 0,
// y_t = H_t^T q_t. Step s of the scan is time T-1-s (chunk c covers [T-(c+1)*C, T-c*C));
// a stage batch copies the same contiguous rows as a forward batch and walks them back;
// K4, K5 are shared; the depth formula holds with t replaced by T-1-t.
// -DPS_DPLR_DROP_BARRIER=2 drops the stage-reuse barrier of the reverse kernels only.
//
// Errors. n outside [1, NMAX], R outside [1, 4] trap (__trap(); in the emulator
// PS_EMU_ERR_KERNEL_FAULT). Shapes are otherwise validated on the Rust side.
//
// Guarantees: every element of y / states / hT (when non-null) is written exactly once;
// nothing outside them; hT equals states at t = T bit for bit; results do not depend on
// block order or thread interleaving (no atomics; every barrier separates writers and
// readers of shared memory).
//
// Performance design (not measured on a GPU yet):
//   * Columns of H are independent given the step vectors, so one thread owns one
//     column (n values in registers, NMAX-unrolled, zero-padded: no bounds checks) and
//     a step is (2R+3)*NMAX FMAs with no barrier and no shuffle. The block stages the
//     step vectors w, u, v, k, q (shared by all its columns) in shared memory, read as
//     broadcasts: two buffers of SB/2 = 4 steps, 2 barriers per 4 steps; while one
//     buffer is computed on, the next 4 steps are copied into the other. Each array's
//     rows for consecutive steps are one contiguous run in memory, copied in 16-byte
//     pieces (n a multiple of 16 bytes of storage and aligned bases; else element by
//     element) with no division and no per-element branch on the array; f32/f64 use
//     async copies (cp.async, sm_80+), f16/bf16 widen through registers. The emulator
//     models the async copies (kernels/async_copy.cuh): the destination reads NaN from
//     the issue until the issuing thread's wait, so a missing wait or barrier fails.
//   * The chunk fold runs the same engine on the n+m columns of [M | N] (M columns
//     start at e_j, no input), so a chunk costs (n+m)/m rescans; the scan of chunk
//     aggregates is dense (n^2 (n+m) per combine, n^2 m per apply) but only ~2 NC of
//     them per problem.
//   * Parallelism: B * NC * ceil(cols/CB) blocks; few problems and long T get many
//     chunks. Tensor cores (mma for the dense level kernels and a WY-form chunk fold)
//     are not used yet.
//   * ptxas (sm_90, scripts/check-kernels.sh): no spill at NMAX <= 64 in the chunk
//     kernels (f32: 112-168 registers; __launch_bounds__(64, 4): without the
//     minimum-blocks hint ptxas capped dplr_reduce_n64 at 128 registers and spilled),
//     none in any f32 kernel at NMAX = 128 (dplr_down holds its carry-in column in two
//     halves: 168 registers). Spills left: dplr_up_n32 4 B; f16/bf16 at NMAX = 128:
//     dplr_down 20 B, rescan 16 B, sequential 8 B; f64 at NMAX = 128 (a 128-double
//     column alone needs 256 registers; up to ~3 KB in the rescan) except dplr_down,
//     and dplr_down_n64_f64 52 B.
//   * The depth instantiation keeps one counter per column (dcol) rather than NMAX equal
//     counters: nvcc 13.0's cicc crashed (SIGSEGV) on the 128-wide array of counters.
// =====================================================================================

#include <stdint.h>

#include "async_copy.cuh"
#include "emu/portable.cuh"
#include "parascan.cuh"

#define PSP_DEV __device__ __forceinline__
// Partial unrolling of the staging loops: four independent loads in flight per thread.
#if defined(__CUDACC__)
#define PSP_UNROLL4 _Pragma("unroll 4")
#define PSP_NO_UNROLL _Pragma("unroll 1")
#else
#define PSP_UNROLL4
#define PSP_NO_UNROLL
#endif

// -DPS_DPLR_DROP_BARRIER=1 removes the barrier that protects the staged step inputs
// from being overwritten while other threads still read them (a deliberately broken
// build: the emulator tests fail under the reverse and shuffled fiber orders).
#ifndef PS_DPLR_DROP_BARRIER
#define PS_DPLR_DROP_BARRIER 0
#endif
// -DPS_DPLR_DROP_WAIT=1 reads a stage buffer without waiting for its async copies
// (another deliberately broken build, for the same tests).
#ifndef PS_DPLR_DROP_WAIT
#define PS_DPLR_DROP_WAIT 0
#endif

namespace psp {

// Step slots of the stage area in shared memory (the launch contract's SB), split into
// two buffers of kHalf steps: one is computed on while the other is being filled.
constexpr int kStage = 8;
constexpr int kHalf = kStage / 2;
// Largest rank the kernels accept.
constexpr int kMaxRank = 4;

PSP_DEV long long min_ll(long long a, long long b) { return a < b ? a : b; }

// Real values: storage S, compute A.
template <typename S, typename A>
struct RealOps {
    using In = S;
    using Out = S;
    using Acc = A;
    static constexpr bool kDepth = false;
    PSP_DEV static A ld(const S* p, long long i) { return ps::load<A>(p + i); }
    PSP_DEV static Out narrow(A x) { return ps::Narrow<S>::from(x); }
    PSP_DEV static A one() { return A(1); }
};

// Depth counters: same launches, every input has depth 0.
struct DepthOps {
    using In = unsigned;
    using Out = unsigned;
    using Acc = unsigned;
    static constexpr bool kDepth = true;
    PSP_DEV static unsigned ld(const unsigned*, long long) { return 0u; }  // never dereferences
    PSP_DEV static unsigned narrow(unsigned x) { return x; }
    PSP_DEV static unsigned one() { return 0u; }  // the identity has depth 0
};

PSP_DEV unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------
// Staging: the step vectors of kHalf steps, global -> shared.
//
// Every array's rows for consecutive steps are consecutive in memory (w, k, q: [B,T,n];
// u, v: [B,T,R,n], i.e. ns*R rows of n), so each array is one contiguous run, copied
// row by row into rows of stride NMAX. Thread i of the copy takes item i, i + cb, ...
// of rows x slots, slots = NMAX / V a compile-time power of two (no runtime division,
// no branch on the array). V = 16 bytes of storage when every row start is 16-byte
// aligned (n a multiple of V, aligned bases), else 1 element. Same storage and compute
// type (f32, f64): async copies (cp.async), so the next batch is in flight while this
// one runs; f16/bf16 are widened on the way, through registers (16-byte loads).
// ---------------------------------------------------------------------------------------
template <class Ops>
struct StageIo {
    const typename Ops::In* w;
    const typename Ops::In* u;
    const typename Ops::In* v;
    const typename Ops::In* k;
    const typename Ops::In* q;  // nullable
    const typename Ops::In* x;
    static constexpr int kVec = 16 / static_cast<int>(sizeof(typename Ops::In));
    PSP_DEV static bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
    // Uniform across the launch: every row start of every array is 16-byte aligned.
    PSP_DEV bool vectorizable(int n) const {
        if constexpr (Ops::kDepth) {
            return false;
        } else {
            return n % kVec == 0 && aligned16(w) && aligned16(u) && aligned16(v) && aligned16(k) &&
                   (q == nullptr || aligned16(q));
        }
    }
};

// 16 bytes of half-precision storage, widened into V compute values.
template <class Ops>
PSP_DEV void widen16(typename Ops::Acc* dp, const typename Ops::In* sp) {
    using S = typename Ops::In;
    constexpr int V = StageIo<Ops>::kVec;
    const uint4 raw = *reinterpret_cast<const uint4*>(sp);
    S vals[V];
    memcpy(vals, &raw, sizeof(raw));
PS_UNROLL
    for (int e = 0; e < V; ++e) dp[e] = ps::widen(vals[e]);
}

template <class Ops, int NMAX>
PSP_DEV void stage_rows(typename Ops::Acc* dst, const typename Ops::In* src, int rows, int n, bool vec, int tid,
                        int cb, ps::AsyncCopies& copies) {
    using S = typename Ops::In;
    using A = typename Ops::Acc;
    constexpr bool kSame = sizeof(S) == sizeof(A);  // f32, f64: raw copies
    if (vec) {
        constexpr int V = StageIo<Ops>::kVec;
        constexpr int kSlots = NMAX / V;
        static_assert(kSlots >= 1 && (kSlots & (kSlots - 1)) == 0, "slots per row: a power of two");
        const int items = rows * kSlots;
        if constexpr (NMAX > 64) {
            // Next to a 128-value column: one piece at a time (four widened pieces in
            // flight spilled; an async copy does not wait for its data anyway).
PSP_NO_UNROLL
            for (int it = tid; it < items; it += cb) {
                const int row = it / kSlots;
                const int l = (it % kSlots) * V;
                if (l < n) {
                    const S* sp = src + static_cast<long long>(row) * n + l;
                    A* dp = dst + row * NMAX + l;
                    if constexpr (kSame) {
                        copies.template copy<16>(dp, sp);
                    } else {
                        widen16<Ops>(dp, sp);
                    }
                }
            }
        } else {
            // An else branch, not an early return: nvcc warned that the unrolled loop
            // after the return was not reachable in the NMAX = 128 instantiations.
PSP_UNROLL4
            for (int it = tid; it < items; it += cb) {
                const int row = it / kSlots;
                const int l = (it % kSlots) * V;
                if (l < n) {
                    const S* sp = src + static_cast<long long>(row) * n + l;
                    A* dp = dst + row * NMAX + l;
                    if constexpr (kSame) {
                        copies.template copy<16>(dp, sp);
                    } else {
                        widen16<Ops>(dp, sp);
                    }
                }
            }
        }
    } else {
        const int items = rows * NMAX;
PSP_UNROLL4
        for (int it = tid; it < items; it += cb) {  // the general (unaligned) case
            const int row = it / NMAX;
            const int l = it % NMAX;
            if (l < n) {
                const long long o = static_cast<long long>(row) * n + l;
                if constexpr (kSame) {
                    copies.template copy<static_cast<int>(sizeof(S))>(dst + row * NMAX + l, src + o);
                } else {
                    dst[row * NMAX + l] = Ops::ld(src, o);
                }
            }
        }
    }
}

// Issues the copies of steps [bt0, bt0 + ns) (flattened b*T + t) into one stage buffer
// and its x slots; xlive: this thread's column takes x (a column of N or of H).
template <class Ops, int NMAX>
PSP_DEV void stage_batch(const StageIo<Ops>& io, typename Ops::Acc* buf, typename Ops::Acc* sx, long long bt0,
                         int ns, int n, int m, int R, int xc, bool xlive, bool vec, int tid, int cb,
                         ps::AsyncCopies& copies) {
    using S = typename Ops::In;
    using A = typename Ops::Acc;
    A* const sw = buf;
    A* const su = sw + kHalf * NMAX;
    A* const sv = su + kHalf * R * NMAX;
    A* const sk = sv + kHalf * R * NMAX;
    A* const sq = sk + kHalf * NMAX;
    stage_rows<Ops, NMAX>(sw, io.w + bt0 * n, ns, n, vec, tid, cb, copies);
    stage_rows<Ops, NMAX>(su, io.u + bt0 * R * n, ns * R, n, vec, tid, cb, copies);
    stage_rows<Ops, NMAX>(sv, io.v + bt0 * R * n, ns * R, n, vec, tid, cb, copies);
    stage_rows<Ops, NMAX>(sk, io.k + bt0 * n, ns, n, vec, tid, cb, copies);
    if (io.q) stage_rows<Ops, NMAX>(sq, io.q + bt0 * n, ns, n, vec, tid, cb, copies);
    if (xlive) {
PS_UNROLL
        for (int s = 0; s < kHalf; ++s) {
            if (s < ns) {
                const long long o = (bt0 + s) * m + xc;
                if constexpr (sizeof(S) == sizeof(A)) {
                    copies.template copy<static_cast<int>(sizeof(S))>(sx + s * cb + tid, io.x + o);
                } else {
                    sx[s * cb + tid] = Ops::ld(io.x, o);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// K1/K2/K3: one thread per column, one block per (problem, chunk, column tile).
// REDUCE: columns are those of [M | N], starting from the identity; writes agg.
// Otherwise: columns of H, starting from the carry-in; writes y / states / hT.
// ---------------------------------------------------------------------------------------
// REV (the _rev_ kernels): step s of the scan is time T-1-s. A batch of ns steps from s =
// ts is the contiguous run of times [T-ts-ns, T-ts), staged in memory order exactly as a
// forward batch, and step s reads stage slot ns-1-(s-ts): the same copies, walked back.
template <class Ops, int NMAX, bool REDUCE, bool REV = false>
PSP_DEV void chunk_run(const typename Ops::In* __restrict__ w, const typename Ops::In* __restrict__ u,
                       const typename Ops::In* __restrict__ v, const typename Ops::In* __restrict__ k,
                       const typename Ops::In* __restrict__ x, const typename Ops::In* __restrict__ q,
                       typename Ops::Out* __restrict__ y, typename Ops::Out* __restrict__ states,
                       typename Ops::Out* __restrict__ hT, const typename Ops::Acc* __restrict__ carry,
                       const typename Ops::In* __restrict__ h0, typename Ops::Acc* __restrict__ agg, int B,
                       int T, int n, int m, int R, int C) {
    using A = typename Ops::Acc;
    PS_DYNAMIC_SHARED(A, smem);
    if (n < 1 || n > NMAX || R < 1 || R > kMaxRank) __trap();  // contract
    const int cols = REDUCE ? n + m : m;
    const int cb = static_cast<int>(blockDim.x);
    const long long tiles = (cols + cb - 1) / cb;
    const long long nc = (static_cast<long long>(T) + C - 1) / C;
    const long long bid = blockIdx.x;
    const long long tile = bid % tiles;
    const long long c = (bid / tiles) % nc;
    const long long b = bid / (tiles * nc);
    if (b >= B) return;  // whole block: no barrier divergence
    const int tid = static_cast<int>(threadIdx.x);
    const int j = static_cast<int>(tile) * cb + tid;  // column of [M | N] or of H
    const bool live = j < cols;
    const bool mcol = REDUCE && j < n;  // a column of M: no input
    const int xc = REDUCE ? j - n : j;  // column of x, N, H
    const long long t0 = c * C;
    const long long t1 = min_ll(t0 + C, T);
    // Two stage buffers (double buffering), each kHalf steps of w | u | v | k | q, array by
    // array ([kHalf][NMAX] for w, k, q; [kHalf][R][NMAX] for u, v), rows zero-padded to
    // NMAX; then x of this block's columns ([2][kHalf][cb]), then each thread's R
    // projections ([kMaxRank][cb]). Same total as the launch contract's SB = 8 steps.
    const int bsz = kHalf * (2 * R + 3) * NMAX;
    A* const sxb = smem + 2 * bsz;
    A* const sproj = sxb + 2 * kHalf * cb;

    A h[NMAX];
PS_UNROLL
    for (int l = 0; l < NMAX; ++l) h[l] = A(0);
    if (live) {
        if (REDUCE) {
            if (mcol) {
PS_UNROLL
                for (int l = 0; l < NMAX; ++l) h[l] = (l == j) ? Ops::one() : A(0);
            }
        } else if (c > 0 && carry) {
            const typename Ops::Acc* src = carry + (b * nc + c) * n * m + xc;
PS_UNROLL
            for (int l = 0; l < NMAX; ++l)
                if (l < n) h[l] = src[static_cast<long long>(l) * m];
        } else if (h0) {
PS_UNROLL
            for (int l = 0; l < NMAX; ++l)
                if (l < n) h[l] = Ops::ld(h0, (b * n + l) * m + xc);
        }
    }

    // Depth counters: every entry of a column has the column's depth, kept in one
    // register (a 128-wide array of equal counters crashes nvcc 13.0's cicc).
    A dcol = A(0);
    if constexpr (Ops::kDepth) {
PS_UNROLL
        for (int l = 0; l < NMAX; ++l) dcol = umax(dcol, h[l]);
    }

    // The chunk's steps in batches of kHalf; batch i+1 is in flight while batch i runs.
    // Every thread takes part in every barrier (t0, t1 are uniform across the block).
    const long long nb = (t1 - t0 + kHalf - 1) / kHalf;
    StageIo<Ops> io{w, u, v, k, q, x};
    ps::AsyncCopies copies;
    const bool vec = io.vectorizable(n);
    if constexpr (!Ops::kDepth) {
        // Padding (rows past n, x of dead columns) is written once: the copies only
        // ever write rows' first n entries and live columns.
        for (int e = tid; e < 2 * bsz + 2 * kHalf * cb; e += cb) smem[e] = A(0);
        __syncthreads();  // the zeros land before any thread's first copy
        const int ns0 = static_cast<int>(min_ll(kHalf, t1 - t0));
        stage_batch<Ops, NMAX>(io, smem, sxb, b * T + (REV ? T - t0 - ns0 : t0), ns0, n, m, R, xc,
                               live && !mcol, vec, tid, cb, copies);
        copies.commit();
    }
    for (long long i = 0; i < nb; ++i) {
        const long long ts = t0 + i * kHalf;
        const int ns = static_cast<int>(min_ll(kHalf, t1 - ts));
        const int cur = static_cast<int>(i & 1);
        if constexpr (!Ops::kDepth) {
            if (i + 1 < nb) {
                const int nxt = cur ^ 1;
                const int nsn = static_cast<int>(min_ll(kHalf, t1 - ts - kHalf));
                const long long tsn = ts + kHalf;
                stage_batch<Ops, NMAX>(io, smem + nxt * bsz, sxb + nxt * kHalf * cb,
                                       b * T + (REV ? T - tsn - nsn : tsn), nsn, n, m, R, xc, live && !mcol,
                                       vec, tid, cb, copies);
            }
            copies.commit();  // possibly empty: keeps "all but the newest group" = batch i
#if PS_DPLR_DROP_WAIT != 1
            copies.wait<1>();  // this thread's copies of batch i have landed
#endif
        }
        __syncthreads();  // ... and every other thread's
        if (live) {
            const A* sw = smem + cur * bsz;
            const A* su = sw + kHalf * NMAX;
            const A* sv = su + kHalf * R * NMAX;
            const A* sk = sv + kHalf * R * NMAX;
            const A* sq = sk + kHalf * NMAX;
            const A* sx = sxb + cur * kHalf * cb;
            for (int s0 = 0; s0 < ns; ++s0) {
                const int s = REV ? ns - 1 - s0 : s0;  // stage slot of step ts + s0
                const long long bt = b * T + (REV ? T - 1 - ts - s0 : ts + s0);
                A yv;
                if constexpr (Ops::kDepth) {
                    dcol += 1u;  // one combine per step
                    yv = dcol;
                } else {
                    ps::dplr_col_step<A, NMAX>(R, sw + s * NMAX, su + s * R * NMAX, sv + s * R * NMAX,
                                               sk + s * NMAX, sx[s * cb + tid], !mcol, h, sproj + tid, cb);
                    yv = (!REDUCE && y) ? ps::dplr_col_readout<A, NMAX>(h, sq + s * NMAX) : A(0);
                }
                if (!REDUCE) {
                    if (y) y[bt * m + xc] = Ops::narrow(yv);
                    if (states) {
                        typename Ops::Out* dst = states + bt * n * m + xc;
PS_UNROLL
                        for (int l = 0; l < NMAX; ++l)
                            if (l < n) dst[static_cast<long long>(l) * m] = Ops::narrow(Ops::kDepth ? dcol : h[l]);
                    }
                }
            }
        }
#if PS_DPLR_DROP_BARRIER == 2
        if (!REV) __syncthreads();  // planted race in the reverse kernels only
#elif PS_DPLR_DROP_BARRIER != 1
        __syncthreads();  // buffer cur is read by everyone before batch i+2's copies go in
#endif
    }

    if (!live) return;  // no barrier below
    if (REDUCE) {
        A* e = agg + (b * nc + c) * n * (n + m);
        if (mcol) {
PS_UNROLL
            for (int l = 0; l < NMAX; ++l)
                if (l < n) e[static_cast<long long>(l) * n + j] = Ops::kDepth ? dcol : h[l];
        } else {
PS_UNROLL
            for (int l = 0; l < NMAX; ++l)
                if (l < n) e[static_cast<long long>(n) * n + static_cast<long long>(l) * m + xc] = Ops::kDepth ? dcol : h[l];
        }
    } else if (hT && c == nc - 1) {
PS_UNROLL
        for (int l = 0; l < NMAX; ++l)
            if (l < n) hT[(b * n + l) * m + xc] = Ops::narrow(Ops::kDepth ? dcol : h[l]);
    }
}

// Loads M (n x n, row-major) of an aggregate into shared memory with row stride NMAX,
// zero-padded, so row dots need no bounds checks.
template <class Ops, int NMAX>
PSP_DEV void load_m(const typename Ops::Acc* __restrict__ m_src, typename Ops::Acc* sm, int n) {
    for (int e = static_cast<int>(threadIdx.x); e < n * NMAX; e += static_cast<int>(blockDim.x)) {
        const int i = e / NMAX;
        const int l = e % NMAX;
        sm[e] = l < n ? m_src[i * n + l] : typename Ops::Acc(0);
    }
}

// out = init + Mrow . a (real) or max(init, Mrow, a) + 1 (depth), over W entries.
// last = false: a partial result that a later call continues from (as init): the real
// sum goes on in the same order; the depth gets its + 1 only at the end.
template <class Ops, int W>
PSP_DEV typename Ops::Acc dense_entry(typename Ops::Acc init, const typename Ops::Acc* mrow,
                                      const typename Ops::Acc* a, bool last = true) {
    if constexpr (Ops::kDepth) {
        unsigned mx = init;
PS_UNROLL
        for (int l = 0; l < W; ++l) mx = umax(mx, umax(mrow[l], a[l]));
        return last ? mx + 1u : mx;
    } else {
        return ps::dplr_row_dot<typename Ops::Acc, W>(init, mrow, a);
    }
}

// K4: one block per (problem, pair). M of the later element goes to shared memory
// first, so the block may overwrite it in place; every N entry is read and written by
// the thread that owns its column.
template <class Ops, int NMAX>
PSP_DEV void up_level(typename Ops::Acc* __restrict__ agg, int B, int NC, int n, int m, int half) {
    using A = typename Ops::Acc;
    PS_DYNAMIC_SHARED(A, sm);
    if (n < 1 || n > NMAX || half < 1) __trap();
    const long long span = 2LL * half;
    const long long npairs = NC / span;
    if (npairs < 1) __trap();
    const long long bid = blockIdx.x;
    const long long p = bid % npairs;
    const long long b = bid / npairs;
    if (b >= B) return;
    const long long E = static_cast<long long>(n) * (n + m);
    const long long nn = static_cast<long long>(n) * n;
    const A* ea = agg + (b * NC + p * span + half - 1) * E;
    A* eb = agg + (b * NC + p * span + span - 1) * E;
    load_m<Ops, NMAX>(eb, sm, n);
    __syncthreads();
    for (int j = static_cast<int>(threadIdx.x); j < n + m; j += static_cast<int>(blockDim.x)) {
        A a[NMAX];
PS_UNROLL
        for (int l = 0; l < NMAX; ++l)
            a[l] = l < n ? (j < n ? ea[l * n + j] : ea[nn + static_cast<long long>(l) * m + (j - n)]) : A(0);
        for (int i = 0; i < n; ++i) {
            A* dst = j < n ? eb + i * n + j : eb + nn + static_cast<long long>(i) * m + (j - n);
            const A init = j < n ? A(0) : *dst;
            *dst = dense_entry<Ops, NMAX>(init, sm + i * NMAX, a);
        }
    }
}

// K5: one block per (problem, right child); thread per column of H.
template <class Ops, int NMAX>
PSP_DEV void down_level(const typename Ops::Acc* __restrict__ agg, typename Ops::Acc* __restrict__ carry,
                        const typename Ops::In* __restrict__ h0, int B, int NC, int n, int m, int half) {
    using A = typename Ops::Acc;
    PS_DYNAMIC_SHARED(A, sm);
    if (n < 1 || n > NMAX || half < 1 || NC - 1 < half) __trap();
    const long long span = 2LL * half;
    const long long cnt = (static_cast<long long>(NC) - 1 - half) / span + 1;
    const long long bid = blockIdx.x;
    const long long p = bid % cnt;
    const long long b = bid / cnt;
    if (b >= B) return;
    const long long E = static_cast<long long>(n) * (n + m);
    const long long nn = static_cast<long long>(n) * n;
    const long long nm = static_cast<long long>(n) * m;
    const long long src = p * span;
    const long long r = src + half;
    const A* el = agg + (b * NC + r - 1) * E;
    load_m<Ops, NMAX>(el, sm, n);
    __syncthreads();
    // The column of the carry-in is held in registers kPart entries at a time: at
    // NMAX = 128 a whole column (128 registers) spilled. Each later part continues the
    // row sums the earlier one stored in dst (same order: l ascending).
    constexpr int kPart = NMAX > 64 ? 64 : NMAX;
    for (int j = static_cast<int>(threadIdx.x); j < m; j += static_cast<int>(blockDim.x)) {
        A* dst = carry + (b * NC + r) * nm + j;
        // Not unrolled either: the next part's loads would be hoisted above this part's
        // row loop and be live with it.
PSP_NO_UNROLL
        for (int l0 = 0; l0 < NMAX; l0 += kPart) {
            A a[kPart];
PS_UNROLL
            for (int l = 0; l < kPart; ++l) {
                A val = A(0);
                if (l0 + l < n) {
                    if (src > 0)
                        val = carry[(b * NC + src) * nm + static_cast<long long>(l0 + l) * m + j];
                    else if (h0)
                        val = Ops::ld(h0, (b * n + l0 + l) * m + j);
                }
                a[l] = val;
            }
            const bool last = l0 + kPart >= NMAX;
            // Not unrolled: unrolled row iterations kept several rows' M entries live and
            // spilled at NMAX = 128.
PSP_NO_UNROLL
            for (int i = 0; i < n; ++i) {
                const A init = l0 == 0 ? el[nn + static_cast<long long>(i) * m + j] : dst[static_cast<long long>(i) * m];
                dst[static_cast<long long>(i) * m] = dense_entry<Ops, kPart>(init, sm + i * NMAX + l0, a, last);
            }
        }
    }
}

using OpsF32 = RealOps<float, float>;
using OpsF64 = RealOps<double, double>;
using OpsF16 = RealOps<__half, float>;
using OpsBF16 = RealOps<__nv_bfloat16, float>;

}  // namespace psp

// ---------------------------------------------------------------------------------------
// extern "C" instantiations: five kernels per (NMAX, type).
// ---------------------------------------------------------------------------------------

#define PSP_KERNELS(NM, SFX, OPS)                                                                            \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_reduce_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,              \
                                  const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,              \
                                  const OPS::In* __restrict__ x, OPS::Acc* __restrict__ agg, int B, int T,   \
                                  int n, int m, int R, int C) {                                              \
        psp::chunk_run<OPS, NM, true>(w, u, v, k, x, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,  \
                                      agg, B, T, n, m, R, C);                                                \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_reduce_n##NM##_##SFX);                                                           \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_rescan_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,              \
                                  const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,              \
                                  const OPS::In* __restrict__ x, const OPS::In* __restrict__ q,              \
                                  OPS::Out* __restrict__ y, OPS::Out* __restrict__ states,                   \
                                  OPS::Out* __restrict__ hT, const OPS::Acc* __restrict__ carry,             \
                                  const OPS::In* __restrict__ h0, int B, int T, int n, int m, int R, int C) { \
        psp::chunk_run<OPS, NM, false>(w, u, v, k, x, q, y, states, hT, carry, h0, nullptr, B, T, n, m, R,   \
                                       C);                                                                   \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_rescan_n##NM##_##SFX);                                                           \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_sequential_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,          \
                                      const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,          \
                                      const OPS::In* __restrict__ x, const OPS::In* __restrict__ q,          \
                                      OPS::Out* __restrict__ y, OPS::Out* __restrict__ states,               \
                                      OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B,      \
                                      int T, int n, int m, int R) {                                          \
        psp::chunk_run<OPS, NM, false>(w, u, v, k, x, q, y, states, hT, nullptr, h0, nullptr, B, T, n, m, R, \
                                       T);                                                                   \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_sequential_n##NM##_##SFX);                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        dplr_up_n##NM##_##SFX(OPS::Acc* __restrict__ agg, int B, int NC, int n, int m, int half) {           \
        psp::up_level<OPS, NM>(agg, B, NC, n, m, half);                                                      \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_up_n##NM##_##SFX);                                                               \
    extern "C" __global__ void __launch_bounds__(128)                                                        \
        dplr_down_n##NM##_##SFX(const OPS::Acc* __restrict__ agg, OPS::Acc* __restrict__ carry,              \
                                const OPS::In* __restrict__ h0, int B, int NC, int n, int m, int half) {     \
        psp::down_level<OPS, NM>(agg, carry, h0, B, NC, n, m, half);                                         \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_down_n##NM##_##SFX)

// Reverse scans (REVERSE in the contract): K1-K3 right to left; K4, K5 are shared.
#define PSP_REV_KERNELS(NM, SFX, OPS)                                                                        \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_reduce_rev_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,          \
                                      const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,          \
                                      const OPS::In* __restrict__ x, OPS::Acc* __restrict__ agg, int B,      \
                                      int T, int n, int m, int R, int C) {                                   \
        psp::chunk_run<OPS, NM, true, true>(w, u, v, k, x, nullptr, nullptr, nullptr, nullptr, nullptr,      \
                                            nullptr, agg, B, T, n, m, R, C);                                 \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_reduce_rev_n##NM##_##SFX);                                                       \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_rescan_rev_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,          \
                                      const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,          \
                                      const OPS::In* __restrict__ x, const OPS::In* __restrict__ q,          \
                                      OPS::Out* __restrict__ y, OPS::Out* __restrict__ states,               \
                                      OPS::Out* __restrict__ hT, const OPS::Acc* __restrict__ carry,         \
                                      const OPS::In* __restrict__ h0, int B, int T, int n, int m, int R,     \
                                      int C) {                                                               \
        psp::chunk_run<OPS, NM, false, true>(w, u, v, k, x, q, y, states, hT, carry, h0, nullptr, B, T, n,   \
                                             m, R, C);                                                       \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_rescan_rev_n##NM##_##SFX);                                                       \
    extern "C" __global__ void __launch_bounds__(64, 4)                                                      \
        dplr_sequential_rev_n##NM##_##SFX(const OPS::In* __restrict__ w, const OPS::In* __restrict__ u,      \
                                          const OPS::In* __restrict__ v, const OPS::In* __restrict__ k,      \
                                          const OPS::In* __restrict__ x, const OPS::In* __restrict__ q,      \
                                          OPS::Out* __restrict__ y, OPS::Out* __restrict__ states,           \
                                          OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B,  \
                                          int T, int n, int m, int R) {                                      \
        psp::chunk_run<OPS, NM, false, true>(w, u, v, k, x, q, y, states, hT, nullptr, h0, nullptr, B, T, n, \
                                             m, R, T);                                                       \
    }                                                                                                        \
    PS_REGISTER_KERNEL(dplr_sequential_rev_n##NM##_##SFX)

#define PSP_KERNELS_ALL_N(SFX, OPS) \
    PSP_KERNELS(32, SFX, OPS);      \
    PSP_KERNELS(64, SFX, OPS);      \
    PSP_KERNELS(128, SFX, OPS);     \
    PSP_REV_KERNELS(32, SFX, OPS);  \
    PSP_REV_KERNELS(64, SFX, OPS);  \
    PSP_REV_KERNELS(128, SFX, OPS)

PSP_KERNELS_ALL_N(f32, psp::OpsF32);
PSP_KERNELS_ALL_N(f64, psp::OpsF64);
PSP_KERNELS_ALL_N(f16, psp::OpsF16);
PSP_KERNELS_ALL_N(bf16, psp::OpsBF16);
PSP_KERNELS_ALL_N(depth, psp::DepthOps);
