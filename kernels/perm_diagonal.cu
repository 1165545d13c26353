// perm_diagonal.cu: the PermDiagonal (PD) family h_t[i] = d_t[i] * h_{t-1}[perm_t[i]] + b_t[i],
// evaluated in parallel over time with a chunked, work-efficient scan (SPEC §1, §2).
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/perm_diagonal.rs implements exactly this)
// =====================================================================================
//
// Notation. B batch rows ("problems"), T >= 1 steps, n slots with 1 <= n <= 256. C >= 1 is
// the chunk length (C <= T), NC = ceil(T / C) chunks per problem, M = the smallest power of
// two >= NC (the scan tree's width). A "unit" is one (problem, chunk) pair, unit = bb*NC + c.
// Every integer argument is a C `int` (KernelArg::I32), >= 1; index products are formed in
// 64 bits inside the kernels. Pointers are KernelArg::Ptr; "nullable" ones may be 0.
// Buffers of one launch never alias. Dynamic shared memory is 0 for every kernel.
//
// Layout. perm, d, b, h are [B,T,n]: element (bb,t,i) at (bb*T + t)*n + i. h0, hT are [B,n].
// perm is unsigned char (n <= 256). An index perm >= n is clamped to n-1 when loaded, so a
// bad permutation can give wrong numbers but never an out-of-bounds access (the Rust side
// rejects bad permutations before any launch; the clamp protects the device entry point).
//
// Types. One instantiation per data type, the kernel name ending in the suffix:
//   suffix  storage S (d, b, h0, h, hT)   compute V (aggregates, carries)
//   _f32    float                          float
//   _f16    __half (u16 bits)              float
//   _bf16   __nv_bfloat16 (u16 bits)       float
//   _f64    double                         double
//   _depth  unsigned (see DEPTH)           unsigned
// Aggregates (scratch) are struct-of-arrays: agg_p unsigned char[B*M*n], agg_d, agg_b
// V[B*M*n], element (bb, k) at (bb*M + k)*n. Carries: V[B*NC*n], (bb, c) at (bb*NC + c)*n.
//
// Teams. A unit is handled by a team of lanes; each lane owns some slots of the element or
// state and keeps them in registers. Gathers (x[perm_i]) go
//   "small" kernels (n <= 32): team = n consecutive lanes of one warp, TPW = floor(32/n)
//        teams per warp (lanes TPW*n..31 are spares); lane r of a team owns slot r and
//        x[j] = __shfl_sync(x, team's first lane + j). Team k of the grid is lanes
//        (k mod TPW)*n .. of warp floor(k / TPW) (warp = global thread id / 32). Inputs
//        are loaded 8 steps at a time through a per-warp shared stage (coalesced: each
//        team's 8 steps are one run of 8n elements, read by consecutive lanes), then each
//        lane takes its slots from the stage. Static shared memory: 4 warps * 256 *
//        (1 + 2 sizeof(S)) bytes (the _depth kernels read nothing: 3 words).
//   "wide" kernels (any n <= 256, used for n > 32): team = one warp, lane l owns slots
//        l + 32k, k < SPL = 2, 4 or 8 (n <= 64, 128, 256); gathers through a per-warp
//        double-buffered shared array (one __syncwarp per step). Static shared memory:
//        2 * 4 warps * 256 * sizeof(V) (rescan) or twice that plus 2 KiB (reduce).
//   Every lane of a warp runs the same number of steps (shuffles and __syncwarp use the
//   full mask): a team whose chunk is shorter (the last chunk) or that has no unit runs
//   no-op steps. A warp with no unit at all returns at once.
//
// Kernels (argument lists in order; "In" = S for _f32/_f16/_bf16/_f64, unsigned for _depth):
//  K1 pd_small_reduce_<sfx>(const u8* perm, const In* d, const In* b, u8* agg_p, V* agg_d,
//                           V* agg_b, int B, int T, int n, int C, int M)
//  K1 pd_wide_reduce_<sfx>(same arguments)
//       Phase 1: agg[(bb*M + c)] = the aggregate of chunk c of problem bb, for c < NC,
//       folded serially from the identity: agg <- combine(agg, step t).
//  K2 pd_small_rescan_<sfx>(const u8* perm, const In* d, const In* b, Out* h, Out* hT,
//                           const V* carry, const In* h0, int B, int T, int n, int C)
//  K2 pd_wide_rescan_<sfx>(same arguments)
//       Phase 3: runs chunk c from its carry-in carry[(bb*NC + c)*n ..] serially and writes
//       h (nullable: then only hT) and hT (nullable) from the last chunk. carry == 0 means
//       "start from h0" and is only valid with NC == 1 (C == T): the single pass. h0
//       nullable (zeros); read only when carry == 0.
//  K3 pd_small_sequential_<sfx>(const u8* perm, const In* d, const In* b, Out* h, Out* hT,
//                               const In* h0, int B, int T, int n)
//  K3 pd_wide_sequential_<sfx>(same arguments)
//       The baseline: one team per problem over all T steps (depth T).
//  K4 pd_scan_<sfx>(u8* agg_p, V* agg_d, V* agg_b, V* carry, const In* h0, int B, int n,
//                   int NC, int M)
//       Phase 2: one block per problem. Pads aggregates NC..M-1 with the identity, runs a
//       Blelloch exclusive scan (up-sweep, root := identity, down-sweep) over the M
//       aggregates in place in global memory (one __syncthreads per tree level), then
//       carry[(bb*NC + c)*n + i] = apply(prefix_c, h0[bb])_i for c < NC (h0 nullable =
//       zeros). Teams of G = min(32, next_pow2(n)) lanes each own slots r + G*k; a
//       down-sweep combine reads all its inputs, __syncwarp, then writes (it overwrites
//       the element it gathers from). Any NC (the tree lives in global memory); O(M*n)
//       work and 2*log2(M) barriers in one block per problem, so P3 splits large NC.
//  K5 pd_scan_tiles_<sfx>(u8* agg_p, V* agg_d, V* agg_b, u8* tile_p, V* tile_d, V* tile_b,
//                         int B, int n, int NC, int M, int TL, int MT)
//       Phase 2a (two levels): tiles of TL (a power of two dividing M) aggregates,
//       NTL = ceil(NC / TL) per problem, MT = next_pow2(NTL). One block per (problem,
//       tile), block id = bb*NTL + j: the same in-place Blelloch scan over the tile
//       (identity past NC), so agg[(bb*M + j*TL + r)] <- exclusive prefix of r inside the
//       tile; tile_*[(bb*MT + j)*n ..] <- the tile's total.
//  K6 pd_scan_apply_<sfx>(const u8* agg_p, const V* agg_d, const V* agg_b,
//                         const V* tile_carry, V* carry, int B, int n, int NC, int M, int TL)
//       Phase 2c (two levels): carry[(bb*NC + c)*n + i] =
//           apply(agg[(bb*M + c)], tile_carry[(bb*NTL + c/TL)*n ..])_i.
//  K7 pd_lookback<SPL>_<sfx>(const u8* perm, const In* d, const In* b, Out* h, Out* hT,
//                            const In* h0, unsigned* status, u8* lagg_p, V* lagg_d, V* lagg_b,
//                            V* lpre, int B, int T, int n, int C, int prefix_every)
//       Plan P4, the whole scan in one pass with a decoupled look-back (the protocol of
//       diagonal.cuh: tickets, a 32-chunk status window, st.cg payloads -> __syncwarp ->
//       st.release status, ld.acquire polls, the spin cap PS_LB_SPIN_CAP, surplus tickets
//       return at once). SPL = slots per lane: 1 for n <= 32, 2, 4, 8 for n <= 64, 128,
//       256 (one kernel each; a wrong n traps).
//       A chain is one problem: status word of (bb, c) at c*B + bb; lagg_*: u8/V[B*NC*n],
//       lpre V[B*NC*n], (bb, c) at (c*B + bb)*n. Block = 32*W threads, W <= 8 warps; teams
//       as the small (n <= 32: floor(32/n) per warp) or wide (one per warp) kernels, each
//       K = 16/SPL steps (K = 1 for SPL = 8), so C = W * teams per warp * K (else trap).
//       For n <= 32 the block first copies its chunk of perm, d and b (one run of C*n
//       elements each) into shared memory in 16-byte words, coalesced (f64: b after perm
//       and d), and each lane takes its slots from there; static shared memory about 37 KB
//       (f32, f64), 21 KB (f16, bf16), the stage sharing its array with the look-back's
//       buffers.
//       status u32[B*NC + 1] all zero (K8). prefix_every >= 1 (1 in production; n > 1
//       publishes inclusive prefixes only for chunks c % n == 0, a test hook that forces the
//       aggregate path; the _depth kernels ignore it). h, hT, h0 nullable as in K2.
//  K8 pd_lb_clear(unsigned* status, int n)      (no dtype suffix): status[0..n) = 0.
//
// Launch shapes (grid and block are (x,1,1); shared bytes 0):
//   pd_small_reduce / _rescan / _sequential: block = 128 (any multiple of 32 in [32, 128]
//        works); grid = ceil(ceil(U / TPW) * 32 / block), U = B*NC units (B for sequential).
//   pd_wide_reduce / _rescan / _sequential: block = 128 exactly (4 warps, traps
//        otherwise); grid = ceil(U / 4).
//   pd_scan: block = 256 (any multiple of 32 in [32, 256]); grid = B.
//   pd_scan_tiles: block = 256 (as pd_scan); grid = B * NTL.
//   pd_scan_apply: block = 256 (any); grid = ceil(B * NC * n / 256).
//
// Plans (exact launch sequences; <K> = small for n <= 32, wide otherwise):
//   P0 sequential: pd_<K>_sequential(perm, d, b, h, hT, h0, B, T, n)                 1 launch
//   P1 single pass (NC == 1): pd_<K>_rescan(perm, d, b, h, hT, carry=0, h0, B, T, n, C=T)
//   P2 chunked (2 <= NC <= 1024). Scratch: agg_p u8[B*M*n], agg_d, agg_b V[B*M*n], carry V[B*NC*n].
//        1. pd_<K>_reduce(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M)
//        2. pd_scan(agg_p, agg_d, agg_b, carry, h0, B, n, NC, M)
//        3. pd_<K>_rescan(perm, d, b, h, hT, carry, h0, B, T, n, C)              3 launches
//   P3 chunked, two-level scan (NC > 1024: phase 2 on B*NTL blocks instead of B; the
//      planner takes TL = max(64, next_pow2(ceil(sqrt(NC))))).
//      Scratch as P2 plus tile_p u8[B*MT*n], tile_d, tile_b V[B*MT*n], tile_carry V[B*NTL*n].
//        1. pd_<K>_reduce(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M)
//        2. pd_scan_tiles(agg_p, agg_d, agg_b, tile_p, tile_d, tile_b, B, n, NC, M, TL, MT)
//        3. pd_scan(tile_p, tile_d, tile_b, tile_carry, h0, B, n, NTL, MT)
//        4. pd_scan_apply(agg_p, agg_d, agg_b, tile_carry, carry, B, n, NC, M, TL)
//        5. pd_<K>_rescan(perm, d, b, h, hT, carry, h0, B, T, n, C)              5 launches
//   P4 look-back (B*NC + 1 <= 2^31 - 1). Scratch: status u32[B*NC + 1], lagg_p u8[B*NC*n],
//      lagg_d, lagg_b, lpre V[B*NC*n].
//        1. pd_lb_clear(status, B*NC + 1)            block 256, grid ceil((B*NC + 1) / 256)
//        2. pd_lookback<SPL>(perm, d, b, h, hT, h0, status, lagg_p, lagg_d, lagg_b, lpre,
//                            B, T, n, C, 1)           block 32*W, grid B*NC       2 launches
//      The planner takes W = clamp(next_pow2(ceil(T / (teams per warp * K))), 1, 8).
//   All on one stream, in order; no launch synchronizes.
//   Bytes per slot and step (f32): P0/P1/P4 13 (read perm 1, d 4, b 4; write h 4); P2 22
//   (the inputs are read twice), plus scratch 9 B per slot and chunk (P4: 13 B written and
//   4 B read per slot and chunk: 13.02 for n = 5, 13.27 for n = 64).
//
// DEPTH. The _depth kernels are the same templates over a depth-counter element: every
// value (d, b of an aggregate, a state slot) is an unsigned depth, input steps, h0 and
// identity padding are depth 0, perm is the identity (inputs are never read: pass 0), and
//   combine slot:  d = max(d1[j], d2_i) + 1,  b = max(b1[j], d2_i, b2_i) + 1
//   apply slot:    h' = max(d_i, h[j], b_i) + 1
// which is ps::DepthCounter (max + 1) per slot; all slots of an element have equal depth.
// They write depths where the other types write h / hT. The measured depth of output step
// t (0-based) of any problem and slot is, with c = t / C, i = t mod C + 1:
//   hb(x) = floor(log2 x), pc(x) = popcount(x).
//   Blelloch exclusive prefix of chunk c over leaves of depth L = C (a full chunk's serial
//   fold from the identity): P(C, c) = 0 if c == 0, else C + hb(c) + pc(c).
//   carry depth dc(c): P0/P1: 0 (h0).  P2: P(C, c) + 1 (applying the prefix to h0).
//        P3, c = j*TL + r: max(P(C, r), P(C + log2 TL, j) + 1) + 1 (a full tile's total has
//        depth C + log2 TL; the tile carry is its prefix applied to h0).
//   depth(t) = dc(c) + i     (P0: t + 1).   hT has the depth of t = T - 1.
//   Plan depth = max over t = max(dc(NC-1) + (T - (NC-1)*C), max_{c < NC-1} dc(c) + C).
//   Example: T = 1024, C = 64 (NC = 16): worst c = 15, dc = 64 + 3 + 4 + 1 = 72, depth 136
//   (~ 2C + 2 log2 NC; the sequential kernel: 1024).
//   P4 (look-back): the _depth kernels take the worst case deterministically (every block
//   waits for its predecessor's inclusive prefix). With K steps per team and nt = W * teams
//   per warp teams per block: team aggregate depth K, exclusive team prefix W_g = K + g - 1,
//   chunk total K + nt - 1; carry-in hin(0) = 0, hin(c) = K + nt - 1 + c; team g starts
//   from hin (g = 0) or max(K + g - 1, hin) + 1; step u (0-based) of team g has depth
//   start + u + 1. Example: n = 5 (K = 16, nt = 48, C = 768), T = 2000: t = 1999 has 82.
//
// REVERSE. pd_<K>_{reduce,rescan,sequential}_rev_<sfx> and pd_lookback<SPL>_rev_<sfx> take
// the arguments, launch shapes, scratch and plans of K1, K2, K3 and K7 and run the scan
// right to left: h_t[i] = d_t[i] * h_{t+1}[perm_t[i]] + b_t[i] for t = T-1 down to 0 from
// h0, hT = the state at t = 0. Step s of the scan is time t = T-1-s (chunk c covers
// [T-(c+1)*C, T-c*C)); phase 2 (K4-K6, K8) works on chunk indices and is shared, and
// every formula of this contract, depth included, holds with t replaced by T-1-t.
// -DPS_PD_DROP_BARRIER=2 drops the wide reverse rescan's per-step __syncwarp (planted).
//
// Guarantees the tests rely on: every element of h (when non-null) and hT (when non-null)
// is written exactly once, nothing else outside the scratch is; hT is bit-identical to h
// at t = T - 1; results do not depend on block scheduling or thread interleaving.
//
// Performance design (not measured on a GPU yet):
//   * n = 5: six problems/chunks per warp (30 of 32 lanes busy); a step is 3 shared
//     loads per lane, one shuffle (rescan) or three (reduce) and one store; the global
//     loads are batched 8 steps ahead so the serial chain does not wait on memory each
//     step, and coalesced through shared memory: a warp's batch is six runs of 160 bytes
//     per array (f32) instead of 8 steps of six scattered 20-byte runs; the look-back
//     reads its whole chunk (C*n elements, one run) in 16-byte words.
//   * n = 64: a warp per unit, 2 slots per lane; a step is one shared store, one
//     __syncwarp and one shared gather per slot; loads batched 4 steps ahead.
//   * Phase 2 only touches B*M*n aggregate slots; Auto keeps C >= 64 so it is small
//     next to phases 1 and 3.
//
// Emulator. Everything stays inside the CUDA subset of kernels/emu/README.md.
// =====================================================================================

