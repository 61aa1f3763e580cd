// LayerNorm over the last dimension.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int N, int C, float eps) {
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* x = inp + static_cast<size_t>(n) * C;
    T* o = out + static_cast<size_t>(n) * C;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += x[c];
    const T m = sum / C;
    T var = 0;  // two-pass variance: no cancellation for rows with a large mean
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    const T s = T(1) / std::sqrt(var / C + static_cast<T>(eps));
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

// dinp is computed in a row-parallel loop; dweight/dbias in a column-parallel pass over all
// rows (see detail::ForColumnRange), which needs no scratch and is deterministic.
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int N, int C) {
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems;
#pragma omp parallel if (par)
  {
#pragma omp for schedule(static) nowait
    for (int n = 0; n < N; ++n) {
      const T* x = inp + static_cast<size_t>(n) * C;
      const T* d = dout + static_cast<size_t>(n) * C;
      T* di = dinp + static_cast<size_t>(n) * C;
      const T m = mean[n], s = rstd[n];
      T dsum = 0, dxsum = 0;
#pragma omp simd reduction(+ : dsum, dxsum)
      for (int c = 0; c < C; ++c) {
        const T dn = d[c] * weight[c];
        dsum += dn;
        dxsum += dn * (x[c] - m) * s;
      }
      const T dmean = dsum / C, dxmean = dxsum / C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const T xhat = (x[c] - m) * s;
        di[c] = (d[c] * weight[c] - dmean - xhat * dxmean) * s;
      }
    }
    detail::ForColumnRange(C, [&](int c0, int c1) {
      for (int n = 0; n < N; ++n) {
        const T* x = inp + static_cast<size_t>(n) * C;
        const T* d = dout + static_cast<size_t>(n) * C;
        const T m = mean[n], s = rstd[n];
#pragma omp simd
        for (int c = c0; c < c1; ++c) {
          dweight[c] += d[c] * (x[c] - m) * s;
          dbias[c] += d[c];
        }
      }
    });
  }
}

#define TERN_INSTANTIATE(T)                                                                      \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, float); \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                      const T*, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
