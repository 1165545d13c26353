// varlen_block.cu: packed variable-length batches (cu_seqlens) on the BlockDiagonal kernels.
//
// =====================================================================================
// DESIGN
// =====================================================================================
//
// The technique of varlen.cu (the Diagonal family) on BlockDiagonal elements (M, v): the
// first step t = o_s of sequence s becomes the element (0, A_t h0_s + b_t), a zero
// transition that absorbs everything before it (combine(x, (0, c)) = (0, c)). Only the
// level-0 kernels see steps, so only they change: a reduce thread that owns a matrix
// column resets it to 0 at a sequence start, the thread that owns the vector restarts
// from h0_s and folds the step in (A_t h0_s + b_t); a rescan thread restarts its state
// from h0_s before the step. The levels above scan chunk aggregates as usual.
//
// Non-finite values. A zero aggregate matrix times an earlier aggregate that overflowed
// would give 0 * inf = NaN in the levels above and carry it into the next sequence.
// BdVarlenOps makes the absorption exact: a transition entry exactly 0 contributes
// nothing (acc + 0 * x is acc even for a non-finite x), in every packed kernel, the
// levels above included (their own instantiations below). For finite values the results
// are the unpacked kernels' (up to the sign of a zero).
//
// Final states: varlen.cu's diag_varlen_final_<sfx> with D = n (h and h0s are [B,T,n]
// and [B,N,n], the Diagonal [B,T,D] layouts), launched after the scan.
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/varlen_block.rs implements it). Notation of
// block_diagonal.cu's contract (B, T, nb, K, n = nb*K, C, S and V, suffixes
// f32/f16/bf16/f64; no _depth, no _rev); N >= 1 sequences per batch row.
//   seg: const unsigned[T] (seg[t] = s + 1 where the non-empty sequence s starts, else 0);
//   offsets: const unsigned[N + 1] (validated, o_N = T); h0s: const S[B*N*n] (nullable:
//   zeros); hT: S[B*N*n].
//
//  X1 bd<K>_reduce_varlen_<sfx>(const S* A, const S* b, seg, h0s, V* aggA, V* aggB,
//                               int B, int T, int nb, int C, int N)     = R on packed steps.
//  X2 bd<K>_rescan_varlen_<sfx>(const S* A, const S* b, seg, h0s, S* h, const V* carry,
//                               int B, int T, int nb, int C, int N)
//       = S on packed steps (h required, no hT; carry nullable = zeros, only with NC == 1:
//       then also P0 with C = T).
//  X3 bd<K>_reduce_up_varlen_<sfx>(const V* A, const V* b, V* aggA, V* aggB,
//                                  int B, int T, int nb, int C)          = RU, exact.
//  X4 bd<K>_rescan_up_varlen_<sfx>(const V* A, const V* b, V* h, const V* carry,
//                                  int B, int T, int nb, int C)
//       = SU, exact, without hT and h0 (a sequence's h0 is inside its first element).
//  Then diag_varlen_final_<sfx>(h, h0s, offsets, hT, B, T, n, N) (varlen.cu's V5).
// Launch shapes: those of R, S, RU, SU. Plans: block_diagonal.cu's P0-P2 with R -> X1,
// S/Q -> X2, RU -> X3, SU -> X4 (for f32 and f64, whose plain plans use R and S on the
// levels above, those launches are X3 and X4 too), then the final-state gather. Same
// stream, in order, no synchronization.
// =====================================================================================

#define PSB_TEMPLATES_ONLY
#include "block_diagonal.cu"

