// Communicator: the collective-communication interface the engine and ZeRO program against.
//
// Every collective takes a CollectiveOptions with an explicit timeout and exists in two forms:
// `Op(...)` blocks and returns absl::Status; `OpAsync(...)` returns a Work handle at once and the
// collective runs later on the communicator's own communication thread. Collectives run in the
// order they were issued (FIFO), so issuing the same sequence on every rank of a group keeps the
// ranks matched; issue them from one thread. Buffers passed to an async call must stay alive and
// untouched until its Work::Wait() returns. The blocking form is exactly Async + Wait, so it is
// ordered behind earlier async calls.
//
// Errors (never exceptions): INVALID_ARGUMENT for bad sizes/roots/timeouts (nothing is sent);
// DEADLINE_EXCEEDED when a peer does not take part within the timeout; UNAVAILABLE when a peer
// is lost. After a DEADLINE_EXCEEDED or UNAVAILABLE the communicator is broken: its connections
// are closed (so its peers fail fast too) and every later call fails at once with UNAVAILABLE
// quoting the first error. Recovery means building new communicators (a new rendezvous round).
//
// Byte accounting: each communicator counts the payload bytes THIS rank sends, per collective
// kind, using the per-algorithm formulas in byte_accounting.h (transport headers excluded).
// Counts are added when a collective succeeds; read them with stats() and reset them per step
// with TakeStats(). kind() labels the group ("world", "data_parallel", "sequence_parallel",
// "intra_node", "inter_node"). Every byte is also classified by its peer: once SetPeerNodes says
// which node each group rank is on, bytes sent to a rank on another node are counted in
// CommStats::cross_node_bytes (per-peer destinations of each algorithm, e.g. a ring sends
// everything to rank+1, an all-to-all one chunk to each peer).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/core/timeouts.h"  // kDefaultCollectiveTimeout

namespace tern::comm {

enum class Collective : int {
  kAllReduce = 0,
  kReduceScatter,
  kAllGather,
  kAllToAll,
  kAllToAllV,
  kBroadcast,
  kBarrier,
};
inline constexpr int kNumCollectives = 7;
// "AllReduce", "ReduceScatter", ...
const char* CollectiveName(Collective c);

struct CollectiveOptions {
  // Bound on the collective once it starts on the communication thread (time spent queued
  // behind earlier collectives is not counted). Must be > 0.
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
};

// Payload bytes this rank sent, and completed calls, per collective kind.
struct CommStats {
  std::array<uint64_t, kNumCollectives> bytes_sent{};
  std::array<uint64_t, kNumCollectives> calls{};
  // Of bytes_sent (all kinds), the bytes whose receiver is on another node.
  uint64_t cross_node_bytes = 0;

  uint64_t bytes(Collective c) const { return bytes_sent[static_cast<int>(c)]; }
  uint64_t count(Collective c) const { return calls[static_cast<int>(c)]; }
  uint64_t total_bytes() const;
  uint64_t total_calls() const;
  CommStats& operator+=(const CommStats& other);
};

// Completion state shared by a Work handle and the thread that runs the collective.
class WorkState {
 public:
  void Complete(absl::Status status);
  absl::Status Wait();
  bool done();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::Status status_;
};

// Handle to an async collective. Copyable; all copies refer to the same collective.
class Work {
 public:
  Work() = default;  // empty handle: Wait() returns FAILED_PRECONDITION
  explicit Work(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}
  static Work Completed(absl::Status status);

  // Blocks until the collective finished (bounded by its timeout once started) and returns its
  // status. May be called repeatedly and from any thread.
  absl::Status Wait() const;
  // True once the collective finished (never blocks).
  bool Done() const;
  bool valid() const { return state_ != nullptr; }

 private:
  std::shared_ptr<WorkState> state_;
};

using ConstBytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

class Communicator {
 public:
  Communicator(int rank, int size, std::string kind, std::string name);
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Group label, e.g. "data_parallel"; used to aggregate bytes per kind of link.
  const std::string& kind() const { return kind_; }
  // Group instance for messages, e.g. "data_parallel[0,2]".
  const std::string& name() const { return name_; }

