// JobService handlers.
#include <grpcpp/alarm.h>
#include <spdlog/spdlog.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "daemon/rpc/services.h"
#include "worker/spec/job_config.h"

namespace tern::daemon {
namespace {

template <class Resp>
grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, grpc::Status status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

// WatchJob: the coordinator pushes into the sink from the loop thread.
class WatchReactor : public grpc::ServerWriteReactor<tern::v1::WatchJobResponse> {
 public:
  WatchReactor(StreamLimiter* limiter, std::string client, size_t max_queue)
      : limiter_(limiter),
        client_(std::move(client)),
        sink_(std::make_shared<WatchSink>([this](const auto* m) { StartWrite(m); },
                                          [this](grpc::Status s) { Finish(std::move(s)); },
                                          max_queue)) {}
  std::shared_ptr<WatchSink> sink() { return sink_; }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { sink_->Close(grpc::Status::CANCELLED); }
  void OnDone() override {
    sink_->Detach();
    if (limiter_) limiter_->Release(client_);
    delete this;
  }

 private:
  StreamLimiter* limiter_;
  std::string client_;
  std::shared_ptr<WatchSink> sink_;
};

// GetLogs: streams a rank's log file from an offset; with `follow`, polls for more until the
// job ends.
class LogsReactor : public grpc::ServerWriteReactor<tern::v1::LogChunk> {
 public:
  LogsReactor(Coordinator* coord, const tern::v1::GetLogsRequest& req, StreamLimiter* limiter,
              std::string client)
      : coord_(coord),
        req_(req),
        offset_(req.offset()),
        limiter_(limiter),
        client_(std::move(client)) {
    path_ = coord_->LogPath(req.job_id(), req.rank());
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Done(grpc::Status::CANCELLED);
    Next();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    alarm_.Cancel();
  }
  void OnDone() override {
    limiter_->Release(client_);
    delete this;
  }

 private:
  void Next() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return DoneLocked(grpc::Status::CANCELLED);
    }
    const bool active = coord_->IsJobActive(req_.job_id());  // before reading: no lost tail
    std::ifstream in(path_, std::ios::binary);
    const bool exists = static_cast<bool>(in);
    std::string data;
    if (exists) {
      in.seekg(offset_);
      data.resize(64 << 10);
      in.read(data.data(), static_cast<std::streamsize>(data.size()));
      data.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
    }
    if (!data.empty()) {
      chunk_.set_offset(offset_);
      offset_ += static_cast<int64_t>(data.size());
      chunk_.set_data(std::move(data));
      StartWrite(&chunk_);
      return;
    }
    if (!req_.follow() || !active) {
      if (!exists && !req_.follow()) {
        return Done(grpc::Status(
            grpc::StatusCode::NOT_FOUND,
            absl::StrCat("no log yet for rank ", req_.rank(), " of job ", req_.job_id())));
      }
      return Done(grpc::Status::OK);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return DoneLocked(grpc::Status::CANCELLED);
    alarm_.Set(std::chrono::system_clock::now() + std::chrono::milliseconds(200), [this](bool ok) {
      if (!ok) return Done(grpc::Status::CANCELLED);
      Next();
    });
  }
  void Done(grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    DoneLocked(std::move(s));
  }
  void DoneLocked(grpc::Status s) {
    if (finished_) return;
    finished_ = true;
    Finish(std::move(s));
  }

