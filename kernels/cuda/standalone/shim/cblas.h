// A minimal cblas.h for the standalone checker (kernels/cuda/standalone): the GPU machine has
// no OpenBLAS, and the CPU kernels only need row-major sgemm/dgemm as the reference. Naive
// loops, parallel over rows with OpenMP: slow, but the checks' shapes are small.
#pragma once

#include <cstddef>

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

namespace tern_shim {
template <typename T>
inline void Gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, T alpha, const T* A,
                 int lda, const T* B, int ldb, T beta, T* C, int ldc) {
#pragma omp parallel for schedule(static) if (static_cast <double>(M) * N * K > 1e6)
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      T s = 0;
      for (int k = 0; k < K; ++k) {
        const T a = ta == CblasNoTrans ? A[static_cast<size_t>(i) * lda + k]
                                       : A[static_cast<size_t>(k) * lda + i];
        const T b = tb == CblasNoTrans ? B[static_cast<size_t>(k) * ldb + j]
                                       : B[static_cast<size_t>(j) * ldb + k];
        s += a * b;
      }
      T& c = C[static_cast<size_t>(i) * ldc + j];
      c = beta == T(0) ? alpha * s : alpha * s + beta * c;
    }
  }
}
}  // namespace tern_shim

inline void cblas_sgemm(CBLAS_ORDER, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                        float alpha, const float* A, int lda, const float* B, int ldb, float beta,
                        float* C, int ldc) {
  tern_shim::Gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void cblas_dgemm(CBLAS_ORDER, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                        double alpha, const double* A, int lda, const double* B, int ldb,
                        double beta, double* C, int ldc) {
  tern_shim::Gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void openblas_set_num_threads(int) {}
inline int openblas_get_num_threads() { return 1; }
