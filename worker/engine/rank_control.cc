#include "worker/engine/rank_control.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/core/text.h"

namespace tern::engine {
namespace {

constexpr size_t kMaxLine = 4096;

}  // namespace

void RankControl::set_on_abort(std::function<void(const std::string&)> f) {
  std::lock_guard<std::mutex> lock(mu_);
  on_abort_ = std::move(f);
}

std::string RankControl::reason() const {
  if (by_signal_.load()) return "SIGTERM";
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

namespace {
std::atomic<bool>* g_sigterm_stop = nullptr;
std::atomic<bool>* g_sigterm_by_signal = nullptr;

void OnSigterm(int) {
  // Async-signal-safe only: atomics, write(2), _exit(2).
  if (g_sigterm_stop == nullptr || g_sigterm_by_signal->exchange(true)) {
    static const char kAgain[] = "SIGTERM again: exiting now\n";
    (void)::write(2, kAgain, sizeof(kAgain) - 1);
    ::_exit(kExitAborted);
  }
  g_sigterm_stop->store(true);
  static const char kMsg[] = "SIGTERM: checkpointing after the current step, then stopping\n";
  (void)::write(2, kMsg, sizeof(kMsg) - 1);
}
}  // namespace

void RankControl::InstallSigtermAsStop() {
  g_sigterm_stop = &stop_;
  g_sigterm_by_signal = &by_signal_;
  struct sigaction sa {};
  sa.sa_handler = OnSigterm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
}

absl::Status RankControl::Apply(std::string_view line) {
  if (line.size() > kMaxLine)
    return absl::InvalidArgumentError(
        absl::StrCat("order of ", line.size(), " bytes (at most ", kMaxLine, ")"));
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("op") || !j["op"].is_string())
    return absl::InvalidArgumentError(
        absl::StrCat("order is not {\"op\": ...}: ", Printable(std::string(line))));
  const std::string op = j["op"].get<std::string>();
  if (j.contains("round") && !j["round"].is_number_integer())
    return absl::InvalidArgumentError("order: \"round\" must be an integer");
  const int64_t round = j.value("round", int64_t{-1});
  std::string reason = j.contains("reason") && j["reason"].is_string()
                           ? j["reason"].get<std::string>()
                           : std::string();
  if (op != "stop" && op != "checkpoint" && op != "abort")
    return absl::InvalidArgumentError(absl::StrCat("order: unknown op \"", Printable(op),
                                                   "\" (expected stop, checkpoint or abort)"));
  if (round_ >= 0 && round >= 0 && round != round_) return absl::OkStatus();  // a stale order
  std::function<void(const std::string&)> abort;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reason_ = reason;
    abort = on_abort_;
  }
  if (op == "stop") stop_.store(true);
  if (op == "checkpoint") checkpoint_.store(true);
  if (op == "abort") {
    if (abort) {
      abort(reason);
    } else {
      const std::string msg = absl::StrCat("aborted on order: ", Printable(reason), "\n");
      (void)::write(2, msg.data(), msg.size());
      ::_exit(kExitAborted);
    }
  }
  return absl::OkStatus();
}

void RankControl::StartReader(int fd) {
  std::thread([this, fd] {
    std::string buf;
    char chunk[1024];
    for (;;) {
      const ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // EOF: the launcher closed the channel
      buf.append(chunk, static_cast<size_t>(n));
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        const std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (line.empty()) continue;
        if (absl::Status st = Apply(line); !st.ok())
          std::fprintf(stderr, "warning: control channel: %s\n", std::string(st.message()).c_str());
      }
      if (buf.size() > kMaxLine) buf.clear();  // an endless line: drop it
    }
  }).detach();
}

}  // namespace tern::engine
