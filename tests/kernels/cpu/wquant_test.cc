// Weight-only quantization against plain reference code: the FP6 codec (every code, nearest
// value with ties to even, saturation), the documented 4+2 byte layout, each format's values,
// and the product (register path, panel path, portable path) against a double-precision
// product of the dequantized matrix.
#include "kernels/cpu/wquant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::Gaussian;

// e3m2 written out: exponent bias 3, subnormals at exponent 0.
double RefFp6(int code) {
  const int s = code >> 5 & 1, e = code >> 2 & 7, m = code & 3;
  const double mag = e == 0 ? m / 16.0 : std::pow(2.0, e - 3) * (1.0 + m / 4.0);
  return s ? -mag : mag;
}

TEST(Fp6, EveryCodeDecodesAndRoundTrips) {
  for (int c = 0; c < 64; ++c) {
    const float v = Fp6ToFloat(static_cast<uint8_t>(c));
    EXPECT_EQ(double(v), RefFp6(c)) << "code " << c;
    EXPECT_EQ(std::signbit(v), (c & 0x20) != 0) << "code " << c;
    EXPECT_EQ(FloatToFp6(v), c) << "code " << c;
  }
  EXPECT_EQ(Fp6ToFloat(0x1F), 28.0f);
  EXPECT_EQ(Fp6ToFloat(0x01), 0.0625f);
  EXPECT_EQ(Fp6ToFloat(0x04), 0.25f);
  EXPECT_EQ(Fp6ToFloat(0x0C), 1.0f);
}

TEST(Fp6, NearestWithTiesToEvenAndSaturation) {
  EXPECT_EQ(FloatToFp6(1.125f), 0x0C);  // 1.0 | 1.25: even mantissa 0
  EXPECT_EQ(FloatToFp6(1.375f), 0x0E);  // 1.25 | 1.5: even mantissa 2
  EXPECT_EQ(FloatToFp6(0.03125f), 0);   // 0 | 1/16
  EXPECT_EQ(FloatToFp6(0.09375f), 2);   // 1/16 | 2/16
  EXPECT_EQ(FloatToFp6(0.234375f), 4);  // 3/16 | 0.25 (the smallest normal, mantissa 0)
  EXPECT_EQ(FloatToFp6(26.0f), 0x1E);   // 24 | 28: mantissa 2
  EXPECT_EQ(FloatToFp6(100.0f), 0x1F);  // saturates
  EXPECT_EQ(FloatToFp6(-100.0f), 0x3F);
  EXPECT_EQ(FloatToFp6(std::nanf("")), 0);
  // Brute force: the code of the nearest value; at a tie the even mantissa.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> d(-29.0f, 29.0f);
  for (int i = 0; i < 20000; ++i) {
    const float v = i % 2 ? d(rng) : d(rng) / 64.0f;
    int best = -1;
    double best_err = 1e9;
    for (int c = 0; c < 64; ++c) {
      if ((c & 0x20) != (std::signbit(v) ? 0x20 : 0)) continue;
      const double err = std::fabs(RefFp6(c) - v);
      if (err < best_err || (err == best_err && (c & 1) == 0)) {
        best = c;
        best_err = err;
      }
    }
    ASSERT_EQ(FloatToFp6(v), best) << "value " << v;
  }
}

TEST(Fp6, FourPlusTwoLayoutIsTheDocumentedOne) {
  // One row whose column c holds the value of code c (absmax 28: the scale is exactly 1).
  std::vector<float> w(64);
  for (int c = 0; c < 64; ++c) w[c] = Fp6ToFloat(static_cast<uint8_t>(c));
  const QuantizedMatrix q = QuantizeWeights(WeightFormat::kFp6, w.data(), 1, 64);
  ASSERT_EQ(q.hi.size(), 32u);
  ASSERT_EQ(q.lo.size(), 16u);
  EXPECT_EQ(q.scales[0], 1.0f);
  for (int i = 0; i < 32; ++i)
    EXPECT_EQ(q.hi.data()[i], (i >> 2) | ((i + 32) >> 2) << 4) << "4-bit plane byte " << i;
  for (int j = 0; j < 16; ++j)
    EXPECT_EQ(q.lo.data()[j],
              (j & 3) | ((j + 16) & 3) << 2 | ((j + 32) & 3) << 4 | ((j + 48) & 3) << 6)
        << "2-bit plane byte " << j;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q.hi.data()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q.lo.data()) % 64, 0u);
}

// The value each format gives element (r, c), computed from the format's definition.
std::vector<float> RefDequant(WeightFormat f, const std::vector<float>& w, int rows, int cols) {
  std::vector<float> out(w.size());
  for (int r = 0; r < rows; ++r) {
    const float* x = w.data() + size_t(r) * cols;
    const int group = f == WeightFormat::kInt4 ? 128 : cols;
    for (int g0 = 0; g0 < cols; g0 += group) {
      const int n = std::min(group, cols - g0);
      float amax = 0;
      for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[g0 + i]));
      const float qmax = f == WeightFormat::kFp6 ? 28.0f : f == WeightFormat::kInt8 ? 127.0f : 7.0f;
      const float s = amax > 0 ? amax / qmax : 1.0f;
      for (int i = 0; i < n; ++i) {
        const float t = x[g0 + i] / s;
        const float v = f == WeightFormat::kFp6 ? Fp6ToFloat(FloatToFp6(t))
                                                : std::clamp(std::nearbyint(t), -qmax, qmax);
        out[size_t(r) * cols + g0 + i] = v * s;
      }
    }
  }
  return out;
}

