// Ms-PoE (worker/model/ms_poe.h): the options and their refusals, the head statistic and the
// slot assignment on hand-computed cases, ratio 1 = the plain model bit for bit, and KV-cache
// decoding = recomputation with the prompt's slots.
#include "worker/model/ms_poe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/threads.h"
#include "worker/model/transformer.h"

namespace tern::model {
namespace {

ModelDims Dims(const std::string& type, int L, int NH, int NKV, int max_T) {
  tern::v1::ModelConfig m;
  m.set_model_type(type);
  m.set_vocab_size(32);
  m.set_hidden_size(NH * 8);
  m.set_num_hidden_layers(L);
  m.set_num_attention_heads(NH);
  if (type != "gpt2") m.set_num_key_value_heads(NKV);
  m.set_intermediate_size(40);
  m.set_max_position_embeddings(max_T);
  m.set_initializer_range(0.3f);  // large weights: attention is far from uniform
  auto d = ResolveModelDims(m, max_T);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

std::string Message(const absl::Status& st) { return std::string(st.message()); }

TEST(MsPoeOptionsTest, ParsesAndRefusesByName) {
  auto o = ParseMsPoe("1.2:1.8");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->min_ratio, 1.2);
  EXPECT_EQ(o->max_ratio, 1.8);
  EXPECT_EQ(o->first_layer, 2);  // the reference's scripts skip layers 0 and 1
  o = ParseMsPoe("1:1:0");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->first_layer, 0);
  struct Bad {
    const char* spec;
    const char* says;
  };
  for (const Bad& b :
       {Bad{"1.8:1.2", "MIN 1.8 exceeds MAX 1.2"}, Bad{"0.5:1.8", "MIN 0.5 is below 1"},
        Bad{"x:1.8", "MIN 'x' is not"}, Bad{"1.2:", "MAX '' is not"},
        Bad{"1.2", "expected MIN:MAX"}, Bad{"1.2:1.8:-1", "FIRST_LAYER '-1'"},
        Bad{"1:2:3:4", "expected MIN:MAX"}, Bad{"nan:2", "MIN 'nan' is not"}}) {
    auto r = ParseMsPoe(b.spec);
    ASSERT_FALSE(r.ok()) << b.spec;
    EXPECT_NE(Message(r.status()).find(b.says), std::string::npos) << Message(r.status());
  }
  const MsPoeOptions ok{1.2, 1.8, 2};
  EXPECT_TRUE(ValidateMsPoe(ok, Dims("llama", 4, 2, 2, 16)).ok());
  EXPECT_NE(Message(ValidateMsPoe(ok, Dims("gpt2", 4, 2, 2, 16))).find("learned positions"),
            std::string::npos);
  EXPECT_NE(Message(ValidateMsPoe(ok, Dims("llama", 2, 2, 2, 16))).find("has 2 layers"),
            std::string::npos);
  ModelDims lr = Dims("llama", 4, 2, 2, 16);
  lr.longrope = true;
  EXPECT_NE(Message(ValidateMsPoe(ok, lr)).find("LongRoPE"), std::string::npos);
}

TEST(MsPoeOptionsTest, RatiosSpreadOverMinToMaxExclusive) {
  const MsPoeOptions o{1.2, 1.8, 0};
  EXPECT_DOUBLE_EQ(MsPoeRatio(o, 0, 4), 1.2);
  EXPECT_DOUBLE_EQ(MsPoeRatio(o, 1, 4), 1.35);
  EXPECT_DOUBLE_EQ(MsPoeRatio(o, 3, 4), 1.65);  // arange(S) / S: MAX is not reached
}

// The statistic on cases computed by hand: head size 2, no positions, keys (1, 0) or (0, 0) and
// a last query (x, 0), so the scores are x / sqrt(2) or 0 and the weights e / (n + m e) with
// e = exp(x / sqrt 2). Four tokens, threshold 3 x mean = 3/4: head 0 (x = 4, e = 16.9) puts
// 0.85 on its one key (1, 0): fraction 1/4; head 1 (x = 1, e = 2.03) puts 0.40 there: 0.
TEST(MsPoeStatisticTest, OutlierFractionsMatchHandComputation) {
  const int NH = 2, NKV = 2, HS = 2, QKV = (NH + 2 * NKV) * HS, Tn = 4;
  std::vector<float> qkv(size_t(Tn) * QKV, 0.0f);
  auto q = [&](int t, int h) { return qkv.data() + size_t(t) * QKV + h * HS; };
  auto k = [&](int t, int j) { return qkv.data() + size_t(t) * QKV + (NH + j) * HS; };
  // Keys of both kv heads: token 2 is (1, 0), the others (0, 0).
  k(2, 0)[0] = 1.0f;
  k(2, 1)[0] = 1.0f;
  q(Tn - 1, 0)[0] = 4.0f;  // head 0: weight e/(3+e) on token 2 with e = exp(4/sqrt 2)
  q(Tn - 1, 1)[0] = 1.0f;  // head 1: e = exp(1/sqrt 2)
  q(0, 1)[0] = 100.0f;     // rows other than the last do not count
  const double e0 = std::exp(4.0 / std::sqrt(2.0)), e1 = std::exp(1.0 / std::sqrt(2.0));
  ASSERT_GT(e0 / (3 + e0), 0.75);
  ASSERT_LT(e1 / (3 + e1), 0.75);
  const std::vector<double> f = MsPoeOutlierFractions(qkv.data(), Tn, NH, NKV, HS);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0], 0.25);
  EXPECT_EQ(f[1], 0.0);
  // Eight tokens, threshold 3/8: head 0 (x = 4) over one key (1, 0): 16.9 / 23.9 = 0.71, one
  // outlier; head 1 (x = 4) over two: 16.9 / 39.8 = 0.42 each, two outliers.
  const int T8 = 8;
  std::vector<float> big(size_t(T8) * QKV, 0.0f);
  auto kb = [&](int t, int j) { return big.data() + size_t(t) * QKV + (NH + j) * HS; };
  auto qb = [&](int t, int h) { return big.data() + size_t(t) * QKV + h * HS; };
  kb(1, 1)[0] = kb(2, 1)[0] = 1.0f;
  kb(5, 0)[0] = 1.0f;
  qb(T8 - 1, 0)[0] = 4.0f;
  qb(T8 - 1, 1)[0] = 4.0f;
  ASSERT_GT(e0 / (6 + 2 * e0), 3.0 / 8);
  ASSERT_GT(e0 / (7 + e0), 3.0 / 8);
  const std::vector<double> g = MsPoeOutlierFractions(big.data(), T8, NH, NKV, HS);
  EXPECT_EQ(g[0], 1.0 / 8);
  EXPECT_EQ(g[1], 2.0 / 8);
  // Most outliers first: head 1 gets slot 0 (the ratio closest to MIN), head 0 slot 1.
  EXPECT_EQ(MsPoeSlots(g, NH, NKV), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(MsPoeSlots(f, NH, NKV), (std::vector<int32_t>{0, 1}));
}

