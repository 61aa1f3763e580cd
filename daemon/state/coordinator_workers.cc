// Coordinator, worker side: registration (and reconciliation of the ranks a reconnecting
// worker still runs), session messages, rank exits, logs, failure detection.
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/state/coordinator.h"
#include "daemon/state/cpu_overlap.h"
#include "worker/core/status.h"
#include "worker/core/text.h"

namespace tern::daemon {

absl::StatusOr<tern::v1::RegisterResponse> Coordinator::RegisterWorker(
    const tern::v1::RegisterRequest& req) {
  TERN_RETURN_IF_ERROR(CheckName("worker name (tern-worker --name)", req.name(), false));
  TERN_RETURN_IF_ERROR(CheckName("worker host", req.host(), true));
  if (req.slots() < 1 || req.slots() > kMaxWorkerSlots) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", req.name(), ": slots must be 1..",
                                                   kMaxWorkerSlots, " (got ", req.slots(), ")"));
  }
  TERN_RETURN_IF_ERROR(CheckCpuSets(req));
  const int64_t now = NowMs();
  const WorkerState* holder = membership_.Find(req.name());
  if (holder && (req.instance_id().empty() || holder->instance_id != req.instance_id()) &&
      Membership::Live(*holder, now, options_.heartbeat_timeout_ms)) {
    spdlog::warn("refused a second worker named \"{}\" (host {}): the name is held by host {}",
                 Printable(req.name()), Printable(req.host()), Printable(holder->info.host()));
    return absl::AlreadyExistsError(absl::StrCat(
        "worker name \"", Printable(req.name()), "\" is held by a live session (host ",
        Printable(holder->info.host()), ", last heartbeat ", now - holder->info.last_heartbeat_ms(),
        " ms ago) --> hint: give this worker another --name, or stop the other one: the name is "
        "free once its session ends (disconnect, or ",
        options_.heartbeat_timeout_ms, " ms without a heartbeat)"));
  }
  const bool known = holder != nullptr;
  tern::v1::RegisterResponse resp;
  resp.set_worker_id(req.name());
  resp.set_session_id(membership_.Register(req, now));
  resp.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  offline_.erase(req.name());
  spdlog::info("worker {} ({}) {} with {} slots, {} known ranks", Printable(req.name()),
               Printable(req.host()), known ? "re-registered" : "registered", req.slots(),
               req.ranks_size());
  ReconcileReportedRanks(req.name(), req, &resp);
  PersistWorker(req.name());
  return resp;
}

