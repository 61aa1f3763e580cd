#include "client/engine/spec_cli.h"

#include "spdlog/fmt/fmt.h"
#include "worker/spec/spec.h"

namespace tern::cli {

absl::StatusOr<spec::JobConfig> LoadResolvedSpec(const std::string& path,
                                                 const std::vector<std::string>& sets,
                                                 const spec::ResolveOptions& options,
                                                 const SpecAdjust& adjust) {
  auto parsed = spec::LoadJobSpec(path, sets);
  if (!parsed.ok()) return parsed.status();
  if (adjust) {
    if (absl::Status st = adjust(*parsed); !st.ok()) return st;
  }
  auto cfg = spec::ResolveJob(*parsed, options);
  if (cfg.ok()) PrintSpecWarnings(cfg->warnings);
  return cfg;
}

absl::Status ApplyResumeFlag(bool resume, spec::JobConfig* cfg, bool if_any) {
  std::string& load = cfg->checkpoint.load;
  if (if_any && !cfg->checkpoint.dir.empty()) {
    if (load.empty() || load == "latest") load = spec::kLoadLatestIfAny;
    return absl::OkStatus();
  }
  if (!resume) {
    load.clear();
    return absl::OkStatus();
  }
  if (cfg->checkpoint.dir.empty())
    return absl::InvalidArgumentError(
        "--resume: the job spec sets no checkpoint.dir --> hint: --set checkpoint.dir=DIR");
  if (load.empty()) load = "latest";
  return absl::OkStatus();
}

bool IsInputError(const absl::Status& st) {
  return absl::IsInvalidArgument(st) || absl::IsNotFound(st) || absl::IsFailedPrecondition(st) ||
         absl::IsDataLoss(st) || absl::IsOutOfRange(st) || absl::IsResourceExhausted(st);
}

void PrintSpecWarnings(const std::vector<std::string>& warnings) {
  for (const auto& w : warnings) fmt::print(stderr, "warning: {}\n", w);
}

}  // namespace tern::cli
