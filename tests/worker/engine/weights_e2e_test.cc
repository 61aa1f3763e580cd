// Weights in and out of Tern with the real binary: `tern ckpt export` round-trips the fp32
// master bitwise (single file and sharded BF16), `tern generate --model-dir` takes the
// checkpoint or the export alike, a sharded BF16 copy written by an independent writer (this
// test's own code) generates the same greedy tokens as its F32 original, and
// checkpoint.init_from starts training from exported weights (strictly matched).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/worker/engine/tern_cli.h"
#include "worker/engine/export.h"

namespace {

namespace fs = std::filesystem;
using tern::testing::ReadFile;
using tern::testing::Result;
using tern::testing::Tern;

class WeightsE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / absl::StrCat("tern-weights-e2e-", getpid()));
    fs::create_directories(*dir_);
    Result r = tern::testing::PrepareCorpus(*dir_);
    ASSERT_EQ(r.code, 0) << r.out;
    tern::testing::WriteTinyLlamaSpec(*dir_, {{"train_iters", 20}, {"eval_iters", 1}});
    Result t =
        Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.dir=" + Path("ck"));
    ASSERT_EQ(t.code, 0) << t.out;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }
  static std::string Generate(const std::string& model_dir) {
    Result g = Tern("generate --model-dir " + model_dir +
                    " --prompt 'The ' --max-new-tokens 24 --temperature 0 --threads 1");
    EXPECT_EQ(g.code, 0) << g.out;
    return g.out;
  }
  static fs::path* dir_;
};
fs::path* WeightsE2E::dir_ = nullptr;

