// tern-worker: the Tern node agent. Flags -> options -> start -> wait for a signal.
#include <httplib.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "infra/http/bounded_server.h"
#include "infra/http/http_listener.h"
#include "infra/http/prometheus_text.h"
#include "infra/net_address.h"
#include "infra/port_file.h"
#include "infra/stop_signal.h"
#include "infra/token_file.h"
#include "worker/agent/agent.h"
#include "worker/core/cpu_set.h"
#include "worker/core/duration.h"
#include "worker/core/status.h"

namespace {

using tern::agent::AgentOptions;

// The flags that are not AgentOptions fields as they stand.
struct Flags {
  std::string grace, max_backoff, log_level = "info", metrics_addr, metrics_port_file, cpus;
  std::string drain_timeout = "30s";
  bool no_bind = false, print_cpu_sets = false;
};

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "worker";
  return buf;
}

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

AgentOptions DefaultOptions() {
  AgentOptions opts;
  opts.name = HostName();
  opts.host = opts.name;
  opts.rank_binary = SelfDir() + "/tern";
  opts.scratch = ".tern/worker";
  return opts;
}

void AddFlags(CLI::App& app, AgentOptions* opts, Flags* f) {
  f->grace = tern::FormatDurationMs(opts->grace.count());
  f->max_backoff = tern::FormatDurationMs(opts->max_backoff.count());
  app.add_option("--coordinator", opts->coordinator, "ternd address host:port")
      ->capture_default_str();
  app.add_option("--name", opts->name, "unique worker name")->capture_default_str();
  app.add_option("--slots", opts->slots, "rank slots offered (one rank process each)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--cpus", f->cpus,
                 "CPUs this worker's ranks run on, Linux cpulist (e.g. 0-15,32-47); split into "
                 "one disjoint set per slot, each rank bound to its slot's set (default: the "
                 "worker's own affinity mask)");
  app.add_flag("--print-cpu-sets", f->print_cpu_sets,
               "print the CPU set of each slot (one cpulist per line) for --cpus and --slots, "
               "then exit");
  app.add_flag("--no-bind-cores", f->no_bind,
               "do not bind ranks to CPUs (threads per rank = CPUs / slots)");
  app.add_option("--scratch", opts->scratch, "local dir for job specs and rank logs")
      ->capture_default_str();
  app.add_option("--token-file", opts->token_file,
                 "worker bearer token file (also given to ranks)");
  app.add_option("--rank-binary", opts->rank_binary, "program run as `<it> rank ...` per slot")
      ->capture_default_str();
  app.add_option("--grace", f->grace, "SIGTERM -> SIGKILL grace period when stopping ranks")
      ->capture_default_str();
  app.add_option("--drain-timeout", f->drain_timeout,
                 "on SIGTERM: how long ternd gets to move this node's jobs away before the "
                 "ranks are stopped (0 = stop at once; a second SIGTERM stops at once too)")
      ->capture_default_str();
  app.add_option("--max-backoff", f->max_backoff, "longest wait between reconnect attempts")
      ->capture_default_str();
  app.add_option("--tls-ca", opts->tls_ca, "PEM root certificates: connect with TLS");
  app.add_option("--advertise-address", opts->advertise_address,
                 "address of this host that ranks on other hosts connect to (default: the "
                 "local address of the route to --coordinator)");
  app.add_option("--metrics", f->metrics_addr,
                 "serve Prometheus metrics at http://ADDR/metrics (host:port, port 0 = pick one)");
  app.add_option("--metrics-port-file", f->metrics_port_file,
                 "write the bound --metrics port to this file once serving");
  app.add_option("--log-level", f->log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
}

// --cpus / --no-bind-cores -> cores and one CPU set per slot.
absl::Status ResolveCpuSets(const Flags& f, AgentOptions* opts) {
  namespace cpu = tern::cpu;
  TERN_ASSIGN_OR_RETURN(cpu::CpuList allowed, cpu::ThisProcessAffinity());
  TERN_ASSIGN_OR_RETURN(cpu::CpuList cpus, cpu::ResolveCpus("--cpus", f.cpus, allowed));
  opts->cores = static_cast<int>(cpus.size());
  if (f.no_bind) {
    if (!f.cpus.empty())
      return absl::InvalidArgumentError("--cpus and --no-bind-cores exclude each other");
    return absl::OkStatus();
  }
  TERN_ASSIGN_OR_RETURN(cpu::SlotCpus split,
                        cpu::SplitCpus(cpu::ReadCpuTopology(), cpus, opts->slots));
  if (split.shared) {
    spdlog::warn("--slots {} is more than the {} CPU(s) {}: ranks share CPUs, one CPU each",
                 opts->slots, cpus.size(), cpu::FormatCpuList(cpus));
  }
  std::vector<std::string> text;
  for (const auto& set : split.sets) text.push_back(cpu::FormatCpuList(set));
  spdlog::info("CPU set per slot: {}", absl::StrJoin(text, " | "));
  opts->slot_cpus = std::move(split.sets);
  return absl::OkStatus();
}

// The rest of flags -> options: durations, the token, absolute paths.
absl::Status ResolveOptions(const Flags& f, AgentOptions* opts) {
  for (auto [text, out] :
       {std::pair{&f.grace, &opts->grace}, std::pair{&f.max_backoff, &opts->max_backoff}}) {
    TERN_ASSIGN_OR_RETURN(int64_t ms, tern::ParseDurationMs(*text));
    *out = std::chrono::milliseconds(ms);
  }
  if (auto drain = tern::ParseDurationMs(f.drain_timeout); !drain.ok())
    return absl::InvalidArgumentError(absl::StrCat("--drain-timeout: ", drain.status().message()));
  if (!opts->token_file.empty()) {
    auto tokens = tern::infra::ReadTokenFile(opts->token_file);
    if (!tokens.ok()) {
      return absl::Status(tokens.status().code(),
                          absl::StrCat("--token-file: ", tokens.status().message()));
    }
    opts->token = tokens->front();
    opts->token_file = std::filesystem::absolute(opts->token_file).string();
  }
  TERN_RETURN_IF_ERROR(ResolveCpuSets(f, opts));
  if (opts->advertise_address.empty()) {
    auto local = tern::infra::LocalAddressTowards(opts->coordinator);
    if (!local.ok())
      return absl::Status(local.status().code(),
                          absl::StrCat("--advertise-address: ", local.status().message(),
                                       " --> hint: pass --advertise-address ADDR"));
    opts->advertise_address = *local;
  } else {
    TERN_RETURN_IF_ERROR(tern::infra::CheckLocalAddress(opts->advertise_address));
  }
  std::error_code ec;
  std::filesystem::create_directories(opts->scratch, ec);
  opts->scratch = std::filesystem::absolute(opts->scratch).string();
  opts->rank_binary = std::filesystem::absolute(opts->rank_binary).string();
  if (::access(opts->rank_binary.c_str(), X_OK) != 0) {
    spdlog::warn("--rank-binary {} is not executable: ranks will fail to start", opts->rank_binary);
  }
  return absl::OkStatus();
}

// Serves the agent's metrics at --metrics (when given) and writes --metrics-port-file.
absl::Status StartMetrics(const Flags& f, tern::agent::Agent* agent, httplib::Server* server,
                          tern::infra::HttpListener* listener) {
  if (f.metrics_addr.empty()) return absl::OkStatus();
  server->Get("/metrics", [agent](const httplib::Request&, httplib::Response& res) {
    res.set_content(agent->MetricsText(), tern::infra::PrometheusText::kContentType);
  });
  TERN_ASSIGN_OR_RETURN(int port, listener->Start(server, f.metrics_addr, "--metrics"));
  spdlog::info("metrics at http://{}:{}/metrics",
               f.metrics_addr.substr(0, f.metrics_addr.rfind(':')), port);
  tern::infra::WritePortFile(f.metrics_port_file, port);
  return absl::OkStatus();
}

int Fail(const absl::Status& st) {
  std::fprintf(stderr, "tern-worker: %s\n", std::string(st.message()).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  AgentOptions opts = DefaultOptions();
  Flags flags;
  CLI::App app{"tern-worker: the Tern node agent (runs ranks for ternd)"};
  AddFlags(app, &opts, &flags);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  spdlog::set_pattern(absl::StrCat("%Y-%m-%dT%H:%M:%S.%e %^%l%$ tern-worker[", opts.name, "]: %v"));
  if (flags.print_cpu_sets) {  // stdout holds the sets only; logs go to stderr
    auto err = spdlog::stderr_color_mt("stderr");
    err->set_level(spdlog::get_level());
    spdlog::set_default_logger(err);
    if (auto st = ResolveCpuSets(flags, &opts); !st.ok()) return Fail(st);
    for (const auto& set : opts.slot_cpus)
      std::printf("%s\n", tern::cpu::FormatCpuList(set).c_str());
    return 0;
  }
  if (auto st = ResolveOptions(flags, &opts); !st.ok()) return Fail(st);

  spdlog::info("ranks bind and peers connect at {} (--advertise-address)", opts.advertise_address);
  tern::infra::BlockStopSignals();  // before any thread starts
  tern::agent::Agent agent(opts);
  // Bounded like ternd's: idle connections cannot starve a Prometheus scrape.
  tern::infra::BoundedServer metrics_server{tern::infra::HttpLimits{}};
  tern::infra::HttpListener metrics_listener;
  if (auto st = StartMetrics(flags, &agent, &metrics_server, &metrics_listener); !st.ok()) {
    return Fail(st);
  }
  agent.Start();
  const int sig = tern::infra::WaitForStopSignal([&agent] { return !agent.fatal().ok(); });
  // SIGTERM with ranks running means "this node is going away" (a preemption notice): ternd
  // moves the jobs away first (elastic jobs continue elsewhere), then we stop.
  const auto drain = tern::ParseDurationMs(flags.drain_timeout);
  if (sig == SIGTERM && drain.ok() && *drain > 0 && agent.running_ranks() > 0) {
    spdlog::info("SIGTERM: draining: ternd moves this node's jobs away (up to {})",
                 flags.drain_timeout);
    agent.Drain("tern-worker got SIGTERM");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*drain);
    const int again = tern::infra::WaitForStopSignal(
        [&] {
          return agent.running_ranks() == 0 || !agent.fatal().ok() ||
                 std::chrono::steady_clock::now() > deadline;
        },
        std::chrono::milliseconds(100));
    if (again > 0) spdlog::info("signal {} again: stopping ranks now", again);
    // The exits reach ternd before the session closes.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (sig > 0) spdlog::info("signal {}: stopping ranks and exiting", sig);
  metrics_listener.Stop();
  const absl::Status fatal = agent.fatal();
  agent.Stop();
  if (sig <= 0 && !fatal.ok()) {
    std::fprintf(stderr, "tern-worker: %s\n", std::string(fatal.message()).c_str());
  }
  return sig > 0 ? 0 : 1;
}
