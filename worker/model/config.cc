#include "worker/model/config.h"

#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "worker/core/bounded_input.h"

namespace tern::model {
namespace {

template <typename T>
T Or(bool has, T value, T fallback) {
  return has ? value : fallback;
}

// hidden_act / activation_function must name the activation the architecture implements.
void CheckActivation(const tern::v1::ModelConfig& c, bool gpt2, std::vector<std::string>* errors) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string&>{"hidden_act", c.hidden_act()},
        {"activation_function", c.activation_function()}}) {
    if (value.empty()) continue;
    const bool ok = gpt2 ? (value == "gelu_new" || value == "gelu_pytorch_tanh")
                         : (value == "silu" || value == "swish");
    if (!ok)
      errors->push_back(absl::StrCat("model.", name, ": '", value, "' is not implemented for ",
                                     c.model_type(), " (", gpt2 ? "gelu_new" : "silu", ")"));
  }
}

// Hugging Face config.json keys that describe the file or the tokenizer, not the network.
bool IsMetadata(const std::string& key) {
  static const std::set<std::string> kKeys = {"_name_or_path",
                                              "auto_map",
                                              "transformers_version",
                                              "use_cache",
                                              "pad_token_id",
                                              "tokenizer_class",
                                              "task_specific_params",
                                              "output_attentions",
                                              "output_hidden_states",
                                              "return_dict",
                                              "id2label",
                                              "label2id",
                                              "problem_type",
                                              "torchscript",
                                              "use_return_dict",
                                              "summary_activation",
                                              "summary_first_dropout",
                                              "summary_proj_to_labels",
                                              "summary_type",
                                              "summary_use_proj",
                                              "pretraining_tp",
                                              "reorder_and_upcast_attn",
                                              "quantization_config_source"};
  return kKeys.count(key) != 0;
}

// Keys Tern does not implement, accepted only with the value that leaves the model unchanged.
bool IsNoOp(const std::string& key, const nlohmann::json& v, bool* known) {
  *known = true;
  if (key == "attention_bias" || key == "mlp_bias" || key == "scale_attn_by_inverse_layer_idx" ||
      key == "use_sliding_window")
    return v.is_boolean() && !v.get<bool>();
  if (key == "scale_attn_weights") return v.is_boolean() && v.get<bool>();
  if (key == "partial_rotary_factor") return v.is_number() && v.get<double>() == 1.0;
  if (key == "head_dim") return true;  // checked against hidden_size / heads below
  *known = false;
  return false;
}

// Why config.json's (non-null) rope_scaling is not one Tern implements; empty when it is.
std::string RopeScalingProblem(const nlohmann::json& v) {
  if (!v.is_object()) return "rope_scaling must be null or an object";
  std::vector<std::string> problems;
  std::string type;
  for (const char* k : {"type", "rope_type"})
    if (v.contains(k) && v[k].is_string()) type = v[k].get<std::string>();
  if (type != "longrope" && type != "su")
    problems.push_back(
        absl::StrCat("rope_scaling.type '", type, "': only \"longrope\" (\"su\") is implemented"));
  static const std::set<std::string> kKeys = {"type",        "rope_type", "short_factor",
                                              "long_factor", "factor",    "attention_factor"};
  for (auto it = v.begin(); it != v.end(); ++it)
    if (kKeys.count(it.key()) == 0)
      problems.push_back(absl::StrCat("rope_scaling.", it.key(), " is not a key Tern knows"));
  return absl::StrJoin(problems, ", ");
}

