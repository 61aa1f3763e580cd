// Quantized model directories: SaveQuantizedModel writes what the header documents (config.json's
// quantization_config, each matrix's tensors with their dtypes and shapes, the rest in F32),
// LoadModel reads back the same bytes and the same logits (also sharded), and bad directories
// are refused by name: a missing or mis-shaped tensor, an unknown format or key, quantized
// weights where training needs fp32 ones.
#include "worker/engine/quantized_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "worker/engine/safetensors.h"
#include "worker/model/transformer.h"

namespace tern::engine {
namespace {

namespace fs = std::filesystem;
namespace k = tern::kernels;

class QuantizedModelTest : public ::testing::Test {
 protected:
  QuantizedModelTest() {
    dir_ = fs::temp_directory_path() / absl::StrCat("tern-qm-", getpid(), "-", counter_++);
    fs::create_directories(dir_);
  }
  ~QuantizedModelTest() override { fs::remove_all(dir_); }
  std::string Dir(const std::string& name) { return (dir_ / name).string(); }

  static tern::v1::ModelConfig Config(const std::string& type, bool tied) {
    tern::v1::ModelConfig m;
    m.set_model_type(type);
    m.set_vocab_size(80);
    m.set_hidden_size(128);
    m.set_num_hidden_layers(2);
    m.set_num_attention_heads(4);
    if (type != "gpt2") m.set_num_key_value_heads(2);
    m.set_intermediate_size(200);
    m.set_max_position_embeddings(16);
    m.set_tie_word_embeddings(tied);
    return m;
  }
  static nlohmann::json ReadJson(const std::string& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  }
  static void WriteJson(const std::string& path, const nlohmann::json& j) {
    std::ofstream(path) << j.dump(2);
  }

