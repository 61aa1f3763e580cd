#include "worker/engine/spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace tern::engine {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

// Reports every key that is not a field of `desc` (by proto or JSON name), with its path.
void FindUnknownFields(const json& j, const Descriptor* desc, const std::string& path,
                       std::vector<std::string>* errors) {
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const FieldDescriptor* f = desc->FindFieldByName(it.key());
    for (int i = 0; f == nullptr && i < desc->field_count(); ++i)
      if (desc->field(i)->json_name() == it.key()) f = desc->field(i);
    const std::string p = path.empty() ? it.key() : path + "." + it.key();
    if (f == nullptr) {
      errors->push_back(absl::StrCat("unknown field '", p, "'"));
      continue;
    }
    if (f->type() == FieldDescriptor::TYPE_MESSAGE && !f->is_repeated())
      FindUnknownFields(it.value(), f->message_type(), p, errors);
  }
}

absl::Status ApplyOverride(json& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", assignment, "': expected key.path=value"));
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;
  json* node = &root;
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& next = (*node)[parts[i]];
    if (next.is_null()) next = json::object();
    if (!next.is_object())
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", key, ": '", parts[i], "' is not an object"));
    node = &next;
  }
  (*node)[parts.back()] = value;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& text,
                                               const std::vector<std::string>& overrides,
                                               const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": malformed JSON at byte ", e.byte, ": ", e.what()));
  }
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": the job spec must be a JSON object"));
  for (const auto& o : overrides) {
    absl::Status st = ApplyOverride(j, o);
    if (!st.ok()) return st;
  }
  std::vector<std::string> errors;
  FindUnknownFields(j, tern::v1::JobSpec::descriptor(), "", &errors);
  if (!errors.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", absl::StrJoin(errors, "; ")));
  tern::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions opts;
  auto st = google::protobuf::util::JsonStringToMessage(j.dump(), &spec, opts);
  if (!st.ok())
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", std::string(st.message())));
  return spec;
}

absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("job spec ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJobSpec(ss.str(), overrides, path);
}

std::string JobSpecToJson(const tern::v1::JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, opts);
  return out;
}

