// The spec pipeline as every CLI command uses it (tern train, rank, describe, submit): load the
// file with --set overrides, let the command adjust the spec (--resume, --ranks), resolve and
// validate it, print each warning ("warning: KEY: ...") on stderr.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/spec/job_config.h"

namespace tern::cli {

using SpecAdjust = std::function<absl::Status(tern::v1::JobSpec&)>;

absl::StatusOr<spec::JobConfig> LoadResolvedSpec(const std::string& path,
                                                 const std::vector<std::string>& sets,
                                                 const spec::ResolveOptions& options,
                                                 const SpecAdjust& adjust = nullptr);

// --resume: loads checkpoint.load ("latest" unless the spec names a step); without it nothing
// is loaded (a spec's checkpoint.load is validated either way). INVALID_ARGUMENT when resuming
// without checkpoint.dir.
// With `if_any` (tern rank --resume-if-any): the newest complete checkpoint when there is
// one, else a fresh run (no-op without checkpoint.dir).
absl::Status ApplyResumeFlag(bool resume, spec::JobConfig* cfg, bool if_any = false);

// Whether a run that failed to start was refused for its input (spec, data, checkpoint, a job
// that cannot fit the host): exit code 2, nothing was written; otherwise 1.
bool IsInputError(const absl::Status& st);

// Prints the warnings of a resolved spec on stderr, one line each.
void PrintSpecWarnings(const std::vector<std::string>& warnings);

}  // namespace tern::cli
