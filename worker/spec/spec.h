// Job spec files: JSON (protobuf's JSON mapping of tern.v1.JobSpec, DeepSpeed key names) with
// `--set key.path=value` overrides. The first half of the spec pipeline; job_config.h resolves
// and validates what this parses. Every program that reads a spec (tern train / rank / describe
// / submit, ternd's SubmitJob) goes through here. Pure functions, any thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"

namespace tern::spec {

// Largest spec file or text accepted (a spec is a few KiB; this bounds what a stray device
// file or a huge file can make us read).
inline constexpr size_t kMaxSpecBytes = 4 << 20;
// Deepest JSON nesting accepted (the schema nests 4 deep).
inline constexpr int kMaxSpecDepth = 32;

// Parses JSON text into a JobSpec after applying overrides ("a.b.c=value"; the value is
// parsed as JSON when it parses, else taken as a string). Unknown fields are errors that name
// their full path; `source` names the file in messages. INVALID_ARGUMENT on any bad input.
absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& json_text,
                                               const std::vector<std::string>& overrides,
                                               const std::string& source);
// Reads `path` (a regular file of at most kMaxSpecBytes) and parses it. NOT_FOUND when it
// cannot be opened.
absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides);
// The spec as JSON with proto field names (what ranks and ternd exchange).
std::string JobSpecToJson(const tern::v1::JobSpec& spec);

// Reads a small text file (a spec, a model config) of at most `limit` bytes; refuses what is not
// a regular file. `what` names it in messages ("job spec", "model.config_file").
absl::StatusOr<std::string> ReadSmallTextFile(const std::string& path, const std::string& what,
                                              size_t limit = kMaxSpecBytes);

}  // namespace tern::spec