TEST(MsPoeStatisticTest, GroupsRankByTheirQueryHeadsMeanAndTiesKeepIndexOrder) {
  // Four query heads over two kv groups: group 0 = heads 0,1 (mean 0.15), group 1 = heads 2,3
  // (mean 0.2); group 1 ranks first even though head 0 alone has the largest fraction.
  EXPECT_EQ(MsPoeSlots({0.3, 0.0, 0.2, 0.2}, 4, 2), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(MsPoeSlots({0.1, 0.1, 0.1, 0.1}, 4, 2), (std::vector<int32_t>{0, 1}));
  // Multi-head: each head's rank. {0.1, 0.3, 0.0, 0.2} ranks heads 1, 3, 0, 2, so head 0 gets
  // slot 2; indexing by the argsort itself (the reference's cos[head_order]) would give it 1.
  EXPECT_EQ(MsPoeSlots({0.1, 0.3, 0.0, 0.2}, 4, 4), (std::vector<int32_t>{2, 0, 3, 1}));
}

template <typename T>
struct Model {
  explicit Model(const ModelDims& d) : model(d), params(model.params().total()) {
    model.InitParams(params.data(), 11);
  }
  Transformer<T> model;
  std::vector<T> params;
  FlatParamSource<T> Src() { return FlatParamSource<T>(&model.params(), params.data(), nullptr); }
};

std::vector<int32_t> Tokens(int n, int V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % V);
  return t;
}

// MIN = MAX = 1 in every layer: the per-head path with ratio 1 gives the plain model's logits
// exactly (whole forward and KV cache), whatever the slots.
TEST(MsPoeModelTest, RatioOneGivesThePlainLogitsExactly) {
  kernels::SetNumThreads(1);
  const ModelDims d = Dims("llama", 3, 4, 2, 32);
  Model<float> m(d);
  auto src = m.Src();
  const int B = 2, Tn = 12;
  const auto tok = Tokens(B * Tn, d.V, 5);
  m.model.Forward(src, tok.data(), nullptr, B, Tn);
  const std::vector<float> plain(m.model.logits(), m.model.logits() + size_t(B) * Tn * d.V);
  auto cache = *m.model.NewKvCache(1, Tn);
  m.model.ForwardCached(src, tok.data(), 1, Tn - 2, &cache);
  m.model.ForwardCached(src, tok.data() + Tn - 2, 1, 2, &cache);
  const std::vector<float> plain_step(m.model.logits(), m.model.logits() + 2 * d.V);

  ASSERT_TRUE(m.model.set_ms_poe({1.0, 1.0, 0}).ok());
  m.model.Forward(src, tok.data(), nullptr, B, Tn);
  EXPECT_EQ(std::vector<float>(m.model.logits(), m.model.logits() + plain.size()), plain);
  cache.len[0] = 0;
  m.model.ForwardCached(src, tok.data(), 1, Tn - 2, &cache);
  m.model.ForwardCached(src, tok.data() + Tn - 2, 1, 2, &cache);
  EXPECT_EQ(std::vector<float>(m.model.logits(), m.model.logits() + 2 * d.V), plain_step);
  // A real range changes the logits (so the comparison above can fail), and not before
  // first_layer's input: with first_layer = L - 1 the last layer alone differs.
  ASSERT_TRUE(m.model.set_ms_poe({1.2, 1.8, 2}).ok());
  m.model.Forward(src, tok.data(), nullptr, B, Tn);
  const std::vector<float> scaled(m.model.logits(), m.model.logits() + plain.size());
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i)
    diff = std::max(diff, double(std::fabs(scaled[i] - plain[i])));
  EXPECT_GT(diff, 1e-4);
  // Its first token attends only to itself (position 0 = 0 / r): unchanged.
  for (int v = 0; v < d.V; ++v) EXPECT_FLOAT_EQ(scaled[v], plain[v]);
  m.model.clear_ms_poe();
  m.model.Forward(src, tok.data(), nullptr, B, Tn);
  EXPECT_EQ(std::vector<float>(m.model.logits(), m.model.logits() + plain.size()), plain);
}

