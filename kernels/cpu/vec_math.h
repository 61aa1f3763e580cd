// Internal helpers shared by the CPU kernels: vectorisable exp/sigmoid and the OpenMP
// work thresholds. Not part of the public kernel API (see ops.h).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <omp.h>

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
