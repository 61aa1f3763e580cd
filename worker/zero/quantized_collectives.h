// ZeRO++'s quantized collectives (blocking; ZeroState runs them on its own ordered thread).
//
// A "record" is one rank's chunk of c elements packed for the wire: the int8 values (qwZ) or
// int4 pairs (qgZ), padded to 4 bytes, followed by one fp32 scale per block of `qblock`
// elements (kernels/cpu/quantize.h; qblock divides c, and c is even for int4).
//
// qwZ (QuantizedAllGather): each rank quantizes its chunk to int8 in place in the packed
// buffer, one all-gather moves the n records, each rank dequantizes all n (its own too, so
// every rank computes with the same weights).
//
// qgZ (QuantizedReduceScatter), for n = N nodes x D ranks numbered node-major (data-parallel
// rank p = node k * D + local d); the input holds n partitions of c elements, partition p
// being the one reduce-scatter gives rank p:
//   1. int4-quantize every partition, partition (k, d) into slot d * N + k, so slots
//      [d*N, (d+1)*N) are the partitions of local rank d on every node;
//   2. all-to-all inside the node (intra, D ranks): local rank d receives, from each node peer,
//      the N partitions of local index d;
//   3. per destination node k: dequantize the D copies, sum, requantize (one fused kernel);
//   4. all-to-all across nodes (inter, N ranks with the same local index): node k receives
//      this node's sum of its partition;
//   5. dequantize the N node sums and add them: out = the plain sum over all n ranks of this
//      rank's partition, within the int4 bound (half a step of every block scale involved).
// Cross-node traffic is N - 1 int4 records per rank instead of (n - 1) fp32 chunks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/comm/comm.h"

namespace tern::zero {

uint64_t Int8RecordBytes(uint64_t chunk, uint64_t qblock);
uint64_t Int4RecordBytes(uint64_t chunk, uint64_t qblock);

// Scratch bytes QuantizedAllGather needs: n int8 records.
uint64_t QuantizedAllGatherScratch(int n, uint64_t chunk, uint64_t qblock);
// out (n * chunk) = every rank's `in` (chunk), through int8. scratch: QuantizedAllGatherScratch.
absl::Status QuantizedAllGather(comm::Communicator& dp, const float* in, uint64_t chunk,
                                uint64_t qblock, float* out, std::byte* scratch,
                                const comm::CollectiveOptions& opts,
                                const kernels::QuantizeOps& q = kernels::CpuQuantizeOps());

// Scratch bytes QuantizedReduceScatter needs: 2 (n + N) int4 records.
uint64_t QuantizedReduceScatterScratch(int n, int nodes, uint64_t chunk, uint64_t qblock);
// out (chunk) = sum over all intra.size() * inter.size() ranks of partition p of `in`
// (n * chunk), p = inter.rank() * intra.size() + intra.rank(). scratch:
// QuantizedReduceScatterScratch.
absl::Status QuantizedReduceScatter(comm::Communicator& intra, comm::Communicator& inter,
                                    const float* in, uint64_t chunk, uint64_t qblock, float* out,
                                    std::byte* scratch, const comm::CollectiveOptions& opts,
                                    const kernels::QuantizeOps& q = kernels::CpuQuantizeOps());

}  // namespace tern::zero
