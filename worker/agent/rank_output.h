// The rank stdout protocol: one JSON object per line ({"type":"step","step":..,"loss":..},
// {"type":"eval",..}, {"type":"summary",..}, {"type":"event","kind":..,"message":..});
// any other line is plain log text. Pure functions, any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tern/v1/cluster.pb.h"

namespace tern::agent {

struct RankId {
  std::string job_id;
  int round = 0;
  int rank = 0;
};

// A "step"/"eval"/"summary" line becomes a `metric`, an "event" line an `event`; anything
// else (plain text, malformed JSON, unknown types) nullopt.
std::optional<tern::v1::WorkerMessage> ParseRankLine(const std::string& line, const RankId& id,
                                                     int64_t now_ms);

}  // namespace tern::agent
