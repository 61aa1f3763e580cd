// Weight-only quantization (see wquant.h and kernels/wquant.h for the formats).
#include "kernels/cpu/wquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/gemm.h"

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define TERN_WQUANT_AVX512 1
#endif

namespace tern::kernels {
namespace {

constexpr float kFp6Max = 28.0f;
// Rows of activations the register path takes at once, and from how many rows on the product
// expands panels of the matrix to fp32 for sgemm instead.
constexpr int kGemvRows = 8;
constexpr int kPanelFromRows = 32;
// Below this many weights a product runs on one thread.
constexpr size_t kParallelWeights = size_t{1} << 16;

int Fp6Blocks(int cols) { return (cols + kFp6Block - 1) / kFp6Block; }

// The 4+2 layout: column i of block b: the upper 4 bits in byte b*32 + i%32 of the 4-bit plane
// (low nibble for i < 32, high nibble otherwise), the lower 2 bits in byte b*16 + i%16 of the
// 2-bit plane (bits 2*(i/16) and up).
inline void PutFp6(uint8_t* hi_row, uint8_t* lo_row, int c, uint8_t code) {
  const int b = c / kFp6Block, i = c % kFp6Block;
  hi_row[b * 32 + (i & 31)] |= static_cast<uint8_t>((code >> 2) << (i < 32 ? 0 : 4));
  lo_row[b * 16 + (i & 15)] |= static_cast<uint8_t>((code & 3) << (2 * (i >> 4)));
}
inline uint8_t GetFp6(const uint8_t* hi_row, const uint8_t* lo_row, int c) {
  const int b = c / kFp6Block, i = c % kFp6Block;
  const int nib = (hi_row[b * 32 + (i & 31)] >> (i < 32 ? 0 : 4)) & 0x0F;
  const int crumb = (lo_row[b * 16 + (i & 15)] >> (2 * (i >> 4))) & 3;
  return static_cast<uint8_t>(nib << 2 | crumb);
}
// int4: column i of group g in byte g*64 + i%64 (low nibble for i < 64), as q + 8.
inline int GetInt4(const uint8_t* row, int c) {
  const int g = c / kInt4Group, i = c % kInt4Group;
  return ((row[g * 64 + (i & 63)] >> (i < 64 ? 0 : 4)) & 0x0F) - 8;
}

struct Fp6Table {
  float v[64];
  Fp6Table() {
    for (int c = 0; c < 64; ++c) v[c] = Fp6ToFloat(static_cast<uint8_t>(c));
  }
};
const Fp6Table& Fp6Values() {
  static const Fp6Table t;
  return t;
}

float AbsMax(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// Row r of W as a contiguous vector (kInOut stores W transposed).
void GatherRow(const float* w, int rows, int cols, WeightLayout layout, int r, float* out) {
  if (layout == WeightLayout::kOutIn) {
    std::copy(w + size_t(r) * cols, w + size_t(r + 1) * cols, out);
  } else {
    for (int c = 0; c < cols; ++c) out[c] = w[size_t(c) * rows + r];
  }
}

// Columns of activations the register paths read: cols rounded up to the format's block.
[[maybe_unused]] int PaddedCols(const QuantizedMatrix& q) {
  const int unit = q.format == WeightFormat::kInt4 ? kInt4Group : kFp6Block;
  return (q.cols + unit - 1) / unit * unit;
}

// Portable: row r's values into buf[0, cols).
void DecodeRow(const QuantizedMatrix& q, int r, float* buf) {
  const int C = q.cols;
  switch (q.format) {
    case WeightFormat::kFp6: {
      const uint8_t* h = q.hi.data() + size_t(r) * q.hi_stride;
      const uint8_t* l = q.lo.data() + size_t(r) * q.lo_stride;
      const float s = q.scales[r];
      const float* t = Fp6Values().v;
      for (int c = 0; c < C; ++c) buf[c] = t[GetFp6(h, l, c)] * s;
      break;
    }
    case WeightFormat::kInt8: {
      const auto* v = reinterpret_cast<const int8_t*>(q.hi.data() + size_t(r) * q.hi_stride);
      const float s = q.scales[r];
      for (int c = 0; c < C; ++c) buf[c] = float(v[c]) * s;
      break;
    }
    case WeightFormat::kInt4: {
      const uint8_t* v = q.hi.data() + size_t(r) * q.hi_stride;
      const float* s = q.scales.data() + size_t(r) * q.groups();
      for (int c = 0; c < C; ++c) buf[c] = float(GetInt4(v, c)) * s[c / kInt4Group];
      break;
    }
  }
}

#ifdef TERN_WQUANT_AVX512
// 64 FP6 columns -> four vectors of 16, in column order, each value times 2^-12: the 6-bit code
// s|eee|mm becomes the fp16 high byte s|00eee|mm (the 4-bit half through a 16-entry byte
// shuffle), which is the e3m2 value scaled by 2^-12 as an fp16 normal or subnormal, converted
// to fp32 exactly by vcvtph2ps.
inline void Fp6Block(const uint8_t* hi, const uint8_t* lo, __m512 w[4]) {
  const __m512i lut = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C, char(0x80), char(0x84),
                    char(0x88), char(0x8C), char(0x90), char(0x94), char(0x98), char(0x9C)));
  const __m512i shifts =
      _mm512_setr_epi64(0, 0, 0x0002000200020002ll, 0x0002000200020002ll, 0x0004000400040004ll,
                        0x0004000400040004ll, 0x0006000600060006ll, 0x0006000600060006ll);
  const __m256i h = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  const __m128i l = _mm_load_si128(reinterpret_cast<const __m128i*>(lo));
  const __m512i nib =
      _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 4), 1),
                       _mm512_set1_epi8(0x0F));
  const __m512i crumb = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i32x4(l), shifts),
                                         _mm512_set1_epi8(0x03));
  const __m512i hb = _mm512_or_si512(_mm512_shuffle_epi8(lut, nib), crumb);
  const __m512i a = _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(hb)), 8);
  const __m512i b = _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(hb, 1)), 8);
  w[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(a));
  w[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(a, 1));
  w[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(b));
  w[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(b, 1));
}

