// `tern ckpt inspect DIR`, `tern ckpt reshard DIR --ranks N [--zero-stage S] --dry-run` and
// `tern ckpt upgrade DIR`: read a committed checkpoint's manifest (worker/checkpoint/manifest.h)
// without loading its state. DIR is a checkpoint root (its `latest` step) or a step directory.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "nlohmann/json.hpp"
#include "spdlog/fmt/fmt.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/manifest.h"
#include "worker/engine/export.h"
#include "worker/engine/quantized_model.h"
#include "worker/engine/reshard_plan.h"
#include "worker/model/transformer.h"

namespace tern::cli {
namespace {

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int Fail(const absl::Status& st) {
  fmt::print(stderr, "error: {}\n", std::string(st.message()));
  return absl::IsInvalidArgument(st) || absl::IsNotFound(st) ? 2 : 1;
}

// DIR -> (root, step name): a directory holding manifest.json is a step directory.
std::pair<std::string, std::string> SplitDir(const std::string& dir) {
  std::filesystem::path p(dir);
  if (p.filename().empty()) p = p.parent_path();
  struct stat st;
  if (::stat((p / ckpt::kManifestName).c_str(), &st) == 0) {
    return {p.parent_path().string(), p.filename().string()};
  }
  return {p.string(), ckpt::kLatestName};
}

absl::StatusOr<std::unique_ptr<ckpt::Checkpoint>> OpenDir(const std::string& dir) {
  const auto [root, name] = SplitDir(dir);
  return ckpt::Checkpoint::Open(root, name);
}

int RunInspect(const std::string& dir, bool json) {
  auto ck = OpenDir(dir);
  if (!ck.ok()) return Fail(ck.status());
  const ckpt::Manifest& m = (*ck)->manifest();
  nlohmann::json params = nlohmann::json::array();
  for (const auto& e : m.params.entries()) {
    nlohmann::json dtypes = nlohmann::json::object();
    for (const auto& st : m.states) dtypes[st.name] = st.dtype;
    params.push_back(
        {{"name", e.name}, {"shape", e.shape}, {"numel", e.numel}, {"dtypes", dtypes}});
  }
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : m.files)
    files.push_back({{"name", f.name}, {"rank", f.rank}, {"bytes", f.size}});
  nlohmann::json states = nlohmann::json::object();
  for (const auto& st : m.states) {
    states[st.name] = {{"dtype", st.dtype},
                       {"block_bytes", st.block_bytes},
                       {"segments", st.segments.size()},
                       {"fragments", st.fragments.size()}};
  }
  const nlohmann::json& extra = m.extra;
  nlohmann::json out = {{"dir", (*ck)->dir()},
                        {"manifest_version", m.version},
                        {"step", m.step},
                        {"layout", m.world},
                        {"params", params},
                        {"total_elements", m.params.total()},
                        {"states", states},
                        {"files", files},
                        {"data_position", extra.value("data_position", nlohmann::json())},
                        {"batch", extra.value("batch", nlohmann::json())},
                        {"metrics", extra.value("metrics", nlohmann::json())},
                        {"spec", extra.value("job_spec", nlohmann::json())}};
  if (json) {
    fmt::print("{}\n", Dump(out));
    return 0;
  }
  fmt::print("{}: step {}, manifest version {}{}\n", (*ck)->dir(), m.step, m.version,
             m.version < 2 ? " (upgrade with `tern ckpt upgrade` for exact reads)" : "");
  fmt::print("layout: {}\n", Dump(m.world));
  fmt::print("data position: {}\n", Dump(out["data_position"]));
  if (!out["batch"].is_null()) fmt::print("batch: {}\n", Dump(out["batch"]));
  fmt::print("states:");
  for (const auto& st : m.states) {
    fmt::print(" {} ({}, {} segments{})", st.name, st.dtype, st.segments.size(),
               st.block_bytes ? absl::StrCat(", CRC32C per ", st.block_bytes, " bytes") : "");
  }
  fmt::print("\n{:<56} {:>16} {:>12}\n", "PARAMETER", "SHAPE", "ELEMENTS");
  for (const auto& e : m.params.entries()) {
    fmt::print("{:<56} {:>16} {:>12}\n", e.name, absl::StrJoin(e.shape, "x"), e.numel);
  }
  fmt::print("{} parameters, {} elements\n", m.params.entries().size(), m.params.total());
  fmt::print("{:<16} {:>6} {:>14}\n", "FILE", "RANK", "BYTES");
  for (const auto& f : m.files) fmt::print("{:<16} {:>6} {:>14}\n", f.name, f.rank, f.size);
  fmt::print("spec: {}\n", Dump(out["spec"]));
  return 0;
}

int RunReshard(const std::string& dir, int ranks, int stage, bool dry_run, bool json) {
  if (!dry_run) {
    return Fail(absl::InvalidArgumentError(
        "tern ckpt reshard only plans (--dry-run): a resume reads any layout directly, no "
        "rewrite is needed --> hint: resume with the new resources and ZeRO stage"));
  }
  auto ck = OpenDir(dir);
  if (!ck.ok()) return Fail(ck.status());
  if (stage < 0) stage = (*ck)->world().value("zero_stage", 0);
  auto plans = engine::PlanReshard(**ck, ranks, stage);
  if (!plans.ok()) return Fail(plans.status());
  const auto& files = (*ck)->manifest().files;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : *plans) {
    nlohmann::json ranges = nlohmann::json::array();
    for (const auto& x : p.extents) {
      ranges.push_back({{"file", files[x.file].name},
                        {"offset", x.offset},
                        {"bytes", x.bytes},
                        {"wanted", x.wanted}});
    }
    out.push_back({{"rank", p.rank},
                   {"owned_bytes", p.owned_bytes},
                   {"read_bytes", p.read_bytes},
                   {"ranges", ranges}});
  }
  if (json) {
    fmt::print("{}\n", Dump({{"dir", (*ck)->dir()},
                             {"from", (*ck)->world()},
                             {"to", {{"ranks", ranks}, {"zero_stage", stage}}},
                             {"ranks", out}}));
    return 0;
  }
  fmt::print("{}: {} -> {} ranks at ZeRO stage {}{}\n", (*ck)->dir(), Dump((*ck)->world()), ranks,
             stage, stage == 0 ? " (each rank reads 1/N, then the ranks all-gather)" : "");
  uint64_t total = 0;
  for (const auto& p : *plans) {
    fmt::print("rank {}: reads {} bytes for {} owned ({} ranges)\n", p.rank, p.read_bytes,
               p.owned_bytes, p.extents.size());
    for (const auto& x : p.extents) {
      fmt::print("  {} [{}, {}) {} bytes\n", files[x.file].name, x.offset, x.offset + x.bytes,
                 x.bytes);
    }
    total += p.read_bytes;
  }
  fmt::print("total: {} bytes\n", total);
  return 0;
}

