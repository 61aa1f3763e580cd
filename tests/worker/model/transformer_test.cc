// Whole-model gradient checks: analytic backward vs central finite differences in double.
#include "worker/model/transformer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/threads.h"
#include "tests/worker/model/tiny_model.h"

namespace tern::model {
namespace {

using Case = testing::ModelCase;

ModelDims TinyDims(const Case& c) {
  // Large weights so every path matters.
  return testing::ResolvedDims(testing::TinyConfig(c, {11, 8, 2, 12, 6, 0.3f}));
}

class GradCheck : public ::testing::TestWithParam<Case> {};

TEST_P(GradCheck, MatchesFiniteDifferences) {
  kernels::SetNumThreads(1);
  const ModelDims dims = TinyDims(GetParam());
  Transformer<double> model(dims);
  const ParamTable& table = model.params();
  std::vector<double> params(table.total()), grads(table.total(), 0.0);
  model.InitParams(params.data(), 7);
  // Perturb norms and biases away from 1/0 so their gradients are exercised.
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0, 0.2);
  for (const auto& e : table.entries())
    if (!e.decay)
      for (uint64_t i = 0; i < e.numel; ++i) params[e.offset + i] += nd(rng);
  const int B = 2, T = 5;
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = int32_t(rng() % dims.V);
    targets[i] = i == 3 ? -1 : int32_t(rng() % dims.V);  // one ignored target
  }
  FlatParamSource<double> src(&table, params.data(), grads.data());
  const float scale = 0.7f;
  model.Forward(src, tokens.data(), targets.data(), B, T);
  model.Backward(src, scale);
  // Check every parameter element (the model is tiny).
  const double eps = 1e-5;
  double max_err = 0;
  std::string worst;
  for (const auto& e : table.entries()) {
    for (uint64_t i = 0; i < e.numel; ++i) {
      double& p = params[e.offset + i];
      const double orig = p;
      p = orig + eps;
      const double lp = model.Forward(src, tokens.data(), targets.data(), B, T);
      p = orig - eps;
      const double lm = model.Forward(src, tokens.data(), targets.data(), B, T);
      p = orig;
      const double num = scale * (lp - lm) / (2 * eps);
      const double ana = grads[e.offset + i];
      const double err = std::abs(num - ana) / std::max(1e-3, std::abs(num) + std::abs(ana));
      if (err > max_err) {
        max_err = err;
        worst = e.name + "[" + std::to_string(i) + "] num=" + std::to_string(num) +
                " ana=" + std::to_string(ana);
      }
    }
  }
  EXPECT_LT(max_err, 1e-6) << "worst: " << worst;
}

INSTANTIATE_TEST_SUITE_P(Models, GradCheck,
                         ::testing::Values(Case{"gpt2", "gpt2", 2, true},
                                           Case{"gpt2_untied", "gpt2", 2, false},
                                           Case{"llama_gqa", "llama", 1, false},
                                           Case{"llama_tied", "llama", 2, true},
                                           Case{"phi3", "phi3", 2, false}),
                         [](const auto& info) { return info.param.name; });

// Activation checkpointing recomputes each layer in the backward: the same loss and exactly
// the same gradients as keeping every layer's activations, with one layer's buffers.
TEST(Transformer, RecomputedLayersGiveTheSameGradients) {
  kernels::SetNumThreads(1);
  for (const Case& c : {Case{"gpt2", "gpt2", 2, true}, Case{"llama", "llama", 1, false}}) {
    const ModelDims dims = TinyDims(c);
    Transformer<double> keep(dims), recompute(dims);
    recompute.set_recompute_layers(true);
    const ParamTable& table = keep.params();
    std::vector<double> params(table.total()), g1(table.total(), 0.0), g2(table.total(), 0.0);
    keep.InitParams(params.data(), 9);
    const int B = 2, T = 5;
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int i = 0; i < B * T; ++i) {
      tokens[i] = (i * 7 + 1) % dims.V;
      targets[i] = (i * 5 + 2) % dims.V;
    }
    FlatParamSource<double> s1(&table, params.data(), g1.data()),
        s2(&table, params.data(), g2.data());
    ASSERT_TRUE(keep.Reserve(B, T).ok());
    ASSERT_TRUE(recompute.Reserve(B, T).ok());
    EXPECT_LT(recompute.activation_bytes(), keep.activation_bytes()) << c.name;
    const double l1 = keep.Forward(s1, tokens.data(), targets.data(), B, T);
    const double l2 = recompute.Forward(s2, tokens.data(), targets.data(), B, T);
    keep.Backward(s1, 1.0f);
    recompute.Backward(s2, 1.0f);
    EXPECT_EQ(l1, l2) << c.name;
    EXPECT_EQ(g1, g2) << c.name;
  }
}

