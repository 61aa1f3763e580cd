#include "worker/agent/agent.h"

#include <spdlog/spdlog.h>

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "infra/rpc/channel.h"
#include "nlohmann/json.hpp"

namespace tern::agent {
namespace {

constexpr size_t kMaxOutbound = 20000;  // buffered messages while disconnected
constexpr size_t kUploadBytesPerTick = 1 << 20;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CoordinatorChannel(const AgentOptions& o) {
  infra::ChannelOptions c;
  c.address = o.coordinator;
  c.tls_ca = o.tls_ca;
  c.tls_ca_from_env = false;
  c.tls_ca_what = "--tls-ca";
  c.keepalive = std::chrono::milliseconds(10000);
  c.max_receive_bytes = 0;
  return infra::MakeChannel(c);
}

bool Permanent(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAUTHENTICATED || c == grpc::StatusCode::PERMISSION_DENIED ||
         c == grpc::StatusCode::INVALID_ARGUMENT || c == grpc::StatusCode::ALREADY_EXISTS;
}

}  // namespace

Agent::Agent(AgentOptions options) : options_(std::move(options)) {
  // Tells ternd a reconnect of this process from another process using the same --name.
  std::random_device rd;
  instance_id_ = absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  launch_.rank_binary = options_.rank_binary;
  launch_.coordinator = options_.coordinator;
  launch_.scratch = options_.scratch;
  launch_.token_file = options_.token_file;
  launch_.bind_address = options_.advertise_address;
  launch_.threads_per_slot = std::max(1, options_.cores / std::max(1, options_.slots));
  supervisor_ = std::make_unique<RankSupervisor>(
      options_.grace, [this](tern::v1::WorkerMessage m) { Enqueue(std::move(m)); },
      [this] { Wake(); });
}

Agent::~Agent() { Stop(); }

void Agent::Drain(const std::string& reason) {
  tern::v1::WorkerMessage msg;
  msg.mutable_drain()->set_reason(reason);
  Enqueue(std::move(msg));
}

int Agent::running_ranks() { return supervisor_->running(); }

void Agent::Start() {
  thread_ = std::thread([this] { ConnectLoop(); });
}

void Agent::Stop() {
  if (!supervisor_) return;
  // Stop the ranks while the session still runs, so their exits reach ternd.
  const bool had_ranks = supervisor_->running() > 0;
  supervisor_->CancelAll();
  const auto give_up = std::chrono::steady_clock::now() + options_.grace + std::chrono::seconds(2);
  while (supervisor_->running() > 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (had_ranks) std::this_thread::sleep_for(std::chrono::milliseconds(300));  // last uploads
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  supervisor_.reset();
}

absl::Status Agent::fatal() {
  std::lock_guard<std::mutex> lock(mu_);
  return fatal_;
}

std::string Agent::MetricsText() {
  AgentMetrics::Gauges g;
  g.worker = options_.name;
  g.slots = options_.slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    g.outbound_queue = outbound_.size();
  }
  g.running_ranks = supervisor_->running();  // callers stop scraping before Stop()
  return metrics_.Render(g);
}

void Agent::Enqueue(tern::v1::WorkerMessage msg) {
  metrics_.OnQueued(msg);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (outbound_.size() >= kMaxOutbound) outbound_.pop_front();  // oldest first
    outbound_.push_back(std::move(msg));
  }
  cv_.notify_all();
}

void Agent::Wake() { cv_.notify_all(); }

void Agent::ConnectLoop() {
  auto backoff = std::chrono::milliseconds(100);
  while (true) {
    // A fresh channel per attempt: a channel that saw ternd die keeps its own (slow)
    // reconnect backoff, which would delay the re-registration.
    auto channel = CoordinatorChannel(options_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!channel.ok()) fatal_ = channel.status();  // an unreadable --tls-ca
      if (stopping_ || !fatal_.ok()) return;
    }
    const auto started = std::chrono::steady_clock::now();
    auto stub = tern::v1::WorkerService::NewStub(*channel);
    absl::Status st = RunSession(stub.get());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || !fatal_.ok()) return;
    }
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(5)) {
      backoff = std::chrono::milliseconds(100);  // the session was up: retry quickly
    }
    spdlog::warn("session with {} ended: {}; reconnecting in {} ms", options_.coordinator,
                 st.ToString(), backoff.count());
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, backoff, [this] { return stopping_; });
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

