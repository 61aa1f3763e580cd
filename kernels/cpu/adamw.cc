// AdamW (decoupled weight decay, bias correction), PyTorch's formula and operation order.
// Parameter gradients accumulate (+=), activation gradients assign (=); the optimizer reads
// grads and updates params, m and v in place.
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

// p = p * (1 - lr*wd) - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), as torch.optim.AdamW.
template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const T step_size = static_cast<T>(lr / bc1);
  const T bc2_sqrt = static_cast<T>(std::sqrt(bc2));
  const T decay = static_cast<T>(1.0 - static_cast<double>(lr) * weight_decay);
  const T b1 = beta1, b2 = beta2, e = eps;
  const T one_b1 = static_cast<T>(1.0 - beta1), one_b2 = static_cast<T>(1.0 - beta2);
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) {
    const T g = grads[i];
    const T mi = b1 * m[i] + one_b1 * g;
    const T vi = b2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] * decay - step_size * mi / (std::sqrt(vi) / bc2_sqrt + e);
  }
}

#define TERN_INSTANTIATE(T)                                                                      \
  template void adamw_update<T>(T*, const T*, T*, T*, size_t, float, float, float, float, float, \
                                int64_t);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
