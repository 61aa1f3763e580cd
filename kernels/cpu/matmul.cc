// Dense layer over BLAS: out = inp @ W (+ bias), for both weight layouts.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include <algorithm>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

// kOutIn: W (OC,C), out = inp @ W^T.  kInOut: W (C,OC), out = inp @ W.
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC,
                    WeightLayout layout) {
  T beta = 0;
  if (bias != nullptr) {
    // Prefill out with the bias and let the GEMM accumulate onto it (beta = 1).
    const bool par = static_cast<size_t>(N) * OC >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
    for (int n = 0; n < N; ++n) std::copy(bias, bias + OC, out + static_cast<size_t>(n) * OC);
    beta = 1;
  }
  if (layout == WeightLayout::kOutIn) {
    gemm(false, true, N, OC, C, T(1), inp, C, weight, C, beta, out, OC);
  } else {
    gemm(false, false, N, OC, C, T(1), inp, C, weight, OC, beta, out, OC);
  }
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int N, int C, int OC, WeightLayout layout) {
  if (layout == WeightLayout::kOutIn) {
    // dinp (N,C) = dout (N,OC) @ W (OC,C); dW (OC,C) += dout^T @ inp.
    if (dinp != nullptr) gemm(false, false, N, C, OC, T(1), dout, OC, weight, C, T(0), dinp, C);
    gemm(true, false, OC, C, N, T(1), dout, OC, inp, C, T(1), dweight, C);
  } else {
    // dinp (N,C) = dout (N,OC) @ W^T (W is (C,OC)); dW (C,OC) += inp^T @ dout.
    if (dinp != nullptr) gemm(false, true, N, C, OC, T(1), dout, OC, weight, OC, T(0), dinp, C);
    gemm(true, false, C, OC, N, T(1), inp, C, dout, OC, T(1), dweight, OC);
  }
  if (dbias != nullptr) {
    const bool par = static_cast<size_t>(N) * OC >= detail::kParallelElems && OC >= 32;
#pragma omp parallel if (par)
    detail::ForColumnRange(OC, [&](int c0, int c1) {
      for (int n = 0; n < N; ++n) {
        const T* d = dout + static_cast<size_t>(n) * OC;
#pragma omp simd
        for (int c = c0; c < c1; ++c) dbias[c] += d[c];
      }
    });
  }
}

#define TERN_INSTANTIATE(T)                                                                       \
  template void matmul_forward<T>(T*, const T*, const T*, const T*, int, int, int, WeightLayout); \
  template void matmul_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int,       \
                                   WeightLayout);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
