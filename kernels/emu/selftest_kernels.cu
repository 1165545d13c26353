// selftest_kernels.cu: kernels that exercise the CPU emulator (selftest.cpp
// drives them). They are written in the portable CUDA subset and also compile
// with nvcc (selftest.sh checks that when an nvcc is found), except the few
// marked emulation-only. Kernels named st_err_* are deliberately broken: the
// emulator must report each of them as an error instead of hanging.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "emu/portable.cuh"

#ifdef PS_EMULATION
// Host hook (selftest.cpp): records which OS thread ran a block.
extern "C" void ps_selftest_note_block(unsigned block);
#endif

// Sum over the warp; lane 0 ends up with the total.
__device__ __forceinline__ float st_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(PS_FULL_MASK, v, off);
    return v;
}

// out[b] = sum of in[b*blockDim.x ...][blockDim.x]: warp shuffles, then the
// per-warp sums through shared memory, then one warp. blockDim.x % 32 == 0.
extern "C" __global__ void st_block_reduce(const float* in, float* out, int n) {
    PS_SHARED(float, warp_sums, 32);
    const unsigned t = threadIdx.x;
    const unsigned lane = t % 32, warp = t / 32, nwarps = (blockDim.x + 31) / 32;
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + t;
    float v = i < n ? in[i] : 0.0f;
    v = st_warp_sum(v);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < nwarps ? warp_sums[lane] : 0.0f;
        for (int m = 16; m > 0; m >>= 1) w += __shfl_xor_sync(PS_FULL_MASK, w, m);
        if (lane == 0) out[blockIdx.x] = w;
    }
}
PS_REGISTER_KERNEL(st_block_reduce);

// Work-efficient (Blelloch) exclusive scan of 2*blockDim.x elements per block
// in dynamic shared memory (launch with 2*blockDim.x*sizeof(float) bytes;
// blockDim.x a power of two).
extern "C" __global__ void st_blelloch_dyn(const float* in, float* out, int n) {
    PS_DYNAMIC_SHARED(float, s);
    const unsigned t = threadIdx.x;
    const unsigned m = 2 * blockDim.x;
    const long long base = static_cast<long long>(blockIdx.x) * m;
    s[2 * t] = base + 2 * t < n ? in[base + 2 * t] : 0.0f;
    s[2 * t + 1] = base + 2 * t + 1 < n ? in[base + 2 * t + 1] : 0.0f;
    unsigned off = 1;
    for (unsigned d = m >> 1; d > 0; d >>= 1) {  // up-sweep
        __syncthreads();
        if (t < d) s[off * (2 * t + 2) - 1] += s[off * (2 * t + 1) - 1];
        off <<= 1;
    }
    if (t == 0) s[m - 1] = 0.0f;
    for (unsigned d = 1; d < m; d <<= 1) {  // down-sweep
        off >>= 1;
        __syncthreads();
        if (t < d) {
            const unsigned a = off * (2 * t + 1) - 1, b = off * (2 * t + 2) - 1;
            const float x = s[a];
            s[a] = s[b];
            s[b] += x;
        }
    }
    __syncthreads();
    if (base + 2 * t < n) out[base + 2 * t] = s[2 * t];
    if (base + 2 * t + 1 < n) out[base + 2 * t + 1] = s[2 * t + 1];
}
PS_REGISTER_KERNEL(st_blelloch_dyn);

// Grid-wide atomics: every element is added, maxed, mined, counted (float),
// counted with a CAS loop, and swapped through one slot with atomicExch.
extern "C" __global__ void st_atomics(const int* in, int n, unsigned long long* sum, int* maxv,
                                      int* minv, float* fcount, unsigned* cas_count,
                                      unsigned long long* exch_slot, unsigned long long* exch_sum) {
#ifdef PS_EMULATION
    if (threadIdx.x == 0) ps_selftest_note_block(blockIdx.x);
#endif
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const int v = in[i];
        atomicAdd(sum, static_cast<unsigned long long>(v));
        atomicMax(maxv, v);
        atomicMin(minv, v);
        atomicAdd(fcount, 1.0f);
        unsigned old = *static_cast<volatile unsigned*>(cas_count), assumed;
        do {
            assumed = old;
            old = atomicCAS(cas_count, assumed, assumed + 1u);
        } while (old != assumed);
        const unsigned long long prev = atomicExch(exch_slot, static_cast<unsigned long long>(v));
        atomicAdd(exch_sum, prev);
    }
    __threadfence();
}
PS_REGISTER_KERNEL(st_atomics);

// Reads shared memory before writing it: the emulator must show the poison
// (0xFF bytes: NaN, -1) in every block, although the previous block on the
// same worker left other values there. 64 threads per block; dynamic shared
// memory of 64 floats.
extern "C" __global__ void st_poison(float* out_static, int* out_int, float* out_dyn) {
    PS_SHARED(float, sf, 64);
    PS_SHARED_VAR(int, si);
    PS_DYNAMIC_SHARED(float, sd);
    const unsigned t = threadIdx.x, b = blockIdx.x;
    out_static[b * 64 + t] = sf[t];
    out_dyn[b * 64 + t] = sd[t];
    if (t == 0) out_int[b] = si;
    __syncthreads();
    sf[t] = 1.0f + static_cast<float>(t);
    sd[t] = 2.0f;
    if (t == 0) si = 7;
    __syncthreads();
}
PS_REGISTER_KERNEL(st_poison);