// 64 int8 columns -> four vectors of 16.
inline void Int8Block(const uint8_t* p, __m512 w[4]) {
  const __m512i v = _mm512_load_si512(p);
  w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(v)));
  w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 1)));
  w[2] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 2)));
  w[3] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 3)));
}

// One int4 group (128 columns, 64 bytes) -> eight vectors of 16 times `scale`.
inline void Int4Group(const uint8_t* p, float scale, __m512 w[8]) {
  const __m512i v = _mm512_load_si512(p);
  const __m512i m = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
  const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(v, m), eight);
  const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m), eight);
  const __m512 s = _mm512_set1_ps(scale);
  for (int k = 0; k < 2; ++k) {
    const __m512i x = k == 0 ? lo : hi;
    w[4 * k + 0] =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(x))), s);
    w[4 * k + 1] =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(x, 1))), s);
    w[4 * k + 2] =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(x, 2))), s);
    w[4 * k + 3] =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(x, 3))), s);
  }
}

// Rows [r0, r1) of out (NB rows of activations, stride xs, padded to the block with zeros):
// each block of weights is expanded once and multiplied into every activation row, with A
// accumulators per row to hide the FMA latency.
template <int NB, int A>
void GemvRows(float* out, const float* x, size_t xs, const QuantizedMatrix& q, const float* bias,
              int r0, int r1) {
  const int rows = q.rows;
  for (int r = r0; r < r1; ++r) {
    __m512 acc[NB][A];
    for (int n = 0; n < NB; ++n)
      for (int a = 0; a < A; ++a) acc[n][a] = _mm512_setzero_ps();
    float scale = 1.0f;
    auto fma = [&](const __m512* w, int nw, size_t col) {
      for (int k = 0; k < nw; ++k)
        for (int n = 0; n < NB; ++n)
          acc[n][k % A] =
              _mm512_fmadd_ps(w[k], _mm512_loadu_ps(x + n * xs + col + 16 * k), acc[n][k % A]);
    };
    if (q.format == WeightFormat::kFp6) {
      const uint8_t* h = q.hi.data() + size_t(r) * q.hi_stride;
      const uint8_t* l = q.lo.data() + size_t(r) * q.lo_stride;
      const int nb = Fp6Blocks(q.cols);
      for (int b = 0; b < nb; ++b) {
        __m512 w[4];
        Fp6Block(h + b * 32, l + b * 16, w);
        fma(w, 4, size_t(b) * kFp6Block);
      }
      scale = q.scales[r] * 4096.0f;  // the codes were expanded times 2^-12
    } else if (q.format == WeightFormat::kInt8) {
      const uint8_t* v = q.hi.data() + size_t(r) * q.hi_stride;
      const int nb = Fp6Blocks(q.cols);
      for (int b = 0; b < nb; ++b) {
        __m512 w[4];
        Int8Block(v + b * 64, w);
        fma(w, 4, size_t(b) * 64);
      }
      scale = q.scales[r];
    } else {
      const uint8_t* v = q.hi.data() + size_t(r) * q.hi_stride;
      const float* s = q.scales.data() + size_t(r) * q.groups();
      const int ng = q.groups();
      for (int g = 0; g < ng; ++g) {
        __m512 w[8];
        Int4Group(v + g * 64, s[g], w);
        fma(w, 8, size_t(g) * kInt4Group);
      }
    }
    for (int n = 0; n < NB; ++n) {
      __m512 t = acc[n][0];
      for (int a = 1; a < A; ++a) t = _mm512_add_ps(t, acc[n][a]);
      out[size_t(n) * rows + r] =
          _mm512_reduce_add_ps(t) * scale + (bias != nullptr ? bias[r] : 0.0f);
    }
  }
}

