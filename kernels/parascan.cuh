// parascan.cuh: element types and combines of every transition family.
//
// Shared by all kernels/*.cu. The Rust CPU engine (src/family/) implements
// exactly the same algebra, so that a kernel and the CPU engine can be
// compared step by step and agree to rounding.
//
// Convention used everywhere: combine(e1, e2) with e1 the EARLIER element and
// e2 the LATER one returns the element that applies e1 first, then e2. The
// monoid is not commutative, so argument order matters in every scan phase;
// keeping one convention across families lets a single scan skeleton be
// templated on the family.
//
// The header must also compile as plain C++ (g++ -std=c++17, no __CUDACC__):
// the emulated-kernel backend builds the same sources for the CPU. That is why
// all functions are PS_HD (empty on the host compiler) and the half-precision
// storage types sit behind PS_HAS_HALF.
//
// Arithmetic is plain IEEE: no fast-math intrinsics, no approximate
// reciprocals, because the tests compare against an f64 oracle with tight
// tolerances. (nvcc may still contract a*b+c into an FMA, which is a correctly
// rounded IEEE operation and only makes results more accurate.)

#ifndef PARASCAN_CUH
#define PARASCAN_CUH

#if defined(__CUDACC__)
#define PS_HD __host__ __device__
#else
#define PS_HD
#endif

// Half-precision storage needs NVIDIA's headers; a host-only build can opt in
// later by providing compatible types and defining PS_HAS_HALF itself.
#if defined(__CUDACC__) && !defined(PS_HAS_HALF)
#define PS_HAS_HALF 1
#endif

#if defined(PS_HAS_HALF)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace ps {

// ---------------------------------------------------------------------------
// Storage conversions
//
// Data may be stored as f32, f16 or bf16 but is always computed in float (or
// double for f64 data): half precision cannot hold a running product of
// decays without losing everything after a few hundred steps. So every load
// widens and every store rounds once, at the very end.
// ---------------------------------------------------------------------------

PS_HD inline float widen(float x) { return x; }
PS_HD inline double widen(double x) { return x; }
#if defined(PS_HAS_HALF)
PS_HD inline float widen(__half x) { return __half2float(x); }
PS_HD inline float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
#endif

// Loads one stored value as compute type T.
template <typename T, typename S>
PS_HD inline T load(const S* p) {
    return static_cast<T>(widen(*p));
}

// Rounds a computed value to storage type S. Half types only accept float:
// computing in double and storing in half is not a supported combination, and
// going through float would round twice.
template <typename S>
struct Narrow {
    template <typename T>
    PS_HD static S from(T x) {
        return static_cast<S>(x);
    }
};
#if defined(PS_HAS_HALF)
template <>
struct Narrow<__half> {
    // Round-to-nearest-even, matching half::f16::from_f32 on the Rust side.
    PS_HD static __half from(float x) { return __float2half_rn(x); }
    static __half from(double) = delete;
};
template <>
struct Narrow<__nv_bfloat16> {
    PS_HD static __nv_bfloat16 from(float x) { return __float2bfloat16_rn(x); }
    static __nv_bfloat16 from(double) = delete;
};
#endif

template <typename S, typename T>
PS_HD inline void store(S* p, T x) {
    *p = Narrow<S>::from(x);
}

// ---------------------------------------------------------------------------
// Diagonal: h_t = a_t * h_{t-1} + b_t per lane.
//
// The element is the affine map h -> a*h + b. The scan kernels work on one
// lane at a time, so the element is two scalars held in registers.
// ---------------------------------------------------------------------------

template <typename T>
struct DiagElem {
    T a;
    T b;
};

template <typename T>
struct Diagonal {
    using Elem = DiagElem<T>;

    // The identity map; it pads partial warps and seeds exclusive scans.
    PS_HD static Elem identity() { return Elem{T(1), T(0)}; }

    // Applying e1 then e2: a2*(a1*h + b1) + b2.
    PS_HD static Elem combine(Elem e1, Elem e2) { return Elem{e2.a * e1.a, e2.a * e1.b + e2.b}; }

    PS_HD static T apply(Elem e, T h) { return e.a * h + e.b; }
};

// ---------------------------------------------------------------------------
// Depth counter: an element that measures the critical path of a scan.
//
// Running a scan skeleton over this element instead of a real family records,
// for every output, the longest chain of combines that produced it; this is
// how depth is measured rather than computed. Leaves start at 0.
// ---------------------------------------------------------------------------

struct DepthCounter {
    using Elem = unsigned int;
    PS_HD static Elem identity() { return 0u; }
    PS_HD static Elem combine(Elem d1, Elem d2) { return (d1 > d2 ? d1 : d2) + 1u; }
};