#include <stdint.h>

#include "diagonal.cuh"  // the look-back protocol of P4 (psd::lb_*)
#include "emu/portable.cuh"
#include "parascan.cuh"

#define PSP_DEV __device__ __forceinline__
// -DPS_PD_DROP_BARRIER=2 removes the per-step __syncwarp of the reverse wide rescan only (a
// deliberately broken build: a planted race for the reverse suites).
#ifndef PS_PD_DROP_BARRIER
#define PS_PD_DROP_BARRIER 0
#endif
#if defined(__CUDACC__) || defined(__clang__)
#define PSP_UNROLL _Pragma("unroll")
#else
#define PSP_UNROLL _Pragma("GCC unroll 16")
#endif

namespace psp {

// Largest n (perm is one byte).
constexpr int kMaxN = 256;
// Warps per block of the wide kernels (their shared arrays are sized for it).
constexpr int kWideWarps = 4;
// Most slots a scan-kernel lane owns (n = 256, team of 32).
constexpr int kMaxSlots = 8;
// Steps whose inputs a small-kernel lane loads ahead of the serial chain.
constexpr int kSmallBatch = 8;

PSP_DEV long long min_ll(long long x, long long y) { return x < y ? x : y; }

// Reverse scans (REV = true, the _rev_ kernels; REVERSE in the contract): step s of the
// scan lives at time T-1-s, so a walk over steps moves by -n in memory.
template <bool REV>
PSP_DEV long long step_time(long long s, long long T) {
    return REV ? T - 1 - s : s;
}

// Team width for n <= 32: the next power of two (a shuffle segment).
PSP_DEV int small_team(int n) {
    int g = 1;
    while (g < n) g <<= 1;
    return g;
}

// ---------------------------------------------------------------------------------------
// Element policies: the templates below only talk to these.
// ---------------------------------------------------------------------------------------

// Real values: storage S, compute T; slot algebra from parascan.cuh.
template <typename S, typename T>
struct PdOps {
    using In = S;
    using Out = S;
    using V = T;

    PSP_DEV static V one() { return T(1); }
    PSP_DEV static V zero() { return T(0); }
    PSP_DEV static V load(const In* p, long long i) { return ps::load<T>(p + i); }
    // Clamped so that any byte indexes inside the element (see the contract).
    PSP_DEV static int load_perm(const unsigned char* p, long long i, int, int n) {
        const int j = p[i];
        return j < n ? j : n - 1;
    }
    PSP_DEV static V initial(const In* h0, long long i) { return h0 ? ps::load<T>(h0 + i) : T(0); }
    PSP_DEV static Out narrow(V x) { return ps::Narrow<S>::from(x); }
    PSP_DEV static void combine_slot(int p1j, V d1j, V b1j, V d2i, V b2i, int& p, V& d, V& b) {
        ps::pd_combine_slot<T, int>(p1j, d1j, b1j, d2i, b2i, p, d, b);
    }
    PSP_DEV static V apply_slot(V di, V hj, V bi) { return ps::pd_apply_slot<T>(di, hj, bi); }
    // Look-back payloads bypass L1 (ld/st.cg), as in diagonal.cuh.
    PSP_DEV static V load_cg(const V* p) { return __ldcg(p); }
    PSP_DEV static void store_cg(V* p, V x) { __stcg(p, x); }
    // The look-back may fold predecessors' aggregates (timing-dependent).
    static constexpr bool kChainOnly = false;
    // Inputs are read (the loaders stage them through shared memory).
    static constexpr bool kReads = true;
};

// Depth counting: same skeleton; every value is the depth of the longest combine chain.
struct PdDepthOps {
    using In = unsigned;
    using Out = unsigned;
    using V = unsigned;
    using D = ps::DepthCounter;

