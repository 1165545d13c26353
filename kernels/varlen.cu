// varlen.cu: packed variable-length batches (cu_seqlens) on the Diagonal [B,T,D] kernels.
//
// =====================================================================================
// DESIGN
// =====================================================================================
//
// A packed batch holds N sequences end to end on the time axis (offsets o_0 = 0 <= o_1
// <= ... <= o_N = T); sequence s starts from its own initial state h0_s and its final
// state is the state after step o_{s+1} - 1. The carry must not cross a boundary.
//
// An affine element with a zero transition absorbs everything before it:
// (0, c) o (A, b) = (0, c), and apply((0, c), h) = c. So the segmented scan is the
// ordinary scan of the elements
//     e_t = (a_t, b_t)                     inside a sequence,
//     e_t = (0, a_t * h0_s + b_t)          at the first step t = o_s of sequence s,
// i.e. the reset and the sequence's initial state are folded into the first step. The
// scan skeletons (chunk reduce/rescan, the Blelloch phase 2, the decoupled look-back and
// its payloads) are unchanged; only where a step is made (the step source) differs. The
// per-step information is a u32 array `seg` of T words built by the host planner into
// its workspace from the offsets (seg[t] = s + 1 when t = o_s starts the non-empty
// sequence s, else 0; one broadcast load per step and warp on [B,T,D]); the user's
// inputs are never copied.
//
// Non-finite values. Multiplying by the zero transition would turn an overflowed
// earlier state (inf) into NaN in the next sequence. VarlenOps therefore makes the
// absorption exact: combine(x, y) = y and apply(y, h) = y.b whenever y.a == 0 (bit-equal
// to the product for finite x, h), so nothing computed in one sequence reaches another.
// An input decay that is exactly 0 inside a sequence is treated the same way, which
// agrees with the recurrence for every finite state.
//
// Final states: hT[(b*N + s)*D + d] = h at the last step of s, or h0_s (zeros when h0
// is null) for an empty sequence, gathered by diag_varlen_final after the scan from the
// output h (the state itself on the Diagonal family). h is therefore required.
//
// =====================================================================================
// LAUNCH CONTRACT (src/kernels/varlen.rs implements it). Notation of diagonal.cu's
// contract (B, T, D, C, NC, Elem, State, suffixes f32/f16/bf16/f64; no _depth); N >= 1
// sequences per batch row; `In`/`Out` the storage type.
//   seg: const unsigned[T] as above; offsets: const unsigned[N + 1] (validated, o_N = T);
//   h0s: const In[B*N*D] (nullable: zeros); hT: Out[B*N*D].
//
//  V1 diag_btd_reduce_varlen_<sfx>(a, b, seg, h0s, Elem* agg, int B, int T, int D, int C, int N)
//       = K1 diag_btd_reduce on the segmented elements.
//  V2 diag_btd_rescan_varlen_<sfx>(a, b, seg, h0s, Out* h, const State* carry,
//                                   int B, int T, int D, int C, int N)
//       = K2 diag_btd_rescan (carry nullable = zeros, only with NC == 1; h required; no hT).
//       Also P0 (C = T, carry = 0, the sequential launch shape).
//  V3 diag_scan_varlen_<sfx>, diag_scan_tiles_varlen_<sfx>, diag_scan_apply_varlen_<sfx>:
//       K4-K6 with the exact absorption (h0 argument of K4 always null here: a sequence's
//       h0 is inside its first element).
//  V4 diag_btd_lookback_varlen_<sfx>(a, b, seg, h0s, Out* h, unsigned* status, Elem* lagg,
//                                     State* lpre, int B, int T, int D, int C, int N,
//                                     int prefix_every)
//       = K7 diag_btd_lookback (same launch shape, scratch and K8 clearing first).
//  V5 diag_varlen_final_<sfx>(const Out* h, const In* h0s, const unsigned* offsets, Out* hT,
//                              int B, int T, int D, int N)
//       block 256, grid ceil(B*N*D / 256): the final states, after the scan.
// Plans: those of diagonal.cu for the [B,T,D] kernels with every data launch replaced by
// its varlen twin (P0/P1: V2; P2/P3: V1, V3, V2; P4: K8, V4), then V5. Same stream, in
// order, no synchronization.
// =====================================================================================

#include "diagonal.cuh"

