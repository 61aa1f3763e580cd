#include "daemon/http/http_json.h"

#include <cmath>

#include "daemon/state/coordinator.h"
#include "worker/core/run_text.h"

namespace tern::daemon {
namespace {

// JSON has no NaN/Inf: they become null.
nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

nlohmann::json Values(const google::protobuf::Map<std::string, double>& values) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : values) out[k] = Num(v);
  return out;
}

}  // namespace

nlohmann::json WorkerJson(const tern::v1::WorkerInfo& w, int64_t now_ms) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& j : w.jobs()) jobs.push_back(j);
  return {{"name", w.name()},
          {"host", w.host()},
          {"slots", w.slots()},
          {"used_slots", w.used_slots()},
          {"connected", w.connected()},
          {"state", w.connected() ? "CONNECTED" : "DISCONNECTED"},
          {"last_heartbeat_ms", w.last_heartbeat_ms()},
          {"heartbeat_age_ms", w.last_heartbeat_ms() > 0
                                   ? nlohmann::json(now_ms - w.last_heartbeat_ms())
                                   : nlohmann::json()},
          {"registered_ms", w.registered_ms()},
          {"jobs", jobs}};
}

nlohmann::json JobSummaryJson(const tern::v1::Job& job, const JobAggregate* agg, int64_t now_ms) {
  const auto& m = job.last_metric();
  const int64_t iters = job.spec().train_iters();
  nlohmann::json placement = nlohmann::json::array();
  for (const auto& p : job.placement())
    placement.push_back({{"rank", p.rank()}, {"worker", p.worker()}});
  const auto& res = job.spec().resources();
  nlohmann::json out = {
      {"id", job.id()},
      {"name", job.spec().name()},
      {"state", StateName(job.state())},
      {"terminal", IsTerminal(job.state())},
      {"round", job.round()},
      {"world_size", job.world_size()},
      {"nodes", res.has_nodes() ? res.nodes() : 1},
      {"ranks_per_node", res.has_ranks_per_node() ? res.ranks_per_node() : 1},
      {"train_iters", iters},
      {"step", m.step()},
      {"progress",
       iters > 0 ? Num(std::min(1.0, static_cast<double>(m.step()) / iters)) : nlohmann::json()},
      {"values", Values(m.values())},
      {"eta_s", Num(EtaSeconds(job, now_ms))},
      {"created_ms", job.created_ms()},
      {"started_ms", job.started_ms()},
      {"finished_ms", job.finished_ms()},
      {"message", job.message()},
      {"placement", placement},
  };
  if (job.state() == tern::v1::JOB_STATE_SUCCEEDED) out["progress"] = 1.0;
  if (agg) {
    out["goodput"] = Num(Goodput(*agg, job, now_ms));
    out["val_loss"] = agg->val_loss >= 0 ? Num(agg->val_loss) : nlohmann::json();
    out["checkpoints"] = agg->checkpoints;
    out["checkpoint_bytes"] = Num(agg->checkpoint_bytes);
    out["checkpoint_seconds"] = Num(agg->checkpoint_seconds);
    nlohmann::json mem = nlohmann::json::object();
    for (const auto& [k, v] : agg->memory) mem[k] = Num(v);
    out["memory"] = mem;
    nlohmann::json incidents = nlohmann::json::array();
    for (const auto& inc : agg->incidents) {
      incidents.push_back({{"cause", inc.cause},
                           {"time_ms", inc.cause_ms},
                           {"detect_s", Num(inc.detect_s())},
                           {"resume_s", inc.resume_s() >= 0 ? Num(inc.resume_s()) : nullptr},
                           {"steps_lost", inc.steps_lost() >= 0 ? nlohmann::json(inc.steps_lost())
                                                                : nlohmann::json()}});
    }
    out["incidents"] = incidents;
  } else {
    out["goodput"] = nullptr;
    out["val_loss"] = nullptr;
  }
  return out;
}

nlohmann::json EventJson(const tern::v1::JobEvent& e) {
  nlohmann::json j = {{"seq", e.seq()},         {"time_ms", e.time_ms()},        {"kind", e.kind()},
                      {"message", e.message()}, {"state", StateName(e.state())}, {"rank", e.rank()},
                      {"worker", e.worker()}};
  // A structured payload (memory, checkpoint, ...) also as [[label, value], ...] for display.
  const Fields fields = EventFields(e.kind(), e.message());
  if (!fields.empty()) j["fields"] = fields;
  return j;
}

nlohmann::json MetricJson(const tern::v1::MetricPoint& p) {
  return {{"kind", p.kind()}, {"step", p.step()},   {"time_ms", p.time_ms()},
          {"rank", p.rank()}, {"round", p.round()}, {"values", Values(p.values())}};
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tern::daemon
