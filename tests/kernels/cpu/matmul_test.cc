#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::CheckGradient;
using testing::Dot;
using testing::ExpectClose;
using testing::RandomVec;
using testing::ToFloat;

// W(c, o) of either layout.
double WAt(const std::vector<double>& w, int c, int o, int C, int OC, WeightLayout layout) {
  return layout == WeightLayout::kOutIn ? w[static_cast<size_t>(o) * C + c]
                                        : w[static_cast<size_t>(c) * OC + o];
}

std::vector<double> RefMatmul(const std::vector<double>& x, const std::vector<double>& w,
                              const std::vector<double>* bias, int N, int C, int OC,
                              WeightLayout layout) {
  std::vector<double> out(static_cast<size_t>(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias != nullptr ? (*bias)[o] : 0.0;
      for (int c = 0; c < C; ++c)
        s += x[static_cast<size_t>(n) * C + c] * WAt(w, c, o, C, OC, layout);
      out[static_cast<size_t>(n) * OC + o] = s;
    }
  return out;
}

struct MatmulCase {
  WeightLayout layout;
  bool bias;
  bool dinp;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, FloatMatchesReference) {
  const auto p = GetParam();
  const int N = 7, C = 12, OC = 5;
  const auto x = RandomVec(N * C, 1), w = RandomVec(OC * C, 2), b = RandomVec(OC, 3);
  const auto dout = RandomVec(N * OC, 4);
  const auto want = RefMatmul(x, w, p.bias ? &b : nullptr, N, C, OC, p.layout);
  auto fx = ToFloat(x), fw = ToFloat(w), fb = ToFloat(b), fd = ToFloat(dout);
  std::vector<float> out(N * OC);
  matmul_forward(out.data(), fx.data(), fw.data(), p.bias ? fb.data() : nullptr, N, C, OC,
                 p.layout);
  ExpectClose(out, want, 1e-5, "matmul out");

  // Backward references: dinp = dout W^T, dW += x^T dout (in W's layout), dbias += sum dout.
  std::vector<double> want_dx(N * C, 0.0), want_dw(OC * C, 0.25), want_db(OC, -0.5);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      const double d = dout[n * OC + o];
      want_db[o] += d;
      for (int c = 0; c < C; ++c) {
        want_dx[n * C + c] += d * WAt(w, c, o, C, OC, p.layout);
        const size_t wi = p.layout == WeightLayout::kOutIn ? o * C + c : c * OC + o;
        want_dw[wi] += x[n * C + c] * d;
      }
    }
  std::vector<float> dx(N * C, 7.0f), dw(OC * C, 0.25f), db(OC, -0.5f);
  matmul_backward(p.dinp ? dx.data() : nullptr, dw.data(), p.bias ? db.data() : nullptr, fd.data(),
                  fx.data(), fw.data(), N, C, OC, p.layout);
  if (p.dinp) {
    ExpectClose(dx, want_dx, 1e-5, "matmul dinp");
  } else {
    ExpectClose(dx, std::vector<float>(N * C, 7.0f), 0.0, "matmul dinp untouched");
  }
  ExpectClose(dw, want_dw, 1e-5, "matmul dweight");
  ExpectClose(db, p.bias ? want_db : std::vector<double>(OC, -0.5), 1e-5, "matmul dbias");
}

TEST_P(MatmulTest, GradientMatchesFiniteDifferences) {
  const auto p = GetParam();
  const int N = 4, C = 6, OC = 5;
  auto x = RandomVec(N * C, 5), w = RandomVec(OC * C, 6), b = RandomVec(OC, 7);
  const auto dout = RandomVec(N * OC, 8);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), x.data(), w.data(), p.bias ? b.data() : nullptr, N, C, OC, p.layout);
    return Dot(out, dout);
  };
  std::vector<double> dx(N * C), dw(OC * C, 0.0), db(OC, 0.0);
  matmul_backward(p.dinp ? dx.data() : nullptr, dw.data(), p.bias ? db.data() : nullptr,
                  dout.data(), x.data(), w.data(), N, C, OC, p.layout);
  if (p.dinp) CheckGradient(&x, dx, loss, "matmul dinp");
  CheckGradient(&w, dw, loss, "matmul dweight");
  if (p.bias) CheckGradient(&b, db, loss, "matmul dbias");
}

INSTANTIATE_TEST_SUITE_P(Layouts, MatmulTest,
                         ::testing::Values(MatmulCase{WeightLayout::kOutIn, true, true},
                                           MatmulCase{WeightLayout::kOutIn, false, false},
                                           MatmulCase{WeightLayout::kInOut, true, false},
                                           MatmulCase{WeightLayout::kInOut, false, true}),
                         [](const ::testing::TestParamInfo<MatmulCase>& info) {
                           return std::string(info.param.layout == WeightLayout::kOutIn ? "OutIn"
                                                                                        : "InOut") +
                                  (info.param.bias ? "Bias" : "NoBias") +
                                  (info.param.dinp ? "Dinp" : "NoDinp");
                         });

// Large enough that the bias prefill and dbias column pass take their OpenMP paths.
TEST(MatmulParallelTest, BiasPathsMatchReference) {
  const int N = 256, C = 16, OC = 160;
  const auto x = RandomVec(N * C, 9), w = RandomVec(OC * C, 10), b = RandomVec(OC, 11);
  const auto dout = RandomVec(N * OC, 12);
  const auto want = RefMatmul(x, w, &b, N, C, OC, WeightLayout::kInOut);
  auto fx = ToFloat(x), fw = ToFloat(w), fb = ToFloat(b), fd = ToFloat(dout);
  std::vector<float> out(N * OC), dw(OC * C, 0.0f), db(OC, 1.0f);
  matmul_forward(out.data(), fx.data(), fw.data(), fb.data(), N, C, OC, WeightLayout::kInOut);
  ExpectClose(out, want, 1e-5, "matmul out");
  matmul_backward<float>(nullptr, dw.data(), db.data(), fd.data(), fx.data(), fw.data(), N, C, OC,
                         WeightLayout::kInOut);
  std::vector<double> want_db(OC, 1.0);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) want_db[o] += dout[n * OC + o];
  ExpectClose(db, want_db, 1e-5, "matmul dbias");
}

}  // namespace
}  // namespace tern::kernels
