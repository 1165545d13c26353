// newton.cu: the nonlinear cells of the Newton solver (src/newton/).
//
// One Newton iteration on the device is: an ASSEMBLE launch that evaluates
// the cell at the current guess of every state at once and writes the scan
// inputs of the linearized recurrence, A_t and b_t = f(h_{t-1}, x_t) − A_t
// h_{t-1}, while reducing the residual max|h_t − f(h_{t-1}, x_t)| and
// max|h_t| into two device words; then the scan of A_t's family (the
// Diagonal kernels, or the BlockDiagonal ones for full LSTM/Elman
// Jacobians) writes the next guess. Only the two words come back to the
// host per iteration.
//
// Cells (inputs pre-projected, f32 storage and math; the Rust twins in
// src/newton/cell.rs are the same formulas, line for line):
//   gru:   h: [n], x_t = [x_z | x_r | x_c]: [3n], params = [a_z | a_r | a_c]
//   lstm:  h: [2n] interleaved (c_j, h_j), x_t = [x_f | x_o | x_g]: [3n],
//          params = [a_f | a_o | a_g]
//   elman: h: [n], x_t: [n], params = W: [n, n] row-major
//
// Forms of A_t (argument `form`):
//   0  Picard: A_t = 0, b_t = f; `a` is not touched (may be null).
//   1  diagonal: a: [B,T,N] — gru's exact Jacobian, lstm/elman's diagonal
//      (quasi-Newton).
//   2  full: lstm a: [B,T,n,2,2] (2x2 block per unit), elman a: [B,T,n,n].
// `scale` multiplies A_t (damped Newton's Jacobian shrink 1/(1+λ); 1 else).
//
// stats: two uint32 words, zeroed by the host before each assemble:
//   stats[0] = bits of max_t,i |h_t,i − f_t,i|   (NaN wins: its bits are larger)
//   stats[1] = bits of max_t,i |h_t,i|
// Non-negative floats order like their bit patterns, so atomicMax on the
// bits is a float max (CUDA has no float atomicMax).
//
// Fused iteration (newton_gru_lookback): on a Diagonal look-back plan (P4) over
// [B,T,n], gru's assemble runs inside the scan's load phase, so an iteration is one
// pass (x 12 B + guess 4 B + next guess 4 B per state entry) instead of an assemble
// (24 B) plus a scan; src/newton/gpu.rs uses it for gru's diagonal forms (Newton,
// quasi-Newton, damped without relaxation) and rotates guess/next/best buffers.
//
// Launch contract (every kernel but newton_gru_lookback, whose contract is the
// look-back's): 1-D grid, any grid and block size (the
// grid-stride loops cover every index once; block size a multiple of 32 so
// the warp reduction has full warps). h0 may be null (zeros). All pointers
// address the sizes above; the Rust side (src/newton/gpu.rs) checks them.

#include <stdint.h>

#include "diagonal.cuh"
#include "emu/portable.cuh"
#include "parascan.cuh"

