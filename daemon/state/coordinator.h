// Coordinator: ternd's job lifecycle state machine. It owns the in-memory job table and
// drives JobStore, Scheduler, Membership and MetricsHub. Owned by the EventLoop thread:
// every method except IsJobActive() and LogPath() must run there (handlers Post() to it).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/state/event_loop.h"
#include "daemon/state/job_store.h"
#include "daemon/state/membership.h"
#include "daemon/state/metrics_hub.h"
#include "daemon/state/rendezvous_store.h"
#include "daemon/state/scheduler.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

struct CoordinatorOptions {
  std::string state_dir;                 // logs go under <state_dir>/logs
  std::string checkpoint_root;           // for jobs without checkpoint.dir
  int64_t heartbeat_timeout_ms = 5000;   // a worker is lost after this long without heartbeat
  int32_t heartbeat_interval_ms = 1000;  // what workers are told to use
  int64_t reconnect_grace_ms = 15000;    // after a restart: how long RUNNING jobs wait for workers
  int64_t tick_ms = 200;                 // failure-detection period
  int64_t worker_expiry_ms = 600000;     // a disconnected worker leaves the listings after this
  // A round ordered to stop (grow, drain) has this long to checkpoint and exit before its ranks
  // are cancelled (SIGTERM) and the job resumes from its newest complete checkpoint instead.
  int64_t stop_timeout_ms = 60000;
};

// The most slots one worker may offer.
inline constexpr int kMaxWorkerSlots = 4096;

bool IsTerminal(tern::v1::JobState s);
std::string StateName(tern::v1::JobState s);  // "RUNNING"
int64_t NowMs();

class Coordinator {
 public:
  Coordinator(CoordinatorOptions options, EventLoop* loop, std::unique_ptr<JobStore> store,
              std::unique_ptr<Scheduler> scheduler, RendezvousStore* rendezvous);

  // Loads jobs and workers from the store and starts the failure-detection tick.
  absl::Status Recover();

  // ---- JobService (spec already validated by the handler).
  absl::StatusOr<std::string> Submit(const tern::v1::JobSpec& spec);
  absl::StatusOr<tern::v1::Job> GetJob(const std::string& id) const;
  // Newest first, at most `limit` (0 = 1000), only jobs older than `before_id` when set.
  std::vector<tern::v1::Job> ListJobs(tern::v1::JobState state, int limit,
                                      const std::string& before_id = "") const;
  absl::StatusOr<tern::v1::Job> Cancel(const std::string& id, const std::string& reason);
  // `tern drain WORKER`: as the worker's own Drain message; returns the jobs that ran there.
  // NOT_FOUND for a worker that is not connected.
  absl::StatusOr<std::vector<std::string>> Drain(const std::string& worker,
                                                 const std::string& reason);
  // Sends the snapshot and history to `sink`, then subscribes it (or closes it if finished).
  absl::Status Watch(const std::string& id, std::shared_ptr<WatchSink> sink);
  std::vector<tern::v1::WorkerInfo> ListWorkers() const;
  // The fan-out hub of events and metric points (observers: dashboard stats, TensorBoard).
  MetricsHub* hub() { return &hub_; }

  // ---- WorkerService.
  absl::StatusOr<tern::v1::RegisterResponse> RegisterWorker(const tern::v1::RegisterRequest& req);
  absl::Status OpenSession(const std::string& worker, int64_t session_id,
                           std::shared_ptr<SessionSink> sink);
  void OnWorkerMessage(const std::string& worker, int64_t session_id,
                       const tern::v1::WorkerMessage& msg);
  void OnSessionClosed(const std::string& worker, int64_t session_id);

  // ---- Thread-safe.
  bool IsJobActive(const std::string& id);  // known and not terminal
  bool JobExists(const std::string& id);
  std::string LogPath(const std::string& job_id, int rank) const;

 private:
  struct RankRuntime {
    std::string worker;
    bool started = false;
    bool exited = false;
    int exit_code = 0;
  };
  struct JobRuntime {
    tern::v1::Job job;
    int64_t next_seq = 1;
    std::map<int, RankRuntime> ranks;  // current round
    std::set<std::string> awaiting;    // workers to reconnect after a ternd restart
    int64_t await_deadline_ms = 0;
    int64_t incident_ms = 0;       // when the current elastic incident was detected (0 = none)
    bool planned = false;          // the round was stopped to grow or drain, not after a failure
    int64_t stop_deadline_ms = 0;  // RESHARDING: cancel ranks still running after this (0 = none)
  };

