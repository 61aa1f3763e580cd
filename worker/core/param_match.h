// Strict matching of saved tensors (a checkpoint's parameter table, a safetensors file) against
// the parameter table of the job's model, before anything is loaded: every missing, extra and
// mis-shaped tensor is listed at once (a silent partial load is the failure this prevents).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/core/param_table.h"

namespace tern {

struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};

// The names and shapes of a table's entries, in table order.
std::vector<TensorShape> ShapesOf(const ParamTable& table);

// OK when `found` holds exactly the tensors of `model` with the same shapes (in any order).
// Otherwise FAILED_PRECONDITION: "<source> does not match this model (N parameters): missing
// (k): a, b; extra (k): c; mis-shaped (k): d [saved 3x4, model 4x4] <hint>" (at most 256 names
// of each kind are spelled out; the counts are always complete).
absl::Status MatchTensors(const ParamTable& model, const std::vector<TensorShape>& found,
                          const std::string& source, const std::string& hint);

}  // namespace tern
