#include "worker/comm/local_communicator.h"

#include <cstring>

namespace tern::comm {

LocalCommunicator::LocalCommunicator(std::string kind, std::string name)
    : Communicator(0, 1, kind, name.empty() ? kind + "[local]" : std::move(name)) {}

Work LocalCommunicator::Copy(Collective c, ConstBytes input, MutableBytes output) {
  if (input.data() != output.data()) std::memmove(output.data(), input.data(), input.size());
  Record(c, 0);
  return Work::Completed(absl::OkStatus());
}

Work LocalCommunicator::StartAllReduce(std::span<float>, const CollectiveOptions&) {
  Record(Collective::kAllReduce, 0);
  return Work::Completed(absl::OkStatus());
}

Work LocalCommunicator::StartReduceScatter(std::span<const float> input, std::span<float> output,
                                           const CollectiveOptions&) {
  return Copy(Collective::kReduceScatter, std::as_bytes(input), std::as_writable_bytes(output));
}

Work LocalCommunicator::StartAllGather(ConstBytes input, MutableBytes output,
                                       const CollectiveOptions&) {
  return Copy(Collective::kAllGather, input, output);
}

Work LocalCommunicator::StartAllToAll(ConstBytes input, MutableBytes output,
                                      const CollectiveOptions&) {
  return Copy(Collective::kAllToAll, input, output);
}

Work LocalCommunicator::StartAllToAllV(ConstBytes input, std::span<const size_t>,
                                       MutableBytes output, std::span<const size_t>,
                                       const CollectiveOptions&) {
  return Copy(Collective::kAllToAllV, input, output);
}

Work LocalCommunicator::StartBroadcast(MutableBytes, int, const CollectiveOptions&) {
  Record(Collective::kBroadcast, 0);
  return Work::Completed(absl::OkStatus());
}

Work LocalCommunicator::StartBarrier(const CollectiveOptions&) {
  Record(Collective::kBarrier, 0);
  return Work::Completed(absl::OkStatus());
}

}  // namespace tern::comm
