// MetricsHub: fans a job's events and metric points out to its WatchJob streams.
// Owned by the EventLoop thread (not thread-safe); the sinks themselves are thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/state/stream_sink.h"
#include "tern/v1/cluster.pb.h"

namespace tern::daemon {

using WatchSink = StreamSink<tern::v1::WatchJobResponse>;

class MetricsHub {
 public:
  // Sees every published item, watched or not (job stats, TensorBoard files). Runs on the
  // EventLoop thread inside Publish(); must not call back into the Coordinator's mutators.
  using Observer =
      std::function<void(const std::string& job_id, const tern::v1::WatchJobResponse& item)>;
  void AddObserver(Observer observer) { observers_.push_back(std::move(observer)); }

  void Subscribe(const std::string& job_id, std::shared_ptr<WatchSink> sink);
  void Publish(const std::string& job_id, const tern::v1::WatchJobResponse& item);
  // Finishes every watcher of the job (after their queued items) and forgets them.
  void CloseJob(const std::string& job_id);
  size_t watchers(const std::string& job_id) const;
  size_t total_watchers() const;

 private:
  std::map<std::string, std::vector<std::shared_ptr<WatchSink>>> watchers_;
  std::vector<Observer> observers_;
};

}  // namespace tern::daemon
