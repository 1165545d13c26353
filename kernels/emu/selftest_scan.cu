// selftest_scan.cu: a block-level Hillis-Steele inclusive scan in shared
// memory, used by the emulator's self-test to show that a missing barrier is
// caught. selftest.sh compiles this file three times:
//
//   (default)                    st_scan_hs: both barriers of every step
//   -DPS_SELFTEST_DROP_BARRIER=1 st_scan_hs_drop_read: no barrier between a
//                                step's reads and its writes
//   -DPS_SELFTEST_DROP_BARRIER=2 st_scan_hs_drop_write: no barrier between a
//                                step's writes and the next step's reads
//
// The complete version is right under every fiber order; each broken one is
// wrong under at least one order (that is what the self-test asserts).
// Written in the portable subset: it also compiles with nvcc.

#include "emu/portable.cuh"

#ifndef PS_SELFTEST_DROP_BARRIER
#define PS_SELFTEST_DROP_BARRIER 0
#endif

#if PS_SELFTEST_DROP_BARRIER == 0
#define ST_SCAN_KERNEL st_scan_hs
#elif PS_SELFTEST_DROP_BARRIER == 1
#define ST_SCAN_KERNEL st_scan_hs_drop_read
#elif PS_SELFTEST_DROP_BARRIER == 2
#define ST_SCAN_KERNEL st_scan_hs_drop_write
#else
#error "PS_SELFTEST_DROP_BARRIER must be 0, 1 or 2"
#endif

// Inclusive scan of each block's blockDim.x elements (blockDim.x <= 1024).
extern "C" __global__ void ST_SCAN_KERNEL(const float* in, float* out, int n) {
    PS_SHARED(float, s, 1024);
    const unsigned t = threadIdx.x;
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + t;
    s[t] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned off = 1; off < blockDim.x; off <<= 1) {
        const float v = t >= off ? s[t - off] : 0.0f;
#if PS_SELFTEST_DROP_BARRIER != 1
        __syncthreads();  // every read of this step before any write
#endif
        s[t] += v;
#if PS_SELFTEST_DROP_BARRIER != 2
        __syncthreads();  // every write of this step before the next step's reads
#endif
    }
    if (i < n) out[i] = s[t];
}
PS_REGISTER_KERNEL(ST_SCAN_KERNEL);
