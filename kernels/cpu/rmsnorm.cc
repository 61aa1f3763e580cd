// RMSNorm over the last dimension (Llama): out = inp * rstd * weight.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps) {
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* x = inp + static_cast<size_t>(n) * C;
    T* o = out + static_cast<size_t>(n) * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; ++c) ss += x[c] * x[c];
    const T s = T(1) / std::sqrt(ss / C + static_cast<T>(eps));
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = x[c] * s * weight[c];
    rstd[n] = s;
  }
}

// dinp = rstd * (dout*w - x * rstd^2 * mean(dout*w*x)); dweight += dout * x * rstd, computed
// in a column-parallel pass (deterministic, no scratch).
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int N, int C) {
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems;
#pragma omp parallel if (par)
  {
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; ++n) {
      const T* x = inp + static_cast<size_t>(n) * C;
      const T* d = dout + static_cast<size_t>(n) * C;
      T* di = dinp + static_cast<size_t>(n) * C;
      const T s = rstd[n];
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) dot += d[c] * weight[c] * x[c];
      const T k = s * s * dot / C;
#pragma omp simd
      for (int c = 0; c < C; ++c) di[c] = s * (d[c] * weight[c] - x[c] * k);
    }
    detail::ForColumnRange(C, [&](int c0, int c1) {
      for (int n = 0; n < N; ++n) {
        const T* x = inp + static_cast<size_t>(n) * C;
        const T* d = dout + static_cast<size_t>(n) * C;
        const T s = rstd[n];
#pragma omp simd
        for (int c = c0; c < c1; ++c) dweight[c] += d[c] * x[c] * s;
      }
    });
  }
}

#define TERN_INSTANTIATE(T)                                                      \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int, int, float); \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
