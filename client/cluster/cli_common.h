// Shared plumbing for the cluster subcommands of `tern` (submit, jobs, show, watch, cancel,
// logs, workers): connection options, connecting, error reporting, the watch loop.
#pragma once

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tern/v1/cluster.grpc.pb.h"

namespace tern::cluster {

struct ConnOptions {
  std::string coordinator;  // default $TERN_COORDINATOR, else 127.0.0.1:7070
  std::string token_file;   // default $TERN_TOKEN_FILE; the token itself may be in $TERN_TOKEN
  std::string tls_ca;       // default $TERN_TLS_CA
  bool json = false;
};

// Adds --coordinator, --token-file, --tls-ca and (when `with_json`) --json to `cmd`.
void AddConnOptions(CLI::App* cmd, ConnOptions* o, bool with_json);

struct Conn {
  std::string address;
  std::string token;
  std::string tls_ca;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<tern::v1::JobService::Stub> jobs;
};
absl::StatusOr<Conn> Connect(const ConnOptions& o);

// Prints "tern <cmd>: <message>" (with a hint for unreachable ternd) and returns the exit
// code for it: 2 for bad input (INVALID_ARGUMENT, NOT_FOUND, ...), 1 otherwise.
int Fail(const std::string& cmd, const absl::Status& st, const std::string& address = "");

// Follows a job until it ends; reconnects (skipping what it already printed) while ternd
// restarts. Returns 0 SUCCEEDED, 1 FAILED, 3 CANCELLED, or Fail()'s code.
int WatchJob(Conn& conn, const std::string& job_id, bool json, std::ostream& out);

}  // namespace tern::cluster
