// simt.h: CUDA-on-CPU compatibility layer for the emulated-kernel backend.
//
// The same kernels/*.cu sources that nvcc compiles to PTX are compiled by the
// host C++ compiler with this header force-included:
//
//   g++ -std=c++17 -x c++ -I kernels -I kernels/emu -include emu/simt.h kernels/foo.cu
//
// and linked with kernels/emu/launcher.cpp, the runtime that executes a grid:
// each block runs on one OS thread, each CUDA thread of the block is a fiber,
// and __syncthreads / warp shuffles / votes are barriers among fibers.
//
// Only a documented subset of CUDA is provided (see kernels/emu/README.md).
// Anything outside it fails to compile (missing name) or fails at run time
// with an error returned by ps_emu_launch, never silently.
//
// Shared memory is NOT declared with __shared__ (that keyword is a compile
// error here, on purpose): kernels use PS_SHARED / PS_SHARED_VAR /
// PS_DYNAMIC_SHARED from emu/portable.cuh, which expand to __shared__ under
// nvcc and to per-block, poisoned storage here.

#ifndef PS_EMU_SIMT_H
#define PS_EMU_SIMT_H

#if defined(__CUDACC__)
#error "emu/simt.h emulates CUDA on the CPU; it must not be compiled by nvcc (include emu/portable.cuh instead)"
#endif
#if !defined(__cplusplus) || __cplusplus < 201703L
#error "emu/simt.h needs C++17 (-std=c++17)"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <type_traits>
#include <utility>

// Kernels can test for the emulator with #ifdef PS_EMULATION (never with
// !defined(__CUDA_ARCH__) alone: that is also true in nvcc's host pass).
#define PS_EMULATION 1

// parascan.cuh enables its f16/bf16 paths when PS_HAS_HALF is defined; this
// header provides __half and __nv_bfloat16, and kernels/emu/cuda_fp16.h and
// cuda_bf16.h (on the include path with -I kernels/emu) stand in for NVIDIA's.
#ifndef PS_HAS_HALF
#define PS_HAS_HALF 1
#endif

// ---------------------------------------------------------------------------
// Keywords and qualifiers
// ---------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __constant__
#define __grid_constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is a native GCC/Clang keyword and needs no definition.
// __noinline__ is deliberately not defined: a macro of that name breaks
// __attribute__((__noinline__)) inside the standard library headers.

// Static shared memory must go through PS_SHARED so that it is per block and
// poisoned; a raw __shared__ would silently become process-global here.
#define __shared__                                                                              \
    _Pragma("GCC error \"__shared__ is not supported by the CPU emulator: declare shared memory " \
            "with PS_SHARED(type, name, count), PS_SHARED_VAR(type, name) or "                   \
            "PS_DYNAMIC_SHARED(type, name) from emu/portable.cuh\"")

// ---------------------------------------------------------------------------
// Vector types and dim3
// ---------------------------------------------------------------------------

#define PS_EMU_VEC2(T, name, al) \
    struct __attribute__((aligned(al))) name { T x, y; };
#define PS_EMU_VEC3(T, name) \
    struct name { T x, y, z; };
#define PS_EMU_VEC4(T, name, al) \
    struct __attribute__((aligned(al))) name { T x, y, z, w; };

PS_EMU_VEC2(signed char, char2, 2)
PS_EMU_VEC2(unsigned char, uchar2, 2)
PS_EMU_VEC4(signed char, char4, 4)
PS_EMU_VEC4(unsigned char, uchar4, 4)
PS_EMU_VEC2(short, short2, 4)
PS_EMU_VEC2(unsigned short, ushort2, 4)
PS_EMU_VEC4(short, short4, 8)
PS_EMU_VEC4(unsigned short, ushort4, 8)
PS_EMU_VEC2(int, int2, 8)
PS_EMU_VEC3(int, int3)
PS_EMU_VEC4(int, int4, 16)
PS_EMU_VEC2(unsigned int, uint2, 8)
PS_EMU_VEC3(unsigned int, uint3)
PS_EMU_VEC4(unsigned int, uint4, 16)
PS_EMU_VEC2(long long, longlong2, 16)
PS_EMU_VEC2(unsigned long long, ulonglong2, 16)
PS_EMU_VEC2(float, float2, 8)
PS_EMU_VEC3(float, float3)
PS_EMU_VEC4(float, float4, 16)
PS_EMU_VEC2(double, double2, 16)

#undef PS_EMU_VEC2
#undef PS_EMU_VEC3
#undef PS_EMU_VEC4

inline constexpr int2 make_int2(int x, int y) { return int2{x, y}; }
inline constexpr int3 make_int3(int x, int y, int z) { return int3{x, y, z}; }
inline constexpr int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline constexpr uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline constexpr uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
inline constexpr uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) {
    return uint4{x, y, z, w};
}
inline constexpr float2 make_float2(float x, float y) { return float2{x, y}; }
inline constexpr float3 make_float3(float x, float y, float z) { return float3{x, y, z}; }
inline constexpr float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline constexpr double2 make_double2(double x, double y) { return double2{x, y}; }
inline constexpr longlong2 make_longlong2(long long x, long long y) { return longlong2{x, y}; }
inline constexpr ulonglong2 make_ulonglong2(unsigned long long x, unsigned long long y) {
    return ulonglong2{x, y};
}

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

