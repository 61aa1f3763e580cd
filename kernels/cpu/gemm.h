// Row-major GEMM over OpenBLAS (the OpenMP build): C (M,N) = alpha * op(A) @ op(B) + beta * C,
// op(X) = X^T when trans_x. Called inside an OpenMP parallel region, OpenBLAS runs the call
// on the calling thread only (it checks omp_in_parallel, and libgomp's default
// max-active-levels of 1 keeps nested regions inactive), so per-head GEMMs in a parallel
// loop do not oversubscribe the cores (checked: the process keeps 2 threads).
#pragma once

#include <cblas.h>

namespace tern::kernels {

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace tern::kernels
