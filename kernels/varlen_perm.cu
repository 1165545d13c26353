// varlen_perm.cu: packed variable-length batches (cu_seqlens) on the PermDiagonal kernels.
//
// =====================================================================================
// DESIGN
// =====================================================================================
//
// The technique of varlen.cu (the Diagonal family), on PD elements (perm, d, b): sequence
// s of a packed batch (offsets o_0 = 0 <= ... <= o_N = T) starts from its own h0_s, and
// its first step t = o_s becomes the element
//     (perm_t, 0, d_t * h0_s[perm_t] + b_t)     slot by slot,
// a zero scale that absorbs everything before it: combine(x, y)_i = y_i and
// apply(y, h)_i = y.b_i wherever y.d_i == 0. So the chunk reduce/rescan, the phase-2
// Blelloch scans and the look-back of perm_diagonal.cu run unchanged on these elements;
// only the step source differs (PdVarlenSteps below, the `Src` template parameter of
// perm_diagonal.cu's loaders), and the inputs are never copied. The per-step words `seg`
// (seg[t] = s + 1 where the non-empty sequence s starts, else 0) are built by the planner.
// The gather h0_s[perm_t[i]] reads global memory, so it needs no team communication.
//
// Non-finite values. PdVarlenOps makes the absorption exact (no 0 * inf = NaN), as
// varlen.cu's VarlenOps does; an input scale exactly 0 inside a sequence is treated the
// same way, which agrees with the recurrence for every finite state.
//
// Final states: varlen.cu's diag_varlen_final_<sfx> with D = n (h and h0s are [B,T,n]
// and [B,N,n], the Diagonal [B,T,D] layouts), launched after the scan.
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/varlen_perm.rs implements it). Notation of
// perm_diagonal.cu's contract (B, T, n, C, NC, M, suffixes f32/f16/bf16/f64; no _depth,
// no _rev); N >= 1 sequences per batch row.
//   seg: const unsigned[T] as above; offsets: const unsigned[N + 1] (validated, o_N = T);
//   h0s: const S[B*N*n] (nullable: zeros); hT: S[B*N*n].
//
//  W1 pd_<K>_reduce_varlen_<sfx>(perm, d, b, seg, h0s, agg_p, agg_d, agg_b,
//                                int B, int T, int n, int C, int M, int N)
//       = K1 pd_<K>_reduce on the segmented elements (K = small or wide).
//  W2 pd_<K>_rescan_varlen_<sfx>(perm, d, b, seg, h0s, S* h, const V* carry,
//                                int B, int T, int n, int C, int N)
//       = K2 pd_<K>_rescan (carry nullable = zeros, only with NC == 1; h required; no hT).
//       Also P0 (C = T, carry = 0, the sequential launch shape).
//  W3 pd_scan_varlen_<sfx>, pd_scan_tiles_varlen_<sfx>, pd_scan_apply_varlen_<sfx>:
//       K4-K6 with the exact absorption (K4's h0 argument always null: a sequence's h0 is
//       inside its first element).
//  W4 pd_lookback<SPL>_varlen_<sfx>(perm, d, b, seg, h0s, S* h, status, lagg_p, lagg_d,
//                                   lagg_b, lpre, int B, int T, int n, int C, int N,
//                                   int prefix_every)
//       = K7 pd_lookback<SPL> (same launch shape, scratch and K8 clearing first).
//  Then diag_varlen_final_<sfx>(h, h0s, offsets, hT, B, T, n, N) (varlen.cu's V5).
// Plans: those of perm_diagonal.cu with every data launch replaced by its packed twin
// (P0/P1: W2; P2/P3: W1, W3, W2; P4: K8, W4), then the final-state gather. Same stream, in
// order, no synchronization.
// =====================================================================================

#define PSP_TEMPLATES_ONLY
#include "perm_diagonal.cu"

