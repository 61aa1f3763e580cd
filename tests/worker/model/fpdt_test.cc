// FPDT (Transformer::set_fpdt): the chunked, offloaded pipeline equals the whole-sequence path
// (loss and every gradient) for chunk sizes that divide the sequence and ones that do not, and
// its device memory does not grow with the sequence.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/threads.h"
#include "tests/worker/model/tiny_model.h"
#include "worker/model/transformer.h"

namespace tern::model {
namespace {

using Case = testing::ModelCase;

ModelDims Dims(const Case& c, int max_T, int C = 16, int NH = 4) {
  tern::v1::ModelConfig m = testing::TinyConfig(c, {13, C, NH, 24, max_T, 0.3f});
  if (c.longrope_original_max > 0) {  // head size C / NH = 4: two factors each
    m.set_original_max_position_embeddings(c.longrope_original_max);
    m.mutable_rope_scaling()->set_type("longrope");
    for (double f : {1.5, 3.0}) m.mutable_rope_scaling()->add_short_factor(f);
    for (double f : {4.0, 20.0}) m.mutable_rope_scaling()->add_long_factor(f);
  }
  return testing::ResolvedDims(m);
}

template <typename T>
struct Pass {
  double loss = 0;
  std::vector<T> grads;
};

template <typename T>
Pass<T> Train(Transformer<T>& model, const std::vector<T>& params,
              const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets, int B,
              int Tn) {
  Pass<T> r;
  r.grads.assign(params.size(), T(0));
  FlatParamSource<T> src(&model.params(), params.data(), r.grads.data());
  r.loss = model.Forward(src, tokens.data(), targets.data(), B, Tn);
  model.Backward(src, 0.7f);
  return r;
}

template <typename T>
double MaxRelDiff(const std::vector<T>& a, const std::vector<T>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::abs(double(a[i])));
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / scale);
  return worst;
}

class FpdtEquals : public ::testing::TestWithParam<Case> {};

TEST_P(FpdtEquals, TheWholeSequencePathForEveryChunkSize) {
  kernels::SetNumThreads(1);
  const int B = 2, Tn = 37, max_T = 40;
  const ModelDims dims = Dims(GetParam(), max_T);
  Transformer<double> plain(dims);
  std::vector<double> params(plain.params().total());
  plain.InitParams(params.data(), 11);
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd(0, 0.2);
  for (const auto& e : plain.params().entries())
    if (!e.decay)
      for (uint64_t i = 0; i < e.numel; ++i) params[e.offset + i] += nd(rng);
  std::vector<int32_t> tokens(B * Tn), targets(B * Tn);
  for (int i = 0; i < B * Tn; ++i) {
    tokens[i] = int32_t(rng() % dims.V);
    targets[i] = i % 9 == 4 ? -1 : int32_t(rng() % dims.V);
  }
  const Pass<double> want = Train(plain, params, tokens, targets, B, Tn);
  for (int chunk : {1, 5, 8, 16, 37, 64}) {
    for (bool offload : {true, false}) {
      CpuDevice dev;
      Transformer<double> fpdt(dims, Backend<double>{&dev, &kernels::CpuOps<double>()});
      fpdt.set_fpdt({chunk, offload});
      const Pass<double> got = Train(fpdt, params, tokens, targets, B, Tn);
      const std::string what = absl::StrCat("chunk ", chunk, " offload ", offload);
      EXPECT_NEAR(got.loss, want.loss, 1e-12 * std::abs(want.loss)) << what;
      EXPECT_LT(MaxRelDiff(want.grads, got.grads), 1e-12) << what;
      // The store is in the host tier exactly when offloading.
      EXPECT_EQ(dev.usage(MemoryTier::kHost).current > 0, offload) << what;
      EXPECT_EQ(dev.usage(MemoryTier::kHost).current, offload ? fpdt.fpdt_store_bytes() : 0u);
      EXPECT_EQ(dev.usage(MemoryTier::kDevice).current, fpdt.activation_bytes()) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FpdtEquals,
                         ::testing::Values(Case{"gpt2", "gpt2", 4, true},
                                           Case{"gpt2_untied", "gpt2", 4, false},
                                           Case{"llama_gqa", "llama", 2, false},
                                           Case{"llama_mqa_tied", "llama", 1, true},
                                           Case{"phi3", "phi3", 4, false},
                                           // 37 tokens past 16: LongRoPE's long factors
                                           Case{"phi3_longrope_long", "phi3", 2, false, 16},
                                           // 37 tokens within 38: the short factors
                                           Case{"phi3_longrope_short", "phi3", 2, false, 38}),
                         [](const auto& info) { return info.param.name; });

// In float, at a size where the attention dominates: within 1e-4 of the whole-sequence path.
TEST(Fpdt, FloatGradientsWithinATenThousandth) {
  kernels::SetNumThreads(2);
  const int B = 1, Tn = 300;
  const ModelDims dims = Dims(Case{"llama", "llama", 2, false}, Tn, 64, 4);
  Transformer<float> plain(dims), fpdt(dims);
  fpdt.set_fpdt({64, true});
  std::vector<float> params(plain.params().total());
  plain.InitParams(params.data(), 3);
  std::vector<int32_t> tokens(B * Tn), targets(B * Tn);
  for (int i = 0; i < B * Tn; ++i) {
    tokens[i] = (i * 7 + 3) % dims.V;
    targets[i] = (i * 5 + 1) % dims.V;
  }
  const Pass<float> want = Train(plain, params, tokens, targets, B, Tn);
  const Pass<float> got = Train(fpdt, params, tokens, targets, B, Tn);
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * want.loss);
  EXPECT_LT(MaxRelDiff(want.grads, got.grads), 1e-4);
}

// The device holds O(chunk): the same bytes at 4x the sequence; the store grows instead.
TEST(Fpdt, DeviceMemoryDoesNotGrowWithTheSequence) {
  const ModelDims dims = Dims(Case{"llama", "llama", 2, false}, 1024);
  uint64_t device[2], store[2];
  for (int k = 0; k < 2; ++k) {
    CpuDevice dev;
    Transformer<float> m(dims, Backend<float>{&dev, &kernels::CpuOps<float>()});
    m.set_fpdt({64, true});
    ASSERT_TRUE(m.Reserve(2, k == 0 ? 256 : 1024).ok());
    device[k] = dev.usage(MemoryTier::kDevice).current;
    store[k] = dev.usage(MemoryTier::kHost).current;
  }
  EXPECT_EQ(device[0], device[1]);
  EXPECT_GT(store[1], 3 * store[0]);
  // Under a device budget the whole-sequence path cannot reserve, FPDT can.
  CpuDevice dev;
  dev.set_budget(MemoryTier::kDevice, device[0] + device[0] / 2);
  Transformer<float> plain(dims, Backend<float>{&dev, &kernels::CpuOps<float>()});
  const absl::Status st = plain.Reserve(2, 1024);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_NE(st.message().find("activations for 2x1024 tokens"), std::string::npos) << st;
  Transformer<float> fpdt(dims, Backend<float>{&dev, &kernels::CpuOps<float>()});
  fpdt.set_fpdt({64, true});
  EXPECT_TRUE(fpdt.Reserve(2, 1024).ok());
}

}  // namespace
}  // namespace tern::model
