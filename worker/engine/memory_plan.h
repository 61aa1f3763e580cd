// What one rank of a job will allocate, computed from the resolved spec before anything is
// allocated, and the check of that against the memory this host has left. `tern describe`
// prints the plan; the Trainer refuses to start a run that cannot fit (a model larger than
// the machine otherwise ends in std::bad_alloc or in the kernel's OOM killer mid-run).
//
// The numbers mirror the allocations exactly where they are fixed (the partitioned state of
// worker/zero, the model's activation buffers) and bound them where they depend on timing
// (the ZeRO gather pool's high-water mark); tests/worker/engine/memory_plan_test.cc holds
// the plan to what the engine allocates.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "worker/spec/job_config.h"

namespace tern::engine {

struct RankMemoryPlan {
  // The partitioned training state (zero::MemoryReport's fields).
  uint64_t param_bytes = 0;
  uint64_t grad_bytes = 0;
  uint64_t optim_bytes = 0;
  // Stages 1-3: the working pool of full-unit buffers (gathered parameters, unit gradients,
  // reduce-scatter outputs), at its cap (zero::PoolCapacity).
  uint64_t gather_pool_bytes = 0;
  // ZeRO++: the packed buffers of the quantized collectives (zero::QuantScratchBytes).
  uint64_t quant_scratch_bytes = 0;
  // ZeRO++ hpZ: the secondary copies over the node-local group (zero::HpzBytes).
  uint64_t hpz_bytes = 0;
  // Activations and scratch for one micro-batch on the device (Transformer::activation_bytes()).
  uint64_t activation_bytes = 0;
  // FPDT with offload: its store in the host tier (Transformer::fpdt_store_bytes()).
  uint64_t offload_bytes = 0;
  // The full initial parameter vector, held while the state is built.
  uint64_t init_bytes = 0;
  // Asynchronous checkpoints: the staging copy of the rank's share of master weights and
  // AdamW moments.
  uint64_t checkpoint_staging_bytes = 0;
  uint64_t state_bytes() const {
    return param_bytes + grad_bytes + optim_bytes + checkpoint_staging_bytes;
  }
  // The most held at once: the state plus the larger of the initial vector (at start-up) and
  // the training buffers (every step).
  uint64_t peak_bytes() const {
    const uint64_t training =
        gather_pool_bytes + quant_scratch_bytes + hpz_bytes + activation_bytes + offload_bytes;
    return state_bytes() + (init_bytes > training ? init_bytes : training);
  }
};

// `threads` sizes the attention scratch (one slice per thread). Needs config.dims_resolved.
RankMemoryPlan PlanRankMemory(const tern::spec::JobConfig& config, int threads);

// Memory this process may still allocate: MemAvailable, lowered by the cgroup's limit
// (memory.max - memory.current, cgroup v2) when one is set.
struct HostMemory {
  uint64_t available_bytes = 0;
  std::string source;  // "MemAvailable" or "cgroup memory.max"
};
absl::StatusOr<HostMemory> ReadHostMemory();

// RESOURCE_EXHAUSTED with the plan's numbers when `ranks_on_host` ranks of this plan need
// more than `host` has.
absl::Status CheckFitsHost(const RankMemoryPlan& plan, int ranks_on_host, const HostMemory& host);

// PlanRankMemory + ReadHostMemory + CheckFitsHost: OK when the host's memory cannot be read.
absl::Status CheckJobFitsThisHost(const tern::spec::JobConfig& config, int threads,
                                  int ranks_on_host);

// "1.23 GiB" style.
std::string FormatBytes(double bytes);

}  // namespace tern::engine