    PSP_DEV static V one() { return D::identity(); }
    PSP_DEV static V zero() { return D::identity(); }
    PSP_DEV static V load(const In*, long long) { return 0u; }  // never dereferences
    PSP_DEV static int load_perm(const unsigned char*, long long, int slot, int) { return slot; }
    PSP_DEV static V initial(const In*, long long) { return 0u; }
    PSP_DEV static Out narrow(V x) { return x; }
    PSP_DEV static V max2(V x, V y) { return x > y ? x : y; }
    PSP_DEV static void combine_slot(int p1j, V d1j, V b1j, V d2i, V b2i, int& p, V& d, V& b) {
        p = p1j;
        d = D::combine(d1j, d2i);
        b = D::combine(max2(b1j, d2i), b2i);
    }
    PSP_DEV static V apply_slot(V di, V hj, V bi) { return D::combine(max2(di, hj), bi); }
    PSP_DEV static V load_cg(const V* p) { return __ldcg(p); }
    PSP_DEV static void store_cg(V* p, V x) { __stcg(p, x); }
    // Depth is measured on the look-back's deterministic worst case: every block waits
    // for its predecessor's inclusive prefix.
    static constexpr bool kChainOnly = true;
    // No input is ever read (pointers are null): nothing to stage.
    static constexpr bool kReads = false;
};

// Step sources: where a loader's freshly loaded step (perm index j of slot i, d_i, b_i at
// time t of problem bb) may be rewritten before it is used. The plain kernels use the
// inputs as loaded (this no-op); the packed kernels (varlen_perm.cu) fold a sequence's
// reset and initial state into its first step.
template <class Ops>
struct PdPlainSteps {
    PSP_DEV void fix(long long, long long, int, typename Ops::V&, typename Ops::V&) const {}
};

// Coalesced loads for n <= 32. A lane's slots of consecutive steps are n elements apart, so
// loading them lane by lane gives a warp floor(32/n) scattered runs of n elements per step
// (six 20-byte runs for n = 5, f32). Instead the inputs go through shared memory: the
// threads read the range that a warp's (small kernels) or a block's (look-back) steps
// cover with consecutive threads on consecutive words, and each lane then takes its slots
// from shared memory. Values are copied as stored (no conversion), so the loaders apply
// Ops::load / Ops::load_perm (widening, the permutation clamp) to the shared copies and
// everything downstream, the step source included, is unchanged.

// Small kernels: input elements per warp and batch (tpw * kSmallBatch * n <= 32 * 8).
constexpr int kSmallStage = 32 * kSmallBatch;
// Look-back, n <= 32: elements of a block's chunk (C * n <= 8 warps * 32 lanes * 16 steps).
constexpr int kLbStage = 8 * 32 * 16;

// Block-wide copy of elements [lo, lo + cnt) of g to sh[a, a + cnt), where a is the
// misalignment of g + lo in elements: then every aligned 16-byte word of g inside the range
// lands on an aligned 16-byte word of sh, and consecutive threads read consecutive 16-byte
// words (the unaligned head and tail, fewer than 16 / sizeof(S) elements each, one element
// per thread). Only elements of the range are read. sh holds a + cnt <= cnt + 16 /
// sizeof(S) - 1 elements. Returns a. Every thread of the block calls it (no barrier inside).
template <typename S>
PSP_DEV int stage_block(const S* __restrict__ g, long long lo, int cnt, S* sh) {
    constexpr int V = 16 / static_cast<int>(sizeof(S));
    const S* const p = g + lo;
    const int a = static_cast<int>((reinterpret_cast<uintptr_t>(p) & 15u) / sizeof(S));
    const int head = a == 0 ? 0 : (V - a < cnt ? V - a : cnt);
    const int words = (cnt - head) / V;
    const int tail = head + words * V;
    const int tid = threadIdx.x;
    const int nth = blockDim.x;
    for (int x = tid; x < head; x += nth) sh[a + x] = p[x];
    for (int x = tail + tid; x < cnt; x += nth) sh[a + x] = p[x];
    // a + head is 0 or a multiple of V whenever words > 0.
    const uint4* const src = reinterpret_cast<const uint4*>(p + head);
    uint4* const dst = reinterpret_cast<uint4*>(sh + a + head);
    for (int w = tid; w < words; w += nth) dst[w] = __ldg(src + w);
    return a;
}

// ---------------------------------------------------------------------------------------
// Small kernels (n <= 32): a team of n consecutive lanes per unit, one slot per lane,
// shuffle gathers; floor(32/n) teams per warp (6 for n = 5), the warp's last 32 mod n lanes
// are spares that only take part in the shuffles. REDUCE folds the unit's chunk into an aggregate; otherwise rescans it from the carry-in
// (or from h0 when carry == 0). Sequential = rescan with C = T.
// ---------------------------------------------------------------------------------------
template <class Ops, bool REDUCE, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void small_chunk(const unsigned char* __restrict__ perm, const typename Ops::In* __restrict__ d,
                         const typename Ops::In* __restrict__ b, typename Ops::Out* __restrict__ h,
                         typename Ops::Out* __restrict__ hT, const typename Ops::V* __restrict__ carry,
                         const typename Ops::In* __restrict__ h0, unsigned char* __restrict__ agg_p,
                         typename Ops::V* __restrict__ agg_d, typename Ops::V* __restrict__ agg_b, int B, int T,
                         int n, int C, int M, Src src = Src()) {
    using V = typename Ops::V;
    constexpr int U = kSmallBatch;
    if (n < 1 || n > 32) __trap();  // contract: the wide kernels take larger n
    const int tpw = 32 / n;  // teams per warp
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long units = static_cast<long long>(B) * nchunks;
    const long long warp = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    // A warp with no unit at all leaves (no lane of it takes part in any shuffle).
    if (warp * tpw >= units) return;
    const int tiw = lane / n;                   // team in warp; tpw for the spare lanes
    const bool slot_ok = tiw < tpw;             // a real lane of a team
    const int r = slot_ok ? lane - tiw * n : 0;  // its slot
    const int lane0 = slot_ok ? tiw * n : lane;  // shuffle source of slot 0 (spares: self)
    const long long team = warp * tpw + tiw;
    const bool active = slot_ok && team < units;
    const long long c = active ? team % nchunks : 0;
    const long long bb = active ? team / nchunks : 0;
    const long long t0 = c * C;
    const long long len = active ? min_ll(C, T - t0) : 0;  // steps this team really runs
    const long long base = (bb * T + step_time<REV>(t0, T)) * n + r;  // slot r of the chunk's first step
    const long long tstride = REV ? -static_cast<long long>(n) : n;  // to the next step

    V hv = Ops::zero();
    int ap = r;
    V ad = Ops::one();
    V ab = Ops::zero();
    if (!REDUCE && active && slot_ok)
        hv = carry ? carry[(bb * nchunks + c) * n + r] : Ops::initial(h0, bb * n + r);

    // The warp's batch of U steps in shared memory (coalesced loads, see stage_block):
    // element x of the warp's buffer is slot x mod n of step (x / n) mod U of the warp's
    // team x / (U n), i.e. team q's U steps are one run of U n elements. Lane x + 32 j
    // loads element x + 32 j of every batch: its address for batch s0 is
    // st_at[j] + s0 * tstride, loaded while s0 < st_lim[j] (the step is in the team's
    // chunk). A team's run is contiguous in memory (reversed step order when REV).
    using In = typename Ops::In;
    PS_SHARED(unsigned char, s_stp, Ops::kReads ? kWideWarps * kSmallStage : 1);
    PS_SHARED(In, s_std, Ops::kReads ? kWideWarps * kSmallStage : 1);
    PS_SHARED(In, s_stb, Ops::kReads ? kWideWarps * kSmallStage : 1);
    const int wslot = Ops::kReads ? static_cast<int>(threadIdx.x >> 5) * kSmallStage : 0;
    const int run = U * n;  // elements of one team's batch
    long long st_at[U];
    int st_lim[U];
    if constexpr (Ops::kReads) {
        if (blockDim.x > 32u * kWideWarps) __trap();  // contract: the stage holds 4 warps
PSP_UNROLL
        for (int j = 0; j < U; ++j) {
            const int x = lane + 32 * j;
            const int q = x / run;
            const int u = (x - q * run) / n;
            const int rr = x - q * run - u * n;
            const long long tm = warp * tpw + q;
            st_at[j] = 0;
            st_lim[j] = 0;
            if (q < tpw && tm < units) {
                const long long cq = tm % nchunks;
                const long long bq = tm / nchunks;
                st_at[j] = (bq * T + step_time<REV>(cq * C, T)) * n + u * tstride + rr;
                st_lim[j] = static_cast<int>(min_ll(C, T - cq * C)) - u;
            }
        }
    }
    const int rd0 = wslot + (slot_ok ? tiw : 0) * run + r;  // this lane's slot of step 0

    long long at_st = base;
    // C is the same for every team, so every lane of the warp runs the same iterations.
    for (long long s0 = 0; s0 < C; s0 += U) {
        if constexpr (Ops::kReads) {
            __syncwarp(PS_FULL_MASK);  // every lane is done with the previous batch
PSP_UNROLL
            for (int j = 0; j < U; ++j) {
                if (s0 < st_lim[j]) {
                    const long long at = st_at[j] + s0 * tstride;
                    const int x = wslot + lane + 32 * j;
                    s_stp[x] = perm[at];
                    s_std[x] = d[at];
                    s_stb[x] = b[at];
                }
            }
            __syncwarp(PS_FULL_MASK);
        }
        int pj[U];
        V dv[U], bv[U];
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
            const bool ld = s0 + u < len && slot_ok;
            const int x = rd0 + u * n;
            pj[u] = ld ? Ops::load_perm(s_stp, x, r, n) : r;
            dv[u] = ld ? Ops::load(s_std, x) : Ops::one();
            bv[u] = ld ? Ops::load(s_stb, x) : Ops::zero();
            if (ld) src.fix(bb, step_time<REV>(t0 + s0 + u, T), pj[u], dv[u], bv[u]);
        }
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
            const long long s = s0 + u;
            if (s < C) {  // uniform across the warp
                const bool step = s < len;
                const int src = lane0 + pj[u];
                if (REDUCE) {
                    const int gp = __shfl_sync(PS_FULL_MASK, ap, src);
                    const V gd = __shfl_sync(PS_FULL_MASK, ad, src);
                    const V gb = __shfl_sync(PS_FULL_MASK, ab, src);
                    if (step) Ops::combine_slot(gp, gd, gb, dv[u], bv[u], ap, ad, ab);
                } else {
                    const V gh = __shfl_sync(PS_FULL_MASK, hv, src);
                    if (step) {
                        hv = Ops::apply_slot(dv[u], gh, bv[u]);
                        if (h && slot_ok) h[at_st] = Ops::narrow(hv);
                    }
                }
                at_st += tstride;
            }
        }
    }
    if (!active || !slot_ok) return;  // no warp primitive follows
    if (REDUCE) {
        const long long k = (bb * M + c) * n + r;
        agg_p[k] = static_cast<unsigned char>(ap);
        agg_d[k] = ad;
        agg_b[k] = ab;
    } else if (hT && c == nchunks - 1) {
        hT[bb * n + r] = Ops::narrow(hv);
    }
}

