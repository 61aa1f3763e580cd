#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_tuning.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/threads.h"
#include "tests/kernels/cpu/kernel_test_util.h"

namespace tern::kernels {
namespace {

using testing::Dot;
using testing::ExpectClose;
using testing::RandomVec;
using testing::ToFloat;

struct Shape {
  int B, T, NH, NKV, HS;
  int QKV() const { return (NH + 2 * NKV) * HS; }
  size_t QkvSize() const { return static_cast<size_t>(B) * T * QKV(); }
  size_t OutSize() const { return static_cast<size_t>(B) * T * NH * HS; }
  size_t AttSize() const { return static_cast<size_t>(B) * NH * T * T; }
};

// Sets the attention tuning for one scope and restores the defaults afterwards.
class TuningScope {
 public:
  TuningScope(int block_rows, detail::AttentionParallel mode, bool blas_gemm = false) {
    detail::MutableAttentionTuning() = {mode, block_rows, blas_gemm};
  }
  ~TuningScope() { detail::MutableAttentionTuning() = detail::AttentionTuning{}; }
};

// Plain causal GQA attention; fills out and the lower triangle of att.
void RefAttention(std::vector<double>* out, std::vector<double>* att,
                  const std::vector<double>& qkv, const Shape& s) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.HS));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h) {
      const int kvh = h / (s.NH / s.NKV);
      for (int i = 0; i < s.T; ++i) {
        const double* q = &qkv[(static_cast<size_t>(b) * s.T + i) * s.QKV() + h * s.HS];
        std::vector<double> p(i + 1);
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= i; ++j) {
          const double* k =
              &qkv[(static_cast<size_t>(b) * s.T + j) * s.QKV() + (s.NH + kvh) * s.HS];
          double d = 0;
          for (int c = 0; c < s.HS; ++c) d += q[c] * k[c];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        double* o = &(*out)[(static_cast<size_t>(b) * s.T + i) * s.NH * s.HS + h * s.HS];
        for (int c = 0; c < s.HS; ++c) o[c] = 0;
        for (int j = 0; j <= i; ++j) {
          p[j] /= sum;
          (*att)[((static_cast<size_t>(b) * s.NH + h) * s.T + i) * s.T + j] = p[j];
          const double* v =
              &qkv[(static_cast<size_t>(b) * s.T + j) * s.QKV() + (s.NH + s.NKV + kvh) * s.HS];
          for (int c = 0; c < s.HS; ++c) o[c] += p[j] * v[c];
        }
      }
    }
}

std::vector<double> LowerTriangle(const std::vector<float>& att, const Shape& s) {
  std::vector<double> v;
  for (int bh = 0; bh < s.B * s.NH; ++bh)
    for (int i = 0; i < s.T; ++i)
      for (int j = 0; j <= i; ++j) v.push_back(att[(static_cast<size_t>(bh) * s.T + i) * s.T + j]);
  return v;
}

std::vector<double> LowerTriangle(const std::vector<double>& att, const Shape& s) {
  return LowerTriangle(std::vector<float>(att.begin(), att.end()), s);
}

