// `tern train --ranks N`: the standalone launcher (like `torchrun --standalone`). Hosts a TCP
// rendezvous store, starts N `tern rank` processes on this machine, relays rank 0's metrics,
// and stops every rank if one fails.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "worker/core/timeouts.h"
#include "worker/spec/job_config.h"

namespace tern::cli {

// The default of --collective-timeout-s (`tern train`, `tern rank`), in whole seconds.
inline constexpr int kDefaultCollectiveTimeoutS = static_cast<int>(
    std::chrono::duration_cast<std::chrono::seconds>(kDefaultCollectiveTimeout).count());

struct LaunchOptions {
  int ranks = 1;
  int ranks_per_node = 0;    // 0 = all ranks on one node
  int threads_per_rank = 0;  // 0 = cores / ranks
  bool json = false;
  std::string save_final;
  int collective_timeout_s = kDefaultCollectiveTimeoutS;
  double peak_gflops = 0;    // --peak-gflops for every rank; 0 = each resolves its own
  bool check_memory = true;  // false: --skip-memory-check for every rank
};

// Returns the process exit code (0 success, 1 a rank failed, 2 bad input).
int LaunchLocalRanks(const tern::spec::JobConfig& config, const LaunchOptions& options);

}  // namespace tern::cli