namespace {

__host__ __device__ inline float sigmoidf_(float z) { return 1.0f / (1.0f + expf(-z)); }

// Max that keeps NaN (fmaxf would drop it and hide a diverged iterate).
__host__ __device__ inline float max_nan(float a, float b) {
    return (b > a || b != b) ? b : a;
}

// ---- gru: one unit -> (h', dh'/dh) ----------------------------------------
__device__ inline void gru_unit(float az, float ar, float ac, float h, float xz, float xr,
                                float xc, float* out, float* jac) {
    const float z = sigmoidf_(xz + az * h);
    const float r = sigmoidf_(xr + ar * h);
    const float c = tanhf(xc + ac * (r * h));
    *out = (1.0f - z) * h + z * c;
    const float dz = z * (1.0f - z) * az;
    const float dr = r * (1.0f - r) * ar;
    const float dc = (1.0f - c * c) * ac * (r + h * dr);
    *jac = (1.0f - z) + (c - h) * dz + z * dc;
}

// ---- lstm: one unit -> (c', h') and [[dc'/dc, dc'/dh], [dh'/dc, dh'/dh]] --
__device__ inline void lstm_unit(float af, float ao, float ag, float c, float h, float xf,
                                 float xo, float xg, float* c2_out, float* h2_out,
                                 float blk[4]) {
    const float f = sigmoidf_(xf + af * h);
    const float o = sigmoidf_(xo + ao * h);
    const float g = tanhf(xg + ag * h);
    const float c2 = f * c + (1.0f - f) * g;
    const float tc = tanhf(c2);
    *c2_out = c2;
    *h2_out = o * tc;
    const float df = f * (1.0f - f) * af;
    const float dog = o * (1.0f - o) * ao;
    const float dg = (1.0f - g * g) * ag;
    const float dc_dc = f;
    const float dc_dh = (c - g) * df + (1.0f - f) * dg;
    const float dt = o * (1.0f - tc * tc);
    blk[0] = dc_dc;
    blk[1] = dc_dh;
    blk[2] = dt * dc_dc;
    blk[3] = dog * tc + dt * dc_dh;
}

// Per-thread residual/|h| maxima, reduced over the block (shuffles, then the warps'
// results through shared memory) and published with one atomicMax per stats word per
// block: a warp-level atomic made 8 same-address atomics per 256-thread block, which
// serialize at L2 on every block of an iteration. Every thread of the block must call it
// (full mask and a __syncthreads); blockDim.x is a multiple of 32, at most 1024.
__device__ inline void publish_stats(float res, float hmax, unsigned* stats) {
    PS_SHARED(float, s_res, 32);
    PS_SHARED(float, s_hmax, 32);
    for (int off = 16; off > 0; off >>= 1) {
        res = max_nan(res, __shfl_xor_sync(PS_FULL_MASK, res, off));
        hmax = fmaxf(hmax, __shfl_xor_sync(PS_FULL_MASK, hmax, off));
    }
    const unsigned wid = threadIdx.x >> 5, lid = threadIdx.x & 31u;
    if (lid == 0) {
        s_res[wid] = res;
        s_hmax[wid] = hmax;
    }
    __syncthreads();
    if (wid == 0) {
        const unsigned nw = blockDim.x >> 5;
        res = lid < nw ? s_res[lid] : 0.0f;
        hmax = lid < nw ? s_hmax[lid] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) {
            res = max_nan(res, __shfl_xor_sync(PS_FULL_MASK, res, off));
            hmax = fmaxf(hmax, __shfl_xor_sync(PS_FULL_MASK, hmax, off));
        }
        if (lid == 0) {
            atomicMax(&stats[0], __float_as_uint(res));
            atomicMax(&stats[1], __float_as_uint(hmax));
        }
    }
}

__device__ inline unsigned long long grid_tid() {
    return static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline unsigned long long grid_stride() {
    return static_cast<unsigned long long>(gridDim.x) * blockDim.x;
}

// The state h_{t-1} feeding step s = b*T + t (h0 or zero at t = 0), entry i
// of an N-vector.
__device__ inline float prev_state(const float* h, const float* h0, unsigned long long s,
                                   unsigned long long T, unsigned long long N,
                                   unsigned long long i) {
    const unsigned long long t = s % T;
    if (t > 0) return h[(s - 1) * N + i];
    return h0 ? h0[(s / T) * N + i] : 0.0f;
}

}  // namespace

