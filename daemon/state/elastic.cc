// Elastic rounds: what ternd does when a round of a running job fails (a worker lost, a rank
// exiting non-zero, a worker not back after a ternd restart). See coordinator.h.
//
//   RUNNING --grow or drain--> RESHARDING (StopRound: every rank ordered to checkpoint after the
//   step they agree on and exit 75; cancelled if still running after --stop-timeout) --> the
//   next round resumes from that checkpoint, no step lost.
//   RUNNING --failure--> RESHARDING (survivors cancelled: SIGTERM now, SIGKILL after the
//   worker's grace, so no rank waits for a collective timeout) --every rank of the round
//   gone, enough free workers--> next round: the most nodes in [min_nodes, max_nodes] the
//   free workers allow and the global batch divides into, every rank started with
//   --resume-if-any (the newest complete checkpoint, else from scratch). Checkpoint commits
//   are fenced by round, so a straggler of the stopped round cannot commit after this.
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/state/coordinator.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "worker/spec/job_config.h"

namespace tern::daemon {
namespace {

// The submitted spec resolved as ternd resolves it (files live on the workers).
absl::StatusOr<spec::JobConfig> Resolve(const tern::v1::JobSpec& s) {
  spec::ResolveOptions ro;
  ro.check_files = false;
  ro.cluster = true;
  ro.default_checkpoint_dir = true;
  return spec::ResolveJob(s, ro);
}

int RanksPerNode(const tern::v1::JobSpec& s) {
  return s.resources().has_ranks_per_node() ? s.resources().ranks_per_node() : 1;
}

}  // namespace

tern::v1::JobSpec Coordinator::RoundSpec(const JobRuntime& rt) const {
  tern::v1::JobSpec s = rt.job.spec();
  const int rpn = RanksPerNode(s);
  const int nodes = rt.job.world_size() / std::max(1, rpn);
  const int submitted = s.resources().has_nodes() ? s.resources().nodes() : 1;
  if (nodes <= 0 || nodes == submitted) return s;
  auto cfg = Resolve(rt.job.spec());
  if (!cfg.ok()) return s;  // validated at submission; cannot happen
  // elastic.keep: the global batch (the accumulation absorbs the new world) or the micro batch
  // and accumulation (the global batch follows the world; the checkpoint's samples consumed
  // keep the data position exact either way).
  const spec::RoundBatch b = spec::ElasticRoundBatch(*cfg, nodes);
  s.mutable_resources()->set_nodes(nodes);
  s.set_train_batch_size(b.global_batch);
  s.set_train_micro_batch_size_per_gpu(b.micro_batch);
  s.set_gradient_accumulation_steps(b.accum);
  return s;
}

void Coordinator::RoundFailed(JobRuntime& rt, const std::string& kind, const std::string& message,
                              int rank, const std::string& worker) {
  const auto& e = rt.job.spec().elastic();
  const int max_restarts = e.has_max_restarts() ? e.max_restarts() : 3;
  if (!e.enabled()) {
    FailJob(rt, kind, message, rank, worker);
    return;
  }
  if (rt.job.restarts() >= max_restarts) {
    FailJob(rt, kind, absl::StrCat(message, " (elastic.max_restarts ", max_restarts, " reached)"),
            rank, worker);
    return;
  }
  rt.incident_ms = NowMs();
  AddEvent(rt, kind == "worker_lost" ? "node_lost" : kind, message, rank, worker);
  const std::string why = absl::StrCat("round ", rt.job.round(), " stopped: ", message);
  CancelRanks(rt, why);
  rt.job.set_message(absl::StrCat(why, "; resharding"));
  resharding_.insert(rt.job.id());
  SetState(rt, tern::v1::JOB_STATE_RESHARDING, "round_stopped", why, rank, worker);
  NextRound(rt);
}

void Coordinator::NextRound(JobRuntime& rt) {
  if (rt.job.state() != tern::v1::JOB_STATE_RESHARDING) {
    resharding_.erase(rt.job.id());
    return;
  }
  // The stopped round must be gone first: its ranks exited or their workers lost.
  for (const auto& [rank, r] : rt.ranks)
    if (!r.exited && membership_.Find(r.worker) != nullptr) return;
  auto cfg = Resolve(rt.job.spec());
  if (!cfg.ok()) {
    FailJob(rt, "reshard", std::string(cfg.status().message()), -1, "");
    return;
  }
  const int rpn = RanksPerNode(rt.job.spec());
  const std::vector<int> sizes = spec::ElasticNodeCounts(*cfg);
  std::vector<FreeSlots> free = membership_.Free();
  std::vector<std::string> workers;
  // Workers of the stopped round first (their data and caches are warm), then by name.
  std::set<std::string> before;
  for (const auto& p : rt.job.placement()) before.insert(p.worker());
  std::sort(free.begin(), free.end(), [&](const FreeSlots& a, const FreeSlots& b) {
    const bool ia = before.count(a.worker) > 0, ib = before.count(b.worker) > 0;
    return ia != ib ? ia : a.worker < b.worker;
  });
  for (const auto& f : free)
    if (f.free >= rpn) workers.push_back(f.worker);
  int nodes = 0;
  for (int n : sizes)
    if (n <= static_cast<int>(workers.size())) nodes = std::max(nodes, n);
  if (nodes == 0) {
    const std::string waiting =
        absl::StrCat("resharding: waiting for ", cfg->elastic.min_nodes, " node(s) with ", rpn,
                     " free slot(s) each (node counts ",
                     cfg->elastic.keep_global_batch
                         ? absl::StrCat("that keep train_batch_size ", cfg->global_batch)
                         : std::string("in range"),
                     ": ", absl::StrJoin(sizes, ", "), "); ", workers.size(), " free now");
    if (rt.job.message() != waiting) {
      rt.job.set_message(waiting);
      (void)store_->PutJob(rt.job);
    }
    return;
  }
  workers.resize(nodes);
  const int from = rt.job.world_size(), to = nodes * rpn;
  const spec::RoundBatch batch = spec::ElasticRoundBatch(*cfg, nodes);
  const int accum = batch.accum;
  if (!rt.planned) rt.job.set_restarts(rt.job.restarts() + 1);
  rt.planned = false;
  rt.stop_deadline_ms = 0;
  resharding_.erase(rt.job.id());
  const double detect_s = rt.incident_ms > 0 ? (NowMs() - rt.incident_ms) / 1e3 : 0;
  AddEvent(rt, "reshard",
           nlohmann::json{{"from_world", from},
                          {"to_world", to},
                          {"nodes", nodes},
                          {"workers", workers},
                          {"gradient_accumulation_steps", accum},
                          {"train_batch_size", batch.global_batch},
                          {"restart", rt.job.restarts()},
                          {"checkpoint", "newest complete under " + cfg->checkpoint.dir},
                          {"seconds_since_incident", detect_s}}
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  StartRound(rt, Placement{rt.job.id(), workers});
  AddEvent(rt, "round_started",
           absl::StrCat("round ", rt.job.round(), ": world ", to, " (", nodes, " node(s) x ", rpn,
                        "), gradient accumulation ", accum,
                        ", resuming from the newest "
                        "complete checkpoint"));
}

void Coordinator::MaybeGrow() {
  if (!pending_.empty()) return;  // free workers go to waiting jobs first
  for (auto& [id, rt] : jobs_) {
    if (rt.job.state() != tern::v1::JOB_STATE_RUNNING || !rt.job.spec().elastic().enabled())
      continue;
    // Only once this round has made progress (a step reported), so growing never loops.
    if (rt.job.last_metric().round() != rt.job.round()) continue;
    auto cfg = Resolve(rt.job.spec());
    if (!cfg.ok()) continue;
    const int rpn = RanksPerNode(rt.job.spec());
    const int nodes = rt.job.world_size() / std::max(1, rpn);
    std::set<std::string> mine;
    for (const auto& p : rt.job.placement()) mine.insert(p.worker());
    int extra = 0;
    for (const auto& f : membership_.Free())
      if (!mine.count(f.worker) && f.free >= rpn) ++extra;
    int target = nodes;
    for (int n : spec::ElasticNodeCounts(*cfg))
      if (n > nodes && n <= nodes + extra) target = std::max(target, n);
    if (target == nodes) continue;
    const std::string why = absl::StrCat("growing from ", nodes, " to ", target,
                                         " node(s): ", extra, " free worker(s) joined");
    StopRound(rt, "grow", why);
  }
}

void Coordinator::StopRound(JobRuntime& rt, const std::string& kind, const std::string& why,
                            int rank, const std::string& worker) {
  AddEvent(rt, kind, why, rank, worker);
  rt.incident_ms = NowMs();
  rt.planned = true;
  rt.stop_deadline_ms = NowMs() + options_.stop_timeout_ms;
  std::set<std::string> workers;
  for (const auto& [r, run] : rt.ranks)
    if (!run.exited) workers.insert(run.worker);
  for (const auto& w : workers) {
    tern::v1::CoordinatorMessage msg;
    auto* o = msg.mutable_order();
    o->set_job_id(rt.job.id());
    o->set_round(rt.job.round());
    o->set_op(tern::v1::RankOrder::OP_STOP);
    o->set_reason(why);
    membership_.Send(w, std::move(msg));
  }
  const std::string stopping = absl::StrCat("round ", rt.job.round(), " stopping: ", why,
                                            "; checkpoint after the current step, then resharding");
  rt.job.set_message(stopping);
  resharding_.insert(rt.job.id());
  SetState(rt, tern::v1::JOB_STATE_RESHARDING, "round_stopped", stopping, rank, worker);
}

}  // namespace tern::daemon