// f16 / bf16 conversions and shuffles of 16-bit types inside a kernel
// (n a multiple of 32 so every warp is full).
extern "C" __global__ void st_half(const float* in, __half* h, __nv_bfloat16* b, float* h_back,
                                   float* b_back, float* h_neighbor, float* b_neighbor, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float x = in[i < n ? i : n - 1];
    const __half hv = __float2half_rn(x);
    const __nv_bfloat16 bv = __float2bfloat16_rn(x);
    const __half hn = __shfl_xor_sync(PS_FULL_MASK, hv, 1);
    const __nv_bfloat16 bn = __shfl_xor_sync(PS_FULL_MASK, bv, 1);
    if (i < n) {
        h[i] = hv;
        b[i] = bv;
        h_back[i] = __half2float(hv);
        b_back[i] = __bfloat162float(bv);
        h_neighbor[i] = __half2float(hn);
        b_neighbor[i] = __bfloat162float(bn);
    }
}
PS_REGISTER_KERNEL(st_half);

// One shuffle of each kind with a given width; 64 threads, out[64*4].
extern "C" __global__ void st_shfl_modes(int* out, int width) {
    const int t = threadIdx.x;
    const int v = t * 10 + 1;
    out[t * 4 + 0] = __shfl_sync(PS_FULL_MASK, v, (t * 7 + 3) % 40 - 4, width);
    out[t * 4 + 1] = __shfl_up_sync(PS_FULL_MASK, v, 3, width);
    out[t * 4 + 2] = __shfl_down_sync(PS_FULL_MASK, v, 3, width);
    out[t * 4 + 3] = __shfl_xor_sync(PS_FULL_MASK, v, 5, width);
}
PS_REGISTER_KERNEL(st_shfl_modes);

// Shuffles of 64-bit types and the sm_80 warp reductions; 32 threads.
extern "C" __global__ void st_shfl_types(double* d, long long* ll, unsigned* red) {
    const int t = threadIdx.x;
    d[t] = __shfl_xor_sync(PS_FULL_MASK, 0.5 + t, 1);
    ll[t] = __shfl_down_sync(PS_FULL_MASK, (1LL << 40) + t, 2);
    const unsigned add = __reduce_add_sync(PS_FULL_MASK, static_cast<unsigned>(t));
    const int mx = __reduce_max_sync(PS_FULL_MASK, t % 7);
    const unsigned any = __match_any_sync(PS_FULL_MASK, t % 4);
    const int any_v = __any_sync(PS_FULL_MASK, t == 13);
    const int all_v = __all_sync(PS_FULL_MASK, t < 31);
    __syncwarp();
    if (t == 1) {
        red[0] = add;
        red[1] = static_cast<unsigned>(mx);
        red[2] = any;
        red[3] = static_cast<unsigned>(any_v);
        red[4] = static_cast<unsigned>(all_v);
    }
}
PS_REGISTER_KERNEL(st_shfl_types);

// A partial last warp: launched with 40 threads, so warp 1 has lanes 0..7.
extern "C" __global__ void st_partial_warp(int* out) {
    const int t = threadIdx.x;
    const int v = 100 + t;
    const int down = __shfl_down_sync(PS_FULL_MASK, v, 4);
    const int from0 = __shfl_sync(PS_FULL_MASK, v, 0);
    const unsigned ballot = __ballot_sync(PS_FULL_MASK, 1);
    const int all = __all_sync(PS_FULL_MASK, 1);
    const unsigned active = __activemask();
    __syncthreads();
    out[t * 5 + 0] = down;
    out[t * 5 + 1] = from0;
    out[t * 5 + 2] = static_cast<int>(ballot);
    out[t * 5 + 3] = all;
    out[t * 5 + 4] = static_cast<int>(active);
}
PS_REGISTER_KERNEL(st_partial_warp);

// __syncthreads_count / _and / _or.
extern "C" __global__ void st_sync_count(int* out) {
    const int t = threadIdx.x;
    const int c = __syncthreads_count(t % 3 == 0);
    const int a = __syncthreads_and(t < 1000);
    const int o = __syncthreads_or(t == 5);
    const int a2 = __syncthreads_and(t != 7);
    const int c2 = __syncthreads_count(1);
    if (t == 0) {
        out[0] = c;
        out[1] = a;
        out[2] = o;
        out[3] = a2;
        out[4] = c2;
    }
}
PS_REGISTER_KERNEL(st_sync_count);