// ---------------------------------------------------------------------------
// PermDiagonal: (A h)_i = d_i * h[perm_i].
//
// An element is (perm, d, b): h'_i = d_i * h[perm_i] + b_i. Permutations of
// at most 256 elements fit in one byte, which keeps an element of n = 64 at
// 64 + 2*64*4 bytes and lets more of them live in shared memory; the index
// type is a template parameter for larger n.
//
// Composition (e1 first, e2 second), from
//   h''_i = d2_i * h'[p2_i] + b2_i,  h'_j = d1_j * h[p1_j] + b1_j:
//   perm_i = p1[p2_i],  d_i = d2_i * d1[p2_i],  b_i = d2_i * b1[p2_i] + b2_i.
// Output slot i reads e2 only at i and e1 at an arbitrary index, so the output
// may alias e2 (in-place "fold e1 into e2") but must not alias e1.
// ---------------------------------------------------------------------------

template <typename T, typename I = unsigned char>
PS_HD inline void pd_identity(int n, I* perm, T* d, T* b) {
    for (int i = 0; i < n; ++i) {
        perm[i] = static_cast<I>(i);
        d[i] = T(1);
        b[i] = T(0);
    }
}

// One output slot i of pd_combine, given e1 gathered at j = p2_i (p1j, d1j, b1j) and
// e2 at slot i (d2i, b2i). The kernels distribute slots over the lanes of a team and
// gather e1 through shuffles or shared memory, then call exactly this.
template <typename T, typename I>
PS_HD inline void pd_combine_slot(I p1j, T d1j, T b1j, T d2i, T b2i, I& perm, T& d, T& b) {
    perm = p1j;
    d = d2i * d1j;
    b = d2i * b1j + b2i;
}

// One output slot of pd_apply: h_out_i = d_i * h_in[perm_i] + b_i with hj = h_in[perm_i].
template <typename T>
PS_HD inline T pd_apply_slot(T di, T hj, T bi) {
    return di * hj + bi;
}

template <typename T, typename I = unsigned char>
PS_HD inline void pd_combine(int n, const I* p1, const T* d1, const T* b1, const I* p2, const T* d2,
                             const T* b2, I* perm, T* d, T* b) {
    for (int i = 0; i < n; ++i) {
        // Arguments are read (by value) before anything is written: outputs may alias e2.
        const int j = static_cast<int>(p2[i]);
        pd_combine_slot<T, I>(p1[j], d1[j], b1[j], d2[i], b2[i], perm[i], d[i], b[i]);
    }
}

// h_out must not alias h_in: slot i gathers from any slot of h_in.
template <typename T, typename I = unsigned char>
PS_HD inline void pd_apply(int n, const I* perm, const T* d, const T* b, const T* h_in, T* h_out) {
    for (int i = 0; i < n; ++i) h_out[i] = pd_apply_slot(d[i], h_in[static_cast<int>(perm[i])], b[i]);
}

// Register-resident element for a compile-time n (e.g. the S5 word problem,
// n = 5), so a thread can hold a whole element without shared memory.
template <typename T, int N, typename I = unsigned char>
struct PDElem {
    I perm[N];
    T d[N];
    T b[N];
};

template <typename T, int N, typename I = unsigned char>
struct PermDiagonal {
    using Elem = PDElem<T, N, I>;

    PS_HD static Elem identity() {
        Elem e;
        pd_identity<T, I>(N, e.perm, e.d, e.b);
        return e;
    }

    PS_HD static Elem combine(const Elem& e1, const Elem& e2) {
        Elem r;
        pd_combine<T, I>(N, e1.perm, e1.d, e1.b, e2.perm, e2.d, e2.b, r.perm, r.d, r.b);
        return r;
    }
};

// ---------------------------------------------------------------------------
// BlockDiagonal(k): nb dense k x k blocks, n = nb * k.
//
// A is stored block after block, each block row-major: A[blk][r][c]. The
// family interpolates between Diagonal (k = 1) and Dense (k = n); blocks never
// mix, so every function is a loop over independent blocks and a kernel may
// give each block to its own thread or warp.
// combine: A = A2 * A1 and b = A2 * b1 + b2, blockwise. Outputs must not
// alias inputs (a matrix product reads whole rows and columns).
// The kernels (block_diagonal.cu, psb::step) evaluate the same thing one
// column at a time: column c of A2 * A1 is A2 * (column c of A1), and b is
// A2 * b1 + b2, each the row loop below with the same summation order (acc
// from 0 or from b2[r], then j = 0..k-1), as the Rust fold_step does.
// ---------------------------------------------------------------------------

