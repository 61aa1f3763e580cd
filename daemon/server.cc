#include "daemon/server.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "infra/rpc/tls.h"
#include "infra/token_file.h"
#include "worker/core/status.h"

namespace tern::daemon {
namespace {

absl::StatusOr<std::vector<std::string>> Tokens(const std::string& path) {
  if (path.empty()) return std::vector<std::string>{};
  return infra::ReadTokenFile(path);
}

}  // namespace

Daemon::Daemon(DaemonOptions options) : options_(std::move(options)) {}

Daemon::~Daemon() { Shutdown(); }

absl::Status Daemon::Start() {
  std::error_code ec;
  std::filesystem::create_directories(options_.state_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create --state-dir ", options_.state_dir, ": ", ec.message()));
  }
  // One ternd per state dir: two would split the cluster's brain over one SQLite file.
  TERN_ASSIGN_OR_RETURN(auto lock,
                        infra::DirLock::Acquire(options_.state_dir + "/ternd.lock",
                                                absl::StrCat("--state-dir ", options_.state_dir)));
  lock_.emplace(std::move(lock));
  TERN_ASSIGN_OR_RETURN(auto admin, Tokens(options_.auth_token_file));
  TERN_ASSIGN_OR_RETURN(auto worker, Tokens(options_.worker_token_file));
  TERN_ASSIGN_OR_RETURN(auto read, Tokens(options_.read_token_file));
  auth_ = std::make_unique<Authorizer>(std::move(admin), std::move(worker), std::move(read));
  TERN_ASSIGN_OR_RETURN(
      auto creds, infra::ServerCredentials({options_.tls_cert, options_.tls_key, options_.tls_ca}));
  const std::string db = options_.state_dir + "/ternd.db";
  TERN_ASSIGN_OR_RETURN(auto store, OpenSqliteJobStore(db));

  CoordinatorOptions copts;
  copts.state_dir = options_.state_dir;
  // Absolute: ranks run in their own working directories, possibly on other hosts.
  copts.checkpoint_root = std::filesystem::absolute(options_.checkpoint_root.empty()
                                                        ? options_.state_dir + "/checkpoints"
                                                        : options_.checkpoint_root)
                              .lexically_normal()
                              .string();
  copts.heartbeat_timeout_ms = options_.heartbeat_timeout_ms;
  copts.reconnect_grace_ms = options_.reconnect_grace_ms;
  copts.stop_timeout_ms = options_.stop_timeout_ms;
  copts.worker_expiry_ms = options_.worker_expiry_ms;
  loop_ = std::make_unique<EventLoop>();
  rendezvous_ = std::make_unique<RendezvousStore>();
  coord_ = std::make_unique<Coordinator>(copts, loop_.get(), std::move(store),
                                         NewFifoGangScheduler(), rendezvous_.get());
  stats_ = std::make_unique<JobStats>();
  if (options_.tensorboard) {
    tensorboard_ = std::make_unique<TensorBoardLogger>(options_.state_dir, coord_.get());
  }
  absl::Status recovered;
  loop_->RunSync([&] {
    coord_->hub()->AddObserver([stats = stats_.get()](const std::string& id, const auto& item) {
      stats->Observe(id, item);
      if (item.has_event() && IsTerminal(item.event().state())) stats->Trim(4096);
    });
    if (tensorboard_) {
      coord_->hub()->AddObserver(
          [tb = tensorboard_.get()](const std::string& id, const auto& item) {
            tb->Observe(id, item);
          });
    }
    recovered = coord_->Recover();
  });
  TERN_RETURN_IF_ERROR(recovered);

  job_service_ = std::make_unique<JobServiceImpl>(coord_.get(), loop_.get(), auth_.get(),
                                                  options_.limits, stats_.get());
  worker_service_ =
      std::make_unique<WorkerServiceImpl>(coord_.get(), loop_.get(), auth_.get(), options_.limits);
  rendezvous_service_ = std::make_unique<RendezvousServiceImpl>(rendezvous_.get(), auth_.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, creds, &port_);
  builder.RegisterService(job_service_.get());
  builder.RegisterService(worker_service_.get());
  builder.RegisterService(rendezvous_service_.get());
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  // Detect dead peers on idle streams (workers behind a vanished host).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen, " --> hint: is the port in use?"));
  }
  spdlog::info("ternd serving on port {} (state {}, auth {}, tls {})", port_, options_.state_dir,
               auth_->enabled() ? "on" : "off", options_.tls_cert.empty() ? "off" : "on");
  if (options_.http_enabled) {
    http_ = std::make_unique<HttpServer>(options_.http, coord_.get(), loop_.get(), auth_.get(),
                                         stats_.get());
    if (auto st = http_->Start(); !st.ok()) {
      http_.reset();
      if (options_.http_required) return st;
      spdlog::warn("no dashboard: {}", st.ToString());
    }
  }
  return absl::OkStatus();
}

void Daemon::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (http_) http_->Stop();  // before the loop: its handlers post to it
  if (rendezvous_) rendezvous_->Shutdown();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (loop_) loop_->Stop();
}

}  // namespace tern::daemon
