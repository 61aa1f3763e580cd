// Submission-time validation of a JobSpec: everything ternd can check without reading
// files on the workers. Pure function, any thread.
#pragma once

#include "absl/status/status.h"
#include "tern/v1/job.pb.h"

namespace tern::daemon {

// OK, or INVALID_ARGUMENT listing every bad field at once ("field: problem; field: ...").
absl::Status ValidateJobSpec(const tern::v1::JobSpec& spec);

}  // namespace tern::daemon
