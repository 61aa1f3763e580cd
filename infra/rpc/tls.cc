#include "infra/rpc/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"

namespace tern::infra {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& ca_file, const std::string& what) {
  if (ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  TERN_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(ca_file, what));
  return grpc::SslCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const ServerTlsFiles& files) {
  if (files.cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      files.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                       : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  TERN_ASSIGN_OR_RETURN(std::string cert, ReadPem(files.cert, "--tls-cert"));
  TERN_ASSIGN_OR_RETURN(std::string key, ReadPem(files.key, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!files.ca.empty()) {
    TERN_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(files.ca, "--tls-ca"));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace tern::infra
