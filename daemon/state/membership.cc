#include "daemon/state/membership.h"

namespace tern::daemon {

int64_t Membership::Register(const tern::v1::RegisterRequest& req, int64_t now_ms) {
  auto& w = workers_[req.name()];
  if (!w) w = std::make_unique<WorkerState>();
  // A new process under this name (not a reconnect of the same one) registers anew.
  if (w->info.registered_ms() == 0 || req.instance_id().empty() ||
      req.instance_id() != w->instance_id) {
    w->info.set_registered_ms(now_ms);
  }
  w->info.set_name(req.name());
  w->info.set_host(req.host());
  w->info.set_slots(req.slots());
  *w->info.mutable_cpu_sets() = req.cpu_sets();
  w->info.set_last_heartbeat_ms(now_ms);
  w->instance_id = req.instance_id();
  w->detached = false;
  w->draining = false;
  if (w->session)
    w->session->Close(grpc::Status(grpc::StatusCode::ABORTED, "replaced by a new session"));
  w->session.reset();
  w->info.set_connected(false);
  w->session_id = next_session_id_++;
  return w->session_id;
}

bool Membership::Attach(const std::string& name, int64_t session_id,
                        std::shared_ptr<SessionSink> sink, int64_t now_ms) {
  WorkerState* w = Find(name);
  if (!w || w->session_id != session_id) return false;
  w->session = std::move(sink);
  w->info.set_connected(true);
  w->info.set_last_heartbeat_ms(now_ms);
  for (auto& m : w->pending) w->session->Send(std::move(m));
  w->pending.clear();
  return true;
}

bool Membership::Detach(const std::string& name, int64_t session_id) {
  WorkerState* w = Find(name);
  if (!w || w->session_id != session_id) return false;
  w->session.reset();
  w->info.set_connected(false);
  w->detached = true;
  return true;
}

bool Membership::Live(const WorkerState& w, int64_t now_ms, int64_t timeout_ms) {
  if (w.session) return true;
  return !w.detached && now_ms - w.info.last_heartbeat_ms() <= timeout_ms;
}

void Membership::Heartbeat(const std::string& name, int64_t now_ms) {
  if (WorkerState* w = Find(name)) w->info.set_last_heartbeat_ms(now_ms);
}

std::unique_ptr<WorkerState> Membership::Remove(const std::string& name) {
  auto it = workers_.find(name);
  if (it == workers_.end()) return nullptr;
  auto w = std::move(it->second);
  workers_.erase(it);
  if (w->session)
    w->session->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker declared lost"));
  return w;
}

void Membership::Send(const std::string& name, tern::v1::CoordinatorMessage msg) {
  WorkerState* w = Find(name);
  if (!w) return;
  if (w->session && w->session->Send(msg)) return;
  w->pending.push_back(std::move(msg));
}

void Membership::Occupy(const std::string& name, const std::string& job, int rank) {
  if (WorkerState* w = Find(name)) w->ranks.insert({job, rank});
}

void Membership::Release(const std::string& name, const std::string& job, int rank) {
  if (WorkerState* w = Find(name)) w->ranks.erase({job, rank});
}

std::vector<std::string> Membership::Expired(int64_t now_ms, int64_t timeout_ms) const {
  std::vector<std::string> out;
  for (const auto& [name, w] : workers_) {
    if (now_ms - w->info.last_heartbeat_ms() > timeout_ms) out.push_back(name);
  }
  return out;
}

std::vector<FreeSlots> Membership::Free() const {
  std::vector<FreeSlots> out;
  for (const auto& [name, w] : workers_) {
    if (!w->session || w->draining) continue;
    out.push_back({.worker = name,
                   .free = w->info.slots() - static_cast<int>(w->ranks.size()),
                   .total = w->info.slots()});
  }
  return out;
}

WorkerState* Membership::Find(const std::string& name) {
  auto it = workers_.find(name);
  return it == workers_.end() ? nullptr : it->second.get();
}

std::vector<tern::v1::WorkerInfo> Membership::List() const {
  std::vector<tern::v1::WorkerInfo> out;
  for (const auto& [name, w] : workers_) {
    tern::v1::WorkerInfo info = w->info;
    info.set_used_slots(static_cast<int>(w->ranks.size()));
    std::set<std::string> jobs;
    for (const auto& r : w->ranks) jobs.insert(r.first);
    for (const auto& j : jobs) info.add_jobs(j);
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace tern::daemon