template <typename T>
PS_HD inline void bd_identity(int nb, int k, T* A, T* b) {
    for (int blk = 0; blk < nb; ++blk) {
        T* Ab = A + blk * k * k;
        for (int r = 0; r < k; ++r)
            for (int c = 0; c < k; ++c) Ab[r * k + c] = (r == c) ? T(1) : T(0);
    }
    for (int i = 0; i < nb * k; ++i) b[i] = T(0);
}

template <typename T>
PS_HD inline void bd_combine(int nb, int k, const T* A1, const T* b1, const T* A2, const T* b2, T* A,
                             T* b) {
    for (int blk = 0; blk < nb; ++blk) {
        const T* X1 = A1 + blk * k * k;
        const T* X2 = A2 + blk * k * k;
        const T* y1 = b1 + blk * k;
        const T* y2 = b2 + blk * k;
        T* X = A + blk * k * k;
        T* y = b + blk * k;
        for (int r = 0; r < k; ++r) {
            for (int c = 0; c < k; ++c) {
                T acc = T(0);
                for (int j = 0; j < k; ++j) acc += X2[r * k + j] * X1[j * k + c];
                X[r * k + c] = acc;
            }
            T acc = y2[r];
            for (int j = 0; j < k; ++j) acc += X2[r * k + j] * y1[j];
            y[r] = acc;
        }
    }
}

// h_out must not alias h_in.
template <typename T>
PS_HD inline void bd_apply(int nb, int k, const T* A, const T* b, const T* h_in, T* h_out) {
    for (int blk = 0; blk < nb; ++blk) {
        const T* X = A + blk * k * k;
        const T* h = h_in + blk * k;
        for (int r = 0; r < k; ++r) {
            T acc = b[blk * k + r];
            for (int j = 0; j < k; ++j) acc += X[r * k + j] * h[j];
            h_out[blk * k + r] = acc;
        }
    }
}

// ---------------------------------------------------------------------------
// DPLR (rank R): A_t = diag(w) + sum_r u_r v_r^T acting on a state matrix
// H (n x m, row-major), input B_t = k x^T.
//
// Products of DPLR matrices are not DPLR, so aggregates over a chunk are dense
// (M: n x n, N: n x m) with combine (M2 M1, M2 N1 + N2). But a single step is
// never expanded to a dense n x n matrix: applying it costs O(R n c) for an
// n x c right-hand side instead of O(n^2 c), which is what makes the
// sequential rescan and the chunk fold cheap. u and v are [R][n] as in the
// input layout [B,T,R,n].
// ---------------------------------------------------------------------------

// X <- A_t X for X (n x cols, row-major), in place.
// scratch must hold R * cols values: all projections v_r^T X are taken from
// the old X before any row of X is overwritten.
template <typename T>
PS_HD inline void dplr_lmul(int n, int cols, int R, const T* w, const T* u, const T* v, T* X,
                            T* scratch) {
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < cols; ++c) {
            T acc = T(0);
            for (int i = 0; i < n; ++i) acc += v[r * n + i] * X[i * cols + c];
            scratch[r * cols + c] = acc;
        }
    }
    for (int i = 0; i < n; ++i) {
        for (int c = 0; c < cols; ++c) {
            T acc = w[i] * X[i * cols + c];
            for (int r = 0; r < R; ++r) acc += u[r * n + i] * scratch[r * cols + c];
            X[i * cols + c] = acc;
        }
    }
}

// One recurrence step in place: H <- w (.) H + sum_r u_r (v_r^T H) + k x^T.
// "w (.) H" scales row i by w_i (diag(w) H). scratch holds R * m values.
template <typename T>
PS_HD inline void dplr_step(int n, int m, int R, const T* w, const T* u, const T* v, const T* k,
                            const T* x, T* H, T* scratch) {
    dplr_lmul(n, m, R, w, u, v, H, scratch);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) H[i * m + j] += k[i] * x[j];
}

// Appends one step to a dense aggregate (M, N) in place, i.e. combine(agg,
// step) without forming the step densely: M <- A_t M, N <- A_t N + k x^T.
// scratch holds R * max(n, m) values.
template <typename T>
PS_HD inline void dplr_fold_step(int n, int m, int R, const T* w, const T* u, const T* v,
                                 const T* k, const T* x, T* M, T* N, T* scratch) {
    dplr_lmul(n, n, R, w, u, v, M, scratch);
    dplr_step(n, m, R, w, u, v, k, x, N, scratch);
}

// The aggregate of zero steps.
template <typename T>
PS_HD inline void dplr_identity(int n, int m, T* M, T* N) {
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) M[i * n + j] = (i == j) ? T(1) : T(0);
    for (int i = 0; i < n * m; ++i) N[i] = T(0);
}

