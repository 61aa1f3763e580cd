// `tern ckpt list DIR` and `tern ckpt verify DIR [--step step-NNNNNN]`: inspect a checkpoint
// root written by `tern train` (see worker/checkpoint/manifest.h for the layout).
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "nlohmann/json.hpp"
#include "spdlog/fmt/fmt.h"
#include "worker/checkpoint/checkpoint.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/manifest.h"

namespace tern::cli {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string LatestName(const std::string& root) {
  auto text = ckpt::ReadSmallFile(root + "/" + ckpt::kLatestName);
  if (!text.ok()) return "";
  std::string s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The last path component, trailing slashes ignored.
std::string BaseName(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

int BadInput(const std::string& msg) {
  fmt::print(stderr, "error: {}\n", msg);
  return 2;
}

int RunList(const std::string& root, bool json) {
  if (!Exists(root)) return BadInput(absl::StrCat(root, " does not exist"));
  auto steps = ckpt::ListCheckpoints(root);
  if (!steps.ok()) return BadInput(std::string(steps.status().message()));
  const std::string latest = LatestName(root);
  if (json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& s : *steps) {
      arr.push_back({{"name", s.name},
                     {"step", s.step},
                     {"complete", s.complete},
                     {"problem", s.problem},
                     {"bytes", s.bytes},
                     {"files", s.files},
                     {"latest", s.name == latest}});
    }
    fmt::print("{}\n", arr.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }
  fmt::print("{:<14} {:>8} {:<10} {:>14} {:>6}\n", "NAME", "STEP", "STATE", "BYTES", "FILES");
  for (const auto& s : *steps) {
    fmt::print("{:<14} {:>8} {:<10} {:>14} {:>6}{}{}\n", s.name, s.step,
               s.complete ? "complete" : "incomplete", s.bytes, s.files,
               s.name == latest ? "  <- latest" : "", s.complete ? "" : "  (" + s.problem + ")");
  }
  if (steps->empty()) fmt::print("(no checkpoints under {})\n", root);
  return 0;
}

// Verifies one step directory; returns "" when every fragment checks out.
std::string VerifyStep(const std::string& step_dir, uint64_t* fragments) {
  auto m = ckpt::ReadManifest(step_dir);
  if (m.ok())
    for (const auto& st : m->states) *fragments += st.fragments.size();
  absl::Status st = ckpt::VerifyCheckpoint(step_dir);
  return st.ok() ? "" : std::string(st.message());
}

int RunVerify(const std::string& root, const std::string& step, bool json) {
  if (!Exists(root)) return BadInput(absl::StrCat(root, " does not exist"));
  std::vector<std::string> dirs;        // step directories to check
  std::vector<std::string> incomplete;  // step directories without a manifest
  if (!step.empty()) {
    if (!Exists(root + "/" + step))
      return BadInput(absl::StrCat(root, "/", step, " does not exist"));
    dirs.push_back(step);
  } else if (Exists(root + "/" + ckpt::kManifestName) ||
             ckpt::ParseStepDirName(BaseName(root)) >= 0) {
    dirs.push_back("");  // DIR is itself a step directory (a missing manifest is reported)
  } else {
    auto steps = ckpt::ListCheckpoints(root);
    if (!steps.ok()) return BadInput(std::string(steps.status().message()));
    for (const auto& s : *steps) {
      // A manifest makes a step committed: a problem with it is corruption. A step without one
      // was never committed (a crash or a write in progress) and can never be loaded.
      if (s.complete || Exists(root + "/" + s.name + "/" + ckpt::kManifestName)) {
        dirs.push_back(s.name);
      } else {
        incomplete.push_back(s.name);
      }
    }
    if (dirs.empty() && incomplete.empty())
      return BadInput(absl::StrCat("no checkpoint under ", root));
  }
  int bad = 0;
  nlohmann::json out = nlohmann::json::array();
  for (const auto& name : dirs) {
    const std::string dir = name.empty() ? root : root + "/" + name;
    uint64_t fragments = 0;
    const std::string problem = VerifyStep(dir, &fragments);
    if (!problem.empty()) ++bad;
    if (json) {
      out.push_back(
          {{"dir", dir}, {"ok", problem.empty()}, {"fragments", fragments}, {"problem", problem}});
    } else if (problem.empty()) {
      fmt::print("{}: ok ({} fragments)\n", dir, fragments);
    } else {
      fmt::print("{}: CORRUPT: {}\n", dir, problem);
    }
  }
  for (const auto& name : incomplete) {
    ++bad;
    if (json) {
      out.push_back({{"dir", root + "/" + name}, {"ok", false}, {"incomplete", true}});
    } else {
      fmt::print("{}/{}: INCOMPLETE: no {} (never committed; not loadable)\n", root, name,
                 ckpt::kManifestName);
    }
  }
  if (json) fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return bad > 0 ? 1 : 0;
}

}  // namespace

void AddCkptToolCommands(CLI::App& ckpt, int* exit_code);  // ckpt_tools.cc

void AddCkptCommands(CLI::App& app, int* exit_code) {
  auto* ckpt = app.add_subcommand("ckpt", "Inspect, verify, plan and upgrade checkpoints");
  ckpt->require_subcommand(1);
  AddCkptToolCommands(*ckpt, exit_code);

  auto lroot = std::make_shared<std::string>();
  auto ljson = std::make_shared<bool>(false);
  auto* list = ckpt->add_subcommand("list", "List the steps under a checkpoint directory");
  list->add_option("dir", *lroot, "Checkpoint root (checkpoint.dir)")->required();
  list->add_flag("--json", *ljson, "Print JSON");
  list->callback([=] { *exit_code = RunList(*lroot, *ljson); });

  auto vroot = std::make_shared<std::string>();
  auto vstep = std::make_shared<std::string>();
  auto vjson = std::make_shared<bool>(false);
  auto* verify = ckpt->add_subcommand(
      "verify", "Check every CRC32C block (v1: fragment) (exit 0 ok, 1 corrupt, 2 bad arguments)");
  verify->add_option("dir", *vroot, "Checkpoint root, or one step directory")->required();
  verify->add_option("--step", *vstep,
                     "Only this step (step-NNNNNN); default: every committed one");
  verify->add_flag("--json", *vjson, "Print JSON");
  verify->callback([=] { *exit_code = RunVerify(*vroot, *vstep, *vjson); });
}

}  // namespace tern::cli
