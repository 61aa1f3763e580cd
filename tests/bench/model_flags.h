// The model flags the benchmarks share (--arch --vocab --dim --layers --heads --kv-heads --ffn)
// and the ModelConfig they describe. Header-only (CLI11 and the config proto; target
// tern_bench_model_flags in tests/bench).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "tern/v1/job.pb.h"

namespace tern::bench {

// A benchmark's Args derive from it (and may change the defaults in their constructor); tie
// has no shared flag: a benchmark that offers it binds its own.
struct ModelFlags {
  std::string arch = "llama";
  int vocab = 256, dim = 256, layers = 4, heads = 8, ffn = 0;
  int kv_heads = 0;  // Llama key/value heads (0: --heads)
  int tie = -1;      // tie_word_embeddings: 1 tied, 0 not, -1 the architecture's default
};

inline void AddModelFlags(CLI::App& app, ModelFlags& m) {
  app.add_option("--arch", m.arch)->check(CLI::IsMember({"llama", "gpt2"}));
  app.add_option("--vocab", m.vocab);
  app.add_option("--dim", m.dim);
  app.add_option("--layers", m.layers);
  app.add_option("--heads", m.heads);
  app.add_option("--kv-heads", m.kv_heads, "Llama key/value heads (default: --heads)");
  app.add_option("--ffn", m.ffn);
}

// The model the flags describe, with room for `max_positions` tokens.
inline tern::v1::ModelConfig ModelConfigFor(const ModelFlags& m, int max_positions) {
  tern::v1::ModelConfig mc;
  mc.set_model_type(m.arch);
  mc.set_vocab_size(m.vocab);
  mc.set_hidden_size(m.dim);
  mc.set_num_hidden_layers(m.layers);
  mc.set_num_attention_heads(m.heads);
  if (m.arch != "gpt2" && m.kv_heads > 0) mc.set_num_key_value_heads(m.kv_heads);
  if (m.ffn > 0) mc.set_intermediate_size(m.ffn);
  if (m.tie >= 0) mc.set_tie_word_embeddings(m.tie == 1);
  mc.set_max_position_embeddings(max_positions);
  return mc;
}

}  // namespace tern::bench
