#include "client/cluster/cli_common.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/cluster/format.h"
#include "infra/rpc/channel.h"
#include "infra/token_file.h"
#include "worker/core/text.h"

namespace tern::cluster {

using infra::FromGrpc;
using infra::MakeChannel;
using infra::MakeContext;

namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool Terminal(tern::v1::JobState s) {
  return s == tern::v1::JOB_STATE_SUCCEEDED || s == tern::v1::JOB_STATE_FAILED ||
         s == tern::v1::JOB_STATE_CANCELLED;
}

// What `tern watch` prints from the stream: the job header, events, metrics (a progress line
// per step, rewritten in place on a terminal) and the final state. Keeps what it has printed
// so that the history a reconnect sends again is skipped.
class WatchPrinter {
 public:
  WatchPrinter(const std::string& job_id, bool json, std::ostream& out)
      : job_id_(job_id), json_(json), tty_(!json && &out == &std::cout && ::isatty(1)), out_(out) {}

  bool first() const { return first_; }
  tern::v1::JobState state() const { return state_; }

  void Print(const tern::v1::WatchJobResponse& item) {
    if (item.has_job()) {
      PrintJob(item);
    } else if (item.has_event()) {
      PrintEvent(item);
    } else {
      PrintMetric(item);
    }
  }

  // Ends a \r progress line left on screen.
  void EndProgressLine() {
    if (progress_open_) out_ << "\n";
    progress_open_ = false;
  }

  // Prints the final state; returns 0 SUCCEEDED, 3 CANCELLED, 1 otherwise.
  int Finish() {
    EndProgressLine();
    if (!json_) {
      out_ << "job " << job_id_ << " " << StateName(state_) << (message_.empty() ? "" : ": ")
           << Printable(message_, 4096) << std::endl;
    }
    switch (state_) {
      case tern::v1::JOB_STATE_SUCCEEDED:
        return 0;
      case tern::v1::JOB_STATE_CANCELLED:
        return 3;
      default:
        return 1;
    }
  }

 private:
  void PrintJob(const tern::v1::WatchJobResponse& item) {
    total_ = item.job().spec().train_iters();
    state_ = item.job().state();
    message_ = item.job().message();
    if (json_ && first_) out_ << WatchItemToJson(item, NowMs()).dump() << std::endl;
    if (!json_ && first_) {
      out_ << "job " << job_id_ << " (" << Printable(item.job().spec().name())
           << "): " << StateName(state_) << std::endl;
    }
    first_ = false;
  }

  void PrintEvent(const tern::v1::WatchJobResponse& item) {
    const auto& e = item.event();
    if (e.seq() <= last_seq_) return;
    last_seq_ = e.seq();
    state_ = e.state();
    if (Terminal(state_)) message_ = e.message();
    if (json_) {
      out_ << WatchItemToJson(item, NowMs()).dump() << std::endl;
    } else {
      EndProgressLine();
      out_ << EventLine(e) << std::endl;
    }
  }

  void PrintMetric(const tern::v1::WatchJobResponse& item) {
    // After a reconnect the history is sent again: skip the points already printed.
    const auto& m = item.metric();
    const std::string key = absl::StrCat(m.kind(), "/", m.step(), "/", m.rank());
    if (m.time_ms() < last_metric_ms_ ||
        (m.time_ms() == last_metric_ms_ && keys_at_last_ms_.count(key))) {
      return;
    }
    if (m.time_ms() > last_metric_ms_) keys_at_last_ms_.clear();
    last_metric_ms_ = m.time_ms();
    keys_at_last_ms_.insert(key);
    if (json_) {
      out_ << WatchItemToJson(item, NowMs()).dump() << std::endl;
      return;
    }
    if (m.kind() != "step") {
      EndProgressLine();
      out_ << MetricLine(m) << std::endl;
      return;
    }
    PrintStep(m);
  }

  // A step metric: the progress line, with the step time smoothed over the recent steps.
  void PrintStep(const tern::v1::MetricPoint& m) {
    auto it = m.values().find("step_ms");
    double sample = it != m.values().end() ? it->second
                    : (prev_ms_ && m.step() > prev_step_)
                        ? double(m.time_ms() - prev_ms_) / double(m.step() - prev_step_)
                        : 0;
    prev_ms_ = m.time_ms();
    prev_step_ = m.step();
    if (sample > 0) step_ms_ = step_ms_ > 0 ? 0.8 * step_ms_ + 0.2 * sample : sample;
    if (tty_) {
      out_ << "\r\033[K" << ProgressLine(m, total_, step_ms_) << std::flush;
      progress_open_ = true;
    } else {
      out_ << ProgressLine(m, total_, step_ms_) << std::endl;
    }
  }

