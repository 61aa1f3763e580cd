// ternd: the Tern coordinator. Flags, logging, wiring, wait for a signal.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>

#include "daemon/server.h"
#include "worker/core/duration.h"

int main(int argc, char** argv) {
  tern::daemon::DaemonOptions opts;
  std::string heartbeat_timeout = "5s", reconnect_grace = "15s", port_file, log_level = "info";
  std::string http_port_file;
  bool no_tensorboard = false;
  CLI::App app{"ternd: the Tern coordinator (jobs, workers, rendezvous)"};
  app.add_option("--listen", opts.listen, "host:port to serve on (port 0 = pick one)")
      ->capture_default_str();
  app.add_option("--state-dir", opts.state_dir,
                 "directory for the SQLite state db, rank logs and default checkpoints")
      ->capture_default_str();
  app.add_option(
      "--checkpoint-root", opts.checkpoint_root,
      "checkpoint root for jobs without checkpoint.dir (default <state-dir>/checkpoints)");
  app.add_option("--auth-token-file", opts.auth_token_file, "admin bearer token(s), one a line");
  app.add_option("--worker-token-file", opts.worker_token_file, "worker bearer token(s)");
  app.add_option("--read-token-file", opts.read_token_file, "read-only bearer token(s)");
  app.add_option("--tls-cert", opts.tls_cert, "PEM certificate: serve TLS");
  app.add_option("--tls-key", opts.tls_key, "PEM private key for --tls-cert");
  app.add_option("--tls-ca", opts.tls_ca, "PEM CA: require client certificates signed by it");
  app.add_option("--heartbeat-timeout", heartbeat_timeout,
                 "a worker is lost after this long without a heartbeat")
      ->capture_default_str();
  app.add_option("--reconnect-grace", reconnect_grace,
                 "after a restart, how long running jobs wait for their workers")
      ->capture_default_str();
  app.add_option("--max-streams-per-client", opts.limits.max_streams_per_client,
                 "open WatchJob/GetLogs streams allowed per client IP")
      ->capture_default_str();
  auto* http = app.add_option("--http", opts.http.address,
                              "dashboard, /api and Prometheus /metrics at host:port (port 0 = "
                              "pick one; \"off\" = none)")
                   ->capture_default_str();
  app.add_option("--http-port-file", http_port_file,
                 "write the bound --http port to this file once serving");
  app.add_option("--http-allow-host", opts.http.allowed_hosts,
                 "a host name the dashboard may be reached by (besides IPs and localhost)");
  app.add_flag("--no-tensorboard", no_tensorboard,
               "do not write TensorBoard event files under each job's log dir");
  app.add_option("--port-file", port_file, "write the bound port to this file once serving");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opts.http_enabled = opts.http.address != "off" && !opts.http.address.empty();
  opts.http_required = http->count() > 0;
  opts.tensorboard = !no_tensorboard;

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ ternd: %v");
  for (auto [text, out] : {std::pair{&heartbeat_timeout, &opts.heartbeat_timeout_ms},
                           std::pair{&reconnect_grace, &opts.reconnect_grace_ms}}) {
    auto ms = tern::ParseDurationMs(*text);
    if (!ms.ok()) {
      std::fprintf(stderr, "ternd: %s\n", std::string(ms.status().message()).c_str());
      return 2;
    }
    *out = *ms;
  }

  // Block the stop signals before any thread starts, then wait for one.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  tern::daemon::Daemon daemon(opts);
  if (auto st = daemon.Start(); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  std::printf("ternd listening on port %d\n", daemon.port());
  std::fflush(stdout);
  // The HTTP port first: a test that sees --port-file may read both.
  for (auto [file, port] :
       {std::pair{&http_port_file, daemon.http_port()}, std::pair{&port_file, daemon.port()}}) {
    if (file->empty()) continue;
    const std::string tmp = *file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), file->c_str());
  }
  int sig = 0;
  sigwait(&stop, &sig);
  spdlog::info("signal {}: shutting down", sig);
  daemon.Shutdown();
  return 0;
}
