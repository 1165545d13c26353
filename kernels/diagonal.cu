// diagonal.cu: the Diagonal family h_t = a_t * h_{t-1} + b_t (per lane), evaluated
// in parallel over time with a chunked, work-efficient scan (SPEC §2).
//
// =====================================================================================
// LAUNCH CONTRACT (the Rust orchestration implements exactly this)
// =====================================================================================
//
// Notation. B batch rows, T >= 1 steps, D >= 1 channels; a "lane" is one (b, d) pair,
// lane = b*D + d, lanes = B*D. C >= 1 is the chunk length chosen by the planner,
// NC = ceil(T / C) the number of chunks per lane. Every integer argument is a C `int`
// (KernelArg::I32) and must be >= 1 and < 2^31; products such as B*T*D are formed in
// 64 bits inside the kernels. Every pointer argument is KernelArg::Ptr; "nullable"
// ones may be 0. Buffers passed to one launch never alias each other. Dynamic shared
// memory is 0 for every kernel (shared memory is static, at most 32 KiB).
//
// Layouts. BTD: a, b, h are [B,T,D], element (b,t,d) at (b*T + t)*D + d.
//          BDT: a, b, h are [B,D,T], element (b,d,t) at (b*D + d)*T + t.
//          h0 and hT are [B,D] in both layouts (element lane = b*D + d).
//          [B,T,1] and [B,1,T] are the same bytes: for D == 1 prefer the BDT kernels.
//
// Types. Every kernel exists once per data type, the name ending in the suffix:
//   suffix  storage S (a, b, h0, h, hT)   compute   Elem (aggregate)      State (carry)
//   _f32    float                          float     {float a, b}   8 B    float  4 B
//   _f16    __half (u16 bits)              float     {float a, b}   8 B    float  4 B
//   _bf16   __nv_bfloat16 (u16 bits)       float     {float a, b}   8 B    float  4 B
//   _f64    double                         double    {double a, b} 16 B    double 8 B
//   _depth  unsigned (see DEPTH below)     -         unsigned       4 B    unsigned 4 B
// An Elem {A, b} is the affine map h -> A*h + b of a run of steps, stored as two
// consecutive values (A first). Carries (State) are kept in the compute type, so
// half-precision storage is rounded once, when h is written.
//
// Kernels (argument lists in order; "In" = S, "Out" = S; for _depth both are unsigned):
//
//  K1 diag_btd_reduce_<sfx>(const In* a, const In* b, Elem* agg, int B, int T, int D, int C)
//  K1 diag_bdt_reduce_<sfx>(same arguments)
//       Phase 1: agg[(b*NC + c)*D + d] = the aggregate of chunk c of lane (b,d).
//  K2 diag_btd_rescan_<sfx>(const In* a, const In* b, Out* h, Out* hT, const State* carry,
//                            const In* h0, int B, int T, int D, int C)
//  K2 diag_bdt_rescan_<sfx>(same arguments)
//       Phase 3: runs every chunk from its carry-in carry[(b*NC + c)*D + d] and writes
//       h (nullable: then only hT is produced) and hT (nullable) from the last chunk.
//       carry == 0 means "every chunk starts from h0": only valid with NC == 1 (C >= T),
//       which is the single-pass plan. h0 nullable (0 = zeros); h0 is only read when
//       carry == 0.
//  K3 diag_btd_sequential_<sfx>(const In* a, const In* b, Out* h, Out* hT, const In* h0,
//                                int B, int T, int D)
//  K3 diag_bdt_sequential_<sfx>(same arguments)
//       The baseline: one thread per lane loops over all T steps (depth T).
//  K4 diag_scan_<sfx>(const Elem* agg, State* carry, const In* h0, int B, int D, int n)
//       Phase 2 (one level): per lane, exclusive Blelloch scan of the n aggregates
//       agg[(b*n + i)*D + d], i < n, and carry[(b*n + i)*D + d] = apply(prefix_i, h0[lane])
//       (h0 nullable = zeros; chunk 0 gets h0 itself, via the identity prefix).
//       Requires n <= 2*blockDim.x (the launch traps otherwise).
//  K5 diag_scan_tiles_<sfx>(Elem* agg, Elem* tile_agg, int B, int D, int n)
//       Phase 2a (two levels): tiles of TL = 2*blockDim.x aggregates; NTL = ceil(n / TL).
//       In place: agg[(b*n + i)*D + d] <- exclusive prefix of i WITHIN its tile;
//       tile_agg[(b*NTL + j)*D + d] <- aggregate of tile j.
//  K6 diag_scan_apply_<sfx>(const Elem* agg, const State* tile_carry, State* carry,
//                            int B, int D, int n, int TL)
//       Phase 2c (two levels): carry[(b*n + i)*D + d] =
//           apply(agg[(b*n + i)*D + d], tile_carry[(b*NTL + i/TL)*D + d]).
//  K7 diag_bdt_lookback_<sfx>(const In* a, const In* b, Out* h, Out* hT, const In* h0,
//                             unsigned* status, Elem* lagg, State* lpre, int B, int T, int D,
//                             int C, int prefix_every)
//  K7 diag_btd_lookback_<sfx>(same arguments)
//       Plan P4, the whole scan in one pass with a decoupled look-back (see the section
//       "Single pass with decoupled look-back" below). Chains: BDT one per lane
//       (chains = B*D, 1 channel each); BTD one per batch row and group of 32 channels
//       (chains = B*ceil(D/32), 32 channels each). C = blockDim.x * 16 (BDT) or
//       (blockDim.x / 32) * 16 (BTD), else the launch traps. status: u32[chains*NC + 1],
//       all zero (K8); lagg: Elem[chains*NC*channels]; lpre: State[chains*NC*channels].
//       prefix_every >= 1 (1 in production; n > 1 publishes inclusive prefixes only for
//       chunks c with c % n == 0, a test hook that forces the aggregate path; the _depth
//       kernels ignore it). h nullable (only hT), hT nullable, h0 nullable (zeros).
//       A block whose ticket is >= chains*NC (a grid larger than the contract's) does
//       nothing. With -DPS_LB_SPIN_CAP=N (N > 0; the device bundle's build and, as 2^24,
//       the emulator's), a block that polls one status word N times traps (the launch
//       fails) instead of spinning forever on a predecessor that never publishes.
//  K8 diag_lb_clear(unsigned* status, int n)      (no dtype suffix)
//       status[0..n) = 0.
//
// Launch shapes (grid and block are (x,1,1) unless noted; shared bytes always 0):
//   diag_btd_reduce / diag_btd_rescan : block = NB in [32, 256] (any, multiple of 32
//        recommended); grid = ceil(B*NC*D / NB). One thread per (lane, chunk), consecutive
//        threads = consecutive channels. Prefer NB = 64 when B*NC*D < 132*2048 so the
//        blocks spread over all SMs, else 128 or 256.
//   diag_btd_sequential : as above with NC = 1: grid = ceil(B*D / NB).
//   diag_bdt_reduce / diag_bdt_rescan : block = NT, a multiple of 32 in [32, 256];
//        grid = B*D*NC (block id = lane*NC + c). The block walks its chunk in tiles of
//        NT*K steps, K = 8 steps per thread (two 16-byte loads per array for f32, one
//        for f16/bf16, four for f64). Recommended NT = 256; for short chunks
//        NT = clamp(32*ceil(min(C,T) / (32*K)), 32, 256).
//   diag_bdt_sequential : block = NB in [32, 256]; grid = ceil(B*D / NB).
//   diag_scan : block = NS, a power of two in [32, 1024] with 2*NS >= n (recommended
//        NS = clamp(next_pow2(ceil(n/2)), 32, 1024)); grid = B*D.
//   diag_scan_tiles : block = NS1 power of two in [32, 1024], TL = 2*NS1;
//        grid = (B*D, NTL, 1), NTL = ceil(n / TL) (<= 2048 so that the top level fits).
//   diag_scan_apply : block = 256; grid = ceil(B*D*n / 256).
//   diag_<L>_lookback : grid = chains * NC (one block per chain and chunk, in any order:
//        the kernel takes tickets); block NT = 32 * ceil(min(T, 4096) / 512) for BDT
//        (C = 16*NT <= 4096), 32 * W with W = clamp(next_pow2(ceil(T / 16)), 1, 8) for BTD
//        (C = 16*W <= 128).
//   diag_lb_clear : block = 256; grid = ceil(n / 256).
//   Vector (16-byte) accesses in the BDT kernels are used when T and C are multiples of
//   16/sizeof(S) and a, b (loads) / h (stores) are 16-byte aligned; otherwise the kernels
//   fall back to scalar accesses (correct for any shape and any element alignment).
//
// Plans (the exact launch sequences). Scratch sizes are in elements of the type named.
//   P0 sequential:    diag_<L>_sequential(a, b, h, hT, h0, B, T, D).               1 launch
//      (For BTD, P0 and P1 run the same code: one thread per lane over all T steps.)
//   P1 single pass (NC == 1, i.e. C >= T; the plan when B*D lanes fill the GPU):
//                     diag_<L>_rescan(a, b, h, hT, carry=0, h0, B, T, D, C=T).      1 launch
//   P2 chunked, one-level scan (2 <= NC <= 2048). Scratch: agg Elem[B*D*NC],
//      carry State[B*D*NC].
//        1. diag_<L>_reduce(a, b, agg, B, T, D, C)
//        2. diag_scan(agg, carry, h0, B, D, NC)          block NS >= NC/2
//        3. diag_<L>_rescan(a, b, h, hT, carry, h0, B, T, D, C)                  3 launches
//   P3 chunked, two-level scan (NC <= TL*2048 = 4,194,304 with TL = 2048). Scratch: agg
//      Elem[B*D*NC], carry State[B*D*NC], tile_agg Elem[B*D*NTL], tile_carry State[B*D*NTL].
//        1. diag_<L>_reduce(a, b, agg, B, T, D, C)
//        2. diag_scan_tiles(agg, tile_agg, B, D, NC)      block NS1, TL = 2*NS1
//        3. diag_scan(tile_agg, tile_carry, h0, B, D, NTL) block NS2 >= NTL/2
//        4. diag_scan_apply(agg, tile_carry, carry, B, D, NC, TL)
//        5. diag_<L>_rescan(a, b, h, hT, carry, h0, B, T, D, C)                  5 launches
//   P4 look-back (chains*NC + 1 <= 2^31 - 1). Scratch: status u32[chains*NC + 1],
//      lagg Elem[chains*NC*channels], lpre State[chains*NC*channels].
//        1. diag_lb_clear(status, chains*NC + 1)
//        2. diag_<L>_lookback(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, 1)     2 launches
//   The planner must keep NC <= 4,194,304 (i.e. C >= T / 4,194,304); P2 also works for
//   NC == 1 but P1 is the same result in one launch. Every launch of a plan goes on the
//   same stream, in order; no launch synchronizes.
//   Bytes moved per element (f32): P0/P1/P4 12 (read a, b, write h); P2/P3 20 (a, b read
//   twice) plus the scratch (16 B per chunk and lane, negligible for C >= 64; P4: 12 B
//   per chunk and channel plus 4 B per chunk and chain).
//
// REVERSE. diag_<L>_reduce_rev_<sfx>, diag_<L>_rescan_rev_<sfx>, diag_<L>_sequential_rev_<sfx>
// and diag_<L>_lookback_rev_<sfx> (L = btd, bdt; every suffix) take the same arguments,
// launch shapes, scratch and plans as K1, K2, K3, K7 and run the scan right to left:
// h_t = a_t * h_{t+1} + b_t for t = T-1 down to 0, starting from h0 (the state "after"
// t = T-1), and hT receives the state at t = 0. Inside, step s of the scan is time
// t = T-1-s: chunk c covers times [T - (c+1)*C, T - c*C) (clamped at 0), carries and
// look-back chains run in s, so every formula of this contract (depth included) holds
// with t replaced by s = T-1-t. The 16-byte vectors are the same aligned ones (T, C and
// the K steps of a thread are multiples of the vector width), their values reversed.
// The phase-2 kernels (K4-K6) are the same for both directions.
//
// DEPTH. The _depth kernels are the same templates instantiated over the depth-counter
// element (ps::DepthCounter: combine = max(d1, d2) + 1, identity 0; apply(e, h) =
// max(e, h) + 1). They read nothing from a, b, h0 (pass 0 or anything), treat every
// input step, h0 and padding as depth 0, and write unsigned depths where the other types
// write h / hT / aggregates / carries, with the same shapes and launch sequences. They
// mirror K = 8 (f32/f16/bf16/f64 all use K = 8). The measured depth of every output
// follows these formulas exactly (the selftest checks every element):
//   hb(x) = floor(log2 x), pc(x) = popcount(x), bl(x) = bit length (bl(0) = 0).
//   Blelloch exclusive prefix over leaves of depth L:  P(L, i) = 0 if i == 0,
//        else L + hb(i) + pc(i).  A tile/level aggregate of 2^k full leaves: L + k.
//   Chunk aggregate depth L (full chunk of C steps):
//        BTD: L = C                       (serial fold from the identity)
//        BDT: L = K + 3 + nw + J          (nw = NT/32 warps, J = ceil(C / (NT*K)) tiles)
//   Carry depth dc(c) of chunk c:
//        P0/P1: 0 (h0).   P2: P(L, c) + 1.
//        P3: with TL and c = j*TL + r: max(P(L, r), P(L + log2 TL, j) + 1) + 1.
//   Output depth (1-based step index i inside chunk c):
//        BTD (and both sequential kernels, with dc = 0, one chunk):  dc(c) + i.
//        BDT: step i sits in tile q = (i-1) / (NT*K), thread u = ((i-1) mod (NT*K)) / K
//        (warp w = u / 32, lane l = u mod 32), position k = (i-1) mod K. Tile-in depth
//        e_0 = dc(c), e_q = max(dc(c), K + 3 + nw) + q for q >= 1;
//        dW = 0 if w == 0 else K + 3 + w;  dx = 0 if l == 0 else K - 1 + bl(l - 1);
//        depth = max(dx, max(dW, e_q) + 1) + 1 + (k + 1).
//   hT has the depth of h at t = T (the same register is stored).
//   Plan depth (the maximum over all outputs): depth is non-decreasing along a BTD chunk
//   and along a BDT thread's K steps, so it is the maximum of the formula over the last
//   real step of every chunk (BTD) or of every thread (BDT); or simply over every t.
//   Worked examples: P2 BTD, T = 1024, C = 64, NC = 16: L = 64, worst chunk c = 15
//   (hb + pc = 7): dc = 72, depth 136 (~ 2C + 2 log2 NC). P2 BDT, T = 2^24, C = 2^16
//   (NC = 256), NT = 256: nw = 8, J = 32, L = 51, dc(255) = 67, e_31 = 98, depth 108
//   (the sequential kernel: 16,777,216).
//   P4 (look-back), K = 16, nw = blockDim.x / 32. The _depth kernels take the worst case
//   of the look-back, deterministically: every block waits for its predecessor's inclusive
//   prefix (the data kernels, which may fold aggregates instead, are never deeper). Carry-in
//   depth of chunk c: 0 for c = 0, else BDT: K + 3 + nw + c, BTD: K + nw - 2 + c.
//        BDT: step i of the chunk (0-based): the tile formula above with K = 16, e = carry-in,
//             u = i / K, k = i mod K.
//        BTD: step i in warp w = i / K, position k = i mod K:
//             depth = max(dW, carry-in) + 1 + (k + 1), dW = 0 for w = 0, else K + w - 2.
//   So P4's depth grows by one per chunk (NC + O(K)): the single pass trades depth for bytes.
//   The CPU engine's plan depth differs: it has no intra-chunk warp/block scans.
//
// Errors. Contract violations that would corrupt memory trap (__trap(): the launch fails;
// in the emulator PS_EMU_ERR_KERNEL_FAULT): BDT reduce/rescan with blockDim.x not a
// multiple of 32, diag_scan with n > 2*blockDim.x. Shapes are not otherwise validated
// here: the Rust side checks them and returns typed errors before launching.
//
// Guarantees the tests rely on: every element of h (when non-null) and hT (when non-null)
// is written exactly once; nothing outside them is; hT is bit-identical to h at t = T;
// results do not depend on the block scheduling order or on the thread interleaving.
//
// Performance design (H100; not measurable in this session, see the report):
//   * BTD: a warp reads 32 consecutive channels of one time step (128 B for f32), each
//     thread walks its chunk serially with a double-buffered register prefetch of 16
//     steps (8 for f64), i.e. 16-32 steps of a and b in flight per thread; no shared
//     memory, no barriers. ~100-110 registers (f32), no spills.
//   * BDT: 16-byte loads/stores, one __syncthreads per tile of NT*8 steps, warp shuffles
//     for the intra-warp scan; 39 registers (f32) -> 6 blocks of 256 per SM.
//   * P1 moves the minimum 12 B/element (f32); P2/P3 read a, b twice (20 B/element),
//     so they are capped at 60% of copy bandwidth: use P1 whenever lanes fill the GPU,
//     else P4, which also moves 12 B/element (its chunk stays in registers: 16 steps per
//     thread) and spreads one lane over as many blocks as T / 4096 (BDT).
//   * P4 (ptxas, sm_90): __launch_bounds__(256, 4): 64 registers for f32, f16, bf16, so 4
//     blocks of 256 per SM, i.e. ~128 KiB of a, b in flight per SM for f32 (Little's law
//     asks ~20 KiB at 3.35 TB/s and ~800 ns); f64 126-128 registers, 2 blocks. No spills on
//     [B,D,T]; on [B,T,D] the acquire/release status accesses cost 8-44 B of spills per
//     thread (values live across the look-back, touched once per block). f16/bf16 take 32
//     steps per thread (packed), so their blocks move as many bytes as f32 blocks.
//   * P4 [B,T,D] look-back window: warp 0 polls 32 predecessors' status words at once, all
//     warps then load the aggregates in front of the nearest prefix (one slot per warp per
//     round trip, <= 4 round trips for 8 warps) and warp 0 folds them in order from shared
//     memory (previously one lane-serial L2 round trip per predecessor).
//   * P4's results are exact whichever way the look-back finds a carry, but not bitwise
//     reproducible from run to run (folding aggregates or taking a prefix rounds
//     differently); P0-P3 are deterministic.
//
// Emulator. Everything here stays inside the CUDA subset of kernels/emu/README.md, so the
// same source runs on the CPU emulator; kernels/emu/diagonal_selftest.sh tests it.
// -DPS_DIAG_DROP_BARRIER=1 removes one __syncthreads from the Blelloch down-sweep (a
// deliberately broken build, used by the selftest to show the race is caught);
// -DPS_DIAG_DROP_BARRIER=2 removes the [B,D,T] tile barrier of the reverse kernels only.
// =====================================================================================