  Coordinator* coord_;
  tern::v1::GetLogsRequest req_;
  int64_t offset_;
  StreamLimiter* limiter_;
  std::string client_;
  std::string path_;
  tern::v1::LogChunk chunk_;
  grpc::Alarm alarm_;
  std::mutex mu_;
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace

tern::v1::Job ListingView(const tern::v1::Job& job) {
  constexpr size_t kMaxListedMessage = 1024;
  tern::v1::Job view = job;
  view.clear_spec();
  auto* spec = view.mutable_spec();
  spec->set_name(job.spec().name());
  spec->set_train_iters(job.spec().train_iters());
  *spec->mutable_resources() = job.spec().resources();
  if (view.message().size() > kMaxListedMessage) {
    size_t cut = kMaxListedMessage;  // at a UTF-8 character boundary
    while (cut > 0 && (static_cast<unsigned char>(view.message()[cut]) & 0xC0) == 0x80) --cut;
    view.set_message(view.message().substr(0, cut) + "...");
  }
  return view;
}

std::string PeerClient(const std::string& peer) {
  auto pos = peer.rfind(':');
  return pos == std::string::npos ? peer : peer.substr(0, pos);
}

bool StreamLimiter::Acquire(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  int& n = open_[client];
  if (n >= limit_) return false;
  ++n;
  return true;
}

void StreamLimiter::Release(const std::string& client) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--open_[client] <= 0) open_.erase(client);
}

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* ctx,
                                                    const tern::v1::SubmitJobRequest* req,
                                                    tern::v1::SubmitJobResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kAdmin); !st.ok()) return Reject<void>(ctx, st);
  // The spec pipeline every CLI command uses; data and model files live on the workers.
  spec::ResolveOptions ro;
  ro.check_files = false;
  ro.cluster = true;
  ro.default_checkpoint_dir = true;  // the coordinator gives it <--checkpoint-root>/<job-id>
  auto resolved = spec::ResolveJob(req->spec(), ro);
  if (!resolved.ok())
    return Reject<void>(ctx, ToGrpc(absl::InvalidArgumentError(
                                 absl::StrCat("invalid job spec: ", resolved.status().message()))));
  for (const auto& w : resolved->warnings) resp->add_warnings(w);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, req, resp, reactor] {
    auto id = coord_->Submit(req->spec());
    if (id.ok()) resp->set_job_id(*id);
    reactor->Finish(ToGrpc(id.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx,
                                                 const tern::v1::GetJobRequest* req,
                                                 tern::v1::Job* resp) {
  if (auto st = auth_->Check(ctx, Role::kRead); !st.ok()) return Reject<void>(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, req, resp, reactor] {
    auto job = coord_->GetJob(req->job_id());
    if (job.ok()) {
      *resp = std::move(*job);
      AttachStats(stats_ ? stats_->Find(resp->id()) : nullptr, NowMs(), resp);
    }
    reactor->Finish(ToGrpc(job.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx,
                                                   const tern::v1::ListJobsRequest* req,
                                                   tern::v1::ListJobsResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kRead); !st.ok()) return Reject<void>(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, req, resp, reactor] {
    const int limit = req->limit() > 0 ? req->limit() : 1000;
    // One more than asked: tells whether older jobs remain.
    std::vector<tern::v1::Job> jobs = coord_->ListJobs(req->state(), limit + 1, req->before_id());
    size_t bytes = 0;
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (static_cast<int>(i) == limit) {
        resp->set_next_before_id(resp->jobs(resp->jobs_size() - 1).id());
        break;
      }
      tern::v1::Job view = ListingView(jobs[i]);
      const size_t size = view.ByteSizeLong() + 8;
      if (bytes + size > limits_.max_list_bytes && resp->jobs_size() > 0) {
        resp->set_next_before_id(resp->jobs(resp->jobs_size() - 1).id());
        break;
      }
      bytes += size;
      *resp->add_jobs() = std::move(view);
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx,
                                                    const tern::v1::CancelJobRequest* req,
                                                    tern::v1::Job* resp) {
  if (auto st = auth_->Check(ctx, Role::kAdmin); !st.ok()) return Reject<void>(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, req, resp, reactor] {
    auto job = coord_->Cancel(req->job_id(), req->reason());
    if (job.ok()) *resp = std::move(*job);
    reactor->Finish(ToGrpc(job.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::DrainWorker(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::DrainWorkerRequest* req,
                                                      tern::v1::DrainWorkerResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kAdmin); !st.ok()) return Reject<void>(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, req, resp, reactor] {
    auto jobs = coord_->Drain(req->worker(), req->reason().empty() ? "tern drain" : req->reason());
    if (jobs.ok())
      for (auto& j : *jobs) resp->add_jobs(std::move(j));
    reactor->Finish(ToGrpc(jobs.status()));
  });
  return reactor;
}

grpc::ServerWriteReactor<tern::v1::WatchJobResponse>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* ctx, const tern::v1::WatchJobRequest* req) {
  using Finished = RejectReactor<grpc::ServerWriteReactor<tern::v1::WatchJobResponse>>;
  if (auto st = auth_->Check(ctx, Role::kRead); !st.ok()) return new Finished(st);
  const std::string client = PeerClient(ctx->peer());
  if (!streams_.Acquire(client)) {
    return new Finished(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     "too many open streams from this client"));
  }
  auto* reactor = new WatchReactor(&streams_, client, limits_.max_stream_queue);
  loop_->Post([this, id = req->job_id(), sink = reactor->sink()] {
    if (auto st = coord_->Watch(id, sink); !st.ok()) sink->Close(ToGrpc(st));
  });
  return reactor;
}

grpc::ServerWriteReactor<tern::v1::LogChunk>* JobServiceImpl::GetLogs(
    grpc::CallbackServerContext* ctx, const tern::v1::GetLogsRequest* req) {
  using Finished = RejectReactor<grpc::ServerWriteReactor<tern::v1::LogChunk>>;
  if (auto st = auth_->Check(ctx, Role::kRead); !st.ok()) return new Finished(st);
  if (!coord_->JobExists(req->job_id())) {
    return new Finished(grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + req->job_id()));
  }
  if (req->rank() < 0 || req->offset() < 0) {
    return new Finished(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                     "GetLogsRequest: rank and offset must be >= 0"));
  }
  const std::string client = PeerClient(ctx->peer());
  if (!streams_.Acquire(client)) {
    return new Finished(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                     "too many open streams from this client"));
  }
  return new LogsReactor(coord_, *req, &streams_, client);
}

grpc::ServerUnaryReactor* JobServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::ListWorkersRequest* req,
                                                      tern::v1::ListWorkersResponse* resp) {
  if (auto st = auth_->Check(ctx, Role::kRead); !st.ok()) return Reject<void>(ctx, st);
  auto* reactor = ctx->DefaultReactor();
  loop_->Post([this, resp, reactor] {
    for (auto& w : coord_->ListWorkers()) *resp->add_workers() = std::move(w);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace tern::daemon
