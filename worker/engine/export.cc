#include "worker/engine/export.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"
#include "worker/core/bounded_input.h"
#include "worker/core/param_match.h"
#include "worker/core/status.h"
#include "worker/engine/quantized_model.h"
#include "worker/model/transformer.h"
#include "worker/spec/job_config.h"
#include "worker/spec/spec.h"

namespace tern::engine {

std::string HfConfigJson(const tern::v1::ModelConfig& config, const model::ModelDims& dims,
                         const std::string& dtype) {
  // config.json: HF field names with every dimension resolved.
  tern::v1::ModelConfig c = config;
  c.clear_config_file();
  // A spec that names only a config_file: the resolved type (the file may be gone by now).
  if (c.model_type().empty()) c.set_model_type(dims.model_type);
  c.set_vocab_size(dims.V);
  c.set_hidden_size(dims.C);
  c.set_num_hidden_layers(dims.L);
  c.set_num_attention_heads(dims.NH);
  c.set_num_key_value_heads(dims.NKV);
  c.set_intermediate_size(dims.F);
  c.set_max_position_embeddings(dims.max_T);
  c.set_tie_word_embeddings(dims.tied);
  if (dims.is_gpt2()) {
    c.set_layer_norm_epsilon(dims.norm_eps);
  } else {
    c.set_rms_norm_eps(dims.norm_eps);
    c.set_rope_theta(dims.rope_theta);
  }
  // LongRoPE as resolved (the job spec's config_file may be gone by export time): the factors,
  // original_max_position_embeddings and the attention factor, so transformers and Tern read
  // the same rotation back.
  if (dims.longrope) {
    tern::v1::RopeScaling* r = c.mutable_rope_scaling();
    if (r->type().empty()) r->set_type(r->rope_type().empty() ? "longrope" : r->rope_type());
    r->clear_rope_type();
    r->mutable_short_factor()->Assign(dims.rope_short_factor.begin(), dims.rope_short_factor.end());
    r->mutable_long_factor()->Assign(dims.rope_long_factor.begin(), dims.rope_long_factor.end());
    // Without original_max in the config the factor came from elsewhere (the factor key, a
    // config_file): keep the resolved attention factor explicit.
    if (!r->has_attention_factor() && !c.has_original_max_position_embeddings())
      r->set_attention_factor(dims.rope_attention_factor);
    c.set_original_max_position_embeddings(dims.rope_original_max);
  }
  c.clear_n_embd();
  c.clear_n_layer();
  c.clear_n_head();
  c.clear_n_positions();
  c.clear_n_inner();
  c.clear_n_ctx();
  // What transformers reads to pick the class and the dtype.
  if (c.architectures_size() == 0) {
    if (c.model_type() == "llama") c.add_architectures("LlamaForCausalLM");
    if (c.model_type() == "gpt2") c.add_architectures("GPT2LMHeadModel");
    if (c.model_type() == "phi3") c.add_architectures("Phi3ForCausalLM");
    if (c.model_type() == "mistral") c.add_architectures("MistralForCausalLM");
  }
  c.set_torch_dtype(dtype == "BF16" ? "bfloat16" : dtype == "F16" ? "float16" : "float32");
  std::string cfg_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(c, &cfg_json, opts);
  return cfg_json;
}

absl::Status SaveModel(const std::string& dir, const tern::v1::ModelConfig& config,
                       const model::ModelDims& dims, const ParamTable& table,
                       const std::vector<float>& params, const SafetensorsWriteOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const std::string dtype = SafetensorsDtype(options.dtype).value_or("F32");
  const std::string cfg_json = HfConfigJson(config, dims, dtype);
  TERN_RETURN_IF_ERROR(WriteSafetensors(dir, table, params.data(), options));
  // config.json last: a directory with a config has its weights.
  return ckpt::WriteFileAtomic(dir + "/config.json", cfg_json);
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& dir) {
  LoadedModel out;
  nlohmann::json quantization;
  TERN_ASSIGN_OR_RETURN(out.config, model::LoadHfConfig(dir + "/config.json", &quantization));
  TERN_ASSIGN_OR_RETURN(out.dims, model::ResolveModelDims(out.config, 0));
  if (!quantization.is_null()) {
    TERN_RETURN_IF_ERROR(LoadQuantizedWeights(dir, quantization, &out));
    return out;
  }
  model::Transformer<float> shape_only(out.dims);
  TERN_ASSIGN_OR_RETURN(out.params, ReadWeights(dir, shape_only.params()));
  return out;
}

absl::StatusOr<LoadedModel> LoadModelFromCheckpoint(const std::string& root,
                                                    const std::string& which) {
  TERN_ASSIGN_OR_RETURN(auto ckpt, ckpt::Checkpoint::Open(root, which));
  const auto& extra = ckpt->extra();
  if (!extra.contains("job_spec"))
    return absl::DataLossError(absl::StrCat(root, ": the checkpoint's manifest has no job spec"));
  TERN_ASSIGN_OR_RETURN(
      auto spec, tern::spec::ParseJobSpec(extra["job_spec"].dump(), {}, root + " (job spec)"));
  const int seq_len = spec.data().has_seq_len() ? spec.data().seq_len() : 1024;
  LoadedModel out;
  TERN_ASSIGN_OR_RETURN(out.dims, model::ResolveModelDims(spec.model(), seq_len));
  model::Transformer<float> shape_only(out.dims);
  const ParamTable& table = shape_only.params();
  TERN_RETURN_IF_ERROR(MatchTensors(table, ShapesOf(ckpt->params()),
                                    absl::StrCat("checkpoint ", ckpt->dir()),
                                    " (the model of its own job spec)"));
  out.config = spec.model();
  out.params.resize(table.total());
  TERN_RETURN_IF_ERROR(ckpt->ReadState("master", 0, table.total(), out.params.data()));
  return out;
}

namespace {

// DIR as a checkpoint: (root, step name), or {"", ""} when it is not one.
std::pair<std::string, std::string> CheckpointDir(const std::string& dir) {
  std::filesystem::path p(dir);
  if (p.filename().empty()) p = p.parent_path();
  std::error_code ec;
  if (std::filesystem::exists(p / ckpt::kManifestName, ec))
    return {p.parent_path().string(), p.filename().string()};
  if (std::filesystem::exists(p / ckpt::kLatestName, ec)) return {p.string(), ckpt::kLatestName};
  return {"", ""};
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModelAny(const std::string& dir) {
  const auto [root, which] = CheckpointDir(dir);
  if (!root.empty()) return LoadModelFromCheckpoint(root, which);
  return LoadModel(dir);
}

absl::StatusOr<std::vector<float>> LoadInitWeights(const std::string& dir,
                                                   const ParamTable& table) {
  const auto [root, which] = CheckpointDir(dir);
  if (root.empty()) return ReadWeights(dir, table);
  TERN_ASSIGN_OR_RETURN(auto ck, ckpt::Checkpoint::Open(root, which));
  TERN_RETURN_IF_ERROR(MatchTensors(table, ShapesOf(ck->params()),
                                    absl::StrCat("checkpoint.init_from: checkpoint ", ck->dir()),
                                    " --> hint: init_from must hold this model's weights"));
  for (size_t i = 0; i < table.entries().size(); ++i) {
    if (ck->params().entries()[i].name != table.entries()[i].name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.init_from: ", ck->dir(), " holds this model's parameters in another order"));
    }
  }
  std::vector<float> out(table.total());
  TERN_RETURN_IF_ERROR(ck->ReadState("master", 0, table.total(), out.data()));
  return out;
}

}  // namespace tern::engine
