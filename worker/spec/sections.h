// Internal to the spec pipeline: the per-section resolvers ResolveJob calls, and the list of
// findings they append to. Not for use outside worker/spec.
#pragma once

#include <string>
#include <vector>

#include "worker/spec/job_config.h"

namespace tern::spec {

struct Findings {
  std::vector<std::string> errors;    // "field: problem"; any error refuses the spec
  std::vector<std::string> warnings;  // accepted keys without effect
  void Error(std::string message);
  void Warn(std::string message);
};

// resources.* (and the data-parallel size, which the batch rule needs).
void ResolveResources(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                      Findings& f);
// sequence_parallel_size (after the model and resources: splits the world into data-parallel
// ranks and checks the sequence and heads).
void ResolveSequenceParallel(const tern::v1::JobSpec& spec, JobConfig& c, Findings& f);
// zero_optimization.*
void ResolveZero(const tern::v1::JobSpec& spec, JobConfig& c, Findings& f);
// checkpoint.*
void ResolveCheckpoint(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                       Findings& f);
// elastic.*
void ResolveElastic(const tern::v1::JobSpec& spec, const ResolveOptions& ro, JobConfig& c,
                    Findings& f);

}  // namespace tern::spec