// ---------------------------------------------------------------------------
// Built-in variables
//
// threadIdx and friends read per-OS-thread storage that the scheduler sets
// before it resumes a fiber (fibers never migrate between OS threads, and
// every switch goes through an opaque call, so nothing stale is cached).
// They are read-only lvalues of type uint3 (blockDim and gridDim too, where
// CUDA says dim3; `dim3 d = blockDim;` still works).
// ---------------------------------------------------------------------------

namespace ps_emu {
struct BuiltinVars {
    uint3 thread_idx;
    uint3 block_idx;
    uint3 block_dim;
    uint3 grid_dim;
};
extern thread_local BuiltinVars tls_builtins;
}  // namespace ps_emu

#define threadIdx (static_cast<const uint3&>(::ps_emu::tls_builtins.thread_idx))
#define blockIdx (static_cast<const uint3&>(::ps_emu::tls_builtins.block_idx))
#define blockDim (static_cast<const uint3&>(::ps_emu::tls_builtins.block_dim))
#define gridDim (static_cast<const uint3&>(::ps_emu::tls_builtins.grid_dim))
static constexpr int warpSize = 32;

// ---------------------------------------------------------------------------
// Runtime entry points (kernels/emu/launcher.cpp)
// ---------------------------------------------------------------------------

namespace ps_emu {
namespace detail {

// What a warp exchange hands back to the calling lane: the 32 value slots of
// this operation (one per lane), the caller's lane, and the mask of lanes
// that exist in this warp (partial last warp) and have not exited.
struct WarpView {
    const uint64_t* slots;
    unsigned lane;
    unsigned live;
};

// Deposits `value` for the calling lane and waits until every live lane of
// the warp has arrived at a warp operation named `what`.
WarpView warp_exchange(uint64_t value, unsigned mask, const char* what, const char* file, int line);
// __syncthreads and friends; returns how many threads passed a non-zero pred.
int block_barrier(int pred, const char* what, const char* file, int line);
// Mask of the live lanes of the caller's warp.
unsigned active_mask(const char* what, const char* file, int line);
// Lets the other fibers of the block run (not a barrier).
void yield_fiber(const char* what, const char* file, int line);
// Ends the kernel with an error that ps_emu_launch returns.
[[noreturn]] void kernel_error(int code, const char* what, const char* message, const char* file,
                               int line);
// Per-block shared memory (see PS_SHARED in emu/portable.cuh).
void* shared_alloc(const void* key, size_t bytes, size_t align, const char* name, const char* file,
                   int line);
void* dynamic_shared(size_t align, const char* name, const char* file, int line);

// Weak-memory mode (see __stcg below). A __stcg of up to kMaxPendingStore
// bytes waits in the calling thread's store buffer; release_stores() (every
// fence and atomic) writes the calling thread's pending stores to memory;
// forward_load reads memory with the calling block's pending stores on top.
constexpr size_t kMaxPendingStore = 32;
void publish_store(void* p, const void* value, size_t bytes);
void forward_load(const void* p, void* out, size_t bytes);
void release_stores();

using KernelEntry = void (*)(void** args);
// sizes/aligns: num_params entries each (sizeof/alignof of every parameter), so
// that a driver-API front end can copy launch arguments by value.
void register_kernel(const char* name, KernelEntry entry, int num_params, const size_t* sizes,
                     const size_t* aligns, const char* file);

}  // namespace detail
}  // namespace ps_emu

// Error codes shared with the C ABI (see ps_emu.h).
#include "ps_emu.h"

// ---------------------------------------------------------------------------
// Shared memory (the macros of emu/portable.cuh, emulated)
//
// PS_SHARED(T, name, count): `T name[count]` per block. `name` is a T*
//   (for an array type T = U[n], a pointer to rows). `count` must be a
//   positive constant expression, as nvcc requires.
// PS_SHARED_VAR(T, name): one T per block; `name` is a T&.
// PS_DYNAMIC_SHARED(T, name): the launch's dynamic shared memory as T*.
//
// Storage is a per-worker arena; each declaration site gets one slot per
// block (keyed by the address of a static local, so template instantiations
// get their own slot, as with __shared__), filled with 0xFF bytes (NaN for
// f32/f64/f16/bf16, -1 for integers) when the block first reaches it, and
// followed by a guard zone that is checked when the block ends.
// ---------------------------------------------------------------------------

namespace ps_emu {
namespace detail {
template <typename T>
constexpr void check_shared_type() {
    static_assert(std::is_trivially_default_constructible<std::remove_all_extents_t<T>>::value &&
                      std::is_trivially_destructible<std::remove_all_extents_t<T>>::value,
                  "shared memory holds only trivial types (no constructors/destructors), as in CUDA");
}
}  // namespace detail
}  // namespace ps_emu

#define PS_EMU_CONCAT2(a, b) a##b
#define PS_EMU_CONCAT(a, b) PS_EMU_CONCAT2(a, b)

