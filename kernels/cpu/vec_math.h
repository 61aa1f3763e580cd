// Internal helpers shared by the CPU kernels: vectorisable exp/sigmoid, softmax row
// primitives (AVX-512 for float when the compiler targets it; the generic loops serve double
// and other targets) and the OpenMP work thresholds. Not part of the public kernel API.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace tern::kernels::detail {

// Below this many elements an elementwise kernel runs on one thread: the OpenMP fork/join
// (a few microseconds) costs more than the work saves.
inline constexpr size_t kParallelElems = 1 << 15;

// exp(x) for float without libm calls, so that GCC vectorises loops around it (glibc's
// vector expf is only used under -ffast-math). Cody-Waite range reduction + the Cephes
// degree-6 polynomial: max relative error ~2 ulp on [-87.3, 88.7]; inputs are clamped to
// that range (exp(-inf) returns ~1.2e-38 instead of 0, harmless for softmax/sigmoid).
inline float ExpFast(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  // n = round(x / ln2) via the 1.5*2^23 trick (no floor call, vectorisable).
  const float kShift = 12582912.0f;
  float t = x * 1.44269504088896341f + kShift;
  float n = t - kShift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// exp in the kernels' scalar type: the fast polynomial for float, libm for double (the
// double instantiation exists for gradient checks, where accuracy is all that matters).
template <typename T>
inline T Exp(T x);
template <>
inline float Exp<float>(float x) {
  return ExpFast(x);
}
template <>
inline double Exp<double>(double x) {
  return std::exp(x);
}

// 1 / (1 + exp(-x)).
template <typename T>
inline T Sigmoid(T x) {
  return T(1) / (T(1) + Exp<T>(-x));
}

#if defined(__AVX512F__)
// 16-lane version of ExpFast (same clamp, reduction and polynomial), with vscalefps for 2^n.
inline __m512 Exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// 1 / (1 + exp(-x)), 16 lanes.
inline __m512 Sigmoid512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

// Lanes [0, n) of a 16-lane block, n in [0, 16].
inline __mmask16 TailMask(int n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}
#endif

// ---- Row primitives for softmax (generic loops; AVX-512 for float) ---------------------
// max(x[0..n)), n >= 1.
template <typename T>
inline T RowMax(const T* x, int n) {
  T mx = x[0];
  for (int j = 1; j < n; ++j) mx = x[j] > mx ? x[j] : mx;
  return mx;
}

// out[j] = exp(in[j] - shift) for j < n; returns the sum. out may alias in.
template <typename T>
inline T ExpShiftSum(T* out, const T* in, int n, T shift) {
  T sum = 0;
  for (int j = 0; j < n; ++j) {
    const T e = Exp<T>(in[j] - shift);
    out[j] = e;
    sum += e;
  }
  return sum;
}

// x[0..n) *= s.
template <typename T>
inline void RowScale(T* x, int n, T s) {
  for (int j = 0; j < n; ++j) x[j] *= s;
}

#if defined(__AVX512F__)
template <>
inline float RowMax<float>(const float* x, int n) {
  __m512 mx = _mm512_set1_ps(-INFINITY);
  int j = 0;
  for (; j + 16 <= n; j += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(x + j));
  if (j < n) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, TailMask(n - j), x + j));
  return _mm512_reduce_max_ps(mx);
}

template <>
inline float ExpShiftSum<float>(float* out, const float* in, int n, float shift) {
  const __m512 sh = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = Exp512(_mm512_sub_ps(_mm512_loadu_ps(in + j), sh));
    _mm512_storeu_ps(out + j, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (j < n) {
    const __mmask16 m = TailMask(n - j);
    const __m512 e = Exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, in + j), sh));
    _mm512_mask_storeu_ps(out + j, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

template <>
inline void RowScale<float>(float* x, int n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  int j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(x + j, _mm512_mul_ps(_mm512_loadu_ps(x + j), vs));
  if (j < n) {
    const __mmask16 m = TailMask(n - j);
    _mm512_mask_storeu_ps(x + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vs));
  }
}
#endif

// Calls f(i, mask) for 16-element blocks i = 0, 16, ... of [0, n); mask covers the valid
// lanes (all but possibly the last block). f loads/stores with _mm512_maskz_loadu_ps /
// _mm512_mask_storeu_ps.
#if defined(__AVX512F__)
template <typename F>
inline void For16(size_t n, F&& f) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) f(i, static_cast<__mmask16>(0xFFFF));
  if (i < n) f(i, TailMask(static_cast<int>(n - i)));
}
#endif

// Elementwise kernels run in chunks of this many elements (one OpenMP iteration each).
inline constexpr size_t kChunkElems = 4096;

// Splits [0, n) into `parts` nearly equal ranges; returns range `i` as [*begin, *end).
inline void SplitRange(size_t n, int parts, int i, size_t* begin, size_t* end) {
  size_t base = n / parts, rem = n % parts;
  size_t ui = static_cast<size_t>(i);
  *begin = ui * base + (ui < rem ? ui : rem);
  *end = *begin + base + (ui < rem ? 1 : 0);
}

// Runs f(c0, c1) on each thread of the current team (or of a new team when called outside a
// parallel region and `par` holds) over disjoint column ranges of [0, C), split in multiples
// of 16 (one cache line of floats). Used for parameter-gradient reductions over rows:
// no two threads write the same column, and each column sums its rows in order, so the
// result does not depend on the thread count.
template <typename F>
inline void ForColumnRange(int C, F&& f) {
  const int nt = omp_get_num_threads();
  const int tid = omp_get_thread_num();
  const int chunks = (C + 15) / 16;
  size_t cb, ce;
  SplitRange(static_cast<size_t>(chunks), nt, tid, &cb, &ce);
  const int c0 = static_cast<int>(cb) * 16;
  const int c1 = static_cast<int>(ce) * 16 < C ? static_cast<int>(ce) * 16 : C;
  if (c0 < c1) f(c0, c1);
}

}  // namespace tern::kernels::detail