namespace pspv {

// The PD slot algebra with the exact absorption of a zero scale (DESIGN above).
template <class Base>
struct PdVarlenOps : Base {
    using V = typename Base::V;
    PSP_DEV static void combine_slot(int p1j, V d1j, V b1j, V d2i, V b2i, int& p, V& d, V& b) {
        if (d2i == Base::zero()) {
            p = p1j;
            d = d2i;
            b = b2i;
        } else {
            Base::combine_slot(p1j, d1j, b1j, d2i, b2i, p, d, b);
        }
    }
    PSP_DEV static V apply_slot(V di, V hj, V bi) { return di == Base::zero() ? bi : Base::apply_slot(di, hj, bi); }
};

// The step source of a packed batch: at the first step of sequence s, slot i becomes
// (j, 0, d_i * h0_s[j] + b_i) with j = perm_t[i] (the loaders' `Src`).
template <class Ops>
struct PdVarlenSteps {
    using V = typename Ops::V;
    const unsigned* __restrict__ seg;
    const typename Ops::In* __restrict__ h0s;
    long long N;
    long long n;
    PSP_DEV void fix(long long bb, long long t, int j, V& d, V& b) const {
        const unsigned s = __ldg(seg + t);
        if (s == 0u) return;
        b = Ops::apply_slot(d, Ops::initial(h0s, (bb * N + (s - 1u)) * n + j), b);
        d = Ops::zero();
    }
};

}  // namespace pspv

