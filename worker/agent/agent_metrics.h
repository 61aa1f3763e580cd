// AgentMetrics: tern-worker's counters and gauges for its Prometheus endpoint (--metrics):
// sessions, heartbeats, messages, rank starts/exits, log bytes, checkpoints, and the newest
// step values of each relayed rank. Updated from the agent's threads; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "tern/v1/cluster.pb.h"

namespace tern::agent {

class AgentMetrics {
 public:
  struct Gauges {
    std::string worker;  // worker name (a label on every per-worker series)
    int slots = 0;
    int running_ranks = 0;
    size_t outbound_queue = 0;
  };

  // A message produced by the rank supervisor (RankStarted, metric point, event).
  void OnQueued(const tern::v1::WorkerMessage& msg);
  // A message written to the session stream (heartbeats, exits, logs, the queued ones).
  void OnSent(const tern::v1::WorkerMessage& msg);
  void OnSessionUp();
  void OnSessionDown();

  // The Prometheus text exposition of everything above plus `gauges`.
  std::string Render(const Gauges& gauges) const;

 private:
  struct RankValues {
    int64_t step = 0;
    int64_t time_ms = 0;
    std::map<std::string, double> values;
  };

  mutable std::mutex mu_;
  bool connected_ = false;
  int64_t sessions_ = 0;
  int64_t heartbeats_ = 0;
  int64_t messages_sent_ = 0;
  int64_t rank_starts_ = 0;
  int64_t rank_exits_ = 0;
  int64_t rank_failures_ = 0;
  int64_t log_bytes_ = 0;
  int64_t metric_points_ = 0;
  int64_t events_ = 0;
  int64_t checkpoints_ = 0;
  double checkpoint_bytes_ = 0;
  double checkpoint_seconds_ = 0;
  std::map<std::pair<std::string, int>, RankValues> ranks_;  // (job, rank) -> newest step
};

}  // namespace tern::agent
