// WorkerService handlers: Register (unary) and the bidirectional Session stream.
#include <spdlog/spdlog.h>

#include "daemon/rpc/services.h"

namespace tern::daemon {
namespace {

// One worker's session. The first message must be a SessionHello naming the registration;
// every later message is handed to the coordinator in order. Coordinator -> worker messages
// go through the SessionSink, from the loop thread.
class SessionReactor
    : public grpc::ServerBidiReactor<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage> {
 public:
  SessionReactor(Coordinator* coord, EventLoop* loop, size_t max_queue)
      : coord_(coord),
        loop_(loop),
        sink_(std::make_shared<SessionSink>([this](const auto* m) { StartWrite(m); },
                                            [this](grpc::Status s) { Finish(std::move(s)); },
                                            max_queue)) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // worker closed its side or the stream broke
      ReportClosed();
      sink_->Close(grpc::Status::OK);
      return;
    }
    if (worker_.empty()) {
      if (in_.msg_case() != tern::v1::WorkerMessage::kHello || in_.hello().worker_id().empty()) {
        sink_->Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "the first Session message must be a SessionHello"));
        return;
      }
      worker_ = in_.hello().worker_id();
      session_id_ = in_.hello().session_id();
      loop_->Post([coord = coord_, w = worker_, id = session_id_, sink = sink_] {
        if (auto st = coord->OpenSession(w, id, sink); !st.ok()) sink->Close(ToGrpc(st));
      });
    } else {
      loop_->Post([coord = coord_, w = worker_, id = session_id_, msg = std::move(in_)] {
        coord->OnWorkerMessage(w, id, msg);
      });
      in_.Clear();
    }
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { sink_->OnWriteDone(ok); }
  void OnCancel() override { sink_->Close(grpc::Status::CANCELLED); }
  void OnDone() override {
    ReportClosed();
    sink_->Detach();
    delete this;
  }

 private:
  void ReportClosed() {
    if (closed_reported_.exchange(true) || worker_.empty()) return;
    loop_->Post([coord = coord_, w = worker_, id = session_id_] { coord->OnSessionClosed(w, id); });
  }

  Coordinator* coord_;
  EventLoop* loop_;
  std::shared_ptr<SessionSink> sink_;
  tern::v1::WorkerMessage in_;
  std::string worker_;  // set by the hello (reactions are serialized for reads)
  int64_t session_id_ = 0;
  std::atomic<bool> closed_reported_{false};
};

}  // namespace

grpc::ServerUnaryReactor* WorkerServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                      const tern::v1::RegisterRequest* req,
                                                      tern::v1::RegisterResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) {
    reactor->Finish(st);
    return reactor;
  }
  loop_->Post([this, req, resp, reactor] {
    auto r = coord_->RegisterWorker(*req);
    if (r.ok()) *resp = std::move(*r);
    reactor->Finish(ToGrpc(r.status()));
  });
  return reactor;
}

grpc::ServerBidiReactor<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage>*
WorkerServiceImpl::Session(grpc::CallbackServerContext* ctx) {
  if (auto st = auth_->Check(ctx, Role::kWorker); !st.ok()) {
    return new RejectReactor<
        grpc::ServerBidiReactor<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage>>(st);
  }
  return new SessionReactor(coord_, loop_, limits_.max_stream_queue);
}

}  // namespace tern::daemon
