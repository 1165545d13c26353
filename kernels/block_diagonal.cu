// block_diagonal.cu: the BlockDiagonal(k) family h_t = A_t h_{t-1} + b_t, A_t made of nb
// dense k x k blocks (n = nb*k; one block of k = n is the Dense family), evaluated in
// parallel over time with a chunked scan whose chunk aggregates are scanned by a radix-R
// tree of the same two kernels (SPEC §2).
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/block_diagonal.rs implements exactly this)
// =====================================================================================
//
// Notation. B batch rows, T >= 1 steps, nb >= 1 blocks of size K, K in {1,2,3,4,8,16,32,64}
// (a template parameter: every kernel name carries it), n = nb*K. Blocks never mix, so
// the unit of work is a TEAM = one (batch row, block, chunk) triple. Every integer
// argument is a C `int` >= 1; products such as B*T*nb*K*K are formed in 64 bits inside
// the kernels. Pointers are KernelArg::Ptr; "nullable" ones may be 0. Buffers of one
// launch never alias. No shared memory, no barriers, no warp primitives: every thread
// works alone, so the kernels are trivially race-free under any fiber order.
//
// Layouts (row-major, time-major inside a batch row, as SPEC §1):
//   A [B,T,nb,K,K]: element (b,t,j,r,c) at (((b*T + t)*nb + j)*K + r)*K + c
//   b, h [B,T,n]:   element (b,t,j*K + r) at (b*T + t)*n + j*K + r
//   h0, hT [B,n].
//
// Element. The aggregate of a run of steps is (M, v) with M = A_last ... A_first per
// block and v the state it produces from 0: combine(e1, e2) = (M2 M1, M2 v1 + v2)
// (ps::bd_combine). Every output of combine is one matrix-vector product with M2:
// column c of M2 M1 is M2 * (column c of M1), and v = M2 v1 + v2. So a thread that OWNS
// one column of an aggregate folds a step in with k*k multiply-adds and needs nothing
// from other threads; likewise the state h in the rescan (h' = A h + b). That is the
// whole design: the reduce gives a team K+1 threads (K matrix columns + the vector),
// the rescan one thread per team, and nobody talks to anybody.
//
// Types. Each kernel exists per data type, suffix _<sfx>:
//   sfx    storage S (A, b, h0, h, hT)   compute V (aggregates, carries)
//   f32    float                          float
//   f16    __half                         float
//   bf16   __nv_bfloat16                  float
//   f64    double                         double
//   depth  unsigned (DEPTH below)         unsigned
//
// Kernels (K = 1,2,3,4,8,16,32,64; "up" kernels read and write V instead of S; for f32,
// f64 and depth S == V and the "up" role uses the plain kernel):
//  R  bd<K>_reduce_<sfx>   (const S* A, const S* b, V* aggA, V* aggB, int B, int T, int nb, int C)
//  RU bd<K>_reduce_up_<sfx>(const V* A, const V* b, V* aggA, V* aggB, int B, int T, int nb, int C)
//       NC = ceil(T/C). aggA [B,NC,nb,K,K], aggB [B,NC,n]: the aggregate of chunk c of every
//       (row, block), i.e. the next level's A and b. Thread w: team = w / (K+1), column
//       col = w % (K+1); team = (bb*NC + c)*nb + j. Column col < K starts from column col of
//       the chunk's first A (no combine), col == K from its first b; then folds the other
//       steps in order.
//  S  bd<K>_rescan_<sfx>   (const S* A, const S* b, S* h, S* hT, const V* carry, const S* h0,
//                           int B, int T, int nb, int C)
//  SU bd<K>_rescan_up_<sfx>(const V* A, const V* b, V* h, V* hT, const V* carry, const S* h0,
//                           int B, int T, int nb, int C)
//       One thread per team (same team numbering). Chunk c starts from carry row c-1
//       (carry [B,NC,n], the INCLUSIVE states of the chunk sequence, i.e. the next level's
//       h) or, for c == 0, from h0 (nullable: zeros). carry == 0: every chunk starts from
//       h0, only valid with NC == 1 (C >= T). Writes h (nullable) at every step of the
//       chunk and hT (nullable) from the last chunk's last step (the same value).
//  Q  bd<K>_sequential_<sfx>(const S* A, const S* b, S* h, S* hT, const S* h0,
//                           int B, int T, int nb)
//       The baseline: one thread per (row, block) over all T steps (depth T).
//
// Launch shapes: block (NB,1,1), NB = 128 (any multiple of 32 in [32, 256] works);
//   R/RU grid ceil(B*NC*nb*(K+1) / NB); S/SU grid ceil(B*NC*nb / NB); Q grid ceil(B*nb / NB).
//   Shared bytes 0.
//
// Plans. Level 0 is the problem itself (length T_0 = T, chunk C_0 = C). Level l+1 is the
// sequence of level l's chunk aggregates: T_{l+1} = ceil(T_l / C_l), chunk C_{l+1} = R
// (the radix, >= 2), up to the first level m >= 1 with T_m <= R, which is scanned in one
// pass (C_m = T_m). Scratch per level l = 1..m (V elements): aggA B*T_l*nb*K*K, aggB
// B*T_l*n, states B*T_l*n.
//   P0 sequential: Q(A, b, h, hT, h0, B, T, nb)                                 1 launch
//   P1 single pass (C >= T): S(A, b, h, hT, carry=0, h0, B, T, nb, C=T)          1 launch
//   P2 tree (C < T), 2m+1 launches, in this order:
//        R (A, b -> aggA_1, aggB_1; T_0, C_0), RU (aggA_l, aggB_l -> aggA_{l+1}, aggB_{l+1};
//        T_l, R) for l = 1..m-1;
//        SU(aggA_m, aggB_m, h=states_m, hT=0, carry=0, h0, T_m, C=T_m);
//        SU(aggA_l, aggB_l, h=states_l, hT=0, carry=states_{l+1}, h0, T_l, R) for l = m-1..1;
//        S (A, b, h, hT, carry=states_1, h0, T, C).
//   A radix-2 tree is Blelloch's up-sweep (a level of pair aggregates) and down-sweep (a
//   level of carries), kept in global memory because an element (K*K + K values, 16.6 KB at
//   K = 64) is too large to keep a block's worth of them in shared memory.
//
// DEPTH. The _depth kernels are the same templates over unsigned counters: a multiply-add
// acc + a*x becomes max(acc, a, x) and each finished row adds 1, so every output entry
// gets 1 + the largest depth among the entries it was computed from (ps::DepthCounter:
// combine = max + 1, applied per entry). Null A, b (level 0) and h0 read as depth 0; the
// levels above read the depths the level below wrote. Formula (checked element by
// element by the tests): per level l, D_l = depth of every input entry except the last
// step's, E_l = the last step's (D_0 = E_0 = 0). With NC = T_{l+1}, r = T_l - (NC-1)*C_l:
//   D_{l+1} = D_l + C_l - 1;  E_{l+1} = E_l if r == 1 else max(D_l + r - 1, E_l + 1).
// State depth at step t of level l (chunk c = t / C_l, i = t mod C_l):
//   s_in = 0 if c == 0 else s_{l+1}(c - 1);
//   in   = D_l + i + 1 if t < T_l - 1; else (E_l + 1 if i == 0 else max(D_l + i + 1, E_l + 1));
//   s_l(t) = max(s_in + i + 1, in).
// P0 and P1: s(t) = t + 1. hT has the depth of h at t = T-1. The plan's depth is
// max_t s_0(t) (about 2C + 3 log2(T/C) for R = 2).
//
// REVERSE. bd<K>_reduce_rev_<sfx>, bd<K>_rescan_rev_<sfx>, bd<K>_sequential_rev_<sfx> take
// R's, S's and Q's arguments, launch shapes and plans and run the scan right to left:
// h_t = A_t h_{t+1} + b_t for t = T-1 down to 0 from h0, hT = the state at t = 0. Step s
// of the scan is time t = T-1-s (chunk c covers times [T-(c+1)*C, T-c*C)), so the levels
// above (RU, SU: chunk indices only) are the forward kernels and every formula above,
// depth included, holds with t replaced by T-1-t.
//
// Guarantees the tests rely on: every element of h and hT (when non-null) is written
// exactly once; nothing else is; hT is bit-identical to h at t = T-1; results do not
// depend on the block schedule or the thread interleaving.
//
// Performance notes (not measured: no GPU in the session that wrote this). The reduce
// does K^3 + K^2 multiply-adds per step and team (the dense products are unavoidable),
// the rescan K^2: A_t is read by all K+1 threads of a team (mostly L1 broadcasts).
// The column/state x lives in registers (its index is always a compile-time constant);
// for K <= 16 the whole step is unrolled, for K = 32, 64 the row loop is not (bounding
// code size and nvcc time) and the step's output y sits in local memory (256-512 B).
// sm_90 ptxas: no spills in any of the 152 kernels; 32-64 registers up to K = 16 (f32),
// 64 at K = 32, 94-126 at K = 64 (164-168 for f64). Row sums are single FMA chains, so
// a K = 64 step is latency-bound per thread; occupancy (many teams) has to hide it.
// =====================================================================================

