// Block quantization against plain reference code: per-element error within half a step of the
// block's scale, round half to even, int4 packing round-trips, the fused dequant-sum-requant.
#include "kernels/cpu/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::Gaussian;

// Plain reference scale of one block.
float RefScale(const float* x, size_t n, float qmax) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m > 0 ? m / qmax : 1.0f;
}

void ExpectWithinHalfStep(const std::vector<float>& x, const std::vector<float>& y,
                          const std::vector<float>& scales, size_t block, float qmax) {
  for (size_t b = 0; b < scales.size(); ++b) {
    const float s = scales[b];
    EXPECT_FLOAT_EQ(s, RefScale(&x[b * block], block, qmax)) << "block " << b;
    for (size_t i = b * block; i < (b + 1) * block; ++i) {
      ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * s * (1 + 1e-5f)) << "element " << i;
    }
  }
}

TEST(QuantizeTest, Int8WithinHalfStep) {
  for (size_t block : {size_t(8), size_t(4096)}) {
    const size_t n = block * 5;
    auto x = Gaussian(n, 1, 3.0f);
    x[3] = 0;
    std::fill(x.begin() + long(block), x.begin() + long(2 * block), 0.0f);  // all-zero block
    std::vector<int8_t> q(n);
    std::vector<float> s(n / block), y(n);
    quantize_int8(q.data(), s.data(), x.data(), n, block);
    dequantize_int8(y.data(), q.data(), s.data(), n, block);
    ExpectWithinHalfStep(x, y, s, block, 127.0f);
    EXPECT_EQ(s[1], 1.0f);
    for (size_t i = block; i < 2 * block; ++i) EXPECT_EQ(y[i], 0.0f);
  }
}

TEST(QuantizeTest, Int4WithinHalfStep) {
  const size_t block = 256, n = block * 7;
  auto x = Gaussian(n, 2);
  std::vector<uint8_t> q(n / 2);
  std::vector<float> s(n / block), y(n);
  quantize_int4(q.data(), s.data(), x.data(), n, block);
  dequantize_int4(y.data(), q.data(), s.data(), n, block);
  ExpectWithinHalfStep(x, y, s, block, 7.0f);
}

TEST(QuantizeTest, RoundsHalfToEven) {
  // absmax 127 gives scale 1: x.5 values must round to the even neighbour.
  std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 3.49f};
  std::vector<int8_t> q(8);
  float s = 0;
  quantize_int8(q.data(), &s, x.data(), 8, 8);
  EXPECT_EQ(s, 1.0f);
  const std::vector<int8_t> want = {127, 0, 2, 2, 0, -2, -2, 3};
  EXPECT_EQ(q, want);
}

TEST(QuantizeTest, Int4PackingRoundTrips) {
  // Every value in [-7, 7] at every position: scale 1 (absmax 7), exact round trip, and the
  // documented nibble order (element 2i low, 2i+1 high).
  std::vector<float> x;
  for (int a = -7; a <= 7; ++a)
    for (int b = -7; b <= 7; ++b) {
      x.push_back(float(a));
      x.push_back(float(b));
    }
  x.push_back(7.0f);
  x.push_back(-7.0f);  // pad to an even count with the absmax present
  const size_t n = x.size();
  std::vector<uint8_t> q(n / 2);
  float s = 0;
  quantize_int4(q.data(), &s, x.data(), n, n);
  EXPECT_EQ(s, 1.0f);
  std::vector<float> y(n);
  dequantize_int4(y.data(), q.data(), &s, n, n);
  EXPECT_EQ(x, y);
  EXPECT_EQ(q[0], uint8_t(((-7) & 0xF) | (((-7) & 0xF) << 4)));
  const size_t i = 7 * 15 + 10;  // a = 0, b = 3 at pair index 7*15+10
  EXPECT_EQ(q[i], uint8_t(0x30));
  // Accumulating variant adds.
  std::vector<float> z(n, 1.0f);
  dequantize_int4_add(z.data(), q.data(), &s, n, n);
  for (size_t k = 0; k < n; ++k) EXPECT_EQ(z[k], x[k] + 1.0f);
}

TEST(QuantizeTest, DequantSumRequantMatchesReference) {
  const size_t block = 64, n = block * 9;
  const int m = 3;
  std::vector<std::vector<uint8_t>> qs(m, std::vector<uint8_t>(n / 2));
  std::vector<std::vector<float>> ss(m, std::vector<float>(n / block));
  std::vector<float> sum(n, 0.0f), y(n);
  std::vector<const uint8_t*> qp;
  std::vector<const float*> sp;
  for (int j = 0; j < m; ++j) {
    auto x = Gaussian(n, 10 + j, float(j + 1));
    quantize_int4(qs[j].data(), ss[j].data(), x.data(), n, block);
    dequantize_int4_add(sum.data(), qs[j].data(), ss[j].data(), n, block);  // reference sum
    qp.push_back(qs[j].data());
    sp.push_back(ss[j].data());
  }
  std::vector<uint8_t> q(n / 2);
  std::vector<float> s(n / block);
  dequant_sum_requant_int4(q.data(), s.data(), qp.data(), sp.data(), m, n, block);
  dequantize_int4(y.data(), q.data(), s.data(), n, block);
  // The fused result is the plain reference quantization of the reference sum.
  std::vector<uint8_t> q_ref(n / 2);
  std::vector<float> s_ref(n / block);
  quantize_int4(q_ref.data(), s_ref.data(), sum.data(), n, block);
  EXPECT_EQ(q, q_ref);
  EXPECT_EQ(s, s_ref);
  ExpectWithinHalfStep(sum, y, s, block, 7.0f);
}

}  // namespace
}  // namespace tern::kernels
