// GELU, tanh approximation (HF "gelu_new", torch approximate="tanh").
// Parameter gradients accumulate (+=), activation gradients assign (=).
//
// 0.5 * x * (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3): the sigmoid
// form has no cancellation and vectorises through detail::Exp.
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kCubic = 0.044715;
}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, size_t n) {
  const T a = static_cast<T>(2 * kSqrt2OverPi), b = static_cast<T>(2 * kSqrt2OverPi * kCubic);
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) {
    const T x = inp[i];
    out[i] = x * detail::Sigmoid<T>(x * (a + b * x * x));
  }
}

// d/dx [x s(2u)] = s + x s (1 - s) 2u'(x), 2u' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n) {
  const T a = static_cast<T>(2 * kSqrt2OverPi), b = static_cast<T>(2 * kSqrt2OverPi * kCubic);
#pragma omp parallel for simd schedule(static) if (n >= detail::kParallelElems)
  for (size_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T x2 = x * x;
    const T s = detail::Sigmoid<T>(x * (a + b * x2));
    const T du = a + 3 * b * x2;
    dinp[i] = dout[i] * (s + x * s * (T(1) - s) * du);
  }
}

#define TERN_INSTANTIATE(T)                                    \
  template void gelu_forward<T>(T*, const T*, size_t);        \
  template void gelu_backward<T>(T*, const T*, const T*, size_t);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