// This test's own BF16 writer: reads the F32 file with its own parser and writes two shards
// and an index, rounding to nearest even.
void WriteIndependentBf16(const std::string& f32_file, const std::string& out) {
  const std::string bytes = ReadFile(f32_file);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  std::vector<std::string> names;
  for (const auto& [name, t] : header.items())
    if (name != "__metadata__") names.push_back(name);
  fs::create_directories(out);
  nlohmann::json weight_map;
  for (int shard = 0; shard < 2; ++shard) {
    const std::string file = absl::StrCat("part-", shard, ".safetensors");
    nlohmann::json h;
    std::string data;
    for (size_t i = shard; i < names.size(); i += 2) {  // every other tensor
      const auto& t = header[names[i]];
      const uint64_t b = t["data_offsets"][0], e = t["data_offsets"][1];
      const size_t start = data.size();
      for (uint64_t p = b; p < e; p += 4) {
        uint32_t x;
        std::memcpy(&x, bytes.data() + 8 + n + p, 4);
        const uint16_t bf = static_cast<uint16_t>((x + 0x7fff + ((x >> 16) & 1)) >> 16);
        data.append(reinterpret_cast<const char*>(&bf), 2);
      }
      h[names[i]] = {
          {"dtype", "BF16"}, {"shape", t["shape"]}, {"data_offsets", {start, data.size()}}};
      weight_map[names[i]] = file;
    }
    std::string hs = h.dump();
    while (hs.size() % 8 != 0) hs += ' ';
    const uint64_t len = hs.size();
    std::ofstream f(out + "/" + file, std::ios::binary);
    f.write(reinterpret_cast<const char*>(&len), 8);
    f << hs << data;
  }
  std::ofstream(out + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
  fs::copy_file(fs::path(f32_file).parent_path() / "config.json", out + "/config.json");
}

TEST_F(WeightsE2E, ExportRoundTripsBitwiseAndAnIndependentBf16CopyGeneratesTheSameTokens) {
  Result ex = Tern("ckpt export " + Path("ck") + " --out " + Path("ex"));
  ASSERT_EQ(ex.code, 0) << ex.out;
  const auto config = nlohmann::json::parse(ReadFile(Path("ex/config.json")));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["hidden_size"], 32);
  auto from_ckpt = tern::engine::LoadModelFromCheckpoint(Path("ck"));
  ASSERT_TRUE(from_ckpt.ok()) << from_ckpt.status();
  auto exported = tern::engine::LoadModel(Path("ex"));
  ASSERT_TRUE(exported.ok()) << exported.status();
  ASSERT_EQ(exported->params.size(), from_ckpt->params.size());
  EXPECT_EQ(
      std::memcmp(exported->params.data(), from_ckpt->params.data(), from_ckpt->params.size() * 4),
      0);
  // Never over an existing export.
  Result again = Tern("ckpt export " + Path("ck") + " --out " + Path("ex"));
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_NE(again.out.find("already holds"), std::string::npos) << again.out;

  // Sharded BF16 by `tern ckpt export`.
  Result bf = Tern("ckpt export " + Path("ck") + " --out " + Path("exbf") +
                   " --dtype bf16 --max-shard-bytes 20000");
  ASSERT_EQ(bf.code, 0) << bf.out;
  EXPECT_TRUE(fs::exists(Path("exbf/model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(Path("exbf/model.safetensors")));
  EXPECT_EQ(nlohmann::json::parse(ReadFile(Path("exbf/config.json")))["torch_dtype"], "bfloat16");
  auto bf_loaded = tern::engine::LoadModel(Path("exbf"));
  ASSERT_TRUE(bf_loaded.ok()) << bf_loaded.status();
  for (size_t i = 0; i < from_ckpt->params.size(); ++i) {
    ASSERT_EQ(bf_loaded->params[i],
              tern::engine::Bf16ToFloat(tern::engine::FloatToBf16(from_ckpt->params[i])));
  }

  const std::string f32_tokens = Generate(Path("ex"));
  EXPECT_EQ(Generate(Path("ck")), f32_tokens);  // a checkpoint root works as --model-dir
  EXPECT_EQ(Generate(Path("ck/step-000020")), f32_tokens);
  WriteIndependentBf16(Path("ex/model.safetensors"), Path("indep"));
  EXPECT_EQ(Generate(Path("indep")), f32_tokens);
  EXPECT_EQ(Generate(Path("exbf")), f32_tokens);
}

TEST_F(WeightsE2E, InitFromStartsTrainingFromExportedWeightsAndRefusesAnotherModel) {
  if (!fs::exists(Path("ex2"))) {
    ASSERT_EQ(Tern("ckpt export " + Path("ck") + " --out " + Path("ex2")).code, 0);
  }
  // lr 0: the one step leaves the weights as loaded, so --save-final shows what init_from gave.
  Result r =
      Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.init_from=" + Path("ex2") +
           " --set optimizer.params.lr=0 --set train_iters=1 --save-final " + Path("fin"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto a = tern::engine::LoadModel(Path("ex2"));
  auto b = tern::engine::LoadModel(Path("fin"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(std::memcmp(a->params.data(), b->params.data(), a->params.size() * 4), 0);
  // A checkpoint directory works as init_from too.
  Result c =
      Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.init_from=" + Path("ck") +
           " --set optimizer.params.lr=0 --set train_iters=1 --save-final " + Path("fin2"));
  ASSERT_EQ(c.code, 0) << c.out;
  auto d = tern::engine::LoadModel(Path("fin2"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(std::memcmp(a->params.data(), d->params.data(), a->params.size() * 4), 0);
  // Another model: refused before training, every difference listed.
  Result bad =
      Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.init_from=" + Path("ex2") +
           " --set model.num_hidden_layers=3 --set train_iters=1");
  EXPECT_NE(bad.code, 0) << bad.out;
  EXPECT_NE(bad.out.find("missing (9)"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << bad.out;
  Result none =
      Tern("train " + Path("spec.json") + " --set checkpoint.init_from=" + Path("nowhere"));
  EXPECT_EQ(none.code, 2) << none.out;
  EXPECT_NE(none.out.find("checkpoint.init_from"), std::string::npos) << none.out;
}

}  // namespace

// `tern ckpt export --quantize`: each format writes a directory that `tern generate` and
// `tern eval` load, whose perplexity stays near the fp32 export's; bad requests are refused.
TEST_F(WeightsE2E, QuantizedExportsGenerateAndEvaluate) {
  auto nats = [](const std::string& model_dir) {
    Result ev = Tern("eval --model-dir " + model_dir + " --data " + Path("corpus_val") +
                     " --seq-len 32 --max-windows 8 --json --threads 1");
    EXPECT_EQ(ev.code, 0) << ev.out;
    const auto j = nlohmann::json::parse(ev.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << ev.out;
    return std::make_pair(j.value("nats_per_token", 0.0), j.value("weights", std::string()));
  };
  Result f32 = Tern("ckpt export " + Path("ck") + " --out " + Path("qf32"));
  ASSERT_EQ(f32.code, 0) << f32.out;
  const auto [base, base_weights] = nats(Path("qf32"));
  EXPECT_EQ(base_weights, "fp32");
  for (const std::string f : {"fp6", "int8", "int4"}) {
    Result q = Tern("ckpt export " + Path("ck") + " --out " + Path("q" + f) + " --quantize " + f);
    ASSERT_EQ(q.code, 0) << q.out;
    EXPECT_NE(q.out.find("bits per weight"), std::string::npos) << q.out;
    const auto [n, weights] = nats(Path("q" + f));
    EXPECT_EQ(weights, f);
    EXPECT_GT(n, 0.0);
    EXPECT_LT(std::fabs(n - base) / base, f == "int4" ? 0.1 : 0.02)
        << f << " " << n << " vs " << base;
    const std::string text = Generate(Path("q" + f));
    EXPECT_EQ(text.rfind("The ", 0), 0u) << text;
  }
  // From an fp32 model directory too; int8 of it equals int8 of the checkpoint.
  Result qd = Tern("ckpt export " + Path("qf32") + " --out " + Path("qdir") + " --quantize int8");
  ASSERT_EQ(qd.code, 0) << qd.out;
  EXPECT_EQ(ReadFile(Path("qdir/model.safetensors")), ReadFile(Path("qint8/model.safetensors")));
  Result bad = Tern("ckpt export " + Path("ck") + " --out " + Path("qbad") + " --quantize fp8");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.out.find("--quantize fp8: not one of fp6, int8, int4"), std::string::npos)
      << bad.out;
  Result dt =
      Tern("ckpt export " + Path("ck") + " --out " + Path("qbad") + " --quantize fp6 --dtype bf16");
  EXPECT_EQ(dt.code, 2);
  EXPECT_NE(dt.out.find("--dtype bf16 with --quantize"), std::string::npos) << dt.out;
  Result twice =
      Tern("ckpt export " + Path("qfp6") + " --out " + Path("qbad") + " --quantize int4");
  EXPECT_EQ(twice.code, 2);
  EXPECT_NE(twice.out.find("quantized already"), std::string::npos) << twice.out;
  Result init =
      Tern("train " + Path("spec.json") + " --threads 1 --set checkpoint.dir=" + Path("ck-q") +
           " --set checkpoint.init_from=" + Path("qfp6"));
  EXPECT_NE(init.code, 0);
  EXPECT_NE(init.out.find("holds quantized weights"), std::string::npos) << init.out;
}