namespace psbv {

// The BlockDiagonal arithmetic with the exact absorption of a zero entry (DESIGN above).
template <class Base>
struct BdVarlenOps : Base {
    using V = typename Base::Val;
    PSB_DEV static V mad(V acc, V a, V x) { return a == V(0) ? acc : Base::mad(acc, a, x); }
};

// X1: one thread per (team, column), as psb::reduce; steps of the packed axis.
template <class Ops, int K, typename In>
PSB_DEV void reduce_varlen(const In* __restrict__ A, const In* __restrict__ b, const unsigned* __restrict__ seg,
                           const In* __restrict__ h0s, typename Ops::Val* __restrict__ aggA,
                           typename Ops::Val* __restrict__ aggB, int B, int T, int nb, int C, int N) {
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
    const long long len = psb::min_ll(C, T - t0);
    const bool vec = col == K;
    // Every path through the first step sets x; zeros only tell the host compiler so.
    V x[K];
    V y[K];
PSB_UNROLL
    for (int r = 0; r < K; ++r) x[r] = Ops::zero();
    for (long long t = t0; t < t0 + len; ++t) {
        const long long s = bb * T + t;
        const unsigned q = __ldg(seg + t);
        if (q != 0u && !vec) {
            // A matrix column of (0, .): the zero transition.
PSB_UNROLL
            for (int r = 0; r < K; ++r) x[r] = Ops::zero();
            continue;
        }
        if (q != 0u) {
            // The vector of (0, A h0_s + b): restart from h0_s, then the step.
PSB_UNROLL
            for (int r = 0; r < K; ++r) x[r] = Ops::load_h0(h0s, (bb * N + (q - 1u)) * n + j * K + r);
        } else if (t == t0) {
            // The first step's column (or b) is the aggregate of one step: no combine.
PSB_UNROLL
            for (int r = 0; r < K; ++r)
                x[r] = vec ? Ops::load(b, s * n + j * K + r) : Ops::load(A, ((s * nb + j) * K + r) * K + col);
            continue;
        }
        psb::step<Ops, K, In>(A, (s * nb + j) * K * K, b, vec, s * n + j * K, x, y);
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

// X2: one thread per team, as psb::rescan; a sequence start restarts the state from h0_s.
template <class Ops, int K, typename S>
PSB_DEV void rescan_varlen(const S* __restrict__ A, const S* __restrict__ b, const unsigned* __restrict__ seg,
                           const S* __restrict__ h0s, S* __restrict__ h, const typename Ops::Val* __restrict__ carry,
                           int B, int T, int nb, int C, int N) {
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
    const long long len = psb::min_ll(C, T - t0);
    V x[K];
    V y[K];
PSB_UNROLL
    for (int r = 0; r < K; ++r) x[r] = (carry && c > 0) ? Ops::load_carry(carry, (rc - 1) * n + j * K + r) : Ops::zero();
    for (long long t = t0; t < t0 + len; ++t) {
        const long long s = bb * T + t;
        const unsigned q = __ldg(seg + t);
        if (q != 0u) {
PSB_UNROLL
            for (int r = 0; r < K; ++r) x[r] = Ops::load_h0(h0s, (bb * N + (q - 1u)) * n + j * K + r);
        }
        psb::step<Ops, K, S>(A, (s * nb + j) * K * K, b, true, s * n + j * K, x, y);
PSB_UNROLL
        for (int r = 0; r < K; ++r) {
            x[r] = y[r];
            Ops::store(h, s * n + j * K + r, x[r]);
        }
    }
}

}  // namespace psbv

// OPS: level-0 arithmetic (reads S), UP: the levels above (read V); S storage, V compute.
#define PSBV_KERNELS(K, SFX, OPS, UP, S, V)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_reduce_varlen_##SFX(const S* __restrict__ A, const S* __restrict__ b,                        \
                                    const unsigned* __restrict__ seg, const S* __restrict__ h0s,             \
                                    V* __restrict__ aggA, V* __restrict__ aggB, int B, int T, int nb, int C, \
                                    int N) {                                                                 \
        psbv::reduce_varlen<psbv::BdVarlenOps<OPS>, K, S>(A, b, seg, h0s, aggA, aggB, B, T, nb, C, N);      \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_reduce_varlen_##SFX);                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_rescan_varlen_##SFX(const S* __restrict__ A, const S* __restrict__ b,                        \
                                    const unsigned* __restrict__ seg, const S* __restrict__ h0s,             \
                                    S* __restrict__ h, const V* __restrict__ carry, int B, int T, int nb,    \
                                    int C, int N) {                                                          \
        psbv::rescan_varlen<psbv::BdVarlenOps<OPS>, K, S>(A, b, seg, h0s, h, carry, B, T, nb, C, N);        \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_rescan_varlen_##SFX);                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_reduce_up_varlen_##SFX(const V* __restrict__ A, const V* __restrict__ b,                     \
                                       V* __restrict__ aggA, V* __restrict__ aggB, int B, int T, int nb,     \
                                       int C) {                                                              \
        psb::reduce<psbv::BdVarlenOps<UP>, K, V>(A, b, aggA, aggB, B, T, nb, C);                             \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_reduce_up_varlen_##SFX);                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                                        \
        bd##K##_rescan_up_varlen_##SFX(const V* __restrict__ A, const V* __restrict__ b, V* __restrict__ h,  \
                                       const V* __restrict__ carry, int B, int T, int nb, int C) {           \
        psb::rescan<psbv::BdVarlenOps<UP>, K, V, V, S>(A, b, h, nullptr, carry, nullptr, B, T, nb, C);       \
    }                                                                                                        \
    PS_REGISTER_KERNEL(bd##K##_rescan_up_varlen_##SFX)

#define PSBV_ALL(K)                                                                 \
    PSBV_KERNELS(K, f32, psb::OpsF32, psb::OpsF32, float, float);                   \
    PSBV_KERNELS(K, f64, psb::OpsF64, psb::OpsF64, double, double);                 \
    PSBV_KERNELS(K, f16, psb::OpsF16, psb::OpsF16Up, __half, float);                \
    PSBV_KERNELS(K, bf16, psb::OpsBF16, psb::OpsBF16Up, __nv_bfloat16, float)

PSBV_ALL(1);
PSBV_ALL(2);
PSBV_ALL(3);
PSBV_ALL(4);
PSBV_ALL(8);
PSBV_ALL(16);
PSBV_ALL(32);
PSBV_ALL(64);
