// Rotary position embedding, HF Llama "rotate_half" convention, in place on fused qkv.
// Parameter gradients accumulate (+=), activation gradients assign (=); rope has no
// parameters and its backward rewrites dqkv in place.
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace tern::kernels {

template <typename T>
void rope_tables(T* cos, T* sin, int Tn, int HS, float theta) {
  const int half = HS / 2;
  for (int i = 0; i < half; ++i) {
    // HF's formula (inv_freq = 1 / theta^(2i/HS), angle = t * inv_freq), evaluated in double.
    const double inv_freq = 1.0 / std::pow(static_cast<double>(theta), 2.0 * i / HS);
    for (int t = 0; t < Tn; ++t) {
      const double a = t * inv_freq;
      cos[static_cast<size_t>(t) * half + i] = static_cast<T>(std::cos(a));
      sin[static_cast<size_t>(t) * half + i] = static_cast<T>(std::sin(a));
    }
  }
}

namespace {

// Rotates the NH + NKV q/k heads of every token by +angle (sign = 1) or -angle (sign = -1):
// x1' = x1 cos - sign * x2 sin; x2' = x2 cos + sign * x1 sin.
// With head_table (B, NH+NKV), head h of sequence b reads table head_table[b*(NH+NKV)+h] of
// `rows` rows; else every head reads the one table.
template <typename T>
void Rotate(T* qkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS, T sign,
            const int32_t* pos, const int32_t* head_table = nullptr, int rows = 0) {
  const int half = HS / 2;
  const int heads = NH + NKV;
  const size_t QKV = static_cast<size_t>(NH + 2 * NKV) * HS;
  const int N = B * Tn;
  const bool par = static_cast<size_t>(N) * heads * HS >= detail::kParallelElems;
#pragma omp parallel for schedule(static) if (par)
  for (int n = 0; n < N; ++n) {
    const int t = pos ? pos[n] : n % Tn;
    const int32_t* tables = head_table ? head_table + static_cast<size_t>(n / Tn) * heads : nullptr;
    T* row = qkv + static_cast<size_t>(n) * QKV;
    for (int h = 0; h < heads; ++h) {
      const size_t r = tables ? static_cast<size_t>(tables[h]) * rows + t : static_cast<size_t>(t);
      const T* c = cos + r * half;
      const T* s = sin + r * half;
      T* x1 = row + static_cast<size_t>(h) * HS;
      T* x2 = x1 + half;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const T a = x1[i], b = x2[i], si = sign * s[i];
        x1[i] = a * c[i] - b * si;
        x2[i] = b * c[i] + a * si;
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(T* qkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                  const int32_t* pos) {
  Rotate(qkv, cos, sin, B, Tn, NH, NKV, HS, T(1), pos);
}

template <typename T>
void rope_forward_heads(T* qkv, const T* cos, const T* sin, int rows, const int32_t* head_table,
                        int B, int Tn, int NH, int NKV, int HS, const int32_t* pos) {
  Rotate(qkv, cos, sin, B, Tn, NH, NKV, HS, T(1), pos, head_table, rows);
}

// The rotation is orthogonal, so its adjoint is the inverse rotation.
template <typename T>
void rope_backward(T* dqkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                   const int32_t* pos) {
  Rotate(dqkv, cos, sin, B, Tn, NH, NKV, HS, T(-1), pos);
}

#define TERN_INSTANTIATE(T)                                                                        \
  template void rope_tables<T>(T*, T*, int, int, float);                                           \
  template void rope_forward<T>(T*, const T*, const T*, int, int, int, int, int, const int32_t*);  \
  template void rope_backward<T>(T*, const T*, const T*, int, int, int, int, int, const int32_t*); \
  template void rope_forward_heads<T>(T*, const T*, const T*, int, const int32_t*, int, int, int,  \
                                      int, int, const int32_t*);
TERN_INSTANTIATE(float)
TERN_INSTANTIATE(double)
#undef TERN_INSTANTIATE

}  // namespace tern::kernels
