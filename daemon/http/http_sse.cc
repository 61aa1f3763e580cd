#include "daemon/http/http_sse.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "daemon/http/http_json.h"

namespace tern::daemon {

std::string FormatSseCursor(const SseCursor& c) {
  return absl::StrCat(c.event_seq, "-", c.metric_time_ms, "-", c.metric_n);
}

std::optional<SseCursor> ParseSseCursor(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '-');
  SseCursor c;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &c.event_seq) ||
      !absl::SimpleAtoi(parts[1], &c.metric_time_ms) || !absl::SimpleAtoi(parts[2], &c.metric_n) ||
      c.event_seq < 0 || c.metric_time_ms < 0 || c.metric_n < 0) {
    return std::nullopt;
  }
  return c;
}

SseStream::SseStream(std::function<std::string(const tern::v1::Job&)> job_json,
                     std::optional<SseCursor> resume, size_t max_queue)
    : job_json_(std::move(job_json)), resume_(resume) {
  // Both callbacks run with the sink's lock held; they only take ours (lock order: sink, us).
  sink_ = std::make_shared<WatchSink>(
      [this](const tern::v1::WatchJobResponse* m) {
        std::lock_guard<std::mutex> lock(mu_);
        pending_ = m;
        cv_.notify_all();
      },
      [this](grpc::Status s) {
        std::lock_guard<std::mutex> lock(mu_);
        finished_ = true;
        status_ = std::move(s);
        cv_.notify_all();
      },
      max_queue);
}

SseStream::~SseStream() { sink_->Detach(); }

void SseStream::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  interrupted_ = true;
  cv_.notify_all();
}

std::string SseStream::Format(const tern::v1::WatchJobResponse& item) {
  if (item.has_job()) return absl::StrCat("event: job\ndata: ", job_json_(item.job()), "\n\n");
  bool skip = false;
  std::string kind, data;
  if (item.has_event()) {
    const auto& e = item.event();
    skip = resume_ && e.seq() <= resume_->event_seq;
    cursor_.event_seq = std::max(cursor_.event_seq, e.seq());
    kind = "event";
    if (!skip) data = Dump(EventJson(e));
  } else if (item.has_metric()) {
    const auto& m = item.metric();
    if (m.time_ms() != cursor_.metric_time_ms) {
      cursor_.metric_time_ms = m.time_ms();
      cursor_.metric_n = 0;
    }
    ++cursor_.metric_n;
    skip = resume_ &&
           (m.time_ms() < resume_->metric_time_ms ||
            (m.time_ms() == resume_->metric_time_ms && cursor_.metric_n <= resume_->metric_n));
    kind = "metric";
    if (!skip) data = Dump(MetricJson(m));
  }
  if (skip || kind.empty()) return "";
  return absl::StrCat("id: ", FormatSseCursor(cursor_), "\nevent: ", kind, "\ndata: ", data,
                      "\n\n");
}

SseStream::Next SseStream::Pop(std::chrono::milliseconds wait, size_t max_bytes, std::string* out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, wait, [this] { return pending_ || finished_ || interrupted_; });
  bool any = false;
  while (pending_ && out->size() < max_bytes) {
    const tern::v1::WatchJobResponse* m = pending_;
    pending_ = nullptr;
    lock.unlock();
    *out += Format(*m);  // `m` lives until OnWriteDone
    any = true;
    sink_->OnWriteDone(true);  // may hand over the next item (sets pending_)
    lock.lock();
  }
  if (any) return Next::kData;
  if (finished_ || interrupted_) {
    const bool ok = finished_ && status_.ok();
    nlohmann::json end = {{"code", ok          ? "OK"
                                   : finished_ ? "CUT_OFF"
                                               : "SHUTDOWN"},
                          {"message", ok          ? "job ended"
                                      : finished_ ? status_.error_message()
                                                  : "ternd is shutting down"}};
    *out += absl::StrCat("event: end\ndata: ", Dump(end), "\n\n");
    return Next::kEnd;
  }
  return Next::kIdle;
}

}  // namespace tern::daemon
