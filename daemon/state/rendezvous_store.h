// RendezvousStore: the key-value store ranks rendezvous through (Gloo's store interface),
// with keys scoped by "<job>/<round>". Thread-safe (own mutex), called directly from gRPC
// threads; one internal timer thread expires waiters. Completion callbacks run without the
// lock held, on the caller's thread or the timer thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::daemon {

class RendezvousStore {
 public:
  using Clock = std::chrono::steady_clock;
  // `max_waiters` bounds the blocked Get/Wait calls; `max_bytes` the stored bytes.
  explicit RendezvousStore(size_t max_waiters = 100000, size_t max_bytes = 256 << 20);
  ~RendezvousStore();

  absl::Status Set(const std::string& prefix, const std::string& key, std::string value);
  // Adds `delta` to the decimal integer at key (0 if absent); returns the new value.
  absl::StatusOr<int64_t> Add(const std::string& prefix, const std::string& key, int64_t delta);
  // Calls `done` with the value once `key` exists, or DEADLINE_EXCEEDED at `deadline`.
  void Get(const std::string& prefix, const std::string& key, Clock::time_point deadline,
           std::function<void(absl::StatusOr<std::string>)> done);
  // Calls `done` once every key exists, or DEADLINE_EXCEEDED naming the missing ones.
  void Wait(const std::string& prefix, const std::vector<std::string>& keys,
            Clock::time_point deadline, std::function<void(absl::Status)> done);
  // Fails every blocked call with UNAVAILABLE and refuses new ones (before server shutdown).
  void Shutdown();
  // Drops every key (and fails every waiter) under "<job_id>/".
  void DropJob(const std::string& job_id);

 private:
  struct Waiter {
    std::vector<std::string> keys;  // full keys
    Clock::time_point deadline;
    std::function<void(absl::StatusOr<std::string>)> done;  // value of keys[0] when it is one
  };
  using Ready = std::vector<
      std::pair<std::function<void(absl::StatusOr<std::string>)>, absl::StatusOr<std::string>>>;
  bool AllPresentLocked(const Waiter& w) const;
  void WakeLocked(Ready* ready);  // moves satisfied waiters into `ready`
  void AddWaiter(Waiter w);
  void TimerLoop();

  const size_t max_waiters_;
  const size_t max_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> kv_;
  size_t bytes_ = 0;
  std::list<Waiter> waiters_;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace tern::daemon