int RunExport(const std::string& dir, const std::string& out, const std::string& dtype,
              uint64_t max_shard_bytes, const std::string& quantize) {
  auto dt = engine::SafetensorsDtype(dtype);
  if (!dt.ok()) return Fail(dt.status());
  kernels::WeightFormat format = kernels::WeightFormat::kFp6;
  if (!quantize.empty()) {
    if (!kernels::ParseWeightFormat(quantize, &format))
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--quantize ", quantize, ": not one of fp6, int8, int4")));
    if (*dt != "F32")
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--dtype ", dtype, " with --quantize: the parameters left unquantized are F32")));
  }
  for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
    struct stat st;
    if (::stat((out + "/" + f).c_str(), &st) == 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--out ", out, " already holds ", f, " --> hint: export into a new directory")));
    }
  }
  engine::SafetensorsWriteOptions wo;
  wo.dtype = *dt;
  if (max_shard_bytes > 0) wo.max_shard_bytes = max_shard_bytes;
  if (!quantize.empty()) {
    // A checkpoint or an fp32 model directory.
    auto model = engine::LoadModelAny(dir);
    if (!model.ok()) return Fail(model.status());
    if (model->quantized)
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(dir, " is quantized already --> hint: quantize from fp32 weights")));
    auto bytes =
        engine::SaveQuantizedModel(out, model->config, model->dims, model->params, format, wo);
    if (!bytes.ok()) return Fail(bytes.status());
    model::Transformer<float> shape_only(model->dims);
    uint64_t weights = 0;
    for (const auto& w : shape_only.Linears()) weights += uint64_t(w.rows) * w.cols;
    fmt::print(
        "exported {} parameters from {} to {}: {} matrix weights in {} ({} bytes, {:.2f} "
        "bits per weight), the rest in f32\n",
        shape_only.params().total(), dir, out, weights, quantize, *bytes,
        8.0 * double(*bytes) / double(weights));
    return 0;
  }
  const auto [root, name] = SplitDir(dir);
  auto model = engine::LoadModelFromCheckpoint(root, name);
  if (!model.ok()) return Fail(model.status());
  model::Transformer<float> shape_only(model->dims);
  absl::Status st =
      engine::SaveModel(out, model->config, model->dims, shape_only.params(), model->params, wo);
  if (!st.ok()) return Fail(st);
  fmt::print("exported {} parameters ({}) from {} to {}\n", shape_only.params().total(), *dt, dir,
             out);
  return 0;
}

