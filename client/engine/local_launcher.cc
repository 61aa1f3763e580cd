#include "client/engine/local_launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/engine/output.h"
#include "spdlog/fmt/fmt.h"
#include "worker/comm/tcp_store.h"
#include "worker/core/cpu_set.h"
#include "worker/core/status.h"
#include "worker/spec/spec.h"

namespace tern::cli {
namespace {

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int out_fd = -1;
  std::string buffer;
  bool exited = false;
  int status = 0;
};

std::string SelfExe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("tern") : p.string();
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return "ended";
}

// Forks and execs `args` with stdout on a pipe; the child dies with its launcher. With
// `cpus`, the child is bound to them and OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = `threads`.
bool SpawnRank(int rank, std::vector<std::string> args, const cpu::CpuList& cpus, int threads,
               Child* child) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  // Everything the child needs is prepared before fork.
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view v(*e);
    if (!cpus.empty() &&
        (v.rfind("OMP_NUM_THREADS=", 0) == 0 || v.rfind("OPENBLAS_NUM_THREADS=", 0) == 0))
      continue;
    env.emplace_back(v);
  }
  if (!cpus.empty()) {
    env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
    env.push_back(absl::StrCat("OPENBLAS_NUM_THREADS=", threads));
  }
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const cpu_set_t mask = cpu::ToCpuSetT(cpus);
  const std::string bind_error = absl::StrCat("error: rank ", rank, ": cannot bind to CPUs ",
                                              cpu::FormatCpuList(cpus), " (sched_setaffinity)\n");
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    dup2(fds[1], STDOUT_FILENO);
    if (!cpus.empty() && sched_setaffinity(0, sizeof(mask), &mask) != 0) {
      (void)!write(STDERR_FILENO, bind_error.data(), bind_error.size());
      _exit(127);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  *child = {rank, pid, fds[0], "", false, 0};
  return pid > 0;
}

// Reads what the ranks printed; relays rank 0's lines and every rank's events.
void DrainOutput(std::vector<Child>& children, ConsoleSink& sink, bool json) {
  std::vector<pollfd> pfds;
  for (auto& c : children)
    if (c.out_fd >= 0) pfds.push_back({c.out_fd, POLLIN, 0});
  if (pfds.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return;
  }
  poll(pfds.data(), pfds.size(), 200);
  for (auto& c : children) {
    if (c.out_fd < 0) continue;
    char buf[65536];
    pollfd p{c.out_fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) continue;
    ssize_t k = read(c.out_fd, buf, sizeof(buf));
    if (k <= 0) {
      close(c.out_fd);
      c.out_fd = -1;
      continue;
    }
    c.buffer.append(buf, size_t(k));
    size_t nl;
    while ((nl = c.buffer.find('\n')) != std::string::npos) {
      std::string line = c.buffer.substr(0, nl);
      c.buffer.erase(0, nl + 1);
      if (c.rank == 0 || line.find("\"event\"") != std::string::npos) sink.Relay(line);
    }
  }
}

// Waits for every rank; after the first failure the survivors get one collective timeout to
// fail on their own, then are killed. Returns the first failing rank, or -1.
int Supervise(std::vector<Child>& children, ConsoleSink& sink, const LaunchOptions& o) {
  int failed_rank = -1;
  std::chrono::steady_clock::time_point kill_deadline{};
  int alive = int(children.size());
  while (alive > 0) {
    DrainOutput(children, sink, o.json);
    for (auto& c : children) {
      if (c.exited || waitpid(c.pid, &c.status, WNOHANG) != c.pid) continue;
      c.exited = true;
      --alive;
      const bool ok = WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0;
      if (!ok && failed_rank < 0) {
        failed_rank = c.rank;
        fmt::print(stderr, "error: rank {} {}; stopping the other ranks\n", c.rank,
                   Describe(c.status));
        // Survivors see the lost peer in their next collective; give them its timeout.
        kill_deadline =
            std::chrono::steady_clock::now() + std::chrono::seconds(o.collective_timeout_s + 5);
      }
    }
    if (failed_rank >= 0 && std::chrono::steady_clock::now() > kill_deadline) {
      for (auto& c : children)
        if (!c.exited) kill(c.pid, SIGKILL);
    }
  }
  return failed_rank;
}

}  // namespace

