// Bytes one rank sends in each collective, per algorithm (payload only, no transport headers).
// n = group size, B = buffer bytes. These are what Communicator::stats() accumulates.
//
//   AllReduce (Gloo ring: reduce-scatter then all-gather, each in n-1 steps over segments):
//       2 (n-1)/n * B when B splits evenly; exact per-rank value from Gloo's segmentation
//       (segments of <= 1 MiB, >= 2 per rank) is computed by AllReduceRingBytesSent.
//   ReduceScatter (all-to-all + local sum, or ring): (n-1)/n * B_in = (n-1) * B_out.
//   AllGather (Gloo ring): (n-1) * B_in.
//   AllToAll: (n-1)/n * B_in.   AllToAllV: sum of send_bytes[j] for j != rank.
//   Broadcast (Gloo binomial tree rooted at root): B x number of children of this rank in the
//       tree (root: ceil(log2 n); leaves: 0; the sum over ranks is (n-1) * B).
//   Barrier (dissemination): 0 payload bytes (ceil(log2 n) empty messages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tern::comm {

// Gloo's allreduce ring segment limit (AllreduceOptions::kMaxSegmentSize).
inline constexpr uint64_t kGlooMaxSegmentBytes = 1 << 20;

uint64_t AllReduceRingBytesSent(int n, int rank, uint64_t bytes, uint64_t element_size,
                                uint64_t max_segment_bytes = kGlooMaxSegmentBytes);
uint64_t ReduceScatterBytesSent(int n, uint64_t input_bytes);
uint64_t AllGatherBytesSent(int n, uint64_t input_bytes);
uint64_t AllToAllBytesSent(int n, uint64_t input_bytes);
uint64_t AllToAllVBytesSent(int rank, std::span<const size_t> send_bytes);
uint64_t BroadcastBytesSent(int n, int rank, int root, uint64_t bytes);
// Children of `rank` in Gloo's binomial broadcast tree (their ranks; the count).
std::vector<int> BroadcastChildRanks(int n, int rank, int root);
int BroadcastChildren(int n, int rank, int root);

}  // namespace tern::comm