void Coordinator::ReconcileReportedRanks(const std::string& worker,
                                         const tern::v1::RegisterRequest& req,
                                         tern::v1::RegisterResponse* resp) {
  std::set<std::pair<std::string, int>> reported;
  std::set<std::string> orphan_jobs;
  for (const auto& r : req.ranks()) {
    JobRuntime* rt = Find(r.job_id());
    auto it = rt ? rt->ranks.find(r.rank()) : decltype(rt->ranks.end()){};
    const bool ours =
        rt && !IsTerminal(rt->job.state()) && rt->job.state() != tern::v1::JOB_STATE_RESHARDING &&
        r.round() == rt->job.round() && it != rt->ranks.end() && it->second.worker == worker;
    if (!ours) {
      if (r.running()) orphan_jobs.insert(r.job_id());
      // A rank of a round being stopped: gone only once the worker reports its exit.
      if (r.running() && rt && rt->job.state() == tern::v1::JOB_STATE_RESHARDING)
        reported.insert({r.job_id(), r.rank()});
      continue;
    }
    reported.insert({r.job_id(), r.rank()});
    auto* off = resp->add_log_offsets();
    off->set_job_id(r.job_id());
    off->set_rank(r.rank());
    std::error_code ec;
    auto size = std::filesystem::file_size(LogPath(r.job_id(), r.rank()), ec);
    off->set_offset(ec ? 0 : static_cast<int64_t>(size));
    if (r.running()) {
      it->second.started = true;
      membership_.Occupy(worker, r.job_id(), r.rank());
    }
  }
  // Ranks this worker still runs for jobs that ended (or that ternd never knew): stop them.
  for (const auto& job : orphan_jobs) {
    tern::v1::CoordinatorMessage msg;
    msg.mutable_cancel()->set_job_id(job);
    msg.mutable_cancel()->set_reason("job is no longer running on this worker");
    membership_.Send(worker, std::move(msg));
  }
  // Ranks placed here that the worker did not report: resend if never started, else lost.
  for (auto& [id, rt] : jobs_) {
    if (IsTerminal(rt.job.state())) continue;
    rt.awaiting.erase(worker);
    std::vector<int> lost, resend;
    for (auto& [rank, r] : rt.ranks) {
      if (r.worker != worker || r.exited || reported.count({id, rank})) continue;
      (r.started ? lost : resend).push_back(rank);
    }
    if (rt.job.state() == tern::v1::JOB_STATE_RESHARDING) {
      // Between rounds: what this worker no longer runs of the stopped round is gone.
      for (int rank : lost) rt.ranks[rank].exited = true;
      for (int rank : resend) rt.ranks[rank].exited = true;
      NextRound(rt);
      continue;
    }
    if (!lost.empty()) {
      RoundFailed(rt, "worker_lost",
                  absl::StrCat("worker ", worker, " re-registered without rank(s) ",
                               absl::StrJoin(lost, ","), " (worker restarted?)"),
                  lost[0], worker);
      continue;
    }
    if (!resend.empty()) {
      tern::v1::CoordinatorMessage msg = MakeAssignment(rt, resend);
      for (int rank : resend) membership_.Occupy(worker, id, rank);
      membership_.Send(worker, std::move(msg));
    }
  }
  // Exits that happened while disconnected are not handled here: the worker re-sends them
  // on the new session after the metrics it buffered, so no metric is lost to a job that
  // already ended.
}

absl::Status Coordinator::OpenSession(const std::string& worker, int64_t session_id,
                                      std::shared_ptr<SessionSink> sink) {
  if (!membership_.Attach(worker, session_id, std::move(sink), NowMs())) {
    return absl::FailedPreconditionError(absl::StrCat("session ", session_id, " of worker ", worker,
                                                      " is not current: register again"));
  }
  PersistWorker(worker);
  Schedule();
  return absl::OkStatus();
}

void Coordinator::OnSessionClosed(const std::string& worker, int64_t session_id) {
  if (membership_.Detach(worker, session_id)) {
    spdlog::warn("worker {}: session closed; lost unless it reconnects within {} ms",
                 Printable(worker), options_.heartbeat_timeout_ms);
  }
}

void Coordinator::OnWorkerMessage(const std::string& worker, int64_t session_id,
                                  const tern::v1::WorkerMessage& msg) {
  WorkerState* w = membership_.Find(worker);
  if (!w || w->session_id != session_id) return;  // a stale session's late message
  const int64_t now = NowMs();
  membership_.Heartbeat(worker, now);
  switch (msg.msg_case()) {
    case tern::v1::WorkerMessage::kStarted: {
      JobRuntime* rt = Find(msg.started().job_id());
      if (!rt || rt->job.round() != msg.started().round()) break;
      auto it = rt->ranks.find(msg.started().rank());
      if (it == rt->ranks.end() || it->second.started) break;
      it->second.started = true;
      if (std::all_of(rt->ranks.begin(), rt->ranks.end(),
                      [](const auto& kv) { return kv.second.started; })) {
        AddEvent(*rt, "running", absl::StrCat("all ", rt->ranks.size(), " ranks started"));
      }
      break;
    }
    case tern::v1::WorkerMessage::kExited: {
      const auto& e = msg.exited();
      HandleRankExit(worker, e.job_id(), e.round(), e.rank(), e.exit_code(), e.detail());
      break;
    }
    case tern::v1::WorkerMessage::kMetric:
      HandleMetric(msg.metric());
      break;
    case tern::v1::WorkerMessage::kEvent: {
      JobRuntime* rt = Find(msg.event().job_id());
      if (!rt || IsTerminal(rt->job.state())) break;
      AddEvent(*rt, msg.event().kind().empty() ? "rank" : msg.event().kind(), msg.event().message(),
               msg.event().rank(), worker);
      break;
    }
    case tern::v1::WorkerMessage::kLog:
      AppendLog(worker, msg.log());
      break;
    case tern::v1::WorkerMessage::kDrain:
      DrainWorker(worker, msg.drain().reason());
      break;
    default:
      break;  // heartbeat (handled above) or hello again
  }
}