absl::Status Agent::RunSession(tern::v1::WorkerService::Stub* stub) {
  tern::v1::RegisterRequest reg;
  reg.set_name(options_.name);
  reg.set_host(options_.host);
  reg.set_slots(options_.slots);
  reg.set_instance_id(instance_id_);
  for (const auto& set : options_.slot_cpus) reg.add_cpu_sets(cpu::FormatCpuList(set));
  for (auto& r : supervisor_->Snapshot()) *reg.add_ranks() = std::move(r);
  tern::v1::RegisterResponse resp;
  {
    grpc::ClientContext ctx;
    if (!options_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + options_.token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status s = stub->Register(&ctx, reg, &resp);
    if (!s.ok()) {
      absl::Status st(
          static_cast<absl::StatusCode>(s.error_code()),
          absl::StrCat("register with ", options_.coordinator, ": ", s.error_message()));
      if (Permanent(s.error_code())) {
        spdlog::error("{}", st.ToString());
        std::lock_guard<std::mutex> lock(mu_);
        fatal_ = st;
        cv_.notify_all();
      }
      return st;
    }
  }
  supervisor_->SetLogOffsets(resp);
  supervisor_->ResendExits();
  spdlog::info("registered with {} as {} (session {}, {} slots, {} known ranks)",
               options_.coordinator, options_.name, resp.session_id(), options_.slots,
               reg.ranks_size());
  grpc::ClientContext ctx;
  if (!options_.token.empty()) ctx.AddMetadata("authorization", "Bearer " + options_.token);
  auto stream = stub->Session(&ctx);
  tern::v1::WorkerMessage hello;
  hello.mutable_hello()->set_worker_id(resp.worker_id());
  hello.mutable_hello()->set_session_id(resp.session_id());
  if (!stream->Write(hello)) {
    return absl::UnavailableError(absl::StrCat("session: ", stream->Finish().error_message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    reader_done_ = false;
  }
  std::thread reader([this, s = stream.get()] { ReadLoop(s); });
  metrics_.OnSessionUp();
  const auto interval = std::chrono::milliseconds(std::max(100, resp.heartbeat_interval_ms()));
  auto next_heartbeat = std::chrono::steady_clock::now();
  bool ok = true;
  while (ok) {
    std::deque<tern::v1::WorkerMessage> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, std::min(next_heartbeat, std::chrono::steady_clock::now() +
                                                        std::chrono::milliseconds(100)));
      if (stopping_ || reader_done_) break;
    }
    // Uploads first, then the queue: a rank's metrics are queued before its exit is recorded,
    // so everything queued by now precedes any exit collected here.
    std::vector<tern::v1::WorkerMessage> uploads = supervisor_->CollectUploads(kUploadBytesPerTick);
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(outbound_);
    }
    if (std::chrono::steady_clock::now() >= next_heartbeat) {
      tern::v1::WorkerMessage hb;
      hb.mutable_heartbeat()->set_time_ms(NowMs());
      hb.mutable_heartbeat()->set_running_ranks(supervisor_->running());
      ok = stream->Write(hb);
      if (ok) metrics_.OnSent(hb);
      next_heartbeat = std::chrono::steady_clock::now() + interval;
    }
    while (ok && !batch.empty()) {
      ok = stream->Write(batch.front());
      if (ok) metrics_.OnSent(batch.front());
      batch.pop_front();
    }
    for (size_t i = 0; ok && i < uploads.size(); ++i) {
      ok = stream->Write(uploads[i]);
      if (ok) metrics_.OnSent(uploads[i]);
    }
  }
  metrics_.OnSessionDown();
  ctx.TryCancel();
  reader.join();
  grpc::Status fin = stream->Finish();
  return absl::UnavailableError(absl::StrCat("session: ", fin.error_message()));
}

