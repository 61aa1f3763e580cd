#include "worker/comm/gloo_communicator.h"

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/alltoall.h"
#include "gloo/alltoallv.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/common/error.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"
#include "gloo/transport/unbound_buffer.h"
#include "gloo/types.h"
#include "spdlog/spdlog.h"
#include "worker/comm/byte_accounting.h"
#include "worker/comm/gloo_store.h"
#include "worker/comm/prefix_store.h"

namespace tern::comm {
namespace {

using Clock = std::chrono::steady_clock;
using ReduceFn = void (*)(void*, const void*, const void*, size_t);

bool MentionsTimeout(const std::string& what) {
  std::string lower(what);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return lower.find("timed out") != std::string::npos || lower.find("timeout") != std::string::npos;
}

// Maps what Gloo threw to a Status. `where` names the operation and group.
absl::Status FromException(const std::string& where, std::chrono::milliseconds timeout,
                           const std::string& what, bool io_error) {
  if (MentionsTimeout(what)) {
    return absl::DeadlineExceededError(
        absl::StrCat(where, ": timed out after ", timeout.count(), " ms: ", what,
                     " --> hint: a peer rank is slow, stuck or dead; check its log"));
  }
  if (io_error) {
    return absl::UnavailableError(
        absl::StrCat(where, ": lost connection to a peer: ", what,
                     " --> hint: a peer rank exited or closed its communicator"));
  }
  return absl::InternalError(absl::StrCat(where, ": Gloo invariant violated: ", what));
}

// Runs `fn`, converting any exception into a Status.
template <typename Fn>
absl::Status Guard(const std::string& where, std::chrono::milliseconds timeout, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const gloo::IoException& e) {
    return FromException(where, timeout, e.what(), true);
  } catch (const gloo::EnforceNotMet& e) {
    return FromException(where, timeout, e.what(), false);
  } catch (const std::exception& e) {
    return FromException(where, timeout, e.what(), false);
  } catch (...) {
    return absl::InternalError(where + ": unknown exception");
  }
}

std::chrono::milliseconds Remaining(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

void* Mut(const void* p) { return const_cast<void*>(p); }

// Gloo writes with writev(2), which raises SIGPIPE when a peer has gone away; the default action
// would kill this rank instead of letting the collective fail with UNAVAILABLE. Ignore SIGPIPE
// process-wide (as Python does, which is how Gloo is usually hosted) unless the program
// installed its own handler.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;
      sigemptyset(&ignore.sa_mask);
      ::sigaction(SIGPIPE, &ignore, nullptr);
    }
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    Store& store, const std::string& prefix, int rank, int size, const GlooOptions& options) {
  const std::string name = options.name.empty() ? options.kind : options.name;
  const std::string where = absl::StrCat("rendezvous of group '", name, "' (rank ", rank, " of ",
                                         size, ", store prefix '", prefix, "')");
  std::vector<std::string> errors;
  if (size < 2)
    errors.push_back(
        absl::StrCat("size must be >= 2 (got ", size, "; use LocalCommunicator for one rank)"));
  if (rank < 0 || rank >= size)
    errors.push_back(absl::StrCat("rank ", rank, " not in [0, ", size, ")"));
  if (options.timeout.count() <= 0) errors.push_back("timeout must be > 0");
  if (prefix.empty()) errors.push_back("store prefix must not be empty");
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", absl::StrJoin(errors, "; ")));
  }
  IgnoreSigpipeOnce();
  std::shared_ptr<gloo::rendezvous::Context> context;
  absl::Status st = Guard(where, options.timeout, [&] {
    context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(options.timeout);
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    PrefixStore scoped(prefix, store);
    GlooStoreAdapter adapter(scoped, options.timeout);
    context->connectFullMesh(adapter, device);
  });
  if (!st.ok()) {
    // Release sockets and the device thread now, not at some later point.
    (void)Guard(where, options.timeout, [&] { context.reset(); });
    return st;
  }
  GlooOptions resolved = options;
  resolved.name = name;
  return std::unique_ptr<GlooCommunicator>(
      new GlooCommunicator(rank, size, resolved, std::move(context)));
}

GlooCommunicator::GlooCommunicator(int rank, int size, const GlooOptions& options,
                                   std::shared_ptr<gloo::Context> context)
    : Communicator(rank, size, options.kind, options.name),
      options_(options),
      context_(std::move(context)),
      thread_(options.name) {}

GlooCommunicator::~GlooCommunicator() { Close(); }

void GlooCommunicator::Close() {
  thread_.Shutdown(absl::CancelledError(
      absl::StrCat("communicator '", name(), "' (rank ", rank(), ") was closed")));
  broken_.store(true);
  if (context_) {
    (void)Guard("closing group '" + name() + "'", options_.timeout, [&] { context_.reset(); });
  }
}

