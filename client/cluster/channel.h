// gRPC channels to ternd for the CLI and for ranks: TLS when TERN_TLS_CA (or an explicit CA
// file) is given, bearer-token metadata on every call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tern::cluster {

struct ChannelOptions {
  std::string address;  // host:port
  std::string token;    // bearer token; empty = none
  std::string tls_ca;   // PEM root certs file; empty = $TERN_TLS_CA, else plaintext
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& opts);

// A ClientContext carrying the token, an optional deadline and wait-for-ready.
std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& token,
                                                 std::chrono::milliseconds timeout,
                                                 bool wait_for_ready = false);

// grpc::Status -> absl::Status, prefixed with `what` ("GetJob j-000001: ...").
absl::Status FromGrpc(const grpc::Status& s, const std::string& what);

// Reads the first non-empty line of a token file, trimmed.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace tern::cluster