  // Sum over ranks, in place.
  Work AllReduceAsync(std::span<float> data, const CollectiveOptions& opts);
  // input: size() equal chunks (input.size() == size() * output.size()); output receives the
  // sum over ranks of chunk rank().
  Work ReduceScatterAsync(std::span<const float> input, std::span<float> output,
                          const CollectiveOptions& opts);
  // Every rank contributes input (equal sizes); output = concatenation in rank order
  // (output.size() == size() * input.size()). In place is allowed: input may be exactly
  // output's chunk rank(). Any element type: pass std::as_bytes(span).
  Work AllGatherAsync(ConstBytes input, MutableBytes output, const CollectiveOptions& opts);
  // input and output: size() equal chunks; chunk j of input goes to rank j, chunk j of output
  // comes from rank j. input and output must not overlap.
  Work AllToAllAsync(ConstBytes input, MutableBytes output, const CollectiveOptions& opts);
  // Variable splits, in bytes: send_bytes[j] consecutive bytes of input go to rank j;
  // recv_bytes[j] bytes from rank j land consecutively in output (rank order).
  // send_bytes[rank()] must equal recv_bytes[rank()]. input and output must not overlap.
  // The split arrays are copied at call time.
  Work AllToAllVAsync(ConstBytes input, std::span<const size_t> send_bytes, MutableBytes output,
                      std::span<const size_t> recv_bytes, const CollectiveOptions& opts);
  // Copies root's data to every rank, in place.
  Work BroadcastAsync(MutableBytes data, int root, const CollectiveOptions& opts);
  Work BarrierAsync(const CollectiveOptions& opts);

  // Blocking forms: Async + Wait.
  absl::Status AllReduce(std::span<float> data, const CollectiveOptions& opts) {
    return AllReduceAsync(data, opts).Wait();
  }
  absl::Status ReduceScatter(std::span<const float> input, std::span<float> output,
                             const CollectiveOptions& opts) {
    return ReduceScatterAsync(input, output, opts).Wait();
  }
  absl::Status AllGather(ConstBytes input, MutableBytes output, const CollectiveOptions& opts) {
    return AllGatherAsync(input, output, opts).Wait();
  }
  absl::Status AllToAll(ConstBytes input, MutableBytes output, const CollectiveOptions& opts) {
    return AllToAllAsync(input, output, opts).Wait();
  }
  absl::Status AllToAllV(ConstBytes input, std::span<const size_t> send_bytes, MutableBytes output,
                         std::span<const size_t> recv_bytes, const CollectiveOptions& opts) {
    return AllToAllVAsync(input, send_bytes, output, recv_bytes, opts).Wait();
  }
  absl::Status Broadcast(MutableBytes data, int root, const CollectiveOptions& opts) {
    return BroadcastAsync(data, root, opts).Wait();
  }
  absl::Status Barrier(const CollectiveOptions& opts) { return BarrierAsync(opts).Wait(); }

  // Node of every group rank (size() entries), for classifying bytes by peer; call before the
  // first collective. Without it every peer counts as on this node.
  void SetPeerNodes(std::vector<int> nodes);
  // True when group rank `peer` is on another node than this rank.
  bool CrossNode(int peer) const;

  // Byte accounting (thread-safe).
  CommStats stats() const;
  // Returns the counters and resets them to zero (call once per step).
  CommStats TakeStats();

 protected:
  // Implementations: arguments are already validated (sizes consistent, timeout > 0, root in
  // range, non-empty payload where a payload is required). Must never throw. Copy the spans'
  // views, not the data: the caller keeps the buffers alive until Wait returns.
  virtual Work StartAllReduce(std::span<float> data, const CollectiveOptions& opts) = 0;
  virtual Work StartReduceScatter(std::span<const float> input, std::span<float> output,
                                  const CollectiveOptions& opts) = 0;
  virtual Work StartAllGather(ConstBytes input, MutableBytes output,
                              const CollectiveOptions& opts) = 0;
  virtual Work StartAllToAll(ConstBytes input, MutableBytes output,
                             const CollectiveOptions& opts) = 0;
  virtual Work StartAllToAllV(ConstBytes input, std::span<const size_t> send_bytes,
                              MutableBytes output, std::span<const size_t> recv_bytes,
                              const CollectiveOptions& opts) = 0;
  virtual Work StartBroadcast(MutableBytes data, int root, const CollectiveOptions& opts) = 0;
  virtual Work StartBarrier(const CollectiveOptions& opts) = 0;

  // Adds one completed call of `c` that sent `bytes`, `cross_node` of them to other nodes.
  void Record(Collective c, uint64_t bytes, uint64_t cross_node = 0);
  // Bytes that go to other nodes when all `bytes` go to rank+1 (ring algorithms).
  uint64_t CrossNodeToRight(uint64_t bytes) const;
  // Bytes that go to other nodes when `per_peer` bytes go to every other rank (all-to-all).
  uint64_t CrossNodeToEach(uint64_t per_peer) const;
  // "AllReduce on group 'data_parallel[0,2]' (rank 1 of 2)": the prefix of every message.
  std::string Describe(Collective c) const;

 private:
  absl::Status CheckTimeout(Collective c, const CollectiveOptions& opts) const;

  const int rank_;
  const int size_;
  const std::string kind_;
  const std::string name_;
  std::vector<int> peer_nodes_;
  mutable std::mutex stats_mu_;
  CommStats stats_;
};

}  // namespace tern::comm