// ---------------------------------------------------------------------------------------
// Wide kernels: one warp per unit, SPL slots per lane (slot l + 32k), gathers through a
// per-warp shared array. The array alternates between two banks from step to step, so one
// __syncwarp per step suffices: a bank is rewritten two steps later, after every lane has
// passed the intervening __syncwarp, i.e. finished reading it.
// ---------------------------------------------------------------------------------------
template <class Ops, int SPL, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void wide_rescan(const unsigned char* __restrict__ perm, const typename Ops::In* __restrict__ d,
                         const typename Ops::In* __restrict__ b, typename Ops::Out* __restrict__ h,
                         typename Ops::Out* __restrict__ hT, const typename Ops::V* __restrict__ carry,
                         const typename Ops::In* __restrict__ h0, int B, int T, int n, int C,
                         typename Ops::V* s_h, Src src = Src()) {
    using V = typename Ops::V;
    constexpr int U = 8 / SPL > 1 ? 8 / SPL : 1;
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long team = static_cast<long long>(blockIdx.x) * kWideWarps + wid;
    if (team >= static_cast<long long>(B) * nchunks) return;  // whole warp; no block barriers
    const long long c = team % nchunks;
    const long long bb = team / nchunks;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);  // the same for every lane: the loop is uniform
    const long long base = (bb * T + step_time<REV>(t0, T)) * n + lid;
    const long long tstride = REV ? -static_cast<long long>(n) : n;
    V* const bank0 = s_h + wid * kMaxN;
    V* const bank1 = s_h + (kWideWarps + wid) * kMaxN;

    V hv[SPL];
PSP_UNROLL
    for (int k = 0; k < SPL; ++k) {
        const int i = lid + 32 * k;
        hv[k] = Ops::zero();
        if (i < n) hv[k] = carry ? carry[(bb * nchunks + c) * n + i] : Ops::initial(h0, bb * n + i);
    }
    int bank = 0;
    for (long long s0 = 0; s0 < len; s0 += U) {
        int pj[U][SPL];
        V dv[U][SPL], bv[U][SPL];
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = lid + 32 * k;
                const long long s = s0 + u;
                const bool ld = s < len && i < n;
                const long long at = base + s * tstride + 32 * k;
                pj[u][k] = ld ? Ops::load_perm(perm, at, i, n) : 0;
                dv[u][k] = ld ? Ops::load(d, at) : Ops::one();
                bv[u][k] = ld ? Ops::load(b, at) : Ops::zero();
                if (ld) src.fix(bb, step_time<REV>(t0 + s, T), pj[u][k], dv[u][k], bv[u][k]);
            }
        }
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
            const long long s = s0 + u;
            if (s < len) {  // uniform across the warp
                V* const buf = bank ? bank1 : bank0;
PSP_UNROLL
                for (int k = 0; k < SPL; ++k)
                    if (lid + 32 * k < n) buf[lid + 32 * k] = hv[k];
#if PS_PD_DROP_BARRIER == 2
                if (!REV) __syncwarp(PS_FULL_MASK);  // planted race: reverse kernels only
#else
                __syncwarp(PS_FULL_MASK);
#endif
PSP_UNROLL
                for (int k = 0; k < SPL; ++k) {
                    if (lid + 32 * k < n) {
                        hv[k] = Ops::apply_slot(dv[u][k], buf[pj[u][k]], bv[u][k]);
                        if (h) h[base + s * tstride + 32 * k] = Ops::narrow(hv[k]);
                    }
                }
                bank ^= 1;
            }
        }
    }
    if (hT && c == nchunks - 1) {
PSP_UNROLL
        for (int k = 0; k < SPL; ++k)
            if (lid + 32 * k < n) hT[bb * n + lid + 32 * k] = Ops::narrow(hv[k]);
    }
}

template <class Ops, int SPL, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void wide_reduce(const unsigned char* __restrict__ perm, const typename Ops::In* __restrict__ d,
                         const typename Ops::In* __restrict__ b, unsigned char* __restrict__ agg_p,
                         typename Ops::V* __restrict__ agg_d, typename Ops::V* __restrict__ agg_b, int B, int T,
                         int n, int C, int M, typename Ops::V* s_d, typename Ops::V* s_b, unsigned char* s_p,
                         Src src = Src()) {
    using V = typename Ops::V;
    constexpr int U = 8 / SPL > 1 ? 8 / SPL : 1;
    const int wid = threadIdx.x >> 5;
    const int lid = threadIdx.x & 31;
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long team = static_cast<long long>(blockIdx.x) * kWideWarps + wid;
    if (team >= static_cast<long long>(B) * nchunks) return;  // whole warp; no block barriers
    const long long c = team % nchunks;
    const long long bb = team / nchunks;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);
    const long long base = (bb * T + step_time<REV>(t0, T)) * n + lid;
    const long long tstride = REV ? -static_cast<long long>(n) : n;

    int ap[SPL];
    V ad[SPL], ab[SPL];
PSP_UNROLL
    for (int k = 0; k < SPL; ++k) {
        ap[k] = lid + 32 * k;
        ad[k] = Ops::one();
        ab[k] = Ops::zero();
    }
    int bank = 0;
    for (long long s0 = 0; s0 < len; s0 += U) {
        int pj[U][SPL];
        V dv[U][SPL], bv[U][SPL];
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = lid + 32 * k;
                const long long s = s0 + u;
                const bool ld = s < len && i < n;
                const long long at = base + s * tstride + 32 * k;
                pj[u][k] = ld ? Ops::load_perm(perm, at, i, n) : 0;
                dv[u][k] = ld ? Ops::load(d, at) : Ops::one();
                bv[u][k] = ld ? Ops::load(b, at) : Ops::zero();
                if (ld) src.fix(bb, step_time<REV>(t0 + s, T), pj[u][k], dv[u][k], bv[u][k]);
            }
        }
PSP_UNROLL
        for (int u = 0; u < U; ++u) {
            const long long s = s0 + u;
            if (s < len) {  // uniform across the warp
                const int off = (bank ? kWideWarps + wid : wid) * kMaxN;
PSP_UNROLL
                for (int k = 0; k < SPL; ++k) {
                    const int i = lid + 32 * k;
                    if (i < n) {
                        s_p[off + i] = static_cast<unsigned char>(ap[k]);
                        s_d[off + i] = ad[k];
                        s_b[off + i] = ab[k];
                    }
                }
                __syncwarp(PS_FULL_MASK);
PSP_UNROLL
                for (int k = 0; k < SPL; ++k) {
                    if (lid + 32 * k < n) {
                        const int j = off + pj[u][k];
                        Ops::combine_slot(s_p[j], s_d[j], s_b[j], dv[u][k], bv[u][k], ap[k], ad[k], ab[k]);
                    }
                }
                bank ^= 1;
            }
        }
    }
PSP_UNROLL
    for (int k = 0; k < SPL; ++k) {
        const int i = lid + 32 * k;
        if (i < n) {
            const long long at = (bb * M + c) * n + i;
            agg_p[at] = static_cast<unsigned char>(ap[k]);
            agg_d[at] = ad[k];
            agg_b[at] = ab[k];
        }
    }
}

// Slots per lane of the wide kernels for n (2, 4 or 8), 0 if n is out of range.
PSP_DEV int wide_spl(int n) { return n < 1 ? 0 : n <= 64 ? 2 : n <= 128 ? 4 : n <= kMaxN ? 8 : 0; }

template <class Ops, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void wide_rescan_any(const unsigned char* perm, const typename Ops::In* d, const typename Ops::In* b,
                             typename Ops::Out* h, typename Ops::Out* hT, const typename Ops::V* carry,
                             const typename Ops::In* h0, int B, int T, int n, int C, Src src = Src()) {
    using V = typename Ops::V;
    // Declared once here, not per SPL instantiation (static shared memory adds up).
    PS_SHARED(V, s_h, 2 * kWideWarps * kMaxN);
    if (blockDim.x != 32 * kWideWarps) __trap();  // contract: the shared arrays hold 4 warps
    switch (wide_spl(n)) {
        case 2: wide_rescan<Ops, 2, REV, Src>(perm, d, b, h, hT, carry, h0, B, T, n, C, s_h, src); break;
        case 4: wide_rescan<Ops, 4, REV, Src>(perm, d, b, h, hT, carry, h0, B, T, n, C, s_h, src); break;
        case 8: wide_rescan<Ops, 8, REV, Src>(perm, d, b, h, hT, carry, h0, B, T, n, C, s_h, src); break;
        default: __trap();
    }
}

template <class Ops, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void wide_reduce_any(const unsigned char* perm, const typename Ops::In* d, const typename Ops::In* b,
                             unsigned char* agg_p, typename Ops::V* agg_d, typename Ops::V* agg_b, int B, int T,
                             int n, int C, int M, Src src = Src()) {
    using V = typename Ops::V;
    PS_SHARED(V, s_d, 2 * kWideWarps * kMaxN);
    PS_SHARED(V, s_b, 2 * kWideWarps * kMaxN);
    PS_SHARED(unsigned char, s_p, 2 * kWideWarps * kMaxN);
    if (blockDim.x != 32 * kWideWarps) __trap();
    switch (wide_spl(n)) {
        case 2:
            wide_reduce<Ops, 2, REV, Src>(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M, s_d, s_b, s_p, src);
            break;
        case 4:
            wide_reduce<Ops, 4, REV, Src>(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M, s_d, s_b, s_p, src);
            break;
        case 8:
            wide_reduce<Ops, 8, REV, Src>(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M, s_d, s_b, s_p, src);
            break;
        default: __trap();
    }
}

// ---------------------------------------------------------------------------------------
// Phase 2: Blelloch exclusive scans of PD elements in place in global memory, by one
// block. Plain loads and stores (no __ldg, no const __restrict__): the block rewrites what
// it reads, and __syncthreads / __syncwarp order those accesses. Teams of G = min(32,
// next_pow2(n)) lanes each own slots r + G*k of one element.
// ---------------------------------------------------------------------------------------