void Agent::ReadLoop(
    grpc::ClientReaderWriter<tern::v1::WorkerMessage, tern::v1::CoordinatorMessage>* s) {
  tern::v1::CoordinatorMessage msg;
  while (s->Read(&msg)) {
    if (msg.has_assign()) HandleAssignment(msg.assign());
    if (msg.has_cancel()) {
      spdlog::info("cancel {} round {}: {}", msg.cancel().job_id(), msg.cancel().round(),
                   msg.cancel().reason());
      supervisor_->Cancel(msg.cancel().job_id(), msg.cancel().round());
    }
    if (msg.has_order()) HandleOrder(msg.order());
  }
  std::lock_guard<std::mutex> lock(mu_);
  reader_done_ = true;
  cv_.notify_all();
}

void Agent::HandleOrder(const tern::v1::RankOrder& o) {
  const char* op = o.op() == tern::v1::RankOrder::OP_STOP         ? "stop"
                   : o.op() == tern::v1::RankOrder::OP_CHECKPOINT ? "checkpoint"
                   : o.op() == tern::v1::RankOrder::OP_ABORT      ? "abort"
                                                                  : nullptr;
  if (op == nullptr) {
    spdlog::warn("order for {} round {} has no known op ({}); ignored", o.job_id(), o.round(),
                 static_cast<int>(o.op()));
    return;
  }
  const std::string line =
      nlohmann::json{{"op", op}, {"round", o.round()}, {"reason", o.reason()}}.dump(
          -1, ' ', false, nlohmann::json::error_handler_t::replace);
  const int reached = supervisor_->Order(o.job_id(), o.round(), line);
  spdlog::info("order {} to {} round {}: {} rank(s) reached ({})", op, o.job_id(), o.round(),
               reached, o.reason());
}

void Agent::HandleAssignment(const tern::v1::Assignment& a) {
  spdlog::info("assignment: {} round {} ranks {}..{} of {}", a.job_id(), a.round(),
               a.ranks_size() ? a.ranks(0) : -1, a.ranks_size() ? a.ranks(a.ranks_size() - 1) : -1,
               a.world_size());
  const absl::Status written = WriteSpecFile(SpecPath(launch_, a.job_id()), a.spec());
  // Only this thread launches ranks, so the free slots cannot change under us but grow.
  std::set<int> in_use = supervisor_->SlotsInUse();
  for (int rank : a.ranks()) {
    RankLaunch l;
    l.id = RankId{a.job_id(), a.round(), rank};
    if (supervisor_->Known(l.id)) continue;  // an assignment resent after a reconnect
    if (!options_.slot_cpus.empty()) {
      for (int s = 0; s < static_cast<int>(options_.slot_cpus.size()); ++s) {
        if (in_use.insert(s).second) {
          l.slot = s;
          l.cpus = options_.slot_cpus[s];
          break;
        }
      }
      if (l.slot < 0) {
        spdlog::warn(
            "{} rank {}: every slot is busy (ranks of an earlier round still exit); "
            "starting it without CPU binding",
            a.job_id(), rank);
      }
    }
    l.argv = BuildRankArgv(launch_, a, rank, l.cpus);
    if (!l.cpus.empty()) {
      const int threads = RankThreads(launch_, a, l.cpus);
      l.env.push_back(absl::StrCat("OMP_NUM_THREADS=", threads));
      l.env.push_back(absl::StrCat("OPENBLAS_NUM_THREADS=", threads));
    }
    if (!written.ok()) l.argv = {"/bin/false"};  // reported as a failed rank (see the log)
    l.log_path = RankLogPath(launch_, a.job_id(), rank);
    l.work_dir = JobDir(launch_, a.job_id());
    l.relay_metrics = rank == 0;
    // job.proto's default when the spec leaves steps_per_print unset.
    l.steps_per_print = a.spec().has_steps_per_print() ? a.spec().steps_per_print() : 10;
    if (!options_.tls_ca.empty()) l.env.push_back("TERN_TLS_CA=" + options_.tls_ca);
    if (!written.ok()) spdlog::error("{}", written.ToString());
    supervisor_->Launch(std::move(l));
  }
}

}  // namespace tern::agent
