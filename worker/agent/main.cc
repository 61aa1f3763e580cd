// tern-worker: the Tern node agent. Flags, logging, wiring, wait for a signal.
#include <httplib.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/agent/agent.h"
#include "worker/agent/http_listener.h"
#include "worker/agent/prometheus_text.h"
#include "worker/core/duration.h"

namespace {

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

}  // namespace

int main(int argc, char** argv) {
  tern::agent::AgentOptions opts;
  opts.name = HostName();
  opts.host = opts.name;
  opts.rank_binary = SelfDir() + "/tern";
  opts.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  opts.scratch = ".tern/worker";
  std::string grace = "10s", max_backoff = "2s", log_level = "info", metrics_addr,
              metrics_port_file;
  CLI::App app{"tern-worker: the Tern node agent (runs ranks for ternd)"};
  app.add_option("--coordinator", opts.coordinator, "ternd address host:port")
      ->capture_default_str();
  app.add_option("--name", opts.name, "unique worker name")->capture_default_str();
  app.add_option("--slots", opts.slots, "rank slots offered (one rank process each)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--scratch", opts.scratch, "local dir for job specs and rank logs")
      ->capture_default_str();
  app.add_option("--token-file", opts.token_file, "worker bearer token file (also given to ranks)");
  app.add_option("--rank-binary", opts.rank_binary, "program run as `<it> rank ...` per slot")
      ->capture_default_str();
  app.add_option("--grace", grace, "SIGTERM -> SIGKILL grace period when stopping ranks")
      ->capture_default_str();
  app.add_option("--max-backoff", max_backoff, "longest wait between reconnect attempts")
      ->capture_default_str();
  app.add_option("--tls-ca", opts.tls_ca, "PEM root certificates: connect with TLS");
  app.add_option("--metrics", metrics_addr,
                 "serve Prometheus metrics at http://ADDR/metrics (host:port, port 0 = pick one)");
  app.add_option("--metrics-port-file", metrics_port_file,
                 "write the bound --metrics port to this file once serving");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern(absl::StrCat("%Y-%m-%dT%H:%M:%S.%e %^%l%$ tern-worker[", opts.name, "]: %v"));
  for (auto [text, out] :
       {std::pair{&grace, &opts.grace}, std::pair{&max_backoff, &opts.max_backoff}}) {
    auto ms = tern::ParseDurationMs(*text);
    if (!ms.ok()) {
      std::fprintf(stderr, "tern-worker: %s\n", std::string(ms.status().message()).c_str());
      return 2;
    }
    *out = std::chrono::milliseconds(*ms);
  }
  if (!opts.token_file.empty()) {
    std::ifstream in(opts.token_file);
    if (!in || !std::getline(in, opts.token)) {
      std::fprintf(stderr, "tern-worker: cannot read --token-file %s\n", opts.token_file.c_str());
      return 2;
    }
    opts.token = std::string(absl::StripAsciiWhitespace(opts.token));
    opts.token_file = std::filesystem::absolute(opts.token_file).string();
  }
  std::error_code ec;
  std::filesystem::create_directories(opts.scratch, ec);
  opts.scratch = std::filesystem::absolute(opts.scratch).string();
  opts.rank_binary = std::filesystem::absolute(opts.rank_binary).string();
  if (::access(opts.rank_binary.c_str(), X_OK) != 0) {
    spdlog::warn("--rank-binary {} is not executable: ranks will fail to start", opts.rank_binary);
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  tern::agent::Agent agent(opts);
  httplib::Server metrics_server;
  tern::agent::HttpListener metrics_listener;
  if (!metrics_addr.empty()) {
    metrics_server.Get("/metrics", [&agent](const httplib::Request&, httplib::Response& res) {
      res.set_content(agent.MetricsText(), tern::agent::PrometheusText::kContentType);
    });
    auto port = metrics_listener.Start(&metrics_server, metrics_addr, "--metrics");
    if (!port.ok()) {
      std::fprintf(stderr, "tern-worker: %s\n", std::string(port.status().message()).c_str());
      return 2;
    }
    spdlog::info("metrics at http://{}:{}/metrics", metrics_addr.substr(0, metrics_addr.rfind(':')),
                 *port);
    if (!metrics_port_file.empty()) {
      const std::string tmp = metrics_port_file + ".tmp";
      std::ofstream(tmp) << *port << "\n";
      std::rename(tmp.c_str(), metrics_port_file.c_str());
    }
  }
  agent.Start();
  int rc = 0;
  while (true) {
    timespec tick{0, 200 * 1000 * 1000};
    const int sig = sigtimedwait(&stop, nullptr, &tick);
    if (sig > 0) {
      spdlog::info("signal {}: stopping ranks and exiting", sig);
      break;
    }
    if (auto st = agent.fatal(); !st.ok()) {
      rc = 1;
      break;
    }
  }
  metrics_listener.Stop();
  agent.Stop();
  return rc;
}
