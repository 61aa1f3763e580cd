#include "worker/agent/agent_metrics.h"

#include <nlohmann/json.hpp>

#include "infra/http/prometheus_text.h"

namespace tern::agent {
namespace {

using infra::PrometheusText;
using infra::PromLabels;

constexpr size_t kMaxRankSeries = 64;  // newest (job, rank) step series kept

// The step values exported per rank, with their metric names.
constexpr std::pair<const char*, const char*> kStepValues[] = {
    {"loss", "tern_worker_rank_loss"},
    {"tokens_per_s", "tern_worker_rank_tokens_per_second"},
    {"step_ms", "tern_worker_rank_step_milliseconds"},
};

}  // namespace

void AgentMetrics::OnQueued(const tern::v1::WorkerMessage& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  if (msg.has_started()) ++rank_starts_;
  if (msg.has_metric()) {
    ++metric_points_;
    const auto& p = msg.metric();
    if (p.kind() != "step") return;
    RankValues& r = ranks_[{p.job_id(), p.rank()}];
    r.step = p.step();
    r.time_ms = p.time_ms();
    for (const auto& [k, v] : p.values()) r.values[k] = v;
    if (ranks_.size() > kMaxRankSeries) {
      auto oldest = ranks_.begin();
      for (auto it = ranks_.begin(); it != ranks_.end(); ++it) {
        if (it->second.time_ms < oldest->second.time_ms) oldest = it;
      }
      ranks_.erase(oldest);
    }
  }
  if (msg.has_event()) {
    ++events_;
    if (msg.event().kind() != "checkpoint") return;
    auto j = nlohmann::json::parse(msg.event().message(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return;
    ++checkpoints_;
    if (j.contains("bytes") && j["bytes"].is_number())
      checkpoint_bytes_ += j["bytes"].get<double>();
    if (j.contains("seconds") && j["seconds"].is_number()) {
      checkpoint_seconds_ += j["seconds"].get<double>();
    }
  }
}

void AgentMetrics::OnSent(const tern::v1::WorkerMessage& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  ++messages_sent_;
  if (msg.has_heartbeat()) ++heartbeats_;
  if (msg.has_exited()) {
    ++rank_exits_;
    if (msg.exited().exit_code() != 0) ++rank_failures_;
  }
  if (msg.has_log()) log_bytes_ += static_cast<int64_t>(msg.log().data().size());
}

void AgentMetrics::OnSessionUp() {
  std::lock_guard<std::mutex> lock(mu_);
  connected_ = true;
  ++sessions_;
}

void AgentMetrics::OnSessionDown() {
  std::lock_guard<std::mutex> lock(mu_);
  connected_ = false;
}

std::string AgentMetrics::Render(const Gauges& g) const {
  std::lock_guard<std::mutex> lock(mu_);
  PrometheusText p;
  const PromLabels w = {{"worker", g.worker}};
  auto one = [&](const char* name, const char* type, const char* help, double v) {
    p.Family(name, type, help);
    p.Sample(v, w);
  };
  one("tern_worker_up", "gauge", "1 while the tern-worker process runs.", 1);
  one("tern_worker_connected", "gauge", "1 while the session with ternd is open.",
      connected_ ? 1 : 0);
  one("tern_worker_slots", "gauge", "Rank slots this worker offers.", g.slots);
  one("tern_worker_running_ranks", "gauge", "Rank processes running now.", g.running_ranks);
  one("tern_worker_outbound_queue", "gauge",
      "Messages buffered for ternd (grows while disconnected).",
      static_cast<double>(g.outbound_queue));
  one("tern_worker_sessions_total", "counter", "Sessions opened with ternd (1 + reconnects).",
      static_cast<double>(sessions_));
  one("tern_worker_heartbeats_sent_total", "counter", "Heartbeats sent to ternd.",
      static_cast<double>(heartbeats_));
  one("tern_worker_messages_sent_total", "counter", "Messages written to the ternd session.",
      static_cast<double>(messages_sent_));
  one("tern_worker_rank_starts_total", "counter", "Rank processes started.",
      static_cast<double>(rank_starts_));
  one("tern_worker_rank_exits_total", "counter", "Rank exits reported to ternd.",
      static_cast<double>(rank_exits_));
  one("tern_worker_rank_failures_total", "counter", "Rank exits with a non-zero code or signal.",
      static_cast<double>(rank_failures_));
  one("tern_worker_log_bytes_uploaded_total", "counter", "Rank log bytes uploaded to ternd.",
      static_cast<double>(log_bytes_));
  one("tern_worker_metric_points_total", "counter", "Metric points relayed from ranks.",
      static_cast<double>(metric_points_));
  one("tern_worker_events_total", "counter", "Rank events relayed.", static_cast<double>(events_));
  one("tern_worker_checkpoints_total", "counter", "Checkpoints committed by ranks of this worker.",
      static_cast<double>(checkpoints_));
  one("tern_worker_checkpoint_bytes_total", "counter", "Bytes of the committed checkpoints.",
      checkpoint_bytes_);
  one("tern_worker_checkpoint_seconds_total", "counter",
      "Seconds spent writing the committed checkpoints.", checkpoint_seconds_);
  p.Family("tern_worker_rank_step", "gauge", "Newest optimizer step reported by a relayed rank.");
  for (const auto& [key, r] : ranks_) {
    p.Sample(static_cast<double>(r.step),
             {{"worker", g.worker}, {"job", key.first}, {"rank", std::to_string(key.second)}});
  }
  for (const auto& [value, name] : kStepValues) {
    p.Family(name, "gauge", std::string("Newest step '") + value + "' of a relayed rank.");
    for (const auto& [key, r] : ranks_) {
      auto it = r.values.find(value);
      if (it == r.values.end()) continue;
      p.Sample(it->second,
               {{"worker", g.worker}, {"job", key.first}, {"rank", std::to_string(key.second)}});
    }
  }
  return p.Take();
}

}  // namespace tern::agent