// Exclusive scan of the m elements (m a power of two) at P/Dd/Bb, element k at k*n. The
// first `valid` are real; the others are set to the identity here. If tot_p is non-null,
// team 0 writes the total of all m elements there (elements of n slots) before clearing
// the root. Every thread of the block must call it (it has barriers).
template <class Ops>
PSP_DEV void blelloch_global(unsigned char* P, typename Ops::V* Dd, typename Ops::V* Bb, long long m,
                             long long valid, int n, unsigned char* tot_p, typename Ops::V* tot_d,
                             typename Ops::V* tot_b) {
    using V = typename Ops::V;
    const int G = small_team(n < 32 ? n : 32);
    const int spl = (n + G - 1) / G;
    const int tid = threadIdx.x;
    const int r = tid % G;
    const int lid = tid & 31;
    const int wid = tid >> 5;
    const int tpw = 32 / G;  // teams per warp
    const int nwarps = blockDim.x >> 5;
    const long long team_in_warp = lid / G;
    const long long stride = static_cast<long long>(nwarps) * tpw;

    // Identity padding past the last real element.
    for (long long x = tid; x < (m - valid) * n; x += blockDim.x) {
        const long long at = valid * n + x;
        P[at] = static_cast<unsigned char>(x % n);
        Dd[at] = Ops::one();
        Bb[at] = Ops::zero();
    }

    // Up-sweep: node (2q+2)*off - 1 <- combine(node (2q+1)*off - 1, itself). The output
    // aliases only e2, whose slot i is read and written by the same lane.
    for (long long off = 1; off < m; off <<= 1) {
        __syncthreads();
        const long long pairs = m / (2 * off);
        for (long long q = static_cast<long long>(wid) * tpw + team_in_warp; q < pairs; q += stride) {
            const long long ai = (off * (2 * q + 1) - 1) * n;
            const long long bi = (off * (2 * q + 2) - 1) * n;
            for (int k = 0; k < spl; ++k) {
                const int i = r + G * k;
                if (i < n) {
                    const int j = Ops::load_perm(P, bi + i, i, n);
                    int p;
                    V dd, bv;
                    Ops::combine_slot(P[ai + j], Dd[ai + j], Bb[ai + j], Dd[bi + i], Bb[bi + i], p, dd, bv);
                    P[bi + i] = static_cast<unsigned char>(p);
                    Dd[bi + i] = dd;
                    Bb[bi + i] = bv;
                }
            }
        }
    }
    __syncthreads();
    if (tid < G) {
        for (int k = 0; k < spl; ++k) {
            const int i = r + G * k;
            if (i < n) {
                const long long at = (m - 1) * n + i;
                if (tot_p) {
                    tot_p[i] = P[at];
                    tot_d[i] = Dd[at];
                    tot_b[i] = Bb[at];
                }
                P[at] = static_cast<unsigned char>(i);
                Dd[at] = Ops::one();
                Bb[at] = Ops::zero();
            }
        }
    }

    // Down-sweep: left = node ai; node ai <- node bi; node bi <- combine(node bi, left).
    // The combine gathers from node bi, which the team overwrites: read everything first,
    // __syncwarp, then write. Trip counts are uniform per warp (q steps by whole warps).
    for (long long off = m / 2; off >= 1; off >>= 1) {
        __syncthreads();
        const long long pairs = m / (2 * off);
        for (long long q0 = static_cast<long long>(wid) * tpw; q0 < pairs; q0 += stride) {
            const long long q = q0 + team_in_warp;
            const bool on = q < pairs;
            const long long ai = (off * (2 * q + 1) - 1) * n;
            const long long bi = (off * (2 * q + 2) - 1) * n;
            int cp[kMaxSlots], np[kMaxSlots];
            V cd[kMaxSlots], cb[kMaxSlots], nd[kMaxSlots], nb[kMaxSlots];
PSP_UNROLL
            for (int k = 0; k < kMaxSlots; ++k) {
                const int i = r + G * k;
                cp[k] = np[k] = 0;
                cd[k] = cb[k] = nd[k] = nb[k] = Ops::zero();
                if (on && k < spl && i < n) {
                    cp[k] = P[bi + i];
                    cd[k] = Dd[bi + i];
                    cb[k] = Bb[bi + i];
                    const int j = Ops::load_perm(P, ai + i, i, n);
                    Ops::combine_slot(P[bi + j], Dd[bi + j], Bb[bi + j], Dd[ai + i], Bb[ai + i], np[k], nd[k],
                                      nb[k]);
                }
            }
            __syncwarp(PS_FULL_MASK);
PSP_UNROLL
            for (int k = 0; k < kMaxSlots; ++k) {
                const int i = r + G * k;
                if (on && k < spl && i < n) {
                    P[ai + i] = static_cast<unsigned char>(cp[k]);
                    Dd[ai + i] = cd[k];
                    Bb[ai + i] = cb[k];
                    P[bi + i] = static_cast<unsigned char>(np[k]);
                    Dd[bi + i] = nd[k];
                    Bb[bi + i] = nb[k];
                }
            }
        }
    }
    __syncthreads();
}

// K4: one block per problem; exclusive scan of its NC aggregates (tree width M), then
// carry_c = apply(prefix_c, h0).
template <class Ops>
PSP_DEV void scan_chunks(unsigned char* agg_p, typename Ops::V* agg_d, typename Ops::V* agg_b,
                         typename Ops::V* carry, const typename Ops::In* h0, int B, int n, int NC, int M) {
    if (n < 1 || n > kMaxN || NC < 1 || M < NC || (M & (M - 1)) != 0 || (blockDim.x & 31u)) __trap();
    const long long bb = blockIdx.x;
    if (bb >= B) return;  // whole block
    const long long base = bb * M * n;
    unsigned char* const P = agg_p + base;
    typename Ops::V* const Dd = agg_d + base;
    typename Ops::V* const Bb = agg_b + base;
    blelloch_global<Ops>(P, Dd, Bb, M, NC, n, nullptr, nullptr, nullptr);

    const int G = small_team(n < 32 ? n : 32);
    const int spl = (n + G - 1) / G;
    const int r = threadIdx.x % G;
    const long long teams = static_cast<long long>(blockDim.x) / G;
    for (long long c = threadIdx.x / G; c < NC; c += teams) {
        for (int k = 0; k < spl; ++k) {
            const int i = r + G * k;
            if (i < n) {
                const long long at = c * n + i;
                const int j = Ops::load_perm(P, at, i, n);
                carry[(bb * NC + c) * n + i] = Ops::apply_slot(Dd[at], Ops::initial(h0, bb * n + j), Bb[at]);
            }
        }
    }
}

// K5: one block per (problem, tile of TL aggregates): in-place exclusive scan inside the
// tile, and the tile's total to tile_*[(bb*MT + j)*n ..].
template <class Ops>
PSP_DEV void scan_tiles(unsigned char* agg_p, typename Ops::V* agg_d, typename Ops::V* agg_b,
                        unsigned char* tile_p, typename Ops::V* tile_d, typename Ops::V* tile_b, int B, int n,
                        int NC, int M, int TL, int MT) {
    const long long ntl = (static_cast<long long>(NC) + TL - 1) / TL;
    if (n < 1 || n > kMaxN || TL < 2 || (TL & (TL - 1)) != 0 || M % TL != 0 || ntl * TL > M || MT < ntl ||
        (blockDim.x & 31u))
        __trap();
    const long long bid = blockIdx.x;
    if (bid >= static_cast<long long>(B) * ntl) return;  // whole block
    const long long bb = bid / ntl;
    const long long j = bid % ntl;
    const long long first = j * TL;
    const long long base = (bb * M + first) * n;
    const long long tot = (bb * MT + j) * n;
    const long long valid = min_ll(TL, NC - first);
    blelloch_global<Ops>(agg_p + base, agg_d + base, agg_b + base, TL, valid, n, tile_p + tot, tile_d + tot,
                         tile_b + tot);
}

// K6: one thread per carry slot: carry_c = apply(in-tile prefix_c, tile_carry[c / TL]).
template <class Ops>
PSP_DEV void scan_apply(const unsigned char* agg_p, const typename Ops::V* agg_d, const typename Ops::V* agg_b,
                        const typename Ops::V* tile_carry, typename Ops::V* carry, int B, int n, int NC, int M,
                        int TL) {
    const long long x = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (x >= static_cast<long long>(B) * NC * n) return;
    const long long ntl = (static_cast<long long>(NC) + TL - 1) / TL;
    const int i = static_cast<int>(x % n);
    const long long c = (x / n) % NC;
    const long long bb = x / (static_cast<long long>(n) * NC);
    const long long at = (bb * M + c) * n + i;
    const int j = Ops::load_perm(agg_p, at, i, n);
    carry[x] = Ops::apply_slot(agg_d[at], tile_carry[(bb * ntl + c / TL) * n + j], agg_b[at]);
}

// ---------------------------------------------------------------------------------------
// P4: single pass with a decoupled look-back (the protocol of diagonal.cuh, psd::lb_*).
//
// A chain is one problem bb; block `id` (a ticket) owns chunk c = id / B of problem
// id % B. The block's lanes form teams as in the other kernels (n <= 32: n lanes, floor(32/n)
// teams per warp, shuffle gathers; n > 32: a warp, SPL slots per lane, gathers through a
// per-warp shared buffer); team g holds steps [g*K, (g+1)*K) of the chunk in registers
// (K*SPL = 16 step-slots per lane), so C = (blockDim.x / 32) * teams per warp * K. Phases:
//   1. load the chunk; each team folds its K steps from the identity (aggregate a_g);
//   2. a_g to shared memory; team g >= 1 folds a_{g-1} .. a_0 backwards (gathers from
//      shared memory only: acc = combine(a_q, acc)) into its exclusive prefix W_g, team 0
//      folds a_{nt-1} .. a_0 into the chunk total;
//   3. look-back: publish the total (c > 0); warp 0 polls the 32-chunk window
//      (psd::lb_window); the lp aggregates in front of the nearest prefix are loaded by the
//      whole block into shared memory (S = min(32, kLbBuf / n) at a time) and team 0
//      folds them in order (slot q precedes slot q - 1), then applies them to the prefix;
//      the carry-in hin goes to shared memory; team 0 publishes apply(total, hin);
//   4. team g's carry-in is apply(W_g, hin) (hin for g = 0); it rescans from registers.
// Payload per chunk: aggregate u8[n] + 2 V[n], prefix V[n] (9n + 4n bytes for f32).
// ---------------------------------------------------------------------------------------

