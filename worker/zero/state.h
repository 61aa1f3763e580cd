// The training state of one rank — flat parameter, gradient and AdamW buffers — and how it is
// partitioned across data-parallel ranks (ZeRO stages 0-3). The trainer only talks to this
// interface; the model sees it as a ParamSource.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/core/param_table.h"
#include "worker/model/transformer.h"
#include "worker/optim/adamw.h"
#include "worker/zero/options.h"

namespace tern::comm {
class Communicator;
}

namespace tern::zero {

// Bytes this rank holds for each kind of state.
struct MemoryReport {
  uint64_t param_bytes = 0;  // fp32 parameters (full or shard, plus stage-3 persistent units)
  uint64_t grad_bytes = 0;   // fp32 gradients
  uint64_t optim_bytes = 0;  // AdamW exp_avg + exp_avg_sq
  // Stages 1-3: the working pool, buffers of the largest (padded) unit each, for gathered
  // stage-3 parameters, unit gradients and reduce-scatter outputs. It grows to its high-water
  // mark in the first two steps and is not part of total() (the partitioned state).
  uint64_t gather_pool_bytes = 0;
  // ZeRO++: the packed send/receive buffers of the quantized collectives (one set, sized for
  // the largest unit; not part of total()).
  uint64_t quant_scratch_bytes = 0;
  // hpZ: the secondary copy of every non-persistent unit over the node-local group (1/D of
  // the model per rank; allocated once, refreshed after every optimizer step).
  uint64_t hpz_bytes = 0;
  uint64_t total() const { return param_bytes + grad_bytes + optim_bytes; }
};

// A range of the global flat buffers whose optimizer state this rank owns (for checkpoints):
// pointers to its fp32 master weights and AdamW moments.
struct StateSegment {
  uint64_t global_offset = 0;  // first global element
  uint64_t numel = 0;
  float* master = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
};

// ZeRO++ collectives since the state was created: quantized, and fallen back to the plain
// collective (a layout the quantized path cannot take: qgZ on a single node, or ranks not
// numbered node-major). qwZ needs no fallback: chunks are padded to its block.
struct ZeroPPCounters {
  uint64_t quantized_gathers = 0;
  uint64_t quantized_reductions = 0;
  uint64_t fallback_reductions = 0;
  uint64_t hpz_gathers = 0;           // backward gathers served inside the node
  uint64_t hpz_fallback_gathers = 0;  // gathers over all data-parallel ranks although hpZ is on
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
  // ZeRO++ collective counts (all zero without ZeRO++).
  virtual ZeroPPCounters zeropp_counters() const { return {}; }
  // The full parameter vector (gathered from every rank if sharded).
  virtual absl::Status GatherParams(std::vector<float>* out) = 0;
  // The state this rank owns. With `replicated` set, every data-parallel rank holds the same
  // values (stage 0), so a checkpoint needs only one share of it from each rank.
  virtual std::vector<StateSegment> owned_segments() = 0;
  virtual bool replicated() const = 0;
  // Makes parameters consistent again after a load overwrote the owned master segments.
  virtual absl::Status SyncAfterLoad() = 0;
};

// The kernels a training state runs: the operation tables of the backend it lives on.
struct ZeroKernels {
  const kernels::Ops<float>* ops = &kernels::CpuOps<float>();
  const kernels::QuantizeOps* quantize = &kernels::CpuQuantizeOps();
};

// Single rank, nothing partitioned.
std::unique_ptr<TrainingState> CreateLocalState(const ParamTable& table,
                                                const std::vector<float>& init_params,
                                                const ZeroKernels& kernels = {});

// The communicators ZeRO works over (each must outlive the state). Data-parallel ranks are
// numbered node-major: data-parallel rank p is local rank p % D of node p / D, D = the size of
// intra_node. intra_node and inter_node may be null (then ZeRO++ falls back to the plain
// collectives over data_parallel).
struct ZeroGroups {
  comm::Communicator* data_parallel = nullptr;
  comm::Communicator* intra_node = nullptr;  // the data-parallel ranks on this node
  comm::Communicator* inter_node = nullptr;  // this local rank on every node
};

// ZeRO stage 0-3 over groups.data_parallel. Every rank passes the same init_params; each keeps
// what its stage needs.
absl::StatusOr<std::unique_ptr<TrainingState>> CreateZeroState(
    const ParamTable& table, const std::vector<float>& init_params, const ZeroOptions& options,
    const ZeroGroups& groups, const ZeroKernels& kernels = {});

}  // namespace tern::zero
