// phi-3's LongRoPE with Hugging Face semantics. A phi-3-shaped model directory (tiny dims,
// original_max_position_embeddings 16 < max_position_embeddings 64) is written by this test's
// own writer (config.json and safetensors bytes), loaded by Tern and checked against a naive
// reference forward written here with plain loops (embeddings, RMSNorm, LongRoPE by the HF
// formulas, causal attention, SwiGLU, head) that shares no code with worker/model: logits with
// the short factors (a prompt within original_max) and the long ones (a longer prompt), the KV
// cache's per-call table switch, `tern generate --model-dir` with one prompt and with a batch, the
// config refusals and the export round trip of rope_scaling.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/worker/engine/tern_cli.h"
#include "worker/engine/export.h"
#include "worker/model/config.h"
#include "worker/model/transformer.h"

namespace {

namespace fs = std::filesystem;
using tern::testing::ReadFile;
using tern::testing::Result;
using tern::testing::Tern;

constexpr int kV = 256, kC = 32, kL = 2, kNH = 4, kNKV = 2, kHS = kC / kNH, kF = 64;
constexpr int kMaxT = 64, kOrig = 16;
constexpr double kTheta = 10000.0, kEps = 1e-5;
const std::vector<double> kShort = {1.0, 1.5, 2.0, 3.0};
const std::vector<double> kLong = {2.0, 5.0, 11.0, 30.0};

// The reference model: float weights by HF name, (out, in) row-major like torch's Linear.
struct Ref {
  std::map<std::string, std::vector<float>> w;
  const float* W(const std::string& name) const { return w.at(name).data(); }
};

Ref MakeWeights(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.15f);
  Ref r;
  auto add = [&](const std::string& name, size_t count, float base) {
    auto& v = r.w[name];
    v.resize(count);
    for (auto& x : v) x = base + n(rng);
  };
  add("model.embed_tokens.weight", size_t(kV) * kC, 0);
  for (int l = 0; l < kL; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", kC, 1);
    add(p + "self_attn.qkv_proj.weight", size_t(kNH + 2 * kNKV) * kHS * kC, 0);
    add(p + "self_attn.o_proj.weight", size_t(kC) * kNH * kHS, 0);
    add(p + "post_attention_layernorm.weight", kC, 1);
    add(p + "mlp.gate_up_proj.weight", size_t(2 * kF) * kC, 0);
    add(p + "mlp.down_proj.weight", size_t(kC) * kF, 0);
  }
  add("model.norm.weight", kC, 1);
  add("lm_head.weight", size_t(kV) * kC, 0);
  return r;
}

std::vector<int64_t> Shape(const std::string& name) {
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return {kV, kC};
  if (name.ends_with("layernorm.weight") || name == "model.norm.weight") return {kC};
  if (name.ends_with("qkv_proj.weight")) return {(kNH + 2 * kNKV) * kHS, kC};
  if (name.ends_with("o_proj.weight")) return {kC, kNH * kHS};
  if (name.ends_with("gate_up_proj.weight")) return {2 * kF, kC};
  return {kC, kF};  // down_proj
}

// This test's own writer: HF's config.json for phi-3 with LongRoPE and one F32 safetensors file.
void WriteModelDir(const fs::path& dir, const Ref& r) {
  fs::create_directories(dir);
  nlohmann::json cfg = {
      {"architectures", {"Phi3ForCausalLM"}},
      {"model_type", "phi3"},
      {"vocab_size", kV},
      {"hidden_size", kC},
      {"intermediate_size", kF},
      {"num_hidden_layers", kL},
      {"num_attention_heads", kNH},
      {"num_key_value_heads", kNKV},
      {"max_position_embeddings", kMaxT},
      {"original_max_position_embeddings", kOrig},
      {"rms_norm_eps", kEps},
      {"rope_theta", kTheta},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"attention_dropout", 0.0},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"torch_dtype", "float32"},
      {"transformers_version", "4.40.0"},
      {"use_cache", true},
      {"rope_scaling", {{"type", "longrope"}, {"short_factor", kShort}, {"long_factor", kLong}}}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  nlohmann::json header;
  std::string data;
  for (const auto& [name, v] : r.w) {
    const size_t start = data.size();
    data.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    header[name] = {
        {"dtype", "F32"}, {"shape", Shape(name)}, {"data_offsets", {start, data.size()}}};
  }
  std::string hs = header.dump();
  while (hs.size() % 8 != 0) hs += ' ';
  const uint64_t len = hs.size();
  std::ofstream f(dir / "model.safetensors", std::ios::binary);
  f.write(reinterpret_cast<const char*>(&len), 8);
  f << hs << data;
}