// Step-slots (steps x slots) a look-back lane holds in registers.
constexpr int kLbWork = 16;
// Most warps of a look-back block.
constexpr int kLbMaxWarps = 8;
// Values per array of the block's shared union buffer (per-warp gather buffers, then the
// team aggregates, then a window of predecessors' aggregates): 8 warps x 256 slots.
constexpr int kLbBuf = kLbMaxWarps * kMaxN;

// Slots per lane of the look-back kernel for n: 1 (n <= 32), else as the wide kernels.
PSP_DEV int lb_spl(int n) { return n >= 1 && n <= 32 ? 1 : wide_spl(n); }
// Steps per team K for SPL slots per lane: 16 step-slots per lane, but 1 step for SPL = 8
// (n > 128: two steps of 8 slots do not fit 128 registers without spills).
PS_HD constexpr int lb_steps(int spl) { return spl >= 8 ? 1 : kLbWork / spl; }

// The look-back's stage for n <= 32 (SPL = 1): the block's chunk of perm, d and b (C * n
// elements each, at most kLbStage) copied with stage_block, each array with 16 bytes of
// slack for its misalignment. f64 stages b after perm and d are read (the three would pass
// the 48 KB of static shared memory). The stage is free before the block first uses its
// union buffer (phase 2), so the two share one array.
PS_HD constexpr int round16(int x) { return (x + 15) / 16 * 16; }
template <class Ops>
struct LbStage {
    using In = typename Ops::In;
    static constexpr bool kSplit = sizeof(In) > 4;
    static constexpr int kPermBytes = round16(kLbStage + 16);
    static constexpr int kValBytes = round16(kLbStage * static_cast<int>(sizeof(In)) + 16);
    static constexpr int kBytes = kPermBytes + (kSplit ? 1 : 2) * kValBytes;
};

template <class Ops, int SPL, class Lb, int kBuf, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void lookback_spl(const unsigned char* __restrict__ perm, const typename Ops::In* __restrict__ d,
                          const typename Ops::In* __restrict__ b, typename Ops::Out* __restrict__ h,
                          typename Ops::Out* __restrict__ hT, const typename Ops::In* __restrict__ h0,
                          unsigned* __restrict__ status, unsigned char* __restrict__ lagg_p,
                          typename Ops::V* __restrict__ lagg_d, typename Ops::V* __restrict__ lagg_b,
                          typename Ops::V* __restrict__ lpre, int B, int T, int n, int C, int prefix_every,
                          long long id, unsigned char* s_p, typename Ops::V* s_d, typename Ops::V* s_b,
                          typename Ops::V* s_h, typename Ops::V* s_pv, int& s_lp, unsigned char* s_stage,
                          Src src = Src()) {
    using V = typename Ops::V;
    constexpr int K = lb_steps(SPL);
    const int G = SPL == 1 ? n : 32;  // lanes per team
    const int tpw = 32 / G;           // teams per warp
    const int lid = threadIdx.x & 31;
    const int wid = threadIdx.x >> 5;
    const int nt = static_cast<int>(blockDim.x >> 5) * tpw;  // teams per block
    const int tiw = lid / G;                                  // tpw for the spare lanes
    const bool real = tiw < tpw;
    const int r = real ? lid - tiw * G : 0;
    const int lane0 = real ? tiw * G : lid;  // shuffle source of slot 0 (spares: self)
    const int g = wid * tpw + (real ? tiw : 0);
    const bool lead = wid == 0 && tiw == 0;  // team 0
    const long long chains = B;
    const long long c = id / chains;
    const long long bb = id % chains;
    const long long ts = c * C + static_cast<long long>(g) * K;
    const long long len = real && ts < T ? min_ll(K, T - ts) : 0;  // real steps of the team
    const long long base = (bb * T + step_time<REV>(ts, T)) * n;
    const long long tstride = REV ? -static_cast<long long>(n) : n;  // to the next step
    unsigned char* const wp = s_p + wid * 32 * SPL;  // this warp's gather buffers
    V* const wd = s_d + wid * 32 * SPL;
    V* const wb = s_b + wid * 32 * SPL;

    // 1. The chunk into registers, and the team's aggregate.
    // Permutation bytes packed four to a register (byte u*SPL + k of pw).
    unsigned pw[(K * SPL + 3) / 4];
    V dv[K][SPL], bv[K][SPL];
PSP_UNROLL
    for (int w = 0; w < (K * SPL + 3) / 4; ++w) pw[w] = 0u;
    auto pj = [&](int u, int k) -> int {
        const int x = u * SPL + k;
        return static_cast<int>((pw[x >> 2] >> (8 * (x & 3))) & 0xffu);
    };
    if constexpr (SPL == 1 && Ops::kReads) {
        // n <= 32: the block's chunk (steps [c C, s_hi): one run of memory, reversed step
        // order when REV) through shared memory, 16-byte words (stage_block); lane r of
        // team g then takes slot r of its K steps from there.
        using In = typename Ops::In;
        using St = LbStage<Ops>;
        const long long s_lo = c * C;
        const long long s_hi = min_ll(s_lo + C, T);
        const long long lo = (bb * T + (REV ? T - s_hi : s_lo)) * n;
        const int cnt = static_cast<int>((s_hi - s_lo) * n);
        unsigned char* const sp = s_stage;
        In* const sd = reinterpret_cast<In*>(s_stage + St::kPermBytes);
        In* const sb = St::kSplit ? sd : reinterpret_cast<In*>(s_stage + St::kPermBytes + St::kValBytes);
        const int ap0 = stage_block(perm, lo, cnt, sp);
        const int ad0 = stage_block(d, lo, cnt, sd);
        int ab0 = St::kSplit ? 0 : stage_block(b, lo, cnt, sb);
        __syncthreads();
        // Slot r of the team's first step, relative to the range (unused when len == 0).
        const int rel0 = static_cast<int>((REV ? s_hi - 1 - ts : ts - s_lo) * n) + r;
        const int rstep = REV ? -n : n;
PSP_UNROLL
        for (int u = 0; u < K; ++u) {
            const bool ok = u < len;
            const int rel = rel0 + u * rstep;
            const int j = ok ? Ops::load_perm(sp, ap0 + rel, r, n) : r;
            pw[u >> 2] |= static_cast<unsigned>(j) << (8 * (u & 3));
            dv[u][0] = ok ? Ops::load(sd, ad0 + rel) : Ops::one();
            if (!St::kSplit) bv[u][0] = ok ? Ops::load(sb, ab0 + rel) : Ops::zero();
        }
        if constexpr (St::kSplit) {
            __syncthreads();  // every lane has read its d: b replaces it
            ab0 = stage_block(b, lo, cnt, sb);
            __syncthreads();
PSP_UNROLL
            for (int u = 0; u < K; ++u)
                bv[u][0] = u < len ? Ops::load(sb, ab0 + rel0 + u * rstep) : Ops::zero();
        }
PSP_UNROLL
        for (int u = 0; u < K; ++u)
            if (u < len) src.fix(bb, step_time<REV>(ts + u, T), pj(u, 0), dv[u][0], bv[u][0]);
    } else {
        long long at_ld = base + r;  // slot r of step u (slot r + 32k for SPL > 1: G = 32)
PSP_UNROLL
        for (int u = 0; u < K; ++u) {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = r + G * k;
                const bool ok = u < len && i < n;
                const long long at = at_ld + 32 * k;
                const int j = ok ? Ops::load_perm(perm, at, i, n) : (i < n ? i : 0);
                const int x = u * SPL + k;
                pw[x >> 2] |= static_cast<unsigned>(j) << (8 * (x & 3));
                dv[u][k] = ok ? Ops::load(d, at) : Ops::one();
                bv[u][k] = ok ? Ops::load(b, at) : Ops::zero();
                if (ok) src.fix(bb, step_time<REV>(ts + u, T), j, dv[u][k], bv[u][k]);
            }
            at_ld += tstride;
        }
    }
    int ap[SPL];
    V ad[SPL], ab[SPL];
PSP_UNROLL
    for (int k = 0; k < SPL; ++k) {
        ap[k] = r + G * k;
        ad[k] = Ops::one();
        ab[k] = Ops::zero();
    }
