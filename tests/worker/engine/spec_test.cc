#include "worker/engine/spec.h"

#include <gtest/gtest.h>

namespace tern::engine {
namespace {

const char* kSpec = R"({
  "model": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4},
  "data": {"path": "/nonexistent/corpus", "seq_len": 32},
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 2,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.002, "betas": [0.9, 0.95]}},
  "scheduler": {"type": "WarmupCosineLR", "params": {"warmup_num_steps": 10}},
  "zero_optimization": {"stage": 2},
  "train_iters": 100
})";

TEST(JobSpec, ParsesDeepSpeedKeysAndResolvesDefaults) {
  auto spec = ParseJobSpec(kSpec, {}, "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto cfg = ResolveJob(*spec, 2, /*check_files=*/false);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->global_batch, 16);
  EXPECT_EQ(cfg->zero_stage, 2);
  EXPECT_FLOAT_EQ(cfg->adamw.beta2, 0.95f);
  EXPECT_EQ(cfg->steps_per_print, 10);
  EXPECT_EQ(cfg->dims.HS, 16);
}

TEST(JobSpec, SetOverridesAnyField) {
  auto spec = ParseJobSpec(
      kSpec, {"train_iters=7", "optimizer.params.lr=0.5", "name=my run", "resources.nodes=2"},
      "spec.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->train_iters(), 7);
  EXPECT_FLOAT_EQ(spec->optimizer().params().lr(), 0.5f);
  EXPECT_EQ(spec->name(), "my run");
  EXPECT_EQ(spec->resources().nodes(), 2);
}

TEST(JobSpec, MalformedJsonNamesFileAndPosition) {
  auto spec = ParseJobSpec("{\"train_iters\": 5,", {}, "bad.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(spec.status()));
  EXPECT_NE(std::string(spec.status().message()).find("bad.json: malformed JSON"),
            std::string::npos);
}

TEST(JobSpec, UnknownFieldsNamedWithPath) {
  auto spec = ParseJobSpec(R"({"zero_optimization": {"stagee": 3}, "bogus": 1})", {}, "s.json");
  ASSERT_FALSE(spec.ok());
  const std::string msg(spec.status().message());
  EXPECT_NE(msg.find("unknown field 'zero_optimization.stagee'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field 'bogus'"), std::string::npos) << msg;
}

TEST(JobSpec, ValidationListsEveryOffendingField) {
  auto spec = ParseJobSpec(kSpec,
                           {"model.num_attention_heads=5", "train_iters=0",
                            "zero_optimization.stage=4", "train_batch_size=100"},
                           "spec.json");
  ASSERT_TRUE(spec.ok());
  auto cfg = ResolveJob(*spec, 2, /*check_files=*/true);
  ASSERT_FALSE(cfg.ok());
  const std::string msg(cfg.status().message());
  for (const char* field :
       {"model.hidden_size: 64 is not divisible by num_attention_heads 5", "train_iters",
        "zero_optimization.stage", "train_batch_size", "/nonexistent/corpus.bin does not exist"})
    EXPECT_NE(msg.find(field), std::string::npos) << field << " missing in: " << msg;
}

}  // namespace
}  // namespace tern::engine