// Resolves LongRoPE into `d` (after max_T and HS), HF's _compute_longrope_parameters.
void ResolveRopeScaling(const tern::v1::ModelConfig& c, ModelDims* d,
                        std::vector<std::string>* errors) {
  if (c.has_original_max_position_embeddings() && c.original_max_position_embeddings() <= 0)
    errors->push_back(absl::StrCat("model.original_max_position_embeddings: must be > 0, got ",
                                   c.original_max_position_embeddings()));
  if (!c.has_rope_scaling()) return;
  const tern::v1::RopeScaling& r = c.rope_scaling();
  const std::string& type = r.type().empty() ? r.rope_type() : r.type();
  if (type != "longrope" && type != "su") {
    errors->push_back(absl::StrCat("model.rope_scaling.type: '", type,
                                   "' is not implemented by Tern (only \"longrope\", \"su\")"));
    return;
  }
  if (d->is_gpt2()) {
    errors->push_back(
        "model.rope_scaling: gpt2 has learned positions, not RoPE (LongRoPE is "
        "for llama/phi3)");
    return;
  }
  const int half = d->HS / 2;
  bool ok = d->HS > 0;
  for (const auto& [name, f] :
       {std::pair<const char*, const google::protobuf::RepeatedField<double>&>{"short_factor",
                                                                               r.short_factor()},
        {"long_factor", r.long_factor()}}) {
    if (d->HS > 0 && f.size() != half) {
      errors->push_back(absl::StrCat("model.rope_scaling.", name, ": ", f.size(),
                                     " entries, expected head_size / 2 = ", half));
      ok = false;
    }
    for (double x : f) {
      if (!(x > 0) || !std::isfinite(x)) {
        errors->push_back(absl::StrCat("model.rope_scaling.", name,
                                       ": every entry must be finite and > 0, got ", x));
        ok = false;
        break;
      }
    }
  }
  double factor = 0;
  if (c.has_original_max_position_embeddings()) {
    d->rope_original_max = c.original_max_position_embeddings();
    if (d->rope_original_max > 0) factor = double(d->max_T) / d->rope_original_max;
  } else {
    d->rope_original_max = d->max_T;
    if (r.has_factor()) {
      factor = r.factor();
    } else if (!r.has_attention_factor()) {
      errors->push_back(
          "model.rope_scaling.factor: needed when original_max_position_embeddings is not set "
          "(or give rope_scaling.attention_factor)");
      ok = false;
    }
  }
  if (r.has_attention_factor()) {
    d->rope_attention_factor = r.attention_factor();
    if (!(d->rope_attention_factor > 0) || !std::isfinite(d->rope_attention_factor)) {
      errors->push_back(absl::StrCat("model.rope_scaling.attention_factor: must be > 0, got ",
                                     r.attention_factor()));
      ok = false;
    }
  } else if (factor > 1.0 && d->rope_original_max > 1) {
    d->rope_attention_factor =
        std::sqrt(1.0 + std::log(factor) / std::log(double(d->rope_original_max)));
  }
  if (!ok || d->rope_original_max <= 0) return;
  d->longrope = true;
  d->rope_short_factor.assign(r.short_factor().begin(), r.short_factor().end());
  d->rope_long_factor.assign(r.long_factor().begin(), r.long_factor().end());
}

}  // namespace

void RopeTablesHost(const ModelDims& d, bool long_factors, int Tn, std::vector<double>* cos,
                    std::vector<double>* sin) {
  const int half = d.HS / 2;
  cos->assign(size_t(Tn) * half, 0.0);
  sin->assign(size_t(Tn) * half, 0.0);
  const std::vector<double>* ext =
      d.longrope ? (long_factors ? &d.rope_long_factor : &d.rope_short_factor) : nullptr;
  const double scale = d.longrope ? d.rope_attention_factor : 1.0;
  for (int i = 0; i < half; ++i) {
    double inv_freq = 1.0 / std::pow(static_cast<double>(d.rope_theta), 2.0 * i / d.HS);
    if (ext != nullptr) inv_freq /= (*ext)[i];
    for (int t = 0; t < Tn; ++t) {
      const double a = t * inv_freq;
      (*cos)[size_t(t) * half + i] = std::cos(a) * scale;
      (*sin)[size_t(t) * half + i] = std::sin(a) * scale;
    }
  }
}

absl::StatusOr<tern::v1::ModelConfig> LoadHfConfig(const std::string& path,
                                                   nlohmann::json* quantization) {
  // A config.json is a few KiB of flat JSON (rope_scaling and quantization_config nest once).
  auto text = ReadBoundedFile(path, "model.config_file", 4 << 20);
  if (absl::IsNotFound(text.status()))
    return absl::NotFoundError(absl::StrCat("model.config_file: cannot open ", path));
  if (!text.ok()) return text.status();
  auto parsed = ParseJsonBounded(*text, absl::StrCat("model.config_file: ", path), 16);
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& j = *parsed;
  if (!j.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("model.config_file: ", path, " is not a JSON object"));
  const auto* desc = tern::v1::ModelConfig::descriptor();
  nlohmann::json kept = nlohmann::json::object();
  std::vector<std::string> errors;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "rope_scaling" && !it.value().is_null()) {
      const std::string why = RopeScalingProblem(it.value());
      if (!why.empty()) {
        errors.push_back(absl::StrCat("model.config_file: ", path,
                                      ": 'rope_scaling' = ", it.value().dump(),
                                      " is not implemented by Tern (", why, ")"));
        continue;
      }
    }
    if (key == "quantization_config" && quantization != nullptr) {
      *quantization = it.value();
      continue;
    }
    if (key == "quantization_config") {
      errors.push_back(absl::StrCat("model.config_file: ", path,
                                    ": quantized weights (quantization_config) serve tern generate "
                                    "and tern eval; train from fp32 weights"));
      continue;
    }
    if (desc->FindFieldByName(key) != nullptr) {
      if (!it.value().is_null()) kept[key] = it.value();
      continue;
    }
    bool known = false;
    if (IsMetadata(key) || IsNoOp(key, it.value(), &known)) continue;
    errors.push_back(
        absl::StrCat("model.config_file: ", path, ": '", key, "' = ", it.value().dump(),
                     known ? " is not implemented by Tern"
                           : " is not a field Tern knows (it might change the model)"));
  }
  if (j.contains("head_dim") && j["head_dim"].is_number_integer()) {
    const int64_t hd = j["head_dim"].get<int64_t>();
    const int64_t c = j.value("hidden_size", int64_t{0}),
                  nh = j.value("num_attention_heads", int64_t{0});
    if (nh > 0 && hd * nh != c)
      errors.push_back(absl::StrCat("model.config_file: ", path, ": 'head_dim' = ", hd,
                                    " != hidden_size / num_attention_heads (", c, " / ", nh,
                                    "): a separate head dimension is not implemented by Tern"));
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  tern::v1::ModelConfig config;
  google::protobuf::util::JsonParseOptions opts;
  auto st = google::protobuf::util::JsonStringToMessage(kept.dump(), &config, opts);
  if (!st.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("model.config_file: ", path, ": ", std::string(st.message())));
  return config;
}

