#include "worker/engine/quantized_model.h"

#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <set>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/wquant.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"

namespace tern::engine {
namespace {

namespace k = tern::kernels;
constexpr int kFormatVersion = 1;

// What a quantized directory holds for one matrix part: its tensors' names, dtypes and shapes.
struct PartTensors {
  std::string planes[2];  // the data planes (fp6: 4-bit, 2-bit; else one)
  std::string scale;
};

PartTensors Names(const std::string& base, k::WeightFormat f) {
  PartTensors p;
  switch (f) {
    case k::WeightFormat::kFp6:
      p.planes[0] = base + ".fp6_hi";
      p.planes[1] = base + ".fp6_lo";
      break;
    case k::WeightFormat::kInt8:
      p.planes[0] = base + ".int8";
      break;
    case k::WeightFormat::kInt4:
      p.planes[0] = base + ".int4";
      break;
  }
  p.scale = base + ".scale";
  return p;
}

// The tensors of one quantized part (pointing into q).
void AppendTensors(const std::string& base, const k::QuantizedMatrix& q,
                   std::vector<OutTensor>* out) {
  const PartTensors n = Names(base, q.format);
  const int64_t rows = q.rows;
  OutTensor hi{n.planes[0],
               q.format == k::WeightFormat::kInt8 ? "I8" : "U8",
               {rows, int64_t(q.hi_stride)},
               nullptr,
               q.hi.data()};
  out->push_back(std::move(hi));
  if (q.format == k::WeightFormat::kFp6)
    out->push_back(
        OutTensor{n.planes[1], "U8", {rows, int64_t(q.lo_stride)}, nullptr, q.lo.data()});
  std::vector<int64_t> scale_shape = {rows};
  if (q.format == k::WeightFormat::kInt4) scale_shape.push_back(q.groups());
  out->push_back(OutTensor{n.scale, "F32", scale_shape, q.scales.data(), nullptr});
}

// The matrix parts of `model`, each with the name its tensors carry.
struct Part {
  const model::LinearWeight* linear;
  const ParamEntry* entry;
  std::string name;
  int rows;
};
std::vector<Part> Parts(const std::vector<model::LinearWeight>& linears) {
  std::vector<Part> out;
  for (const auto& w : linears) {
    for (const ParamEntry* e : w.entries) {
      const int rows = static_cast<int>(w.transposed ? e->shape[1] : e->shape[0]);
      out.push_back({&w, e, w.tied_head ? std::string("lm_head.weight") : e->name, rows});
    }
  }
  return out;
}

// The table entries stored in fp32: all but the matrices (a tied head's embeddings stay).
std::set<const ParamEntry*> Replaced(const std::vector<Part>& parts) {
  std::set<const ParamEntry*> out;
  for (const Part& p : parts)
    if (!p.linear->tied_head) out.insert(p.entry);
  return out;
}

absl::StatusOr<k::WeightFormat> ParseQuantization(const nlohmann::json& q,
                                                  const std::string& path) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": quantization_config ", q.dump(), ": ", why));
  };
  if (!q.is_object()) return bad("not an object");
  static const std::set<std::string> kKeys = {"quant_method", "format",     "version",
                                              "group_size",   "fp6_format", "layout"};
  for (auto it = q.begin(); it != q.end(); ++it)
    if (kKeys.count(it.key()) == 0)
      return bad(absl::StrCat("'", it.key(), "' is not a key Tern knows"));
  if (q.value("quant_method", std::string()) != "tern")
    return bad("quant_method must be \"tern\" (Tern reads only the weights it quantized)");
  if (!q.contains("version") || !q["version"].is_number_integer() ||
      q["version"].get<int>() != kFormatVersion)
    return bad(absl::StrCat("version must be ", kFormatVersion));
  k::WeightFormat f;
  if (!q.contains("format") || !q["format"].is_string() ||
      !k::ParseWeightFormat(q["format"].get<std::string>(), &f))
    return bad("format must be one of fp6, int8, int4");
  const int group = f == k::WeightFormat::kInt4 ? k::kInt4Group : -1;
  if (!q.contains("group_size") || !q["group_size"].is_number_integer() ||
      q["group_size"].get<int>() != group)
    return bad(absl::StrCat("group_size must be ", group, " for ", k::WeightFormatName(f)));
  return f;
}

}  // namespace