void CheckForward(const Shape& s, int block_rows, bool blas_gemm) {
  TuningScope scope(block_rows, detail::AttentionParallel::kAuto, blas_gemm);
  const auto qkv = RandomVec(s.QkvSize(), 1, -2.0, 2.0);
  std::vector<double> want(s.OutSize()), want_att(s.AttSize(), 0.0);
  RefAttention(&want, &want_att, qkv, s);
  auto fqkv = ToFloat(qkv);
  std::vector<float> out(s.OutSize()), att(s.AttSize(), 0.0f);
  attention_forward(out.data(), att.data(), fqkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(out, want, 2e-6, "attention out");
  ExpectClose(LowerTriangle(att, s), LowerTriangle(want_att, s), 2e-6, "attention probs");
  // The double instantiation (the one the finite-difference tests check) matches too.
  std::vector<double> dout(s.OutSize()), datt(s.AttSize());
  attention_forward(dout.data(), datt.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(dout, want, 1e-12, "attention out (double)");
}

// Both product back ends (register-blocked SmallGemm and OpenBLAS), several block sizes.
class AttentionPathTest : public ::testing::TestWithParam<bool> {};

TEST_P(AttentionPathTest, ForwardGqaSmallBlocks) { CheckForward({2, 7, 4, 2, 3}, 3, GetParam()); }
TEST_P(AttentionPathTest, ForwardMhaSmallBlocks) { CheckForward({2, 7, 4, 4, 3}, 3, GetParam()); }
TEST_P(AttentionPathTest, ForwardMqaDefaultBlocks) {
  CheckForward({2, 7, 4, 1, 3}, 64, GetParam());
}
TEST_P(AttentionPathTest, ForwardGqaLongerThanDefaultBlock) {
  CheckForward({2, 70, 4, 2, 5}, 64, GetParam());
}
// Head sizes spanning 1..4 AVX-512 vectors with partial last vectors, more than one key block.
TEST_P(AttentionPathTest, ForwardWideHeads) {
  for (int hs : {16, 24, 40, 64, 72}) CheckForward({1, 133, 2, 1, hs}, 64, GetParam());
}

// The float backward against the double backward (finite-difference-checked below).
void CheckFloatBackward(const Shape& s, int block_rows, bool blas_gemm) {
  TuningScope scope(block_rows, detail::AttentionParallel::kAuto, blas_gemm);
  const auto qkv = RandomVec(s.QkvSize(), 6, -2.0, 2.0);
  const auto dout = RandomVec(s.OutSize(), 7);
  std::vector<double> out(s.OutSize()), att(s.AttSize()), dqkv(s.QkvSize());
  std::vector<double> scratch(attention_scratch_elems(s.B, s.T, s.NH, s.NKV, s.HS, NumThreads()));
  attention_forward(out.data(), att.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                     s.NH, s.NKV, s.HS);
  auto fqkv = ToFloat(qkv), fdout = ToFloat(dout);
  std::vector<float> fout(s.OutSize()), fatt(s.AttSize()), fdqkv(s.QkvSize(), 5.0f);
  std::vector<float> fscratch(scratch.size());
  attention_forward(fout.data(), fatt.data(), fqkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  attention_backward(fdqkv.data(), fscratch.data(), fdout.data(), fqkv.data(), fatt.data(), s.B,
                     s.T, s.NH, s.NKV, s.HS);
  ExpectClose(fdqkv, dqkv, 2e-5, "float dqkv vs double");
}

TEST_P(AttentionPathTest, FloatBackwardMatchesDouble) {
  CheckFloatBackward({2, 7, 4, 2, 3}, 3, GetParam());
  CheckFloatBackward({2, 70, 4, 2, 5}, 64, GetParam());
  for (int hs : {16, 40, 64}) CheckFloatBackward({1, 133, 4, 2, hs}, 64, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Backends, AttentionPathTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "Blas" : "SmallGemm");
                         });

// Backward vs central differences of sum(out * dout) in double. dqkv is prefilled with junk
// (it must be assigned) and att's upper triangle is overwritten (it is unspecified).
void CheckAttentionGradient(const Shape& s, int block_rows, bool blas_gemm = false) {
  TuningScope scope(block_rows, detail::AttentionParallel::kAuto, blas_gemm);
  auto qkv = RandomVec(s.QkvSize(), 2, -1.5, 1.5);
  const auto dout = RandomVec(s.OutSize(), 3);
  std::vector<double> out(s.OutSize()), att(s.AttSize());
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    return Dot(out, dout);
  };
  loss();
  for (int bh = 0; bh < s.B * s.NH; ++bh)
    for (int i = 0; i < s.T; ++i)
      for (int j = i + 1; j < s.T; ++j) att[(static_cast<size_t>(bh) * s.T + i) * s.T + j] = 1e3;
  std::vector<double> dqkv(s.QkvSize(), 123.0);
  std::vector<double> scratch(attention_scratch_elems(s.B, s.T, s.NH, s.NKV, s.HS, NumThreads()));
  attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                     s.NH, s.NKV, s.HS);
  testing::CheckGradient(&qkv, dqkv, loss, "attention dqkv", 1e-6);
}

TEST(AttentionTest, GradientGqaSmallBlocks) { CheckAttentionGradient({2, 7, 4, 2, 3}, 3); }
TEST(AttentionTest, GradientMhaSmallBlocks) { CheckAttentionGradient({2, 7, 4, 4, 3}, 3); }
TEST(AttentionTest, GradientMqaOneBlock) { CheckAttentionGradient({1, 6, 3, 1, 4}, 64); }
TEST(AttentionTest, GradientGqaLongerThanDefaultBlock) {
  CheckAttentionGradient({1, 70, 2, 1, 3}, 64);
}
TEST(AttentionTest, GradientBlasProducts) { CheckAttentionGradient({2, 7, 4, 2, 3}, 3, true); }

struct Result {
  std::vector<float> out, dqkv;
};

