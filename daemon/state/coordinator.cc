// Coordinator, job side: submission, scheduling, state changes, cancellation, watching.
// The worker side (registration, sessions, failure detection) is in coordinator_workers.cc.
#include "daemon/state/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/state/cpu_overlap.h"
#include "worker/core/exit_codes.h"
#include "worker/core/status.h"
#include "worker/core/text.h"

namespace tern::daemon {

bool IsTerminal(tern::v1::JobState s) {
  return s == tern::v1::JOB_STATE_SUCCEEDED || s == tern::v1::JOB_STATE_FAILED ||
         s == tern::v1::JOB_STATE_CANCELLED;
}

std::string StateName(tern::v1::JobState s) {
  std::string n = tern::v1::JobState_Name(s);
  return n.rfind("JOB_STATE_", 0) == 0 ? n.substr(10) : n;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Coordinator::Coordinator(CoordinatorOptions options, EventLoop* loop,
                         std::unique_ptr<JobStore> store, std::unique_ptr<Scheduler> scheduler,
                         RendezvousStore* rendezvous)
    : options_(std::move(options)),
      loop_(loop),
      store_(std::move(store)),
      scheduler_(std::move(scheduler)),
      rendezvous_(rendezvous) {}

absl::Status Coordinator::Recover() {
  TERN_ASSIGN_OR_RETURN(auto jobs, store_->LoadJobs());
  const int64_t now = NowMs();
  for (auto& job : jobs) {
    JobRuntime& rt = jobs_[job.id()];
    rt.job = std::move(job);
    TERN_ASSIGN_OR_RETURN(auto events, store_->Events(rt.job.id()));
    rt.next_seq = events.empty() ? 1 : events.back().seq() + 1;
    CacheState(rt.job);
    TERN_ASSIGN_OR_RETURN(auto metrics, store_->Metrics(rt.job.id()));
    for (auto it = metrics.rbegin(); it != metrics.rend(); ++it) {
      if (it->kind() == "step") {
        *rt.job.mutable_last_metric() = *it;
        break;
      }
    }
    if (rt.job.state() == tern::v1::JOB_STATE_PENDING) pending_.push_back(rt.job.id());
    if (rt.job.state() == tern::v1::JOB_STATE_RESHARDING) resharding_.insert(rt.job.id());
    if (rt.job.state() == tern::v1::JOB_STATE_RUNNING ||
        rt.job.state() == tern::v1::JOB_STATE_RESHARDING) {
      // Assume the assignments were delivered; the workers confirm or deny on re-register.
      for (const auto& p : rt.job.placement()) {
        rt.ranks[p.rank()] = RankRuntime{p.worker(), true, false, 0};
        rt.awaiting.insert(p.worker());
      }
      rt.await_deadline_ms = now + options_.reconnect_grace_ms;
      // Between rounds the stopped round's ranks may not have had (or obeyed) their order:
      // those still running once their workers are back get --stop-timeout to go.
      if (rt.job.state() == tern::v1::JOB_STATE_RESHARDING)
        rt.stop_deadline_ms = rt.await_deadline_ms + options_.stop_timeout_ms;
      AddEvent(rt, "restored",
               absl::StrCat("ternd restarted; waiting up to ", options_.reconnect_grace_ms / 1000,
                            " s for workers ", absl::StrJoin(rt.awaiting, ", "), " to reconnect"));
    }
  }
  TERN_ASSIGN_OR_RETURN(auto workers, store_->LoadWorkers());
  for (auto& w : workers) {
    if (now - w.last_heartbeat_ms() > options_.worker_expiry_ms) continue;  // history only
    w.set_connected(false);
    offline_[w.name()] = std::move(w);
  }
  spdlog::info("recovered {} jobs ({} pending), {} known workers", jobs_.size(), pending_.size(),
               offline_.size());
  loop_->PostAfter(std::chrono::milliseconds(options_.tick_ms), [this] { Tick(); });
  return absl::OkStatus();
}

Coordinator::JobRuntime* Coordinator::Find(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> Coordinator::Submit(const tern::v1::JobSpec& spec) {
  TERN_ASSIGN_OR_RETURN(std::string id, store_->NextJobId());
  JobRuntime& rt = jobs_[id];
  rt.job.set_id(id);
  *rt.job.mutable_spec() = spec;
  // A job without its own checkpoint.dir checkpoints under --checkpoint-root; the stored spec
  // says where, so the ranks, `tern show` and a later resume all see the same directory.
  if (spec.checkpoint().dir().empty() && !options_.checkpoint_root.empty())
    rt.job.mutable_spec()->mutable_checkpoint()->set_dir(
        absl::StrCat(options_.checkpoint_root, "/", id));
  rt.job.set_state(tern::v1::JOB_STATE_PENDING);
  rt.job.set_created_ms(NowMs());
  if (auto st = store_->PutJob(rt.job); !st.ok()) {
    jobs_.erase(id);
    return st;
  }
  CacheState(rt.job);
  const auto& r = spec.resources();
  AddEvent(rt, "submitted",
           absl::StrCat("job \"", spec.name(), "\" submitted: ", r.has_nodes() ? r.nodes() : 1,
                        " node(s) x ", r.has_ranks_per_node() ? r.ranks_per_node() : 1,
                        " rank(s), ", spec.train_iters(), " steps"));
  pending_.push_back(id);
  Schedule();
  return id;
}

absl::StatusOr<tern::v1::Job> Coordinator::GetJob(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job ", id));
  return it->second.job;
}

std::vector<tern::v1::Job> Coordinator::ListJobs(tern::v1::JobState state, int limit,
                                                 const std::string& before_id) const {
  if (limit <= 0) limit = 1000;
  std::vector<tern::v1::Job> out;
  auto it =
      before_id.empty() ? jobs_.rbegin() : std::make_reverse_iterator(jobs_.lower_bound(before_id));
  for (; it != jobs_.rend() && static_cast<int>(out.size()) < limit; ++it) {
    if (state != tern::v1::JOB_STATE_UNSPECIFIED && it->second.job.state() != state) continue;
    out.push_back(it->second.job);
  }
  return out;
}

absl::StatusOr<tern::v1::Job> Coordinator::Cancel(const std::string& id,
                                                  const std::string& reason) {
  JobRuntime* rt = Find(id);
  if (!rt) return absl::NotFoundError(absl::StrCat("no job ", id));
  if (IsTerminal(rt->job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " already ", StateName(rt->job.state())));
  }
  const std::string why = reason.empty() ? "cancelled by user" : reason;
  pending_.erase(std::remove(pending_.begin(), pending_.end(), id), pending_.end());
  resharding_.erase(id);
  CancelRanks(*rt, why);
  rt->job.set_message(why);
  SetState(*rt, tern::v1::JOB_STATE_CANCELLED, "state", why);
  Schedule();
  return rt->job;
}

absl::Status Coordinator::Watch(const std::string& id, std::shared_ptr<WatchSink> sink) {
  JobRuntime* rt = Find(id);
  if (!rt) return absl::NotFoundError(absl::StrCat("no job ", id));
  tern::v1::WatchJobResponse first;
  *first.mutable_job() = rt->job;
  sink->Send(std::move(first));
  TERN_ASSIGN_OR_RETURN(auto events, store_->Events(id));
  TERN_ASSIGN_OR_RETURN(auto metrics, store_->Metrics(id));
  // Merge the two histories by time (events first on ties).
  size_t e = 0, m = 0;
  while (e < events.size() || m < metrics.size()) {
    tern::v1::WatchJobResponse item;
    if (m >= metrics.size() || (e < events.size() && events[e].time_ms() <= metrics[m].time_ms())) {
      *item.mutable_event() = std::move(events[e++]);
    } else {
      *item.mutable_metric() = std::move(metrics[m++]);
    }
    if (!sink->Send(std::move(item))) return absl::OkStatus();  // watcher gone or too slow
  }
  if (IsTerminal(rt->job.state())) {
    sink->Close(grpc::Status::OK);
  } else {
    hub_.Subscribe(id, std::move(sink));
  }
  return absl::OkStatus();
}

void Coordinator::AddEvent(JobRuntime& rt, const std::string& kind, const std::string& message,
                           int rank, const std::string& worker) {
  tern::v1::JobEvent ev;
  ev.set_job_id(rt.job.id());
  ev.set_time_ms(NowMs());
  ev.set_kind(kind);
  ev.set_message(message);
  ev.set_state(rt.job.state());
  ev.set_rank(rank);
  ev.set_worker(worker);
  ev.set_seq(rt.next_seq++);
  if (auto st = store_->AppendEvent(ev); !st.ok()) {
    spdlog::error("job {}: cannot store event: {}", rt.job.id(), st.ToString());
  }
  spdlog::info("job {} [{}] {}", rt.job.id(), Printable(kind), Printable(message, 1024));
  tern::v1::WatchJobResponse item;
  *item.mutable_event() = std::move(ev);
  hub_.Publish(rt.job.id(), item);
}

void Coordinator::SetState(JobRuntime& rt, tern::v1::JobState state, const std::string& kind,
                           const std::string& message, int rank, const std::string& worker) {
  rt.job.set_state(state);
  if (state == tern::v1::JOB_STATE_RUNNING && rt.job.started_ms() == 0) {
    rt.job.set_started_ms(NowMs());
  }
  if (IsTerminal(state)) rt.job.set_finished_ms(NowMs());
  if (auto st = store_->PutJob(rt.job); !st.ok()) {
    spdlog::error("job {}: cannot store state: {}", rt.job.id(), st.ToString());
  }
  CacheState(rt.job);
  AddEvent(rt, kind, message, rank, worker);
  if (IsTerminal(state)) {
    rt.awaiting.clear();
    hub_.CloseJob(rt.job.id());
    rendezvous_->DropJob(rt.job.id());
  }
}

void Coordinator::FailJob(JobRuntime& rt, const std::string& kind, const std::string& message,
                          int rank, const std::string& worker) {
  CancelRanks(rt, message);
  rt.job.set_message(message);
  SetState(rt, tern::v1::JOB_STATE_FAILED, kind, message, rank, worker);
  Schedule();
}

void Coordinator::CancelRanks(JobRuntime& rt, const std::string& reason) {
  std::set<std::string> workers;
  for (const auto& [rank, r] : rt.ranks) {
    if (!r.exited) workers.insert(r.worker);
  }
  for (const auto& w : workers) {
    tern::v1::CoordinatorMessage msg;
    msg.mutable_cancel()->set_job_id(rt.job.id());
    msg.mutable_cancel()->set_reason(reason);
    msg.mutable_cancel()->set_round(rt.job.round());
    membership_.Send(w, std::move(msg));
  }
}

void Coordinator::Schedule() {
  // Running jobs between rounds come first: they hold a place in the cluster already.
  for (const std::string& id : std::vector<std::string>(resharding_.begin(), resharding_.end()))
    NextRound(jobs_[id]);
  std::vector<PendingJob> pending;
  for (const auto& id : pending_) {
    const auto& r = jobs_[id].job.spec().resources();
    pending.push_back(
        {id, r.has_nodes() ? r.nodes() : 1, r.has_ranks_per_node() ? r.ranks_per_node() : 1});
  }
  if (pending.empty()) {
    MaybeGrow();
    return;
  }
  const std::vector<FreeSlots> free = membership_.Free();
  std::set<std::string> started;
  for (const Placement& p : scheduler_->Schedule(pending, free)) {
    pending_.erase(std::remove(pending_.begin(), pending_.end(), p.job_id), pending_.end());
    started.insert(p.job_id);
    StartRound(jobs_[p.job_id], p);
  }
  MaybeGrow();
  // Every job still waiting says for what, and what the cluster has (stored when it changes).
  for (const PendingJob& job : pending) {
    if (started.count(job.id)) continue;
    JobRuntime& rt = jobs_[job.id];
    std::string message = PendingMessage(job, free);
    if (rt.job.message() == message) continue;
    rt.job.set_message(std::move(message));
    if (auto st = store_->PutJob(rt.job); !st.ok()) {
      spdlog::error("job {}: cannot store its message: {}", rt.job.id(), st.ToString());
    }
  }
}

tern::v1::CoordinatorMessage Coordinator::MakeAssignment(const JobRuntime& rt,
                                                         const std::vector<int>& ranks) const {
  tern::v1::CoordinatorMessage msg;
  auto* a = msg.mutable_assign();
  a->set_job_id(rt.job.id());
  a->set_round(rt.job.round());
  *a->mutable_spec() = RoundSpec(rt);
  a->set_resume(rt.job.round() > 1);  // every round after the first continues
  a->set_world_size(rt.job.world_size());
  const auto& res = rt.job.spec().resources();
  a->set_ranks_per_node(res.has_ranks_per_node() ? res.ranks_per_node() : 1);
  a->set_rendezvous_prefix(absl::StrCat(rt.job.id(), "/", rt.job.round()));
  for (int rank : ranks) a->add_ranks(rank);
  return msg;
}

void Coordinator::StartRound(JobRuntime& rt, const Placement& placement) {
  const auto& res = rt.job.spec().resources();
  const int rpn = res.has_ranks_per_node() ? res.ranks_per_node() : 1;
  const int world = rpn * static_cast<int>(placement.workers.size());
  rt.job.set_round(rt.job.round() + 1);
  rt.job.set_world_size(world);
  rt.job.clear_message();  // the PENDING line
  rt.job.clear_placement();
  rt.ranks.clear();
  std::vector<std::string> where;
  for (size_t n = 0; n < placement.workers.size(); ++n) {
    const std::string& w = placement.workers[n];
    std::vector<int> ranks;
    for (int i = 0; i < rpn; ++i) ranks.push_back(static_cast<int>(n) * rpn + i);
    tern::v1::CoordinatorMessage msg = MakeAssignment(rt, ranks);
    for (int i = 0; i < rpn; ++i) {
      const int rank = static_cast<int>(n) * rpn + i;
      auto* pl = rt.job.add_placement();
      pl->set_rank(rank);
      pl->set_worker(w);
      rt.ranks[rank] = RankRuntime{w, false, false, 0};
      membership_.Occupy(w, rt.job.id(), rank);
    }
    where.push_back(rpn == 1 ? absl::StrCat("rank ", n, " on ", w)
                             : absl::StrCat("ranks ", n * rpn, "-", n * rpn + rpn - 1, " on ", w));
    membership_.Send(w, std::move(msg));
  }
  if (auto st = store_->PutRound(rt.job); !st.ok()) {
    spdlog::error("job {}: cannot store round: {}", rt.job.id(), st.ToString());
  }
  SetState(rt, tern::v1::JOB_STATE_RUNNING, "scheduled",
           absl::StrCat("round ", rt.job.round(), ": ", absl::StrJoin(where, ", ")));
  auto overlaps = CpuOverlapWarnings(membership_.List());
  for (const std::string& w : placement.workers) {
    for (const std::string& line : overlaps[w]) {
      AddEvent(rt, "cpu_overlap", absl::StrCat("worker ", w, ": ", line), -1, w);
    }
  }
}

void Coordinator::HandleRankExit(const std::string& worker, const std::string& job_id, int round,
                                 int rank, int exit_code, const std::string& detail) {
  membership_.Release(worker, job_id, rank);
  JobRuntime* rt = Find(job_id);
  if (!rt || round != rt->job.round()) return;
  auto it = rt->ranks.find(rank);
  if (it == rt->ranks.end() || it->second.worker != worker || it->second.exited) return;
  it->second.exited = true;
  it->second.exit_code = exit_code;
  if (IsTerminal(rt->job.state())) {
    Schedule();  // its slot is free now
    return;
  }
  if (rt->job.state() == tern::v1::JOB_STATE_RESHARDING) {  // a rank of the stopped round
    // Every rank finished training before the order to stop reached it: the job is done.
    if (std::all_of(rt->ranks.begin(), rt->ranks.end(),
                    [](const auto& kv) { return kv.second.exited && kv.second.exit_code == 0; })) {
      resharding_.erase(rt->job.id());
      rt->stop_deadline_ms = 0;
      SetState(*rt, tern::v1::JOB_STATE_SUCCEEDED, "state",
               absl::StrCat("all ", rt->ranks.size(),
                            " ranks exited 0 (training finished before "
                            "the round could stop)"));
      Schedule();
      return;
    }
    NextRound(*rt);
    Schedule();
    return;
  }
  if (exit_code == kExitStoppedOnOrder && rt->job.spec().elastic().enabled()) {
    // The rank checkpointed the agreed step and stopped (SIGTERM from a batch system such as
    // Slurm's scancel --signal, or an order): a planned stop; the next round resumes there.
    StopRound(*rt, "rank_stopped",
              absl::StrCat("rank ", rank, " on worker ", worker,
                           " stopped after checkpointing (SIGTERM or an order)"),
              rank, worker);
    return;
  }
  if (exit_code != 0) {
    RoundFailed(*rt, "rank_exit",
                absl::StrCat("rank ", rank, " on worker ", worker, " exited with code ", exit_code,
                             detail.empty() || detail.rfind("exited", 0) == 0
                                 ? ""
                                 : absl::StrCat(" (", detail, ")")),
                rank, worker);
    return;
  }
  const bool all_done = std::all_of(rt->ranks.begin(), rt->ranks.end(), [](const auto& kv) {
    return kv.second.exited && kv.second.exit_code == 0;
  });
  if (all_done) {
    SetState(*rt, tern::v1::JOB_STATE_SUCCEEDED, "state",
             absl::StrCat("all ", rt->ranks.size(), " ranks exited 0"));
    Schedule();
  } else {
    AddEvent(*rt, "rank_exit", absl::StrCat("rank ", rank, " finished (exit 0) on ", worker), rank,
             worker);
  }
}

bool Coordinator::IsJobActive(const std::string& id) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  auto it = state_cache_.find(id);
  return it != state_cache_.end() && !IsTerminal(it->second);
}

bool Coordinator::JobExists(const std::string& id) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  return state_cache_.count(id) > 0;
}

void Coordinator::CacheState(const tern::v1::Job& job) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  state_cache_[job.id()] = job.state();
}

std::string Coordinator::LogPath(const std::string& job_id, int rank) const {
  return absl::StrCat(options_.state_dir, "/logs/", job_id, "/rank-", rank, ".log");
}

}  // namespace tern::daemon