// The reference's KV cache: per layer, the rotated keys and the values of every position so far.
struct RefCache {
  std::vector<std::vector<std::vector<double>>> k{kL}, v{kL};
  int len() const { return int(k[0].size()); }
};

void RmsNorm(const std::vector<double>& x, const float* w, std::vector<double>* out) {
  double ss = 0;
  for (double a : x) ss += a * a;
  const double s = 1.0 / std::sqrt(ss / x.size() + kEps);
  out->resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) (*out)[i] = x[i] * s * w[i];
}

std::vector<double> Linear(const float* W, const std::vector<double>& x, int out) {
  std::vector<double> y(out, 0.0);
  for (int o = 0; o < out; ++o)
    for (size_t i = 0; i < x.size(); ++i) y[o] += double(W[size_t(o) * x.size() + i]) * x[i];
  return y;
}

// HF's rotate_half RoPE on one head with LongRoPE's inv_freq and attention factor, where the
// call's sequence length (largest position + 1) picks the factors.
void Rotate(double* h, int pos, bool use_long) {
  const double factor = double(kMaxT) / kOrig;
  const double af = std::sqrt(1.0 + std::log(factor) / std::log(double(kOrig)));
  const auto& ext = use_long ? kLong : kShort;
  for (int i = 0; i < kHS / 2; ++i) {
    const double inv = 1.0 / (ext[i] * std::pow(kTheta, 2.0 * i / kHS));
    const double c = std::cos(pos * inv) * af, s = std::sin(pos * inv) * af;
    const double a = h[i], b = h[i + kHS / 2];
    h[i] = a * c - b * s;
    h[i + kHS / 2] = b * c + a * s;
  }
}

// One forward call of `toks` after the cached positions: appends them to the cache and returns
// (toks.size(), V) logits, as HF's Phi3ForCausalLM with a DynamicCache. `batch_len`: the length
// of the padded batch this row is part of (its longest row), whose largest position picks the
// table for every row.
std::vector<std::vector<double>> RefCall(const Ref& r, RefCache* cache,
                                         const std::vector<int>& toks, int batch_len = 0) {
  const int Tn = int(toks.size()), pos0 = cache->len();
  const bool use_long = std::max(pos0 + Tn, batch_len) > kOrig;  // max(position_ids) + 1
  std::vector<std::vector<double>> x(Tn, std::vector<double>(kC));
  for (int t = 0; t < Tn; ++t)
    for (int c = 0; c < kC; ++c) x[t][c] = r.W("model.embed_tokens.weight")[toks[t] * kC + c];
  for (int l = 0; l < kL; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    std::vector<std::vector<double>> q(Tn);
    for (int t = 0; t < Tn; ++t) {
      std::vector<double> h;
      RmsNorm(x[t], r.W(p + "input_layernorm.weight"), &h);
      std::vector<double> qkv =
          Linear(r.W(p + "self_attn.qkv_proj.weight"), h, (kNH + 2 * kNKV) * kHS);
      for (int hd = 0; hd < kNH + kNKV; ++hd) Rotate(qkv.data() + hd * kHS, pos0 + t, use_long);
      q[t].assign(qkv.begin(), qkv.begin() + kNH * kHS);
      cache->k[l].emplace_back(qkv.begin() + kNH * kHS, qkv.begin() + (kNH + kNKV) * kHS);
      cache->v[l].emplace_back(qkv.begin() + (kNH + kNKV) * kHS, qkv.end());
    }
    for (int t = 0; t < Tn; ++t) {
      const int n = pos0 + t + 1;  // causal: positions 0 .. pos0 + t
      std::vector<double> att(size_t(kNH) * kHS, 0.0);
      for (int hd = 0; hd < kNH; ++hd) {
        const int kv = hd / (kNH / kNKV);
        std::vector<double> s(n);
        double mx = -1e300;
        for (int j = 0; j < n; ++j) {
          double dot = 0;
          for (int i = 0; i < kHS; ++i) dot += q[t][hd * kHS + i] * cache->k[l][j][kv * kHS + i];
          s[j] = dot / std::sqrt(double(kHS));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j < n; ++j)
          for (int i = 0; i < kHS; ++i)
            att[hd * kHS + i] += s[j] / z * cache->v[l][j][kv * kHS + i];
      }
      std::vector<double> o = Linear(r.W(p + "self_attn.o_proj.weight"), att, kC);
      for (int c = 0; c < kC; ++c) x[t][c] += o[c];
      std::vector<double> h;
      RmsNorm(x[t], r.W(p + "post_attention_layernorm.weight"), &h);
      std::vector<double> gu = Linear(r.W(p + "mlp.gate_up_proj.weight"), h, 2 * kF), a(kF);
      for (int i = 0; i < kF; ++i) a[i] = gu[i] / (1.0 + std::exp(-gu[i])) * gu[kF + i];
      std::vector<double> dn = Linear(r.W(p + "mlp.down_proj.weight"), a, kC);
      for (int c = 0; c < kC; ++c) x[t][c] += dn[c];
    }
  }
  std::vector<std::vector<double>> logits(Tn);
  for (int t = 0; t < Tn; ++t) {
    std::vector<double> h;
    RmsNorm(x[t], r.W("model.norm.weight"), &h);
    logits[t] = Linear(r.W("lm_head.weight"), h, kV);
  }
  return logits;
}