Result RunFloat(const Shape& s, int threads, detail::AttentionParallel mode) {
  const int saved = NumThreads();
  SetNumThreads(threads);
  TuningScope scope(64, mode);
  const auto qkv = ToFloat(RandomVec(s.QkvSize(), 4, -2.0, 2.0));
  const auto dout = ToFloat(RandomVec(s.OutSize(), 5));
  Result r{std::vector<float>(s.OutSize()), std::vector<float>(s.QkvSize())};
  std::vector<float> att(s.AttSize());
  std::vector<float> scratch(attention_scratch_elems(s.B, s.T, s.NH, s.NKV, s.HS, threads));
  attention_forward(r.out.data(), att.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  attention_backward(r.dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                     s.NH, s.NKV, s.HS);
  SetNumThreads(saved);
  return r;
}

TEST(AttentionTest, MultithreadedMatchesSingleThreaded) {
  for (const Shape s : {Shape{2, 150, 4, 2, 16}, Shape{1, 130, 4, 1, 8}}) {
    const Result one = RunFloat(s, 1, detail::AttentionParallel::kAuto);
    for (auto mode : {detail::AttentionParallel::kAuto, detail::AttentionParallel::kHeads,
                      detail::AttentionParallel::kBlas}) {
      const Result two = RunFloat(s, 2, mode);
      ExpectClose(two.out, one.out, 1e-5, "out, 2 threads vs 1");
      ExpectClose(two.dqkv, one.dqkv, 1e-5, "dqkv, 2 threads vs 1");
    }
  }
}

}  // namespace
}  // namespace tern::kernels

namespace tern::kernels {
namespace {

// ---- Chunked attention ------------------------------------------------------------------

// Forward equals the reference (and the T x T kernel) and its lse is log sum exp of the scaled
// scores; both product back ends; lengths that do and do not divide the 64-row blocks.
void CheckChunkedForward(const Shape& s, bool blas_gemm) {
  TuningScope scope(64, detail::AttentionParallel::kAuto, blas_gemm);
  const auto qkv = RandomVec(s.QkvSize(), 7, -2.0, 2.0);
  std::vector<double> want(s.OutSize()), want_att(s.AttSize(), 0.0);
  RefAttention(&want, &want_att, qkv, s);
  std::vector<double> out(s.OutSize(), 9.0), lse(static_cast<size_t>(s.B) * s.NH * s.T);
  chunked_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(out, want, 1e-12, "chunked out (double)");
  // lse: log of the softmax denominator of the scaled scores, recomputed plainly.
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.HS));
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h)
      for (int i = 0; i < s.T; i += std::max(1, s.T / 5)) {
        const int kvh = h / (s.NH / s.NKV);
        double mx = -1e300;
        std::vector<double> sc(i + 1);
        for (int j = 0; j <= i; ++j) {
          double d = 0;
          for (int c = 0; c < s.HS; ++c)
            d += qkv[(static_cast<size_t>(b) * s.T + i) * s.QKV() + h * s.HS + c] *
                 qkv[(static_cast<size_t>(b) * s.T + j) * s.QKV() + (s.NH + kvh) * s.HS + c];
          mx = std::max(mx, sc[j] = d * scale);
        }
        double sum = 0;
        for (double v : sc) sum += std::exp(v - mx);
        EXPECT_NEAR(lse[(static_cast<size_t>(b) * s.NH + h) * s.T + i], mx + std::log(sum), 1e-10)
            << "b " << b << " h " << h << " i " << i;
      }
  auto fqkv = ToFloat(qkv);
  std::vector<float> fout(s.OutSize()), flse(lse.size());
  chunked_attention_forward(fout.data(), flse.data(), fqkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  ExpectClose(fout, want, 2e-6, "chunked out (float)");
}

TEST_P(AttentionPathTest, ChunkedForwardMatchesReference) {
  for (const Shape s : {Shape{2, 7, 4, 2, 3}, Shape{1, 64, 2, 2, 8}, Shape{2, 130, 4, 1, 16},
                        Shape{1, 200, 2, 2, 40}})
    CheckChunkedForward(s, GetParam());
}

