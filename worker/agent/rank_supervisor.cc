#include "worker/agent/rank_supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "worker/core/run_text.h"

namespace tern::agent {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kKeepExited = std::chrono::hours(1);

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

RankSupervisor::RankSupervisor(std::chrono::milliseconds grace,
                               std::function<void(tern::v1::WorkerMessage)> on_message,
                               std::function<void()> on_change)
    : grace_(grace),
      on_message_(std::move(on_message)),
      on_change_(std::move(on_change)),
      launcher_([this] { LauncherLoop(); }) {}

RankSupervisor::~RankSupervisor() {
  CancelAll();
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Wait for the ranks to exit (the launcher escalates to SIGKILL after the grace).
    cv_.wait_for(lock, grace_ + std::chrono::seconds(2), [this] {
      for (auto& r : ranks_) {
        if (r->running) return false;
      }
      return true;
    });
    stopping_ = true;
  }
  cv_.notify_all();
  launcher_.join();
  for (auto& r : ranks_) {
    if (r->reader.joinable()) r->reader.join();
    if (r->control_fd >= 0) ::close(r->control_fd);
  }
}

void RankSupervisor::Launch(RankLaunch launch) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : ranks_) {
    const RankId& id = r->launch.id;
    if (id.job_id == launch.id.job_id && id.round == launch.id.round && id.rank == launch.id.rank) {
      return;  // already launched (assignment resent after a reconnect)
    }
  }
  auto r = std::make_unique<Rank>();
  r->launch = std::move(launch);
  r->running = true;  // counts as running from now: it occupies its slot
  to_spawn_.push_back(r.get());
  ranks_.push_back(std::move(r));
  cv_.notify_all();
}

void RankSupervisor::Cancel(const std::string& job_id, int round) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : ranks_) {
    if (r->launch.id.job_id != job_id || !r->running || r->kill_at != Clock::time_point{}) continue;
    if (round != 0 && r->launch.id.round != round) continue;
    r->kill_at = Clock::now() + grace_;
    // A rank with a control channel takes SIGTERM as "checkpoint and stop": a cancel is an
    // abort, so say so first (SIGTERM stays the fallback, SIGKILL after the grace).
    if (r->control_fd >= 0) {
      const std::string abort = absl::StrCat(R"({"op":"abort","round":)", r->launch.id.round,
                                             R"(,"reason":"cancelled"})", "\n");
      (void)::send(r->control_fd, abort.data(), abort.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    if (r->pid > 0) ::kill(-r->pid, SIGTERM);
  }
  cv_.notify_all();
}

int RankSupervisor::Order(const std::string& job_id, int round, const std::string& line) {
  std::string msg = line;
  if (msg.empty() || msg.back() != '\n') msg.push_back('\n');
  std::lock_guard<std::mutex> lock(mu_);
  int reached = 0;
  for (auto& r : ranks_) {
    if (r->launch.id.job_id != job_id || r->launch.id.round != round || !r->running ||
        r->control_fd < 0)
      continue;
    // A few hundred bytes into an empty socket buffer: one non-blocking send. A rank that
    // stopped reading (or died) just misses it; the coordinator's timeout covers that.
    const ssize_t n = ::send(r->control_fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(msg.size())) {
      ++reached;
    } else {
      spdlog::warn("{} rank {}: cannot send an order: {}", job_id, r->launch.id.rank,
                   n < 0 ? std::strerror(errno) : "short write");
    }
  }
  return reached;
}

void RankSupervisor::CancelAll() {
  std::vector<std::string> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : ranks_) jobs.push_back(r->launch.id.job_id);
  }
  for (const auto& j : jobs) Cancel(j);
}

