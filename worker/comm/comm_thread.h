// CommThread: the FIFO executor that runs a communicator's collectives on its own thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "worker/comm/comm.h"

namespace tern::comm {

// Runs tasks one at a time in submission order on one thread. Thread-safe.
class CommThread {
 public:
  explicit CommThread(std::string name);
  ~CommThread();  // Shutdown(CANCELLED)
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  // Queues `task`; its returned status completes the Work.
  Work Enqueue(std::function<absl::Status()> task);
  // Stops accepting tasks, lets the running task finish, completes every queued-but-not-started
  // task with `reason`, and joins the thread. Later Enqueue calls complete with `reason`.
  // Idempotent. Must not be called from a task.
  void Shutdown(absl::Status reason);

 private:
  struct Task {
    std::function<absl::Status()> fn;
    std::shared_ptr<WorkState> state;
  };
  void Loop();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  absl::Status stop_reason_;
  std::thread thread_;
};

}  // namespace tern::comm
