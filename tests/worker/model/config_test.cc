#include "worker/model/config.h"

#include <gtest/gtest.h>

namespace tern::model {
namespace {

tern::v1::ModelConfig Llama(int C, int L, int NH) {
  tern::v1::ModelConfig c;
  c.set_model_type("llama");
  c.set_hidden_size(C);
  c.set_num_hidden_layers(L);
  c.set_num_attention_heads(NH);
  return c;
}

TEST(ModelConfig, ParamCountsMatchPyTorchPeer) {
  // The PyTorch peer (torch_train_step.py) counts llama tiny 869,504 params, gpt2 tiny 842,496.
  auto llama = ResolveModelDims(Llama(128, 4, 8), 128);
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->F, 352);
  EXPECT_EQ(EstimateCost(*llama, 128).params, 869504u);
  auto medium = ResolveModelDims(Llama(512, 8, 8), 512);
  ASSERT_TRUE(medium.ok());
  EXPECT_EQ(EstimateCost(*medium, 512).params, 25567744u);
  tern::v1::ModelConfig g;
  g.set_model_type("gpt2");
  g.set_n_embd(128);
  g.set_n_layer(4);
  g.set_n_head(8);
  auto gpt2 = ResolveModelDims(g, 128);
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_TRUE(gpt2->tied);
  EXPECT_EQ(EstimateCost(*gpt2, 128).params, 842496u);
}

TEST(ModelConfig, Phi3MiniIs3Point8B) {
  tern::v1::ModelConfig c;
  c.set_model_type("phi3");
  c.set_vocab_size(32064);
  c.set_hidden_size(3072);
  c.set_intermediate_size(8192);
  c.set_num_hidden_layers(32);
  c.set_num_attention_heads(32);
  c.set_num_key_value_heads(32);
  c.set_max_position_embeddings(4096);
  auto d = ResolveModelDims(c, 4096);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(EstimateCost(*d, 4096).params, 3821079552u);  // HF reports 3,821,079,552
}

TEST(ModelConfig, ReportsEveryBadField) {
  auto c = Llama(100, 0, 3);
  c.set_num_key_value_heads(2);
  c.set_model_type("llama");
  auto d = ResolveModelDims(c, 16);
  ASSERT_FALSE(d.ok());
  const std::string msg(d.status().message());
  EXPECT_NE(msg.find("num_hidden_layers"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not divisible by num_attention_heads 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("num_key_value_heads"), std::string::npos) << msg;
  c.set_model_type("bert");
  EXPECT_NE(std::string(ResolveModelDims(c, 16).status().message()).find("model_type"),
            std::string::npos);
}

}  // namespace
}  // namespace tern::model
