// ternd: the Tern coordinator. Flags -> options -> start -> wait for a signal.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "daemon/server.h"
#include "infra/port_file.h"
#include "infra/stop_signal.h"
#include "worker/core/duration.h"
#include "worker/core/status.h"

namespace {

using tern::daemon::DaemonOptions;

// The flags that are not DaemonOptions fields as they stand.
struct Flags {
  std::string heartbeat_timeout, reconnect_grace, worker_expiry, stop_timeout, port_file,
      http_port_file, http_idle_timeout, http_request_timeout, log_level = "info";
  bool no_tensorboard = false;
  CLI::Option* http = nullptr;  // --http, to tell an explicit address from the default
};

void AddServingFlags(CLI::App& app, DaemonOptions* opts) {
  app.add_option("--listen", opts->listen, "host:port to serve on (port 0 = pick one)")
      ->capture_default_str();
  app.add_option("--state-dir", opts->state_dir,
                 "directory for the SQLite state db, rank logs and default checkpoints")
      ->capture_default_str();
  app.add_option(
      "--checkpoint-root", opts->checkpoint_root,
      "checkpoint root for jobs without checkpoint.dir (default <state-dir>/checkpoints)");
  app.add_option("--auth-token-file", opts->auth_token_file, "admin bearer token(s), one a line");
  app.add_option("--worker-token-file", opts->worker_token_file, "worker bearer token(s)");
  app.add_option("--read-token-file", opts->read_token_file, "read-only bearer token(s)");
  app.add_option("--tls-cert", opts->tls_cert, "PEM certificate: serve TLS");
  app.add_option("--tls-key", opts->tls_key, "PEM private key for --tls-cert");
  app.add_option("--tls-ca", opts->tls_ca, "PEM CA: require client certificates signed by it");
}

void AddFlags(CLI::App& app, DaemonOptions* opts, Flags* f) {
  f->heartbeat_timeout = tern::FormatDurationMs(opts->heartbeat_timeout_ms);
  f->reconnect_grace = tern::FormatDurationMs(opts->reconnect_grace_ms);
  f->worker_expiry = tern::FormatDurationMs(opts->worker_expiry_ms);
  f->stop_timeout = tern::FormatDurationMs(opts->stop_timeout_ms);
  AddServingFlags(app, opts);
  app.add_option("--heartbeat-timeout", f->heartbeat_timeout,
                 "a worker is lost after this long without a heartbeat")
      ->capture_default_str();
  app.add_option("--reconnect-grace", f->reconnect_grace,
                 "after a restart, how long running jobs wait for their workers")
      ->capture_default_str();
  app.add_option("--stop-timeout", f->stop_timeout,
                 "a round ordered to stop (grow, drain) gets this long to checkpoint and exit; "
                 "then its ranks are cancelled")
      ->capture_default_str();
  app.add_option("--worker-expiry", f->worker_expiry,
                 "a disconnected worker leaves the listings after this long (kept in the state db)")
      ->capture_default_str();
  app.add_option("--max-streams-per-client", opts->limits.max_streams_per_client,
                 "open WatchJob/GetLogs streams allowed per client IP")
      ->capture_default_str();
  f->http = app.add_option("--http", opts->http.address,
                           "dashboard, /api and Prometheus /metrics at host:port (port 0 = "
                           "pick one; \"off\" = none)")
                ->capture_default_str();
  app.add_option("--http-port-file", f->http_port_file,
                 "write the bound --http port to this file once serving");
  f->http_idle_timeout = tern::FormatDurationMs(opts->http.limits.idle_timeout_s * 1000);
  f->http_request_timeout = tern::FormatDurationMs(opts->http.limits.request_timeout_s * 1000);
  app.add_option("--http-max-connections", opts->http.limits.max_connections,
                 "HTTP connections served at once; more are answered 503")
      ->capture_default_str();
  app.add_option("--http-max-event-streams", opts->http.max_event_streams,
                 "open dashboard event streams (at most half of --http-max-connections)")
      ->capture_default_str();
  app.add_option("--http-idle-timeout", f->http_idle_timeout,
                 "close an HTTP connection that sends no request for this long")
      ->capture_default_str();
  app.add_option("--http-request-timeout", f->http_request_timeout,
                 "an HTTP request's head and body must arrive within this long")
      ->capture_default_str();
  app.add_option("--http-allow-host", opts->http.allowed_hosts,
                 "a host name the dashboard may be reached by (besides IPs and localhost)");
  app.add_flag("--no-tensorboard", f->no_tensorboard,
               "do not write TensorBoard event files under each job's log dir");
  app.add_option("--port-file", f->port_file, "write the bound port to this file once serving");
  app.add_option("--log-level", f->log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
}

// The rest of flags -> options.
absl::Status ResolveOptions(const Flags& f, DaemonOptions* opts) {
  opts->http_enabled = opts->http.address != "off" && !opts->http.address.empty();
  opts->http_required = f.http->count() > 0;
  opts->tensorboard = !f.no_tensorboard;
  for (auto [text, out] : {std::pair{&f.heartbeat_timeout, &opts->heartbeat_timeout_ms},
                           std::pair{&f.reconnect_grace, &opts->reconnect_grace_ms},
                           std::pair{&f.worker_expiry, &opts->worker_expiry_ms},
                           std::pair{&f.stop_timeout, &opts->stop_timeout_ms}}) {
    TERN_ASSIGN_OR_RETURN(*out, tern::ParseDurationMs(*text));
  }
  for (auto [text, out] :
       {std::pair{&f.http_idle_timeout, &opts->http.limits.idle_timeout_s},
        std::pair{&f.http_request_timeout, &opts->http.limits.request_timeout_s}}) {
    TERN_ASSIGN_OR_RETURN(int64_t ms, tern::ParseDurationMs(*text));
    *out = static_cast<int>(std::max<int64_t>(1, (ms + 999) / 1000));  // whole seconds, >= 1
  }
  if (opts->http.limits.max_connections < 1) {
    return absl::InvalidArgumentError("--http-max-connections must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  DaemonOptions opts;
  Flags flags;
  CLI::App app{"ternd: the Tern coordinator (jobs, workers, rendezvous)"};
  AddFlags(app, &opts, &flags);
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ ternd: %v");
  if (auto st = ResolveOptions(flags, &opts); !st.ok()) {
    std::fprintf(stderr, "ternd: %s\n", std::string(st.message()).c_str());
    return 2;
  }

  tern::infra::BlockStopSignals();  // before any thread starts
  tern::daemon::Daemon daemon(opts);
  if (auto st = daemon.Start(); !st.ok()) {
    spdlog::error("{}", st.ToString());
    // Exit 2 when the state dir is another ternd's (ALREADY_EXISTS names it): not a crash.
    return st.code() == absl::StatusCode::kAlreadyExists ? 2 : 1;
  }
  std::printf("ternd listening on port %d\n", daemon.port());
  std::fflush(stdout);
  // The HTTP port first: a test that sees --port-file may read both.
  tern::infra::WritePortFile(flags.http_port_file, daemon.http_port());
  tern::infra::WritePortFile(flags.port_file, daemon.port());
  const int sig = tern::infra::WaitForStopSignal();
  spdlog::info("signal {}: shutting down", sig);
  daemon.Shutdown();
  return 0;
}