// A tiny model with initialised weights and a read-only parameter source (inference tests).
struct InferenceModel {
  InferenceModel(const Case& c, uint64_t seed)
      : dims(TinyDims(c)),
        model(dims),
        params(model.params().total()),
        src(&model.params(), params.data(), nullptr) {
    model.InitParams(params.data(), seed);
  }
  ModelDims dims;
  Transformer<double> model;
  std::vector<double> params;
  FlatParamSource<double> src;
};

// KV cache: a prefill of 3 tokens, then one token at a time, gives the logits the whole
// sequence's forward gives at every position (GPT-2's learned positions, Llama's RoPE).
TEST(Transformer, CachedDecodingEqualsTheFullForward) {
  kernels::SetNumThreads(1);
  for (const Case& c : {Case{"gpt2", "gpt2", 2, true}, Case{"llama", "llama", 1, false}}) {
    InferenceModel m(c, 11);
    const ModelDims& dims = m.dims;
    Transformer<double>& model = m.model;
    FlatParamSource<double>& src = m.src;
    const int B = 2, T = 6;  // max_position_embeddings
    std::vector<int32_t> tokens(B * T);
    for (int i = 0; i < B * T; ++i) tokens[i] = (i * 3 + 1) % dims.V;
    model.Forward(src, tokens.data(), nullptr, B, T);
    const std::vector<double> full(model.logits(), model.logits() + size_t(B) * T * dims.V);
    auto cache = *model.NewKvCache(B, T);
    int done = 0;
    for (int step : {3, 1, 1, 1}) {
      std::vector<int32_t> chunk(size_t(B) * step);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < step; ++t)
          chunk[size_t(b) * step + t] = tokens[size_t(b) * T + done + t];
      model.ForwardCached(src, chunk.data(), B, step, &cache);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < step; ++t)
          for (int v = 0; v < dims.V; ++v)
            EXPECT_NEAR(model.logits()[(size_t(b) * step + t) * dims.V + v],
                        full[(size_t(b) * T + done + t) * dims.V + v], 1e-10)
                << c.name << " b " << b << " position " << done + t;
      done += step;
    }
    EXPECT_EQ(cache.len, std::vector<int>(B, done));
  }
}

// Rows of different lengths in one cache: each prompt prefilled into its own row, then one
// batched decode step per token; every row's logits are its own sequence's full forward.
TEST(Transformer, CachedRowsOfDifferentLengthsDecodeTogether) {
  kernels::SetNumThreads(1);
  for (const Case& c : {Case{"gpt2", "gpt2", 2, true}, Case{"llama", "llama", 1, false}}) {
    InferenceModel m(c, 12);
    const ModelDims& dims = m.dims;
    Transformer<double>& model = m.model;
    FlatParamSource<double>& src = m.src;
    const std::vector<std::vector<int32_t>> seqs = {{1, 4, 2, 7, 3, 5}, {6, 2, 9, 1, 0, 8}};
    const std::vector<int> prompt = {2, 4};  // row 0 starts with 2 tokens, row 1 with 4
    auto cache = *model.NewKvCache(2, 6);
    for (int r = 0; r < 2; ++r) model.ForwardCached(src, seqs[r].data(), 1, prompt[r], &cache, r);
    EXPECT_EQ(cache.len, (std::vector<int>{2, 4}));
    for (int step = 0; step < 2; ++step) {
      const int32_t next[2] = {seqs[0][prompt[0] + step], seqs[1][prompt[1] + step]};
      model.ForwardCached(src, next, 2, 1, &cache);
      const std::vector<double> got(model.logits(), model.logits() + 2 * dims.V);
      for (int r = 0; r < 2; ++r) {
        const int n = prompt[r] + step + 1;  // the sequence so far
        model.Forward(src, seqs[r].data(), nullptr, 1, n);
        for (int v = 0; v < dims.V; ++v)
          EXPECT_NEAR(got[size_t(r) * dims.V + v], model.logits()[size_t(n - 1) * dims.V + v],
                      1e-10)
              << c.name << " row " << r << " step " << step;
      }
    }
  }
}