template <int NB>
void GemvRowsFor(float* out, const float* x, size_t xs, const QuantizedMatrix& q, const float* bias,
                 int r0, int r1) {
  constexpr int A = NB == 1 ? 4 : NB == 2 ? 2 : 1;
  GemvRows<NB, A>(out, x, xs, q, bias, r0, r1);
}

// Up to kGemvRows activation rows through the register path.
void GemvAvx512(float* out, const float* x, size_t xs, const QuantizedMatrix& q, const float* bias,
                int nb) {
  using Fn = void (*)(float*, const float*, size_t, const QuantizedMatrix&, const float*, int, int);
  static constexpr Fn kFns[kGemvRows] = {GemvRowsFor<1>, GemvRowsFor<2>, GemvRowsFor<3>,
                                         GemvRowsFor<4>, GemvRowsFor<5>, GemvRowsFor<6>,
                                         GemvRowsFor<7>, GemvRowsFor<8>};
  const Fn fn = kFns[nb - 1];
  const int rows = q.rows;
  const bool par = size_t(rows) * q.cols >= kParallelWeights;
  constexpr int kChunk = 16;
#pragma omp parallel for schedule(static) if (par)
  for (int r0 = 0; r0 < rows; r0 += kChunk)
    fn(out, x, xs, q, bias, r0, std::min(rows, r0 + kChunk));
}
#endif  // TERN_WQUANT_AVX512

// Large N: panels of the matrix expanded to fp32, then sgemm into the panel's columns of out.
void PanelProduct(float* out, const float* inp, const QuantizedMatrix& q, const float* bias,
                  int N) {
  const int rows = q.rows, cols = q.cols;
  float beta = 0.0f;
  if (bias != nullptr) {
    for (int n = 0; n < N; ++n) std::copy(bias, bias + rows, out + size_t(n) * rows);
    beta = 1.0f;
  }
  const int P = std::max(16, std::min(rows, int((size_t{1} << 20) / std::max(cols, 1))));
  std::vector<float> panel(size_t(P) * cols);
  for (int r0 = 0; r0 < rows; r0 += P) {
    const int r1 = std::min(rows, r0 + P);
    DequantizeRows(q, r0, r1, panel.data());
    gemm(false, true, N, r1 - r0, cols, 1.0f, inp, cols, panel.data(), cols, beta, out + r0, rows);
  }
}