#include "diagonal.cuh"


// ---------------------------------------------------------------------------------------
// extern "C" instantiations: one set of nine kernels per data type.
// ---------------------------------------------------------------------------------------

#define PSD_KERNELS(SFX, OPS, LB)                                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_reduce_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                    \
                              OPS::Elem* __restrict__ agg, int B, int T, int D, int C) {                       \
        psd::btd_chunk<OPS, true>(a, b, nullptr, nullptr, nullptr, nullptr, agg, B, T, D, C);                  \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_reduce_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_rescan_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                    \
                              OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                             \
                              const OPS::State* __restrict__ carry, const OPS::In* __restrict__ h0, int B,     \
                              int T, int D, int C) {                                                           \
        psd::btd_chunk<OPS, false>(a, b, h, hT, carry, h0, nullptr, B, T, D, C);                               \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_rescan_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_sequential_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                         \
                                  const OPS::In* __restrict__ h0, int B, int T, int D) {                       \
        psd::btd_chunk<OPS, false>(a, b, h, hT, nullptr, h0, nullptr, B, T, D, T);                             \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_sequential_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_reduce_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                    \
                              OPS::Elem* __restrict__ agg, int B, int T, int D, int C) {                       \
        psd::bdt_chunk<OPS, false>(a, b, nullptr, nullptr, nullptr, nullptr, agg, B, T, D, C);                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_reduce_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_rescan_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                    \
                              OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                             \
                              const OPS::State* __restrict__ carry, const OPS::In* __restrict__ h0, int B,     \
                              int T, int D, int C) {                                                           \
        psd::bdt_chunk<OPS, true>(a, b, h, hT, carry, h0, nullptr, B, T, D, C);                                \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_rescan_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_sequential_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                         \
                                  const OPS::In* __restrict__ h0, int B, int T, int D) {                       \
        psd::bdt_sequential<OPS>(a, b, h, hT, h0, B, T, D);                                                    \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_sequential_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(1024)                                                         \
        diag_scan_##SFX(const OPS::Elem* __restrict__ agg, OPS::State* __restrict__ carry,                     \
                        const OPS::In* __restrict__ h0, int B, int D, int n) {                                 \
        psd::scan_one_level<OPS>(agg, carry, h0, B, D, n);                                                     \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_##SFX);                                                                       \
    extern "C" __global__ void __launch_bounds__(1024)                                                         \
        diag_scan_tiles_##SFX(OPS::Elem* __restrict__ agg, OPS::Elem* __restrict__ tile_agg, int B, int D,     \
                              int n) {                                                                         \
        psd::scan_tiles<OPS>(agg, tile_agg, B, D, n);                                                          \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_tiles_##SFX);                                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_scan_apply_##SFX(const OPS::Elem* __restrict__ agg, const OPS::State* __restrict__ tile_carry,    \
                              OPS::State* __restrict__ carry, int B, int D, int n, int TL) {                   \
        psd::scan_apply<OPS>(agg, tile_carry, carry, B, D, n, TL);                                             \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_scan_apply_##SFX);                                                                \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        diag_bdt_lookback_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                  \
                                OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                           \
                                const OPS::In* __restrict__ h0, unsigned* __restrict__ status,                 \
                                OPS::Elem* __restrict__ lagg, OPS::State* __restrict__ lpre, int B, int T,     \
                                int D, int C, int prefix_every) {                                              \
        psd::bdt_lookback<OPS>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_lookback_##SFX);                                                               \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        diag_btd_lookback_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                  \
                                OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                           \
                                const OPS::In* __restrict__ h0, unsigned* __restrict__ status,                 \
                                OPS::Elem* __restrict__ lagg, OPS::State* __restrict__ lpre, int B, int T,     \
                                int D, int C, int prefix_every) {                                              \
        psd::btd_lookback<OPS>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);                 \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_lookback_##SFX)

