// Fused softmax + cross-entropy over the vocabulary.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

// loss = log(sum exp(l - max)) + max - l[target], which stays accurate when p[target] is tiny.
template <typename T>
int crossentropy_softmax_forward(T* losses, T* probs, const T* logits, const int32_t* targets,
                                 int N, int V) {
  const bool par = static_cast<size_t>(N) * V >= detail::kParallelElems / 4;
  int count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) if (par)
  for (int n = 0; n < N; ++n) {
    const T* l = logits + static_cast<size_t>(n) * V;
    T* p = probs + static_cast<size_t>(n) * V;
    const T mx = detail::RowMax(l, V);
    const T sum = detail::ExpShiftSum(p, l, V, mx);
    detail::RowScale(p, V, T(1) / sum);
    const int32_t t = targets[n];
    if (t >= 0) {
      losses[n] = std::log(sum) + mx - l[t];
      ++count;
    } else {
      losses[n] = 0;
    }
  }
  return count;
}

template <typename T>
void crossentropy_softmax_backward(T* dlogits, float dloss, const T* probs, const int32_t* targets,
                                   int N, int V) {
  const bool par = static_cast<size_t>(N) * V >= detail::kParallelElems;
  const T s = static_cast<T>(dloss);
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* p = probs + static_cast<size_t>(n) * V;
    T* d = dlogits + static_cast<size_t>(n) * V;
    const int32_t t = targets[n];
    if (t < 0) {
      std::fill(d, d + V, T(0));
      continue;
    }
#pragma omp simd
    for (int v = 0; v < V; ++v) d[v] = p[v] * s;
    d[t] -= s;
  }
}

#define TERN_INSTANTIATE(T)                                                                 \
  template int crossentropy_softmax_forward<T>(T*, T*, const T*, const int32_t*, int, int); \
  template void crossentropy_softmax_backward<T>(T*, float, const T*, const int32_t*, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
