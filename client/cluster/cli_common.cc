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
  std::cerr << "tern " << cmd << ": " << st.message() << hint << std::endl;
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
  const bool tty = !json && &out == &std::cout && ::isatty(1);
  int64_t last_seq = 0, last_metric_ms = 0, total = 0, prev_ms = 0, prev_step = 0;
  std::set<std::string> keys_at_last_ms;
  double step_ms = 0;
  bool progress_open = false;  // a \r progress line is on screen
  tern::v1::JobState state = tern::v1::JOB_STATE_UNSPECIFIED;
  std::string message;
  auto unavailable_since = std::chrono::steady_clock::now();
  bool first = true;
  while (true) {
    tern::v1::WatchJobRequest req;
    req.set_job_id(job_id);
    auto ctx = MakeContext(conn.token, std::chrono::milliseconds(0), /*wait_for_ready=*/!first);
    auto reader = conn.jobs->WatchJob(ctx.get(), req);
    tern::v1::WatchJobResponse item;
    while (reader->Read(&item)) {
      unavailable_since = std::chrono::steady_clock::now();
      if (item.has_job()) {
        total = item.job().spec().train_iters();
        state = item.job().state();
        message = item.job().message();
        if (json && first) out << WatchItemToJson(item, NowMs()).dump() << std::endl;
        if (!json && first) {
          out << "job " << job_id << " (" << item.job().spec().name() << "): " << StateName(state)
              << std::endl;
        }
        first = false;
        continue;
      }
      if (item.has_event()) {
        const auto& e = item.event();
        if (e.seq() <= last_seq) continue;
        last_seq = e.seq();
        state = e.state();
        if (Terminal(state)) message = e.message();
        if (json) {
          out << WatchItemToJson(item, NowMs()).dump() << std::endl;
        } else {
          if (progress_open) out << "\n";
          progress_open = false;
          out << EventLine(e) << std::endl;
        }
        continue;
      }
      // After a reconnect the history is sent again: skip the points already printed.
      const auto& m = item.metric();
      const std::string key = absl::StrCat(m.kind(), "/", m.step(), "/", m.rank());
      if (m.time_ms() < last_metric_ms ||
          (m.time_ms() == last_metric_ms && keys_at_last_ms.count(key))) {
        continue;
      }
      if (m.time_ms() > last_metric_ms) keys_at_last_ms.clear();
      last_metric_ms = m.time_ms();
      keys_at_last_ms.insert(key);
      if (json) {
        out << WatchItemToJson(item, NowMs()).dump() << std::endl;
        continue;
      }
      if (m.kind() != "step") {
        if (progress_open) out << "\n";
        progress_open = false;
        out << MetricLine(m) << std::endl;
        continue;
      }
      auto it = m.values().find("step_ms");
      double sample = it != m.values().end() ? it->second
                      : (prev_ms && m.step() > prev_step)
                          ? double(m.time_ms() - prev_ms) / double(m.step() - prev_step)
                          : 0;
      prev_ms = m.time_ms();
      prev_step = m.step();
      if (sample > 0) step_ms = step_ms > 0 ? 0.8 * step_ms + 0.2 * sample : sample;
      if (tty) {
        out << "\r\033[K" << ProgressLine(m, total, step_ms) << std::flush;
        progress_open = true;
      } else {
        out << ProgressLine(m, total, step_ms) << std::endl;
      }
    }
    grpc::Status s = reader->Finish();
    if (Terminal(state)) break;
    const bool retry = s.ok() || s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if (!retry || std::chrono::steady_clock::now() - unavailable_since > std::chrono::seconds(60)) {
      if (progress_open) out << "\n";
      return Fail("watch", FromGrpc(s, absl::StrCat("watch ", job_id)), conn.address);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // A fresh channel: the old one may sit in a long reconnect backoff after ternd died.
    if (auto ch = MakeChannel({.address = conn.address, .tls_ca = conn.tls_ca}); ch.ok()) {
      conn.channel = *ch;
      conn.jobs = tern::v1::JobService::NewStub(conn.channel);
    }
  }
  if (progress_open) out << "\n";
  if (!json) {
    out << "job " << job_id << " " << StateName(state) << (message.empty() ? "" : ": ") << message
        << std::endl;
  }
  switch (state) {
    case tern::v1::JOB_STATE_SUCCEEDED:
      return 0;
    case tern::v1::JOB_STATE_CANCELLED:
      return 3;
    default:
      return 1;
  }
}

}  // namespace tern::cluster
