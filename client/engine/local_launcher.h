// `tern train --ranks N`: the standalone launcher (like `torchrun --standalone`). Hosts a TCP
// rendezvous store, starts N `tern rank` processes on this machine, relays rank 0's metrics,
// and stops every rank if one fails. With `bind_cores` (the default; --no-bind-cores turns it
// off) the launcher's CPUs (its affinity mask) are split into one disjoint set per rank
// (worker/core/cpu_set.h, the same split tern-worker uses) and each rank starts bound to its
// set with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = its threads; threads default to the set's
// size and a thread count above it is refused (exit 2). More ranks than CPUs share CPUs, one
// each, with a warning.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/core/cpu_set.h"
#include "worker/core/timeouts.h"
#include "worker/spec/job_config.h"

namespace tern::cli {

// The default of --collective-timeout-s (`tern train`, `tern rank`), in whole seconds.
inline constexpr int kDefaultCollectiveTimeoutS = static_cast<int>(
    std::chrono::duration_cast<std::chrono::seconds>(kDefaultCollectiveTimeout).count());

struct LaunchOptions {
  int ranks = 1;
  int ranks_per_node = 0;    // 0 = all ranks on one node
  int threads_per_rank = 0;  // --threads; 0 = resources.threads_per_rank, else see bind_cores
  bool bind_cores = true;    // else threads default to cores / ranks and nothing is bound
  bool json = false;
  std::string save_final;
  int collective_timeout_s = kDefaultCollectiveTimeoutS;
  double peak_gflops = 0;    // --peak-gflops for every rank; 0 = each resolves its own
  bool check_memory = true;  // false: --skip-memory-check for every rank
};

// Where each rank runs: its CPU set (empty = not bound) and thread count, rank order.
struct Placement {
  std::vector<cpu::CpuList> cpus;
  std::vector<int> threads;
  std::string warning;  // more ranks than CPUs
};
// Decides the placement of `options.ranks` ranks (see above); INVALID_ARGUMENT for a thread
// count above a rank's set, naming both numbers.
absl::StatusOr<Placement> PlaceRanks(const tern::spec::JobConfig& config,
                                     const LaunchOptions& options);

// Returns the process exit code (0 success, 1 a rank failed, 2 bad input).
int LaunchLocalRanks(const tern::spec::JobConfig& config, const LaunchOptions& options);

}  // namespace tern::cli