Work GlooCommunicator::Submit(Collective c, const CollectiveOptions& opts, uint64_t bytes,
                              uint64_t cross_node, std::function<void(uint32_t tag)> body) {
  return thread_.Enqueue(
      [this, c, opts, bytes, cross_node, body = std::move(body)]() -> absl::Status {
        absl::Status st = RunGuarded(c, opts, body);
        if (st.ok()) Record(c, bytes, cross_node);
        return st;
      });
}

absl::Status GlooCommunicator::RunGuarded(Collective c, const CollectiveOptions& opts,
                                          const std::function<void(uint32_t)>& body) {
  if (broken_.load()) {
    return absl::UnavailableError(absl::StrCat(Describe(c),
                                               ": communicator is broken after an "
                                               "earlier failure: ",
                                               first_error_.message()));
  }
  const uint32_t tag = next_tag_++;
  absl::Status st = Guard(Describe(c), opts.timeout, [&] { body(tag); });
  if (!st.ok()) {
    spdlog::warn("{}", st.ToString());
    first_error_ = st;
    broken_.store(true);
    // Close every connection now: no late message can land in the caller's buffers, and peers
    // blocked on this rank fail fast instead of waiting for their own timeouts.
    (void)Guard(Describe(c), opts.timeout, [&] { context_.reset(); });
  }
  return st;
}

Work GlooCommunicator::StartAllReduce(std::span<float> data, const CollectiveOptions& opts) {
  const uint64_t bytes = AllReduceRingBytesSent(size(), rank(), data.size_bytes(), sizeof(float));
  return Submit(Collective::kAllReduce, opts, bytes, CrossNodeToRight(bytes),
                [this, data, opts](uint32_t tag) {
                  gloo::AllreduceOptions o(context_);
                  o.setOutput(data.data(), data.size());
                  o.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
                  o.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
                  o.setTag(tag);
                  o.setTimeout(opts.timeout);
                  gloo::allreduce(o);
                });
}

Work GlooCommunicator::StartReduceScatter(std::span<const float> input, std::span<float> output,
                                          const CollectiveOptions& opts) {
  const uint64_t bytes = ReduceScatterBytesSent(size(), input.size_bytes());
  const uint64_t cross = options_.reduce_scatter == ReduceScatterAlgorithm::kRing
                             ? CrossNodeToRight(bytes)
                             : CrossNodeToEach(output.size_bytes());
  return Submit(Collective::kReduceScatter, opts, bytes, cross, [=, this](uint32_t tag) {
    if (options_.reduce_scatter == ReduceScatterAlgorithm::kRing) {
      ReduceScatterRing(input, output, tag, opts.timeout);
    } else {
      ReduceScatterAllToAll(input, output, tag, opts.timeout);
    }
  });
}

void GlooCommunicator::ReduceScatterAllToAll(std::span<const float> input, std::span<float> output,
                                             uint32_t tag, std::chrono::milliseconds timeout) {
  scratch_.resize(input.size());
  gloo::AlltoallOptions o(context_);
  o.setInput(static_cast<float*>(Mut(input.data())), input.size());
  o.setOutput(scratch_.data(), scratch_.size());
  o.setTag(tag);
  o.setTimeout(timeout);
  gloo::alltoall(o);
  // scratch_ chunk j = rank j's contribution to this rank's chunk; sum in rank order.
  const size_t chunk = output.size();
  float* out = output.data();
  std::copy(scratch_.begin(), scratch_.begin() + chunk, out);
  for (int j = 1; j < size(); ++j) {
    const float* src = scratch_.data() + static_cast<size_t>(j) * chunk;
    for (size_t i = 0; i < chunk; ++i) out[i] += src[i];
  }
}

// Ring reduce-scatter: in step s (0..n-2) rank r sends its partial sum of chunk (r-s-1) to
// r+1 and receives the partial sum of chunk (r-s-2) from r-1, adding its own input to it. After
// n-1 steps the last chunk received is chunk r, summed over all ranks. Sends (n-1) chunks.
void GlooCommunicator::ReduceScatterRing(std::span<const float> input, std::span<float> output,
                                         uint32_t tag, std::chrono::milliseconds timeout) {
  const int n = size();
  const int r = rank();
  const size_t chunk = output.size();
  const size_t cb = chunk * sizeof(float);
  scratch_.resize(3 * chunk);  // [acc0 | acc1 | recv]
  float* acc = scratch_.data();
  float* recv = scratch_.data() + 2 * chunk;
  auto in_buf = context_->createUnboundBuffer(Mut(input.data()), input.size_bytes());
  auto acc_buf = context_->createUnboundBuffer(acc, 2 * cb);
  auto recv_buf = context_->createUnboundBuffer(recv, cb);
  const uint64_t slot = gloo::Slot::build(gloo::kReduceSlotPrefix, tag);
  const int right = (r + 1) % n;
  const int left = (r + n - 1) % n;
  const auto deadline = Clock::now() + timeout;
  for (int s = 0; s < n - 1; ++s) {
    const size_t send_chunk = static_cast<size_t>((r - s - 1 + 2 * n) % n);
    const size_t recv_chunk = static_cast<size_t>((r - s - 2 + 2 * n) % n);
    recv_buf->recv(left, slot, 0, cb);
    gloo::transport::UnboundBuffer* sender = s == 0 ? in_buf.get() : acc_buf.get();
    sender->send(right, slot, s == 0 ? send_chunk * cb : static_cast<size_t>((s - 1) % 2) * cb, cb);
    if (!recv_buf->waitRecv(Remaining(deadline))) {
      throw gloo::IoException("ring reduce-scatter: receive aborted");
    }
    float* dst = s == n - 2 ? output.data() : acc + static_cast<size_t>(s % 2) * chunk;
    const float* mine = input.data() + recv_chunk * chunk;
    for (size_t i = 0; i < chunk; ++i) dst[i] = mine[i] + recv[i];
    if (!sender->waitSend(Remaining(deadline))) {
      throw gloo::IoException("ring reduce-scatter: send aborted");
    }
  }
}

