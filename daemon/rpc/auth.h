// Authorizer: bearer-token checks for ternd's RPCs ("authorization: Bearer <token>").
// Immutable after construction; safe to use from any gRPC thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::daemon {

enum class Role {
  kRead,    // any valid token (admin, worker or read-only)
  kAdmin,   // the admin token: job mutations
  kWorker,  // the worker token (or admin): worker sessions and rendezvous
};

class Authorizer {
 public:
  // Empty token lists disable that check: with no tokens at all every call is allowed.
  Authorizer(std::vector<std::string> admin_tokens, std::vector<std::string> worker_tokens,
             std::vector<std::string> read_tokens);

  // OK, UNAUTHENTICATED (no/unknown token) or PERMISSION_DENIED (valid token, wrong role).
  grpc::Status Check(const grpc::CallbackServerContext* ctx, Role role) const;
  // The same check for an "authorization" value ("Bearer <token>"; empty when absent).
  absl::Status CheckHeader(const std::string& authorization, Role role) const;
  bool admin_enabled() const { return !admin_.empty(); }
  // Whether Role::kRead calls need a token (admin or read tokens configured).
  bool read_protected() const { return !admin_.empty() || !read_.empty(); }
  bool enabled() const { return !admin_.empty() || !worker_.empty() || !read_.empty(); }

 private:
  std::vector<std::string> admin_;
  std::vector<std::string> worker_;
  std::vector<std::string> read_;
};

}  // namespace tern::daemon
