#include "worker/engine/export.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/checkpoint.h"
#include "worker/core/bounded_input.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"
#include "worker/spec/job_config.h"
#include "worker/spec/spec.h"

namespace tern::engine {
namespace {

absl::Status WriteFileAtomic(const std::string& path, const std::string& a, const char* b,
                             size_t b_len) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    out.write(a.data(), a.size());
    if (b_len) out.write(b, b_len);
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveModel(const std::string& dir, const tern::v1::ModelConfig& config,
                       const model::ModelDims& dims, const ParamTable& table,
                       const std::vector<float>& params) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  // config.json: HF field names with every dimension resolved.
  tern::v1::ModelConfig c = config;
  c.clear_config_file();
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
  c.clear_n_embd();
  c.clear_n_layer();
  c.clear_n_head();
  c.clear_n_positions();
  c.clear_n_inner();
  c.clear_n_ctx();
  std::string cfg_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(c, &cfg_json, opts);
  TERN_RETURN_IF_ERROR(WriteFileAtomic(dir + "/config.json", cfg_json, nullptr, 0));
  // safetensors: u64 header length, JSON header, raw little-endian data.
  nlohmann::json header = nlohmann::json::object();
  for (const auto& e : table.entries()) {
    header[e.name] = {{"dtype", "F32"},
                      {"shape", e.shape},
                      {"data_offsets", {e.offset * 4, (e.offset + e.numel) * 4}}};
  }
  header["__metadata__"] = {{"format", "pt"}, {"producer", "tern"}};
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  uint64_t len = h.size();
  std::string prefix(reinterpret_cast<const char*>(&len), 8);
  return WriteFileAtomic(dir + "/model.safetensors", prefix + h,
                         reinterpret_cast<const char*>(params.data()), params.size() * 4);
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& dir) {
  TERN_ASSIGN_OR_RETURN(auto config, model::LoadHfConfig(dir + "/config.json"));
  LoadedModel out;
  TERN_ASSIGN_OR_RETURN(out.dims, model::ResolveModelDims(config, 0));
  model::Transformer<float> shape_only(out.dims);
  const ParamTable& table = shape_only.params();
  const std::string path = dir + "/model.safetensors";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  if (!in || len > (100u << 20))
    return absl::DataLossError(absl::StrCat(path, ": bad header length"));
  std::string h(len, '\0');
  in.read(h.data(), len);
  if (!in) return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  auto parsed = ParseJsonBounded(h, path + " header", 8);
  if (!parsed.ok() || !parsed->is_object())
    return absl::DataLossError(absl::StrCat(path, ": bad header"));
  const nlohmann::json& header = *parsed;
  const uint64_t data_start = 8 + len;
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  // config.json decides how much is allocated: it must describe what the file holds.
  if (ec || table.total() * 4 > file_size)
    return absl::DataLossError(absl::StrCat(dir, "/config.json describes ", table.total(),
                                            " parameters but ", path, " holds ", file_size,
                                            " bytes"));
  out.params.resize(table.total());
  for (const auto& e : table.entries()) {
    if (!header.contains(e.name))
      return absl::NotFoundError(absl::StrCat(path, ": tensor ", e.name, " is missing"));
    const auto& t = header[e.name];
    const auto bad = [&](const char* what) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensor ", e.name, " has ", what, " ",
                       t.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    };
    if (!t.is_object() || !t.contains("shape") || !t["shape"].is_array() ||
        !t.contains("data_offsets") || !t["data_offsets"].is_array())
      return bad("no shape/data_offsets:");
    std::vector<int64_t> shape;
    std::vector<uint64_t> offs;
    for (const auto& v : t["shape"]) {
      if (!v.is_number_integer()) return bad("a bad shape:");
      shape.push_back(v.get<int64_t>());
    }
    for (const auto& v : t["data_offsets"]) {
      if (!v.is_number_unsigned()) return bad("bad data_offsets:");
      offs.push_back(v.get<uint64_t>());
    }
    const auto dtype = t.find("dtype");
    if (dtype == t.end() || *dtype != "F32" || shape != e.shape)
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", e.name, " has dtype/shape ",
          t.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), ", expected F32"));
    if (offs.size() != 2 || offs[0] > offs[1] || offs[1] - offs[0] != e.numel * 4 ||
        offs[1] > file_size - data_start)
      return absl::DataLossError(absl::StrCat(path, ": tensor ", e.name, " has bad data_offsets"));
    in.seekg(static_cast<std::streamoff>(data_start + offs[0]));
    in.read(reinterpret_cast<char*>(out.params.data() + e.offset), e.numel * 4);
    if (!in) return absl::DataLossError(absl::StrCat(path, ": short read of ", e.name));
  }
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
  if (ckpt->params().total() != table.total())
    return absl::DataLossError(absl::StrCat(root, ": checkpoint holds ", ckpt->params().total(),
                                            " parameters, the model in its spec ", table.total()));
  out.params.resize(table.total());
  TERN_RETURN_IF_ERROR(ckpt->ReadState("master", 0, table.total(), out.params.data()));
  return out;
}

}  // namespace tern::engine