// Dense aggregates: (M, N) = (M2 M1, M2 N1 + N2). Outputs must not alias
// inputs.
template <typename T>
PS_HD inline void dplr_combine(int n, int m, const T* M1, const T* N1, const T* M2, const T* N2, T* M,
                               T* N) {
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            T acc = T(0);
            for (int l = 0; l < n; ++l) acc += M2[i * n + l] * M1[l * n + j];
            M[i * n + j] = acc;
        }
        for (int j = 0; j < m; ++j) {
            T acc = N2[i * m + j];
            for (int l = 0; l < n; ++l) acc += M2[i * n + l] * N1[l * m + j];
            N[i * m + j] = acc;
        }
    }
}

// H_out = M H_in + N. H_out must not alias H_in.
template <typename T>
PS_HD inline void dplr_apply(int n, int m, const T* M, const T* N, const T* H_in, T* H_out) {
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < m; ++j) {
            T acc = N[i * m + j];
            for (int l = 0; l < n; ++l) acc += M[i * n + l] * H_in[l * m + j];
            H_out[i * m + j] = acc;
        }
    }
}

// Readout y = H^T q (m values): the fast path, because the full [B,T,n,m]
// state sequence is too large to write out.
template <typename T>
PS_HD inline void dplr_readout(int n, int m, const T* H, const T* q, T* y) {
    for (int j = 0; j < m; ++j) {
        T acc = T(0);
        for (int i = 0; i < n; ++i) acc += H[i * m + j] * q[i];
        y[j] = acc;
    }
}

// ---------------------------------------------------------------------------
// DPLR, one column at a time (what kernels/dplr.cu runs).
//
// The columns of H (and of a chunk aggregate [M | N]) evolve independently:
// column j of dplr_step is h <- w (.) h + sum_r u_r (v_r^T h) + k x_j, with
// the same summation order as dplr_lmul (projections over rows ascending, then
// w*h first and the rank terms in r order, then + k x_j). A kernel thread
// keeps one column h[0..NMAX) in registers; the step vectors w, u_r, v_r, k
// are staged with stride NMAX and zero padding, so entries l >= n of h stay 0
// and no loop needs a bound check (adding 0 products changes no sum).
// ---------------------------------------------------------------------------

// Full unrolling on the GPU (register arrays need constant indices); the
// emulator's host compiler gets plain loops, which compile fast.
#ifndef PS_UNROLL
#if defined(__CUDACC__) || defined(__clang__)
#define PS_UNROLL _Pragma("unroll")
#else
#define PS_UNROLL
#endif
#endif

// Column of dplr_step (has_input) or of dplr_lmul (a column of M, no input).
// u, v: R vectors of stride NMAX. The R projections go to s[r * s_stride] (a
// per-thread slot in shared memory on the GPU) so that the rank loop is a
// runtime loop around unrolled row loops: code size does not grow with R.
template <typename T, int NMAX>
PS_HD inline void dplr_col_step(int R, const T* w, const T* u, const T* v, const T* k, T xj,
                                bool has_input, T* h, T* s, int s_stride) {
    for (int r = 0; r < R; ++r) {
        T acc = T(0);
PS_UNROLL
        for (int l = 0; l < NMAX; ++l) acc += v[r * NMAX + l] * h[l];
        s[r * s_stride] = acc;
    }
PS_UNROLL
    for (int l = 0; l < NMAX; ++l) h[l] = w[l] * h[l];
    for (int r = 0; r < R; ++r) {
        const T sr = s[r * s_stride];
PS_UNROLL
        for (int l = 0; l < NMAX; ++l) h[l] += u[r * NMAX + l] * sr;
    }
    if (has_input) {
PS_UNROLL
        for (int l = 0; l < NMAX; ++l) h[l] += k[l] * xj;
    }
}

// Column j of dplr_readout: y_j = sum_i H[i][j] q_i, i ascending.
template <typename T, int NMAX>
PS_HD inline T dplr_col_readout(const T* h, const T* q) {
    T acc = T(0);
PS_UNROLL
    for (int l = 0; l < NMAX; ++l) acc += h[l] * q[l];
    return acc;
}

// Row i of a dense product applied to one column: init + sum_l Mrow[l] a[l],
// l ascending. With init = 0 and a = column j of M1 this is M[i][j] of
// dplr_combine; with init = N2[i][j] (or N[i][j]) and a = column j of N1 (or
// H_in) it is N[i][j] of dplr_combine (or H_out[i][j] of dplr_apply).
template <typename T, int NMAX>
PS_HD inline T dplr_row_dot(T init, const T* mrow, const T* a) {
    T acc = init;
PS_UNROLL
    for (int l = 0; l < NMAX; ++l) acc += mrow[l] * a[l];
    return acc;
}

}  // namespace ps

#endif  // PARASCAN_CUH
