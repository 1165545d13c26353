// portable.cuh: the few macros a kernel needs to compile both under nvcc and
// under the CPU emulator (emu/simt.h). Include it from kernels/*.cu (or from
// parascan.cuh) as
//
//   #include "emu/portable.cuh"
//
// Under nvcc the macros expand to plain CUDA; under the emulator (any host
// compiler, no __CUDACC__) this header pulls in emu/simt.h, which defines
// them with per-block, poisoned storage and a kernel registry.
//
//   PS_SHARED(T, name, count)   static shared array `T name[count]`
//                               (name is a T*; count a positive constant;
//                               for a type with a comma, use an alias first)
//   PS_SHARED_VAR(T, name)      one static shared T (name is a T& / T)
//   PS_DYNAMIC_SHARED(T, name)  the launch's dynamic shared memory as T*
//   PS_REGISTER_KERNEL(k)       once per extern "C" kernel, at file scope,
//                               after its definition: launchable by name in
//                               the emulator; nothing under nvcc
//   PS_FULL_MASK                0xffffffffu, the only mask the subset allows
//
// All shared storage is aligned to at least 16 bytes on both sides, so a
// float4 access that works in the emulator also works on the GPU.

#ifndef PS_PORTABLE_CUH
#define PS_PORTABLE_CUH

#if defined(__CUDACC__)

template <typename T>
using ps_shared_type_identity = T;

#define PS_SHARED(T, name, count) \
    __shared__ __align__(16) ps_shared_type_identity<T> name[(count)]
#define PS_SHARED_VAR(T, name) __shared__ __align__(16) ps_shared_type_identity<T> name
#define PS_DYNAMIC_SHARED(T, name)                                    \
    extern __shared__ __align__(16) unsigned char ps_dynamic_smem_[]; \
    T* const name = reinterpret_cast<T*>(ps_dynamic_smem_)
#define PS_REGISTER_KERNEL(kernel) static_assert(true, "")
#define PS_REGISTER_KERNEL_AS(name_str, ...) static_assert(true, "")
#define PS_FULL_MASK 0xffffffffu

#else

#include "simt.h"

#endif

#endif  // PS_PORTABLE_CUH