// One thread per (step, unit): index = s*n + i over B*T*n.
extern "C" __global__ void newton_gru_assemble(const float* __restrict__ x,
                                               const float* __restrict__ h,
                                               const float* __restrict__ h0,
                                               const float* __restrict__ params,
                                               float* __restrict__ a, float* __restrict__ b,
                                               unsigned* __restrict__ stats,
                                               unsigned long long B, unsigned long long T,
                                               unsigned long long n, int form, float scale) {
    float res = 0.0f, hmax = 0.0f;
    const unsigned long long total = B * T * n;
    for (unsigned long long idx = grid_tid(); idx < total; idx += grid_stride()) {
        const unsigned long long s = idx / n, i = idx % n;
        const float hp = prev_state(h, h0, s, T, n, i);
        const float* xs = x + s * 3 * n;
        float f, j;
        gru_unit(params[i], params[n + i], params[2 * n + i], hp, xs[i], xs[n + i],
                 xs[2 * n + i], &f, &j);
        const float cur = h[idx];
        res = max_nan(res, fabsf(cur - f));
        hmax = fmaxf(hmax, fabsf(cur));
        if (form == 0) {
            b[idx] = f;
        } else {
            j *= scale;
            a[idx] = j;
            b[idx] = f - j * hp;
        }
    }
    publish_stats(res, hmax, stats);
}
PS_REGISTER_KERNEL(newton_gru_assemble);

namespace {

// gru's Newton iteration fused into the Diagonal [B,T,D] look-back scan (diagonal.cuh):
// the scan assembles each step's element A_t = scale * J_t, b_t = f_t - A_t h_{t-1} from x_t
// and the current guess where it would load a_t, b_t, accumulating the residual and max|h|
// of the guess on the way, and writes the next guess. 20 bytes per state entry and
// iteration (x 12, guess 4, next guess 4) instead of assemble (24) plus a scan (12-20).
struct GruSteps {
    const float* __restrict__ x;
    const float* __restrict__ h;  // the guess h^k: [B,T,n]
    const float* __restrict__ h0;
    const float* __restrict__ params;
    long long T, n;
    float scale;
    float res, hmax;

    __device__ ps::DiagElem<float> step(long long bb, long long t, long long d, long long i) {
        const float hp = t > 0 ? h[i - n] : (h0 ? h0[bb * n + d] : 0.0f);
        const float* xs = x + (bb * T + t) * 3 * n;
        float f, j;
        gru_unit(params[d], params[n + d], params[2 * n + d], hp, xs[d], xs[n + d], xs[2 * n + d], &f, &j);
        const float cur = h[i];
        res = max_nan(res, fabsf(cur - f));
        hmax = fmaxf(hmax, fabsf(cur));
        j *= scale;
        return ps::DiagElem<float>{j, f - j * hp};
    }
};

}  // namespace

// One Newton (or quasi/damped, scale = 1/(1+λ)) iteration of gru in one pass: the Diagonal
// look-back plan P4 on [B,T,n] (launch contract of diag_btd_lookback_f32 in diagonal.cu, with
// status cleared by diag_lb_clear first), reading the guess h and writing the next guess
// h_next (must not alias h) and hT; stats as newton_gru_assemble's (zeroed by the host).
// 3 blocks of 256 per SM: the cell's state needs ~89 registers; 80 costs a few bytes of
// spill (ptxas), 64 (diag_btd_lookback_f32's 4 blocks) several times more.
extern "C" __global__ void __launch_bounds__(256, 3)
    newton_gru_lookback(const float* __restrict__ x, const float* __restrict__ h, const float* __restrict__ h0,
                        const float* __restrict__ params, float* __restrict__ h_next, float* __restrict__ hT,
                        unsigned* __restrict__ stats, float scale, unsigned* __restrict__ status,
                        psd::OpsF32::Elem* __restrict__ lagg, float* __restrict__ lpre, int B, int T, int n,
                        int C, int prefix_every) {
    GruSteps src{x, h, h0, params, T, n, scale, 0.0f, 0.0f};
    psd::btd_lookback_steps<psd::OpsF32>(src, h_next, hT, h0, status, lagg, lpre, B, T, n, C, prefix_every);
    publish_stats(src.res, src.hmax, stats);
}
PS_REGISTER_KERNEL(newton_gru_lookback);

