#include "daemon/state/job_stats.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "daemon/state/coordinator.h"

namespace tern::daemon {
namespace {

double Value(const tern::v1::MetricPoint& p, const char* key, double fallback = 0) {
  auto it = p.values().find(key);
  return it == p.values().end() ? fallback : it->second;
}

// Rank events carry their numbers as a JSON object in the message.
nlohmann::json EventJson(const tern::v1::JobEvent& e) {
  auto j = nlohmann::json::parse(e.message(), nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : nlohmann::json::object();
}

double Number(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0;
}

}  // namespace

void JobStats::Observe(const std::string& job_id, const tern::v1::WatchJobResponse& item) {
  JobAggregate& a = jobs_[job_id];
  if (item.has_metric()) {
    const auto& p = item.metric();
    ++a.metric_points;
    if (p.kind() == "step") {
      // The first step of a round after an incident: the job is training again.
      if (!a.incidents.empty() && a.incidents.back().first_step_ms == 0) {
        Incident& inc = a.incidents.back();
        if (p.round() > inc.round) inc.first_step_ms = p.time_ms();
        // A round ordered to stop finishes its step (and checkpoints it) after round_stopped.
        if (p.round() == inc.round) inc.last_step = std::max(inc.last_step, p.step());
      }
      if (p.step() > a.max_step) {
        const int64_t new_steps = a.max_step == 0 ? 1 : p.step() - a.max_step;
        const double useful = std::max(0.0, Value(p, "step_ms") - Value(p, "checkpoint_ms"));
        a.productive_ms += static_cast<double>(new_steps) * useful;
        a.max_step = p.step();
      }
      a.last_step = p;
    } else if (p.kind() == "eval") {
      a.val_loss = Value(p, "val_loss", -1);
      a.val_step = p.step();
    } else if (p.kind() == "summary") {
      for (const char* k :
           {"peak_rss_mib", "param_bytes", "grad_bytes", "optim_bytes", "gather_pool_bytes"}) {
        if (p.values().count(k)) a.memory[k] = p.values().at(k);
      }
    }
    return;
  }
  if (!item.has_event()) return;
  const auto& e = item.event();
  ++a.events_by_kind[e.kind()];
  static const std::set<std::string> kCauses = {"node_lost", "rank_exit", "worker_lost",
                                                "preempted", "grow",      "rank_stopped"};
  if (kCauses.count(e.kind()) && e.message().find("finished (exit 0)") == std::string::npos &&
      a.pending_cause.empty()) {
    a.pending_cause = e.kind();
    a.pending_cause_ms = e.time_ms();
  }
  if (e.kind() == "round_stopped") {
    Incident inc;
    inc.cause = a.pending_cause.empty() ? "round_stopped" : a.pending_cause;
    inc.cause_ms = a.pending_cause.empty() ? e.time_ms() : a.pending_cause_ms;
    inc.last_good_ms = a.last_step.time_ms();
    inc.last_step = a.max_step;
    inc.round = a.last_step.round();
    a.incidents.push_back(inc);
    a.pending_cause.clear();
  } else if (e.kind() == "resume" && !a.incidents.empty() && a.incidents.back().resumed_step < 0) {
    a.incidents.back().resumed_step = static_cast<int64_t>(Number(EventJson(e), "step"));
  }
  if (e.kind() == "checkpoint") {
    auto j = EventJson(e);
    ++a.checkpoints;
    a.checkpoint_bytes += Number(j, "bytes");
    a.checkpoint_seconds += Number(j, "seconds");
    a.last_checkpoint_gibps = Number(j, "gibps");
  } else if (e.kind() == "memory") {
    auto j = EventJson(e);
    if (e.rank() > 0) return;  // rank 0's breakdown stands for the job
    for (const char* k : {"param_bytes", "grad_bytes", "optim_bytes", "gather_pool_bytes"}) {
      if (j.contains(k)) a.memory[k] = Number(j, k);
    }
  }
}

const JobAggregate* JobStats::Find(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : &it->second;
}

void JobStats::Trim(size_t keep) {
  while (jobs_.size() > keep) jobs_.erase(jobs_.begin());  // ids sort oldest first
}

double Goodput(const JobAggregate& agg, const tern::v1::Job& job, int64_t now_ms) {
  if (job.started_ms() <= 0) return 0;
  const int64_t end = job.finished_ms() > 0 ? job.finished_ms() : now_ms;
  const double wall = static_cast<double>(end - job.started_ms());
  if (wall <= 0) return 0;
  return std::clamp(agg.productive_ms / wall, 0.0, 1.0);
}

void AttachStats(const JobAggregate* agg, int64_t now_ms, tern::v1::Job* job) {
  job->clear_incidents();
  job->set_goodput(agg ? Goodput(*agg, *job, now_ms) : -1);
  if (!agg) return;
  for (const auto& inc : agg->incidents) {
    auto* out = job->add_incidents();
    out->set_cause(inc.cause);
    out->set_time_ms(inc.cause_ms);
    out->set_round(inc.round);
    out->set_detect_s(inc.detect_s());
    out->set_resume_s(inc.resume_s());
    out->set_steps_lost(inc.steps_lost());
  }
}

double EtaSeconds(const tern::v1::Job& job, int64_t now_ms) {
  if (IsTerminal(job.state())) return 0;
  const auto& m = job.last_metric();
  auto it = m.values().find("eta_s");
  if (it == m.values().end()) return -1;
  const double age = static_cast<double>(now_ms - m.time_ms()) / 1000.0;
  return std::max(0.0, it->second - std::max(0.0, age));
}

}  // namespace tern::daemon
