// GELU, tanh approximation (HF "gelu_new", torch approximate="tanh").
// Parameter gradients accumulate (+=), activation gradients assign (=).
//
// 0.5 * x * (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3): the sigmoid
// form has no cancellation. Float uses AVX-512 (detail::Sigmoid512) when available.
#include <algorithm>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

namespace {

constexpr double kA = 2 * 0.7978845608028654;  // 2 sqrt(2/pi)
constexpr double kB = kA * 0.044715;

template <typename T>
void GeluForwardChunk(T* out, const T* inp, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const T x = inp[i];
    out[i] = x * detail::Sigmoid<T>(x * (T(kA) + T(kB) * x * x));
  }
}

// d/dx [x s(2u)] = s + x s (1 - s) 2u'(x), 2u' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2).
template <typename T>
void GeluBackwardChunk(T* dinp, const T* dout, const T* inp, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T x2 = x * x;
    const T s = detail::Sigmoid<T>(x * (T(kA) + T(kB) * x2));
    dinp[i] = dout[i] * (s + x * s * (T(1) - s) * (T(kA) + 3 * T(kB) * x2));
  }
}

#if defined(__AVX512F__)
template <>
void GeluForwardChunk<float>(float* out, const float* inp, size_t n) {
  const __m512 a = _mm512_set1_ps(kA), b = _mm512_set1_ps(kB);
  detail::For16(n, [&](size_t i, __mmask16 m) {
    const __m512 x = _mm512_maskz_loadu_ps(m, inp + i);
    const __m512 u = _mm512_mul_ps(x, _mm512_fmadd_ps(b, _mm512_mul_ps(x, x), a));
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(x, detail::Sigmoid512(u)));
  });
}

template <>
void GeluBackwardChunk<float>(float* dinp, const float* dout, const float* inp, size_t n) {
  const __m512 a = _mm512_set1_ps(kA), b = _mm512_set1_ps(kB), b3 = _mm512_set1_ps(3 * kB);
  const __m512 one = _mm512_set1_ps(1.0f);
  detail::For16(n, [&](size_t i, __mmask16 m) {
    const __m512 x = _mm512_maskz_loadu_ps(m, inp + i);
    const __m512 x2 = _mm512_mul_ps(x, x);
    const __m512 s = detail::Sigmoid512(_mm512_mul_ps(x, _mm512_fmadd_ps(b, x2, a)));
    const __m512 du = _mm512_fmadd_ps(b3, x2, a);
    const __m512 xs1s = _mm512_mul_ps(_mm512_mul_ps(x, s), _mm512_sub_ps(one, s));
    const __m512 g = _mm512_fmadd_ps(xs1s, du, s);
    _mm512_mask_storeu_ps(dinp + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dout + i), g));
  });
}
#endif

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, size_t n) {
  const size_t chunks = (n + detail::kChunkElems - 1) / detail::kChunkElems;
#pragma omp parallel for schedule(static) if (n >= detail::kParallelElems)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t i0 = c * detail::kChunkElems;
    GeluForwardChunk(out + i0, inp + i0, std::min(n - i0, detail::kChunkElems));
  }
}

template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, size_t n) {
  const size_t chunks = (n + detail::kChunkElems - 1) / detail::kChunkElems;
#pragma omp parallel for schedule(static) if (n >= detail::kParallelElems)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t i0 = c * detail::kChunkElems;
    GeluBackwardChunk(dinp + i0, dout + i0, inp + i0, std::min(n - i0, detail::kChunkElems));
  }
}

#define TERN_INSTANTIATE(T)                            \
  template void gelu_forward<T>(T*, const T*, size_t); \
  template void gelu_backward<T>(T*, const T*, const T*, size_t);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
