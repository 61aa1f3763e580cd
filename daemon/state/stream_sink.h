// StreamSink: a thread-safe outbound queue in front of a callback-API server stream reactor.
// Any thread may Send()/Close() through a shared_ptr; the reactor forwards OnWriteDone and
// calls Detach() in OnDone, after which Send() returns false. One write is in flight at a
// time; Close() finishes the RPC once the queued messages are written.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

namespace tern::daemon {

template <class Msg>
class StreamSink {
 public:
  // `write` starts one write of a message that stays alive until the next OnWriteDone;
  // `finish` finishes the RPC. Both are called with the sink's lock held (gRPC runs the
  // reactions on its own threads, never inline).
  StreamSink(std::function<void(const Msg*)> write, std::function<void(grpc::Status)> finish,
             size_t max_queue)
      : write_(std::move(write)), finish_(std::move(finish)), max_queue_(max_queue) {}

  // Queues `msg`. False when the stream is closed; a full queue (slow reader) closes the
  // stream with RESOURCE_EXHAUSTED.
  bool Send(Msg msg) { return Send(std::make_shared<const Msg>(std::move(msg))); }
  // The same message may be queued on many sinks (fan-out without copies).
  bool Send(std::shared_ptr<const Msg> msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_ || detached_) return false;
    if (queue_.size() >= max_queue_) {
      // Keep the message being written alive until its OnWriteDone.
      queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
      CloseLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                               "stream reader too slow: outbound queue full"));
      return false;
    }
    queue_.push_back(std::move(msg));
    if (!writing_) {
      writing_ = true;
      write_(queue_.front().get());
    }
    return true;
  }

  // Finishes the RPC with `status` after the queued messages are written.
  void Close(grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    CloseLocked(std::move(status));
  }

  bool closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closing_ || detached_;
  }

  // Reactor hooks.
  void OnWriteDone(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!queue_.empty()) queue_.pop_front();
    if (!ok) {
      queue_.clear();
      CloseLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream broken"));
      return;
    }
    if (!queue_.empty() && !detached_) {
      writing_ = true;
      write_(queue_.front().get());
      return;
    }
    MaybeFinishLocked();
  }
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    detached_ = true;
    queue_.clear();
  }

 private:
  void CloseLocked(grpc::Status status) {
    if (closing_) return;
    closing_ = true;
    status_ = std::move(status);
    MaybeFinishLocked();
  }
  void MaybeFinishLocked() {
    if (closing_ && !writing_ && !finished_ && !detached_) {
      finished_ = true;
      finish_(status_);
    }
  }

  std::mutex mu_;
  std::function<void(const Msg*)> write_;
  std::function<void(grpc::Status)> finish_;
  const size_t max_queue_;
  std::deque<std::shared_ptr<const Msg>> queue_;
  bool writing_ = false;
  bool closing_ = false;
  bool finished_ = false;
  bool detached_ = false;
  grpc::Status status_;
};

}  // namespace tern::daemon
