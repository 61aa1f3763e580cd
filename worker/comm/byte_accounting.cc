#include "worker/comm/byte_accounting.h"

#include <algorithm>

namespace tern::comm {
namespace {

uint64_t RoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b * b; }

// Length of the segment at `offset`, clipped to the buffer (0 if past its end).
uint64_t Clip(uint64_t offset, uint64_t segment, uint64_t total) {
  return offset >= total ? 0 : std::min(segment, total - offset);
}

}  // namespace

uint64_t AllReduceRingBytesSent(int n, int rank, uint64_t bytes, uint64_t element_size,
                                uint64_t max_segment_bytes) {
  if (n <= 1 || bytes == 0) return 0;
  const uint64_t un = static_cast<uint64_t>(n);
  const uint64_t ur = static_cast<uint64_t>(rank);
  // Mirrors gloo/allreduce.cc (ring): segment size, segment count, per-phase sends.
  const uint64_t max_segment = element_size * (max_segment_bytes / element_size);
  const uint64_t segment =
      RoundUp(std::min((bytes + (un * 2 - 1)) / (un * 2), max_segment), element_size);
  const uint64_t num_segments = RoundUp(std::max((bytes + segment - 1) / segment, un * 2), un);
  const uint64_t per_rank = num_segments / un;
  const uint64_t span = num_segments * segment;
  uint64_t sent = 0;
  for (uint64_t i = 0; i < num_segments - per_rank; ++i) {
    sent += Clip((((ur + 1) * per_rank + i) * segment) % span, segment, bytes);  // reduce-scatter
    sent += Clip(((ur * per_rank + i) * segment) % span, segment, bytes);        // all-gather
  }
  return sent;
}

uint64_t ReduceScatterBytesSent(int n, uint64_t input_bytes) {
  return n <= 1 ? 0 : input_bytes / static_cast<uint64_t>(n) * static_cast<uint64_t>(n - 1);
}

uint64_t AllGatherBytesSent(int n, uint64_t input_bytes) {
  return n <= 1 ? 0 : input_bytes * static_cast<uint64_t>(n - 1);
}

uint64_t AllToAllBytesSent(int n, uint64_t input_bytes) {
  return ReduceScatterBytesSent(n, input_bytes);
}

uint64_t AllToAllVBytesSent(int rank, std::span<const size_t> send_bytes) {
  uint64_t sent = 0;
  for (size_t j = 0; j < send_bytes.size(); ++j) {
    if (static_cast<int>(j) != rank) sent += send_bytes[j];
  }
  return sent;
}

int BroadcastChildren(int n, int rank, int root) {
  return static_cast<int>(BroadcastChildRanks(n, rank, root).size());
}

std::vector<int> BroadcastChildRanks(int n, int rank, int root) {
  std::vector<int> children;
  if (n <= 1) return children;
  // Mirrors gloo/broadcast.cc: virtual ranks with root at 0; in round i the ranks whose low i+1
  // bits are clear (except bit i) exchange with vrank ^ (1 << i).
  const uint64_t vsize = static_cast<uint64_t>(n);
  const uint64_t vrank =
      (static_cast<uint64_t>(rank) + vsize - static_cast<uint64_t>(root)) % vsize;
  uint64_t dim = 0;
  while ((uint64_t{1} << dim) < vsize) ++dim;
  uint64_t mask = (uint64_t{1} << dim) - 1;
  for (uint64_t i = 0; i < dim; ++i) {
    mask ^= (uint64_t{1} << i);
    if ((vrank & mask) != 0) continue;
    const uint64_t vpeer = vrank ^ (uint64_t{1} << i);
    if (vpeer >= vsize) continue;
    if ((vrank & (uint64_t{1} << i)) == 0) {
      children.push_back(static_cast<int>((vpeer + static_cast<uint64_t>(root)) % vsize));
    }
  }
  return children;
}

uint64_t BroadcastBytesSent(int n, int rank, int root, uint64_t bytes) {
  return bytes * static_cast<uint64_t>(BroadcastChildren(n, rank, root));
}

}  // namespace tern::comm