class CpuQuantizedLinear final : public QuantizedLinearOps {
 public:
  const char* name() const override { return "cpu"; }
  void qlinear_forward(float* out, const float* inp, const QuantizedMatrix& w, const float* bias,
                       int N) const override {
    kernels::qlinear_forward(out, inp, w, bias, N);
  }
};

}  // namespace

uint8_t FloatToFp6(float v) {
  if (std::isnan(v)) return 0;
  const uint8_t sign = std::signbit(v) ? 0x20 : 0;
  const float a = std::fabs(v);
  int mag;  // exponent << 2 | mantissa, monotonic in the value
  if (a >= kFp6Max) {
    mag = 31;
  } else if (a < 0.25f) {
    // Subnormals step by 1/16; q == 4 is the smallest normal (exponent 1, mantissa 0).
    mag = static_cast<int>(std::nearbyint(a * 16.0f));
  } else {
    int k;
    std::frexp(a, &k);  // a in [2^(k-1), 2^k): exponent e = k + 2, step 2^(e - 5)
    const int e = k + 2;
    const int q = static_cast<int>(std::nearbyint(std::ldexp(a, 5 - e)));  // in [4, 8]
    mag = std::min(31, (e << 2) + q - 4);  // q == 8 carries into the next exponent
  }
  return static_cast<uint8_t>(sign | mag);
}

float Fp6ToFloat(uint8_t code) {
  const int e = (code >> 2) & 7, m = code & 3;
  const float mag = e == 0 ? std::ldexp(float(m), -4) : std::ldexp(float(4 + m), e - 5);
  return (code & 0x20) ? -mag : mag;
}

QuantizedMatrix AllocateQuantized(WeightFormat format, int rows, int cols) {
  QuantizedMatrix q;
  q.format = format;
  q.rows = rows;
  q.cols = cols;
  switch (format) {
    case WeightFormat::kFp6:
      q.group = cols;
      q.hi_stride = size_t(Fp6Blocks(cols)) * 32;
      q.lo_stride = size_t(Fp6Blocks(cols)) * 16;
      q.lo = AlignedBytes(size_t(rows) * q.lo_stride);
      break;
    case WeightFormat::kInt8:
      q.group = cols;
      q.hi_stride = size_t(Fp6Blocks(cols)) * 64;
      break;
    case WeightFormat::kInt4:
      q.group = kInt4Group;
      q.hi_stride = size_t(q.groups()) * 64;
      break;
  }
  q.hi = AlignedBytes(size_t(rows) * q.hi_stride);
  // int4 padding columns hold q = 0 (nibble 8), so every column outside the matrix is 0.
  if (format == WeightFormat::kInt4) std::memset(q.hi.data(), 0x88, q.hi.size());
  q.scales.assign(size_t(rows) * q.groups(), 1.0f);
  return q;
}

QuantizedMatrix QuantizeWeights(WeightFormat format, const float* w, int rows, int cols,
                                WeightLayout layout) {
  QuantizedMatrix q = AllocateQuantized(format, rows, cols);
  const bool par = size_t(rows) * cols >= kParallelWeights;
#pragma omp parallel if (par)
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r) {
      GatherRow(w, rows, cols, layout, r, row.data());
      uint8_t* h = q.hi.data() + size_t(r) * q.hi_stride;
      if (format == WeightFormat::kFp6) {
        const float amax = AbsMax(row.data(), cols);
        const float s = amax > 0.0f ? amax / kFp6Max : 1.0f;
        q.scales[r] = s;
        uint8_t* l = q.lo.data() + size_t(r) * q.lo_stride;
        for (int c = 0; c < cols; ++c) PutFp6(h, l, c, FloatToFp6(row[c] / s));
      } else if (format == WeightFormat::kInt8) {
        const float amax = AbsMax(row.data(), cols);
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        q.scales[r] = s;
        auto* v = reinterpret_cast<int8_t*>(h);
        for (int c = 0; c < cols; ++c)
          v[c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / s), -127.0f, 127.0f));
      } else {
        const int ng = q.groups();
        for (int g = 0; g < ng; ++g) {
          const int c0 = g * kInt4Group, n = std::min(kInt4Group, cols - c0);
          const float amax = AbsMax(row.data() + c0, n);
          const float s = amax > 0.0f ? amax / 7.0f : 1.0f;
          q.scales[size_t(r) * ng + g] = s;
          uint8_t* p = h + size_t(g) * 64;
          for (int i = 0; i < n; ++i) {
            const int v =
                static_cast<int>(std::clamp(std::nearbyint(row[c0 + i] / s), -7.0f, 7.0f));
            const int shift = i < 64 ? 0 : 4;
            p[i & 63] = static_cast<uint8_t>((p[i & 63] & ~(0x0F << shift)) | ((v + 8) << shift));
          }
        }
      }
    }
  }
  return q;
}

