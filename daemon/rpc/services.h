// ternd's gRPC services (callback API). Handlers are thin: authorize, validate, hand the
// work to the Coordinator on the EventLoop thread (or to the thread-safe RendezvousStore),
// reply from there.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "daemon/rpc/auth.h"
#include "daemon/state/coordinator.h"
#include "daemon/state/event_loop.h"
#include "daemon/state/job_stats.h"
#include "daemon/state/rendezvous_store.h"
#include "infra/rpc/status.h"
#include "tern/v1/cluster.grpc.pb.h"

namespace tern::daemon {

using infra::ToGrpc;

// A stream reactor that only finishes with `status` (refused calls).
template <class Base>
class RejectReactor : public Base {
 public:
  explicit RejectReactor(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// Counts open streams per client (peer IP) and refuses more than `limit`. Thread-safe.
class StreamLimiter {
 public:
  explicit StreamLimiter(int limit) : limit_(limit) {}
  bool Acquire(const std::string& client);
  void Release(const std::string& client);

 private:
  const int limit_;
  std::mutex mu_;
  std::map<std::string, int> open_;
};

// The client part of a gRPC peer string ("ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1").
std::string PeerClient(const std::string& peer);

struct ServiceLimits {
  int max_streams_per_client = 2048;  // WatchJob + GetLogs streams per client IP
  size_t max_stream_queue = 8192;     // queued messages per stream before it is cut off
  size_t max_list_bytes = 4 << 20;    // a ListJobs page stops before this many bytes
};

// A job as ListJobs carries it: the spec cut to name, train_iters and resources (GetJob has
// the whole spec), the message to 1 KiB.
tern::v1::Job ListingView(const tern::v1::Job& job);

class JobServiceImpl final : public tern::v1::JobService::CallbackService {
 public:
  // `stats` (optional, read on the loop thread) adds incidents and goodput to GetJob.
  JobServiceImpl(Coordinator* coord, EventLoop* loop, const Authorizer* auth, ServiceLimits limits,
                 const JobStats* stats = nullptr)
      : coord_(coord),
        loop_(loop),
        auth_(auth),
        limits_(limits),
        stats_(stats),
        streams_(limits.max_streams_per_client) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx,
                                      const tern::v1::SubmitJobRequest* req,
                                      tern::v1::SubmitJobResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const tern::v1::GetJobRequest* req,
                                   tern::v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const tern::v1::ListJobsRequest* req,
                                     tern::v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* DrainWorker(grpc::CallbackServerContext* ctx,
                                        const tern::v1::DrainWorkerRequest* req,
                                        tern::v1::DrainWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const tern::v1::CancelJobRequest* req,
                                      tern::v1::Job* resp) override;
  grpc::ServerWriteReactor<tern::v1::WatchJobResponse>* WatchJob(
      grpc::CallbackServerContext* ctx, const tern::v1::WatchJobRequest* req) override;
  grpc::ServerWriteReactor<tern::v1::LogChunk>* GetLogs(
      grpc::CallbackServerContext* ctx, const tern::v1::GetLogsRequest* req) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                        const tern::v1::ListWorkersRequest* req,
                                        tern::v1::ListWorkersResponse* resp) override;

 private:
  Coordinator* coord_;
  EventLoop* loop_;
  const Authorizer* auth_;
  const ServiceLimits limits_;
  const JobStats* stats_;
  StreamLimiter streams_;
};

class WorkerServiceImpl final : public tern::v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(Coordinator* coord, EventLoop* loop, const Authorizer* auth,
                    ServiceLimits limits)
      : coord_(coord), loop_(loop), auth_(auth), limits_(limits) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const tern::v1::RegisterRequest* req,
                                     tern::v1::RegisterResponse* resp) override;
  grpc::ServerBidiReactor<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage>* Session(
      grpc::CallbackServerContext* ctx) override;

 private:
  Coordinator* coord_;
  EventLoop* loop_;
  const Authorizer* auth_;
  const ServiceLimits limits_;
};

class RendezvousServiceImpl final : public tern::v1::RendezvousService::CallbackService {
 public:
  RendezvousServiceImpl(RendezvousStore* store, const Authorizer* auth)
      : store_(store), auth_(auth) {}

  grpc::ServerUnaryReactor* Set(grpc::CallbackServerContext* ctx,
                                const tern::v1::RendezvousSetRequest* req,
                                tern::v1::RendezvousSetResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const tern::v1::RendezvousGetRequest* req,
                                tern::v1::RendezvousGetResponse* resp) override;
  grpc::ServerUnaryReactor* Wait(grpc::CallbackServerContext* ctx,
                                 const tern::v1::RendezvousWaitRequest* req,
                                 tern::v1::RendezvousWaitResponse* resp) override;
  grpc::ServerUnaryReactor* Add(grpc::CallbackServerContext* ctx,
                                const tern::v1::RendezvousAddRequest* req,
                                tern::v1::RendezvousAddResponse* resp) override;

 private:
  RendezvousStore* store_;
  const Authorizer* auth_;
};

}  // namespace tern::daemon
