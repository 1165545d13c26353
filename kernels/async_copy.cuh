// async_copy.cuh: global -> shared copies that do not hold the issuing thread
// (sm_80+ `cp.async`), with the emulator's model of them.
//
// A kernel issues copies into a shared-memory buffer, closes them into a group
// (commit), and before reading the buffer waits for all but its newest `N`
// groups (wait<N>) and then passes a __syncthreads(): the wait only covers the
// calling thread's own copies, the barrier makes every thread's copies visible
// to the block. Between the issue and that wait the destination's contents are
// undefined, so nobody may still be reading it when the copy is issued (a
// barrier after the last reader).
//
// On the GPU (nvcc, sm_80 and newer) these are `cp.async.{ca,cg}.shared.global`,
// `cp.async.commit_group` and `cp.async.wait_group`; older architectures copy
// synchronously through registers. The emulator (plain C++) keeps a per-thread
// list of pending copies: the destination is filled with 0xFF bytes (NaN for
// floating point) when the copy is issued and receives the source bytes only
// when the issuing thread waits for the copy's group. So a kernel that reads a
// buffer before waiting, reads another thread's copies without a barrier after
// the wait, or issues a copy while another thread still reads the destination,
// reads NaN and fails its tests under some fiber order.

#ifndef PS_ASYNC_COPY_CUH
#define PS_ASYNC_COPY_CUH

#include "emu/portable.cuh"

#if !defined(__CUDACC__)
#include <string.h>

#include <vector>
#endif

namespace ps {

// One thread's outstanding copies. Construct one per thread (a local variable)
// and issue every copy of the kernel through it. `Bytes` is 4, 8 or 16; both
// addresses must be aligned to it.
class AsyncCopies {
public:
#if defined(__CUDACC__)
    template <int Bytes>
    __device__ __forceinline__ void copy(void* dst_shared, const void* src_global) {
        static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_shared));
        if constexpr (Bytes == 16) {
            // .cg: through L2 only; the staged inputs are read once per block.
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src_global) : "memory");
        } else {
            asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src_global), "n"(Bytes)
                         : "memory");
        }
#else
        copy_now<Bytes>(dst_shared, src_global);
#endif
    }
    __device__ __forceinline__ void commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
    }
    // Waits until at most N of this thread's committed groups are still in flight.
    template <int N>
    __device__ __forceinline__ void wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
    }

private:
    template <int Bytes>
    __device__ __forceinline__ static void copy_now(void* dst, const void* src) {
        if constexpr (Bytes == 16) {
            *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
        } else if constexpr (Bytes == 8) {
            *static_cast<uint2*>(dst) = *static_cast<const uint2*>(src);
        } else {
            *static_cast<unsigned*>(dst) = *static_cast<const unsigned*>(src);
        }
    }
#else
    template <int Bytes>
    void copy(void* dst_shared, const void* src_global) {
        static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
        memset(dst_shared, 0xFF, Bytes);  // undefined until the wait
        pending_.push_back(Pending{dst_shared, src_global, Bytes, open_});
    }
    void commit() { ++open_; }
    template <int N>
    void wait() {
        // Groups 0 .. open_-1 are committed; all but the newest N must land. Copies not
        // yet committed (group open_) are not waited for, as on the GPU.
        if (open_ < static_cast<unsigned>(N)) return;
        const unsigned done = open_ - static_cast<unsigned>(N);  // groups < done land
        size_t keep = 0;
        for (size_t i = 0; i < pending_.size(); ++i) {
            const Pending& p = pending_[i];
            if (p.group < done) {
                memcpy(p.dst, p.src, p.bytes);
            } else {
                pending_[keep++] = p;
            }
        }
        pending_.resize(keep);
    }

private:
    struct Pending {
        void* dst;
        const void* src;
        unsigned bytes;
        unsigned group;
    };
    std::vector<Pending> pending_;
    unsigned open_ = 0;  // the group that copies issued now belong to
#endif
};

}  // namespace ps

#endif  // PS_ASYNC_COPY_CUH