void RankSupervisor::LauncherLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    while (!to_spawn_.empty()) {
      Rank* r = to_spawn_.front();
      to_spawn_.pop_front();
      if (r->kill_at != Clock::time_point{}) {  // cancelled before it started
        r->running = false;
        r->exit_code = 128 + SIGTERM;
        r->detail = "cancelled before start";
        r->exited_at = Clock::now();
        continue;
      }
      Spawn(r);
    }
    const auto now = Clock::now();
    for (auto it = ranks_.begin(); it != ranks_.end();) {
      Rank* r = it->get();
      if (r->running && r->pid > 0 && r->kill_at != Clock::time_point{} && now >= r->kill_at) {
        ::kill(-r->pid, SIGKILL);
        r->kill_at = now + std::chrono::hours(24);  // once
      }
      if (!r->running && r->exit_sent && now - r->exited_at > kKeepExited) {
        if (r->reader.joinable()) r->reader.join();
        it = ranks_.erase(it);
      } else {
        ++it;
      }
    }
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
}

// Called on the launcher thread with mu_ held.
void RankSupervisor::Spawn(Rank* r) {
  const RankLaunch& l = r->launch;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(l.log_path).parent_path(), ec);
  int out[2], err[2], ctl[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) {
    r->running = false;
    r->exit_code = 127;
    r->detail = absl::StrCat("cannot create the control channel: ", std::strerror(errno));
    r->exited_at = Clock::now();
    on_change_();
    return;
  }
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    ::close(ctl[0]);
    ::close(ctl[1]);
    r->running = false;
    r->exit_code = 127;
    r->detail = absl::StrCat("cannot create pipes: ", std::strerror(errno));
    r->exited_at = Clock::now();
    on_change_();
    return;
  }
  // Everything the child needs is prepared before fork (only async-signal-safe calls after).
  std::vector<char*> argv;
  for (const auto& a : l.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_storage;
  auto overridden = [&l](const char* e) {
    const std::string_view entry(e);
    const std::string_view name = entry.substr(0, entry.find('='));
    for (const auto& x : l.env) {
      if (std::string_view(x).substr(0, x.find('=')) == name) return true;
    }
    return false;
  };
  for (char** e = environ; *e; ++e) {
    if (!overridden(*e)) env_storage.emplace_back(*e);
  }
  for (const auto& e : l.env) env_storage.push_back(e);
  const bool bind = !l.cpus.empty();
  const cpu_set_t mask = cpu::ToCpuSetT(l.cpus);
  const std::string bind_error =
      absl::StrCat("tern-worker: cannot bind rank ", l.id.rank, " to CPUs ",
                   cpu::FormatCpuList(l.cpus), " (sched_setaffinity failed)\n");
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const std::string exec_error = absl::StrCat("tern-worker: cannot exec ", l.argv[0], "\n");

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(ctl[1], 0);  // stdin: the control channel (rank_control.h)
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    if (bind && ::sched_setaffinity(0, sizeof(mask), &mask) != 0) {
      WriteAll(2, bind_error.data(), bind_error.size());
      ::_exit(127);
    }
    if (!l.work_dir.empty() && ::chdir(l.work_dir.c_str()) != 0) {
      // Run in the current directory instead.
    }
    ::execve(argv[0], argv.data(), envp.data());
    WriteAll(2, exec_error.data(), exec_error.size());
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  ::close(ctl[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(err[0]);
    ::close(ctl[0]);
    r->running = false;
    r->exit_code = 127;
    r->detail = absl::StrCat("fork failed: ", std::strerror(errno));
    r->exited_at = Clock::now();
    on_change_();
    return;
  }
  ::setpgid(pid, pid);  // also in the parent: no race with an early kill(-pid)
  r->pid = pid;
  r->control_fd = ctl[0];
  spdlog::info("started {} rank {} (round {}) as pid {}{}", l.id.job_id, l.id.rank, l.id.round, pid,
               bind ? absl::StrCat(" on CPUs ", cpu::FormatCpuList(l.cpus), " (slot ", l.slot, ")")
                    : std::string());
  tern::v1::WorkerMessage started;
  started.mutable_started()->set_job_id(l.id.job_id);
  started.mutable_started()->set_round(l.id.round);
  started.mutable_started()->set_rank(l.id.rank);
  started.mutable_started()->set_pid(pid);
  on_message_(std::move(started));
  r->reader = std::thread([this, r, o = out[0], e = err[0]] { ReadOutput(r, o, e); });
}

}  // namespace tern::agent

