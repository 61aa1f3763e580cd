// JSON views of ternd's state for the dashboard's /api endpoints and server-sent events.
// Pure functions (any thread). Strings go out verbatim, JSON-escaped; the page renders them
// as text (textContent), never as HTML.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/state/job_stats.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

// Everything the dashboard and /metrics read, copied on the EventLoop thread.
struct ClusterSnapshot {
  int64_t now_ms = 0;
  std::vector<tern::v1::Job> jobs;            // newest first
  std::vector<tern::v1::WorkerInfo> workers;  // by name
  std::map<std::string, JobAggregate> stats;  // by job id (jobs seen since start)
  size_t watch_streams = 0;                   // open WatchJob/SSE streams
};

nlohmann::json WorkerJson(const tern::v1::WorkerInfo& w, int64_t now_ms);
// State, progress, step values, ETA, goodput, checkpoints, memory, placement.
nlohmann::json JobSummaryJson(const tern::v1::Job& job, const JobAggregate* agg, int64_t now_ms);
nlohmann::json EventJson(const tern::v1::JobEvent& e);
nlohmann::json MetricJson(const tern::v1::MetricPoint& p);
// One-line JSON text; invalid UTF-8 is replaced, never thrown on.
std::string Dump(const nlohmann::json& j);

}  // namespace tern::daemon