#include <stdint.h>

#include "emu/portable.cuh"
#include "parascan.cuh"

#define PSB_DEV __device__ __forceinline__
// Full unrolling keeps the K-value column in registers on the GPU; the emulator build
// keeps it on the fiber stack and does not need it.
#if defined(__CUDACC__)
#define PSB_UNROLL _Pragma("unroll")
#define PSB_UNROLL_ROWS _Pragma("unroll (K <= 16 ? K : 1)")
#else
#define PSB_UNROLL
#define PSB_UNROLL_ROWS
#endif

namespace psb {

PSB_DEV long long min_ll(long long x, long long y) { return x < y ? x : y; }

// ---------------------------------------------------------------------------------------
// Arithmetic policies. S: storage of level-0 inputs and outputs; In/Out: what this kernel
// reads and writes (S at level 0, V above); V: compute and scratch type.
// ---------------------------------------------------------------------------------------
template <typename In, typename Out, typename H0, typename V>
struct RealOps {
    using Val = V;
    PSB_DEV static V zero() { return V(0); }
    PSB_DEV static V load(const In* p, long long i) { return static_cast<V>(ps::widen(p[i])); }
    PSB_DEV static V load_h0(const H0* p, long long i) { return p ? static_cast<V>(ps::widen(p[i])) : V(0); }
    PSB_DEV static V load_carry(const V* p, long long i) { return p[i]; }
    // The inner step of ps::bd_combine / ps::bd_apply: acc += X2[r][j] * x[j].
    PSB_DEV static V mad(V acc, V a, V x) { return acc + a * x; }
    PSB_DEV static V finish(V acc) { return acc; }
    PSB_DEV static void store(Out* p, long long i, V x) { ps::store(p + i, x); }
};

// Depth counters: reads a null input as depth 0, otherwise the depth written there.
struct DepthOps {
    using Val = unsigned;
    PSB_DEV static unsigned zero() { return 0u; }
    PSB_DEV static unsigned load(const unsigned* p, long long i) { return p ? p[i] : 0u; }
    PSB_DEV static unsigned load_h0(const unsigned*, long long) { return 0u; }
    PSB_DEV static unsigned load_carry(const unsigned* p, long long i) { return p[i]; }
    PSB_DEV static unsigned mad(unsigned acc, unsigned a, unsigned x) {
        const unsigned m = a > x ? a : x;
        return acc > m ? acc : m;
    }
    // A finished entry is one combine deeper than everything it read.
    PSB_DEV static unsigned finish(unsigned acc) { return acc + 1u; }
    PSB_DEV static void store(unsigned* p, long long i, unsigned x) { p[i] = x; }
};

// y = A x (+ b when with_b): one step applied to one column (reduce) or to the state
// (rescan). Summation order as ps::bd_combine and the Rust fold_step: acc starts at b[r]
// (vector) or 0 (matrix column), then j = 0..K-1. A flag rather than a null b says whether
// b takes part, because the depth kernels get null inputs at level 0.
template <class Ops, int K, typename In>
PSB_DEV void step(const In* __restrict__ A, long long a_off, const In* __restrict__ bp, bool with_b,
                       long long b_off, const typename Ops::Val (&x)[K], typename Ops::Val (&y)[K]) {
    // Rows: fully unrolled up to K = 16; for K = 32, 64 a rolled loop (y then lives in
    // local memory) keeps the code, and nvcc's compile time, from growing by K^2.
PSB_UNROLL_ROWS
    for (int r = 0; r < K; ++r) {
        typename Ops::Val acc = with_b ? Ops::load(bp, b_off + r) : Ops::zero();
PSB_UNROLL
        for (int j = 0; j < K; ++j) acc = Ops::mad(acc, Ops::load(A, a_off + r * K + j), x[j]);
        y[r] = Ops::finish(acc);
    }
}

// Reverse scans (REV = true, the _rev_ kernels): step s of a chunk walk lives at time
// T-1-s in memory, so chunks, carries, the tree levels above and the depth are the
// forward scan's in s; only the level-0 kernels (R, S, Q) read or write by time.
template <bool REV>
PSB_DEV long long step_time(long long s, long long T) {
    return REV ? T - 1 - s : s;
}

// Phase 1: one thread per (team, column).
template <class Ops, int K, typename In, bool REV = false>
PSB_DEV void reduce(const In* __restrict__ A, const In* __restrict__ b, typename Ops::Val* __restrict__ aggA,
                    typename Ops::Val* __restrict__ aggB, int B, int T, int nb, int C) {
    using V = typename Ops::Val;
    const long long nc = (static_cast<long long>(T) + C - 1) / C;
    const long long w = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long team = w / (K + 1);
    const int col = static_cast<int>(w % (K + 1));
    if (team >= static_cast<long long>(B) * nc * nb) return;  // no barriers in this kernel
    const long long j = team % nb;
    const long long rc = team / nb;  // bb*nc + c
    const long long c = rc % nc;
    const long long bb = rc / nc;
    const long long n = static_cast<long long>(nb) * K;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);
    const bool vec = col == K;
    V x[K];
    V y[K];
    {
        // The first step's column (or b) is the aggregate of one step: no combine.
        const long long s = bb * T + step_time<REV>(t0, T);
PSB_UNROLL
        for (int r = 0; r < K; ++r)
            x[r] = vec ? Ops::load(b, s * n + j * K + r) : Ops::load(A, ((s * nb + j) * K + r) * K + col);
    }
    for (long long t = t0 + 1; t < t0 + len; ++t) {
        const long long s = bb * T + step_time<REV>(t, T);
        step<Ops, K, In>(A, (s * nb + j) * K * K, b, vec, s * n + j * K, x, y);
PSB_UNROLL
        for (int r = 0; r < K; ++r) x[r] = y[r];
    }
    if (vec) {
PSB_UNROLL
        for (int r = 0; r < K; ++r) aggB[rc * n + j * K + r] = x[r];
    } else {
PSB_UNROLL
        for (int r = 0; r < K; ++r) aggA[((rc * nb + j) * K + r) * K + col] = x[r];
    }
}