// Greedy decoding with the KV cache under Ms-PoE equals recomputing the whole context every
// token with the slots measured on the prompt (the reference measures on its first forward and
// keeps them); the slots the cache measured are the ones a forward over the prompt measures.
TEST(MsPoeModelTest, KvCacheDecodingEqualsRecomputationTokenForToken) {
  kernels::SetNumThreads(1);
  for (const int NKV : {4, 2}) {  // multi-head and grouped-query
    const ModelDims d = Dims("llama", 3, 4, NKV, 40);
    Model<double> m(d);
    auto src = m.Src();
    ASSERT_TRUE(m.model.set_ms_poe({1.2, 1.8, 1}).ok());
    std::vector<int32_t> ctx = Tokens(14, d.V, 9);
    const int prompt = int(ctx.size()), steps = 10;
    auto cache = *m.model.NewKvCache(1, d.max_T);
    std::vector<std::vector<double>> cached;
    for (int i = 0; i < steps; ++i) {
      const int fresh = int(ctx.size()) - cache.len[0];
      m.model.ForwardCached(src, ctx.data() + cache.len[0], 1, fresh, &cache);
      const double* lg = m.model.logits() + size_t(fresh - 1) * d.V;
      cached.emplace_back(lg, lg + d.V);
      ctx.push_back(int32_t(std::max_element(lg, lg + d.V) - lg));
    }
    // The prompt's slots: measured from the same rows by a plain forward over the prompt.
    m.model.Forward(src, ctx.data(), nullptr, 1, prompt);
    const std::vector<int32_t> slots = m.model.ms_poe_slots();
    ASSERT_EQ(slots.size(), size_t(d.L) * NKV);
    EXPECT_EQ(slots, cache.ms_poe_slots);
    for (int l = 0; l < d.L; ++l) {
      std::vector<int32_t> s(slots.begin() + l * NKV, slots.begin() + (l + 1) * NKV);
      if (l < 1) {
        EXPECT_EQ(s, std::vector<int32_t>(NKV, -1)) << "layer 0 is not rescaled";
      } else {
        std::sort(s.begin(), s.end());
        for (int g = 0; g < NKV; ++g)
          EXPECT_EQ(s[g], g) << "layer " << l << " slots: a permutation";
      }
    }
    ASSERT_TRUE(m.model.set_ms_poe_fixed_slots(slots).ok());
    for (int i = 0; i < steps; ++i) {
      const int n = prompt + i;
      m.model.Forward(src, ctx.data(), nullptr, 1, n);
      const double* lg = m.model.logits() + size_t(n - 1) * d.V;
      for (int v = 0; v < d.V; ++v) ASSERT_NEAR(lg[v], cached[i][v], 1e-10) << "step " << i;
      EXPECT_EQ(std::max_element(lg, lg + d.V) - lg, ctx[n]) << "step " << i;
    }
    // Measuring on the longer context instead (no fixed slots) is a different computation:
    // the comparison above depends on keeping the prompt's slots, which a shuffled assignment
    // breaks.
    std::vector<int32_t> other = slots;
    for (int l = 1; l < d.L; ++l)
      std::rotate(other.begin() + l * NKV, other.begin() + l * NKV + 1,
                  other.begin() + (l + 1) * NKV);
    ASSERT_TRUE(m.model.set_ms_poe_fixed_slots(other).ok());
    m.model.Forward(src, ctx.data(), nullptr, 1, prompt + 1);
    double diff = 0;
    for (int v = 0; v < d.V; ++v)
      diff = std::max(diff, std::fabs(m.model.logits()[size_t(prompt) * d.V + v] - cached[1][v]));
    EXPECT_GT(diff, 1e-6);
    EXPECT_FALSE(m.model.set_ms_poe_fixed_slots({0, 1}).ok());  // not (L, S)
  }
}

}  // namespace
}  // namespace tern::model
