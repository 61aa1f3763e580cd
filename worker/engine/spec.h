// Job spec files: JSON (protobuf's JSON mapping of tern.v1.JobSpec, DeepSpeed key names),
// `--set key.path=value` overrides, defaults and whole-spec validation.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"
#include "worker/model/config.h"
#include "worker/optim/adamw.h"

namespace tern::engine {

// Parses JSON text into a JobSpec after applying overrides ("a.b.c=value"; the value is
// parsed as JSON when it parses, else taken as a string). Unknown fields are errors that name
// their full path; `source` names the file in messages.
absl::StatusOr<tern::v1::JobSpec> ParseJobSpec(const std::string& json_text,
                                               const std::vector<std::string>& overrides,
                                               const std::string& source);
absl::StatusOr<tern::v1::JobSpec> LoadJobSpec(const std::string& path,
                                              const std::vector<std::string>& overrides);
// The spec as JSON with proto field names (what ranks and ternd exchange).
std::string JobSpecToJson(const tern::v1::JobSpec& spec);

// Everything a run needs, with defaults resolved.
struct JobConfig {
  tern::v1::JobSpec spec;
  model::ModelDims dims;
  optim::AdamWConfig adamw;
  int seq_len = 0;
  int micro_batch = 1;       // train_micro_batch_size_per_gpu
  int accum = 1;             // gradient_accumulation_steps
  int dp_size = 1;           // data-parallel ranks
  int64_t global_batch = 1;  // samples per optimizer step = micro x accum x dp
  int64_t train_iters = 0;
  int64_t eval_interval = 0;
  int eval_iters = 8;
  int steps_per_print = 10;
  uint64_t seed = 1234;
  float grad_clip = 0;
  int zero_stage = 0;
  std::string data_path, val_path;
  int nodes = 1, ranks_per_node = 1, threads_per_rank = 0;
};

// Validates the whole spec for `world_size` ranks (0 = take resources.nodes x ranks_per_node)
// before anything is allocated; INVALID_ARGUMENT lists every offending field.
// `check_files` also checks that the data files exist.
absl::StatusOr<JobConfig> ResolveJob(const tern::v1::JobSpec& spec, int world_size,
                                     bool check_files = true);

}  // namespace tern::engine
