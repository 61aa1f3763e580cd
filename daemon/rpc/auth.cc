#include "daemon/rpc/auth.h"

namespace tern::daemon {
namespace {

// Constant-time comparison: the time taken does not depend on where the strings differ.
bool SameToken(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool Contains(const std::vector<std::string>& tokens, const std::string& t) {
  bool found = false;
  for (const auto& x : tokens) found |= SameToken(x, t);
  return found;
}

}  // namespace

Authorizer::Authorizer(std::vector<std::string> admin_tokens,
                       std::vector<std::string> worker_tokens, std::vector<std::string> read_tokens)
    : admin_(std::move(admin_tokens)),
      worker_(std::move(worker_tokens)),
      read_(std::move(read_tokens)) {}

grpc::Status Authorizer::Check(const grpc::CallbackServerContext* ctx, Role role) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  absl::Status st = CheckHeader(
      it == md.end() ? std::string() : std::string(it->second.data(), it->second.size()), role);
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

absl::Status Authorizer::CheckHeader(const std::string& value, Role role) const {
  // Which tokens this role accepts; an empty set means the role is not protected.
  const bool protected_role = role == Role::kAdmin    ? !admin_.empty()
                              : role == Role::kWorker ? !worker_.empty()
                                                      : (!admin_.empty() || !read_.empty());
  if (!protected_role) return absl::OkStatus();
  if (value.empty()) {
    return absl::UnauthenticatedError(
        "missing bearer token --> hint: pass --token-file or set TERN_TOKEN");
  }
  constexpr char kPrefix[] = "Bearer ";
  if (value.rfind(kPrefix, 0) != 0) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <token>'");
  }
  const std::string token = value.substr(sizeof(kPrefix) - 1);
  const bool is_admin = Contains(admin_, token);
  const bool is_worker = Contains(worker_, token);
  const bool is_read = Contains(read_, token);
  if (!is_admin && !is_worker && !is_read)
    return absl::UnauthenticatedError("invalid bearer token");
  switch (role) {
    case Role::kRead:
      return absl::OkStatus();
    case Role::kAdmin:
      if (is_admin) return absl::OkStatus();
      return absl::PermissionDeniedError("this call needs the admin token");
    case Role::kWorker:
      if (is_worker || is_admin) return absl::OkStatus();
      return absl::PermissionDeniedError("this call needs the worker token");
  }
  return absl::InternalError("unknown role");
}

}  // namespace tern::daemon