void Coordinator::HandleMetric(const tern::v1::MetricPoint& point) {
  JobRuntime* rt = Find(point.job_id());
  if (!rt || IsTerminal(rt->job.state())) return;
  if (point.kind() == "step") *rt->job.mutable_last_metric() = point;
  if (auto st = store_->AppendMetric(point); !st.ok()) {
    spdlog::error("job {}: cannot store metric: {}", point.job_id(), st.ToString());
  }
  tern::v1::WatchJobResponse item;
  *item.mutable_metric() = point;
  hub_.Publish(point.job_id(), item);
}

void Coordinator::AppendLog(const std::string& worker, const tern::v1::RankLog& log) {
  JobRuntime* rt = Find(log.job_id());
  if (!rt || log.data().empty()) return;
  const std::string path = LogPath(log.job_id(), log.rank());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  auto size = std::filesystem::file_size(path, ec);
  const int64_t have = ec ? 0 : static_cast<int64_t>(size);
  const int64_t end = log.offset() + static_cast<int64_t>(log.data().size());
  if (end <= have) return;  // already have it (resent after a reconnect)
  const int64_t skip = std::max<int64_t>(0, have - log.offset());
  std::ofstream out(path, std::ios::app | std::ios::binary);
  out.write(log.data().data() + skip, static_cast<std::streamsize>(log.data().size() - skip));
  if (!out) spdlog::error("cannot append to {}", path);
}

void Coordinator::WorkerLost(const std::string& worker, const std::string& why) {
  auto state = membership_.Remove(worker);
  if (!state) return;
  spdlog::warn("worker {} lost: {}", Printable(worker), Printable(why));
  state->info.set_connected(false);
  offline_[worker] = state->info;
  (void)store_->PutWorker(state->info);
  for (auto& [id, rt] : jobs_) {
    if (IsTerminal(rt.job.state()) || rt.job.state() == tern::v1::JOB_STATE_PENDING) continue;
    int lost_rank = -1;
    for (const auto& [rank, r] : rt.ranks) {
      if (r.worker == worker && !r.exited) {
        lost_rank = rank;
        break;
      }
    }
    if (lost_rank < 0) continue;
    if (rt.job.state() == tern::v1::JOB_STATE_RESHARDING) {  // NextRound sees it gone
      AddEvent(rt, "node_lost",
               absl::StrCat("worker ", worker, " lost (", why, "); it ran rank ", lost_rank),
               lost_rank, worker);
      continue;
    }
    RoundFailed(rt, "worker_lost",
                absl::StrCat("worker ", worker, " lost (", why, "); it ran rank ", lost_rank),
                lost_rank, worker);
  }
  Schedule();
}

absl::StatusOr<std::vector<std::string>> Coordinator::Drain(const std::string& worker,
                                                            const std::string& reason) {
  if (membership_.Find(worker) == nullptr)
    return absl::NotFoundError(absl::StrCat("no connected worker ", Printable(worker)));
  std::vector<std::string> jobs;
  for (const auto& [id, rt] : jobs_) {
    if (IsTerminal(rt.job.state())) continue;
    for (const auto& [rank, r] : rt.ranks) {
      if (r.worker == worker && !r.exited) {
        jobs.push_back(id);
        break;
      }
    }
  }
  DrainWorker(worker, reason);
  return jobs;
}