// Phase 3 (and the single pass / sequential baseline with carry == null, C >= T): one
// thread per team runs its chunk from its carry-in.
template <class Ops, int K, typename In, typename Out, typename H0, bool REV = false>
PSB_DEV void rescan(const In* __restrict__ A, const In* __restrict__ b, Out* __restrict__ h, Out* __restrict__ hT,
                    const typename Ops::Val* __restrict__ carry, const H0* __restrict__ h0, int B, int T, int nb,
                    int C) {
    using V = typename Ops::Val;
    const long long nc = (static_cast<long long>(T) + C - 1) / C;
    const long long team = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (team >= static_cast<long long>(B) * nc * nb) return;
    const long long j = team % nb;
    const long long rc = team / nb;
    const long long c = rc % nc;
    const long long bb = rc / nc;
    const long long n = static_cast<long long>(nb) * K;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);
    V x[K];
    V y[K];
    if (carry && c > 0) {
PSB_UNROLL
        for (int r = 0; r < K; ++r) x[r] = Ops::load_carry(carry, (rc - 1) * n + j * K + r);
    } else {
PSB_UNROLL
        for (int r = 0; r < K; ++r) x[r] = Ops::load_h0(h0, bb * n + j * K + r);
    }
    for (long long t = t0; t < t0 + len; ++t) {
        const long long s = bb * T + step_time<REV>(t, T);
        step<Ops, K, In>(A, (s * nb + j) * K * K, b, true, s * n + j * K, x, y);
PSB_UNROLL
        for (int r = 0; r < K; ++r) x[r] = y[r];
        if (h) {
PSB_UNROLL
            for (int r = 0; r < K; ++r) Ops::store(h, s * n + j * K + r, x[r]);
        }
    }
    if (hT && c == nc - 1) {
PSB_UNROLL
        for (int r = 0; r < K; ++r) Ops::store(hT, bb * n + j * K + r, x[r]);
    }
}