  const std::string job_id_;
  const bool json_;
  const bool tty_;
  std::ostream& out_;
  bool first_ = true;  // no job header received yet
  int64_t last_seq_ = 0, last_metric_ms_ = 0, total_ = 0, prev_ms_ = 0, prev_step_ = 0;
  std::set<std::string> keys_at_last_ms_;
  double step_ms_ = 0;
  bool progress_open_ = false;  // a \r progress line is on screen
  tern::v1::JobState state_ = tern::v1::JOB_STATE_UNSPECIFIED;
  std::string message_;
};

}  // namespace

void AddConnOptions(CLI::App* cmd, ConnOptions* o, bool with_json) {
  o->coordinator = Env("TERN_COORDINATOR", "127.0.0.1:7070");
  o->token_file = Env("TERN_TOKEN_FILE", "");
  o->tls_ca = Env("TERN_TLS_CA", "");
  cmd->add_option("--coordinator", o->coordinator, "ternd address (env TERN_COORDINATOR)")
      ->capture_default_str();
  cmd->add_option("--token-file", o->token_file,
                  "bearer token file (env TERN_TOKEN_FILE, or the token in TERN_TOKEN)");
  cmd->add_option("--tls-ca", o->tls_ca, "PEM CA file: connect with TLS (env TERN_TLS_CA)");
  if (with_json) cmd->add_flag("--json", o->json, "print JSON");
}

absl::StatusOr<Conn> Connect(const ConnOptions& o) {
  Conn c;
  c.address = o.coordinator;
  c.tls_ca = o.tls_ca;
  if (!o.token_file.empty()) {
    auto t = infra::ReadTokenFile(o.token_file);
    if (!t.ok()) return t.status();
    c.token = t->front();
  } else {
    c.token = Env("TERN_TOKEN", "");
  }
  auto ch = MakeChannel({.address = o.coordinator, .tls_ca = o.tls_ca});
  if (!ch.ok()) return ch.status();
  c.channel = *ch;
  c.jobs = tern::v1::JobService::NewStub(c.channel);
  return c;
}

int Fail(const std::string& cmd, const absl::Status& st, const std::string& address) {
  std::string hint;
  if (st.code() == absl::StatusCode::kUnavailable ||
      st.code() == absl::StatusCode::kDeadlineExceeded) {
    hint = absl::StrCat(" --> hint: is ternd running at ", address,
                        "? set --coordinator or TERN_COORDINATOR");
  }
  std::cerr << "tern " << cmd << ": " << Printable(st.message(), 4096) << hint << std::endl;
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return 2;
    default:
      return 1;
  }
}

int WatchJob(Conn& conn, const std::string& job_id, bool json, std::ostream& out) {
  WatchPrinter printer(job_id, json, out);
  auto unavailable_since = std::chrono::steady_clock::now();
  while (true) {
    tern::v1::WatchJobRequest req;
    req.set_job_id(job_id);
    auto ctx = MakeContext(conn.token, std::chrono::milliseconds(0),
                           /*wait_for_ready=*/!printer.first());
    auto reader = conn.jobs->WatchJob(ctx.get(), req);
    tern::v1::WatchJobResponse item;
    while (reader->Read(&item)) {
      unavailable_since = std::chrono::steady_clock::now();
      printer.Print(item);
    }
    grpc::Status s = reader->Finish();
    if (Terminal(printer.state())) break;
    const bool retry = s.ok() || s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if (!retry || std::chrono::steady_clock::now() - unavailable_since > std::chrono::seconds(60)) {
      printer.EndProgressLine();
      return Fail("watch", FromGrpc(s, absl::StrCat("watch ", job_id)), conn.address);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // A fresh channel: the old one may sit in a long reconnect backoff after ternd died.
    if (auto ch = MakeChannel({.address = conn.address, .tls_ca = conn.tls_ca}); ch.ok()) {
      conn.channel = *ch;
      conn.jobs = tern::v1::JobService::NewStub(conn.channel);
    }
  }
  return printer.Finish();
}

}  // namespace tern::cluster
