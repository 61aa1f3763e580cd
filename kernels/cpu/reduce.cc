// Reductions and scaling used around the optimizer (gradient norm, clipping).
// Parameter gradients accumulate (+=), activation gradients assign (=); these kernels take
// no gradients: sum_squares reads, scale_inplace rewrites x.
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
double sum_squares(const T* x, size_t n) {
  double acc = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) {
    const double xi = static_cast<double>(x[i]);
    acc += xi * xi;
  }
  return acc;
}

template <typename T>
void scale_inplace(T* x, float s, size_t n) {
  const T ts = static_cast<T>(s);
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) x[i] *= ts;
}

#define TERN_INSTANTIATE(T)                         \
  template double sum_squares<T>(const T*, size_t); \
  template void scale_inplace<T>(T*, float, size_t);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