int RunUpgrade(const std::string& dir) {
  const auto [root, name] = SplitDir(dir);
  std::vector<std::string> steps;
  if (name != ckpt::kLatestName) {
    steps.push_back(root + "/" + name);
  } else {
    auto list = ckpt::ListCheckpoints(root);
    if (!list.ok()) return Fail(list.status());
    for (const auto& s : *list)
      if (s.complete) steps.push_back(root + "/" + s.name);
    if (steps.empty())
      return Fail(absl::NotFoundError(absl::StrCat("no complete checkpoint under ", root)));
  }
  int rc = 0;
  for (const auto& s : steps) {
    auto up = ckpt::UpgradeManifest(s);
    if (!up.ok()) {
      fmt::print(stderr, "error: {}\n", std::string(up.status().message()));
      rc = 1;
    } else if (*up) {
      fmt::print(
          "{}: manifest rewritten as version {} (a CRC32C per 256 KiB block; shard files "
          "unchanged, every old checksum verified)\n",
          s, ckpt::kManifestVersion);
    } else {
      fmt::print("{}: already version {}, nothing to do\n", s, ckpt::kManifestVersion);
    }
  }
  return rc;
}

}  // namespace

void AddCkptToolCommands(CLI::App& ckpt, int* exit_code) {
  auto idir = std::make_shared<std::string>();
  auto ijson = std::make_shared<bool>(false);
  auto* inspect = ckpt.add_subcommand(
      "inspect", "Step, layout, parameter shapes and dtypes, bytes per rank, data position, spec");
  inspect->add_option("dir", *idir, "Checkpoint root (its latest step) or a step directory")
      ->required();
  inspect->add_flag("--json", *ijson, "Print JSON");
  inspect->callback([=] { *exit_code = RunInspect(*idir, *ijson); });

  auto rdir = std::make_shared<std::string>();
  auto rranks = std::make_shared<int>(0);
  auto rstage = std::make_shared<int>(-1);
  auto rdry = std::make_shared<bool>(false);
  auto rjson = std::make_shared<bool>(false);
  auto* reshard = ckpt.add_subcommand(
      "reshard", "Per rank of a new layout: the byte ranges a resume would read, and their total");
  reshard->add_option("dir", *rdir, "Checkpoint root (its latest step) or a step directory")
      ->required();
  reshard->add_option("--ranks", *rranks, "Data-parallel ranks of the new layout")->required();
  reshard->add_option("--zero-stage", *rstage, "ZeRO stage of the new layout (default: saved)");
  reshard->add_flag("--dry-run", *rdry, "Only print the plan (required)");
  reshard->add_flag("--json", *rjson, "Print JSON");
  reshard->callback([=] { *exit_code = RunReshard(*rdir, *rranks, *rstage, *rdry, *rjson); });

  auto edir = std::make_shared<std::string>();
  auto eout = std::make_shared<std::string>();
  auto edtype = std::make_shared<std::string>("f32");
  auto eshard = std::make_shared<uint64_t>(0);
  auto equant = std::make_shared<std::string>();
  auto* exp =
      ckpt.add_subcommand("export",
                          "Write the fp32 master weights in the Hugging Face layout (config.json + "
                          "safetensors, sharded with an index above --max-shard-bytes)");
  exp->add_option("dir", *edir, "Checkpoint root (its latest step) or a step directory")
      ->required();
  exp->add_option("--out", *eout, "New output directory")->required();
  exp->add_option("--dtype", *edtype, "f32 (default), bf16 or f16");
  exp->add_option("--max-shard-bytes", *eshard, "Bytes of tensor data per file (default 5 GiB)");
  exp->add_option("--quantize", *equant,
                  "fp6, int8 or int4: weight-only quantized matrices for tern generate / eval "
                  "(DIR may also be an fp32 model directory)");
  exp->callback([=] { *exit_code = RunExport(*edir, *eout, *edtype, *eshard, *equant); });

  auto udir = std::make_shared<std::string>();
  auto* upgrade = ckpt.add_subcommand(
      "upgrade", "Rewrite version-1 manifests as version 2 (block checksums for exact reads)");
  upgrade->add_option("dir", *udir, "Checkpoint root (every complete step) or a step directory")
      ->required();
  upgrade->callback([=] { *exit_code = RunUpgrade(*udir); });
}

}  // namespace tern::cli
