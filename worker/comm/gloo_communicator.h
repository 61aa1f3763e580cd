// GlooCommunicator: Communicator over Gloo's TCP transport (the CPU path).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/comm.h"
#include "worker/comm/comm_thread.h"
#include "worker/comm/store.h"

namespace gloo {
class Context;
namespace transport {
class Device;
}
}  // namespace gloo

namespace tern::comm {

// Measured with tern-bench-comm (ranks as threads, loopback, 2 shared cores under load): the two
// are within run-to-run noise at 16-64 MiB on 2 and 4 ranks (0.4-1.7 GB/s); all-to-all is a
// little faster at 1 MiB. Ring is the default because it needs 3 chunks of scratch instead of a
// full copy of the input.
enum class ReduceScatterAlgorithm {
  kAllToAll,  // Gloo alltoall into a scratch buffer, then a local sum of the n chunks
  kRing,      // n-1 ring steps of send/recv with the sum fused in (chunk-sized scratch)
};

struct GlooOptions {
  // Group label for byte accounting ("world", "data_parallel", ...).
  std::string kind = "world";
  // Group instance name for messages; defaults to kind.
  std::string name;
  // Bound on the rendezvous (store waits and connection setup).
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
  // Address this rank listens on for its peers. Loopback by default.
  std::string hostname = "127.0.0.1";
  ReduceScatterAlgorithm reduce_scatter = ReduceScatterAlgorithm::kRing;
};

class GlooCommunicator : public Communicator {
 public:
  // Rendezvous of `size` ranks over `store`, with every key under "<prefix>/": each rank
  // publishes its address and connects to every peer (full mesh). Blocks until all ranks
  // arrived; DEADLINE_EXCEEDED (naming the group) if some did not within options.timeout.
  // The first call sets SIGPIPE to SIG_IGN process-wide if it still has the default action
  // (Gloo's writev to a dead peer would otherwise kill the process).
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(Store& store,
                                                                  const std::string& prefix,
                                                                  int rank, int size,
                                                                  const GlooOptions& options);
  ~GlooCommunicator() override;  // Close()

  // Finishes the running collective, fails queued ones with CANCELLED, and closes all
  // connections (peers blocked on this rank then fail with UNAVAILABLE). Idempotent.
  void Close();
  // True once a collective failed (or after Close); later calls fail fast.
  bool broken() const { return broken_.load(); }

 protected:
  Work StartAllReduce(std::span<float> data, const CollectiveOptions& opts) override;
  Work StartReduceScatter(std::span<const float> input, std::span<float> output,
                          const CollectiveOptions& opts) override;
  Work StartAllGather(ConstBytes input, MutableBytes output,
                      const CollectiveOptions& opts) override;
  Work StartAllToAll(ConstBytes input, MutableBytes output, const CollectiveOptions& opts) override;
  Work StartAllToAllV(ConstBytes input, std::span<const size_t> send_bytes, MutableBytes output,
                      std::span<const size_t> recv_bytes, const CollectiveOptions& opts) override;
  Work StartBroadcast(MutableBytes data, int root, const CollectiveOptions& opts) override;
  Work StartBarrier(const CollectiveOptions& opts) override;

 private:
  GlooCommunicator(int rank, int size, const GlooOptions& options,
                   std::shared_ptr<gloo::Context> context);
  // Runs `body(tag)` on the communication thread: fails fast when broken, turns every
  // exception into a Status naming the collective and group, records `bytes` on success and
  // marks the communicator broken on failure.
  Work Submit(Collective c, const CollectiveOptions& opts, uint64_t bytes, uint64_t cross_node,
              std::function<void(uint32_t tag)> body);
  absl::Status RunGuarded(Collective c, const CollectiveOptions& opts,
                          const std::function<void(uint32_t)>& body);
  void ReduceScatterRing(std::span<const float> input, std::span<float> output, uint32_t tag,
                         std::chrono::milliseconds timeout);
  void ReduceScatterAllToAll(std::span<const float> input, std::span<float> output, uint32_t tag,
                             std::chrono::milliseconds timeout);

  GlooOptions options_;
  std::shared_ptr<gloo::Context> context_;  // comm thread only; reset when broken or closed
  uint32_t next_tag_ = 1;                   // comm thread only
  std::vector<float> scratch_;              // comm thread only
  std::atomic<bool> broken_{false};
  absl::Status first_error_;  // comm thread only (written before broken_ is set)
  CommThread thread_;         // last member: stopped first
};

}  // namespace tern::comm
