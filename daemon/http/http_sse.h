// Server-sent events for the dashboard: one job's live stream, fed by the same path as
// WatchJob (Coordinator::Watch subscribes the stream's WatchSink to the MetricsHub: snapshot,
// history, then live items). Each event and metric carries an SSE id (a cursor); after a
// reconnect the browser sends it back as Last-Event-ID and the replayed history is skipped
// up to it, so the page resumes where it left off.
//
//   event: job     data: job summary (first, every connection; no id)
//   event: event   data: {"seq","time_ms","kind","message","state","rank","worker"}
//   event: metric  data: {"kind","step","time_ms","rank","round","values":{...}}
//   event: end     data: {"code","message"}   (the job ended, or the stream was cut off)
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "daemon/state/metrics_hub.h"

namespace tern::daemon {

// Position in a job's stream: the newest event seq, and the newest metric's time with how
// many metrics (in stream order) had that same time.
struct SseCursor {
  int64_t event_seq = 0;
  int64_t metric_time_ms = 0;
  int64_t metric_n = 0;
};
std::string FormatSseCursor(const SseCursor& c);                   // "E-T-N"
std::optional<SseCursor> ParseSseCursor(const std::string& text);  // nullopt if malformed

// One EventSource connection. The WatchSink side is driven by the coordinator (any thread);
// the HTTP side by one server thread calling Pop() until it returns kEnd. Thread-safe.
class SseStream {
 public:
  // `job_json` renders the snapshot item; `resume` skips history already delivered.
  SseStream(std::function<std::string(const tern::v1::Job&)> job_json,
            std::optional<SseCursor> resume, size_t max_queue);
  ~SseStream();  // Detach()es the sink

  std::shared_ptr<WatchSink> sink() { return sink_; }

  enum class Next { kData, kIdle, kEnd };
  // Waits up to `wait` and appends the next SSE text to *out (several items at once, about
  // `max_bytes`). kEnd: the stream finished (*out has the end event); kIdle: nothing yet.
  Next Pop(std::chrono::milliseconds wait, size_t max_bytes, std::string* out);
  // Wakes a waiting Pop() (shutdown).
  void Interrupt();

 private:
  // SSE text for one item, "" when the resume cursor skips it.
  std::string Format(const tern::v1::WatchJobResponse& item);

  std::function<std::string(const tern::v1::Job&)> job_json_;
  std::optional<SseCursor> resume_;
  SseCursor cursor_;
  std::shared_ptr<WatchSink> sink_;

  std::mutex mu_;
  std::condition_variable cv_;
  const tern::v1::WatchJobResponse* pending_ = nullptr;  // written by the sink, not yet taken
  bool finished_ = false;
  bool interrupted_ = false;
  grpc::Status status_;
};

}  // namespace tern::daemon
