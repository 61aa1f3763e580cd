#include "infra/rpc/channel.h"

#include <cstdlib>

#include "infra/rpc/tls.h"

namespace tern::infra {

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& opts) {
  std::string ca = opts.tls_ca;
  if (ca.empty() && opts.tls_ca_from_env) {
    if (const char* env = std::getenv("TERN_TLS_CA")) ca = env;
  }
  auto creds = ClientCredentials(ca, opts.tls_ca_what);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args;
  if (opts.keepalive.count() > 0) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(opts.keepalive.count()));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  }
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (opts.max_receive_bytes > 0) args.SetMaxReceiveMessageSize(opts.max_receive_bytes);
  return grpc::CreateCustomChannel(opts.address, *creds, args);
}

std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& token,
                                                 std::chrono::milliseconds timeout,
                                                 bool wait_for_ready) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  if (timeout.count() > 0) ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  ctx->set_wait_for_ready(wait_for_ready);
  return ctx;
}

}  // namespace tern::infra
