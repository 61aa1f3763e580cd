// SwiGLU gate: inp (N, 2F) = [gate | up] per row, out (N, F) = silu(gate) * up.
// Parameter gradients accumulate (+=), activation gradients assign (=).
// Float uses AVX-512 (detail::Sigmoid512) when available.
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

namespace {

template <typename T>
void SwigluForwardRow(T* o, const T* g, const T* u, int F) {
  for (int f = 0; f < F; ++f) o[f] = g[f] * detail::Sigmoid<T>(g[f]) * u[f];
}

// dgate = dout * up * s (1 + g (1 - s)); dup = dout * g * s; s = sigmoid(gate).
template <typename T>
void SwigluBackwardRow(T* dg, T* du, const T* d, const T* g, const T* u, int F) {
  for (int f = 0; f < F; ++f) {
    const T s = detail::Sigmoid<T>(g[f]);
    const T silu = g[f] * s;
    dg[f] = d[f] * u[f] * (s + silu * (T(1) - s));
    du[f] = d[f] * silu;
  }
}

#if defined(__AVX512F__)
template <>
void SwigluForwardRow<float>(float* o, const float* g, const float* u, int F) {
  detail::For16(F, [&](size_t i, __mmask16 m) {
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 silu = _mm512_mul_ps(gv, detail::Sigmoid512(gv));
    _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
  });
}

template <>
void SwigluBackwardRow<float>(float* dg, float* du, const float* d, const float* g, const float* u,
                              int F) {
  const __m512 one = _mm512_set1_ps(1.0f);
  detail::For16(F, [&](size_t i, __mmask16 m) {
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 dv = _mm512_maskz_loadu_ps(m, d + i);
    const __m512 s = detail::Sigmoid512(gv);
    const __m512 silu = _mm512_mul_ps(gv, s);
    const __m512 ds = _mm512_fmadd_ps(silu, _mm512_sub_ps(one, s), s);
    const __m512 du_v = _mm512_mul_ps(dv, _mm512_maskz_loadu_ps(m, u + i));
    _mm512_mask_storeu_ps(dg + i, m, _mm512_mul_ps(du_v, ds));
    _mm512_mask_storeu_ps(du + i, m, _mm512_mul_ps(dv, silu));
  });
}
#endif

}  // namespace

template <typename T>
void swiglu_forward(T* out, const T* inp, int N, int F) {
  const bool par = static_cast<size_t>(N) * F >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<size_t>(n) * 2 * F;
    SwigluForwardRow(out + static_cast<size_t>(n) * F, g, g + F, F);
  }
}

template <typename T>
void swiglu_backward(T* dinp, const T* dout, const T* inp, int N, int F) {
  const bool par = static_cast<size_t>(N) * F >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<size_t>(n) * 2 * F;
    T* dg = dinp + static_cast<size_t>(n) * 2 * F;
    SwigluBackwardRow(dg, dg + F, dout + static_cast<size_t>(n) * F, g, g + F, F);
  }
}

#define TERN_INSTANTIATE(T)                                \
  template void swiglu_forward<T>(T*, const T*, int, int); \
  template void swiglu_backward<T>(T*, const T*, const T*, int, int);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