Work GlooCommunicator::StartAllGather(ConstBytes input, MutableBytes output,
                                      const CollectiveOptions& opts) {
  const uint64_t bytes = AllGatherBytesSent(size(), input.size());
  const bool in_place = input.data() == output.data() + input.size() * rank();
  return Submit(Collective::kAllGather, opts, bytes, CrossNodeToRight(bytes),
                [=, this](uint32_t tag) {
                  gloo::AllgatherOptions o(context_);
                  if (!in_place) o.setInput(static_cast<uint8_t*>(Mut(input.data())), input.size());
                  o.setOutput(reinterpret_cast<uint8_t*>(output.data()), output.size());
                  o.setTag(tag);
                  o.setTimeout(opts.timeout);
                  gloo::allgather(o);
                });
}

Work GlooCommunicator::StartAllToAll(ConstBytes input, MutableBytes output,
                                     const CollectiveOptions& opts) {
  const uint64_t bytes = AllToAllBytesSent(size(), input.size());
  return Submit(Collective::kAllToAll, opts, bytes, CrossNodeToEach(input.size() / size()),
                [=, this](uint32_t tag) {
                  gloo::AlltoallOptions o(context_);
                  o.setInput(static_cast<uint8_t*>(Mut(input.data())), input.size());
                  o.setOutput(reinterpret_cast<uint8_t*>(output.data()), output.size());
                  o.setTag(tag);
                  o.setTimeout(opts.timeout);
                  gloo::alltoall(o);
                });
}

Work GlooCommunicator::StartAllToAllV(ConstBytes input, std::span<const size_t> send_bytes,
                                      MutableBytes output, std::span<const size_t> recv_bytes,
                                      const CollectiveOptions& opts) {
  const uint64_t bytes = AllToAllVBytesSent(rank(), send_bytes);
  uint64_t cross = 0;
  for (int j = 0; j < size(); ++j) {
    if (CrossNode(j)) cross += send_bytes[static_cast<size_t>(j)];
  }
  std::vector<int64_t> sends(send_bytes.begin(), send_bytes.end());
  std::vector<int64_t> recvs(recv_bytes.begin(), recv_bytes.end());
  return Submit(Collective::kAllToAllV, opts, bytes, cross,
                [=, this, sends = std::move(sends), recvs = std::move(recvs)](uint32_t tag) {
                  gloo::AlltoallvOptions o(context_);
                  o.setInput(static_cast<uint8_t*>(Mut(input.data())), sends);
                  o.setOutput(reinterpret_cast<uint8_t*>(output.data()), recvs);
                  o.setTag(tag);
                  o.setTimeout(opts.timeout);
                  gloo::alltoallv(o);
                });
}

Work GlooCommunicator::StartBroadcast(MutableBytes data, int root, const CollectiveOptions& opts) {
  const uint64_t bytes = BroadcastBytesSent(size(), rank(), root, data.size());
  uint64_t cross = 0;
  for (int child : BroadcastChildRanks(size(), rank(), root)) {
    if (CrossNode(child)) cross += data.size();
  }
  return Submit(Collective::kBroadcast, opts, bytes, cross, [=, this](uint32_t tag) {
    gloo::BroadcastOptions o(context_);
    o.setOutput(reinterpret_cast<uint8_t*>(data.data()), data.size());
    o.setRoot(root);
    o.setTag(tag);
    o.setTimeout(opts.timeout);
    gloo::broadcast(o);
  });
}

Work GlooCommunicator::StartBarrier(const CollectiveOptions& opts) {
  return Submit(Collective::kBarrier, opts, 0, 0, [=, this](uint32_t tag) {
    gloo::BarrierOptions o(context_);
    o.setTag(tag);
    o.setTimeout(opts.timeout);
    gloo::barrier(o);
  });
}

}  // namespace tern::comm
