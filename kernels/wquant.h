// Weight-only quantization for inference: a linear layer's weight matrix stored in FP6 (e3m2),
// INT8 or INT4 and dequantized inside the matrix product, activations and the result in fp32.
// The formats (kernels/cpu/wquant.h has the codecs; kernels/README.md the byte layout):
//   fp6  e3m2 codes (sign, 3 exponent bits with bias 3, 2 mantissa bits: +-28 at most, +-1/16
//        the smallest step), one fp32 scale per output channel (row), rounded to nearest even;
//        stored as FP6-LLM's 4+2 split: per block of 64 columns a 32-byte plane of the upper 4 bits
//        (sign and exponent) and a 16-byte plane of the lower 2 bits (mantissa), so every load of
//        either plane is aligned; 0.75 bytes per weight.
//   int8 symmetric, [-127, 127], one fp32 scale per row; 1 byte per weight.
//   int4 symmetric, [-7, 7] stored as q + 8, one fp32 scale per group of 128 columns of a row;
//        0.5 bytes per weight plus 4 bytes per 128.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

namespace tern::kernels {

enum class WeightFormat { kFp6, kInt8, kInt4 };

// "fp6", "int8", "int4".
inline const char* WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kFp6:
      return "fp6";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
  }
  return "?";
}
// The inverse of WeightFormatName; false for any other name.
inline bool ParseWeightFormat(std::string_view name, WeightFormat* f) {
  for (WeightFormat x : {WeightFormat::kFp6, WeightFormat::kInt8, WeightFormat::kInt4}) {
    if (name == WeightFormatName(x)) {
      *f = x;
      return true;
    }
  }
  return false;
}

constexpr int kFp6Block = 64;    // columns per 4+2 block: 32 + 16 bytes
constexpr int kInt4Group = 128;  // columns per int4 scale: 64 bytes

// Zero-filled bytes aligned to 64.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(size_t n) : n_(n) {
    if (n == 0) return;
    const size_t cap = (n + 63) / 64 * 64;
    p_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, cap)));
    std::memset(p_.get(), 0, cap);
  }
  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t[], Free> p_;
  size_t n_ = 0;
};

// One weight matrix of `rows` output channels by `cols` input channels (torch.nn.Linear's
// layout, whatever the checkpoint's), quantized. Rows start at multiples of their stride in
// each plane; padding columns hold code 0 (the value 0).
struct QuantizedMatrix {
  WeightFormat format = WeightFormat::kFp6;
  int rows = 0, cols = 0;
  int group = 0;                        // columns per scale: cols (fp6, int8) or kInt4Group
  size_t hi_stride = 0, lo_stride = 0;  // bytes per row of each plane
  AlignedBytes hi;                      // fp6: 4-bit plane; int8: values; int4: nibbles
  AlignedBytes lo;                      // fp6: 2-bit plane; empty otherwise
  std::vector<float> scales;            // rows x groups(), row-major

  int groups() const { return group > 0 ? (cols + group - 1) / group : 0; }
  // Bytes read by one product: both planes and the scales.
  uint64_t bytes() const { return hi.size() + lo.size() + scales.size() * sizeof(float); }
};

// The quantized matrix product, as one entry of a backend (kernels/cpu/wquant.h implements it
// on the CPU; a backend without one cannot serve quantized weights).
class QuantizedLinearOps {
 public:
  virtual ~QuantizedLinearOps() = default;
  virtual const char* name() const = 0;
  // out (N, w.rows) = inp (N, w.cols) @ W^T (+ bias (w.rows)); assigns.
  virtual void qlinear_forward(float* out, const float* inp, const QuantizedMatrix& w,
                               const float* bias, int N) const = 0;
};

}  // namespace tern::kernels
