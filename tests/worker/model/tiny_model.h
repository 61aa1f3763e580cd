// The tiny models the model tests build: an architecture case (named for the test's parameter)
// and a 2-layer configuration of the given sizes.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "tern/v1/job.pb.h"
#include "worker/model/config.h"

namespace tern::model::testing {

struct ModelCase {
  std::string name, type;  // type: gpt2, llama or phi3
  int NKV;                 // key/value heads (not gpt2)
  bool tied;
  int longrope_original_max = 0;  // phi-3's LongRoPE from this length on; 0 = plain RoPE
};

struct TinySizes {
  int vocab, hidden, heads, ffn, max_T;
  float initializer_range = 0.0f;  // 0: the architecture's default
};

// Two layers of `s` for `c` (LongRoPE not set: a test that wants it adds its factors).
inline tern::v1::ModelConfig TinyConfig(const ModelCase& c, const TinySizes& s) {
  tern::v1::ModelConfig m;
  m.set_model_type(c.type);
  m.set_vocab_size(s.vocab);
  m.set_hidden_size(s.hidden);
  m.set_num_hidden_layers(2);
  m.set_num_attention_heads(s.heads);
  if (c.type != "gpt2") m.set_num_key_value_heads(c.NKV);
  m.set_intermediate_size(s.ffn);
  m.set_max_position_embeddings(s.max_T);
  m.set_tie_word_embeddings(c.tied);
  if (s.initializer_range > 0) m.set_initializer_range(s.initializer_range);
  return m;
}

inline ModelDims ResolvedDims(const tern::v1::ModelConfig& m) {
  auto d = ResolveModelDims(m, int(m.max_position_embeddings()));
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

}  // namespace tern::model::testing
