#include "client/cluster/spec_loader.h"

#include <gtest/gtest.h>

#include "client/cluster/format.h"

namespace tern::cluster {
namespace {

constexpr char kSpec[] = R"({"name": "s", "model": {"model_type": "gpt2", "n_embd": 64},
                             "train_iters": 10, "resources": {"nodes": 2}})";

TEST(ParseJobSpec, ParsesAndAppliesOverrides) {
  auto spec = ParseJobSpec(kSpec, "s.json",
                           {"train_iters=25", "resources.ranks_per_node=4", "name=renamed",
                            "optimizer.params.betas=[0.9,0.95]", "data.path=/data/tok",
                            "model.tie_word_embeddings=true"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->train_iters(), 25);
  EXPECT_EQ(spec->resources().nodes(), 2);
  EXPECT_EQ(spec->resources().ranks_per_node(), 4);
  EXPECT_EQ(spec->name(), "renamed");
  ASSERT_EQ(spec->optimizer().params().betas_size(), 2);
  EXPECT_FLOAT_EQ(spec->optimizer().params().betas(1), 0.95f);
  EXPECT_EQ(spec->data().path(), "/data/tok");
  EXPECT_TRUE(spec->model().tie_word_embeddings());
  EXPECT_EQ(spec->model().n_embd(), 64);
}

TEST(ParseJobSpec, UnknownFieldsAndBadJsonAreErrorsNamingThem) {
  auto unknown = ParseJobSpec(R"({"model": {"hiden_size": 3}})", "x.json", {});
  ASSERT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(unknown.status().message()).find("hiden_size"), std::string::npos);
  EXPECT_NE(std::string(unknown.status().message()).find("x.json"), std::string::npos);
  auto bad = ParseJobSpec("{\"name\": ", "y.json", {});
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("y.json"), std::string::npos);
  auto set_unknown = ParseJobSpec(kSpec, "s.json", {"resources.gpus=2"});
  EXPECT_NE(std::string(set_unknown.status().message()).find("gpus"), std::string::npos);
  auto malformed = ParseJobSpec(kSpec, "s.json", {"train_iters"});
  EXPECT_NE(std::string(malformed.status().message()).find("key.path=value"), std::string::npos);
  auto not_object = ParseJobSpec(kSpec, "s.json", {"name.first=1"});
  EXPECT_FALSE(not_object.ok());
  EXPECT_EQ(LoadJobSpec("/no/such/spec.json", {}).status().code(), absl::StatusCode::kNotFound);
}

TEST(Format, ProgressLineAndStateNames) {
  tern::v1::MetricPoint p;
  p.set_step(25);
  (*p.mutable_values())["loss"] = 3.14159;
  (*p.mutable_values())["tokens_per_s"] = 12345;
  EXPECT_EQ(ProgressLine(p, 100, 200.0), "step 25/100  loss 3.1416  tok/s 12.3k  ETA 15s");
  EXPECT_EQ(ProgressLine(p, 0, 0), "step 25  loss 3.1416  tok/s 12.3k");
  EXPECT_EQ(StateName(tern::v1::JOB_STATE_RESHARDING), "RESHARDING");
  EXPECT_EQ(FormatDuration(3723000), "1h02m");
  EXPECT_EQ(FormatDuration(65000), "1m05s");
  tern::v1::Job job;
  job.set_id("j-000007");
  job.set_state(tern::v1::JOB_STATE_CANCELLED);
  auto j = JobToJson(job);
  EXPECT_EQ(j["id"], "j-000007");
  EXPECT_EQ(j["state"], "CANCELLED");
}

}  // namespace
}  // namespace tern::cluster