// One thread per (step, unit) over B*T*n; the state has N = 2n entries.
extern "C" __global__ void newton_lstm_assemble(const float* __restrict__ x,
                                                const float* __restrict__ h,
                                                const float* __restrict__ h0,
                                                const float* __restrict__ params,
                                                float* __restrict__ a, float* __restrict__ b,
                                                unsigned* __restrict__ stats,
                                                unsigned long long B, unsigned long long T,
                                                unsigned long long n, int form, float scale) {
    float res = 0.0f, hmax = 0.0f;
    const unsigned long long total = B * T * n, N = 2 * n;
    for (unsigned long long idx = grid_tid(); idx < total; idx += grid_stride()) {
        const unsigned long long s = idx / n, i = idx % n;
        const float cp = prev_state(h, h0, s, T, N, 2 * i);
        const float hp = prev_state(h, h0, s, T, N, 2 * i + 1);
        const float* xs = x + s * 3 * n;
        float c2, h2, blk[4];
        lstm_unit(params[i], params[n + i], params[2 * n + i], cp, hp, xs[i], xs[n + i],
                  xs[2 * n + i], &c2, &h2, blk);
        const unsigned long long o = s * N + 2 * i;
        const float cc = h[o], ch = h[o + 1];
        res = max_nan(res, max_nan(fabsf(cc - c2), fabsf(ch - h2)));
        hmax = fmaxf(hmax, fmaxf(fabsf(cc), fabsf(ch)));
        if (form == 0) {
            b[o] = c2;
            b[o + 1] = h2;
        } else if (form == 1) {
            const float d0 = blk[0] * scale, d1 = blk[3] * scale;
            a[o] = d0;
            a[o + 1] = d1;
            b[o] = c2 - d0 * cp;
            b[o + 1] = h2 - d1 * hp;
        } else {
            float* ab = a + (s * n + i) * 4;
            for (int k = 0; k < 4; ++k) ab[k] = blk[k] * scale;
            b[o] = c2 - (ab[0] * cp + ab[1] * hp);
            b[o + 1] = h2 - (ab[2] * cp + ab[3] * hp);
        }
    }
    publish_stats(res, hmax, stats);
}
PS_REGISTER_KERNEL(newton_lstm_assemble);

// One thread per (step, row i) over B*T*n: a dot product with row i of W.
extern "C" __global__ void newton_elman_assemble(const float* __restrict__ x,
                                                 const float* __restrict__ h,
                                                 const float* __restrict__ h0,
                                                 const float* __restrict__ params,
                                                 float* __restrict__ a, float* __restrict__ b,
                                                 unsigned* __restrict__ stats,
                                                 unsigned long long B, unsigned long long T,
                                                 unsigned long long n, int form, float scale) {
    float res = 0.0f, hmax = 0.0f;
    const unsigned long long total = B * T * n;
    for (unsigned long long idx = grid_tid(); idx < total; idx += grid_stride()) {
        const unsigned long long s = idx / n, i = idx % n;
        const float* w = params + i * n;
        float acc = x[idx];  // x_t has the state's layout: [B,T,n]
        for (unsigned long long j = 0; j < n; ++j) acc += w[j] * prev_state(h, h0, s, T, n, j);
        const float y = tanhf(acc);
        const float cur = h[idx];
        res = max_nan(res, fabsf(cur - y));
        hmax = fmaxf(hmax, fabsf(cur));
        const float sd = (1.0f - y * y) * scale;
        if (form == 0) {
            b[idx] = y;
        } else if (form == 1) {
            const float d = sd * w[i];
            a[idx] = d;
            b[idx] = y - d * prev_state(h, h0, s, T, n, i);
        } else {
            float* row = a + idx * n;
            float ah = 0.0f;
            for (unsigned long long j = 0; j < n; ++j) {
                const float v = sd * w[j];
                row[j] = v;
                ah += v * prev_state(h, h0, s, T, n, j);
            }
            b[idx] = y - ah;
        }
    }
    publish_stats(res, hmax, stats);
}
PS_REGISTER_KERNEL(newton_elman_assemble);