// Reverse scans (REVERSE above): the kernels that touch a, b, h, hT, with the same
// arguments, launch shapes and scratch as their forward namesakes; phase 2 (diag_scan,
// diag_scan_tiles, diag_scan_apply) works on chunk indices only and is shared.
#define PSD_REV_KERNELS(SFX, OPS, LB)                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_reduce_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Elem* __restrict__ agg, int B, int T, int D, int C) {                   \
        psd::btd_chunk<OPS, true, true>(a, b, nullptr, nullptr, nullptr, nullptr, agg, B, T, D, C);            \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_reduce_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_rescan_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                         \
                                  const OPS::State* __restrict__ carry, const OPS::In* __restrict__ h0, int B, \
                                  int T, int D, int C) {                                                       \
        psd::btd_chunk<OPS, false, true>(a, b, h, hT, carry, h0, nullptr, B, T, D, C);                         \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_rescan_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_btd_sequential_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,            \
                                      OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                     \
                                      const OPS::In* __restrict__ h0, int B, int T, int D) {                   \
        psd::btd_chunk<OPS, false, true>(a, b, h, hT, nullptr, h0, nullptr, B, T, D, T);                       \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_sequential_rev_##SFX);                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_reduce_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Elem* __restrict__ agg, int B, int T, int D, int C) {                   \
        psd::bdt_chunk<OPS, false, true>(a, b, nullptr, nullptr, nullptr, nullptr, agg, B, T, D, C);           \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_reduce_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_rescan_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,                \
                                  OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                         \
                                  const OPS::State* __restrict__ carry, const OPS::In* __restrict__ h0, int B, \
                                  int T, int D, int C) {                                                       \
        psd::bdt_chunk<OPS, true, true>(a, b, h, hT, carry, h0, nullptr, B, T, D, C);                          \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_rescan_rev_##SFX);                                                             \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        diag_bdt_sequential_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,            \
                                      OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                     \
                                      const OPS::In* __restrict__ h0, int B, int T, int D) {                   \
        psd::bdt_sequential<OPS, true>(a, b, h, hT, h0, B, T, D);                                              \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_sequential_rev_##SFX);                                                         \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        diag_bdt_lookback_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,              \
                                    OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                       \
                                    const OPS::In* __restrict__ h0, unsigned* __restrict__ status,             \
                                    OPS::Elem* __restrict__ lagg, OPS::State* __restrict__ lpre, int B, int T, \
                                    int D, int C, int prefix_every) {                                          \
        psd::bdt_lookback<OPS, psd::LbProduction, true>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C,       \
                                                        prefix_every);                                         \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_bdt_lookback_rev_##SFX);                                                           \
    extern "C" __global__ void __launch_bounds__(256, LB)                                                      \
        diag_btd_lookback_rev_##SFX(const OPS::In* __restrict__ a, const OPS::In* __restrict__ b,              \
                                    OPS::Out* __restrict__ h, OPS::Out* __restrict__ hT,                       \
                                    const OPS::In* __restrict__ h0, unsigned* __restrict__ status,             \
                                    OPS::Elem* __restrict__ lagg, OPS::State* __restrict__ lpre, int B, int T, \
                                    int D, int C, int prefix_every) {                                          \
        psd::btd_lookback<OPS, psd::LbProduction, true>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C,       \
                                                        prefix_every);                                         \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_btd_lookback_rev_##SFX)

