// JobStats: per-job aggregates derived from the events and metric points the coordinator
// publishes (a MetricsHub observer): the newest step values, goodput, checkpoint totals,
// memory, event counts by kind. Feeds the dashboard's JSON and ternd's /metrics. Owned by
// the EventLoop thread; readers copy what they need there.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

// One elastic incident: a round stopped (a lost node, a failed rank, a drain, a grow) and the
// job resumed in the next round.
struct Incident {
  std::string cause;          // the event kind that stopped the round: node_lost, ...
  int64_t cause_ms = 0;       // when ternd recorded it
  int64_t last_good_ms = 0;   // the newest step reported before it (detection bound)
  int64_t last_step = 0;      // highest step reported before it
  int32_t round = 0;          // the round it stopped
  int64_t resumed_step = -1;  // the step the next round resumed from (-1 = not yet)
  int64_t first_step_ms = 0;  // first step of the next round (0 = not yet)
  double detect_s() const { return last_good_ms > 0 ? (cause_ms - last_good_ms) / 1e3 : 0; }
  double resume_s() const { return first_step_ms > 0 ? (first_step_ms - cause_ms) / 1e3 : -1; }
  int64_t steps_lost() const { return resumed_step >= 0 ? last_step - resumed_step : -1; }
};

struct JobAggregate {
  tern::v1::MetricPoint last_step;  // newest "step" point (empty before the first)
  double val_loss = -1;             // newest eval val_loss; -1 = none yet
  int64_t val_step = 0;
  int64_t max_step = 0;      // highest step seen (a resume may go back)
  double productive_ms = 0;  // sum over new steps of (step_ms - checkpoint_ms)
  int64_t metric_points = 0;
  int64_t checkpoints = 0;
  double checkpoint_bytes = 0;    // total bytes of committed checkpoints
  double checkpoint_seconds = 0;  // total seconds writing them
  double last_checkpoint_gibps = 0;
  std::map<std::string, double> memory;  // "param_bytes", ..., "gather_pool_bytes", "peak_rss_mib"
  std::map<std::string, int64_t> events_by_kind;
  std::vector<Incident> incidents;  // oldest first
  std::string pending_cause;        // a cause seen, its round_stopped not yet
  int64_t pending_cause_ms = 0;
};

class JobStats {
 public:
  void Observe(const std::string& job_id, const tern::v1::WatchJobResponse& item);
  // nullptr when nothing was observed for the job (yet, or since ternd started).
  const JobAggregate* Find(const std::string& job_id) const;
  // Forgets the oldest jobs beyond the newest `keep` ids (bounded memory).
  void Trim(size_t keep);

 private:
  std::map<std::string, JobAggregate> jobs_;
};

// Fraction of the job's wall time (from its first RUNNING to its end, or `now_ms`) spent
// in productive training steps: step time minus checkpoint stalls, each step counted once
// (steps redone after a resume are not). In [0, 1]; 0 before it runs. Time lost to start-up,
// scheduling, restarts and checkpoint stalls lowers it.
double Goodput(const JobAggregate& agg, const tern::v1::Job& job, int64_t now_ms);

// Copies the incidents and the goodput (-1 without `agg`) into `job` (GetJob's answer).
void AttachStats(const JobAggregate* agg, int64_t now_ms, tern::v1::Job* job);

// Seconds to completion: the newest step's eta_s less the time since it was reported (when
// running); -1 when unknown.
double EtaSeconds(const tern::v1::Job& job, int64_t now_ms);

}  // namespace tern::daemon