// Level 0 reads and writes storage; the levels above read and write the compute type
// (h0 is still storage).
using OpsF32 = RealOps<float, float, float, float>;
using OpsF64 = RealOps<double, double, double, double>;
using OpsF16 = RealOps<__half, __half, __half, float>;
using OpsF16Up = RealOps<float, float, __half, float>;
using OpsBF16 = RealOps<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, float>;
using OpsBF16Up = RealOps<float, float, __nv_bfloat16, float>;

}  // namespace psb

// varlen_block.cu includes this file for its templates only.
#ifndef PSB_TEMPLATES_ONLY

// ---------------------------------------------------------------------------------------
// extern "C" instantiations.
// ---------------------------------------------------------------------------------------

#define PSB_BASE_KERNELS(K, SFX, OPS, S, V)                                                                  \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_reduce_##SFX(const S* __restrict__ A, const S* __restrict__ b, V* __restrict__ aggA,         \
                             V* __restrict__ aggB, int B, int T, int nb, int C) {                            \
        psb::reduce<OPS, K, S>(A, b, aggA, aggB, B, T, nb, C);                                               \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_reduce_##SFX);                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_rescan_##SFX(const S* __restrict__ A, const S* __restrict__ b, S* __restrict__ h,            \
                             S* __restrict__ hT, const V* __restrict__ carry, const S* __restrict__ h0,      \
                             int B, int T, int nb, int C) {                                                  \
        psb::rescan<OPS, K, S, S, S>(A, b, h, hT, carry, h0, B, T, nb, C);                                   \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_rescan_##SFX);                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_sequential_##SFX(const S* __restrict__ A, const S* __restrict__ b, S* __restrict__ h,        \
                                 S* __restrict__ hT, const S* __restrict__ h0, int B, int T, int nb) {       \
        psb::rescan<OPS, K, S, S, S>(A, b, h, hT, nullptr, h0, B, T, nb, T);                                 \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_sequential_##SFX)

// Reverse level-0 kernels (REVERSE in the contract); the up kernels are shared.
#define PSB_REV_KERNELS(K, SFX, OPS, S, V)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_reduce_rev_##SFX(const S* __restrict__ A, const S* __restrict__ b, V* __restrict__ aggA,     \
                                 V* __restrict__ aggB, int B, int T, int nb, int C) {                        \
        psb::reduce<OPS, K, S, true>(A, b, aggA, aggB, B, T, nb, C);                                         \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_reduce_rev_##SFX);                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_rescan_rev_##SFX(const S* __restrict__ A, const S* __restrict__ b, S* __restrict__ h,        \
                                 S* __restrict__ hT, const V* __restrict__ carry, const S* __restrict__ h0,  \
                                 int B, int T, int nb, int C) {                                              \
        psb::rescan<OPS, K, S, S, S, true>(A, b, h, hT, carry, h0, B, T, nb, C);                             \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_rescan_rev_##SFX);                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_sequential_rev_##SFX(const S* __restrict__ A, const S* __restrict__ b, S* __restrict__ h,    \
                                     S* __restrict__ hT, const S* __restrict__ h0, int B, int T, int nb) {   \
        psb::rescan<OPS, K, S, S, S, true>(A, b, h, hT, nullptr, h0, B, T, nb, T);                           \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_sequential_rev_##SFX)

#define PSB_UP_KERNELS(K, SFX, OPS, S, V)                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_reduce_up_##SFX(const V* __restrict__ A, const V* __restrict__ b, V* __restrict__ aggA,      \
                                V* __restrict__ aggB, int B, int T, int nb, int C) {                         \
        psb::reduce<OPS, K, V>(A, b, aggA, aggB, B, T, nb, C);                                               \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_reduce_up_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_rescan_up_##SFX(const V* __restrict__ A, const V* __restrict__ b, V* __restrict__ h,         \
                                V* __restrict__ hT, const V* __restrict__ carry, const S* __restrict__ h0,   \
                                int B, int T, int nb, int C) {                                               \
        psb::rescan<OPS, K, V, V, S>(A, b, h, hT, carry, h0, B, T, nb, C);                                   \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_rescan_up_##SFX)

#define PSB_ALL(K)                                                                          \
    PSB_BASE_KERNELS(K, f32, psb::OpsF32, float, float);                    \
    PSB_BASE_KERNELS(K, f64, psb::OpsF64, double, double);                  \
    PSB_BASE_KERNELS(K, depth, psb::DepthOps, unsigned, unsigned);          \
    PSB_BASE_KERNELS(K, f16, psb::OpsF16, __half, float);                   \
    PSB_UP_KERNELS(K, f16, psb::OpsF16Up, __half, float);                   \
    PSB_BASE_KERNELS(K, bf16, psb::OpsBF16, __nv_bfloat16, float);          \
    PSB_UP_KERNELS(K, bf16, psb::OpsBF16Up, __nv_bfloat16, float);          \
    PSB_REV_KERNELS(K, f32, psb::OpsF32, float, float);                     \
    PSB_REV_KERNELS(K, f64, psb::OpsF64, double, double);                   \
    PSB_REV_KERNELS(K, depth, psb::DepthOps, unsigned, unsigned);           \
    PSB_REV_KERNELS(K, f16, psb::OpsF16, __half, float);                    \
    PSB_REV_KERNELS(K, bf16, psb::OpsBF16, __nv_bfloat16, float)

PSB_ALL(1);
PSB_ALL(2);
PSB_ALL(3);
PSB_ALL(4);
PSB_ALL(8);
PSB_ALL(16);
PSB_ALL(32);
PSB_ALL(64);

#endif  // PSB_TEMPLATES_ONLY
