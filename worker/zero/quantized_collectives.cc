#include "worker/zero/quantized_collectives.h"

#include <vector>

#include "kernels/cpu/quantize.h"
#include "worker/core/status.h"

namespace tern::zero {
namespace {

uint64_t RoundUp4(uint64_t a) { return (a + 3) / 4 * 4; }

// A packed record: values first, scales after the 4-byte-padded values.
struct Record {
  std::byte* base;
  uint64_t value_bytes;
  int8_t* i8() const { return reinterpret_cast<int8_t*>(base); }
  uint8_t* u8() const { return reinterpret_cast<uint8_t*>(base); }
  float* scales() const { return reinterpret_cast<float*>(base + value_bytes); }
};

}  // namespace

uint64_t Int8RecordBytes(uint64_t chunk, uint64_t qblock) {
  return RoundUp4(chunk) + 4 * (chunk / qblock);
}
uint64_t Int4RecordBytes(uint64_t chunk, uint64_t qblock) {
  return RoundUp4(chunk / 2) + 4 * (chunk / qblock);
}

uint64_t QuantizedAllGatherScratch(int n, uint64_t chunk, uint64_t qblock) {
  return uint64_t(n) * Int8RecordBytes(chunk, qblock);
}

absl::Status QuantizedAllGather(comm::Communicator& dp, const float* in, uint64_t chunk,
                                uint64_t qblock, float* out, std::byte* scratch,
                                const comm::CollectiveOptions& opts,
                                const kernels::QuantizeOps& q) {
  TERN_CHECK(qblock > 0 && chunk % qblock == 0) << chunk << " % " << qblock;
  const int n = dp.size();
  const uint64_t rec = Int8RecordBytes(chunk, qblock), vb = RoundUp4(chunk);
  auto record = [&](int j) { return Record{scratch + uint64_t(j) * rec, vb}; };
  const Record mine = record(dp.rank());
  q.quantize_int8(mine.i8(), mine.scales(), in, chunk, qblock);
  TERN_RETURN_IF_ERROR(dp.AllGather(comm::ConstBytes(mine.base, rec),
                                    comm::MutableBytes(scratch, uint64_t(n) * rec), opts));
  for (int j = 0; j < n; ++j) {
    const Record r = record(j);
    q.dequantize_int8(out + uint64_t(j) * chunk, r.i8(), r.scales(), chunk, qblock);
  }
  return absl::OkStatus();
}

uint64_t QuantizedReduceScatterScratch(int n, int nodes, uint64_t chunk, uint64_t qblock) {
  return 2 * uint64_t(n + nodes) * Int4RecordBytes(chunk, qblock);
}

absl::Status QuantizedReduceScatter(comm::Communicator& intra, comm::Communicator& inter,
                                    const float* in, uint64_t chunk, uint64_t qblock, float* out,
                                    std::byte* scratch, const comm::CollectiveOptions& opts,
                                    const kernels::QuantizeOps& q) {
  TERN_CHECK(qblock > 0 && qblock % 2 == 0 && chunk % qblock == 0) << chunk << " % " << qblock;
  const int D = intra.size(), N = inter.size(), n = D * N;
  const uint64_t rec = Int4RecordBytes(chunk, qblock), vb = RoundUp4(chunk / 2);
  std::byte* send1 = scratch;
  std::byte* recv1 = send1 + uint64_t(n) * rec;
  std::byte* send2 = recv1 + uint64_t(n) * rec;
  std::byte* recv2 = send2 + uint64_t(N) * rec;
  auto at = [&](std::byte* buf, int slot) { return Record{buf + uint64_t(slot) * rec, vb}; };
  // 1. Partition (k, d) to slot d * N + k.
  for (int k = 0; k < N; ++k) {
    for (int d = 0; d < D; ++d) {
      const Record r = at(send1, d * N + k);
      q.quantize_int4(r.u8(), r.scales(), in + uint64_t(k * D + d) * chunk, chunk, qblock);
    }
  }
  // 2. Inside the node: slots [d*N, (d+1)*N) to local rank d.
  TERN_RETURN_IF_ERROR(intra.AllToAll(comm::ConstBytes(send1, uint64_t(n) * rec),
                                      comm::MutableBytes(recv1, uint64_t(n) * rec), opts));
  // 3. recv1 chunk j (from local rank j) holds N records in node order: sum the D copies of each.
  std::vector<const uint8_t*> q_in(size_t(D), nullptr);
  std::vector<const float*> s_in(size_t(D), nullptr);
  for (int k = 0; k < N; ++k) {
    for (int j = 0; j < D; ++j) {
      const Record r = at(recv1, j * N + k);
      q_in[size_t(j)] = r.u8();
      s_in[size_t(j)] = r.scales();
    }
    const Record o = at(send2, k);
    q.dequant_sum_requant_int4(o.u8(), o.scales(), q_in.data(), s_in.data(), D, chunk, qblock);
  }
  // 4. Across nodes: record k to node k.
  TERN_RETURN_IF_ERROR(inter.AllToAll(comm::ConstBytes(send2, uint64_t(N) * rec),
                                      comm::MutableBytes(recv2, uint64_t(N) * rec), opts));
  // 5. Sum of the node sums.
  for (int k = 0; k < N; ++k) {
    const Record r = at(recv2, k);
    if (k == 0) {
      q.dequantize_int4(out, r.u8(), r.scales(), chunk, qblock);
    } else {
      q.dequantize_int4_add(out, r.u8(), r.scales(), chunk, qblock);
    }
  }
  return absl::OkStatus();
}

}  // namespace tern::zero
