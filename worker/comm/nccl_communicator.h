// NcclCommunicator: Communicator over NCCL (the GPU path). Built only with CUDA and NCCL
// (TERN_HAVE_NCCL). Buffers are device memory (a CudaDevice's kDevice tier); the spans only
// carry the pointers and sizes.
//
// One NCCL communicator per group: rank 0 creates the unique id and publishes it in the
// rendezvous Store under "<prefix>/nccl_id"; the others read it (bounded by the timeout). NCCL
// runs non-blocking (ncclConfig blocking = 0) on the communicator's own CUDA stream, which is a
// blocking stream, so each collective sees the kernels queued before it on the legacy default
// stream. Each collective is issued from the communication thread and polled until it completes;
// past its timeout (or on an NCCL error) the communicator calls ncclCommAbort, is broken, and
// every later call fails with UNAVAILABLE, as the Communicator contract says.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/comm.h"
#include "worker/comm/comm_thread.h"
#include "worker/comm/store.h"

namespace tern::comm {

struct NcclOptions {
  std::string kind = "world";
  std::string name;  // defaults to kind
  // Bound on the rendezvous (the id exchange and ncclCommInitRankConfig).
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
  int device = 0;  // CUDA device ordinal of this rank
};

class NcclCommunicator : public Communicator {
 public:
  // UNAVAILABLE without a usable GPU; DEADLINE_EXCEEDED when the peers did not all arrive.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(Store& store,
                                                                  const std::string& prefix,
                                                                  int rank, int size,
                                                                  const NcclOptions& options);
  ~NcclCommunicator() override;  // Abort()

  // Fails queued collectives with CANCELLED and aborts the NCCL communicator (peers blocked on
  // this rank then fail). Idempotent.
  void Abort();
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
  struct Impl;
  NcclCommunicator(int rank, int size, const NcclOptions& options, std::unique_ptr<Impl> impl);
  // Queues `issue` (the NCCL calls, returning an ncclResult_t as int) on the communication
  // thread, waits for it with the timeout, records `bytes` on success.
  Work Submit(Collective c, const CollectiveOptions& opts, uint64_t bytes, uint64_t cross_node,
              std::function<int()> issue);
  absl::Status Run(Collective c, const CollectiveOptions& opts, const std::function<int()>& issue);

  NcclOptions options_;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> broken_{false};
  absl::Status first_error_;  // comm thread only (written before broken_ is set)
  CommThread thread_;         // last member: stopped first
};

}  // namespace tern::comm
