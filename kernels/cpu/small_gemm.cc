// Register-blocked small GEMM (see small_gemm.h).
// Parameter gradients accumulate (+=), activation gradients assign (=); this helper takes an
// explicit `accumulate` flag instead.
#include "kernels/cpu/small_gemm.h"

#include <algorithm>

#include "kernels/cpu/vec_math.h"

namespace tern::kernels::detail {

namespace {

template <typename T>
void SmallGemmLoops(int M, int W, int K, T alpha, const T* A, ptrdiff_t sa_i, ptrdiff_t sa_k,
                    const T* B, int ldb, bool accumulate, T* C, int ldc) {
  for (int i = 0; i < M; ++i) {
    T* c = C + static_cast<ptrdiff_t>(i) * ldc;
    for (int w = 0; w < W; ++w) {
      T acc = 0;
      for (int k = 0; k < K; ++k)
        acc += A[i * sa_i + k * sa_k] * B[static_cast<ptrdiff_t>(k) * ldb + w];
      c[w] = accumulate ? c[w] + alpha * acc : alpha * acc;
    }
  }
}

#if defined(__AVX512F__)
// One R x (16*V) tile of C; masks[v] selects the valid columns of vector v.
template <int R, int V>
inline void MicroTile(int K, float alpha, const float* A, ptrdiff_t sa_i, ptrdiff_t sa_k,
                      const float* B, int ldb, bool accumulate, float* C, int ldc,
                      const __mmask16* masks) {
  __m512 c[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) c[r][v] = _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    __m512 b[V];
    const float* bk = B + static_cast<ptrdiff_t>(k) * ldb;
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) b[v] = _mm512_maskz_loadu_ps(masks[v], bk + 16 * v);
    const float* ak = A + k * sa_k;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(ak[r * sa_i]);
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) c[r][v] = _mm512_fmadd_ps(a, b[v], c[r][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    float* cr = C + static_cast<ptrdiff_t>(r) * ldc;
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      __m512 x = _mm512_mul_ps(c[r][v], va);
      if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], cr + 16 * v));
      _mm512_mask_storeu_ps(cr + 16 * v, masks[v], x);
    }
  }
}

template <int R, int V>
void Rows(int M, int K, float alpha, const float* A, ptrdiff_t sa_i, ptrdiff_t sa_k, const float* B,
          int ldb, bool accumulate, float* C, int ldc, const __mmask16* masks) {
  int i = 0;
  for (; i + R <= M; i += R) {
    MicroTile<R, V>(K, alpha, A + i * sa_i, sa_i, sa_k, B, ldb, accumulate,
                    C + static_cast<ptrdiff_t>(i) * ldc, ldc, masks);
  }
  if (i == M) return;
  const float* a = A + i * sa_i;
  float* c = C + static_cast<ptrdiff_t>(i) * ldc;
  // The remaining M - i < R rows, one instantiation per count.
  // clang-format off
  switch (M - i) {
#define TERN_TAIL(n)                                                               \
  case n:                                                                          \
    if constexpr (n < R)                                                           \
      MicroTile<n, V>(K, alpha, a, sa_i, sa_k, B, ldb, accumulate, c, ldc, masks); \
    break;
    TERN_TAIL(1) TERN_TAIL(2) TERN_TAIL(3) TERN_TAIL(4) TERN_TAIL(5) TERN_TAIL(6)
    TERN_TAIL(7) TERN_TAIL(8) TERN_TAIL(9) TERN_TAIL(10) TERN_TAIL(11)
#undef TERN_TAIL
    default:
      break;
  }
  // clang-format on
}

// Columns in chunks of 16*V; V = 1..4 vectors wide, rows per tile chosen to fill ~24
// accumulator registers.
template <int V>
void Columns(int M, int W, int K, float alpha, const float* A, ptrdiff_t sa_i, ptrdiff_t sa_k,
             const float* B, int ldb, bool accumulate, float* C, int ldc) {
  constexpr int R = V == 1 ? 12 : V == 2 ? 8 : 6;
  for (int j = 0; j < W; j += 16 * V) {
    __mmask16 masks[V];
    for (int v = 0; v < V; ++v) masks[v] = TailMask(std::max(0, W - j - 16 * v));
    Rows<R, V>(M, K, alpha, A, sa_i, sa_k, B + j, ldb, accumulate, C + j, ldc, masks);
  }
}
#endif

}  // namespace

template <typename T>
void SmallGemm(int M, int W, int K, T alpha, const T* A, ptrdiff_t sa_i, ptrdiff_t sa_k, const T* B,
               int ldb, bool accumulate, T* C, int ldc) {
  SmallGemmLoops(M, W, K, alpha, A, sa_i, sa_k, B, ldb, accumulate, C, ldc);
}

#if defined(__AVX512F__)
template <>
void SmallGemm<float>(int M, int W, int K, float alpha, const float* A, ptrdiff_t sa_i,
                      ptrdiff_t sa_k, const float* B, int ldb, bool accumulate, float* C, int ldc) {
  if (M <= 0 || W <= 0) return;
  switch (std::min(4, (W + 15) / 16)) {
    case 1:
      Columns<1>(M, W, K, alpha, A, sa_i, sa_k, B, ldb, accumulate, C, ldc);
      break;
    case 2:
      Columns<2>(M, W, K, alpha, A, sa_i, sa_k, B, ldb, accumulate, C, ldc);
      break;
    case 3:
      Columns<3>(M, W, K, alpha, A, sa_i, sa_k, B, ldb, accumulate, C, ldc);
      break;
    default:
      Columns<4>(M, W, K, alpha, A, sa_i, sa_k, B, ldb, accumulate, C, ldc);
      break;
  }
}
#else
template void SmallGemm<float>(int, int, int, float, const float*, ptrdiff_t, ptrdiff_t,
                               const float*, int, bool, float*, int);
#endif
template void SmallGemm<double>(int, int, int, double, const double*, ptrdiff_t, ptrdiff_t,
                                const double*, int, bool, double*, int);

}  // namespace tern::kernels::detail
