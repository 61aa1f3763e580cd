// One data-parallel rank of a job: rendezvous over a Store, communicator groups from the
// topology, ZeRO state over the data-parallel group, then the Trainer's loop.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "worker/comm/store.h"
#include "worker/core/timeouts.h"
#include "worker/engine/metrics.h"
#include "worker/engine/rank_control.h"
#include "worker/spec/job_config.h"

namespace tern::engine {

struct RankOptions {
  int rank = 0;
  int world_size = 1;
  int ranks_per_node = 1;
  int threads = 1;
  std::string prefix;  // store key prefix of this job round
  std::chrono::milliseconds collective_timeout = kDefaultCollectiveTimeout;
  MetricsSink* sink = nullptr;  // rank 0 reports metrics; every rank its memory
  std::string save_final_dir;
  double peak_gflops = 0;    // sgemm peak per rank for MFU; 0 = resolve (engine/sgemm_peak.h)
  bool check_memory = true;  // refuse a job this node's ranks cannot fit (memory_plan.h)
  int64_t round = -1;        // the cluster round (from the rendezvous prefix); -1 = none
  std::string bind_address = "127.0.0.1";  // Gloo's TCP device: peers connect here
  std::string bound_cpus;          // the CPU set the launcher bound this rank to ("" = not bound)
  RankControl* control = nullptr;  // the launcher's orders (stop, checkpoint); null = none
};

// The rank's "placement" event (every rank, once its threads are set): {"rank", "pid",
// "cpus" (its affinity mask, read back with sched_getaffinity), "bound" (the launcher's
// set, or null), "threads", "omp_threads", "blas_threads"} as JSON text.
std::string PlacementReport(int rank, int threads, const std::string& bound_cpus);

// Runs the job as `options.rank` of `options.world_size`. `config` must have been resolved
// for world_size ranks.
absl::Status RunRank(const tern::spec::JobConfig& config, comm::Store& store,
                     const RankOptions& options);

}  // namespace tern::engine
