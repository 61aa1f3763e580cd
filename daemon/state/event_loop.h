// EventLoop: one thread that runs posted closures in order, plus delayed closures. ternd's
// managers (JobStore, Scheduler, Membership, MetricsHub, Coordinator) are owned by this
// thread: gRPC handlers never touch them directly, they Post() work here.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace tern::daemon {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();  // Stop()s and joins.
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Thread-safe. Closures posted after Stop() are dropped.
  void Post(std::function<void()> fn);
  void PostAfter(std::chrono::milliseconds delay, std::function<void()> fn);
  // Runs `fn` on the loop thread and waits for it (must not be called from the loop thread).
  void RunSync(std::function<void()> fn);
  bool InLoopThread() const { return std::this_thread::get_id() == thread_.get_id(); }
  void Stop();

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> timers_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tern::daemon
