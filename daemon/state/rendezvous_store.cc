#include "daemon/state/rendezvous_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::daemon {
namespace {

std::string FullKey(const std::string& prefix, const std::string& key) {
  return absl::StrCat(prefix, "/", key);
}

}  // namespace

RendezvousStore::RendezvousStore(size_t max_waiters, size_t max_bytes)
    : max_waiters_(max_waiters), max_bytes_(max_bytes), timer_([this] { TimerLoop(); }) {}

RendezvousStore::~RendezvousStore() { Shutdown(); }

void RendezvousStore::Shutdown() {
  std::list<Waiter> waiters;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    waiters.swap(waiters_);
  }
  cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  for (auto& w : waiters) w.done(absl::UnavailableError("ternd is shutting down"));
}

absl::Status RendezvousStore::Set(const std::string& prefix, const std::string& key,
                                  std::string value) {
  Ready ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string k = FullKey(prefix, key);
    auto it = kv_.find(k);
    size_t old = it == kv_.end() ? 0 : it->second.size() + k.size();
    if (bytes_ - old + value.size() + k.size() > max_bytes_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("rendezvous store full (", max_bytes_, " bytes) setting ", k));
    }
    bytes_ = bytes_ - old + value.size() + k.size();
    kv_[k] = std::move(value);
    WakeLocked(&ready);
  }
  for (auto& [done, v] : ready) done(std::move(v));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RendezvousStore::Add(const std::string& prefix, const std::string& key,
                                             int64_t delta) {
  Ready ready;
  int64_t value = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string k = FullKey(prefix, key);
    auto it = kv_.find(k);
    if (it != kv_.end() && !absl::SimpleAtoi(it->second, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rendezvous key ", k, " does not hold an integer"));
    }
    value += delta;
    std::string s = absl::StrCat(value);
    bytes_ +=
        s.size() + (it == kv_.end() ? k.size() : 0) - (it == kv_.end() ? 0 : it->second.size());
    kv_[k] = std::move(s);
    WakeLocked(&ready);
  }
  for (auto& [done, v] : ready) done(std::move(v));
  return value;
}

void RendezvousStore::Get(const std::string& prefix, const std::string& key,
                          Clock::time_point deadline,
                          std::function<void(absl::StatusOr<std::string>)> done) {
  AddWaiter(Waiter{{FullKey(prefix, key)}, deadline, std::move(done)});
}

void RendezvousStore::Wait(const std::string& prefix, const std::vector<std::string>& keys,
                           Clock::time_point deadline, std::function<void(absl::Status)> done) {
  Waiter w;
  for (const auto& k : keys) w.keys.push_back(FullKey(prefix, k));
  w.deadline = deadline;
  w.done = [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); };
  AddWaiter(std::move(w));
}

void RendezvousStore::AddWaiter(Waiter w) {
  absl::StatusOr<std::string> result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (AllPresentLocked(w)) {
      result = w.keys.empty() ? std::string() : kv_[w.keys[0]];
    } else if (Clock::now() >= w.deadline) {
      result = absl::DeadlineExceededError(
          absl::StrCat("rendezvous key(s) not set in time: ", absl::StrJoin(w.keys, ", ")));
    } else if (stopping_) {
      result = absl::UnavailableError("ternd is shutting down");
    } else if (waiters_.size() >= max_waiters_) {
      result = absl::ResourceExhaustedError("too many blocked rendezvous calls");
    } else {
      waiters_.push_back(std::move(w));
      cv_.notify_all();
      return;
    }
  }
  w.done(std::move(result));
}

bool RendezvousStore::AllPresentLocked(const Waiter& w) const {
  for (const auto& k : w.keys) {
    if (!kv_.count(k)) return false;
  }
  return true;
}

void RendezvousStore::WakeLocked(Ready* ready) {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (AllPresentLocked(*it)) {
      ready->emplace_back(std::move(it->done), it->keys.empty() ? std::string() : kv_[it->keys[0]]);
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

void RendezvousStore::DropJob(const std::string& job_id) {
  Ready ready;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string p = job_id + "/";
    for (auto it = kv_.lower_bound(p); it != kv_.end() && it->first.rfind(p, 0) == 0;) {
      bytes_ -= it->first.size() + it->second.size();
      it = kv_.erase(it);
    }
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (!it->keys.empty() && it->keys[0].rfind(p, 0) == 0) {
        ready.emplace_back(std::move(it->done),
                           absl::AbortedError(absl::StrCat("job ", job_id, " ended")));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [done, v] : ready) done(std::move(v));
}

void RendezvousStore::TimerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    Clock::time_point next = Clock::now() + std::chrono::seconds(1);
    for (const auto& w : waiters_) next = std::min(next, w.deadline);
    cv_.wait_until(lock, next);
    Ready expired;
    const auto now = Clock::now();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (it->deadline <= now) {
        expired.emplace_back(std::move(it->done), absl::DeadlineExceededError(absl::StrCat(
                                                      "rendezvous key(s) not set in time: ",
                                                      absl::StrJoin(it->keys, ", "))));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
    lock.unlock();
    for (auto& [done, v] : expired) done(std::move(v));
    lock.lock();
  }
}

}  // namespace tern::daemon