// Backward vs central differences of sum(out * dout) in double (dqkv prefilled with junk: it
// is assigned).
void CheckChunkedGradient(const Shape& s, bool blas_gemm = false) {
  TuningScope scope(64, detail::AttentionParallel::kAuto, blas_gemm);
  auto qkv = RandomVec(s.QkvSize(), 8, -1.5, 1.5);
  const auto dout = RandomVec(s.OutSize(), 9);
  std::vector<double> out(s.OutSize()), lse(static_cast<size_t>(s.B) * s.NH * s.T);
  auto loss = [&] {
    chunked_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    return Dot(out, dout);
  };
  loss();
  std::vector<double> dqkv(s.QkvSize(), 123.0);
  chunked_attention_backward(dqkv.data(), dout.data(), out.data(), lse.data(), qkv.data(), s.B, s.T,
                             s.NH, s.NKV, s.HS);
  testing::CheckGradient(&qkv, dqkv, loss, "chunked attention dqkv", 1e-6);
}

TEST(ChunkedAttentionTest, GradientGqa) { CheckChunkedGradient({2, 7, 4, 2, 3}); }
TEST(ChunkedAttentionTest, GradientMha) { CheckChunkedGradient({1, 9, 2, 2, 4}); }
TEST(ChunkedAttentionTest, GradientAcrossKeyBlocks) { CheckChunkedGradient({1, 70, 2, 1, 3}); }
TEST(ChunkedAttentionTest, GradientBlasProducts) { CheckChunkedGradient({2, 7, 4, 2, 3}, true); }

// Float backward equals the T x T kernel's (the model's previous path) within float rounding,
// single- and multithreaded, at sizes the models use.
TEST(ChunkedAttentionTest, FloatBackwardMatchesTheFullMatrixKernel) {
  for (const Shape s : {Shape{2, 150, 4, 2, 16}, Shape{1, 256, 4, 4, 64}, Shape{1, 97, 6, 2, 32}}) {
    const auto qkv = ToFloat(RandomVec(s.QkvSize(), 10, -2.0, 2.0));
    const auto dout = ToFloat(RandomVec(s.OutSize(), 11));
    std::vector<float> out(s.OutSize()), att(s.AttSize()), dqkv(s.QkvSize());
    std::vector<float> scratch(attention_scratch_elems(s.B, s.T, s.NH, s.NKV, s.HS, NumThreads()));
    attention_forward(out.data(), att.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
    attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), s.B, s.T,
                       s.NH, s.NKV, s.HS);
    for (int threads : {1, 2}) {
      const int saved = NumThreads();
      SetNumThreads(threads);
      std::vector<float> cout(s.OutSize()), lse(static_cast<size_t>(s.B) * s.NH * s.T),
          cdqkv(s.QkvSize(), 7.0f);
      chunked_attention_forward(cout.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
      chunked_attention_backward(cdqkv.data(), dout.data(), cout.data(), lse.data(), qkv.data(),
                                 s.B, s.T, s.NH, s.NKV, s.HS);
      SetNumThreads(saved);
      ExpectClose(cout, std::vector<double>(out.begin(), out.end()), 2e-5, "chunked out");
      ExpectClose(cdqkv, std::vector<double>(dqkv.begin(), dqkv.end()), 5e-4, "chunked dqkv");
    }
  }
}

// Rows [t0, t0 + n) of every batch of a (B, T, W) tensor, and back.
std::vector<double> Rows(const std::vector<double>& x, int B, int Tn, int W, int t0, int n) {
  std::vector<double> out(static_cast<size_t>(B) * n * W);
  for (int b = 0; b < B; ++b)
    std::copy(x.begin() + (static_cast<size_t>(b) * Tn + t0) * W,
              x.begin() + (static_cast<size_t>(b) * Tn + t0 + n) * W,
              out.begin() + static_cast<size_t>(b) * n * W);
  return out;
}
void PutRows(std::vector<double>* x, const std::vector<double>& part, int B, int Tn, int W, int t0,
             int n) {
  for (int b = 0; b < B; ++b)
    std::copy(part.begin() + static_cast<size_t>(b) * n * W,
              part.begin() + static_cast<size_t>(b + 1) * n * W,
              x->begin() + (static_cast<size_t>(b) * Tn + t0) * W);
}