// Damped Newton's relaxation h += w (h_new − h) over `count` floats.
extern "C" __global__ void newton_relax(float* __restrict__ h, const float* __restrict__ h_new,
                                        float w, unsigned long long count) {
    for (unsigned long long i = grid_tid(); i < count; i += grid_stride())
        h[i] = h[i] + w * (h_new[i] - h[i]);
}
PS_REGISTER_KERNEL(newton_relax);

// ---- sequential baselines: depth T -----------------------------------------

// One thread per (batch, unit), looping over T (units are independent).
extern "C" __global__ void newton_gru_sequential(const float* __restrict__ x,
                                                 const float* __restrict__ h0,
                                                 const float* __restrict__ params,
                                                 float* __restrict__ h, unsigned long long B,
                                                 unsigned long long T, unsigned long long n) {
    for (unsigned long long lane = grid_tid(); lane < B * n; lane += grid_stride()) {
        const unsigned long long bi = lane / n, i = lane % n;
        float hv = h0 ? h0[lane] : 0.0f;
        const float az = params[i], ar = params[n + i], ac = params[2 * n + i];
        for (unsigned long long t = 0; t < T; ++t) {
            const unsigned long long s = bi * T + t;
            const float* xs = x + s * 3 * n;
            float f, j;
            gru_unit(az, ar, ac, hv, xs[i], xs[n + i], xs[2 * n + i], &f, &j);
            hv = f;
            h[s * n + i] = hv;
        }
    }
}
PS_REGISTER_KERNEL(newton_gru_sequential);

extern "C" __global__ void newton_lstm_sequential(const float* __restrict__ x,
                                                  const float* __restrict__ h0,
                                                  const float* __restrict__ params,
                                                  float* __restrict__ h, unsigned long long B,
                                                  unsigned long long T, unsigned long long n) {
    for (unsigned long long lane = grid_tid(); lane < B * n; lane += grid_stride()) {
        const unsigned long long bi = lane / n, i = lane % n, N = 2 * n;
        float cv = h0 ? h0[bi * N + 2 * i] : 0.0f;
        float hv = h0 ? h0[bi * N + 2 * i + 1] : 0.0f;
        const float af = params[i], ao = params[n + i], ag = params[2 * n + i];
        for (unsigned long long t = 0; t < T; ++t) {
            const unsigned long long s = bi * T + t;
            const float* xs = x + s * 3 * n;
            float c2, h2, blk[4];
            lstm_unit(af, ao, ag, cv, hv, xs[i], xs[n + i], xs[2 * n + i], &c2, &h2, blk);
            cv = c2;
            hv = h2;
            h[s * N + 2 * i] = cv;
            h[s * N + 2 * i + 1] = hv;
        }
    }
}
PS_REGISTER_KERNEL(newton_lstm_sequential);

// One block per batch row; thread i < n owns state entry i. The state lives
// in dynamic shared memory (2n floats, double-buffered so one barrier per
// step suffices). Block size: a multiple of 32 that is at least n.
extern "C" __global__ void newton_elman_sequential(const float* __restrict__ x,
                                                   const float* __restrict__ h0,
                                                   const float* __restrict__ params,
                                                   float* __restrict__ h, unsigned long long B,
                                                   unsigned long long T, unsigned long long n) {
    PS_DYNAMIC_SHARED(float, buf);
    const unsigned long long i = threadIdx.x;
    for (unsigned long long bi = blockIdx.x; bi < B; bi += gridDim.x) {
        if (i < n) buf[i] = h0 ? h0[bi * n + i] : 0.0f;
        __syncthreads();
        for (unsigned long long t = 0; t < T; ++t) {
            const float* cur = buf + (t & 1) * n;
            float* next = buf + ((t + 1) & 1) * n;
            const unsigned long long s = bi * T + t;
            if (i < n) {
                float acc = x[s * n + i];
                const float* w = params + i * n;
                for (unsigned long long j = 0; j < n; ++j) acc += w[j] * cur[j];
                const float y = tanhf(acc);
                next[i] = y;
                h[s * n + i] = y;
            }
            __syncthreads();
        }
    }
}
PS_REGISTER_KERNEL(newton_elman_sequential);
