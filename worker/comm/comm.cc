#include "worker/comm/comm.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/core/status.h"

namespace tern::comm {
namespace {

bool Overlap(ConstBytes a, ConstBytes b) {
  if (a.empty() || b.empty()) return false;
  const std::byte* a_end = a.data() + a.size();
  const std::byte* b_end = b.data() + b.size();
  return a.data() < b_end && b.data() < a_end;
}

}  // namespace

const char* CollectiveName(Collective c) {
  switch (c) {
    case Collective::kAllReduce:
      return "AllReduce";
    case Collective::kReduceScatter:
      return "ReduceScatter";
    case Collective::kAllGather:
      return "AllGather";
    case Collective::kAllToAll:
      return "AllToAll";
    case Collective::kAllToAllV:
      return "AllToAllV";
    case Collective::kBroadcast:
      return "Broadcast";
    case Collective::kBarrier:
      return "Barrier";
  }
  return "UnknownCollective";
}

uint64_t CommStats::total_bytes() const {
  return std::accumulate(bytes_sent.begin(), bytes_sent.end(), uint64_t{0});
}

uint64_t CommStats::total_calls() const {
  return std::accumulate(calls.begin(), calls.end(), uint64_t{0});
}

CommStats& CommStats::operator+=(const CommStats& other) {
  for (int i = 0; i < kNumCollectives; ++i) {
    bytes_sent[i] += other.bytes_sent[i];
    calls[i] += other.calls[i];
  }
  cross_node_bytes += other.cross_node_bytes;
  return *this;
}

// ---- Work -------------------------------------------------------------------------------

void WorkState::Complete(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
    done_ = true;
  }
  cv_.notify_all();
}

absl::Status WorkState::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  return status_;
}

bool WorkState::done() {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

Work Work::Completed(absl::Status status) {
  auto state = std::make_shared<WorkState>();
  state->Complete(std::move(status));
  return Work(std::move(state));
}

absl::Status Work::Wait() const {
  if (!state_) return absl::FailedPreconditionError("Wait() on an empty Work handle");
  return state_->Wait();
}

bool Work::Done() const { return state_ == nullptr || state_->done(); }

// ---- Communicator: validation, then dispatch to the implementation ----------------------

Communicator::Communicator(int rank, int size, std::string kind, std::string name)
    : rank_(rank), size_(size), kind_(std::move(kind)), name_(std::move(name)) {}

std::string Communicator::Describe(Collective c) const {
  return absl::StrCat(CollectiveName(c), " on group '", name_, "' (rank ", rank_, " of ", size_,
                      ")");
}

absl::Status Communicator::CheckTimeout(Collective c, const CollectiveOptions& opts) const {
  if (opts.timeout.count() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(c), ": timeout must be > 0 ms, got ", opts.timeout.count()));
  }
  return absl::OkStatus();
}

#define TERN_COMM_VALIDATE(expr)                           \
  do {                                                     \
    absl::Status _st = (expr);                             \
    if (!_st.ok()) return Work::Completed(std::move(_st)); \
  } while (0)

Work Communicator::AllReduceAsync(std::span<float> data, const CollectiveOptions& opts) {
  TERN_COMM_VALIDATE(CheckTimeout(Collective::kAllReduce, opts));
  if (data.empty()) return Work::Completed(absl::OkStatus());
  return StartAllReduce(data, opts);
}

Work Communicator::ReduceScatterAsync(std::span<const float> input, std::span<float> output,
                                      const CollectiveOptions& opts) {
  const Collective c = Collective::kReduceScatter;
  TERN_COMM_VALIDATE(CheckTimeout(c, opts));
  if (input.size() != output.size() * static_cast<size_t>(size_)) {
    return Work::Completed(absl::InvalidArgumentError(
        absl::StrCat(Describe(c), ": input has ", input.size(), " floats but must be group size ",
                     size_, " x output size ", output.size())));
  }
  if (Overlap(std::as_bytes(input), std::as_bytes(output))) {
    return Work::Completed(
        absl::InvalidArgumentError(Describe(c) + ": input and output must not overlap"));
  }
  if (output.empty()) return Work::Completed(absl::OkStatus());
  return StartReduceScatter(input, output, opts);
}

Work Communicator::AllGatherAsync(ConstBytes input, MutableBytes output,
                                  const CollectiveOptions& opts) {
  const Collective c = Collective::kAllGather;
  TERN_COMM_VALIDATE(CheckTimeout(c, opts));
  if (output.size() != input.size() * static_cast<size_t>(size_)) {
    return Work::Completed(absl::InvalidArgumentError(
        absl::StrCat(Describe(c), ": output has ", output.size(), " bytes but must be group size ",
                     size_, " x input size ", input.size())));
  }
  const bool in_place = input.data() == output.data() + input.size() * rank_;
  if (!in_place && Overlap(input, output)) {
    return Work::Completed(absl::InvalidArgumentError(
        Describe(c) + ": input overlaps output but is not exactly output chunk rank()"));
  }
  if (input.empty()) return Work::Completed(absl::OkStatus());
  return StartAllGather(input, output, opts);
}