namespace tern::agent {

void RankSupervisor::ReadOutput(Rank* r, int out_fd, int err_fd) {
  const RankLaunch& l = r->launch;
  const int log = ::open(l.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) spdlog::error("cannot open rank log {}: {}", l.log_path, std::strerror(errno));
  std::string line;
  auto on_stdout = [&](const char* p, size_t n, bool eof) {
    line.append(p, n);
    size_t pos;
    while ((pos = line.find('\n')) != std::string::npos || (eof && !line.empty())) {
      const std::string one = pos == std::string::npos ? line : line.substr(0, pos);
      line.erase(0, pos == std::string::npos ? line.size() : pos + 1);
      auto msg = ParseRankLine(one, l.id, NowMs());
      if (msg && (msg->has_event() || l.relay_metrics)) on_message_(std::move(*msg));
      // The log (tern logs, the dashboard's panes) gets what `tern train` prints for the line.
      const auto human = HumanLine(one, l.steps_per_print);
      if (log >= 0 && (!human || !human->empty())) {
        const std::string text = (human ? *human : one) + "\n";
        WriteAll(log, text.data(), text.size());
      }
    }
  };
  std::vector<char> buf(64 << 10);
  int fds[2] = {out_fd, err_fd};
  int status = 0;
  bool reaped = false;
  while (fds[0] >= 0 || fds[1] >= 0) {
    pollfd p[2];
    nfds_t n = 0;
    for (int fd : fds) {
      if (fd >= 0) p[n++] = pollfd{fd, POLLIN, 0};
    }
    int ready = ::poll(p, n, 100);
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) {
      // The rank may be gone while a child of it still holds the pipes: stop at its exit.
      if (::waitpid(r->pid, &status, WNOHANG) == r->pid) {
        reaped = true;
        for (int& fd : fds) {
          if (fd < 0) continue;
          ::fcntl(fd, F_SETFL, O_NONBLOCK);
          ssize_t got;
          while ((got = ::read(fd, buf.data(), buf.size())) > 0) {
            if (fd == out_fd) {
              on_stdout(buf.data(), static_cast<size_t>(got), false);
            } else if (log >= 0) {
              WriteAll(log, buf.data(), static_cast<size_t>(got));
            }
          }
          ::close(fd);
          fd = -1;
        }
        break;
      }
      continue;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(p[i].fd, buf.data(), buf.size());
      if (got < 0 && errno == EINTR) continue;
      const bool is_out = p[i].fd == out_fd;
      if (got <= 0) {
        ::close(p[i].fd);
        (is_out ? fds[0] : fds[1]) = -1;
        continue;
      }
      if (is_out) {
        on_stdout(buf.data(), static_cast<size_t>(got), false);
      } else if (log >= 0) {
        WriteAll(log, buf.data(), static_cast<size_t>(got));
      }
    }
  }
  on_stdout("", 0, true);  // a last line without newline
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
  if (!reaped) {
    while (::waitpid(r->pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (log >= 0) ::close(log);
  Exited(r, status);
}

void RankSupervisor::Exited(Rank* r, int wait_status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    r->running = false;
    r->exited_at = Clock::now();
    if (r->control_fd >= 0) ::close(r->control_fd);
    r->control_fd = -1;
    if (WIFEXITED(wait_status)) {
      r->exit_code = WEXITSTATUS(wait_status);
      r->detail = absl::StrCat("exited with code ", r->exit_code);
    } else if (WIFSIGNALED(wait_status)) {
      const int sig = WTERMSIG(wait_status);
      r->exit_code = 128 + sig;
      r->detail = absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")");
    } else {
      r->exit_code = 255;
      r->detail = "ended abnormally";
    }
    spdlog::info("{} rank {} (pid {}) {}", r->launch.id.job_id, r->launch.id.rank, r->pid,
                 r->detail);
  }
  cv_.notify_all();
  on_change_();
}

std::vector<tern::v1::RankStatus> RankSupervisor::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<tern::v1::RankStatus> out;
  for (auto& r : ranks_) {
    tern::v1::RankStatus s;
    s.set_job_id(r->launch.id.job_id);
    s.set_round(r->launch.id.round);
    s.set_rank(r->launch.id.rank);
    s.set_running(r->running);
    s.set_exit_code(r->exit_code);
    s.set_pid(r->pid);
    out.push_back(std::move(s));
  }
  return out;
}

