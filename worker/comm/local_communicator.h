// LocalCommunicator: the trivial communicator of a group of one rank (no network, no thread).
#pragma once

#include "worker/comm/comm.h"

namespace tern::comm {

// Every collective completes synchronously: AllReduce/Broadcast/Barrier are no-ops, the others
// copy input to output. Sends no bytes (stats count calls with 0 bytes).
class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(std::string kind, std::string name = "");

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
  Work Copy(Collective c, ConstBytes input, MutableBytes output);
};

}  // namespace tern::comm
