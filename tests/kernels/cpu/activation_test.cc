#include <gtest/gtest.h>

#include <cmath>
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

double RefGelu(double x) {
  const double k = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

double RefSilu(double x) { return x / (1.0 + std::exp(-x)); }

// Random values in [-4, 4] plus large magnitudes (saturation) and exact zero.
std::vector<double> ActivationInputs(size_t n, uint32_t seed) {
  auto v = RandomVec(n, seed, -4.0, 4.0);
  const double extremes[] = {0.0, -10.0, 10.0, -60.0, 60.0, -200.0, 200.0, 1e-4};
  for (size_t i = 0; i < std::size(extremes) && i < n; ++i) v[i] = extremes[i];
  return v;
}

void CheckGeluFloat(size_t n) {
  const auto x = ActivationInputs(n, 1);
  std::vector<double> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = RefGelu(x[i]);
  auto fx = ToFloat(x);
  std::vector<float> out(n), dx(n);
  gelu_forward(out.data(), fx.data(), n);
  ExpectClose(out, want, 2e-6, "gelu out");
  // float backward vs the double backward (checked by finite differences below)
  const auto dout = RandomVec(n, 2);
  auto fd = ToFloat(dout);
  std::vector<double> ddx(n);
  gelu_backward(ddx.data(), dout.data(), x.data(), n);
  gelu_backward(dx.data(), fd.data(), fx.data(), n);
  ExpectClose(dx, ddx, 2e-6, "gelu dinp");
}

TEST(GeluTest, FloatMatchesReferenceSmall) { CheckGeluFloat(11); }
TEST(GeluTest, FloatMatchesReferenceParallel) { CheckGeluFloat(100003); }

TEST(GeluTest, GradientMatchesFiniteDifferences) {
  const size_t n = 23;
  auto x = ActivationInputs(n, 3);
  const auto dout = RandomVec(n, 4);
  std::vector<double> out(n), dx(n, 5.0);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), n);
    return Dot(out, dout);
  };
  gelu_backward(dx.data(), dout.data(), x.data(), n);
  CheckGradient(&x, dx, loss, "gelu dinp");
}

void CheckSwigluFloat(int N, int F) {
  const auto inp = ActivationInputs(static_cast<size_t>(N) * 2 * F, 5);
  std::vector<double> want(static_cast<size_t>(N) * F);
  for (int n = 0; n < N; ++n)
    for (int f = 0; f < F; ++f)
      want[n * F + f] = RefSilu(inp[n * 2 * F + f]) * inp[n * 2 * F + F + f];
  auto fi = ToFloat(inp);
  std::vector<float> out(want.size());
  swiglu_forward(out.data(), fi.data(), N, F);
  ExpectClose(out, want, 2e-6, "swiglu out");
  const auto dout = RandomVec(want.size(), 6);
  auto fd = ToFloat(dout);
  std::vector<double> ddi(inp.size());
  std::vector<float> di(inp.size());
  swiglu_backward(ddi.data(), dout.data(), inp.data(), N, F);
  swiglu_backward(di.data(), fd.data(), fi.data(), N, F);
  ExpectClose(di, ddi, 2e-6, "swiglu dinp");
}

TEST(SwigluTest, FloatMatchesReferenceSmall) { CheckSwigluFloat(7, 11); }
TEST(SwigluTest, FloatMatchesReferenceParallel) { CheckSwigluFloat(300, 130); }

TEST(SwigluTest, GradientMatchesFiniteDifferences) {
  const int N = 3, F = 7;
  auto inp = ActivationInputs(N * 2 * F, 7);
  const auto dout = RandomVec(N * F, 8);
  std::vector<double> out(N * F), di(N * 2 * F, 5.0);
  auto loss = [&] {
    swiglu_forward(out.data(), inp.data(), N, F);
    return Dot(out, dout);
  };
  swiglu_backward(di.data(), dout.data(), inp.data(), N, F);
  CheckGradient(&inp, di, loss, "swiglu dinp");
}

void CheckResidual(size_t n) {
  const auto a = RandomVec(n, 9), b = RandomVec(n, 10), d = RandomVec(n, 11);
  std::vector<double> want(n), want_da(n), want_db(n);
  for (size_t i = 0; i < n; ++i) {
    want[i] = a[i] + b[i];
    want_da[i] = a[i] + d[i];  // accumulates onto the prior contents
    want_db[i] = b[i] + d[i];
  }
  auto fa = ToFloat(a), fb = ToFloat(b), fd = ToFloat(d);
  std::vector<float> out(n);
  residual_forward(out.data(), fa.data(), fb.data(), n);
  ExpectClose(out, want, 1e-6, "residual out");
  auto da = fa, db = fb;
  residual_backward(da.data(), db.data(), fd.data(), n);
  ExpectClose(da, want_da, 1e-6, "residual da");
  ExpectClose(db, want_db, 1e-6, "residual db");
  da = fa;
  residual_backward<float>(da.data(), nullptr, fd.data(), n);
  ExpectClose(da, want_da, 1e-6, "residual da (db null)");
  db = fb;
  residual_backward<float>(nullptr, db.data(), fd.data(), n);
  ExpectClose(db, want_db, 1e-6, "residual db (da null)");
}

TEST(ResidualTest, MatchesReferenceSmall) { CheckResidual(13); }
TEST(ResidualTest, MatchesReferenceParallel) { CheckResidual(70001); }

TEST(ResidualTest, GradientMatchesFiniteDifferences) {
  const size_t n = 9;
  auto a = RandomVec(n, 12), b = RandomVec(n, 13);
  const auto dout = RandomVec(n, 14);
  std::vector<double> out(n), da(n, 0.0), db(n, 0.0);
  auto loss = [&] {
    residual_forward(out.data(), a.data(), b.data(), n);
    return Dot(out, dout);
  };
  residual_backward(da.data(), db.data(), dout.data(), n);
  CheckGradient(&a, da, loss, "residual da");
  CheckGradient(&b, db, loss, "residual db");
}

}  // namespace
}  // namespace tern::kernels
