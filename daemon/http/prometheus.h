// ternd's /metrics: the cluster snapshot in the Prometheus text exposition format (jobs by
// state; per job step, loss, tokens/s, step phases, goodput, ETA, checkpoints, events;
// workers, slots, heartbeats, ranks). Pure function, any thread.
#pragma once

#include <string>

#include "daemon/http/http_json.h"

namespace tern::daemon {

std::string RenderPrometheus(const ClusterSnapshot& snap);

}  // namespace tern::daemon