namespace psv {

using psd::min_ll;

// The Diagonal policy with the exact absorption of a zero transition (DESIGN above).
template <class Base>
struct VarlenOps : Base {
    using Elem = typename Base::Elem;
    using State = typename Base::State;
    PSD_DEV static Elem combine(const Elem& x, const Elem& y) { return y.a == 0 ? y : Base::combine(x, y); }
    PSD_DEV static State apply(const Elem& e, State h) { return e.a == 0 ? e.b : Base::apply(e, h); }
};

// Steps of a packed batch: the Diagonal step, or at a sequence start the reset element
// (0, a*h0_s + b). The same interface as psd::DiagSteps (the look-back's step source).
template <class Ops>
struct VarlenSteps {
    using In = typename Ops::In;
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    const In* __restrict__ a;
    const In* __restrict__ b;
    const unsigned* __restrict__ seg;
    const In* __restrict__ h0s;
    long long N;
    long long D;
    PSD_DEV Elem step(long long bb, long long t, long long d, long long i) {
        const Elem e = Ops::make(Ops::load(a + i), Ops::load(b + i));
        const unsigned s = __ldg(seg + t);
        if (s == 0u) return e;
        const State h0 = Ops::initial(h0s, (bb * N + (s - 1u)) * D + d);
        return Elem{State(0), e.a * h0 + e.b};
    }
};

// The same resets for the packed 16-bit look-back (psd::btd_lookback_packed): which step
// is a sequence start, and its element from the widened inputs (VarlenSteps::step's).
template <class Ops>
struct VarlenResets {
    using In = typename Ops::In;
    using Elem = typename Ops::Elem;
    using State = typename Ops::State;
    static constexpr bool kAny = true;
    const unsigned* __restrict__ segs;
    const In* __restrict__ h0s;
    long long N;
    long long D;
    PSD_DEV unsigned seg(long long t) const { return __ldg(segs + t); }
    PSD_DEV Elem reset(long long bb, long long, long long d, unsigned s, const Elem& e) const {
        const State h0 = Ops::initial(h0s, (bb * N + (s - 1u)) * D + d);
        return Elem{State(0), e.a * h0 + e.b};
    }
};

// V4: 16-bit data keeps its K = 32 steps packed, two 16-bit values per register, as the
// Diagonal look-back does (kLbPacked); the resets are a bit per step. Other types go
// through the step source.
template <class Ops, int K>
PSD_DEV void lookback_varlen(const typename Ops::In* __restrict__ a, const typename Ops::In* __restrict__ b,
                             const unsigned* __restrict__ seg, const typename Ops::In* __restrict__ h0s,
                             typename Ops::Out* __restrict__ h, unsigned* __restrict__ status,
                             typename Ops::Elem* __restrict__ lagg, typename Ops::State* __restrict__ lpre, int B,
                             int T, int D, int C, int N, int prefix_every) {
    if constexpr (sizeof(typename Ops::In) == 2) {
        const VarlenResets<Ops> resets{seg, h0s, N, D};
        psd::btd_lookback_packed<Ops, psd::LbProduction, false, VarlenResets<Ops>>(
            a, b, h, nullptr, nullptr, status, lagg, lpre, B, T, D, C, prefix_every, resets);
    } else {
        VarlenSteps<Ops> src{a, b, seg, h0s, N, D};
        psd::btd_lookback_steps<Ops, VarlenSteps<Ops>, psd::LbProduction, false, K>(
            src, h, nullptr, nullptr, status, lagg, lpre, B, T, D, C, prefix_every);
    }
}

// One thread per (lane, chunk) of [B,T,D] (K1/K2's decomposition), steps from `src`.
// REDUCE writes the chunk aggregate; otherwise rescans from the carry-in (zeros without
// carries) and writes h.
template <class Ops, bool REDUCE, class Steps>
PSD_DEV void btd_chunk_steps(Steps& src, typename Ops::Out* __restrict__ h,
                             const typename Ops::State* __restrict__ carry, typename Ops::Elem* __restrict__ agg,
                             int B, int T, int D, int C) {
    const long long nchunks = (static_cast<long long>(T) + C - 1) / C;
    const long long w = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (w >= static_cast<long long>(B) * nchunks * D) return;  // no barriers in this kernel
    const long long d = w % D;
    const long long r = w / D;
    const long long c = r % nchunks;
    const long long bb = r / nchunks;
    const long long t0 = c * C;
    const long long len = min_ll(C, T - t0);
    long long i = (bb * T + t0) * D + d;
    typename Ops::State hh = (!REDUCE && carry) ? carry[w] : typename Ops::State(0);  // carry index == w
    typename Ops::Elem acc = Ops::identity();
    for (long long k = 0; k < len; ++k, i += D) {
        const typename Ops::Elem e = src.step(bb, t0 + k, d, i);
        if (REDUCE) {
            acc = Ops::combine(acc, e);
        } else {
            hh = Ops::apply(e, hh);
            h[i] = Ops::narrow(hh);
        }
    }
    if (REDUCE) agg[w] = acc;
}

template <class Ops>
PSD_DEV void varlen_final(const typename Ops::Out* __restrict__ h, const typename Ops::In* __restrict__ h0s,
                          const unsigned* __restrict__ offsets, typename Ops::Out* __restrict__ hT, int B, int T,
                          int D, int N) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<long long>(B) * N * D) return;
    const long long d = i % D;
    const long long r = i / D;
    const long long s = r % N;
    const long long bb = r / N;
    const unsigned o0 = offsets[s];
    const unsigned o1 = offsets[s + 1];
    if (o1 > o0) {
        hT[i] = h[(bb * T + o1 - 1) * D + d];
    } else {
        hT[i] = h0s ? h0s[i] : Ops::narrow(typename Ops::State(0));
    }
}

}  // namespace psv

