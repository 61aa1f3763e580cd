// The training state of one rank — flat parameter, gradient and AdamW buffers — and how it is
// partitioned across data-parallel ranks (ZeRO stages 0-3). The trainer only talks to this
// interface; the model sees it as a ParamSource.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/core/param_table.h"
#include "worker/model/transformer.h"
#include "worker/optim/adamw.h"

namespace tern::zero {

// Bytes this rank holds for each kind of state.
struct MemoryReport {
  uint64_t param_bytes = 0;   // fp32 parameters (full or shard, plus gathered working copies)
  uint64_t grad_bytes = 0;    // fp32 gradients
  uint64_t optim_bytes = 0;   // AdamW exp_avg + exp_avg_sq
  uint64_t total() const { return param_bytes + grad_bytes + optim_bytes; }
};

// A range of one state's global flat buffer that this rank owns (for checkpoints).
struct OwnedRange {
  uint64_t lo = 0;  // first global element
  uint64_t n = 0;   // elements
};

class TrainingState {
 public:
  virtual ~TrainingState() = default;
  // What the model reads parameters from and accumulates gradients into.
  virtual model::ParamSource<float>& source() = 0;
  // Called before each micro-step's forward; `last` marks the final micro-step of the step
  // (gradients are reduced during its backward).
  virtual void BeginMicroStep(bool last) = 0;
  // After the last micro-step's backward: completes gradient reduction and returns the squared
  // global gradient norm (over all ranks).
  virtual absl::StatusOr<double> FinishBackward() = 0;
  // AdamW on the owned shard with gradients multiplied by grad_mult (clipping), then makes
  // the updated parameters visible where the next forward reads them; zeroes gradients.
  virtual absl::Status OptimizerStep(const optim::AdamWConfig& cfg, float lr, int64_t step,
                                     float grad_mult) = 0;
  virtual MemoryReport memory() const = 0;
  // The full parameter vector (gathered from every rank if sharded).
  virtual absl::Status GatherParams(std::vector<float>* out) = 0;
  // Owned range and pointers into this rank's master params and AdamW moments (checkpoints).
  virtual OwnedRange owned() const = 0;
  virtual float* master() = 0;
  virtual float* exp_avg() = 0;
  virtual float* exp_avg_sq() = 0;
  // Re-distributes `master` after a load overwrote it (e.g. refills replicated copies).
  virtual absl::Status SyncAfterLoad() = 0;
};

// Single rank, nothing partitioned.
std::unique_ptr<TrainingState> CreateLocalState(const ParamTable& table,
                                                const std::vector<float>& init_params);

}  // namespace tern::zero
