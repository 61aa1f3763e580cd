#include "worker/agent/rank_output.h"

#include <nlohmann/json.hpp>

namespace tern::agent {

std::optional<tern::v1::WorkerMessage> ParseRankLine(const std::string& line, const RankId& id,
                                                     int64_t now_ms) {
  const size_t start = line.find_first_not_of(" \t\r");
  if (start == std::string::npos || line[start] != '{') return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return std::nullopt;
  const std::string type = j["type"].get<std::string>();
  tern::v1::WorkerMessage msg;
  if (type == "step" || type == "eval" || type == "summary") {
    auto* p = msg.mutable_metric();
    p->set_job_id(id.job_id);
    p->set_round(id.round);
    p->set_rank(id.rank);
    p->set_kind(type);
    p->set_time_ms(now_ms);
    for (const auto& [key, value] : j.items()) {
      if (!value.is_number()) continue;
      if (key == "step") {
        p->set_step(value.get<int64_t>());
      } else {
        (*p->mutable_values())[key] = value.get<double>();
      }
    }
    return msg;
  }
  if (type == "event") {
    auto* e = msg.mutable_event();
    e->set_job_id(id.job_id);
    e->set_time_ms(now_ms);
    e->set_rank(id.rank);
    e->set_kind(j.value("kind", std::string("rank")));
    if (j.contains("message") && j["message"].is_string()) {
      e->set_message(j["message"].get<std::string>());
    } else {
      e->set_message(j.dump());
    }
    return msg;
  }
  return std::nullopt;
}

}  // namespace tern::agent
