// gRPC credentials from PEM files: plaintext when no file is given. Errors name the file and
// the flag it came from. Stateless; safe from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tern::infra {

// A client's: TLS trusting the roots in `ca_file` when it is set. `what` names the file in
// errors ("--tls-ca" -> "cannot read --tls-ca file ca.pem").
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& ca_file, const std::string& what);

struct ServerTlsFiles {
  std::string cert;  // PEM certificate chain; empty = plaintext
  std::string key;   // PEM private key for `cert`
  std::string ca;    // PEM CA: when set, clients must present a certificate signed by it
};

// A server's: TLS when files.cert is set, mutual TLS when files.ca is set too. Errors name
// the flags (--tls-cert, --tls-key, --tls-ca).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const ServerTlsFiles& files);

}  // namespace tern::infra
