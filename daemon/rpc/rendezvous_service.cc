// RendezvousService handlers: straight to the thread-safe RendezvousStore; blocking Get and
// Wait finish their reactor from the store's callback.
#include "absl/strings/str_cat.h"
#include "daemon/rpc/services.h"

namespace tern::daemon {
namespace {

constexpr int64_t kMaxWaitMs = 30 * 60 * 1000;  // longest Get/Wait timeout accepted

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, grpc::Status st) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(st));
  return reactor;
}

grpc::Status CheckScope(const std::string& prefix, const std::string& key) {
  if (prefix.empty() || key.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "rendezvous prefix and key must be non-empty");
  }
  return grpc::Status::OK;
}

RendezvousStore::Clock::time_point Deadline(int64_t timeout_ms) {
  return RendezvousStore::Clock::now() +
         std::chrono::milliseconds(std::clamp<int64_t>(timeout_ms, 0, kMaxWaitMs));
}

}  // namespace

grpc::ServerUnaryReactor* RendezvousServiceImpl::Set(grpc::CallbackServerContext* ctx,
                                                     const tern::v1::RendezvousSetRequest* req,
                                                     tern::v1::RendezvousSetResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) return Done(ctx, st);
  if (auto st = CheckScope(req->prefix(), req->key()); !st.ok()) return Done(ctx, st);
  return Done(ctx, ToGrpc(store_->Set(req->prefix(), req->key(), req->value())));
}

grpc::ServerUnaryReactor* RendezvousServiceImpl::Get(grpc::CallbackServerContext* ctx,
                                                     const tern::v1::RendezvousGetRequest* req,
                                                     tern::v1::RendezvousGetResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) return Done(ctx, st);
  if (auto st = CheckScope(req->prefix(), req->key()); !st.ok()) return Done(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  store_->Get(req->prefix(), req->key(), Deadline(req->timeout_ms()),
              [reactor, resp](absl::StatusOr<std::string> v) {
                if (v.ok()) resp->set_value(std::move(*v));
                reactor->Finish(ToGrpc(v.status()));
              });
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousServiceImpl::Wait(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::RendezvousWaitRequest* req,
                                                      tern::v1::RendezvousWaitResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) return Done(ctx, st);
  for (const auto& k : req->keys()) {
    if (auto st = CheckScope(req->prefix(), k); !st.ok()) return Done(ctx, st);
  }
  auto* reactor = ctx->DefaultReactor();
  std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  store_->Wait(req->prefix(), keys, Deadline(req->timeout_ms()),
               [reactor](absl::Status st) { reactor->Finish(ToGrpc(st)); });
  return reactor;
}

grpc::ServerUnaryReactor* RendezvousServiceImpl::Add(grpc::CallbackServerContext* ctx,
                                                     const tern::v1::RendezvousAddRequest* req,
                                                     tern::v1::RendezvousAddResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) return Done(ctx, st);
  if (auto st = CheckScope(req->prefix(), req->key()); !st.ok()) return Done(ctx, st);
  auto v = store_->Add(req->prefix(), req->key(), req->delta());
  if (v.ok()) resp->set_value(*v);
  return Done(ctx, ToGrpc(v.status()));
}

}  // namespace tern::daemon