Work Communicator::AllToAllAsync(ConstBytes input, MutableBytes output,
                                 const CollectiveOptions& opts) {
  const Collective c = Collective::kAllToAll;
  TERN_COMM_VALIDATE(CheckTimeout(c, opts));
  if (input.size() != output.size() || input.size() % static_cast<size_t>(size_) != 0) {
    return Work::Completed(absl::InvalidArgumentError(
        absl::StrCat(Describe(c), ": input (", input.size(), " bytes) and output (", output.size(),
                     " bytes) must be equal and divisible by group size ", size_)));
  }
  if (Overlap(input, output)) {
    return Work::Completed(
        absl::InvalidArgumentError(Describe(c) + ": input and output must not overlap"));
  }
  if (input.empty()) return Work::Completed(absl::OkStatus());
  return StartAllToAll(input, output, opts);
}

Work Communicator::AllToAllVAsync(ConstBytes input, std::span<const size_t> send_bytes,
                                  MutableBytes output, std::span<const size_t> recv_bytes,
                                  const CollectiveOptions& opts) {
  const Collective c = Collective::kAllToAllV;
  TERN_COMM_VALIDATE(CheckTimeout(c, opts));
  const size_t n = static_cast<size_t>(size_);
  std::vector<std::string> errors;
  if (send_bytes.size() != n) {
    errors.push_back(absl::StrCat("send_bytes has ", send_bytes.size(), " entries, want ", n));
  }
  if (recv_bytes.size() != n) {
    errors.push_back(absl::StrCat("recv_bytes has ", recv_bytes.size(), " entries, want ", n));
  }
  if (errors.empty()) {
    const size_t send_total = std::accumulate(send_bytes.begin(), send_bytes.end(), size_t{0});
    const size_t recv_total = std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0});
    if (send_total != input.size()) {
      errors.push_back(absl::StrCat("send_bytes sum to ", send_total, " but input has ",
                                    input.size(), " bytes"));
    }
    if (recv_total != output.size()) {
      errors.push_back(absl::StrCat("recv_bytes sum to ", recv_total, " but output has ",
                                    output.size(), " bytes"));
    }
    if (send_bytes[rank_] != recv_bytes[rank_]) {
      errors.push_back(absl::StrCat("send_bytes[", rank_, "] = ", send_bytes[rank_],
                                    " != recv_bytes[", rank_, "] = ", recv_bytes[rank_]));
    }
  }
  if (Overlap(input, output)) errors.push_back("input and output must not overlap");
  if (!errors.empty()) {
    return Work::Completed(
        absl::InvalidArgumentError(absl::StrCat(Describe(c), ": ", absl::StrJoin(errors, "; "))));
  }
  return StartAllToAllV(input, send_bytes, output, recv_bytes, opts);
}

Work Communicator::BroadcastAsync(MutableBytes data, int root, const CollectiveOptions& opts) {
  const Collective c = Collective::kBroadcast;
  TERN_COMM_VALIDATE(CheckTimeout(c, opts));
  if (root < 0 || root >= size_) {
    return Work::Completed(absl::InvalidArgumentError(
        absl::StrCat(Describe(c), ": root ", root, " is not in [0, ", size_, ")")));
  }
  if (data.empty()) return Work::Completed(absl::OkStatus());
  return StartBroadcast(data, root, opts);
}

Work Communicator::BarrierAsync(const CollectiveOptions& opts) {
  TERN_COMM_VALIDATE(CheckTimeout(Collective::kBarrier, opts));
  return StartBarrier(opts);
}

#undef TERN_COMM_VALIDATE

void Communicator::SetPeerNodes(std::vector<int> nodes) {
  TERN_CHECK(static_cast<int>(nodes.size()) == size_)
      << name_ << ": " << nodes.size() << " peer nodes for " << size_ << " ranks";
  peer_nodes_ = std::move(nodes);
}

bool Communicator::CrossNode(int peer) const {
  return !peer_nodes_.empty() &&
         peer_nodes_[static_cast<size_t>(peer)] != peer_nodes_[static_cast<size_t>(rank_)];
}

uint64_t Communicator::CrossNodeToRight(uint64_t bytes) const {
  return size_ > 1 && CrossNode((rank_ + 1) % size_) ? bytes : 0;
}

uint64_t Communicator::CrossNodeToEach(uint64_t per_peer) const {
  uint64_t out = 0;
  for (int j = 0; j < size_; ++j) {
    if (j != rank_ && CrossNode(j)) out += per_peer;
  }
  return out;
}

void Communicator::Record(Collective c, uint64_t bytes, uint64_t cross_node) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.cross_node_bytes += cross_node;
  stats_.bytes_sent[static_cast<int>(c)] += bytes;
  stats_.calls[static_cast<int>(c)] += 1;
}

CommStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

CommStats Communicator::TakeStats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  CommStats out = stats_;
  stats_ = CommStats{};
  return out;
}

}  // namespace tern::comm
