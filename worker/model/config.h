// Model dimensions resolved from a ModelConfig (Hugging Face config.json field names).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tern/v1/job.pb.h"

namespace tern::model {

enum class Arch { kGpt2, kLlama, kPhi3 };

struct ModelDims {
  Arch arch = Arch::kLlama;
  std::string model_type;  // "gpt2", "llama", "phi3"
  int V = 256;             // vocab_size
  int C = 0;               // hidden_size
  int L = 0;               // num_hidden_layers
  int NH = 0;              // num_attention_heads
  int NKV = 0;             // num_key_value_heads
  int HS = 0;              // head size = C / NH
  int F = 0;               // intermediate_size
  int max_T = 0;           // max_position_embeddings
  float norm_eps = 1e-5f;  // rms_norm_eps or layer_norm_epsilon
  float rope_theta = 10000.0f;
  bool tied = false;       // tie_word_embeddings
  float init_std = 0.02f;  // initializer_range
  int sliding_window = 0;  // 0 = none; else must cover the whole sequence
  // phi-3's LongRoPE (rope_scaling type "longrope"/"su"), Hugging Face semantics: a forward
  // whose sequence length (largest position + 1) exceeds rope_original_max rotates with
  // inv_freq_i = 1 / (long_factor_i * theta^(2i/HS)), else with short_factor; cos and sin are
  // scaled by rope_attention_factor. Off: plain RoPE.
  bool longrope = false;
  int rope_original_max = 0;  // original_max_position_embeddings (else max_position_embeddings)
  std::vector<double> rope_short_factor, rope_long_factor;  // HS / 2 each
  double rope_attention_factor = 1.0;

  int QKV() const { return (NH + 2 * NKV) * HS; }
  bool is_gpt2() const { return arch == Arch::kGpt2; }
};

// Resolves defaults (and config_file) and validates; `default_seq_len` fills
// max_position_embeddings when unset. INVALID_ARGUMENT lists every bad field at once.
absl::StatusOr<ModelDims> ResolveModelDims(const tern::v1::ModelConfig& config,
                                           int default_seq_len);

// Reads a Hugging Face config.json into a ModelConfig. Fields Tern implements are kept; metadata
// (transformers_version, use_cache, token ids, ...) is skipped; a field that would change the
// model and that Tern does not implement (attention_bias, rope_scaling other than LongRoPE, ...) is
// refused by name unless it holds the value that changes nothing. INVALID_ARGUMENT lists every such
// field.
// With `quantization`, a `quantization_config` object (a quantized model directory, read by
// the engine) is handed out there instead of refused.
absl::StatusOr<tern::v1::ModelConfig> LoadHfConfig(const std::string& path,
                                                   nlohmann::json* quantization = nullptr);

// LongRoPE: whether a forward whose largest position is `max_pos` rotates with the long factors.
inline bool UseLongRope(const ModelDims& d, int64_t max_pos) {
  return d.longrope && max_pos + 1 > d.rope_original_max;
}

// The RoPE tables (cos, sin), positions [0, Tn) x HS/2, computed on the host in double precision:
// plain RoPE, or LongRoPE's short (`long_factors` false) or long table.
void RopeTablesHost(const ModelDims& d, bool long_factors, int Tn, std::vector<double>* cos,
                    std::vector<double>* sin);

// Sizes for planning (`tern describe`).
struct ModelCost {
  uint64_t params = 0;         // total parameters
  uint64_t matmul_params = 0;  // parameters used in matmuls (incl. tied head)
  double flops_per_token = 0;  // training FLOPs per token at seq_len (6N + 12 L T C)
};
ModelCost EstimateCost(const ModelDims& dims, int seq_len);

}  // namespace tern::model