int Argmax(const std::vector<double>& v) {
  return int(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<int> Tokens(const std::string& s) { return std::vector<int>(s.begin(), s.end()); }

class LongRope : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / absl::StrCat("tern-longrope-", getpid()));
    fs::remove_all(*dir_);
    ref_ = new Ref(MakeWeights(7));
    WriteModelDir(*dir_ / "phi3", *ref_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete ref_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }
  std::string WriteConfig(const std::string& name, const nlohmann::json& patch) {
    nlohmann::json cfg = nlohmann::json::parse(ReadFile(*dir_ / "phi3" / "config.json"));
    cfg.merge_patch(patch);
    std::ofstream(*dir_ / name) << cfg.dump();
    return Path(name);
  }
  static fs::path* dir_;
  static Ref* ref_;
};
fs::path* LongRope::dir_ = nullptr;
Ref* LongRope::ref_ = nullptr;

const char kShortPrompt[] = "Hello phi-3!";                                  // 12 tokens <= 16
const char kLongPrompt[] = "A LongRoPE prompt longer than sixteen tokens.";  // 45 > 16

TEST_F(LongRope, ConfigResolvesHfLongRopeParameters) {
  auto cfg = tern::model::LoadHfConfig(Path("phi3/config.json"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->original_max_position_embeddings(), kOrig);
  auto d = tern::model::ResolveModelDims(*cfg, 0);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->longrope);
  EXPECT_EQ(d->rope_original_max, kOrig);
  EXPECT_EQ(d->rope_short_factor, kShort);
  EXPECT_EQ(d->rope_long_factor, kLong);
  EXPECT_DOUBLE_EQ(d->rope_attention_factor, std::sqrt(1.0 + std::log(4.0) / std::log(16.0)));
  EXPECT_FALSE(tern::model::UseLongRope(*d, kOrig - 1));  // seq_len 16: short
  EXPECT_TRUE(tern::model::UseLongRope(*d, kOrig));       // seq_len 17: long
  // "su" (the older name), an explicit attention_factor, and original_max absent (factor key).
  auto su = tern::model::LoadHfConfig(
      WriteConfig("su.json", {{"rope_scaling", {{"type", "su"}, {"attention_factor", 1.25}}},
                              {"original_max_position_embeddings", nullptr}}));
  ASSERT_TRUE(su.ok()) << su.status();
  auto dsu = tern::model::ResolveModelDims(*su, 0);
  ASSERT_TRUE(dsu.ok()) << dsu.status();
  EXPECT_DOUBLE_EQ(dsu->rope_attention_factor, 1.25);
  EXPECT_EQ(dsu->rope_original_max, kMaxT);
  // factor <= 1: attention factor 1.
  auto same = tern::model::LoadHfConfig(
      WriteConfig("same.json", {{"original_max_position_embeddings", kMaxT}}));
  ASSERT_TRUE(same.ok());
  EXPECT_DOUBLE_EQ(tern::model::ResolveModelDims(*same, 0)->rope_attention_factor, 1.0);
  // A phi-3 config without rope_scaling keeps original_max_position_embeddings and plain RoPE.
  auto plain = tern::model::LoadHfConfig(WriteConfig("plain.json", {{"rope_scaling", nullptr}}));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(tern::model::ResolveModelDims(*plain, 0)->longrope);
}

