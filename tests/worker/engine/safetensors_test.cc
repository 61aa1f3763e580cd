// safetensors as the format specifies it: the exact bytes written (8-byte little-endian header
// length, JSON header with dtype / shape / data_offsets, data 8-byte aligned and without
// holes), bitwise F32 round trips single and sharded, BF16/F16 rounding, and strict reads.
#include "worker/engine/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tern::engine {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  SafetensorsTest() {
    dir_ = fs::temp_directory_path() / absl::StrCat("tern-st-", getpid(), "-", counter_++);
    fs::create_directories(dir_);
    table_.Add("model.embed_tokens.weight", {7, 5}, true, 0);
    table_.Add("model.norm.weight", {5}, false, 1);
    table_.Add("lm_head.weight", {3, 5}, true, 1);
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0, 1);
    params_.resize(table_.total());
    for (auto& x : params_) x = n(rng);
  }
  ~SafetensorsTest() override { fs::remove_all(dir_); }
  std::string Dir(const std::string& name) { return (dir_ / name).string(); }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  static int counter_;
  fs::path dir_;
  ParamTable table_;
  std::vector<float> params_;
};
int SafetensorsTest::counter_ = 0;

TEST_F(SafetensorsTest, FileFollowsTheFormatExactlyAndRoundTripsBitwise) {
  ASSERT_TRUE(WriteSafetensors(Dir("m"), table_, params_.data()).ok());
  const std::string bytes = Read(Dir("m/model.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<uint8_t>(bytes[i]);  // little-endian
  EXPECT_EQ((8 + n) % 8, 0u);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  const uint64_t data = 8 + n;
  EXPECT_EQ(bytes.size() - data, table_.total() * 4);
  uint64_t expect_begin = 0;  // no holes: tensors back to back in table order
  for (const auto& e : table_.entries()) {
    const auto& t = header.at(e.name);
    EXPECT_EQ(t["dtype"], "F32");
    EXPECT_EQ(t["shape"].get<std::vector<int64_t>>(), e.shape);
    const auto offs = t["data_offsets"].get<std::vector<uint64_t>>();
    EXPECT_EQ(offs[0], expect_begin);
    EXPECT_EQ(offs[1] - offs[0], e.numel * 4);
    EXPECT_EQ(std::memcmp(bytes.data() + data + offs[0], params_.data() + e.offset, e.numel * 4),
              0);
    expect_begin = offs[1];
  }
  EXPECT_TRUE(header.contains("__metadata__"));
  auto back = ReadWeights(Dir("m"), table_);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(std::memcmp(back->data(), params_.data(), params_.size() * 4), 0);
}

TEST_F(SafetensorsTest, ShardedWithAnIndexAndHalfPrecisionRoundToNearestEven) {
  SafetensorsWriteOptions o;
  o.max_shard_bytes = 70;  // 140, 20 and 60 bytes: three files
  ASSERT_TRUE(WriteSafetensors(Dir("s"), table_, params_.data(), o).ok());
  EXPECT_FALSE(fs::exists(Dir("s/model.safetensors")));
  EXPECT_TRUE(fs::exists(Dir("s/model-00003-of-00003.safetensors")));
  const auto index = nlohmann::json::parse(Read(Dir("s/model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], table_.total() * 4);
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], "model-00003-of-00003.safetensors");
  auto back = ReadWeights(Dir("s"), table_);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(std::memcmp(back->data(), params_.data(), params_.size() * 4), 0);

  for (const char* dtype : {"bf16", "f16"}) {
    o.dtype = dtype;
    ASSERT_TRUE(WriteSafetensors(Dir(dtype), table_, params_.data(), o).ok());
    auto half = ReadWeights(Dir(dtype), table_);
    ASSERT_TRUE(half.ok()) << half.status();
    for (size_t i = 0; i < params_.size(); ++i) {
      const float want = std::string(dtype) == "bf16" ? Bf16ToFloat(FloatToBf16(params_[i]))
                                                      : F16ToFloat(FloatToF16(params_[i]));
      ASSERT_EQ((*half)[i], want) << dtype << " " << i;
      ASSERT_NEAR((*half)[i], params_[i], std::abs(params_[i]) * 0.01 + 1e-4) << dtype;
    }
  }
  // Known values: ties go to even, overflow to infinity, subnormals survive.
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(Bf16ToFloat(0x3f80) + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBf16(Bf16ToFloat(0x3f81) + std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(1e6f), 0x7c00);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(F16ToFloat(FloatToF16(-2.5f)), -2.5f);
}

TEST_F(SafetensorsTest, MismatchListsEveryMissingExtraAndMisshapedTensorBeforeReading) {
  ASSERT_TRUE(WriteSafetensors(Dir("m"), table_, params_.data()).ok());
  ParamTable other;
  other.Add("model.embed_tokens.weight", {7, 6}, true, 0);  // mis-shaped
  other.Add("model.norm.weight", {5}, false, 1);
  other.Add("model.layers.0.mlp.up_proj.weight", {2, 2}, true, 1);    // missing
  other.Add("model.layers.0.mlp.down_proj.weight", {2, 2}, true, 1);  // missing
  auto r = ReadWeights(Dir("m"), other);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("missing (2): model.layers.0.mlp.up_proj.weight, "
                     "model.layers.0.mlp.down_proj.weight"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("extra (1): lm_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mis-shaped (1): model.embed_tokens.weight [saved 7x5, model 7x6]"),
            std::string::npos)
      << msg;
  // A file that is not safetensors, and an unsupported dtype, name the file.
  std::ofstream(Dir("m/model.safetensors"), std::ios::trunc) << "garbage!garbage!";
  auto g = ReadWeights(Dir("m"), table_);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kDataLoss) << g.status();
  EXPECT_NE(std::string(g.status().message()).find("model.safetensors"), std::string::npos);
  EXPECT_EQ(ReadWeights(Dir("none"), table_).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern::engine