PSP_UNROLL
    for (int u = 0; u < K; ++u) {
        if constexpr (SPL == 1) {
            const int src = lane0 + pj(u, 0);
            const int gp = __shfl_sync(PS_FULL_MASK, ap[0], src);
            const V gd = __shfl_sync(PS_FULL_MASK, ad[0], src);
            const V gb = __shfl_sync(PS_FULL_MASK, ab[0], src);
            if (u < len) Ops::combine_slot(gp, gd, gb, dv[u][0], bv[u][0], ap[0], ad[0], ab[0]);
        } else {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = r + G * k;
                if (i < n) {
                    wp[i] = static_cast<unsigned char>(ap[k]);
                    wd[i] = ad[k];
                    wb[i] = ab[k];
                }
            }
            __syncwarp(PS_FULL_MASK);
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int j = pj(u, k);
                if (u < len && r + G * k < n) Ops::combine_slot(wp[j], wd[j], wb[j], dv[u][k], bv[u][k], ap[k], ad[k], ab[k]);
            }
            __syncwarp(PS_FULL_MASK);
        }
    }

    // 2. Team aggregates in shared memory; W_g (teams g >= 1) or the chunk total (team 0),
    // both in (xp, xd, xb).
    __syncthreads();  // every warp is done with its gather buffer
    if (real) {
PSP_UNROLL
        for (int k = 0; k < SPL; ++k) {
            const int i = r + G * k;
            if (i < n) {
                s_p[g * n + i] = static_cast<unsigned char>(ap[k]);
                s_d[g * n + i] = ad[k];
                s_b[g * n + i] = ab[k];
            }
        }
    }
    __syncthreads();
    int xp[SPL];
    V xd[SPL], xb[SPL];
    {
        const int top = g == 0 ? nt - 1 : g - 1;  // the latest aggregate of the fold
PSP_UNROLL
        for (int k = 0; k < SPL; ++k) {
            const int i = r + G * k;
            const bool on = real && i < n;
            xp[k] = on ? s_p[top * n + i] : 0;
            xd[k] = on ? s_d[top * n + i] : Ops::one();
            xb[k] = on ? s_b[top * n + i] : Ops::zero();
        }
        for (int q = top - 1; q >= 0; --q) {
            if (!real) break;
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                if (r + G * k < n) {
                    const int j = q * n + xp[k];  // combine(a_q, x): gather from a_q
                    Ops::combine_slot(s_p[j], s_d[j], s_b[j], xd[k], xb[k], xp[k], xd[k], xb[k]);
                }
            }
        }
    }
    __syncthreads();  // the union buffer is free again

    // 3. Look-back: the carry-in into s_h.
    const long long me = c * chains + bb;
    const bool publish = !psd::lb_withheld<Lb>(bb, c);
    if (c == 0) {
        if (lead) {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = r + G * k;
                if (i < n) s_h[i] = Ops::initial(h0, bb * n + i);
            }
        }
    } else {
        if (wid == 0 && publish) {
            if (lead) {
PSP_UNROLL
                for (int k = 0; k < SPL; ++k) {
                    const int i = r + G * k;
                    if (i < n) {
                        __stcg(lagg_p + me * n + i, static_cast<unsigned char>(xp[k]));
                        Ops::store_cg(lagg_d + me * n + i, xd[k]);
                        Ops::store_cg(lagg_b + me * n + i, xb[k]);
                    }
                }
            }
            psd::lb_publish(status + me, psd::kLbAggregate);
        }
        if constexpr (Ops::kChainOnly) {
            if (wid == 0) {
                psd::lb_wait<Lb>(status + me - chains, psd::kLbPrefix);
                if (lead) {
PSP_UNROLL
                    for (int k = 0; k < SPL; ++k) {
                        const int i = r + G * k;
                        if (i < n) s_h[i] = Ops::load_cg(lpre + (me - chains) * n + i);
                    }
                }
            }
        } else {
            const int S = kBuf / n < 32 ? kBuf / n : 32;  // window slots per pass
            int yp[SPL];
            V yd[SPL], yb[SPL];
            bool have = false;
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                yp[k] = 0;
                yd[k] = Ops::one();
                yb[k] = Ops::zero();
            }
            for (long long cj = c - 1;; cj -= 32) {
                if (wid == 0) {
                    const int lp = psd::lb_window<Lb>(status, cj, bb, chains);
                    if (lid == 0) s_lp = lp;
                }
                // Also orders warp 0's acquires (lb_wait's polls) before every warp's loads.
                __syncthreads();
                const int lp = s_lp;
                for (int q0 = 0; q0 < lp; q0 += S) {
                    const int cnt = lp - q0 < S ? lp - q0 : S;
                    for (int x = threadIdx.x; x < cnt * n; x += blockDim.x) {
                        const int q = x / n;
                        const long long at = ((cj - q0 - q) * chains + bb) * n + (x - q * n);
                        s_p[x] = __ldcg(lagg_p + at);
                        s_d[x] = Ops::load_cg(lagg_d + at);
                        s_b[x] = Ops::load_cg(lagg_b + at);
                    }
                    __syncthreads();
                    if (lead) {
                        for (int q0 = 0; q0 < cnt; ++q0) {  // slot q precedes slot q - 1 in time
                            const int q = psd::lb_plant(1) ? cnt - 1 - q0 : q0;
PSP_UNROLL
                            for (int k = 0; k < SPL; ++k) {
                                const int i = r + G * k;
                                if (i < n) {
                                    if (have) {
                                        const int j = q * n + yp[k];
                                        Ops::combine_slot(s_p[j], s_d[j], s_b[j], yd[k], yb[k], yp[k], yd[k], yb[k]);
                                    } else {
                                        yp[k] = s_p[q * n + i];
                                        yd[k] = s_d[q * n + i];
                                        yb[k] = s_b[q * n + i];
                                    }
                                }
                            }
                            have = true;
                        }
                    }
                    __syncthreads();
                }
                if (lp < 32) {
                    const long long at = ((cj - lp) * chains + bb) * n;
                    for (int x = threadIdx.x; x < n; x += blockDim.x) s_pv[x] = Ops::load_cg(lpre + at + x);
                    __syncthreads();
                    if (lead) {
PSP_UNROLL
                        for (int k = 0; k < SPL; ++k) {
                            const int i = r + G * k;
                            const bool fold = have && !psd::lb_plant(2);
                            if (i < n) s_h[i] = fold ? Ops::apply_slot(yd[k], s_pv[yp[k]], yb[k]) : s_pv[i];
                        }
                    }
                    break;
                }
            }
        }
    }
    if (!psd::lb_plant(3)) __syncthreads();  // s_h is complete
    if (wid == 0 && publish && (Ops::kChainOnly || c % prefix_every == 0)) {
        if (lead) {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = r + G * k;
                if (i < n) Ops::store_cg(lpre + me * n + i, Ops::apply_slot(xd[k], s_h[xp[k]], xb[k]));
            }
        }
        psd::lb_publish(status + me, psd::kLbPrefix);
    }

    // 4. The team's carry-in and the rescan from registers.
    V hv[SPL];
PSP_UNROLL
    for (int k = 0; k < SPL; ++k) {
        const int i = r + G * k;
        hv[k] = Ops::zero();
        if (real && i < n) hv[k] = g == 0 ? s_h[i] : Ops::apply_slot(xd[k], s_h[xp[k]], xb[k]);
    }
    // A running pointer (not 16 precomputed 64-bit addresses kept from the loads).
    typename Ops::Out* hp = h ? h + base + r : nullptr;
PSP_UNROLL
    for (int u = 0; u < K; ++u) {
        if constexpr (SPL == 1) {
            const V gh = __shfl_sync(PS_FULL_MASK, hv[0], lane0 + pj(u, 0));
            if (u < len) {
                hv[0] = Ops::apply_slot(dv[u][0], gh, bv[u][0]);
                if (hp) hp[0] = Ops::narrow(hv[0]);
            }
        } else {
PSP_UNROLL
            for (int k = 0; k < SPL; ++k)
                if (r + G * k < n) wd[r + G * k] = hv[k];
            __syncwarp(PS_FULL_MASK);
PSP_UNROLL
            for (int k = 0; k < SPL; ++k) {
                const int i = r + G * k;
                if (u < len && i < n) {
                    hv[k] = Ops::apply_slot(dv[u][k], wd[pj(u, k)], bv[u][k]);
                    if (hp) hp[32 * k] = Ops::narrow(hv[k]);
                }
            }
            __syncwarp(PS_FULL_MASK);
        }
        if (hp) hp += tstride;
    }
    if (hT && len > 0 && ts + len == T) {
PSP_UNROLL
        for (int k = 0; k < SPL; ++k) {
            const int i = r + G * k;
            if (i < n) hT[bb * n + i] = Ops::narrow(hv[k]);
        }
    }
}

// K7: the look-back kernel for SPL slots per lane (one kernel per SPL: together they
// would take the register count of the largest); checks the contract, takes the ticket.
template <class Ops, int SPL, class Lb = psd::LbProduction, bool REV = false, class Src = PdPlainSteps<Ops>>
PSP_DEV void lookback(const unsigned char* perm, const typename Ops::In* d, const typename Ops::In* b,
                      typename Ops::Out* h, typename Ops::Out* hT, const typename Ops::In* h0, unsigned* status,
                      unsigned char* lagg_p, typename Ops::V* lagg_d, typename Ops::V* lagg_b, typename Ops::V* lpre,
                      int B, int T, int n, int C, int prefix_every, Src src = Src()) {
    using V = typename Ops::V;
    // n <= 32: no gather buffers, team aggregates and a 32-chunk window fit 32 * 32 slots.
    constexpr int kBuf = SPL == 1 ? 32 * 32 : kLbBuf;
    // The union buffer (s_d, s_b, s_p) and, for n <= 32, the stage (LbStage) in one array.
    constexpr int kUnion = kBuf * 2 * static_cast<int>(sizeof(V)) + kBuf;
    constexpr int kStageBytes = SPL == 1 && Ops::kReads ? LbStage<Ops>::kBytes : 0;
    constexpr int kRaw = (kUnion > kStageBytes ? kUnion : kStageBytes) + 15;
    PS_SHARED(uint4, s_raw, kRaw / 16);
    unsigned char* const s_stage = reinterpret_cast<unsigned char*>(s_raw);
    V* const s_d = reinterpret_cast<V*>(s_stage);
    V* const s_b = s_d + kBuf;
    unsigned char* const s_p = reinterpret_cast<unsigned char*>(s_b + kBuf);
    PS_SHARED(V, s_h, SPL == 1 ? 32 : kMaxN);
    PS_SHARED(V, s_pv, SPL == 1 ? 32 : kMaxN);
    PS_SHARED_VAR(int, s_lp);
    if (lb_spl(n) != SPL || (blockDim.x & 31u) != 0 || blockDim.x > 32u * kLbMaxWarps || prefix_every < 1 ||
        static_cast<long long>(blockDim.x >> 5) * (SPL == 1 ? 32 / n : 1) * lb_steps(SPL) != C)
        __trap();
    const long long chains = B;
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long id = psd::lb_ticket(status + chains * nchunks);
    // A grid larger than the contract's: the surplus tickets own no chunk (uniform per block).
    if (id >= chains * nchunks) return;
    lookback_spl<Ops, SPL, Lb, kBuf, REV, Src>(perm, d, b, h, hT, h0, status, lagg_p, lagg_d, lagg_b, lpre, B, T, n,
                                              C, prefix_every, id, s_p, s_d, s_b, s_h, s_pv, s_lp, s_stage, src);
}

using OpsF32 = PdOps<float, float>;
using OpsF64 = PdOps<double, double>;
using OpsF16 = PdOps<__half, float>;
using OpsBF16 = PdOps<__nv_bfloat16, float>;
using OpsDepth = PdDepthOps;

}  // namespace psp

// varlen_perm.cu includes this file for its templates only.
#ifndef PSP_TEMPLATES_ONLY

// ---------------------------------------------------------------------------------------
// extern "C" instantiations: nine kernels per data type.
// ---------------------------------------------------------------------------------------