class WquantFormat : public ::testing::TestWithParam<WeightFormat> {};

TEST_P(WquantFormat, DequantizeMatchesTheDefinitionInBothLayouts) {
  const WeightFormat f = GetParam();
  for (int cols : {64, 100, 128, 300}) {
    const int rows = 7;
    const auto w = Gaussian(size_t(rows) * cols, 11 + cols, 0.05f);
    const auto want = RefDequant(f, w, rows, cols);
    const QuantizedMatrix q = QuantizeWeights(f, w.data(), rows, cols);
    std::vector<float> got(w.size());
    DequantizeRows(q, 0, rows, got.data());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << WeightFormatName(f) << " cols " << cols << " element " << i;
    // The same matrix stored transposed (GPT-2's Conv1D) quantizes to the same bytes.
    std::vector<float> wt(w.size());
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) wt[size_t(c) * rows + r] = w[size_t(r) * cols + c];
    const QuantizedMatrix qt = QuantizeWeights(f, wt.data(), rows, cols, WeightLayout::kInOut);
    ASSERT_EQ(qt.hi.size(), q.hi.size());
    EXPECT_EQ(std::memcmp(qt.hi.data(), q.hi.data(), q.hi.size()), 0);
    EXPECT_EQ(qt.lo.size() == 0 || std::memcmp(qt.lo.data(), q.lo.data(), q.lo.size()) == 0, true);
    EXPECT_EQ(qt.scales, q.scales);
  }
}

TEST_P(WquantFormat, ProductMatchesTheDequantizedMatrix) {
  const WeightFormat f = GetParam();
  for (int cols : {64, 100, 256, 300}) {
    for (int N : {1, 2, 3, 4, 5, 8, 9, 17, 33}) {
      const int rows = 37;
      const auto w = Gaussian(size_t(rows) * cols, 3 + cols, 0.1f);
      const auto x = Gaussian(size_t(N) * cols, 5 + N);
      const auto b = Gaussian(rows, 9);
      const QuantizedMatrix q = QuantizeWeights(f, w.data(), rows, cols);
      const auto deq = RefDequant(f, w, rows, cols);
      std::vector<double> want(size_t(N) * rows);
      for (int n = 0; n < N; ++n)
        for (int r = 0; r < rows; ++r) {
          double s = b[r];
          for (int c = 0; c < cols; ++c)
            s += double(x[size_t(n) * cols + c]) * deq[size_t(r) * cols + c];
          want[size_t(n) * rows + r] = s;
        }
      std::vector<float> got(want.size(), -1.0f), port(want.size(), -1.0f);
      qlinear_forward(got.data(), x.data(), q, b.data(), N);
      qlinear_forward_portable(port.data(), x.data(), q, b.data(), N);
      for (size_t i = 0; i < want.size(); ++i) {
        const double tol = 1e-4 * std::max(1.0, std::fabs(want[i]));
        ASSERT_NEAR(got[i], want[i], tol)
            << WeightFormatName(f) << " cols " << cols << " N " << N << " element " << i;
        ASSERT_NEAR(port[i], want[i], tol)
            << "portable " << WeightFormatName(f) << " cols " << cols << " N " << N;
      }
      // Without a bias.
      qlinear_forward(got.data(), x.data(), q, nullptr, N);
      for (int r = 0; r < rows; ++r)
        ASSERT_NEAR(got[r], want[r] - b[r], 1e-4 * std::max(1.0, std::fabs(want[r])));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, WquantFormat,
                         ::testing::Values(WeightFormat::kFp6, WeightFormat::kInt8,
                                           WeightFormat::kInt4),
                         [](const auto& info) {
                           return std::string(WeightFormatName(info.param));
                         });

TEST(Wquant, ErrorsOrderAsTheBitsDo) {
  // Gaussian weights: relative RMS error int8 < fp6 < int4 (group 128), each well below 1.
  const int rows = 64, cols = 512;
  const auto w = Gaussian(size_t(rows) * cols, 21, 0.02f);
  double rel[3];
  int i = 0;
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kFp6, WeightFormat::kInt4}) {
    const QuantizedMatrix q = QuantizeWeights(f, w.data(), rows, cols);
    std::vector<float> d(w.size());
    DequantizeRows(q, 0, rows, d.data());
    double e = 0, n = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      e += (d[k] - w[k]) * (d[k] - w[k]);
      n += w[k] * w[k];
    }
    rel[i++] = std::sqrt(e / n);
  }
  EXPECT_LT(rel[0], rel[1]);
  EXPECT_LT(rel[1], rel[2]);
  EXPECT_LT(rel[2], 0.2);
  EXPECT_EQ(QuantizeWeights(WeightFormat::kFp6, w.data(), rows, cols).bytes(),
            uint64_t(rows) * cols * 3 / 4 + rows * 4);
}

TEST(Wquant, FormatNames) {
  WeightFormat f;
  EXPECT_TRUE(ParseWeightFormat("fp6", &f));
  EXPECT_EQ(f, WeightFormat::kFp6);
  EXPECT_TRUE(ParseWeightFormat("int4", &f));
  EXPECT_EQ(f, WeightFormat::kInt4);
  EXPECT_FALSE(ParseWeightFormat("fp8", &f));
}

}  // namespace
}  // namespace tern::kernels
