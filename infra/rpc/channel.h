// gRPC channels to ternd, for the CLI, for ranks (the rendezvous store) and for tern-worker:
// TLS when a CA file is given, a bearer token on every call (MakeContext), grpc::Status
// turned into absl::Status at the boundary (FromGrpc, status.h). Stateless; safe from any
// thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "infra/rpc/status.h"  // FromGrpc

namespace tern::infra {

struct ChannelOptions {
  std::string address{};               // host:port
  std::string tls_ca{};                // PEM root certs file; empty = plaintext
  bool tls_ca_from_env = true;         // an empty tls_ca falls back to $TERN_TLS_CA
  std::string tls_ca_what = "TLS CA";  // names tls_ca in errors ("--tls-ca")
  // Keepalive ping period on an idle connection (timeout 5 s); 0 = no keepalive.
  std::chrono::milliseconds keepalive{0};
  int max_receive_bytes = 64 << 20;  // largest message accepted; 0 = gRPC's default (4 MiB)
};

// Reconnects after 100 ms, backing off to at most 1 s. NOT_FOUND when the CA file cannot be
// read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& opts);

// A ClientContext carrying the token ("" = none), a deadline (0 = none) and wait-for-ready.
std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& token,
                                                 std::chrono::milliseconds timeout,
                                                 bool wait_for_ready = false);

}  // namespace tern::infra