  JobRuntime* Find(const std::string& id);
  void AddEvent(JobRuntime& rt, const std::string& kind, const std::string& message, int rank = -1,
                const std::string& worker = "");
  // Persists the job, records an event and, on a terminal state, ends the job everywhere.
  void SetState(JobRuntime& rt, tern::v1::JobState state, const std::string& kind,
                const std::string& message, int rank = -1, const std::string& worker = "");
  void FailJob(JobRuntime& rt, const std::string& kind, const std::string& message, int rank,
               const std::string& worker);
  void CancelRanks(JobRuntime& rt, const std::string& reason);
  void Schedule();
  void StartRound(JobRuntime& rt, const Placement& placement);
  // The one place an assignment is built: `ranks` of the job's current round.
  tern::v1::CoordinatorMessage MakeAssignment(const JobRuntime& rt,
                                              const std::vector<int>& ranks) const;
  void HandleRankExit(const std::string& worker, const std::string& job_id, int round, int rank,
                      int exit_code, const std::string& detail);
  void HandleMetric(const tern::v1::MetricPoint& point);
  void AppendLog(const std::string& worker, const tern::v1::RankLog& log);
  void WorkerLost(const std::string& worker, const std::string& why);
  // The worker is going away (its Drain message): nothing new is placed on it and the jobs
  // running there stop their round (elastic ones continue on the other workers).
  void DrainWorker(const std::string& worker, const std::string& reason);
  void ReconcileReportedRanks(const std::string& worker, const tern::v1::RegisterRequest& req,
                              tern::v1::RegisterResponse* resp);
  void Tick();
  // ---- Elastic rounds (elastic.cc). The one path every failure of a running round takes:
  // without elastic.enabled (or with no restarts left) the job fails; with it the round is
  // stopped (survivors cancelled), the job is RESHARDING until every rank of the round is
  // gone, then NextRound() starts the next round on the workers that remain.
  void RoundFailed(JobRuntime& rt, const std::string& kind, const std::string& message, int rank,
                   const std::string& worker);
  // RESHARDING: starts the next round when the stopped one is gone and enough workers are
  // free (else says what it waits for).
  void NextRound(JobRuntime& rt);
  // The spec the ranks of the current round run: the submitted spec with the round's layout
  // (nodes, and the gradient accumulation that keeps the global batch).
  tern::v1::JobSpec RoundSpec(const JobRuntime& rt) const;
  // Running elastic jobs below elastic.max_nodes grow onto free workers (when no job waits):
  // the round is ordered to stop (StopRound) and the next one has more nodes.
  void MaybeGrow();
  // A planned stop of an elastic job's round (grow, drain): records `kind` (grow, preempted),
  // orders every rank of the round to checkpoint after the step they agree on and exit
  // (RankOrder OP_STOP), moves the job to RESHARDING; NextRound starts the next round once they
  // are gone, resuming from that checkpoint: no step is lost. Ranks still running after
  // --stop-timeout are cancelled (Tick) and the job resumes from its newest complete checkpoint.
  void StopRound(JobRuntime& rt, const std::string& kind, const std::string& why, int rank = -1,
                 const std::string& worker = "");
  void PersistWorker(const std::string& name);
  void CacheState(const tern::v1::Job& job);

  const CoordinatorOptions options_;
  EventLoop* loop_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
  RendezvousStore* rendezvous_;
  Membership membership_;
  MetricsHub hub_;
  std::map<std::string, JobRuntime> jobs_;
  std::deque<std::string> pending_;                      // FIFO of PENDING job ids
  std::set<std::string> resharding_;                     // RESHARDING job ids
  std::map<std::string, tern::v1::WorkerInfo> offline_;  // known workers not connected

  mutable std::mutex cache_mu_;
  std::map<std::string, tern::v1::JobState> state_cache_;
};

}  // namespace tern::daemon
