#include "worker/comm/comm_thread.h"

#include <pthread.h>

namespace tern::comm {

CommThread::CommThread(std::string name) : name_(std::move(name)) {
  thread_ = std::thread([this] { Loop(); });
  // Linux limits thread names to 15 characters.
  pthread_setname_np(thread_.native_handle(), ("comm:" + name_).substr(0, 15).c_str());
}

CommThread::~CommThread() { Shutdown(absl::CancelledError("communicator " + name_ + " closed")); }

Work CommThread::Enqueue(std::function<absl::Status()> task) {
  auto state = std::make_shared<WorkState>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      state->Complete(stop_reason_);
      return Work(state);
    }
    queue_.push_back(Task{std::move(task), state});
  }
  cv_.notify_one();
  return Work(state);
}

void CommThread::Loop() {
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task.state->Complete(task.fn());
  }
}

void CommThread::Shutdown(absl::Status reason) {
  std::deque<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    stop_reason_ = reason;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& task : dropped) task.state->Complete(reason);
}

}  // namespace tern::comm
