#include "daemon/state/metrics_hub.h"

#include <algorithm>

namespace tern::daemon {

void MetricsHub::Subscribe(const std::string& job_id, std::shared_ptr<WatchSink> sink) {
  watchers_[job_id].push_back(std::move(sink));
}

void MetricsHub::Publish(const std::string& job_id, const tern::v1::WatchJobResponse& item) {
  for (const auto& observe : observers_) observe(job_id, item);
  auto it = watchers_.find(job_id);
  if (it == watchers_.end()) return;
  auto& sinks = it->second;
  auto shared = std::make_shared<const tern::v1::WatchJobResponse>(item);
  // Send to each; drop the ones that are closed (watcher gone or too slow).
  sinks.erase(std::remove_if(sinks.begin(), sinks.end(),
                             [&](const std::shared_ptr<WatchSink>& s) { return !s->Send(shared); }),
              sinks.end());
  if (sinks.empty()) watchers_.erase(it);
}

void MetricsHub::CloseJob(const std::string& job_id) {
  auto it = watchers_.find(job_id);
  if (it == watchers_.end()) return;
  for (auto& s : it->second) s->Close(grpc::Status::OK);
  watchers_.erase(it);
}

size_t MetricsHub::watchers(const std::string& job_id) const {
  auto it = watchers_.find(job_id);
  return it == watchers_.end() ? 0 : it->second.size();
}

size_t MetricsHub::total_watchers() const {
  size_t n = 0;
  for (const auto& [id, s] : watchers_) n += s.size();
  return n;
}

}  // namespace tern::daemon