#define PSV_KERNELS(SFX, BASE, LB)                                                                               \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_reduce_varlen_##SFX(const BASE::In* __restrict__ a, const BASE::In* __restrict__ b,           \
                                     const unsigned* __restrict__ seg, const BASE::In* __restrict__ h0s,       \
                                     BASE::Elem* __restrict__ agg, int B, int T, int D, int C, int N) {        \
        using Ops = psv::VarlenOps<BASE>;                                                                      \
        psv::VarlenSteps<Ops> src{a, b, seg, h0s, N, D};                                                       \
        psv::btd_chunk_steps<Ops, true>(src, nullptr, nullptr, agg, B, T, D, C);                               \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_reduce_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_rescan_varlen_##SFX(const BASE::In* __restrict__ a, const BASE::In* __restrict__ b,           \
                                     const unsigned* __restrict__ seg, const BASE::In* __restrict__ h0s,       \
                                     BASE::Out* __restrict__ h, const BASE::State* __restrict__ carry, int B,  \
                                     int T, int D, int C, int N) {                                             \
        using Ops = psv::VarlenOps<BASE>;                                                                      \
        psv::VarlenSteps<Ops> src{a, b, seg, h0s, N, D};                                                       \
        psv::btd_chunk_steps<Ops, false>(src, h, carry, nullptr, B, T, D, C);                                  \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_rescan_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                                         \
        diag_scan_varlen_##SFX(const BASE::Elem* __restrict__ agg, BASE::State* __restrict__ carry,            \
                               const BASE::In* __restrict__ h0, int B, int D, int n) {                         \
        psd::scan_one_level<psv::VarlenOps<BASE>>(agg, carry, h0, B, D, n);                                    \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_varlen_##SFX);                                                                \
    extern "C" __global__ void __launch_bounds__(1024)                                                         \
        diag_scan_tiles_varlen_##SFX(BASE::Elem* __restrict__ agg, BASE::Elem* __restrict__ tile_agg, int B,   \
                                     int D, int n) {                                                           \
        psd::scan_tiles<psv::VarlenOps<BASE>>(agg, tile_agg, B, D, n);                                         \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_tiles_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_scan_apply_varlen_##SFX(const BASE::Elem* __restrict__ agg,                                       \
                                     const BASE::State* __restrict__ tile_carry,                               \
                                     BASE::State* __restrict__ carry, int B, int D, int n, int TL) {           \
        psd::scan_apply<psv::VarlenOps<BASE>>(agg, tile_carry, carry, B, D, n, TL);                            \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_apply_varlen_##SFX);                                                          \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        diag_btd_lookback_varlen_##SFX(const BASE::In* __restrict__ a, const BASE::In* __restrict__ b,         \
                                       const unsigned* __restrict__ seg, const BASE::In* __restrict__ h0s,     \
                                       BASE::Out* __restrict__ h, unsigned* __restrict__ status,               \
                                       BASE::Elem* __restrict__ lagg, BASE::State* __restrict__ lpre, int B,   \
                                       int T, int D, int C, int N, int prefix_every) {                         \
        /* The planner gives 16-bit data 32 steps per thread (kLbSteps16). */                                  \
        constexpr int K = sizeof(BASE::In) == 2 ? psd::kLbSteps16 : psd::kLbSteps;                               \
        psv::lookback_varlen<psv::VarlenOps<BASE>, K>(a, b, seg, h0s, h, status, lagg, lpre, B, T, D, C, N,      \
                                                     prefix_every);                                            \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_lookback_varlen_##SFX);                                                        \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_varlen_final_##SFX(const BASE::Out* __restrict__ h, const BASE::In* __restrict__ h0s,             \
                                const unsigned* __restrict__ offsets, BASE::Out* __restrict__ hT, int B,       \
                                int T, int D, int N) {                                                         \
        psv::varlen_final<BASE>(h, h0s, offsets, hT, B, T, D, N);                                              \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_varlen_final_##SFX)

PSV_KERNELS(f32, psd::OpsF32, 4);
PSV_KERNELS(f64, psd::OpsF64, 2);
PSV_KERNELS(f16, psd::OpsF16, 4);
PSV_KERNELS(bf16, psd::OpsBF16, 4);
