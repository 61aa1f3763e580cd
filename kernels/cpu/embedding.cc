// Token (+ learned position) embedding.
// Parameter gradients accumulate (+=), activation gradients assign (=).
#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int Tn,
                       int C, const int32_t* pos) {
  const int N = B * Tn;
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    T* o = out + static_cast<size_t>(n) * C;
    const T* w = wte + static_cast<size_t>(tokens[n]) * C;
    if (wpe != nullptr) {
      const T* p = wpe + static_cast<size_t>(pos != nullptr ? pos[n] : n % Tn) * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) o[c] = w[c] + p[c];
    } else {
      std::copy(w, w + C, o);
    }
  }
}

// Both scatters are parallelised over column ranges, so repeated tokens never race and the
// summation order (rows in order) does not depend on the thread count.
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B, int Tn,
                        int C, const int32_t* pos) {
  const int N = B * Tn;
  const bool par = static_cast<size_t>(N) * C >= detail::kParallelElems && C >= 32;
#pragma omp parallel if (par)
  detail::ForColumnRange(C, [&](int c0, int c1) {
    for (int n = 0; n < N; ++n) {
      const T* d = dout + static_cast<size_t>(n) * C;
      T* w = dwte + static_cast<size_t>(tokens[n]) * C;
#pragma omp simd
      for (int c = c0; c < c1; ++c) w[c] += d[c];
      if (dwpe != nullptr) {
        T* p = dwpe + static_cast<size_t>(pos != nullptr ? pos[n] : n % Tn) * C;
#pragma omp simd
        for (int c = c0; c < c1; ++c) p[c] += d[c];
      }
    }
  });
}

#define TERN_INSTANTIATE(T)                                                                 \
  template void embedding_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int, \
                                     const int32_t*);                                       \
  template void embedding_backward<T>(T*, T*, const T*, const int32_t*, int, int, int,      \
                                      const int32_t*);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
