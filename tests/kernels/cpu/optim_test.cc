#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::ExpectClose;
using testing::RandomVec;
using testing::ToFloat;

// torch.optim.AdamW's single-tensor step, written out as in torch/optim/adamw.py (1.13).
void RefAdamW(std::vector<double>* p, const std::vector<double>& g, std::vector<double>* m,
              std::vector<double>* v, double lr, double b1, double b2, double eps, double wd,
              int step) {
  const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  for (size_t i = 0; i < p->size(); ++i) {
    (*p)[i] *= 1 - lr * wd;
    (*m)[i] = (*m)[i] * b1 + g[i] * (1 - b1);
    (*v)[i] = (*v)[i] * b2 + g[i] * g[i] * (1 - b2);
    const double denom = std::sqrt((*v)[i]) / std::sqrt(bc2) + eps;
    (*p)[i] -= lr / bc1 * (*m)[i] / denom;
  }
}

void CheckAdamW(size_t n) {
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  auto p = RandomVec(n, 1);
  std::vector<double> m(n, 0.0), v(n, 0.0);
  auto fp = ToFloat(p), fm = ToFloat(m), fv = ToFloat(v);
  auto dp = p, dm = m, dv = v;
  for (int step = 1; step <= 3; ++step) {
    const auto g = RandomVec(n, 10 + step);
    const auto fg = ToFloat(g);
    RefAdamW(&p, g, &m, &v, lr, b1, b2, eps, wd, step);
    adamw_update(fp.data(), fg.data(), fm.data(), fv.data(), n, lr, b1, b2, eps, wd, step);
    adamw_update(dp.data(), g.data(), dm.data(), dv.data(), n, lr, b1, b2, eps, wd, step);
  }
  // The reference uses the float hyperparameters widened to double, as the kernel does.
  ExpectClose(dp, p, 1e-12, "double params");
  ExpectClose(dm, m, 1e-12, "double exp_avg");
  ExpectClose(dv, v, 1e-12, "double exp_avg_sq");
  ExpectClose(fp, p, 1e-6, "float params");
  ExpectClose(fm, m, 1e-6, "float exp_avg");
  ExpectClose(fv, v, 1e-6, "float exp_avg_sq");
  // The update moved the parameters by ~lr per step (sign-like Adam steps).
  EXPECT_GT(std::fabs(p[0] - RandomVec(n, 1)[0]), 1e-3);
}

TEST(AdamWTest, MatchesTorchFormulaThreeSteps) { CheckAdamW(37); }
TEST(AdamWTest, MatchesTorchFormulaParallel) { CheckAdamW(100001); }

TEST(ReduceTest, SumSquaresAccumulatesInDouble) {
  for (size_t n : {size_t{5}, size_t{200003}}) {
    const auto x = RandomVec(n, 20);
    const auto fx = ToFloat(x);
    double want = 0;
    for (float f : fx) want += static_cast<double>(f) * f;
    EXPECT_NEAR(sum_squares(fx.data(), n), want, 1e-12 * want) << n;
    double dwant = 0;
    for (double d : x) dwant += d * d;
    EXPECT_NEAR(sum_squares(x.data(), n), dwant, 1e-12 * dwant) << n;
  }
  // 2^24 + 1 ones in float would stall a float accumulator at 2^24.
  std::vector<float> ones((1 << 24) + 1, 1.0f);
  EXPECT_EQ(sum_squares(ones.data(), ones.size()), static_cast<double>(ones.size()));
}

TEST(ReduceTest, ScaleInplace) {
  for (size_t n : {size_t{5}, size_t{200003}}) {
    const auto x = RandomVec(n, 21);
    auto fx = ToFloat(x);
    auto dx = x;
    scale_inplace(fx.data(), 0.3f, n);
    scale_inplace(dx.data(), 0.3f, n);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = x[i] * static_cast<double>(0.3f);
    ExpectClose(fx, want, 1e-7, "float scale");
    ExpectClose(dx, want, 1e-15, "double scale");
  }
}

}  // namespace
}  // namespace tern::kernels