// LB: look-back blocks of 256 per SM that ptxas must fit (4 -> 64 registers: a third more
// bytes in flight than the 3 that ~70 registers allow; f64 needs its ~128).
PSD_KERNELS(f32, psd::OpsF32, 4);
PSD_KERNELS(f64, psd::OpsF64, 2);
PSD_KERNELS(f16, psd::OpsF16, 4);
PSD_KERNELS(bf16, psd::OpsBF16, 4);
PSD_KERNELS(depth, psd::OpsDepth, 4);
PSD_REV_KERNELS(f32, psd::OpsF32, 4);
PSD_REV_KERNELS(f64, psd::OpsF64, 2);
PSD_REV_KERNELS(f16, psd::OpsF16, 4);
PSD_REV_KERNELS(bf16, psd::OpsBF16, 4);
PSD_REV_KERNELS(depth, psd::OpsDepth, 4);

// Depth of the 16-bit look-back geometry (32 steps per thread: psd::bdt_lookback_packed,
// psd::btd_lookback_packed): the depth counter on chunks of blockDim.x * 32 ([B,D,T]) and
// blockDim.x / 32 * 32 ([B,T,D]) steps, with the f32 depth kernels' arguments.
#define PSD_DEPTH32(L, DIR, REVB)                                                                              \
    extern "C" __global__ void __launch_bounds__(256, 4) diag_##L##_lookback_##DIR##depth32(                  \
        const unsigned* __restrict__ a, const unsigned* __restrict__ b, unsigned* __restrict__ h,             \
        unsigned* __restrict__ hT, const unsigned* __restrict__ h0, unsigned* __restrict__ status,            \
        unsigned* __restrict__ lagg, unsigned* __restrict__ lpre, int B, int T, int D, int C,                 \
        int prefix_every) {                                                                                    \
        psd::L##_lookback<psd::OpsDepth, psd::LbProduction, REVB, psd::kLbSteps16>(                           \
            a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);                                    \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_##L##_lookback_##DIR##depth32)
