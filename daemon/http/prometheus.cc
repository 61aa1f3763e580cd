#include "daemon/http/prometheus.h"

#include <algorithm>

#include "daemon/state/coordinator.h"
#include "infra/http/prometheus_text.h"

namespace tern::daemon {
namespace {

using infra::PrometheusText;
using infra::PromLabels;

// Per-job series: newest step values (name, value key, scale to base units, help).
struct StepSeries {
  const char* name;
  const char* key;
  double scale;
  const char* help;
};
constexpr StepSeries kStepSeries[] = {
    {"tern_job_loss", "loss", 1, "Training loss of the newest step."},
    {"tern_job_learning_rate", "lr", 1, "Learning rate of the newest step."},
    {"tern_job_grad_norm", "grad_norm", 1, "Gradient norm (before clipping) of the newest step."},
    {"tern_job_tokens_per_second", "tokens_per_s", 1,
     "Global training throughput of the newest step."},
    {"tern_job_step_seconds", "step_ms", 1e-3, "Wall time of the newest step."},
    {"tern_job_step_bytes_intra_node", "bytes_intra_node", 1,
     "Bytes all ranks sent to ranks on their own node in the newest step."},
    {"tern_job_step_bytes_inter_node", "bytes_inter_node", 1,
     "Bytes all ranks sent to other nodes in the newest step."},
};
constexpr std::pair<const char*, const char*> kPhases[] = {
    {"forward", "forward_ms"},     {"backward", "backward_ms"},     {"comm", "comm_ms"},
    {"optimizer", "optimizer_ms"}, {"checkpoint", "checkpoint_ms"},
};

void JobFamilies(const ClusterSnapshot& snap, PrometheusText& p) {
  p.Family("tern_jobs", "gauge", "Jobs known to ternd, by state.");
  for (int s = tern::v1::JobState_MIN; s <= tern::v1::JobState_MAX; ++s) {
    if (s == tern::v1::JOB_STATE_UNSPECIFIED) continue;
    int n = 0;
    for (const auto& j : snap.jobs) n += j.state() == s ? 1 : 0;
    p.Sample(n, {{"state", StateName(static_cast<tern::v1::JobState>(s))}});
  }
  auto per_job = [&](const char* name, const char* type, const char* help, auto value) {
    p.Family(name, type, help);
    for (const auto& j : snap.jobs) {
      auto it = snap.stats.find(j.id());
      const JobAggregate* agg = it == snap.stats.end() ? nullptr : &it->second;
      auto v = value(j, agg);
      if (v) p.Sample(*v, {{"job", j.id()}});
    }
  };
  using Opt = std::optional<double>;
  p.Family("tern_job_info", "gauge", "1 per job, with its name and state as labels.");
  for (const auto& j : snap.jobs) {
    p.Sample(1, {{"job", j.id()}, {"name", j.spec().name()}, {"state", StateName(j.state())}});
  }
  per_job("tern_job_step", "gauge", "Newest optimizer step reported by rank 0.",
          [](const auto& j, const JobAggregate*) -> Opt { return j.last_metric().step(); });
  per_job("tern_job_train_iters", "gauge", "Optimizer steps the job runs in total.",
          [](const auto& j, const JobAggregate*) -> Opt { return j.spec().train_iters(); });
  per_job("tern_job_round", "gauge", "Current round (restarts after resharding add one).",
          [](const auto& j, const JobAggregate*) -> Opt { return j.round(); });
  per_job("tern_job_ranks", "gauge", "Ranks placed in the current round of a running job.",
          [](const auto& j, const JobAggregate*) -> Opt {
            return IsTerminal(j.state()) ? 0 : j.placement_size();
          });
  for (const auto& s : kStepSeries) {
    per_job(s.name, "gauge", s.help, [&](const auto& j, const JobAggregate*) -> Opt {
      auto it = j.last_metric().values().find(s.key);
      if (it == j.last_metric().values().end()) return std::nullopt;
      return it->second * s.scale;
    });
  }
  p.Family("tern_job_step_phase_seconds", "gauge",
           "Newest step's time by phase (forward, backward, comm, optimizer, checkpoint stall).");
  for (const auto& j : snap.jobs) {
    for (const auto& [phase, key] : kPhases) {
      auto it = j.last_metric().values().find(key);
      if (it != j.last_metric().values().end()) {
        p.Sample(it->second / 1e3, {{"job", j.id()}, {"phase", phase}});
      }
    }
  }
  per_job("tern_job_val_loss", "gauge", "Newest validation loss.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a && a->val_loss >= 0 ? Opt(a->val_loss) : std::nullopt;
          });
  per_job("tern_job_goodput_ratio", "gauge",
          "Fraction of the job's wall time spent in productive training steps.",
          [&](const auto& j, const JobAggregate* a) -> Opt {
            return a ? Opt(Goodput(*a, j, snap.now_ms)) : std::nullopt;
          });
  per_job("tern_job_incidents_total", "counter",
          "Rounds stopped by an incident (lost node, failed rank, drain, grow) since ternd "
          "started.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a ? Opt(static_cast<double>(a->incidents.size())) : std::nullopt;
          });
  per_job("tern_job_steps_lost_total", "counter",
          "Steps redone after incidents (reported minus resumed-from).",
          [](const auto&, const JobAggregate* a) -> Opt {
            if (!a) return std::nullopt;
            double lost = 0;
            for (const auto& inc : a->incidents) lost += std::max<int64_t>(0, inc.steps_lost());
            return lost;
          });
  per_job("tern_job_last_incident_resume_seconds", "gauge",
          "Newest incident: seconds from its cause to the first step of the next round.",
          [](const auto&, const JobAggregate* a) -> Opt {
            if (!a || a->incidents.empty() || a->incidents.back().resume_s() < 0)
              return std::nullopt;
            return a->incidents.back().resume_s();
          });
  per_job("tern_job_eta_seconds", "gauge", "Estimated seconds until the job finishes.",
          [&](const auto& j, const JobAggregate*) -> Opt {
            const double eta = EtaSeconds(j, snap.now_ms);
            return eta >= 0 ? Opt(eta) : std::nullopt;
          });
  per_job("tern_job_checkpoints_total", "counter", "Checkpoints committed since ternd started.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a ? Opt(static_cast<double>(a->checkpoints)) : std::nullopt;
          });
  per_job("tern_job_checkpoint_bytes_total", "counter",
          "Bytes of the checkpoints committed since ternd started.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a ? Opt(a->checkpoint_bytes) : std::nullopt;
          });
  per_job("tern_job_checkpoint_seconds_total", "counter",
          "Seconds spent writing the checkpoints committed since ternd started.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a ? Opt(a->checkpoint_seconds) : std::nullopt;
          });
  per_job("tern_job_checkpoint_last_gibps", "gauge", "Write speed of the newest checkpoint.",
          [](const auto&, const JobAggregate* a) -> Opt {
            return a && a->checkpoints > 0 ? Opt(a->last_checkpoint_gibps) : std::nullopt;
          });
  p.Family("tern_job_events_total", "counter", "Job events since ternd started, by kind.");
  for (const auto& j : snap.jobs) {
    auto it = snap.stats.find(j.id());
    if (it == snap.stats.end()) continue;
    for (const auto& [kind, n] : it->second.events_by_kind) {
      p.Sample(static_cast<double>(n), {{"job", j.id()}, {"kind", kind}});
    }
  }
}