#define PSPV_KERNELS(SFX, BASE)                                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_reduce_varlen_##SFX(const unsigned char* __restrict__ perm, const BASE::In* __restrict__ d,   \
                                     const BASE::In* __restrict__ b, const unsigned* __restrict__ seg,         \
                                     const BASE::In* __restrict__ h0s, unsigned char* __restrict__ agg_p,      \
                                     BASE::V* __restrict__ agg_d, BASE::V* __restrict__ agg_b, int B, int T,   \
                                     int n, int C, int M, int N) {                                             \
        using Ops = pspv::PdVarlenOps<BASE>;                                                                   \
        const pspv::PdVarlenSteps<Ops> src{seg, h0s, N, n};                                                    \
        psp::small_chunk<Ops, true, false, pspv::PdVarlenSteps<Ops>>(                                          \
            perm, d, b, nullptr, nullptr, nullptr, nullptr, agg_p, agg_d, agg_b, B, T, n, C, M, src);          \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_reduce_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_small_rescan_varlen_##SFX(const unsigned char* __restrict__ perm, const BASE::In* __restrict__ d,   \
                                     const BASE::In* __restrict__ b, const unsigned* __restrict__ seg,         \
                                     const BASE::In* __restrict__ h0s, BASE::Out* __restrict__ h,              \
                                     const BASE::V* __restrict__ carry, int B, int T, int n, int C, int N) {   \
        using Ops = pspv::PdVarlenOps<BASE>;                                                                   \
        const pspv::PdVarlenSteps<Ops> src{seg, h0s, N, n};                                                    \
        psp::small_chunk<Ops, false, false, pspv::PdVarlenSteps<Ops>>(                                         \
            perm, d, b, h, nullptr, carry, nullptr, nullptr, nullptr, nullptr, B, T, n, C, 1, src);            \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_small_rescan_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_reduce_varlen_##SFX(const unsigned char* __restrict__ perm, const BASE::In* __restrict__ d,    \
                                    const BASE::In* __restrict__ b, const unsigned* __restrict__ seg,          \
                                    const BASE::In* __restrict__ h0s, unsigned char* __restrict__ agg_p,       \
                                    BASE::V* __restrict__ agg_d, BASE::V* __restrict__ agg_b, int B, int T,    \
                                    int n, int C, int M, int N) {                                              \
        using Ops = pspv::PdVarlenOps<BASE>;                                                                   \
        const pspv::PdVarlenSteps<Ops> src{seg, h0s, N, n};                                                    \
        psp::wide_reduce_any<Ops, false, pspv::PdVarlenSteps<Ops>>(perm, d, b, agg_p, agg_d, agg_b, B, T, n,  \
                                                                   C, M, src);                                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_reduce_varlen_##SFX);                                                           \
    extern "C" __global__ void __launch_bounds__(128)                                                          \
        pd_wide_rescan_varlen_##SFX(const unsigned char* __restrict__ perm, const BASE::In* __restrict__ d,    \
                                    const BASE::In* __restrict__ b, const unsigned* __restrict__ seg,          \
                                    const BASE::In* __restrict__ h0s, BASE::Out* __restrict__ h,               \
                                    const BASE::V* __restrict__ carry, int B, int T, int n, int C, int N) {    \
        using Ops = pspv::PdVarlenOps<BASE>;                                                                   \
        const pspv::PdVarlenSteps<Ops> src{seg, h0s, N, n};                                                    \
        psp::wide_rescan_any<Ops, false, pspv::PdVarlenSteps<Ops>>(perm, d, b, h, nullptr, carry, nullptr, B, \
                                                                   T, n, C, src);                              \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_wide_rescan_varlen_##SFX);                                                           \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                       \
        pd_scan_varlen_##SFX(unsigned char* agg_p, BASE::V* agg_d, BASE::V* agg_b, BASE::V* carry,             \
                             const BASE::In* __restrict__ h0, int B, int n, int NC, int M) {                   \
        psp::scan_chunks<pspv::PdVarlenOps<BASE>>(agg_p, agg_d, agg_b, carry, h0, B, n, NC, M);                \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_varlen_##SFX);                                                                  \
    extern "C" __global__ void __launch_bounds__(256, 1)                                                       \
        pd_scan_tiles_varlen_##SFX(unsigned char* agg_p, BASE::V* agg_d, BASE::V* agg_b,                       \
                                   unsigned char* tile_p, BASE::V* tile_d, BASE::V* tile_b, int B, int n,      \
                                   int NC, int M, int TL, int MT) {                                            \
        psp::scan_tiles<pspv::PdVarlenOps<BASE>>(agg_p, agg_d, agg_b, tile_p, tile_d, tile_b, B, n, NC, M,    \
                                                 TL, MT);                                                      \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_tiles_varlen_##SFX);                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        pd_scan_apply_varlen_##SFX(const unsigned char* __restrict__ agg_p, const BASE::V* __restrict__ agg_d, \
                                   const BASE::V* __restrict__ agg_b, const BASE::V* __restrict__ tile_carry,  \
                                   BASE::V* __restrict__ carry, int B, int n, int NC, int M, int TL) {         \
        psp::scan_apply<pspv::PdVarlenOps<BASE>>(agg_p, agg_d, agg_b, tile_carry, carry, B, n, NC, M, TL);     \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_scan_apply_varlen_##SFX)

PSPV_KERNELS(f32, psp::OpsF32);
PSPV_KERNELS(f64, psp::OpsF64);
PSPV_KERNELS(f16, psp::OpsF16);
PSPV_KERNELS(bf16, psp::OpsBF16);

// W4 pd_lookback<SPL>_varlen_<sfx>: plan P4 on packed sequences, one kernel per SPL.
#define PSPV_LOOKBACK1(SPL, SFX, BASE, LB)                                                                    \
    extern "C" __global__ void __launch_bounds__(256, LB) pd_lookback##SPL##_varlen_##SFX(                   \
        const unsigned char* __restrict__ perm, const BASE::In* __restrict__ d, const BASE::In* __restrict__ b, \
        const unsigned* __restrict__ seg, const BASE::In* __restrict__ h0s, BASE::Out* __restrict__ h,         \
        unsigned* __restrict__ status, unsigned char* __restrict__ lagg_p, BASE::V* __restrict__ lagg_d,       \
        BASE::V* __restrict__ lagg_b, BASE::V* __restrict__ lpre, int B, int T, int n, int C, int N,           \
        int prefix_every) {                                                                                    \
        using Ops = pspv::PdVarlenOps<BASE>;                                                                   \
        const pspv::PdVarlenSteps<Ops> src{seg, h0s, N, n};                                                    \
        psp::lookback<Ops, SPL, psd::LbProduction, false, pspv::PdVarlenSteps<Ops>>(                           \
            perm, d, b, h, nullptr, nullptr, status, lagg_p, lagg_d, lagg_b, lpre, B, T, n, C, prefix_every,   \
            src);                                                                                              \
    }                                                                                                          \
    PS_REGISTER_KERNEL(pd_lookback##SPL##_varlen_##SFX)
#define PSPV_LOOKBACK(SFX, BASE, LB)  \
    PSPV_LOOKBACK1(1, SFX, BASE, LB); \
    PSPV_LOOKBACK1(2, SFX, BASE, LB); \
    PSPV_LOOKBACK1(4, SFX, BASE, LB); \
    PSPV_LOOKBACK1(8, SFX, BASE, LB)

PSPV_LOOKBACK(f32, psp::OpsF32, 2);
PSPV_LOOKBACK(f64, psp::OpsF64, 1);
PSPV_LOOKBACK(f16, psp::OpsF16, 2);
PSPV_LOOKBACK(bf16, psp::OpsBF16, 2);