PSD_DEPTH32(bdt, , false);
PSD_DEPTH32(btd, , false);
PSD_DEPTH32(bdt, rev_, true);
PSD_DEPTH32(btd, rev_, true);

// Emulator tests only, never launched on a GPU (a trap ends the process's CUDA context; they
// are in the PTX because the emulated backend only launches kernels the PTX has): the
// look-back kernels with psd::LbProbe, i.e. chunk 1 of chain 0 never publishes and its
// successors must trap after a few thousand polls. Same arguments and launch shape as K7.
#define PSD_PROBE(L, SFX, OPS)                                                                                 \
    extern "C" __global__ void diag_##L##_lookback_probe_##SFX(                                                \
        const OPS::In* __restrict__ a, const OPS::In* __restrict__ b, OPS::Out* __restrict__ h,                \
        OPS::Out* __restrict__ hT, const OPS::In* __restrict__ h0, unsigned* __restrict__ status,              \
        OPS::Elem* __restrict__ lagg, OPS::State* __restrict__ lpre, int B, int T, int D, int C,               \
        int prefix_every) {                                                                                    \
        psd::L##_lookback<OPS, psd::LbProbe>(a, b, h, hT, h0, status, lagg, lpre, B, T, D, C, prefix_every);   \
    }                                                                                                          \
    PS_REGISTER_KERNEL(diag_##L##_lookback_probe_##SFX)
PSD_PROBE(btd, f32, psd::OpsF32);
PSD_PROBE(bdt, f32, psd::OpsF32);
PSD_PROBE(btd, depth, psd::OpsDepth);
PSD_PROBE(bdt, depth, psd::OpsDepth);

// Zeroes the look-back status words and the ticket counter (n words) before P4.
extern "C" __global__ void __launch_bounds__(256) diag_lb_clear(unsigned* __restrict__ status, int n) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) status[i] = 0u;
}
PS_REGISTER_KERNEL(diag_lb_clear);
