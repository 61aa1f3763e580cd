// JobStore: ternd's durable state (jobs, rounds, workers, events, downsampled metric
// history). Owned by the EventLoop thread; implementations need not be thread-safe. (The
// SQLite one checkpoints its WAL from a background thread on a second connection, so the
// loop thread never waits for a checkpoint's fsync.)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Allocates the next job id ("j-000001", ...), durable across restarts.
  virtual absl::StatusOr<std::string> NextJobId() = 0;
  // Inserts or replaces the job (state, placement, round, ...).
  virtual absl::Status PutJob(const tern::v1::Job& job) = 0;
  // Every stored job, oldest first.
  virtual absl::StatusOr<std::vector<tern::v1::Job>> LoadJobs() = 0;

  // Records that `job.round()` was started with `job.placement()`.
  virtual absl::Status PutRound(const tern::v1::Job& job) = 0;

  virtual absl::Status AppendEvent(const tern::v1::JobEvent& event) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::JobEvent>> Events(const std::string& job_id) = 0;

  // Keeps a downsampled history: every non-"step" point, and "step" points at a stride that
  // doubles whenever the job's stored step points exceed the store's cap.
  virtual absl::Status AppendMetric(const tern::v1::MetricPoint& point) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::MetricPoint>> Metrics(const std::string& job_id) = 0;

  virtual absl::Status PutWorker(const tern::v1::WorkerInfo& worker) = 0;
  virtual absl::StatusOr<std::vector<tern::v1::WorkerInfo>> LoadWorkers() = 0;
};

// SQLite in WAL mode at `path` (created with its tables if absent). `max_step_points` caps
// the stored "step" points per job before downsampling.
absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteJobStore(const std::string& path,
                                                             int max_step_points = 2000);

}  // namespace tern::daemon
