// copy.cu: the device bandwidth probe.
//
// Scan kernels are memory-bound, so their speed is reported as a fraction of
// what a plain copy achieves on the same device in the same run. This kernel
// is that reference: it should run at the best rate a simple kernel can
// reach, hence 16-byte vector accesses and enough independent loads in
// flight per thread via the grid-stride loop.

#include <stdint.h>

#include "emu/portable.cuh"
#include "parascan.cuh"

// Copies n floats from src to dst. Any n and any grid size are valid: the
// grid-stride loops cover every element exactly once.
extern "C" __global__ void copy_f32(const float* __restrict__ src, float* __restrict__ dst,
                                    unsigned long long n) {
    const unsigned long long tid =
        static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const unsigned long long stride = static_cast<unsigned long long>(gridDim.x) * blockDim.x;

    // float4 accesses need 16-byte alignment. Allocations are aligned, but a
    // caller may pass a view that starts mid-buffer; then the whole copy
    // falls back to scalar accesses rather than faulting.
    const bool aligned =
        ((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15u) == 0;
    const unsigned long long n_vec = aligned ? n / 4 : 0;

    const float4* __restrict__ src4 = reinterpret_cast<const float4*>(src);
    float4* __restrict__ dst4 = reinterpret_cast<float4*>(dst);
    for (unsigned long long i = tid; i < n_vec; i += stride) dst4[i] = src4[i];

    // Scalar tail: at most 3 elements when aligned, everything otherwise.
    for (unsigned long long i = n_vec * 4 + tid; i < n; i += stride) dst[i] = src[i];
}
PS_REGISTER_KERNEL(copy_f32);

// A probe of cross-block publication (tests of the emulator's weak-memory
// mode; two blocks of one thread): block 0 stores `value` to *payload with
// __stcg, fences if `fenced`, then raises *flag; block 1 waits for the flag,
// fences and copies *payload to *out. Without the publisher's fence the
// payload may still be in flight when the flag is seen: on a GPU rarely, in
// the emulator's weak-memory mode always (out keeps what payload held).
extern "C" __global__ void publish_probe_f32(float* payload, unsigned* flag, float* out, float value,
                                             int fenced) {
    if (threadIdx.x != 0) return;
    if (blockIdx.x == 0) {
        __stcg(payload, value);
        if (fenced) __threadfence();
        *reinterpret_cast<volatile unsigned*>(flag) = 1u;
    } else if (blockIdx.x == 1) {
        while (*reinterpret_cast<volatile unsigned*>(flag) == 0u) __nanosleep(32);
        __threadfence();
        *out = __ldcg(payload);
    }
}
PS_REGISTER_KERNEL(publish_probe_f32);