void WorkerFamilies(const ClusterSnapshot& snap, PrometheusText& p) {
  int connected = 0, ranks = 0;
  for (const auto& w : snap.workers) {
    connected += w.connected() ? 1 : 0;
    ranks += w.connected() ? w.used_slots() : 0;
  }
  p.Family("tern_workers", "gauge", "Known workers, by connection state.");
  p.Sample(connected, {{"state", "connected"}});
  p.Sample(static_cast<double>(snap.workers.size()) - connected, {{"state", "disconnected"}});
  p.Single("tern_ranks_running", "gauge", "Rank slots in use across connected workers.", ranks);
  auto per_worker = [&](const char* name, const char* help, auto value) {
    p.Family(name, "gauge", help);
    for (const auto& w : snap.workers) p.Sample(value(w), {{"worker", w.name()}});
  };
  per_worker("tern_cluster_worker_connected", "1 while the worker's session is open.",
             [](const auto& w) { return w.connected() ? 1.0 : 0.0; });
  per_worker("tern_cluster_worker_slots", "Rank slots the worker offers.",
             [](const auto& w) { return static_cast<double>(w.slots()); });
  per_worker("tern_cluster_worker_used_slots", "Rank slots in use on the worker.",
             [](const auto& w) { return static_cast<double>(w.used_slots()); });
  per_worker("tern_cluster_worker_last_heartbeat_timestamp_seconds",
             "Unix time of the worker's newest heartbeat.",
             [](const auto& w) { return static_cast<double>(w.last_heartbeat_ms()) / 1e3; });
  p.Family("tern_cluster_worker_heartbeat_age_seconds", "gauge",
           "Seconds since a connected worker's newest heartbeat.");
  for (const auto& w : snap.workers) {
    if (!w.connected()) continue;
    p.Sample(static_cast<double>(snap.now_ms - w.last_heartbeat_ms()) / 1e3,
             {{"worker", w.name()}});
  }
}

}  // namespace

std::string RenderPrometheus(const ClusterSnapshot& snap) {
  PrometheusText p;
  p.Single("tern_up", "gauge", "1 while ternd serves.", 1);
  JobFamilies(snap, p);
  WorkerFamilies(snap, p);
  p.Single("tern_watch_streams", "gauge", "Open WatchJob and dashboard event streams.",
           static_cast<double>(snap.watch_streams));
  return p.Take();
}

}  // namespace tern::daemon