#define PS_SHARED(T, name, count)                                                                \
    static_assert((count) > 0, "PS_SHARED: count must be a positive constant expression");      \
    ::ps_emu::detail::check_shared_type<T>();                                                    \
    static constexpr char PS_EMU_CONCAT(ps_emu_shared_key_, name) = 0;                           \
    std::add_pointer_t<T> const name = static_cast<std::add_pointer_t<T>>(                       \
        ::ps_emu::detail::shared_alloc(&PS_EMU_CONCAT(ps_emu_shared_key_, name),                \
                                       sizeof(T) * static_cast<size_t>(count), alignof(T), #name, \
                                       __FILE__, __LINE__))

#define PS_SHARED_VAR(T, name)                                                                  \
    ::ps_emu::detail::check_shared_type<T>();                                                   \
    static constexpr char PS_EMU_CONCAT(ps_emu_shared_key_, name) = 0;                          \
    T& name = *static_cast<T*>(::ps_emu::detail::shared_alloc(                                  \
        &PS_EMU_CONCAT(ps_emu_shared_key_, name), sizeof(T), alignof(T), #name, __FILE__, __LINE__))

#define PS_DYNAMIC_SHARED(T, name)                                 \
    ::ps_emu::detail::check_shared_type<T>();                      \
    T* const name = static_cast<T*>(                               \
        ::ps_emu::detail::dynamic_shared(alignof(T), #name, __FILE__, __LINE__))

#define PS_FULL_MASK 0xffffffffu

// ---------------------------------------------------------------------------
// Kernel registration
//
// PS_REGISTER_KERNEL(foo) after `extern "C" __global__ void foo(...) {...}`
// makes foo launchable by name through ps_emu_launch with a driver-API style
// `void** args` (args[i] points to the i-th argument's value). The trampoline
// deduces the parameter types from the function pointer.
// PS_REGISTER_KERNEL_AS("name", function) registers under another name.
// ---------------------------------------------------------------------------

namespace ps_emu {
namespace detail {

template <typename F>
struct KernelSignature;
template <typename... A>
struct KernelSignature<void (*)(A...)> {
    static constexpr int num_params = static_cast<int>(sizeof...(A));
    // One trailing 0 keeps the arrays non-empty for kernels without parameters.
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(std::remove_cv_t<A>)..., 0};
    static constexpr size_t aligns[sizeof...(A) + 1] = {alignof(std::remove_cv_t<A>)..., 0};
    static_assert(!std::disjunction<std::is_reference<A>...>::value,
                  "kernel parameters cannot be references");
    template <size_t... I>
    static void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
        (void)args;
        f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
    }
};
template <typename... A>
struct KernelSignature<void (*)(A...) noexcept> : KernelSignature<void (*)(A...)> {
    template <size_t... I>
    static void call(void (*f)(A...) noexcept, void** args, std::index_sequence<I...> seq) {
        KernelSignature<void (*)(A...)>::call(f, args, seq);
    }
};

template <auto F>
void kernel_trampoline(void** args) {
    using Sig = KernelSignature<decltype(F)>;
    Sig::call(F, args, std::make_index_sequence<static_cast<size_t>(Sig::num_params)>{});
}

struct KernelRegistrar {
    KernelRegistrar(const char* name, KernelEntry entry, int num_params, const size_t* sizes,
                    const size_t* aligns, const char* file) {
        register_kernel(name, entry, num_params, sizes, aligns, file);
    }
};

}  // namespace detail
}  // namespace ps_emu

#define PS_REGISTER_KERNEL_AS(name_str, ...)                                                 \
    static const ::ps_emu::detail::KernelRegistrar PS_EMU_CONCAT(ps_emu_registrar_,         \
                                                                 __COUNTER__)(               \
        name_str, &::ps_emu::detail::kernel_trampoline<&__VA_ARGS__>,                        \
        ::ps_emu::detail::KernelSignature<decltype(&__VA_ARGS__)>::num_params,              \
        ::ps_emu::detail::KernelSignature<decltype(&__VA_ARGS__)>::sizes,                   \
        ::ps_emu::detail::KernelSignature<decltype(&__VA_ARGS__)>::aligns, __FILE__)
// The extra level expands a macro argument before it is turned into a string.
#define PS_EMU_REGISTER_KERNEL_I(kernel) PS_REGISTER_KERNEL_AS(#kernel, kernel)
#define PS_REGISTER_KERNEL(kernel) PS_EMU_REGISTER_KERNEL_I(kernel)

// ---------------------------------------------------------------------------
// Half precision storage types: __half (IEEE binary16) and __nv_bfloat16.
//
// 16-bit storage with round-to-nearest-even conversions, usable on the host
// too. Arithmetic goes through float (the implicit conversion): kernels are
// meant to widen on load and round once on store.
// ---------------------------------------------------------------------------

namespace ps_emu {

// Rounds the finite, non-negative value m * 2^e (m < 2^53) to a binary format
// with `frac` fraction bits, smallest normal exponent `emin`, exponent field
// of `ebits` bits (bias = 2^(ebits-1) - 1), round-to-nearest-even; returns the
// magnitude bits (overflow gives infinity).
inline constexpr unsigned short round_small_float(uint64_t m, int e, int frac, int emin, int ebits) {
    if (m == 0) return 0;
    int nbits = 64 - __builtin_clzll(m);
    int ex = nbits - 1 + e;                        // floor(log2(value))
    int q = (ex - frac > emin - frac) ? ex - frac : emin - frac;  // exponent of one ulp
    int shift = q - e;
    uint64_t n = 0;
    if (shift <= 0) {
        n = m << (-shift);  // exact: m has at most frac + 1 significant bits here
    } else if (shift >= 54) {
        n = 0;  // below half an ulp of the smallest subnormal (m < 2^53)
    } else {
        n = m >> shift;
        uint64_t rem = m & ((uint64_t(1) << shift) - 1);
        uint64_t half = uint64_t(1) << (shift - 1);
        if (rem > half || (rem == half && (n & 1))) ++n;
    }
    if (n == (uint64_t(1) << (frac + 1))) {  // rounding carried into a new binade
        n >>= 1;
        ++q;
    }
    const int bias = (1 << (ebits - 1)) - 1;
    const unsigned inf = ((1u << ebits) - 1u) << frac;
    if (n >= (uint64_t(1) << frac)) {  // normal
        int biased = q + frac + bias;
        if (biased >= (1 << ebits) - 1) return static_cast<unsigned short>(inf);
        return static_cast<unsigned short>((unsigned(biased) << frac) |
                                           unsigned(n - (uint64_t(1) << frac)));
    }
    return static_cast<unsigned short>(n);  // subnormal (or zero)
}

inline unsigned short f32_to_small(float f, int frac, int emin, int ebits) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const unsigned sign = (u >> 31) << (frac + ebits);
    const uint32_t exp = (u >> 23) & 0xff, man = u & 0x7fffff;
    const unsigned inf = ((1u << ebits) - 1u) << frac;
    if (exp == 0xff) {
        if (man == 0) return static_cast<unsigned short>(sign | inf);
        // NaN: quiet, sign and top payload bits kept.
        return static_cast<unsigned short>(sign | inf | (1u << (frac - 1)) | (man >> (23 - frac)));
    }
    uint64_t m = exp ? (man | 0x800000u) : man;
    int e = (exp ? int(exp) : 1) - 127 - 23;
    return static_cast<unsigned short>(sign | round_small_float(m, e, frac, emin, ebits));
}

inline unsigned short f64_to_small(double d, int frac, int emin, int ebits) {
    uint64_t u;
    memcpy(&u, &d, 8);
    const unsigned sign = unsigned(u >> 63) << (frac + ebits);
    const uint64_t exp = (u >> 52) & 0x7ff, man = u & 0xfffffffffffffull;
    const unsigned inf = ((1u << ebits) - 1u) << frac;
    if (exp == 0x7ff) {
        if (man == 0) return static_cast<unsigned short>(sign | inf);
        return static_cast<unsigned short>(sign | inf | (1u << (frac - 1)) |
                                           unsigned(man >> (52 - frac)));
    }
    uint64_t m = exp ? (man | 0x10000000000000ull) : man;
    int e = (exp ? int(exp) : 1) - 1023 - 52;
    return static_cast<unsigned short>(sign | round_small_float(m, e, frac, emin, ebits));
}

inline unsigned short f32_to_f16_bits(float f) { return f32_to_small(f, 10, -14, 5); }
inline unsigned short f64_to_f16_bits(double d) { return f64_to_small(d, 10, -14, 5); }
inline unsigned short f32_to_bf16_bits(float f) { return f32_to_small(f, 7, -126, 8); }
inline unsigned short f64_to_bf16_bits(double d) { return f64_to_small(d, 7, -126, 8); }

inline float f16_bits_to_f32(unsigned short h) {
    const uint32_t sign = uint32_t(h >> 15) << 31;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp - 15 + 127) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {
        // Subnormal half: man * 2^-24 is exact in float.
        float v = static_cast<float>(man) * 5.9604644775390625e-08f;
        memcpy(&u, &v, 4);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline float bf16_bits_to_f32(unsigned short b) {
    uint32_t u = uint32_t(b) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

}  // namespace ps_emu

struct __half_raw {
    unsigned short x;
};
struct __nv_bfloat16_raw {
    unsigned short x;
};

struct __align__(2) __half {
    unsigned short __x;
    __half() = default;
    constexpr __half(__half_raw r) : __x(r.x) {}
    __half(float f) : __x(::ps_emu::f32_to_f16_bits(f)) {}
    __half(double d) : __x(::ps_emu::f64_to_f16_bits(d)) {}
    __half(int i) : __half(static_cast<float>(i)) {}
    __half(unsigned int i) : __half(static_cast<float>(i)) {}
    __half(long i) : __half(static_cast<double>(i)) {}
    __half(unsigned long i) : __half(static_cast<double>(i)) {}
    __half(long long i) : __half(static_cast<double>(i)) {}
    __half(unsigned long long i) : __half(static_cast<double>(i)) {}
    operator float() const { return ::ps_emu::f16_bits_to_f32(__x); }
    constexpr operator __half_raw() const { return __half_raw{__x}; }
};

struct __align__(2) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(__nv_bfloat16_raw r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(::ps_emu::f32_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(::ps_emu::f64_to_bf16_bits(d)) {}
    __nv_bfloat16(int i) : __nv_bfloat16(static_cast<double>(i)) {}
    __nv_bfloat16(unsigned int i) : __nv_bfloat16(static_cast<double>(i)) {}
    __nv_bfloat16(long i) : __nv_bfloat16(static_cast<double>(i)) {}
    __nv_bfloat16(unsigned long i) : __nv_bfloat16(static_cast<double>(i)) {}
    __nv_bfloat16(long long i) : __nv_bfloat16(static_cast<double>(i)) {}
    __nv_bfloat16(unsigned long long i) : __nv_bfloat16(static_cast<double>(i)) {}
    operator float() const { return ::ps_emu::bf16_bits_to_f32(__x); }
    constexpr operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};

struct __align__(4) __half2 {
    __half x, y;
};
struct __align__(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

static_assert(sizeof(__half) == 2 && alignof(__half) == 2, "__half is 16-bit storage");
static_assert(sizeof(__nv_bfloat16) == 2 && alignof(__nv_bfloat16) == 2,
              "__nv_bfloat16 is 16-bit storage");
static_assert(std::is_trivially_copyable<__half>::value &&
                  std::is_trivially_default_constructible<__half>::value,
              "__half must be trivial");

inline __half __ushort_as_half(unsigned short u) { return __half(__half_raw{u}); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    return __nv_bfloat16(__nv_bfloat16_raw{u});
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }

inline __half __float2half(float f) { return __ushort_as_half(::ps_emu::f32_to_f16_bits(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline __half __double2half(double d) { return __ushort_as_half(::ps_emu::f64_to_f16_bits(d)); }
inline float __half2float(__half h) { return ::ps_emu::f16_bits_to_f32(h.__x); }
inline __nv_bfloat16 __float2bfloat16(float f) {
    return __ushort_as_bfloat16(::ps_emu::f32_to_bf16_bits(f));
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline __nv_bfloat16 __double2bfloat16(double d) {
    return __ushort_as_bfloat16(::ps_emu::f64_to_bf16_bits(d));
}
inline float __bfloat162float(__nv_bfloat16 b) { return ::ps_emu::bf16_bits_to_f32(b.__x); }

inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half(a), __float2half(b)}; }
inline __half2 __float2half2_rn(float a) { return __floats2half2_rn(a, a); }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
    return float2{__bfloat162float(h.x), __bfloat162float(h.y)};
}
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline bool __hisnan(__half h) { return (h.__x & 0x7fffu) > 0x7c00u; }
inline bool __hisnan(__nv_bfloat16 b) { return (b.__x & 0x7fffu) > 0x7f80u; }

// ---------------------------------------------------------------------------
// Math (libm; the fast intrinsics are the accurate functions here)
// ---------------------------------------------------------------------------

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) {
    *s = sinf(x);
    *c = cosf(x);
}
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline long long __double_as_longlong(double d) {
    long long i;
    memcpy(&i, &d, 8);
    return i;
}
inline double __longlong_as_double(long long i) {
    double d;
    memcpy(&d, &i, 8);
    return d;
}
inline int __float2int_rn(float f) { return static_cast<int>(nearbyintf(f)); }
inline int __float2int_rz(float f) { return static_cast<int>(f); }
inline unsigned __float2uint_rn(float f) { return static_cast<unsigned>(nearbyintf(f)); }
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __uint2float_rn(unsigned u) { return static_cast<float>(u); }
inline float __double2float_rn(double d) { return static_cast<float>(d); }

// min / max: CUDA's global overloads (same-type, plus the mixed signed /
// unsigned and float / double ones, which pick the wider or unsigned type).
#define PS_EMU_MINMAX(T)                            \
    inline T min(T a, T b) { return b < a ? b : a; } \
    inline T max(T a, T b) { return a < b ? b : a; }
PS_EMU_MINMAX(int)
PS_EMU_MINMAX(unsigned int)
PS_EMU_MINMAX(long)
PS_EMU_MINMAX(unsigned long)
PS_EMU_MINMAX(long long)
PS_EMU_MINMAX(unsigned long long)
#undef PS_EMU_MINMAX
inline unsigned int min(int a, unsigned int b) { return min(static_cast<unsigned>(a), b); }
inline unsigned int min(unsigned int a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned int max(int a, unsigned int b) { return max(static_cast<unsigned>(a), b); }
inline unsigned int max(unsigned int a, int b) { return max(a, static_cast<unsigned>(b)); }
inline unsigned long long min(long long a, unsigned long long b) {
    return min(static_cast<unsigned long long>(a), b);
}
inline unsigned long long min(unsigned long long a, long long b) {
    return min(a, static_cast<unsigned long long>(b));
}
inline unsigned long long max(long long a, unsigned long long b) {
    return max(static_cast<unsigned long long>(a), b);
}
inline unsigned long long max(unsigned long long a, long long b) {
    return max(a, static_cast<unsigned long long>(b));
}
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---------------------------------------------------------------------------
// Integer intrinsics
// ---------------------------------------------------------------------------

inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __clzll(long long x) {
    return x ? __builtin_clzll(static_cast<unsigned long long>(x)) : 64;
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
    return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) |
           __brev(static_cast<unsigned>(x >> 32));
}
inline int __mulhi(int a, int b) {
    return static_cast<int>((static_cast<long long>(a) * b) >> 32);
}
inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
__extension__ typedef unsigned __int128 ps_emu_u128;
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return static_cast<unsigned long long>((static_cast<ps_emu_u128>(a) * b) >> 64);
}

// ---------------------------------------------------------------------------
// Atomics: real atomic read-modify-writes (relaxed, like CUDA's), valid on
// global memory shared by all workers and on shared memory. The overload set
// is CUDA 13's: no atomicMax/atomicMin on float, no atomicAdd on long long.
// ---------------------------------------------------------------------------

namespace ps_emu {
namespace detail {
template <typename T, typename F>
inline T atomic_update(T* p, F f) {
    release_stores();
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, f(old), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename Bits, typename T, typename F>
inline T atomic_update_bits(T* p, F f) {
    static_assert(sizeof(Bits) == sizeof(T), "size mismatch");
    release_stores();
    Bits* b = reinterpret_cast<Bits*>(p);
    Bits old = __atomic_load_n(b, __ATOMIC_RELAXED);
    for (;;) {
        T oldv, newv;
        memcpy(&oldv, &old, sizeof(T));
        newv = f(oldv);
        Bits nb;
        memcpy(&nb, &newv, sizeof(T));
        if (__atomic_compare_exchange_n(b, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return oldv;
    }
}
}  // namespace detail
}  // namespace ps_emu

#define PS_EMU_ATOMIC_INT(T)                                                                    \
    inline T atomicAdd(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }        \
    inline T atomicSub(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }        \
    inline T atomicExch(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }      \
    inline T atomicAnd(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }        \
    inline T atomicOr(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }          \
    inline T atomicXor(T* p, T v) { ::ps_emu::detail::release_stores(); return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }        \
    inline T atomicMin(T* p, T v) {                                                             \
        return ::ps_emu::detail::atomic_update(p, [v](T o) { return v < o ? v : o; });          \
    }                                                                                           \
    inline T atomicMax(T* p, T v) {                                                             \
        return ::ps_emu::detail::atomic_update(p, [v](T o) { return o < v ? v : o; });          \
    }                                                                                           \
    inline T atomicCAS(T* p, T compare, T v) {                                                  \
        ::ps_emu::detail::release_stores();                                                     \
        __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
        return compare;                                                                         \
    }
PS_EMU_ATOMIC_INT(int)
PS_EMU_ATOMIC_INT(unsigned int)
PS_EMU_ATOMIC_INT(unsigned long long)
#undef PS_EMU_ATOMIC_INT
inline long long atomicMin(long long* p, long long v) {
    return ::ps_emu::detail::atomic_update(p, [v](long long o) { return v < o ? v : o; });
}
inline long long atomicMax(long long* p, long long v) {
    return ::ps_emu::detail::atomic_update(p, [v](long long o) { return o < v ? v : o; });
}
inline unsigned int atomicInc(unsigned int* p, unsigned int limit) {
    return ::ps_emu::detail::atomic_update(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1u; });
}
inline unsigned int atomicDec(unsigned int* p, unsigned int limit) {
    return ::ps_emu::detail::atomic_update(
        p, [limit](unsigned o) { return (o == 0u || o > limit) ? limit : o - 1u; });
}
inline float atomicAdd(float* p, float v) {
    return ::ps_emu::detail::atomic_update_bits<uint32_t>(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
    return ::ps_emu::detail::atomic_update_bits<uint64_t>(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) {
    uint32_t nb;
    memcpy(&nb, &v, 4);
    ::ps_emu::detail::release_stores();
    uint32_t ob = __atomic_exchange_n(reinterpret_cast<uint32_t*>(p), nb, __ATOMIC_RELAXED);
    float o;
    memcpy(&o, &ob, 4);
    return o;
}

// Weak-memory mode (kernels/emu/README.md, "Memory ordering between blocks"):
// a __stcg store (how kernels publish data for other blocks) is held in the
// storing thread's store buffer and reaches memory only at that thread's next
// fence or atomic, or at the end of the kernel; until then other blocks read
// the previous contents. The storing block itself sees its own pending stores
// through __ldcg. PS_EMU_WEAK_MEMORY=0 turns the mode off.
inline void __threadfence() {
    ::ps_emu::detail::release_stores();
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
inline void __threadfence_block() { __threadfence(); }
inline void __threadfence_system() { __threadfence(); }

// Cache-hinted loads and stores are plain accesses, except the L2 ones that
// carry data between blocks (__stcg, __ldcg): see the weak-memory mode above.
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldcg(const T* p) {
    if constexpr (sizeof(T) <= ::ps_emu::detail::kMaxPendingStore) {
        T v;
        ::ps_emu::detail::forward_load(p, &v, sizeof(T));
        return v;
    } else {
        return *p;
    }
}
template <typename T>
inline T __ldca(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }
template <typename T>
inline T __ldlu(const T* p) { return *p; }
template <typename T>
inline T __ldcv(const T* p) { return *p; }
template <typename T>
inline void __stwb(T* p, T v) { *p = v; }
template <typename T>
inline void __stcg(T* p, T v) {
    if constexpr (sizeof(T) <= ::ps_emu::detail::kMaxPendingStore)
        ::ps_emu::detail::publish_store(p, &v, sizeof(T));
    else
        *p = v;
}
template <typename T>
inline void __stcs(T* p, T v) { *p = v; }
template <typename T>
inline void __stwt(T* p, T v) { *p = v; }

inline long long clock64() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// Block-level synchronization
//
// All threads of the block must reach the same __syncthreads (same source
// line); a thread that has exited, or threads waiting at different barriers,
// make ps_emu_launch fail with a diagnostic instead of hanging.
// ---------------------------------------------------------------------------

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::ps_emu::detail::block_barrier(0, "__syncthreads()", file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
    return ::ps_emu::detail::block_barrier(pred != 0, "__syncthreads_count()", file, line);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
    int n = ::ps_emu::detail::block_barrier(pred != 0, "__syncthreads_and()", file, line);
    return n == static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
    return ::ps_emu::detail::block_barrier(pred != 0, "__syncthreads_or()", file, line) > 0;
}

// Yields to the other fibers of the block (so a polling loop with
// __nanosleep inside makes progress); not a barrier.
inline void __nanosleep(unsigned int ns, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
    (void)ns;
    ::ps_emu::detail::yield_fiber("__nanosleep()", file, line);
}

[[noreturn]] inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::ps_emu::detail::kernel_error(PS_EMU_ERR_KERNEL_FAULT, "__trap()", "the kernel executed __trap()",
                                   file, line);
}

// ---------------------------------------------------------------------------
// Warp-level primitives
//
// Every call must pass the full mask 0xffffffff and be reached by every live
// lane of the warp (lanes may come from different call sites of the same
// primitive, as on sm_70+). Each lane deposits its value in a per-warp
// exchange buffer, waits for the warp, then reads its source lane.
// In a partial last warp (block size not a multiple of 32) the missing lanes
// do not exist: a shuffle whose source lane does not exist returns the
// caller's own value, and votes see those lanes as false.
// ---------------------------------------------------------------------------

namespace ps_emu {
namespace detail {

enum class ShflMode { Idx, Up, Down, Xor };

inline unsigned shfl_source(ShflMode mode, unsigned lane, long long b, int width, const char* what,
                            const char* file, int line) {
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
        kernel_error(PS_EMU_ERR_UNSUPPORTED, what, "width must be a power of two in [1, 32]", file,
                     line);
    b &= 31;  // as shfl.sync: only the low 5 bits of the lane / offset operand count
    const long long w = width;
    const long long seg_start = static_cast<long long>(lane) & ~(w - 1);
    const long long seg_end = seg_start + w - 1;
    long long j = lane;
    switch (mode) {
        case ShflMode::Idx: j = seg_start + (b & (w - 1)); break;
        case ShflMode::Up: j = static_cast<long long>(lane) - b; if (j < seg_start) j = lane; break;
        case ShflMode::Down: j = static_cast<long long>(lane) + b; if (j > seg_end) j = lane; break;
        case ShflMode::Xor: j = static_cast<long long>(lane) ^ b; if (j > seg_end || j < 0) j = lane; break;
    }
    return static_cast<unsigned>(j);
}

template <typename T>
inline T shfl(unsigned mask, T var, ShflMode mode, long long b, int width, const char* what,
              const char* file, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a large type");
    uint64_t bits = 0;
    memcpy(&bits, &var, sizeof(T));
    WarpView v = warp_exchange(bits, mask, what, file, line);
    unsigned j = shfl_source(mode, v.lane, b, width, what, file, line);
    if (!((v.live >> j) & 1u)) j = v.lane;
    T r;
    memcpy(&r, &v.slots[j], sizeof(T));
    return r;
}

struct VoteResult {
    unsigned ballot;  // lanes whose predicate was non-zero
    unsigned live;    // lanes that took part
};

inline VoteResult vote(unsigned mask, int pred, const char* what, const char* file, int line) {
    WarpView v = warp_exchange(pred != 0, mask, what, file, line);
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((v.live >> l) & 1u) && v.slots[l]) bits |= 1u << l;
    return VoteResult{bits, v.live};
}

template <typename T, typename Op>
inline T warp_reduce(unsigned mask, T value, Op op, const char* what, const char* file, int line) {
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    WarpView v = warp_exchange(bits, mask, what, file, line);
    bool first = true;
    T acc = value;
    for (unsigned l = 0; l < 32; ++l) {
        if (!((v.live >> l) & 1u)) continue;
        T x;
        memcpy(&x, &v.slots[l], sizeof(T));
        acc = first ? x : op(acc, x);
        first = false;
    }
    return acc;
}

template <typename T>
inline unsigned match_any(unsigned mask, T value, const char* what, const char* file, int line) {
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    WarpView v = warp_exchange(bits, mask, what, file, line);
    unsigned m = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((v.live >> l) & 1u) && v.slots[l] == bits) m |= 1u << l;
    return m;
}

}  // namespace detail
}  // namespace ps_emu

#define PS_EMU_SITE_PARAMS const char *file = __builtin_FILE(), int line = __builtin_LINE()

#define PS_EMU_SHFL(T)                                                                            \
    inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,                  \
                         PS_EMU_SITE_PARAMS) {                                                     \
        return ::ps_emu::detail::shfl<T>(mask, var, ::ps_emu::detail::ShflMode::Idx, srcLane,      \
                                         width, "__shfl_sync", file, line);                        \
    }                                                                                              \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,        \
                            PS_EMU_SITE_PARAMS) {                                                  \
        return ::ps_emu::detail::shfl<T>(mask, var, ::ps_emu::detail::ShflMode::Up, delta, width, \
                                         "__shfl_up_sync", file, line);                            \
    }                                                                                              \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,      \
                              PS_EMU_SITE_PARAMS) {                                                \
        return ::ps_emu::detail::shfl<T>(mask, var, ::ps_emu::detail::ShflMode::Down, delta,       \
                                         width, "__shfl_down_sync", file, line);                   \
    }                                                                                              \
    inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,             \
                             PS_EMU_SITE_PARAMS) {                                                 \
        return ::ps_emu::detail::shfl<T>(mask, var, ::ps_emu::detail::ShflMode::Xor, laneMask,     \
                                         width, "__shfl_xor_sync", file, line);                    \
    }
PS_EMU_SHFL(int)
PS_EMU_SHFL(unsigned int)
PS_EMU_SHFL(long)
PS_EMU_SHFL(unsigned long)
PS_EMU_SHFL(long long)
PS_EMU_SHFL(unsigned long long)
PS_EMU_SHFL(float)
PS_EMU_SHFL(double)
PS_EMU_SHFL(__half)
PS_EMU_SHFL(__half2)
PS_EMU_SHFL(__nv_bfloat16)
PS_EMU_SHFL(__nv_bfloat162)
#undef PS_EMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int pred, PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::vote(mask, pred, "__ballot_sync", file, line).ballot;
}
inline int __any_sync(unsigned mask, int pred, PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::vote(mask, pred, "__any_sync", file, line).ballot != 0;
}
inline int __all_sync(unsigned mask, int pred, PS_EMU_SITE_PARAMS) {
    ::ps_emu::detail::VoteResult r = ::ps_emu::detail::vote(mask, pred, "__all_sync", file, line);
    return r.ballot == r.live;
}
inline int __uni_sync(unsigned mask, int pred, PS_EMU_SITE_PARAMS) {
    ::ps_emu::detail::VoteResult r = ::ps_emu::detail::vote(mask, pred, "__uni_sync", file, line);
    return r.ballot == 0 || r.ballot == r.live;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, PS_EMU_SITE_PARAMS) {
    (void)::ps_emu::detail::warp_exchange(0, mask, "__syncwarp()", file, line);
}
inline unsigned __activemask(PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::active_mask("__activemask()", file, line);
}

#define PS_EMU_REDUCE(T)                                                                   \
    inline T __reduce_add_sync(unsigned mask, T v, PS_EMU_SITE_PARAMS) {                    \
        return ::ps_emu::detail::warp_reduce(                                               \
            mask, v,                                                                        \
            [](T a, T b) {                                                                  \
                return static_cast<T>(static_cast<unsigned>(a) + static_cast<unsigned>(b)); \
            },                                                                              \
            "__reduce_add_sync", file, line);                                               \
    }                                                                                       \
    inline T __reduce_min_sync(unsigned mask, T v, PS_EMU_SITE_PARAMS) {                         \
        return ::ps_emu::detail::warp_reduce(                                                    \
            mask, v, [](T a, T b) { return b < a ? b : a; }, "__reduce_min_sync", file, line);   \
    }                                                                                            \
    inline T __reduce_max_sync(unsigned mask, T v, PS_EMU_SITE_PARAMS) {                         \
        return ::ps_emu::detail::warp_reduce(                                                    \
            mask, v, [](T a, T b) { return a < b ? b : a; }, "__reduce_max_sync", file, line);   \
    }
PS_EMU_REDUCE(int)
PS_EMU_REDUCE(unsigned int)
#undef PS_EMU_REDUCE
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::warp_reduce(
        mask, v, [](unsigned a, unsigned b) { return a & b; }, "__reduce_and_sync", file, line);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::warp_reduce(
        mask, v, [](unsigned a, unsigned b) { return a | b; }, "__reduce_or_sync", file, line);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, PS_EMU_SITE_PARAMS) {
    return ::ps_emu::detail::warp_reduce(
        mask, v, [](unsigned a, unsigned b) { return a ^ b; }, "__reduce_xor_sync", file, line);
}

#define PS_EMU_MATCH(T)                                                             \
    inline unsigned __match_any_sync(unsigned mask, T v, PS_EMU_SITE_PARAMS) {       \
        return ::ps_emu::detail::match_any(mask, v, "__match_any_sync", file, line); \
    }
PS_EMU_MATCH(int)
PS_EMU_MATCH(unsigned int)
PS_EMU_MATCH(long)
PS_EMU_MATCH(unsigned long)
PS_EMU_MATCH(long long)
PS_EMU_MATCH(unsigned long long)
PS_EMU_MATCH(float)
PS_EMU_MATCH(double)
#undef PS_EMU_MATCH

#undef PS_EMU_SITE_PARAMS

#endif  // PS_EMU_SIMT_H
