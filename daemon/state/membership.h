// Membership: the workers ternd knows, their sessions, heartbeats and occupied slots.
// Owned by the EventLoop thread (not thread-safe).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "daemon/state/scheduler.h"
#include "daemon/state/stream_sink.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

using SessionSink = StreamSink<tern::v1::CoordinatorMessage>;

struct WorkerState {
  tern::v1::WorkerInfo info;                          // name, host, slots, timestamps
  int64_t session_id = 0;                             // from the latest Register
  std::string instance_id;                            // the tern-worker process holding it
  bool detached = false;                              // its session ended (not yet lost)
  bool draining = false;                              // going away: no new ranks here
  std::shared_ptr<SessionSink> session;               // null while disconnected
  std::set<std::pair<std::string, int>> ranks;        // (job, rank) occupying a slot each
  std::vector<tern::v1::CoordinatorMessage> pending;  // sent once the session opens
};

class Membership {
 public:
  // Adds or refreshes a worker; returns its new session id. Occupied slots are kept (a
  // re-registering worker continues its ranks).
  int64_t Register(const tern::v1::RegisterRequest& req, int64_t now_ms);
  // Attaches the session stream; false if `session_id` is stale.
  bool Attach(const std::string& name, int64_t session_id, std::shared_ptr<SessionSink> sink,
              int64_t now_ms);
  // Detaches when `session_id` is still current; returns whether it was.
  bool Detach(const std::string& name, int64_t session_id);
  void Heartbeat(const std::string& name, int64_t now_ms);
  // Removes the worker entirely (lost); returns its former state.
  std::unique_ptr<WorkerState> Remove(const std::string& name);

  // Sends now if connected, else queues until the session opens.
  void Send(const std::string& name, tern::v1::CoordinatorMessage msg);

  void Occupy(const std::string& name, const std::string& job, int rank);
  void Release(const std::string& name, const std::string& job, int rank);

  // Workers whose last heartbeat is older than `timeout_ms`.
  std::vector<std::string> Expired(int64_t now_ms, int64_t timeout_ms) const;
  std::vector<FreeSlots> Free() const;  // connected workers only
  WorkerState* Find(const std::string& name);
  // Held by a live session: attached, or registered and heartbeating within `timeout_ms`
  // and not detached since.
  static bool Live(const WorkerState& w, int64_t now_ms, int64_t timeout_ms);
  std::vector<tern::v1::WorkerInfo> List() const;
  size_t size() const { return workers_.size(); }

 private:
  std::map<std::string, std::unique_ptr<WorkerState>> workers_;
  int64_t next_session_id_ = 1;
};

}  // namespace tern::daemon
