#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::CheckGradient;
using testing::Dot;
using testing::ExpectClose;
using testing::RandomTokens;
using testing::RandomVec;
using testing::ToFloat;

std::vector<double> RefEmbedding(const std::vector<int32_t>& tok, const std::vector<double>& wte,
                                 const std::vector<double>* wpe, int B, int T, int C) {
  std::vector<double> out(static_cast<size_t>(B) * T * C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        double v = wte[static_cast<size_t>(tok[b * T + t]) * C + c];
        if (wpe != nullptr) v += (*wpe)[static_cast<size_t>(t) * C + c];
        out[(static_cast<size_t>(b) * T + t) * C + c] = v;
      }
  return out;
}

void RunForwardBackward(int B, int T, int C, int V, bool with_wpe) {
  const auto tok = RandomTokens(static_cast<size_t>(B) * T, V, 1);
  const auto wte = RandomVec(static_cast<size_t>(V) * C, 2);
  const auto wpe = RandomVec(static_cast<size_t>(T) * C, 3);
  const auto dout = RandomVec(static_cast<size_t>(B) * T * C, 4);
  const auto want = RefEmbedding(tok, wte, with_wpe ? &wpe : nullptr, B, T, C);

  auto fwte = ToFloat(wte), fwpe = ToFloat(wpe);
  std::vector<float> out(want.size());
  embedding_forward(out.data(), tok.data(), fwte.data(), with_wpe ? fwpe.data() : nullptr, B, T, C);
  ExpectClose(out, want, 1e-6, "embedding out");

  // Backward accumulates: start from a nonzero gradient.
  auto dwte = RandomVec(wte.size(), 5), dwpe = RandomVec(wpe.size(), 6);
  std::vector<double> want_dwte = dwte, want_dwpe = dwpe;
  for (int n = 0; n < B * T; ++n)
    for (int c = 0; c < C; ++c) {
      want_dwte[static_cast<size_t>(tok[n]) * C + c] += dout[static_cast<size_t>(n) * C + c];
      want_dwpe[static_cast<size_t>(n % T) * C + c] += dout[static_cast<size_t>(n) * C + c];
    }
  auto fdwte = ToFloat(dwte), fdwpe = ToFloat(dwpe);
  auto fdout = ToFloat(dout);
  embedding_backward(fdwte.data(), with_wpe ? fdwpe.data() : nullptr, fdout.data(), tok.data(), B,
                     T, C);
  ExpectClose(fdwte, want_dwte, 1e-5, "embedding dwte");
  ExpectClose(fdwpe, with_wpe ? want_dwpe : dwpe, 1e-5, "embedding dwpe");
}

TEST(EmbeddingTest, MatchesReferenceWithPositions) { RunForwardBackward(2, 7, 12, 11, true); }
TEST(EmbeddingTest, MatchesReferenceWithoutPositions) { RunForwardBackward(2, 7, 12, 11, false); }
// Large enough for the OpenMP paths; V=11 makes tokens repeat across threads' rows.
TEST(EmbeddingTest, MatchesReferenceParallel) { RunForwardBackward(4, 64, 160, 11, true); }

TEST(EmbeddingTest, GradientMatchesFiniteDifferences) {
  const int B = 2, T = 5, C = 6, V = 7;
  const auto tok = RandomTokens(B * T, V, 11);
  auto wte = RandomVec(V * C, 12), wpe = RandomVec(T * C, 13);
  const auto dout = RandomVec(B * T * C, 14);
  std::vector<double> out(B * T * C);
  auto loss = [&] {
    embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return Dot(out, dout);
  };
  std::vector<double> dwte(wte.size(), 0.0), dwpe(wpe.size(), 0.0);
  embedding_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), B, T, C);
  CheckGradient(&wte, dwte, loss, "dwte");
  CheckGradient(&wpe, dwpe, loss, "dwpe");
}

}  // namespace
}  // namespace tern::kernels
