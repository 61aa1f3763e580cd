// Register-blocked GEMM for the small, oddly-strided products inside attention (head sizes
// 16-128, query blocks of 64 rows), where OpenBLAS spends most of its time packing and
// zeroing. Internal to the kernels (not part of ops.h).
#pragma once

#include <cstddef>

namespace tern::kernels::detail {

// C (M,W) = alpha * sum_k A(i,k) * B[k][0..W)   (+ C when accumulate)
// with A(i,k) = A[i*sa_i + k*sa_k] (any strides: row-major, or transposed with sa_i = 1),
// B rows of W contiguous elements with stride ldb, C rows with stride ldc.
// float: AVX-512 micro-kernels when compiled for it; otherwise (and for double) plain loops.
template <typename T>
void SmallGemm(int M, int W, int K, T alpha, const T* A, ptrdiff_t sa_i, ptrdiff_t sa_k, const T* B,
               int ldb, bool accumulate, T* C, int ldc);

}  // namespace tern::kernels::detail
