#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::CheckGradient;
using testing::ExpectClose;
using testing::RandomTokens;
using testing::RandomVec;
using testing::ToFloat;

// Every third target ignored (-1, or -100 as in PyTorch's ignore_index).
std::vector<int32_t> Targets(int N, int V, uint32_t seed) {
  auto t = RandomTokens(N, V, seed);
  for (int n = 0; n < N; n += 3) t[n] = n % 2 == 0 ? -1 : -100;
  return t;
}

void CheckForwardBackward(int N, int V) {
  const auto logits = RandomVec(static_cast<size_t>(N) * V, 1, -8.0, 8.0);
  const auto tgt = Targets(N, V, 2);
  std::vector<double> want_p(logits.size()), want_loss(N);
  int want_count = 0;
  for (int n = 0; n < N; ++n) {
    double mx = -1e300, sum = 0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, logits[n * V + v]);
    for (int v = 0; v < V; ++v) sum += std::exp(logits[n * V + v] - mx);
    for (int v = 0; v < V; ++v) want_p[n * V + v] = std::exp(logits[n * V + v] - mx) / sum;
    want_loss[n] = tgt[n] < 0 ? 0.0 : -std::log(want_p[n * V + tgt[n]]);
    want_count += tgt[n] >= 0;
  }
  auto fl = ToFloat(logits);
  std::vector<float> probs(logits.size()), losses(N, 9.0f), dl(logits.size(), 9.0f);
  EXPECT_EQ(crossentropy_softmax_forward(losses.data(), probs.data(), fl.data(), tgt.data(), N, V),
            want_count);
  ExpectClose(probs, want_p, 1e-6, "probs");
  ExpectClose(losses, want_loss, 2e-6, "losses");
  const float dloss = 0.375f;
  crossentropy_softmax_backward(dl.data(), dloss, probs.data(), tgt.data(), N, V);
  std::vector<double> want_dl(logits.size(), 0.0);
  for (int n = 0; n < N; ++n) {
    if (tgt[n] < 0) continue;
    for (int v = 0; v < V; ++v) want_dl[n * V + v] = dloss * (want_p[n * V + v] - (v == tgt[n]));
  }
  ExpectClose(dl, want_dl, 1e-6, "dlogits");
}

TEST(CrossEntropyTest, MatchesReferenceSmall) { CheckForwardBackward(7, 11); }
TEST(CrossEntropyTest, MatchesReferenceParallel) { CheckForwardBackward(500, 256); }

TEST(CrossEntropyTest, GradientMatchesFiniteDifferences) {
  const int N = 7, V = 11;
  auto logits = RandomVec(N * V, 3, -3.0, 3.0);
  const auto tgt = Targets(N, V, 4);
  const float dloss = 0.375f;  // exact in float: the kernel takes dloss as float
  std::vector<double> probs(N * V), losses(N), dl(N * V, 7.0);
  auto loss = [&] {
    crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), tgt.data(), N, V);
    double s = 0;
    for (double l : losses) s += dloss * l;
    return s;
  };
  loss();
  crossentropy_softmax_backward(dl.data(), dloss, probs.data(), tgt.data(), N, V);
  CheckGradient(&logits, dl, loss, "dlogits");
}

}  // namespace
}  // namespace tern::kernels