  static int counter_;
  fs::path dir_;
};
int QuantizedModelTest::counter_ = 0;

TEST_F(QuantizedModelTest, RoundTripsBytesAndLogits) {
  k::SetNumThreads(1);
  for (const auto& [type, tied] : {std::pair<std::string, bool>{"llama", false}, {"gpt2", true}}) {
    for (k::WeightFormat f :
         {k::WeightFormat::kFp6, k::WeightFormat::kInt8, k::WeightFormat::kInt4}) {
      const std::string what = absl::StrCat(type, " ", k::WeightFormatName(f));
      const auto config = Config(type, tied);
      const model::ModelDims dims = *model::ResolveModelDims(config, 16);
      model::Transformer<float> m(dims);
      std::vector<float> params(m.params().total());
      m.InitParams(params.data(), 3);
      const std::string out = Dir(absl::StrCat(type, "-", k::WeightFormatName(f)));
      SafetensorsWriteOptions wo;
      wo.max_shard_bytes = 40000;  // several files
      auto bytes = SaveQuantizedModel(out, config, dims, params, f, wo);
      ASSERT_TRUE(bytes.ok()) << what << ": " << bytes.status();
      const nlohmann::json cfg = ReadJson(out + "/config.json");
      EXPECT_EQ(cfg["quantization_config"]["quant_method"], "tern") << what;
      EXPECT_EQ(cfg["quantization_config"]["format"], k::WeightFormatName(f)) << what;
      EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json")) << what;
      // The tensors: norms in F32, the matrices as their format's planes.
      auto tensors = ListSafetensors(out);
      ASSERT_TRUE(tensors.ok()) << tensors.status();
      std::map<std::string, SafeTensor> by;
      for (const auto& t : *tensors) by[t.name] = t;
      const std::string qname =
          type == "gpt2" ? "transformer.h.1.mlp.c_fc.weight" : "model.layers.1.mlp.up_proj.weight";
      const std::string plane = f == k::WeightFormat::kFp6    ? ".fp6_hi"
                                : f == k::WeightFormat::kInt8 ? ".int8"
                                                              : ".int4";
      ASSERT_TRUE(by.count(qname + plane)) << what;
      EXPECT_EQ(by[qname + plane].dtype, f == k::WeightFormat::kInt8 ? "I8" : "U8");
      // 200 output channels by 128 inputs: 48 bytes per 64 columns for fp6 (two planes).
      const int64_t row_bytes = f == k::WeightFormat::kFp6    ? 64
                                : f == k::WeightFormat::kInt8 ? 128
                                                              : 64;
      EXPECT_EQ(by[qname + plane].shape, (std::vector<int64_t>{200, row_bytes})) << what;
      if (f == k::WeightFormat::kFp6) {
        EXPECT_EQ(by[qname + ".fp6_lo"].shape, (std::vector<int64_t>{200, 32}));
      }
      EXPECT_EQ(by.count(qname), 0u) << what;
      EXPECT_EQ(by.count("lm_head.weight.scale"), 1u) << what;  // tied or not
      const std::string norm = type == "gpt2" ? "transformer.ln_f.weight" : "model.norm.weight";
      EXPECT_EQ(by[norm].dtype, "F32");

      auto loaded = LoadModel(out);
      ASSERT_TRUE(loaded.ok()) << what << ": " << loaded.status();
      ASSERT_NE(loaded->quantized, nullptr);
      EXPECT_TRUE(loaded->params.empty());
      auto want = m.Quantize(params.data(), f);
      ASSERT_TRUE(want.ok());
      EXPECT_EQ(loaded->quantized->bytes(), want->bytes());
      EXPECT_EQ(*bytes, want->bytes());
      for (const auto& w : m.Linears()) {
        const auto& a = model::SlotOf(*loaded->quantized, w);
        const auto& b = model::SlotOf(*want, w);
        ASSERT_EQ(a.hi.size(), b.hi.size()) << what;
        EXPECT_EQ(std::memcmp(a.hi.data(), b.hi.data(), a.hi.size()), 0) << what;
        EXPECT_EQ(a.lo.size() == 0 || std::memcmp(a.lo.data(), b.lo.data(), a.lo.size()) == 0,
                  true);
        EXPECT_EQ(a.scales, b.scales) << what;
      }
      // Same logits as the in-memory quantization.
      model::Transformer<float> qa(dims), qb(dims);
      ASSERT_TRUE(qa.set_quantized(loaded->quantized.get()).ok());
      ASSERT_TRUE(qb.set_quantized(&*want).ok());
      model::FlatParamSource<float> sa(&qa.params(), loaded->weights(), nullptr),
          sb(&qb.params(), params.data(), nullptr);
      std::vector<int32_t> tokens = {1, 5, 9, 2, 7, 3};
      qa.Forward(sa, tokens.data(), nullptr, 1, 6);
      qb.Forward(sb, tokens.data(), nullptr, 1, 6);
      for (int i = 0; i < 6 * dims.V; ++i) ASSERT_EQ(qa.logits()[i], qb.logits()[i]) << what;
    }
  }
}

TEST_F(QuantizedModelTest, BadDirectoriesAreRefusedByName) {
  const auto config = Config("llama", false);
  const model::ModelDims dims = *model::ResolveModelDims(config, 16);
  model::Transformer<float> m(dims);
  std::vector<float> params(m.params().total());
  m.InitParams(params.data(), 3);
  const std::string out = Dir("q");
  ASSERT_TRUE(SaveQuantizedModel(out, config, dims, params, k::WeightFormat::kInt4).ok());
  const nlohmann::json good = ReadJson(out + "/config.json");

  auto expect_error = [&](const nlohmann::json& cfg, const std::string& needle) {
    WriteJson(out + "/config.json", cfg);
    auto l = LoadModel(out);
    ASSERT_FALSE(l.ok()) << needle;
    EXPECT_NE(l.status().message().find(needle), std::string::npos) << l.status();
  };
  nlohmann::json c = good;
  c["quantization_config"]["format"] = "fp8";
  expect_error(c, "format must be one of fp6, int8, int4");
  c = good;
  c["quantization_config"]["quant_method"] = "gptq";
  expect_error(c, "quant_method");
  c = good;
  c["quantization_config"]["group_size"] = 64;
  expect_error(c, "group_size must be 128");
  c = good;
  c["quantization_config"]["desc_act"] = true;
  expect_error(c, "'desc_act' is not a key Tern knows");
  // The config says fp6 but the tensors are int4: every fp6 tensor is missing.
  c = good;
  c["quantization_config"]["format"] = "fp6";
  c["quantization_config"]["group_size"] = -1;
  expect_error(c, "missing: lm_head.weight.fp6_hi, lm_head.weight.fp6_lo");
  // A model of other dimensions than the tensors.
  c = good;
  c["intermediate_size"] = 256;
  expect_error(
      c, "model.layers.0.mlp.gate_proj.weight.int4 is U8 [200, 64], the model needs U8 [256, 64]");
  WriteJson(out + "/config.json", good);
  ASSERT_TRUE(LoadModel(out).ok());

  // Training reads fp32 weights only: init_from and the HF config reader say so.
  auto init = LoadInitWeights(out, m.params());
  ASSERT_FALSE(init.ok());
  EXPECT_NE(init.status().message().find("holds quantized weights"), std::string::npos)
      << init.status();
  auto cfg = model::LoadHfConfig(out + "/config.json");
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.status().message().find("quantization_config"), std::string::npos) << cfg.status();
}

}  // namespace
}  // namespace tern::engine
