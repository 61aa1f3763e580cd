// Job spec files for `tern submit`: JSON in protobuf's JSON mapping of tern.v1.JobSpec
// (unknown fields are errors), with `--set key.path=value` overrides applied first.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"

namespace tern::cluster {

// Each override is "dotted.key.path=value"; the value is parsed as JSON when it parses
// (numbers, true, [..], {..}), else taken as a string. INVALID_ARGUMENT naming the file and
// the field for bad JSON, unknown fields or malformed overrides.
absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides);
// The same, for JSON text (`origin` names it in errors).
absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& json, const std::string& origin,
                                               const std::vector<std::string>& overrides);

}  // namespace tern::cluster
