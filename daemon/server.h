// Daemon: wires ternd together (state db, managers, EventLoop, gRPC server). Used by
// main.cc and by in-process tests.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "daemon/http/http_server.h"
#include "daemon/http/tensorboard.h"
#include "daemon/rpc/auth.h"
#include "daemon/rpc/services.h"
#include "daemon/state/coordinator.h"
#include "daemon/state/event_loop.h"
#include "daemon/state/job_stats.h"
#include "daemon/state/rendezvous_store.h"
#include "infra/dir_lock.h"

namespace tern::daemon {

struct DaemonOptions {
  std::string listen = "127.0.0.1:7070";  // host:port; port 0 picks a free one
  std::string state_dir = ".tern/state";  // SQLite db, logs, default checkpoint root
  std::string checkpoint_root;            // default <state_dir>/checkpoints
  std::string auth_token_file;            // admin tokens (mutations); empty = open
  std::string worker_token_file;          // worker tokens; empty = open
  std::string read_token_file;            // read-only tokens; optional
  std::string tls_cert, tls_key, tls_ca;  // PEM files; TLS when tls_cert is set; mTLS with ca
  int64_t heartbeat_timeout_ms = CoordinatorOptions{}.heartbeat_timeout_ms;
  int64_t reconnect_grace_ms = CoordinatorOptions{}.reconnect_grace_ms;
  int64_t stop_timeout_ms = CoordinatorOptions{}.stop_timeout_ms;
  int64_t worker_expiry_ms = CoordinatorOptions{}.worker_expiry_ms;
  int max_message_bytes = 16 << 20;  // largest request/response accepted
  ServiceLimits limits;
  // Dashboard, /api and /metrics (daemon/http/http_server.h); empty = off. When `http_required`
  // is false (the default address), a port in use only costs a warning.
  HttpOptions http;
  bool http_enabled = true;
  bool http_required = false;
  bool tensorboard = true;  // event files under each job's log dir
};

class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  ~Daemon();  // Shutdown()

  // Locks the state dir (<state_dir>/ternd.lock: ALREADY_EXISTS naming the holder while
  // another ternd runs on it), opens the state, recovers jobs and starts serving. The bound
  // port is in port().
  absl::Status Start();
  int port() const { return port_; }
  int http_port() const { return http_ ? http_->port() : 0; }
  void Shutdown();

 private:
  DaemonOptions options_;
  std::optional<infra::DirLock> lock_;  // held for the process's life
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<RendezvousStore> rendezvous_;
  std::unique_ptr<Authorizer> auth_;
  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<JobStats> stats_;
  std::unique_ptr<TensorBoardLogger> tensorboard_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<RendezvousServiceImpl> rendezvous_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace tern::daemon
