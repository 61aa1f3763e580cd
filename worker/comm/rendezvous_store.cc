#include "worker/comm/rendezvous_store.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "infra/rpc/channel.h"
#include "tern/v1/cluster.grpc.pb.h"
#include "worker/comm/comm.h"

namespace tern::comm {
namespace {

using infra::FromGrpc;
using infra::MakeContext;

using std::chrono::milliseconds;
constexpr milliseconds kCallTimeout = kDefaultCollectiveTimeout;  // Set and Add
constexpr milliseconds kSlack(5000);  // RPC deadline beyond a Get/Wait timeout

class RendezvousClientStore : public Store {
 public:
  RendezvousClientStore(std::shared_ptr<grpc::Channel> channel, std::string address,
                        std::string prefix, std::string token)
      : stub_(tern::v1::RendezvousService::NewStub(channel)),
        address_(std::move(address)),
        prefix_(std::move(prefix)),
        token_(std::move(token)) {}

  absl::Status Set(const std::string& key, const std::vector<uint8_t>& value) override {
    tern::v1::RendezvousSetRequest req;
    req.set_prefix(prefix_);
    req.set_key(key);
    req.set_value(std::string(value.begin(), value.end()));
    return Retry(kCallTimeout, absl::StrCat("rendezvous Set ", key), [&](grpc::ClientContext* ctx) {
      tern::v1::RendezvousSetResponse resp;
      return stub_->Set(ctx, req, &resp);
    });
  }

  absl::StatusOr<std::vector<uint8_t>> Get(const std::string& key, milliseconds timeout) override {
    tern::v1::RendezvousGetRequest req;
    req.set_prefix(prefix_);
    req.set_key(key);
    tern::v1::RendezvousGetResponse resp;
    const auto end = std::chrono::steady_clock::now() + timeout;
    absl::Status st = Retry(timeout + kSlack, absl::StrCat("rendezvous Get ", key),
                            [&](grpc::ClientContext* ctx) {
                              req.set_timeout_ms(Left(end).count());
                              return stub_->Get(ctx, req, &resp);
                            });
    if (!st.ok()) return st;
    return std::vector<uint8_t>(resp.value().begin(), resp.value().end());
  }

  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override {
    tern::v1::RendezvousAddRequest req;
    req.set_prefix(prefix_);
    req.set_key(key);
    req.set_delta(delta);
    tern::v1::RendezvousAddResponse resp;
    auto ctx = MakeContext(token_, kCallTimeout, /*wait_for_ready=*/true);
    // Not retried: an Add that reached ternd before the failure must not apply twice.
    absl::Status st = FromGrpc(stub_->Add(ctx.get(), req, &resp),
                               absl::StrCat("rendezvous Add ", key, " at ", address_));
    if (!st.ok()) return st;
    return resp.value();
  }

  absl::Status Wait(const std::vector<std::string>& keys, milliseconds timeout) override {
    tern::v1::RendezvousWaitRequest req;
    req.set_prefix(prefix_);
    for (const auto& k : keys) req.add_keys(k);
    const auto end = std::chrono::steady_clock::now() + timeout;
    return Retry(timeout + kSlack, absl::StrCat("rendezvous Wait (", keys.size(), " keys)"),
                 [&](grpc::ClientContext* ctx) {
                   req.set_timeout_ms(Left(end).count());
                   tern::v1::RendezvousWaitResponse resp;
                   return stub_->Wait(ctx, req, &resp);
                 });
  }

 private:
  static milliseconds Left(std::chrono::steady_clock::time_point end) {
    return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(
                                         end - std::chrono::steady_clock::now()));
  }

  // Runs `call` until it succeeds, fails for a reason other than UNAVAILABLE, or `budget`
  // has passed.
  template <class Call>
  absl::Status Retry(milliseconds budget, const std::string& what, Call call) {
    const auto end = std::chrono::steady_clock::now() + budget;
    milliseconds backoff(50);
    while (true) {
      auto ctx = MakeContext(token_, std::max(milliseconds(1), Left(end)), true);
      grpc::Status s = call(ctx.get());
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE ||
          std::chrono::steady_clock::now() + backoff >= end) {
        return FromGrpc(s, absl::StrCat(what, " (prefix ", prefix_, ") at ", address_));
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, milliseconds(1000));
    }
  }

  std::unique_ptr<tern::v1::RendezvousService::Stub> stub_;
  const std::string address_;
  const std::string prefix_;
  const std::string token_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> ConnectRendezvousStore(
    const std::string& address, const std::string& prefix, const std::string& token,
    std::chrono::milliseconds connect_timeout) {
  if (prefix.empty()) return absl::InvalidArgumentError("rendezvous prefix is empty");
  auto channel = infra::MakeChannel({.address = address});
  if (!channel.ok()) return channel.status();
  if (!(*channel)->WaitForConnected(std::chrono::system_clock::now() + connect_timeout)) {
    return absl::UnavailableError(absl::StrCat("cannot reach the rendezvous service at ", address,
                                               " --> hint: is ternd running?"));
  }
  return std::unique_ptr<Store>(new RendezvousClientStore(*channel, address, prefix, token));
}

}  // namespace tern::comm
