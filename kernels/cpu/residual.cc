// Residual add.
// Parameter gradients accumulate (+=), activation gradients assign (=) -- except
// residual_backward, which ACCUMULATES into da and db (the residual stream's gradient is
// the sum of its branches).
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void residual_forward(T* out, const T* a, const T* b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, size_t n) {
  const bool par = n >= detail::kParallelElems;
  if (da != nullptr && db != nullptr) {
#pragma omp parallel for simd schedule(static) if (par)
    for (size_t i = 0; i < n; ++i) {
      da[i] += dout[i];
      db[i] += dout[i];
    }
    return;
  }
  T* d = da != nullptr ? da : db;
  if (d == nullptr) return;
#pragma omp parallel for simd schedule(static) if (par)
  for (size_t i = 0; i < n; ++i) d[i] += dout[i];
}

#define TERN_INSTANTIATE(T)                                          \
  template void residual_forward<T>(T*, const T*, const T*, size_t); \
  template void residual_backward<T>(T*, T*, const T*, size_t);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
