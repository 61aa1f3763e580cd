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

constexpr float kEps = 1e-5f;

void RefLayerNorm(std::vector<double>* out, const std::vector<double>& x,
                  const std::vector<double>& w, const std::vector<double>& b, int N, int C) {
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m);
    v /= C;
    for (int c = 0; c < C; ++c)
      (*out)[n * C + c] = (x[n * C + c] - m) / std::sqrt(v + kEps) * w[c] + b[c];
  }
}

void RefRmsNorm(std::vector<double>* out, const std::vector<double>& x,
                const std::vector<double>& w, int N, int C) {
  for (int n = 0; n < N; ++n) {
    double ss = 0;
    for (int c = 0; c < C; ++c) ss += x[n * C + c] * x[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + kEps);
    for (int c = 0; c < C; ++c) (*out)[n * C + c] = x[n * C + c] * r * w[c];
  }
}

// Float forward vs the reference; float backward vs the double backward (the double one is
// checked against finite differences below). Offsets the inputs to exercise the two-pass
// variance.
void CheckLayerNormFloat(int N, int C) {
  auto x = RandomVec(N * C, 1, 2.0, 4.0);
  const auto w = RandomVec(C, 2), b = RandomVec(C, 3), dout = RandomVec(N * C, 4);
  std::vector<double> want(N * C);
  RefLayerNorm(&want, x, w, b, N, C);
  auto fx = ToFloat(x), fw = ToFloat(w), fb = ToFloat(b), fd = ToFloat(dout);
  std::vector<float> out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), fx.data(), fw.data(), fb.data(), N, C,
                    kEps);
  ExpectClose(out, want, 2e-5, "layernorm out");

  std::vector<double> dmean(N), drstd(N), dout_d(N * C), dx(N * C), dw(C, 0.5), db(C, -0.25);
  layernorm_forward(dout_d.data(), dmean.data(), drstd.data(), x.data(), w.data(), b.data(), N, C,
                    kEps);
  layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), dmean.data(),
                     drstd.data(), N, C);
  std::vector<float> fdx(N * C), fdw(C, 0.5f), fdb(C, -0.25f);
  layernorm_backward(fdx.data(), fdw.data(), fdb.data(), fd.data(), fx.data(), fw.data(),
                     mean.data(), rstd.data(), N, C);
  ExpectClose(fdx, dx, 5e-5, "layernorm dinp");
  ExpectClose(fdw, dw, 5e-5, "layernorm dweight");
  ExpectClose(fdb, db, 5e-5, "layernorm dbias");
}

TEST(LayerNormTest, FloatMatchesReferenceSmall) { CheckLayerNormFloat(7, 12); }
TEST(LayerNormTest, FloatMatchesReferenceParallel) { CheckLayerNormFloat(300, 130); }

TEST(LayerNormTest, GradientMatchesFiniteDifferences) {
  const int N = 7, C = 12;
  auto x = RandomVec(N * C, 5), w = RandomVec(C, 6), b = RandomVec(C, 7);
  const auto dout = RandomVec(N * C, 8);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C,
                      kEps);
    return Dot(out, dout);
  };
  loss();
  // Parameter gradients accumulate: start from 1 and subtract it afterwards.
  std::vector<double> dx(N * C, 9.0), dw(C, 1.0), db(C, 1.0);
  layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C);
  for (int c = 0; c < C; ++c) dw[c] -= 1.0, db[c] -= 1.0;
  CheckGradient(&x, dx, loss, "layernorm dinp");
  CheckGradient(&w, dw, loss, "layernorm dweight");
  CheckGradient(&b, db, loss, "layernorm dbias");
}

void CheckRmsNormFloat(int N, int C) {
  const auto x = RandomVec(N * C, 11), w = RandomVec(C, 12), dout = RandomVec(N * C, 13);
  std::vector<double> want(N * C);
  RefRmsNorm(&want, x, w, N, C);
  auto fx = ToFloat(x), fw = ToFloat(w), fd = ToFloat(dout);
  std::vector<float> out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), fx.data(), fw.data(), N, C, kEps);
  ExpectClose(out, want, 2e-5, "rmsnorm out");

  std::vector<double> o(N * C), r(N), dx(N * C), dw(C, 0.5);
  rmsnorm_forward(o.data(), r.data(), x.data(), w.data(), N, C, kEps);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), r.data(), N, C);
  std::vector<float> fdx(N * C), fdw(C, 0.5f);
  rmsnorm_backward(fdx.data(), fdw.data(), fd.data(), fx.data(), fw.data(), rstd.data(), N, C);
  ExpectClose(fdx, dx, 5e-5, "rmsnorm dinp");
  ExpectClose(fdw, dw, 5e-5, "rmsnorm dweight");
}

TEST(RmsNormTest, FloatMatchesReferenceSmall) { CheckRmsNormFloat(7, 12); }
TEST(RmsNormTest, FloatMatchesReferenceParallel) { CheckRmsNormFloat(300, 130); }

TEST(RmsNormTest, GradientMatchesFiniteDifferences) {
  const int N = 7, C = 12;
  auto x = RandomVec(N * C, 15), w = RandomVec(C, 16);
  const auto dout = RandomVec(N * C, 17);
  std::vector<double> out(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, kEps);
    return Dot(out, dout);
  };
  loss();
  std::vector<double> dx(N * C, 9.0), dw(C, 1.0);
  rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  for (int c = 0; c < C; ++c) dw[c] -= 1.0;
  CheckGradient(&x, dx, loss, "rmsnorm dinp");
  CheckGradient(&w, dw, loss, "rmsnorm dweight");
}

}  // namespace
}  // namespace tern::kernels