absl::StatusOr<uint64_t> SaveQuantizedModel(const std::string& dir,
                                            const tern::v1::ModelConfig& config,
                                            const model::ModelDims& dims,
                                            const std::vector<float>& params,
                                            k::WeightFormat format,
                                            const SafetensorsWriteOptions& options) {
  model::Transformer<float> shape_only(dims);
  const ParamTable& table = shape_only.params();
  if (params.size() != table.total())
    return absl::InvalidArgumentError(
        absl::StrCat(params.size(), " parameters for a model of ", table.total()));
  const std::vector<model::LinearWeight> linears = shape_only.Linears();
  const std::vector<Part> parts = Parts(linears);
  const std::set<const ParamEntry*> replaced = Replaced(parts);
  std::vector<OutTensor> tensors;
  for (const auto& e : table.entries())
    if (replaced.count(&e) == 0)
      tensors.push_back(OutTensor{e.name, "F32", e.shape, params.data() + e.offset, nullptr});
  std::deque<k::QuantizedMatrix> quantized;  // stable addresses for the tensors' data
  uint64_t bytes = 0;
  for (const Part& p : parts) {
    quantized.push_back(k::QuantizeWeights(
        format, params.data() + p.entry->offset, p.rows, p.linear->cols,
        p.linear->transposed ? k::WeightLayout::kInOut : k::WeightLayout::kOutIn));
    AppendTensors(p.name, quantized.back(), &tensors);
    bytes += quantized.back().bytes();
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  TERN_RETURN_IF_ERROR(WriteSafetensorsTensors(dir, tensors, options));
  nlohmann::json cfg = nlohmann::json::parse(HfConfigJson(config, dims, "F32"));
  nlohmann::json q = {{"quant_method", "tern"},
                      {"version", kFormatVersion},
                      {"format", k::WeightFormatName(format)},
                      {"group_size", format == k::WeightFormat::kInt4 ? k::kInt4Group : -1}};
  if (format == k::WeightFormat::kFp6) {
    q["fp6_format"] = "e3m2";
    q["layout"] = "4+2";
  }
  cfg["quantization_config"] = q;
  // config.json last: a directory with a config has its weights.
  TERN_RETURN_IF_ERROR(ckpt::WriteFileAtomic(dir + "/config.json", cfg.dump(2) + "\n"));
  return bytes;
}

absl::Status LoadQuantizedWeights(const std::string& dir, const nlohmann::json& quantization,
                                  LoadedModel* out) {
  TERN_ASSIGN_OR_RETURN(const k::WeightFormat format,
                        ParseQuantization(quantization, dir + "/config.json"));
  model::Transformer<float> shape_only(out->dims);
  const ParamTable& table = shape_only.params();
  const std::vector<model::LinearWeight> linears = shape_only.Linears();
  const std::vector<Part> parts = Parts(linears);
  const std::set<const ParamEntry*> replaced = Replaced(parts);

  // What the directory must hold: name -> (shape, byte plane or not).
  struct Want {
    std::vector<int64_t> shape;
    std::string dtype;  // "U8"/"I8"; empty: any float dtype
  };
  std::map<std::string, Want> want;
  for (const auto& e : table.entries())
    if (replaced.count(&e) == 0) want[e.name] = {e.shape, ""};
  for (const Part& p : parts) {
    k::QuantizedMatrix m = k::AllocateQuantized(format, p.rows, p.linear->cols);
    std::vector<OutTensor> ts;
    AppendTensors(p.name, m, &ts);
    for (const auto& t : ts) want[t.name] = {t.shape, t.dtype == "F32" ? "" : t.dtype};
  }
  TERN_ASSIGN_OR_RETURN(auto tensors, ListSafetensors(dir));
  std::map<std::string, const SafeTensor*> found;
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& t : tensors) {
    auto it = want.find(t.name);
    if (it == want.end()) {
      unexpected.push_back(t.name);
      continue;
    }
    const bool bytes = t.dtype == "U8" || t.dtype == "I8";
    if (t.shape != it->second.shape ||
        (it->second.dtype.empty() ? bytes : t.dtype != it->second.dtype))
      misshaped.push_back(absl::StrCat(t.name, " is ", t.dtype, " [", absl::StrJoin(t.shape, ", "),
                                       "], the model needs ",
                                       it->second.dtype.empty() ? "F32" : it->second.dtype, " [",
                                       absl::StrJoin(it->second.shape, ", "), "]"));
    found[t.name] = &t;
  }
  for (const auto& [name, w] : want)
    if (found.count(name) == 0) missing.push_back(name);
  std::vector<std::string> problems;
  auto list = [&](const char* what, std::vector<std::string> names, const char* sep) {
    if (names.empty()) return;
    const size_t n = names.size();
    if (n > 6) names.resize(6);
    problems.push_back(absl::StrCat(what, absl::StrJoin(names, sep),
                                    n > 6 ? absl::StrCat(sep, "... (", n, " in all)") : ""));
  };
  list("missing: ", missing, ", ");
  list("", misshaped, "; ");
  list("unexpected: ", unexpected, ", ");
  if (!problems.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "quantized weights in ", dir,
        " do not match the model of its config.json: ", absl::StrJoin(problems, "; ")));

  // The fp32 parameters into a table-sized buffer whose matrix slots stay untouched.
  float* rest = static_cast<float*>(std::calloc(table.total(), sizeof(float)));
  if (rest == nullptr)
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", table.total(), " parameters"));
  out->rest = std::shared_ptr<float>(rest, [](float* p) { std::free(p); });
  for (const auto& e : table.entries())
    if (replaced.count(&e) == 0)
      TERN_RETURN_IF_ERROR(ReadTensorF32(*found[e.name], rest + e.offset));

  auto q = std::make_shared<model::QuantizedWeights>();
  q->format = format;
  q->layers.resize(out->dims.L);
  std::map<const model::LinearWeight*, std::vector<k::QuantizedMatrix>> stacked;
  for (const Part& p : parts) {
    k::QuantizedMatrix m = k::AllocateQuantized(format, p.rows, p.linear->cols);
    const PartTensors n = Names(p.name, format);
    TERN_RETURN_IF_ERROR(ReadTensorBytes(*found[n.planes[0]], m.hi.data()));
    if (format == k::WeightFormat::kFp6)
      TERN_RETURN_IF_ERROR(ReadTensorBytes(*found[n.planes[1]], m.lo.data()));
    TERN_RETURN_IF_ERROR(ReadTensorF32(*found[n.scale], m.scales.data()));
    for (float s : m.scales)
      if (!std::isfinite(s))
        return absl::DataLossError(
            absl::StrCat(dir, ": tensor ", n.scale, " holds ", s, " (scales must be finite)"));
    stacked[p.linear].push_back(std::move(m));
  }
  for (const auto& w : linears) SlotOf(*q, w) = model::StackRows(std::move(stacked[&w]));
  out->quantized = std::move(q);
  out->params.clear();
  return absl::OkStatus();
}

}  // namespace tern::engine