void RankSupervisor::ResendExits() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : ranks_) {
    if (!r->running) r->exit_sent = false;
  }
}

int RankSupervisor::running() {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (auto& r : ranks_) n += r->running ? 1 : 0;
  return n;
}

bool RankSupervisor::Known(const RankId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : ranks_) {
    const RankId& k = r->launch.id;
    if (k.job_id == id.job_id && k.round == id.round && k.rank == id.rank) return true;
  }
  return false;
}

std::set<int> RankSupervisor::SlotsInUse() {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<int> out;
  for (auto& r : ranks_) {
    if (r->running && r->launch.slot >= 0) out.insert(r->launch.slot);
  }
  return out;
}

void RankSupervisor::SetLogOffsets(const tern::v1::RegisterResponse& resp) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& off : resp.log_offsets()) {
    for (auto& r : ranks_) {
      if (r->launch.id.job_id == off.job_id() && r->launch.id.rank == off.rank()) {
        r->log_shipped = off.offset();
      }
    }
  }
}

std::vector<tern::v1::WorkerMessage> RankSupervisor::CollectUploads(size_t max_bytes) {
  struct Item {
    Rank* r;
    std::string path;
    int64_t shipped;
    bool done;  // exited and exit not sent yet
  };
  std::vector<Item> items;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : ranks_) {
      if (r->exit_sent) continue;
      items.push_back({r.get(), r->launch.log_path, r->log_shipped, !r->running});
    }
  }
  std::vector<tern::v1::WorkerMessage> out;
  std::vector<std::pair<Item*, bool>> updates;  // (item, exit sent)
  size_t budget = max_bytes;
  for (Item& it : items) {
    std::ifstream in(it.path, std::ios::binary);
    bool at_end = true;
    if (in) {
      in.seekg(it.shipped);
      std::string data;
      while (budget > 0) {
        data.resize(std::min<size_t>(64 << 10, budget));
        in.read(data.data(), static_cast<std::streamsize>(data.size()));
        const auto got = static_cast<size_t>(std::max<std::streamsize>(0, in.gcount()));
        if (got == 0) break;
        data.resize(got);
        tern::v1::WorkerMessage msg;
        auto* log = msg.mutable_log();
        log->set_job_id(it.r->launch.id.job_id);
        log->set_rank(it.r->launch.id.rank);
        log->set_offset(it.shipped);
        log->set_data(data);
        out.push_back(std::move(msg));
        it.shipped += static_cast<int64_t>(got);
        budget -= got;
        if (got < 64 << 10 && budget > 0) break;  // reached the end of the file
      }
      at_end = budget > 0;
    }
    const bool send_exit = it.done && at_end;
    if (send_exit) {
      std::lock_guard<std::mutex> lock(mu_);
      tern::v1::WorkerMessage msg;
      auto* e = msg.mutable_exited();
      e->set_job_id(it.r->launch.id.job_id);
      e->set_round(it.r->launch.id.round);
      e->set_rank(it.r->launch.id.rank);
      e->set_exit_code(it.r->exit_code);
      e->set_detail(it.r->detail);
      out.push_back(std::move(msg));
    }
    updates.emplace_back(&it, send_exit);
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [it, sent] : updates) {
    it->r->log_shipped = it->shipped;
    if (sent) it->r->exit_sent = true;
  }
  return out;
}

}  // namespace tern::agent