absl::StatusOr<Placement> PlaceRanks(const tern::spec::JobConfig& config, const LaunchOptions& o) {
  const int n = o.ranks;
  const int asked = o.threads_per_rank > 0 ? o.threads_per_rank : config.threads_per_rank;
  const char* what = o.threads_per_rank > 0 ? "--threads" : "resources.threads_per_rank";
  Placement p;
  p.cpus.resize(n);
  if (!o.bind_cores) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    p.threads.assign(n, asked > 0 ? asked : std::max(1, int(cores) / n));
    return p;
  }
  TERN_ASSIGN_OR_RETURN(cpu::CpuList mine, cpu::ThisProcessAffinity());
  TERN_ASSIGN_OR_RETURN(cpu::SlotCpus split, cpu::SplitCpus(cpu::ReadCpuTopology(), mine, n));
  if (split.shared) {
    p.warning = absl::StrCat("--ranks ", n, " is more than the ", mine.size(), " CPU(s) ",
                             cpu::FormatCpuList(mine), ": ranks share CPUs, one CPU each");
  }
  for (int r = 0; r < n; ++r) {
    const int size = static_cast<int>(split.sets[r].size());
    if (asked > size) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", asked, " is more than the ", size, " CPU(s) of rank ", r,
                       "'s set (", cpu::FormatCpuList(split.sets[r]), "; ", n, " ranks on CPUs ",
                       cpu::FormatCpuList(mine), "); lower it, or run with --no-bind-cores"));
    }
    p.threads.push_back(asked > 0 ? asked : size);
  }
  p.cpus = std::move(split.sets);
  return p;
}

int LaunchLocalRanks(const tern::spec::JobConfig& config, const LaunchOptions& o) {
  const int n = o.ranks;
  const int per_node = o.ranks_per_node > 0 ? o.ranks_per_node : n;
  auto placement = PlaceRanks(config, o);
  if (!placement.ok()) {
    fmt::print(stderr, "error: {}\n", std::string(placement.status().message()));
    return 2;
  }
  if (!placement->warning.empty()) fmt::print(stderr, "warning: {}\n", placement->warning);
  auto server = comm::TcpStoreServer::Start(0, "127.0.0.1");
  if (!server.ok()) {
    fmt::print(stderr, "error: rendezvous store: {}\n", std::string(server.status().message()));
    return 1;
  }
  char tmpl[] = "/tmp/tern-launch-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    fmt::print(stderr, "error: cannot create a temporary directory\n");
    return 1;
  }
  const std::string dir = tmpl;
  const std::string spec_path = dir + "/spec.json";
  std::ofstream(spec_path) << tern::spec::JobSpecToJson(config.spec);
  const std::string prefix = absl::StrCat("local-", getpid());

  std::vector<Child> children(n);
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> args = {SelfExe(),
                                     "rank",
                                     "--spec-file",
                                     spec_path,
                                     "--rank",
                                     std::to_string(r),
                                     "--world-size",
                                     std::to_string(n),
                                     "--ranks-per-node",
                                     std::to_string(per_node),
                                     "--rendezvous",
                                     absl::StrCat("tcp://127.0.0.1:", (*server)->port()),
                                     "--rendezvous-prefix",
                                     prefix,
                                     "--threads",
                                     std::to_string(placement->threads[r]),
                                     "--json",
                                     "--collective-timeout-s",
                                     std::to_string(o.collective_timeout_s)};
    if (!config.checkpoint.load.empty()) args.push_back("--resume");
    if (o.peak_gflops > 0) {
      args.push_back("--peak-gflops");
      args.push_back(absl::StrCat(o.peak_gflops));
    }
    if (!o.check_memory) args.push_back("--skip-memory-check");
    if (!o.save_final.empty()) {
      args.push_back("--save-final");
      args.push_back(o.save_final);
    }
    if (!placement->cpus[r].empty()) {
      args.push_back("--cpus");
      args.push_back(cpu::FormatCpuList(placement->cpus[r]));
    }
    if (!SpawnRank(r, std::move(args), placement->cpus[r], placement->threads[r], &children[r]))
      return 1;
  }

  ConsoleSink sink(o.json, config.steps_per_print);
  const int failed_rank = Supervise(children, sink, o);
  std::filesystem::remove_all(dir);
  if (failed_rank >= 0) {
    for (auto& c : children)
      if (c.rank != failed_rank && !(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0))
        fmt::print(stderr, "rank {} {}\n", c.rank, Describe(c.status));
    // Bad input (spec, data, checkpoint) on the first failing rank: exit 2 like `tern train`.
    const int first = children[failed_rank].status;
    return WIFEXITED(first) && WEXITSTATUS(first) == 2 ? 2 : 1;
  }
  return 0;
}

}  // namespace tern::cli
