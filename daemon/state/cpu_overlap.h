// Workers that report the same host and overlapping CPU sets (RegisterRequest.cpu_sets):
// their ranks would compete for the same cores. ternd shows the warnings in ListWorkers
// (WorkerInfo.warnings, `tern workers`) and as a `cpu_overlap` event on jobs placed there.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

// RegisterRequest.cpu_sets: none, or one valid cpulist per slot (INVALID_ARGUMENT naming
// the worker and the set otherwise).
absl::Status CheckCpuSets(const tern::v1::RegisterRequest& req);

// For each connected worker whose CPUs overlap another connected worker's on the same host:
// one line per such peer, e.g. "CPUs 0-1 overlap worker b on host h (--cpus)". Workers that
// report no CPU sets (no binding) are left out. Pure.
std::map<std::string, std::vector<std::string>> CpuOverlapWarnings(
    const std::vector<tern::v1::WorkerInfo>& workers);

}  // namespace tern::daemon