#define PSP_KERNELS(SFX, OPS)                                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_reduce_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,           \
                              const OPS::In* __restrict__ b, unsigned char* __restrict__ agg_p,                \
                              OPS::V* __restrict__ agg_d, OPS::V* __restrict__ agg_b, int B, int T, int n,     \
                              int C, int M) {                                                                  \
        psp::small_chunk<OPS, true>(perm, d, b, nullptr, nullptr, nullptr, nullptr, agg_p, agg_d, agg_b, B, T, \
                                    n, C, M);                                                                  \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_reduce_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_rescan_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,           \
                              const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                         \
                              OPS::Out* __restrict__ hT, const OPS::V* __restrict__ carry,                     \
                              const OPS::In* __restrict__ h0, int B, int T, int n, int C) {                    \
        psp::small_chunk<OPS, false>(perm, d, b, h, hT, carry, h0, nullptr, nullptr, nullptr, B, T, n, C, 1);  \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_rescan_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_sequential_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,       \
                                  const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                     \
                                  OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B, int T,     \
                                  int n) {                                                                     \
        psp::small_chunk<OPS, false>(perm, d, b, h, hT, nullptr, h0, nullptr, nullptr, nullptr, B, T, n, T,    \
                                     1);                                                                       \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_sequential_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_reduce_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,            \
                             const OPS::In* __restrict__ b, unsigned char* __restrict__ agg_p,                 \
                             OPS::V* __restrict__ agg_d, OPS::V* __restrict__ agg_b, int B, int T, int n,      \
                             int C, int M) {                                                                   \
        psp::wide_reduce_any<OPS>(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M);                             \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_reduce_##SFX);                                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_rescan_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,            \
                             const OPS::In* __restrict__ b, OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT, \
                             const OPS::V* __restrict__ carry, const OPS::In* __restrict__ h0, int B, int T,   \
                             int n, int C) {                                                                   \
        psp::wide_rescan_any<OPS>(perm, d, b, h, hT, carry, h0, B, T, n, C);                                   \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_rescan_##SFX);                                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_sequential_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,        \
                                 const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                      \
                                 OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B, int T,      \
                                 int n) {                                                                      \
        psp::wide_rescan_any<OPS>(perm, d, b, h, hT, nullptr, h0, B, T, n, T);                                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_sequential_##SFX);                                                              \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                       \
        pd_scan_##SFX(unsigned char* agg_p, OPS::V* agg_d, OPS::V* agg_b, OPS::V* carry,                       \
                      const OPS::In* __restrict__ h0, int B, int n, int NC, int M) {                           \
        psp::scan_chunks<OPS>(agg_p, agg_d, agg_b, carry, h0, B, n, NC, M);                                    \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_##SFX);                                                                         \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                       \
        pd_scan_tiles_##SFX(unsigned char* agg_p, OPS::V* agg_d, OPS::V* agg_b, unsigned char* tile_p,          \
                            OPS::V* tile_d, OPS::V* tile_b, int B, int n, int NC, int M, int TL, int MT) {      \
        psp::scan_tiles<OPS>(agg_p, agg_d, agg_b, tile_p, tile_d, tile_b, B, n, NC, M, TL, MT);                \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_tiles_##SFX);                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_scan_apply_##SFX(const unsigned char* __restrict__ agg_p, const OPS::V* __restrict__ agg_d,         \
                            const OPS::V* __restrict__ agg_b, const OPS::V* __restrict__ tile_carry,           \
                            OPS::V* __restrict__ carry, int B, int n, int NC, int M, int TL) {                 \
        psp::scan_apply<OPS>(agg_p, agg_d, agg_b, tile_carry, carry, B, n, NC, M, TL);                         \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_apply_##SFX)

PSP_KERNELS(f32, psp::OpsF32);
PSP_KERNELS(f64, psp::OpsF64);
PSP_KERNELS(f16, psp::OpsF16);
PSP_KERNELS(bf16, psp::OpsBF16);
PSP_KERNELS(depth, psp::OpsDepth);

// Reverse scans (REVERSE in the contract): every kernel that reads perm, d, b or writes
// h, hT, with its forward namesake's arguments and launch shape; phase 2 is shared.
#define PSP_REV_KERNELS(SFX, OPS)                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_reduce_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,       \
                                  const OPS::In* __restrict__ b, unsigned char* __restrict__ agg_p,            \
                                  OPS::V* __restrict__ agg_d, OPS::V* __restrict__ agg_b, int B, int T, int n, \
                                  int C, int M) {                                                              \
        psp::small_chunk<OPS, true, true>(perm, d, b, nullptr, nullptr, nullptr, nullptr, agg_p, agg_d, agg_b, \
                                          B, T, n, C, M);                                                      \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_reduce_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_rescan_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,       \
                                  const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                     \
                                  OPS::Out* __restrict__ hT, const OPS::V* __restrict__ carry,                 \
                                  const OPS::In* __restrict__ h0, int B, int T, int n, int C) {                \
        psp::small_chunk<OPS, false, true>(perm, d, b, h, hT, carry, h0, nullptr, nullptr, nullptr, B, T, n, C, \
                                           1);                                                                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_rescan_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_sequential_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,   \
                                      const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                 \
                                      OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B, int T, \
                                      int n) {                                                                 \
        psp::small_chunk<OPS, false, true>(perm, d, b, h, hT, nullptr, h0, nullptr, nullptr, nullptr, B, T, n, \
                                           T, 1);                                                              \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_sequential_rev_##SFX);                                                         \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_reduce_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,        \
                                 const OPS::In* __restrict__ b, unsigned char* __restrict__ agg_p,             \
                                 OPS::V* __restrict__ agg_d, OPS::V* __restrict__ agg_b, int B, int T, int n,  \
                                 int C, int M) {                                                               \
        psp::wide_reduce_any<OPS, true>(perm, d, b, agg_p, agg_d, agg_b, B, T, n, C, M);                       \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_reduce_rev_##SFX);                                                              \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_rescan_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,        \
                                 const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                      \
                                 OPS::Out* __restrict__ hT, const OPS::V* __restrict__ carry,                  \
                                 const OPS::In* __restrict__ h0, int B, int T, int n, int C) {                 \
        psp::wide_rescan_any<OPS, true>(perm, d, b, h, hT, carry, h0, B, T, n, C);                             \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_rescan_rev_##SFX);                                                              \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_sequential_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,    \
                                     const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                  \
                                     OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, int B, int T,  \
                                     int n) {                                                                  \
        psp::wide_rescan_any<OPS, true>(perm, d, b, h, hT, nullptr, h0, B, T, n, T);                           \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_sequential_rev_##SFX)

PSP_REV_KERNELS(f32, psp::OpsF32);
PSP_REV_KERNELS(f64, psp::OpsF64);
PSP_REV_KERNELS(f16, psp::OpsF16);
PSP_REV_KERNELS(bf16, psp::OpsBF16);
PSP_REV_KERNELS(depth, psp::OpsDepth);

// K7 pd_lookback<SPL>_<sfx>: plan P4 (see the contract), one kernel per SPL (1: n <= 32,
// 2: n <= 64, 4: n <= 128, 8: n <= 256). LB: blocks of 256 per SM that ptxas must fit.
#define PSP_LOOKBACK1(SPL, SFX, OPS, LB)                                                                      \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        pd_lookback##SPL##_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,        \
                                 const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                      \
                                 OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0,                    \
                                 unsigned* __restrict__ status, unsigned char* __restrict__ lagg_p,            \
                                 OPS::V* __restrict__ lagg_d, OPS::V* __restrict__ lagg_b,                     \
                                 OPS::V* __restrict__ lpre, int B, int T, int n, int C, int prefix_every) {    \
        psp::lookback<OPS, SPL>(perm, d, b, h, hT, h0, status, lagg_p, lagg_d, lagg_b, lpre, B, T, n, C,      \
                                prefix_every);                                                                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_lookback##SPL##_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        pd_lookback##SPL##_rev_##SFX(const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d,    \
                                     const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                  \
                                     OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0,                \
                                     unsigned* __restrict__ status, unsigned char* __restrict__ lagg_p,        \
                                     OPS::V* __restrict__ lagg_d, OPS::V* __restrict__ lagg_b,                 \
                                     OPS::V* __restrict__ lpre, int B, int T, int n, int C, int prefix_every) { \
        psp::lookback<OPS, SPL, psd::LbProduction, true>(perm, d, b, h, hT, h0, status, lagg_p, lagg_d, lagg_b, \
                                                         lpre, B, T, n, C, prefix_every);                      \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_lookback##SPL##_rev_##SFX)
#define PSP_LOOKBACK(SFX, OPS, LB)  \
    PSP_LOOKBACK1(1, SFX, OPS, LB); \
    PSP_LOOKBACK1(2, SFX, OPS, LB); \
    PSP_LOOKBACK1(4, SFX, OPS, LB); \
    PSP_LOOKBACK1(8, SFX, OPS, LB)

PSP_LOOKBACK(f32, psp::OpsF32, 2);
PSP_LOOKBACK(f64, psp::OpsF64, 1);
PSP_LOOKBACK(f16, psp::OpsF16, 2);
PSP_LOOKBACK(bf16, psp::OpsBF16, 2);
PSP_LOOKBACK(depth, psp::OpsDepth, 2);

// Emulator tests only, never launched on a GPU (as diagonal.cu's probes): pd_lookback with
// psd::LbProbe, i.e. chunk 1 of problem 0 never publishes and its successors must trap after
// a few thousand polls. Same arguments and launch shape as K7.
#define PSP_PROBE(SPL, SFX, OPS)                                                                               \
    extern "C" __global__ void pd_lookback##SPL##_probe_##SFX(                                                 \
        const unsigned char* __restrict__ perm, const OPS::In* __restrict__ d, const OPS::In* __restrict__ b,  \
        OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0,                   \
        unsigned* __restrict__ status, unsigned char* __restrict__ lagg_p, OPS::V* __restrict__ lagg_d,        \
        OPS::V* __restrict__ lagg_b, OPS::V* __restrict__ lpre, int B, int T, int n, int C, int prefix_every) { \
        psp::lookback<OPS, SPL, psd::LbProbe>(perm, d, b, h, hT, h0, status, lagg_p, lagg_d, lagg_b, lpre, B,  \
                                              T, n, C, prefix_every);                                          \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_lookback##SPL##_probe_##SFX)
PSP_PROBE(1, f32, psp::OpsF32);
PSP_PROBE(2, f32, psp::OpsF32);
PSP_PROBE(1, depth, psp::OpsDepth);
PSP_PROBE(2, depth, psp::OpsDepth);

// K8 pd_lb_clear: zeroes the look-back status words and the ticket counter (n words).
extern "C" __global__ void __launch_bounds__(256) pd_lb_clear(unsigned* __restrict__ status, int n) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) status[i] = 0u;
}
PS_REGISTER_KERNEL(pd_lb_clear);

#endif  // PSP_TEMPLATES_ONLY
