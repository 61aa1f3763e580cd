#include "daemon/spec_validation.h"

#include <gtest/gtest.h>

namespace tern::daemon {
namespace {

tern::v1::JobSpec Good() {
  tern::v1::JobSpec s;
  s.mutable_model()->set_model_type("llama");
  s.mutable_model()->set_hidden_size(64);
  s.mutable_model()->set_num_hidden_layers(2);
  s.mutable_model()->set_num_attention_heads(4);
  s.set_train_iters(10);
  return s;
}

TEST(ValidateJobSpec, AcceptsAMinimalSpecAndGpt2Aliases) {
  EXPECT_TRUE(ValidateJobSpec(Good()).ok());
  tern::v1::JobSpec g;
  g.mutable_model()->set_model_type("gpt2");
  g.mutable_model()->set_n_embd(64);
  g.mutable_model()->set_n_layer(2);
  g.mutable_model()->set_n_head(8);
  g.set_train_iters(1);
  EXPECT_TRUE(ValidateJobSpec(g).ok()) << ValidateJobSpec(g);
}

TEST(ValidateJobSpec, ListsEveryBadFieldAtOnce) {
  tern::v1::JobSpec s = Good();
  s.mutable_model()->clear_num_hidden_layers();
  s.mutable_model()->set_num_attention_heads(5);
  s.set_train_iters(0);
  s.mutable_resources()->set_ranks_per_node(0);
  s.mutable_zero_optimization()->set_stage(4);
  absl::Status st = ValidateJobSpec(s);
  ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  const std::string m(st.message());
  for (const char* f : {"model.num_hidden_layers: missing", "5 heads do not divide hidden_size 64",
                        "train_iters: must be > 0", "resources.ranks_per_node",
                        "zero_optimization.stage: unknown stage 4"}) {
    EXPECT_NE(m.find(f), std::string::npos) << f << " not in " << m;
  }
}

TEST(ValidateJobSpec, MissingTrainItersAndUnknownModelType) {
  tern::v1::JobSpec s = Good();
  s.clear_train_iters();
  s.mutable_model()->set_model_type("bert");
  const std::string m(ValidateJobSpec(s).message());
  EXPECT_NE(m.find("train_iters: missing"), std::string::npos) << m;
  EXPECT_NE(m.find("model.model_type"), std::string::npos) << m;
}

}  // namespace
}  // namespace tern::daemon
