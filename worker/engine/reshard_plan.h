// What loading a checkpoint into another layout costs, without loading it: for every rank of a
// target layout (ranks, ZeRO stage), the state ranges it owns (exactly as worker/zero lays them
// out; at stage 0 its 1/N share, which the ranks then all-gather) and the file byte ranges the
// exact reads fetch for them (Checkpoint::PlanRead). `tern ckpt reshard --dry-run` prints it;
// tests hold the real reads to it.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/checkpoint/checkpoint.h"

namespace tern::engine {

struct RankReadPlan {
  int rank = 0;
  std::vector<std::pair<uint64_t, uint64_t>> owned;  // element ranges [begin, end) it reads
  uint64_t owned_bytes = 0;               // elements owned x element size, summed over the states
  uint64_t read_bytes = 0;                // bytes the planned extents fetch
  std::vector<ckpt::ReadExtent> extents;  // per state, in owned order; adjacent ones merged
};

// The element ranges rank `rank` of `ranks` reads at ZeRO stage `zero_stage` (0-3) for a model
// with parameter table `table`.
std::vector<std::pair<uint64_t, uint64_t>> OwnedRanges(const ParamTable& table, int ranks,
                                                       int zero_stage, int rank);

// One plan per target rank, over the optimizer states master, exp_avg and exp_avg_sq.
// INVALID_ARGUMENT for ranks < 1 or a stage outside 0-3.
absl::StatusOr<std::vector<RankReadPlan>> PlanReshard(const ckpt::Checkpoint& ck, int ranks,
                                                      int zero_stage);

}  // namespace tern::engine