// The real Phi-3-mini-128k-instruct config.json (config/models/phi3-mini-128k.json) loads as is.
TEST_F(LongRope, ThePhi3Mini128kConfigLoads) {
  auto cfg = tern::model::LoadHfConfig(TERN_SOURCE_DIR "/config/models/phi3-mini-128k.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto d = tern::model::ResolveModelDims(*cfg, 4096);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->longrope);
  EXPECT_EQ(d->HS, 96);
  EXPECT_EQ(d->rope_short_factor.size(), 48u);
  EXPECT_EQ(d->rope_long_factor.size(), 48u);
  EXPECT_EQ(d->rope_original_max, 4096);
  EXPECT_EQ(d->max_T, 131072);
  EXPECT_DOUBLE_EQ(d->rope_attention_factor,
                   std::sqrt(1.0 + std::log(131072.0 / 4096.0) / std::log(4096.0)));
}

TEST_F(LongRope, OtherScalingsUnknownKeysWrongLengthsAndGpt2AreRefusedByName) {
  auto refused = [&](const nlohmann::json& patch, const std::vector<std::string>& needles) {
    static int n = 0;
    const std::string path = WriteConfig(absl::StrCat("bad", n++, ".json"), patch);
    absl::Status st = tern::model::LoadHfConfig(path).status();
    if (st.ok()) st = tern::model::ResolveModelDims(*tern::model::LoadHfConfig(path), 0).status();
    ASSERT_FALSE(st.ok()) << patch.dump();
    for (const auto& s : needles)
      EXPECT_NE(st.message().find(s), std::string::npos) << s << " not in: " << st.message();
  };
  for (const char* type : {"linear", "dynamic", "yarn", "llama3"})
    refused({{"rope_scaling", {{"type", type}, {"factor", 2.0}}}},
            {"'rope_scaling'", absl::StrCat("rope_scaling.type '", type, "'")});
  refused({{"rope_scaling", {{"type", nullptr}, {"rope_type", "yarn"}}}},
          {"rope_scaling.type 'yarn'"});
  refused({{"rope_scaling", {{"beta_fast", 32}}}}, {"rope_scaling.beta_fast"});
  refused({{"rope_scaling", {{"short_factor", {1.0, 2.0}}}}},
          {"model.rope_scaling.short_factor: 2 entries, expected head_size / 2 = 4"});
  refused({{"rope_scaling", {{"long_factor", {1.0, 2.0, 3.0, 4.0, 5.0}}}}},
          {"model.rope_scaling.long_factor: 5 entries, expected head_size / 2 = 4"});
  refused({{"rope_scaling", {{"long_factor", {1.0, 0.0, 3.0, 4.0}}}}},
          {"model.rope_scaling.long_factor: every entry must be finite and > 0"});
  refused({{"original_max_position_embeddings", 0}},
          {"model.original_max_position_embeddings: must be > 0"});
  refused({{"original_max_position_embeddings", nullptr}}, {"model.rope_scaling.factor"});
  refused({{"model_type", "gpt2"}, {"hidden_act", nullptr}, {"activation_function", "gelu_new"}},
          {"model.rope_scaling: gpt2"});
  // A job spec's own model section goes through the same checks.
  tern::v1::ModelConfig m;
  m.set_model_type("llama");
  m.set_hidden_size(kC);
  m.set_num_hidden_layers(1);
  m.set_num_attention_heads(kNH);
  m.mutable_rope_scaling()->set_type("linear");
  auto st = tern::model::ResolveModelDims(m, 32).status();
  EXPECT_NE(st.message().find("model.rope_scaling.type: 'linear' is not implemented"),
            std::string::npos)
      << st;
}

// Tern's model over the loaded directory: logits of one forward of `toks`.
std::vector<float> TernLogits(const tern::engine::LoadedModel& m, const std::vector<int>& toks) {
  tern::model::Transformer<float> model(m.dims);
  tern::model::FlatParamSource<float> src(&model.params(), m.params.data(), nullptr);
  std::vector<int32_t> t(toks.begin(), toks.end());
  model.Forward(src, t.data(), nullptr, 1, int(t.size()));
  return std::vector<float>(model.logits(), model.logits() + t.size() * kV);
}

void ExpectNear(const std::vector<float>& got, const std::vector<std::vector<double>>& want,
                const std::string& what) {
  double worst = 0;
  for (size_t t = 0; t < want.size(); ++t)
    for (int v = 0; v < kV; ++v)
      worst = std::max(worst, std::abs(double(got[t * kV + v]) - want[t][v]));
  EXPECT_LT(worst, 1e-4) << what;
}

TEST_F(LongRope, LogitsEqualTheNaiveReferenceWithShortAndLongFactors) {
  auto m = tern::engine::LoadModel(Path("phi3"));
  ASSERT_TRUE(m.ok()) << m.status();
  for (const char* prompt : {kShortPrompt, kLongPrompt}) {
    RefCache cache;
    const auto want = RefCall(*ref_, &cache, Tokens(prompt));
    ExpectNear(TernLogits(*m, Tokens(prompt)), want, prompt);
  }
  // The long factors are really used: the short prompt's prefix inside the long prompt (same
  // positions, same tokens) gets other logits once the whole sequence passes original_max.
  std::string longer = std::string(kShortPrompt) + std::string(20, 'x');
  RefCache a, b;
  const auto s = RefCall(*ref_, &a, Tokens(kShortPrompt));
  const auto l = RefCall(*ref_, &b, Tokens(longer));
  double diff = 0;
  for (int v = 0; v < kV; ++v) diff = std::max(diff, std::abs(s[11][v] - l[11][v]));
  EXPECT_GT(diff, 1e-3);
  ExpectNear(TernLogits(*m, Tokens(longer)), l, "short prompt + 20 tokens");
}

// HF's quirk, replicated: with a KV cache each call picks the table by its own largest position,
// and cached keys keep the rotation they were computed with. A prompt of 12 (short factors)
// decoded one token at a time past position 15 rotates the new tokens with the long factors
// while positions 0..15 stay short-rotated in the cache; so the incremental logits past
// original_max differ from one long forward over the same tokens (which rotates everything with
// the long factors), and equal the reference that decodes the same way.
TEST_F(LongRope, KvCacheSwitchesTablesPerCallLikeHf) {
  auto m = tern::engine::LoadModel(Path("phi3"));
  ASSERT_TRUE(m.ok()) << m.status();
  tern::model::Transformer<float> model(m->dims);
  tern::model::FlatParamSource<float> src(&model.params(), m->params.data(), nullptr);
  auto cache = model.NewKvCache(1, kMaxT);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<int> seq = Tokens(kShortPrompt);
  RefCache ref;
  std::vector<int32_t> t(seq.begin(), seq.end());
  model.ForwardCached(src, t.data(), 1, int(t.size()), &*cache);
  std::vector<float> got(model.logits(), model.logits() + t.size() * kV);
  ExpectNear(got, RefCall(*ref_, &ref, seq), "prefill");
  for (int step = 0; step < 10; ++step) {  // positions 12 .. 21: the switch at 16
    const int tok = 'a' + step;
    seq.push_back(tok);
    int32_t t1 = tok;
    model.ForwardCached(src, &t1, 1, 1, &*cache);
    got.assign(model.logits(), model.logits() + kV);
    const auto want = RefCall(*ref_, &ref, {tok});
    ExpectNear(got, want, absl::StrCat("decode position ", seq.size() - 1));
    if (int(seq.size()) > kOrig) {  // differs from one long forward over the same tokens
      RefCache whole;
      const auto full = RefCall(*ref_, &whole, seq);
      double diff = 0;
      for (int v = 0; v < kV; ++v) diff = std::max(diff, std::abs(full.back()[v] - want[0][v]));
      EXPECT_GT(diff, 1e-3) << "position " << seq.size() - 1;
    }
  }
  EXPECT_EQ(cache->len[0], int(seq.size()));
}

// `tern generate --model-dir` loads the directory and decodes greedily with the KV cache: the
// same tokens as the reference decoding the way transformers' generate() does for phi-3
// (Phi3ForCausalLM.prepare_inputs_for_generation): prefill, one position per call, and the first
// time the context passes original_max (here at 17 tokens, from the 12-token prompt) the cache is
// dropped and the whole context recomputed with the long factors.
TEST_F(LongRope, GenerateFromTheModelDirectoryMatchesTheReference) {
  for (const std::string& prompt : {std::string(kShortPrompt), std::string(kLongPrompt)}) {
    RefCache cache;
    std::vector<int> ctx = Tokens(prompt);
    std::string expect;
    int recomputed = 0;
    for (int i = 0; i < 8; ++i) {
      if (cache.len() > 0 && cache.len() <= kOrig && int(ctx.size()) > kOrig) {
        cache = RefCache();
        ++recomputed;
      }
      const std::vector<int> call(ctx.begin() + cache.len(), ctx.end());
      const int tok = Argmax(RefCall(*ref_, &cache, call).back());
      expect.push_back(char(tok));
      ctx.push_back(tok);
    }
    EXPECT_EQ(recomputed, prompt == kShortPrompt ? 1 : 0);
    Result g = Tern("generate --model-dir " + Path("phi3") + " --prompt '" + prompt +
                    "' --max-new-tokens 8 --temperature 0 --threads 1");
    ASSERT_EQ(g.code, 0) << g.out;
    EXPECT_NE(g.out.find(prompt + expect), std::string::npos) << g.out;
  }
  // Ms-PoE is not implemented over LongRoPE: refused by name.
  Result mp = Tern("generate --model-dir " + Path("phi3") +
                   " --prompt 'ab' --max-new-tokens 2 --ms-poe 1.2:1.8:0");
  EXPECT_EQ(mp.code, 2) << mp.out;
  EXPECT_NE(mp.out.find("--ms-poe 1.2:1.8:0: Ms-PoE is not implemented over LongRoPE"),
            std::string::npos)
      << mp.out;
}

// `tern generate --and-prompt`: a batch as transformers' generate() runs a left-padded batch for
// phi-3. Every forward picks one table by the batch's largest position (its longest row), and the
// first time the padded length passes original_max every row's cache is dropped and recomputed
// with the long factors. So each step's tokens are those of a forward without any cache over each
// row's whole context, with the table its longest row picks: the reference here.
TEST_F(LongRope, GenerateABatchOfPromptsMatchesTheReference) {
  const std::vector<std::vector<std::string>> batches = {
      {kShortPrompt, "Hi"},  // 12 and 2 tokens: both short until the 5th step, then both long
      {"Hi", kLongPrompt}};  // "Hi" takes the long factors from its prefill on
  for (const auto& prompts : batches) {
    std::vector<std::vector<int>> ctx = {Tokens(prompts[0]), Tokens(prompts[1])};
    std::vector<std::string> expect(2);
    double table_matters = 0;  // the short row's logits, batch table vs its own table
    for (int i = 0; i < 8; ++i) {
      const int batch_len = int(std::max(ctx[0].size(), ctx[1].size()));
      for (int r = 0; r < 2; ++r) {
        RefCache none, own;
        const auto want = RefCall(*ref_, &none, ctx[r], batch_len).back();
        const auto alone = RefCall(*ref_, &own, ctx[r]).back();
        for (int v = 0; v < kV; ++v)
          table_matters = std::max(table_matters, std::abs(want[v] - alone[v]));
        const int tok = Argmax(want);
        expect[r].push_back(char(tok));
        ctx[r].push_back(tok);
      }
    }
    EXPECT_GT(table_matters, 1e-3) << prompts[0] << " | " << prompts[1];
    Result g =
        Tern("generate --model-dir " + Path("phi3") + " --prompt '" + prompts[0] +
             "' --and-prompt '" + prompts[1] + "' --max-new-tokens 8 --temperature 0 --threads 1");
    ASSERT_EQ(g.code, 0) << g.out;
    for (int r = 0; r < 2; ++r)
      EXPECT_NE(g.out.find(prompts[r] + expect[r] + "\n"), std::string::npos)
          << "row " << r << ": " << prompts[r] + expect[r] << "\n"
          << g.out;
  }
}

TEST_F(LongRope, SaveModelWritesRopeScalingAndTheRoundTripKeepsIt) {
  auto m = tern::engine::LoadModel(Path("phi3"));
  ASSERT_TRUE(m.ok()) << m.status();
  tern::model::Transformer<float> shape(m->dims);
  ASSERT_TRUE(
      tern::engine::SaveModel(Path("saved"), m->config, m->dims, shape.params(), m->params).ok());
  const auto cfg = nlohmann::json::parse(ReadFile(Path("saved/config.json")));
  EXPECT_EQ(cfg["original_max_position_embeddings"], kOrig);
  EXPECT_EQ(cfg["rope_scaling"]["type"], "longrope");
  EXPECT_EQ(cfg["rope_scaling"]["short_factor"].get<std::vector<double>>(), kShort);
  EXPECT_EQ(cfg["rope_scaling"]["long_factor"].get<std::vector<double>>(), kLong);
  EXPECT_EQ(cfg["architectures"][0], "Phi3ForCausalLM");
  auto again = tern::engine::LoadModel(Path("saved"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->dims.longrope);
  EXPECT_EQ(again->dims.rope_long_factor, kLong);
  EXPECT_EQ(again->dims.rope_original_max, kOrig);
  EXPECT_EQ(again->params, m->params);
  ExpectNear(
      TernLogits(*again, Tokens(kLongPrompt)),
      [&] {
        RefCache c;
        return RefCall(*ref_, &c, Tokens(kLongPrompt));
      }(),
      "exported copy");
}

// A job whose model comes from the LongRoPE config.json trains (32-token sequences: the long
// factors) and `tern ckpt export` writes rope_scaling, original_max_position_embeddings and the
// resolved attention factor though the spec itself names only the config file; the export loads
// back with the same rotation and generates.
TEST_F(LongRope, TrainFromTheConfigFileThenExportKeepsLongRope) {
  Result prep = tern::testing::PrepareCorpus(*dir_);
  ASSERT_EQ(prep.code, 0) << prep.out;
  const nlohmann::json spec = {{"model", {{"config_file", Path("phi3/config.json")}}},
                               {"data", {{"path", Path("corpus")}, {"seq_len", 32}}},
                               {"train_micro_batch_size_per_gpu", 2},
                               {"train_iters", 3},
                               {"optimizer", {{"params", {{"lr", 0.01}}}}}};
  std::ofstream(Path("spec.json")) << spec.dump();
  Result t = Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.dir=" + Path("ck"));
  ASSERT_EQ(t.code, 0) << t.out;
  Result ex = Tern("ckpt export " + Path("ck") + " --out " + Path("ex"));
  ASSERT_EQ(ex.code, 0) << ex.out;
  const auto cfg = nlohmann::json::parse(ReadFile(Path("ex/config.json")));
  EXPECT_EQ(cfg["original_max_position_embeddings"], kOrig);
  EXPECT_EQ(cfg["rope_scaling"]["type"], "longrope");
  EXPECT_EQ(cfg["rope_scaling"]["short_factor"].get<std::vector<double>>(), kShort);
  EXPECT_EQ(cfg["rope_scaling"]["long_factor"].get<std::vector<double>>(), kLong);
  EXPECT_DOUBLE_EQ(cfg["rope_scaling"]["attention_factor"].get<double>(),
                   std::sqrt(1.0 + std::log(4.0) / std::log(16.0)));
  auto back = tern::engine::LoadModel(Path("ex"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->dims.longrope);
  EXPECT_EQ(back->dims.rope_original_max, kOrig);
  Result g = Tern("generate --model-dir " + Path("ex") +
                  " --prompt 'The ' --max-new-tokens 4 --temperature 0 --threads 1");
  EXPECT_EQ(g.code, 0) << g.out;
}

}  // namespace