TEST(Transformer, HuggingFaceNamesAndUnits) {
  const ModelDims d = TinyDims({"", "llama", 1, false});
  Transformer<float> m(d);
  const auto& t = m.params();
  const auto* q = t.Find("model.layers.1.self_attn.q_proj.weight");
  const auto* k = t.Find("model.layers.1.self_attn.k_proj.weight");
  const auto* v = t.Find("model.layers.1.self_attn.v_proj.weight");
  ASSERT_TRUE(q && k && v);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(k->shape, (std::vector<int64_t>{4, 8}));  // 1 kv head of size 4
  EXPECT_EQ(k->offset, q->offset + q->numel);         // fused q|k|v GEMM relies on adjacency
  EXPECT_EQ(v->offset, k->offset + k->numel);
  EXPECT_EQ(q->unit, 2);
  EXPECT_NE(t.Find("lm_head.weight"), nullptr);
  EXPECT_EQ(t.Find("lm_head.weight")->unit, d.L + 1);
  EXPECT_EQ(t.units().size(), size_t(d.L + 2));
  uint64_t covered = 0;
  for (const auto& u : t.units()) covered += u.numel;
  EXPECT_EQ(covered, t.total());
  const ModelDims g = TinyDims({"", "gpt2", 2, true});
  Transformer<float> gm(g);
  const auto* c_attn = gm.params().Find("transformer.h.0.attn.c_attn.weight");
  ASSERT_NE(c_attn, nullptr);
  EXPECT_EQ(c_attn->shape, (std::vector<int64_t>{8, 24}));  // Conv1D (in, out)
  EXPECT_EQ(gm.params().Find("lm_head.weight"), nullptr);   // tied
}

// Records the order in which the model touches units: ZeRO-3 relies on it.
class RecordingSource : public FlatParamSource<float> {
 public:
  using FlatParamSource<float>::FlatParamSource;
  const float* Acquire(int unit) override {
    log.push_back(absl::StrCat("A", unit));
    return FlatParamSource<float>::Acquire(unit);
  }
  void GradsReady(int unit) override { log.push_back(absl::StrCat("G", unit)); }
  std::vector<std::string> log;
};

TEST(Transformer, GradsReadyOncePerUnitInReverseOrder) {
  const ModelDims d = TinyDims({"", "llama", 2, true});
  Transformer<float> m(d);
  std::vector<float> p(m.params().total()), g(p.size(), 0.0f);
  m.InitParams(p.data(), 1);
  RecordingSource src(&m.params(), p.data(), g.data());
  std::vector<int32_t> tok(6, 1), tgt(6, 2);
  const double loss = m.Forward(src, tok.data(), tgt.data(), 1, 6);
  EXPECT_GT(loss, 0.0);
  src.log.clear();
  m.Backward(src, 1.0f);
  std::vector<std::string> ready;
  for (const auto& s : src.log)
    if (s[0] == 'G') ready.push_back(s);
  EXPECT_EQ(ready, (std::vector<std::string>{"G3", "G2", "G1", "G0"}));
}

}  // namespace
}  // namespace tern::model