void DequantizeRows(const QuantizedMatrix& q, int r0, int r1, float* out) {
  const int C = q.cols;
  const bool par = size_t(r1 - r0) * C >= kParallelWeights;
#pragma omp parallel for schedule(static) if (par)
  for (int r = r0; r < r1; ++r) {
    float* o = out + size_t(r - r0) * C;
#ifdef TERN_WQUANT_AVX512
    if (q.format == WeightFormat::kFp6 && C % kFp6Block == 0) {
      const uint8_t* h = q.hi.data() + size_t(r) * q.hi_stride;
      const uint8_t* l = q.lo.data() + size_t(r) * q.lo_stride;
      const __m512 s = _mm512_set1_ps(q.scales[r] * 4096.0f);
      for (int b = 0; b < C / kFp6Block; ++b) {
        __m512 w[4];
        Fp6Block(h + b * 32, l + b * 16, w);
        for (int k = 0; k < 4; ++k) _mm512_storeu_ps(o + b * 64 + 16 * k, _mm512_mul_ps(w[k], s));
      }
      continue;
    }
#endif
    DecodeRow(q, r, o);
  }
}

void qlinear_forward_portable(float* out, const float* inp, const QuantizedMatrix& q,
                              const float* bias, int N) {
  if (N >= kPanelFromRows) return PanelProduct(out, inp, q, bias, N);
  const int rows = q.rows, C = q.cols;
  const bool par = size_t(rows) * C >= kParallelWeights;
#pragma omp parallel if (par)
  {
    std::vector<float> buf(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r) {
      DecodeRow(q, r, buf.data());
      const float* w = buf.data();
      for (int n = 0; n < N; ++n) {
        const float* x = inp + size_t(n) * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; ++c) s += w[c] * x[c];
        out[size_t(n) * rows + r] = s + (bias != nullptr ? bias[r] : 0.0f);
      }
    }
  }
}

void qlinear_forward(float* out, const float* inp, const QuantizedMatrix& q, const float* bias,
                     int N) {
#ifdef TERN_WQUANT_AVX512
  if (N >= kPanelFromRows) return PanelProduct(out, inp, q, bias, N);
  const int C = q.cols, Cp = PaddedCols(q);
  // Activations padded with zeros to whole blocks (only when the columns do not fill them).
  std::vector<float> padded;
  const float* x = inp;
  size_t xs = size_t(C);
  if (Cp != C) {
    padded.assign(size_t(N) * Cp, 0.0f);
    for (int n = 0; n < N; ++n)
      std::copy(inp + size_t(n) * C, inp + size_t(n + 1) * C, padded.data() + size_t(n) * Cp);
    x = padded.data();
    xs = size_t(Cp);
  }
  for (int n0 = 0; n0 < N; n0 += kGemvRows) {
    const int nb = std::min(kGemvRows, N - n0);
    GemvAvx512(out + size_t(n0) * q.rows, x + size_t(n0) * xs, xs, q, bias, nb);
  }
#else
  qlinear_forward_portable(out, inp, q, bias, N);
#endif
}

const QuantizedLinearOps& CpuQuantizedLinearOps() {
  static const CpuQuantizedLinear ops;
  return ops;
}

}  // namespace tern::kernels