// Thread 0 polls a shared flag that thread 63 (another warp) sets; the poll
// yields with __nanosleep, which lets the emulator run the other fibers.
// 64 threads.
extern "C" __global__ void st_spin_flag(int* out) {
    PS_SHARED_VAR(int, flag);
    if (threadIdx.x == 0) flag = 0;
    __syncthreads();
    volatile int* f = &flag;
    if (threadIdx.x == 0) {
        int spins = 0;
        while (*f == 0) {
            __nanosleep(100);
            ++spins;
        }
        out[0] = spins > 0 ? 1 : 2;
    } else if (threadIdx.x == 63) {
        *f = 42;
    }
    __syncthreads();
    if (threadIdx.x == 0) out[1] = flag;
}
PS_REGISTER_KERNEL(st_spin_flag);

// Built-in variables in a 3-D grid of 3-D blocks: each thread writes its own
// four slots.
extern "C" __global__ void st_builtins(unsigned* out) {
    const unsigned lb = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned lt = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
    const unsigned g = lb * nt + lt;
    out[g * 4 + 0] = lb;
    out[g * 4 + 1] = lt;
    out[g * 4 + 2] = static_cast<unsigned>(warpSize);
    out[g * 4 + 3] = gridDim.x * gridDim.y * gridDim.z;
}
PS_REGISTER_KERNEL(st_builtins);

// Shared memory declared in a device function template: one slot per
// instantiation and block, as with __shared__.
template <typename T>
__device__ T st_block_total(T v) {
    PS_SHARED(T, partial, 1024);
    partial[threadIdx.x] = v;
    __syncthreads();
    T total = T(0);
    for (unsigned i = 0; i < blockDim.x; ++i) total += partial[i];
    __syncthreads();
    return total;
}
extern "C" __global__ void st_template_shared(float* outf, int* outi) {
    const float f = st_block_total<float>(1.5f);
    const int i = st_block_total<int>(static_cast<int>(threadIdx.x));
    const float f2 = st_block_total<float>(2.0f);  // the same slot as the first call
    if (threadIdx.x == 0) {
        outf[blockIdx.x * 2 + 0] = f;
        outf[blockIdx.x * 2 + 1] = f2;
        outi[blockIdx.x] = i;
    }
}
PS_REGISTER_KERNEL(st_template_shared);

// ---------------------------------------------------------------------------
// Broken on purpose: each must make ps_emu_launch return an error.
// ---------------------------------------------------------------------------

extern "C" __global__ void st_err_exit_before_barrier(int* out) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}
PS_REGISTER_KERNEL(st_err_exit_before_barrier);

extern "C" __global__ void st_err_different_barriers(int* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
        out[0] = 1;
    } else {
        __syncthreads();
        out[1] = 1;
    }
}
PS_REGISTER_KERNEL(st_err_different_barriers);

extern "C" __global__ void st_err_warp_exit(int* out) {
    int v = threadIdx.x;
    if (threadIdx.x == 3) return;
    v = __shfl_down_sync(PS_FULL_MASK, v, 1);
    out[threadIdx.x] = v;
}
PS_REGISTER_KERNEL(st_err_warp_exit);

extern "C" __global__ void st_err_warp_vs_block(int* out) {
    int v = threadIdx.x;
    if (threadIdx.x % 32 < 16)
        __syncthreads();
    else
        v = __shfl_xor_sync(PS_FULL_MASK, v, 1);
    out[threadIdx.x] = v;
}
PS_REGISTER_KERNEL(st_err_warp_vs_block);

extern "C" __global__ void st_err_partial_mask(int* out) {
    const int v = __shfl_sync(0x0000ffffu, static_cast<int>(threadIdx.x), 0);
    out[threadIdx.x] = v;
}
PS_REGISTER_KERNEL(st_err_partial_mask);

extern "C" __global__ void st_err_shared_overflow(int* out) {
    PS_SHARED(int, s, 32);
    s[threadIdx.x] = 1;  // launched with 64 threads: threads 32..63 write past the end
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x % 32];
}
PS_REGISTER_KERNEL(st_err_shared_overflow);

extern "C" __global__ void st_err_trap(int* out) {
    if (threadIdx.x == 7) __trap();
    out[threadIdx.x] = 1;
}
PS_REGISTER_KERNEL(st_err_trap);

#ifdef PS_EMULATION
// Emulation only: ptxas rejects more than 48 KiB of static shared memory.
extern "C" __global__ void st_err_static_too_big(float* out) {
    PS_SHARED(float, big, 13000);
    big[threadIdx.x] = 1.0f;
    out[threadIdx.x] = big[threadIdx.x];
}
PS_REGISTER_KERNEL(st_err_static_too_big);

// Emulation only: recursion deep enough to overflow a fiber stack; the guard
// page turns it into a diagnostic and an abort (selftest.cpp runs it in a
// child process).
__attribute__((noinline)) int st_deep(int depth) {
    volatile char pad[512];
    pad[0] = static_cast<char>(depth);
    if (depth == 0) return pad[0];
    const int r = st_deep(depth - 1);
    return r + pad[0];  // the frame stays live across the call
}
extern "C" __global__ void st_err_stack_overflow(int* out, int depth) {
    out[threadIdx.x] = st_deep(depth);
}
PS_REGISTER_KERNEL(st_err_stack_overflow);
#endif
