// Shared helpers for the CPU kernel tests: seeded random tensors, float/double conversion,
// closeness checks and a central finite-difference gradient checker.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace tern::kernels::testing {

inline std::vector<double> RandomVec(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Seeded normal values with standard deviation `sd`, as float.
inline std::vector<float> Gaussian(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

inline std::vector<int32_t> RandomTokens(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> ToFloat(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

inline double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Every element: |got - want| <= tol * max(1, |want|).
template <typename A, typename B>
void ExpectClose(const std::vector<A>& got, const std::vector<B>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!(std::fabs(g - w) <= tol * std::max(1.0, std::fabs(w)))) {
      if (++bad <= 5) ADD_FAILURE() << what << "[" << i << "]: got " << g << " want " << w;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements differ";
}

// Central finite differences of loss() with respect to every element of x, compared with
// `analytic`: |a - n| <= rtol * max(|n|, 1e-2 * max_k |n_k|, 1e-8). loss() must read x.
inline void CheckGradient(std::vector<double>* x, const std::vector<double>& analytic,
                          const std::function<double()>& loss, const std::string& what,
                          double rtol = 1e-6, double eps = 1e-6) {
  ASSERT_EQ(x->size(), analytic.size()) << what;
  std::vector<double> numeric(x->size());
  for (size_t i = 0; i < x->size(); ++i) {
    const double saved = (*x)[i];
    (*x)[i] = saved + eps;
    const double lp = loss();
    (*x)[i] = saved - eps;
    const double lm = loss();
    (*x)[i] = saved;
    numeric[i] = (lp - lm) / (2 * eps);
  }
  double gmax = 0;
  for (double g : numeric) gmax = std::max(gmax, std::fabs(g));
  ASSERT_GT(gmax, 0.0) << what << ": the loss does not depend on this input";
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < x->size(); ++i) {
    const double denom = std::max({std::fabs(numeric[i]), 1e-2 * gmax, 1e-8});
    const double rel = std::fabs(analytic[i] - numeric[i]) / denom;
    worst = std::max(worst, rel);
    if (!(rel <= rtol)) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " numeric "
                      << numeric[i];
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << x->size()
                     << " gradient elements differ; worst relative error " << worst;
}

}  // namespace tern::kernels::testing
