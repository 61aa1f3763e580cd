// Rendering of control-plane objects for the CLI: JSON documents (`--json`), table rows and
// the `tern watch` progress line. Pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tern/v1/cluster.pb.h"

namespace tern::cluster {

// "RUNNING" for JOB_STATE_RUNNING.
std::string StateName(tern::v1::JobState s);
// "1h02m", "3m05s", "12s".
std::string FormatDuration(int64_t ms);

// The proto's JSON mapping (proto field names) with `state` shortened to StateName.
nlohmann::json JobToJson(const tern::v1::Job& job);
nlohmann::json WorkerToJson(const tern::v1::WorkerInfo& w);
// One `tern watch --json` line: {"type":"job"|"event"|"metric", "time_ms":.., ...}.
nlohmann::json WatchItemToJson(const tern::v1::WatchJobResponse& item, int64_t now_ms);

// "step 12/100  loss 3.2140  tok/s 12.3k  ETA 1m05s" from the newest step point.
// `total` is train_iters; `step_ms` is the smoothed step time (0 = unknown).
std::string ProgressLine(const tern::v1::MetricPoint& p, int64_t total, double step_ms);
// "eval at step 50: val_loss 3.1000" / "summary at step 100: done: 100 steps | ..." for a
// non-step point, in the words `tern train` uses (worker/core/run_text.h).
std::string MetricLine(const tern::v1::MetricPoint& p);
// `tern show`: "goodput:  93.1% (...)" and one line per elastic incident:
// "incident: node_lost in round 1, detected 1.2s after the last step, training again 3.4s
// later, 1 step(s) lost".
std::vector<std::string> StatsLines(const tern::v1::Job& job);
// "2026-11-29 12:00:01 [scheduled] round 1: ..." for an event; a structured payload (memory,
// checkpoint, ...) as labelled fields: "[memory] rank 0, params 3.4 MiB, ...".
std::string EventLine(const tern::v1::JobEvent& e);

}  // namespace tern::cluster
