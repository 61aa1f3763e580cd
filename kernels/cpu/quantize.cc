// Symmetric block quantization (see quantize.h). No gradients here: every kernel assigns its
// outputs (=), except dequantize_int4_add, which accumulates (+=).
#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <cmath>

namespace tern::kernels {
namespace {

// round-half-to-even of |t| < 2^22 in the default rounding mode: adding 1.5 * 2^23 leaves no
// fraction bits, so the FPU rounds to nearest even; vectorises (no libm call).
inline float RoundEven(float t) {
  const float kShift = 12582912.0f;
  return (t + kShift) - kShift;
}

inline float AbsMax(const float* x, size_t n) {
  float m = 0.0f;
#pragma omp simd reduction(max : m)
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// One block to integers in [-qmax, qmax] (as int8 in `t`); returns the block's scale.
inline float QuantizeBlock(int8_t* t, const float* x, size_t n, float qmax) {
  const float amax = AbsMax(x, n);
  const float inv = amax > 0.0f ? qmax / amax : 0.0f;
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    float v = RoundEven(x[i] * inv);
    v = std::min(std::max(v, -qmax), qmax);
    t[i] = static_cast<int8_t>(static_cast<int>(v));
  }
  return amax > 0.0f ? amax / qmax : 1.0f;
}

// One int4 block: quantize then pack pairs (element 2i low nibble, 2i+1 high nibble).
inline float QuantizeBlockInt4(uint8_t* q, const float* x, size_t n) {
  // Blocks above kMaxQuantBlock are quantized with one scale, in slices of the temporary.
  int8_t t[kMaxQuantBlock];
  const float amax = AbsMax(x, n);
  const float inv = amax > 0.0f ? 7.0f / amax : 0.0f;
  const float scale = amax > 0.0f ? amax / 7.0f : 1.0f;
  for (size_t off = 0; off < n; off += kMaxQuantBlock) {
    const size_t len = std::min(kMaxQuantBlock, n - off);
    const float* xs = x + off;
#pragma omp simd
    for (size_t i = 0; i < len; ++i) {
      float v = RoundEven(xs[i] * inv);
      v = std::min(std::max(v, -7.0f), 7.0f);
      t[i] = static_cast<int8_t>(static_cast<int>(v));
    }
    uint8_t* qs = q + off / 2;
#pragma omp simd
    for (size_t i = 0; i < len / 2; ++i) {
      qs[i] = static_cast<uint8_t>((t[2 * i] & 0x0F) | ((t[2 * i + 1] & 0x0F) << 4));
    }
  }
  return scale;
}

}  // namespace

void quantize_int8(int8_t* q, float* scales, const float* x, size_t n, size_t block) {
  for (size_t b = 0; b * block < n; ++b)
    scales[b] = QuantizeBlock(q + b * block, x + b * block, block, 127.0f);
}

void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b = 0; b * block < n; ++b) {
    const float s = scales[b];
    const int8_t* qb = q + b * block;
    float* ob = out + b * block;
#pragma omp simd
    for (size_t i = 0; i < block; ++i) ob[i] = static_cast<float>(qb[i]) * s;
  }
}

void quantize_int4(uint8_t* q, float* scales, const float* x, size_t n, size_t block) {
  for (size_t b = 0; b * block < n; ++b)
    scales[b] = QuantizeBlockInt4(q + b * block / 2, x + b * block, block);
}

namespace {

// out (2 * nbytes) = or += (accumulate) the unpacked values times s.
template <bool kAdd>
inline void DequantBlockInt4(float* out, const uint8_t* q, float s, size_t nbytes) {
#pragma omp simd
  for (size_t i = 0; i < nbytes; ++i) {
    // Sign-extend each nibble: shift it to the top of an int8, then arithmetic-shift back.
    const int8_t lo = static_cast<int8_t>(static_cast<uint8_t>(q[i] << 4)) >> 4;
    const int8_t hi = static_cast<int8_t>(q[i]) >> 4;
    if constexpr (kAdd) {
      out[2 * i] += static_cast<float>(lo) * s;
      out[2 * i + 1] += static_cast<float>(hi) * s;
    } else {
      out[2 * i] = static_cast<float>(lo) * s;
      out[2 * i + 1] = static_cast<float>(hi) * s;
    }
  }
}

}  // namespace

void dequantize_int4(float* out, const uint8_t* q, const float* scales, size_t n, size_t block) {
  for (size_t b = 0; b * block < n; ++b)
    DequantBlockInt4<false>(out + b * block, q + b * block / 2, scales[b], block / 2);
}

void dequantize_int4_add(float* out, const uint8_t* q, const float* scales, size_t n,
                         size_t block) {
  for (size_t b = 0; b * block < n; ++b)
    DequantBlockInt4<true>(out + b * block, q + b * block / 2, scales[b], block / 2);
}

void dequant_sum_requant_int4(uint8_t* q, float* scales, const uint8_t* const* q_in,
                              const float* const* s_in, int m, size_t n, size_t block) {
  float sum[kMaxQuantBlock];
  for (size_t b = 0; b * block < n; ++b) {
    DequantBlockInt4<false>(sum, q_in[0] + b * block / 2, s_in[0][b], block / 2);
    for (int j = 1; j < m; ++j)
      DequantBlockInt4<true>(sum, q_in[j] + b * block / 2, s_in[j][b], block / 2);
    scales[b] = QuantizeBlockInt4(q + b * block / 2, sum, block);
  }
}

}  // namespace tern::kernels
