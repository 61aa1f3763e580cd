// SwiGLU gate: inp (N, 2F) = [gate | up] per row, out (N, F) = silu(gate) * up.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void swiglu_forward(T* out, const T* inp, int N, int F) {
  const bool par = static_cast<size_t>(N) * F >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<size_t>(n) * 2 * F;
    const T* u = g + F;
    T* o = out + static_cast<size_t>(n) * F;
#pragma omp simd
    for (int f = 0; f < F; ++f) o[f] = g[f] * detail::Sigmoid<T>(g[f]) * u[f];
  }
}

// dgate = dout * up * s (1 + g (1 - s)); dup = dout * g * s; s = sigmoid(gate).
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int N, int F) {
  const bool par = static_cast<size_t>(N) * F >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<size_t>(n) * 2 * F;
    const T* u = g + F;
    const T* d = dout + static_cast<size_t>(n) * F;
    T* dg = dinp + static_cast<size_t>(n) * 2 * F;
    T* du = dg + F;
#pragma omp simd
    for (int f = 0; f < F; ++f) {
      const T s = detail::Sigmoid<T>(g[f]);
      const T silu = g[f] * s;
      dg[f] = d[f] * u[f] * (s + silu * (T(1) - s));
      du[f] = d[f] * silu;
    }
  }
}

#define TERN_INSTANTIATE(T)                                          \
  template void swiglu_forward<T>(T*, const T*, int, int);          \
  template void swiglu_backward<T>(T*, const T*, const T*, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