absl::StatusOr<JobConfig> ResolveJob(const tern::v1::JobSpec& spec, int world_size,
                                     bool check_files) {
  JobConfig c;
  c.spec = spec;
  std::vector<std::string> errors;
  c.seq_len = spec.data().has_seq_len() ? spec.data().seq_len() : 1024;
  if (c.seq_len <= 0) errors.push_back(absl::StrCat("data.seq_len: must be > 0, got ", c.seq_len));
  auto dims = model::ResolveModelDims(spec.model(), c.seq_len);
  if (!dims.ok()) {
    errors.push_back(std::string(dims.status().message()));
  } else {
    c.dims = *dims;
    if (c.seq_len > c.dims.max_T)
      errors.push_back(absl::StrCat("data.seq_len: ", c.seq_len,
                                    " exceeds model.max_position_embeddings ", c.dims.max_T));
  }
  auto adamw = optim::ResolveAdamW(spec.optimizer());
  if (!adamw.ok())
    errors.push_back(std::string(adamw.status().message()));
  else
    c.adamw = *adamw;

  const auto& r = spec.resources();
  c.nodes = r.has_nodes() ? r.nodes() : 1;
  c.ranks_per_node = r.has_ranks_per_node() ? r.ranks_per_node() : 1;
  c.threads_per_rank = r.has_threads_per_rank() ? r.threads_per_rank() : 0;
  if (c.nodes < 1) errors.push_back(absl::StrCat("resources.nodes: must be >= 1, got ", c.nodes));
  if (c.ranks_per_node < 1)
    errors.push_back(
        absl::StrCat("resources.ranks_per_node: must be >= 1, got ", c.ranks_per_node));
  if (c.threads_per_rank < 0) errors.push_back("resources.threads_per_rank: must be >= 0");
  c.dp_size = world_size > 0 ? world_size : c.nodes * c.ranks_per_node;
  if (c.dp_size < 1) c.dp_size = 1;

  c.micro_batch =
      spec.has_train_micro_batch_size_per_gpu() ? spec.train_micro_batch_size_per_gpu() : 0;
  c.accum = spec.has_gradient_accumulation_steps() ? spec.gradient_accumulation_steps() : 0;
  const int64_t tbs = spec.has_train_batch_size() ? spec.train_batch_size() : 0;
  // DeepSpeed's rule: any two of (train_batch_size, micro, accum) determine the third.
  if (tbs > 0 && c.micro_batch > 0 && c.accum == 0) {
    c.accum = static_cast<int>(tbs / (int64_t{c.micro_batch} * c.dp_size));
  } else if (tbs > 0 && c.micro_batch == 0) {
    if (c.accum == 0) c.accum = 1;
    c.micro_batch = static_cast<int>(tbs / (int64_t{c.accum} * c.dp_size));
  }
  if (c.micro_batch == 0) c.micro_batch = 1;
  if (c.accum == 0) c.accum = 1;
  c.global_batch = int64_t{c.micro_batch} * c.accum * c.dp_size;
  if (c.micro_batch < 1 || c.accum < 1 || (tbs > 0 && tbs != c.global_batch))
    errors.push_back(absl::StrCat("train_batch_size: ", tbs, " != train_micro_batch_size_per_gpu ",
                                  c.micro_batch, " x gradient_accumulation_steps ", c.accum,
                                  " x data-parallel ranks ", c.dp_size));
  c.train_iters = spec.has_train_iters() ? spec.train_iters() : 0;
  if (c.train_iters <= 0) errors.push_back("train_iters: must be set and > 0");
  c.eval_interval = spec.has_eval_interval() ? spec.eval_interval() : 0;
  if (c.eval_interval < 0) errors.push_back("eval_interval: must be >= 0");
  c.eval_iters = spec.has_eval_iters() ? spec.eval_iters() : 8;
  if (c.eval_iters < 0) errors.push_back("eval_iters: must be >= 0");
  c.steps_per_print = spec.has_steps_per_print() ? spec.steps_per_print() : 10;
  if (c.steps_per_print <= 0) errors.push_back("steps_per_print: must be > 0");
  c.seed = spec.has_seed() ? spec.seed() : 1234;
  c.grad_clip = spec.has_gradient_clipping() ? spec.gradient_clipping() : 0.0f;
  if (c.grad_clip < 0) errors.push_back("gradient_clipping: must be >= 0");
  c.zero_stage = spec.zero_optimization().has_stage() ? spec.zero_optimization().stage() : 0;
  if (c.zero_stage < 0 || c.zero_stage > 3)
    errors.push_back(
        absl::StrCat("zero_optimization.stage: must be 0, 1, 2 or 3, got ", c.zero_stage));

  c.data_path = spec.data().path();
  if (c.data_path.empty()) {
    errors.push_back("data.path: must name a dataset prefix (PREFIX.bin + PREFIX.idx)");
  } else if (check_files) {
    for (const char* ext : {".bin", ".idx"}) {
      if (!std::filesystem::exists(c.data_path + ext))
        errors.push_back(absl::StrCat("data.path: ", c.data_path, ext, " does not exist"));
    }
  }
  c.val_path = spec.data().val_path();
  if (c.val_path.empty() && !c.data_path.empty() &&
      std::filesystem::exists(c.data_path + "_val.idx"))
    c.val_path = c.data_path + "_val";
  if (!spec.data().val_path().empty() && check_files &&
      !std::filesystem::exists(c.val_path + ".idx"))
    errors.push_back(absl::StrCat("data.val_path: ", c.val_path, ".idx does not exist"));
  if (!spec.data().tokenizer().empty() && spec.data().tokenizer() != "byte")
    errors.push_back(
        absl::StrCat("data.tokenizer: '", spec.data().tokenizer(), "' is not supported (byte)"));
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return c;
}

}  // namespace tern::engine