void Coordinator::DrainWorker(const std::string& worker, const std::string& reason) {
  WorkerState* w = membership_.Find(worker);
  if (!w || w->draining) return;
  w->draining = true;
  spdlog::warn("worker {} is draining ({}): moving its jobs away", Printable(worker),
               Printable(reason));
  for (auto& [id, rt] : jobs_) {
    if (rt.job.state() != tern::v1::JOB_STATE_RUNNING) continue;
    int rank = -1;
    for (const auto& [r, run] : rt.ranks)
      if (run.worker == worker && !run.exited) rank = r;
    if (rank < 0) continue;
    const std::string why =
        absl::StrCat("worker ", worker, " is going away (", reason, "); it ran rank ", rank);
    if (rt.job.spec().elastic().enabled()) {
      StopRound(rt, "preempted", why, rank, worker);  // checkpoint now, continue elsewhere
    } else {
      RoundFailed(rt, "preempted", why, rank, worker);
    }
  }
  Schedule();
}

void Coordinator::Tick() {
  const int64_t now = NowMs();
  for (const auto& name : membership_.Expired(now, options_.heartbeat_timeout_ms)) {
    WorkerLost(name, absl::StrCat("no heartbeat for ", options_.heartbeat_timeout_ms, " ms"));
  }
  // Workers gone for longer than --worker-expiry leave the listings (their row stays in
  // the state db as history).
  for (auto it = offline_.begin(); it != offline_.end();) {
    if (now - it->second.last_heartbeat_ms() > options_.worker_expiry_ms) {
      spdlog::info("worker {} expired from the listings (gone for more than {} ms)",
                   Printable(it->first), options_.worker_expiry_ms);
      it = offline_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [id, rt] : jobs_) {
    // A round ordered to stop that has not: cancel what still runs (resume from the newest
    // complete checkpoint instead of this step's).
    if (rt.stop_deadline_ms > 0 && now >= rt.stop_deadline_ms &&
        rt.job.state() == tern::v1::JOB_STATE_RESHARDING) {
      rt.stop_deadline_ms = 0;
      std::vector<int> running;
      for (const auto& [rank, r] : rt.ranks)
        if (!r.exited) running.push_back(rank);
      if (!running.empty()) {
        const std::string why = absl::StrCat("rank(s) ", absl::StrJoin(running, ","),
                                             " did not stop within ", options_.stop_timeout_ms,
                                             " ms of the order (--stop-timeout); cancelling them");
        AddEvent(rt, "stop_timeout", why);
        CancelRanks(rt, why);
      }
    }
    if (rt.awaiting.empty() || now < rt.await_deadline_ms || IsTerminal(rt.job.state())) continue;
    const std::string missing = absl::StrJoin(rt.awaiting, ", ");
    if (rt.job.state() == tern::v1::JOB_STATE_RESHARDING) {  // restored between rounds
      for (auto& [rank, r] : rt.ranks)
        if (rt.awaiting.count(r.worker)) r.exited = true;
      rt.awaiting.clear();
      NextRound(rt);
      continue;
    }
    RoundFailed(rt, "worker_lost",
                absl::StrCat("worker(s) ", missing, " did not reconnect within ",
                             options_.reconnect_grace_ms, " ms of ternd restarting"),
                -1, *rt.awaiting.begin());
  }
  loop_->PostAfter(std::chrono::milliseconds(options_.tick_ms), [this] { Tick(); });
}

std::vector<tern::v1::WorkerInfo> Coordinator::ListWorkers() const {
  std::vector<tern::v1::WorkerInfo> out = membership_.List();
  auto warnings = CpuOverlapWarnings(out);
  for (auto& w : out) {
    for (auto& line : warnings[w.name()]) w.add_warnings(std::move(line));
  }
  for (const auto& [name, info] : offline_) out.push_back(info);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.name() < b.name(); });
  return out;
}

void Coordinator::PersistWorker(const std::string& name) {
  if (WorkerState* w = membership_.Find(name)) {
    if (auto st = store_->PutWorker(w->info); !st.ok()) {
      spdlog::error("cannot store worker {}: {}", Printable(name), st.ToString());
    }
  }
}

}  // namespace tern::daemon