// The sequence split into chunks (FPDT's view): each query chunk attends to every key chunk at
// or before it through the pair kernels, the parts merged by their lse; the result and the
// pair backward (accumulated over pairs, with the merged out and lse) equal whole-sequence
// attention. Chunk sizes that do not divide the sequence or the 64-row blocks.
TEST(ChunkedAttentionTest, ChunkPairsMergedEqualTheWholeSequence) {
  const Shape s{2, 150, 4, 2, 8};
  const int QKV = s.QKV(), O = s.NH * s.HS;
  const auto qkv = RandomVec(s.QkvSize(), 12, -2.0, 2.0);
  const auto dout = RandomVec(s.OutSize(), 13);
  std::vector<double> out(s.OutSize()), lse(static_cast<size_t>(s.B) * s.NH * s.T),
      dqkv(s.QkvSize());
  chunked_attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  chunked_attention_backward(dqkv.data(), dout.data(), out.data(), lse.data(), qkv.data(), s.B, s.T,
                             s.NH, s.NKV, s.HS);
  for (const std::vector<int>& bounds : {std::vector<int>{0, 64, 150}, {0, 37, 100, 150}}) {
    const int chunks = static_cast<int>(bounds.size()) - 1;
    std::vector<std::vector<double>> q(chunks), co(chunks), cl(chunks), dq(chunks);
    for (int c = 0; c < chunks; ++c) {
      const int n = bounds[c + 1] - bounds[c];
      q[c] = Rows(qkv, s.B, s.T, QKV, bounds[c], n);
      dq[c].assign(q[c].size(), 0.0);
    }
    std::vector<double> got(s.OutSize()), got_d(s.QkvSize());
    for (int c = 0; c < chunks; ++c) {
      const int n = bounds[c + 1] - bounds[c];
      co[c].assign(static_cast<size_t>(s.B) * n * O, 0.0);
      cl[c].assign(static_cast<size_t>(s.B) * s.NH * n, 0.0);
      for (int k = 0; k <= c; ++k) {
        const int nk = bounds[k + 1] - bounds[k];
        std::vector<double> po(co[c].size()), pl(cl[c].size());
        chunked_attention_pair_forward(po.data(), pl.data(), q[c].data(), n, bounds[c], q[k].data(),
                                       nk, bounds[k], s.B, s.NH, s.NKV, s.HS);
        if (k == 0) {
          co[c] = po;
          cl[c] = pl;
        } else {
          attention_lse_merge(co[c].data(), cl[c].data(), po.data(), pl.data(), s.B, n, s.NH, s.HS);
        }
      }
      PutRows(&got, co[c], s.B, s.T, O, bounds[c], n);
    }
    ExpectClose(got, out, 1e-12, "chunk pairs merged vs whole-sequence out");
    for (int c = 0; c < chunks; ++c) {
      const int n = bounds[c + 1] - bounds[c];
      const auto dout_c = Rows(dout, s.B, s.T, O, bounds[c], n);
      for (int k = 0; k <= c; ++k) {
        const int nk = bounds[k + 1] - bounds[k];
        chunked_attention_pair_backward(dq[c].data(), dq[k].data(), dout_c.data(), co[c].data(),
                                        cl[c].data(), q[c].data(), n, bounds[c], q[k].data(), nk,
                                        bounds[k], s.B, s.NH, s.NKV, s.HS);
      }
    }
    for (int c = 0; c < chunks; ++c)
      PutRows(&got_d, dq[c], s.B, s.T, QKV, bounds[c], bounds[c + 1] - bounds[c]);
    ExpectClose(got_d, dqkv, 1e-10, "chunk-pair backward vs whole-sequence dqkv");
  }
}

// A query chunk placed before its key chunk sees nothing: lse -inf, out 0, and merging it
// changes nothing.
TEST(ChunkedAttentionTest, APairWithNoVisibleKeyIsEmptyAndMergesAsNothing) {
  const Shape s{1, 10, 2, 1, 4};
  const auto qkv = RandomVec(s.QkvSize(), 14);
  std::vector<double> out(s.OutSize(), 5.0), lse(static_cast<size_t>(s.NH) * s.T, 5.0);
  chunked_attention_pair_forward(out.data(), lse.data(), qkv.data(), s.T, 0, qkv.data(), s.T, 10,
                                 s.B, s.NH, s.NKV, s.HS);
  for (double v : out) EXPECT_EQ(v, 0.0);
  for (double v : lse) EXPECT_EQ(v, -std::numeric_limits<double>::infinity());
  std::vector<double> full(s.OutSize()), full_lse(lse.size());
  chunked_attention_forward(full.data(), full_lse.data(), qkv.data(), s.B, s.T, s.NH, s.NKV, s.HS);
  auto merged = full, merged_lse = full_lse;
  attention_lse_merge(merged.data(), merged_lse.data(), out.data(), lse.data(), s.B, s.T, s.NH,
                      s.HS);
  EXPECT_EQ(merged, full);
  EXPECT_EQ(merged_lse, full_lse);
}

}  // namespace
}  // namespace tern::kernels