absl::StatusOr<ModelDims> ResolveModelDims(const tern::v1::ModelConfig& in, int default_seq_len) {
  tern::v1::ModelConfig c = in;
  if (!c.config_file().empty()) {
    auto file = LoadHfConfig(c.config_file());
    if (!file.ok()) return file.status();
    tern::v1::ModelConfig merged = *file;
    merged.MergeFrom(c);  // fields set in the spec win over the file
    c = merged;
  }
  std::vector<std::string> errors;
  ModelDims d;
  d.model_type = c.model_type();
  if (d.model_type == "gpt2") {
    d.arch = Arch::kGpt2;
  } else if (d.model_type == "llama" || d.model_type == "mistral") {
    d.arch = Arch::kLlama;
  } else if (d.model_type == "phi3") {
    d.arch = Arch::kPhi3;
  } else {
    errors.push_back(
        absl::StrCat("model.model_type: '", d.model_type, "' is not one of gpt2, llama, phi3"));
  }
  const bool gpt2 = d.arch == Arch::kGpt2;
  d.V = Or(c.has_vocab_size(), c.vocab_size(), 256);
  d.C = c.has_hidden_size() ? c.hidden_size() : Or(c.has_n_embd(), c.n_embd(), 0);
  d.L = c.has_num_hidden_layers() ? c.num_hidden_layers() : Or(c.has_n_layer(), c.n_layer(), 0);
  d.NH = c.has_num_attention_heads() ? c.num_attention_heads() : Or(c.has_n_head(), c.n_head(), 0);
  d.NKV = Or(c.has_num_key_value_heads(), c.num_key_value_heads(), d.NH);
  if (gpt2 && c.has_num_key_value_heads() && c.num_key_value_heads() != d.NH)
    errors.push_back("model.num_key_value_heads: gpt2 has no grouped-query attention");
  if (c.has_max_position_embeddings()) {
    d.max_T = c.max_position_embeddings();
  } else if (c.has_n_positions()) {
    d.max_T = c.n_positions();
  } else if (c.has_n_ctx()) {
    d.max_T = c.n_ctx();
  } else {
    d.max_T = default_seq_len;
  }
  if (gpt2) {
    d.norm_eps = c.has_layer_norm_epsilon() ? c.layer_norm_epsilon() : 1e-5f;
  } else {
    d.norm_eps = c.has_rms_norm_eps() ? c.rms_norm_eps() : 1e-5f;
  }
  d.rope_theta = Or(c.has_rope_theta(), c.rope_theta(), 10000.0f);
  d.tied = Or(c.has_tie_word_embeddings(), c.tie_word_embeddings(), gpt2);
  d.init_std = Or(c.has_initializer_range(), c.initializer_range(), 0.02f);

  if (d.V <= 0) errors.push_back(absl::StrCat("model.vocab_size: must be > 0, got ", d.V));
  if (d.C <= 0) errors.push_back(absl::StrCat("model.hidden_size: must be > 0, got ", d.C));
  if (d.L <= 0) errors.push_back(absl::StrCat("model.num_hidden_layers: must be > 0, got ", d.L));
  if (d.NH <= 0) {
    errors.push_back(absl::StrCat("model.num_attention_heads: must be > 0, got ", d.NH));
  } else if (d.C > 0 && d.C % d.NH != 0) {
    errors.push_back(absl::StrCat("model.hidden_size: ", d.C,
                                  " is not divisible by num_attention_heads ", d.NH));
  }
  if (d.NKV <= 0 || (d.NH > 0 && d.NH % d.NKV != 0))
    errors.push_back(absl::StrCat("model.num_key_value_heads: ", d.NKV,
                                  " must be > 0 and divide num_attention_heads ", d.NH));
  if (d.NH > 0 && d.C % d.NH == 0) {
    d.HS = d.C / d.NH;
    if (!gpt2 && d.HS % 2 != 0)
      errors.push_back(absl::StrCat("model: head size ", d.HS, " must be even for RoPE"));
  }
  // Derived sizes are computed in 64 bits and must fit the kernels' int dimensions; a field
  // whose derived size does not is named with the size it implies.
  constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
  if (int64_t(d.C) * 3 > kMaxDim)
    errors.push_back(absl::StrCat("model.hidden_size: ", d.C,
                                  " is too large (the fused q/k/v "
                                  "projection would have more than 2^31-1 columns)"));
  if (c.has_intermediate_size()) {
    d.F = c.intermediate_size();
  } else if (c.has_n_inner()) {
    d.F = c.n_inner();
  } else {
    const int64_t C = d.C;
    int64_t F = gpt2 ? 4 * C : ((8 * C / 3 + 31) / 32) * 32;
    if (!gpt2 && double(F) < 8 * C / 3.0) F += 32;
    if (F > kMaxDim) {
      errors.push_back(absl::StrCat("model.hidden_size: ", d.C, " implies intermediate_size ", F,
                                    ", more than 2^31-1 --> hint: set intermediate_size"));
      F = 1;
    }
    d.F = int(F);
  }
  if (d.F <= 0) errors.push_back(absl::StrCat("model.intermediate_size: must be > 0, got ", d.F));
  if (int64_t(d.F) * 2 > kMaxDim)
    errors.push_back(absl::StrCat("model.intermediate_size: ", d.F,
                                  " is too large (the fused "
                                  "gate/up projection would have more than 2^31-1 columns)"));
  if (d.max_T <= 0)
    errors.push_back(absl::StrCat("model.max_position_embeddings: must be > 0, got ", d.max_T));
  if (d.norm_eps <= 0) errors.push_back("model: the norm epsilon must be > 0");
  for (auto [has, v, name] :
       {std::tuple{c.has_attention_dropout(), c.attention_dropout(), "attention_dropout"},
        std::tuple{c.has_resid_pdrop(), c.resid_pdrop(), "resid_pdrop"},
        std::tuple{c.has_embd_pdrop(), c.embd_pdrop(), "embd_pdrop"},
        std::tuple{c.has_attn_pdrop(), c.attn_pdrop(), "attn_pdrop"}}) {
    if (has && v != 0.0f)
      errors.push_back(absl::StrCat("model.", name, ": dropout is not supported, set it to 0"));
  }
  CheckActivation(c, gpt2, &errors);
  if (c.has_sliding_window()) {
    if (c.sliding_window() <= 0)
      errors.push_back(absl::StrCat("model.sliding_window: must be > 0, got ", c.sliding_window()));
    d.sliding_window = c.sliding_window();
  }
  ResolveRopeScaling(c, &d, &errors);
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return d;
}

ModelCost EstimateCost(const ModelDims& d, int seq_len) {
  ModelCost cost;
  const uint64_t C = d.C, V = d.V, F = d.F, L = d.L;
  const uint64_t attn = C * static_cast<uint64_t>(d.QKV()) + static_cast<uint64_t>(d.NH * d.HS) * C;
  const uint64_t mlp = d.is_gpt2() ? 2 * C * F : 3 * C * F;
  uint64_t per_layer = attn + mlp;
  uint64_t norms = d.is_gpt2() ? 4 * C : 2 * C;
  uint64_t biases = d.is_gpt2() ? (static_cast<uint64_t>(d.QKV()) + C + F + C) : 0;
  cost.params = V * C + L * (per_layer + norms + biases) + (d.is_gpt2() ? 2 * C : C);
  if (d.is_gpt2()) cost.params += static_cast<uint64_t>(d.max_T) * C;
  if (!d.tied) cost.params += V * C;
  cost.matmul_params = L * per_layer + V * C;
  cost.flops_per_token = 6.0 * static_cast<double>(cost.matmul_params) +
                         12.0 * static_cast<double>(L) * seq_len * static_cast<double>(C);
  return cost;
}

}  // namespace tern::model
