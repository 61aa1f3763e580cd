// UlyssesExchange: DeepSpeed-Ulysses' all-to-all over the Communicator of a sequence-parallel
// group, as the model's SequenceExchange (worker/model/sequence.h). The heads are split by
// PlanHeadSplit; an even split is one AllToAll, an uneven one (7 kv heads over 4 ranks) one
// AllToAllV with per-rank byte counts.
#pragma once

#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/comm.h"
#include "worker/core/device.h"
#include "worker/model/sequence.h"
#include "worker/sequence/head_split.h"

namespace tern::sequence {

template <typename T>
class UlyssesExchange : public model::SequenceExchange<T> {
 public:
  // `comm` (not owned) is the sequence-parallel group; nh / nkv / hs are the model's heads. The
  // pack/unpack buffers live on `device` (not owned; null = DefaultDevice()), counted against
  // its budget.
  static absl::StatusOr<std::unique_ptr<UlyssesExchange>> Create(
      comm::Communicator* comm, int nh, int nkv, int hs,
      std::chrono::milliseconds timeout = kDefaultCollectiveTimeout, Device* device = nullptr);

  int size() const override { return comm_->size(); }
  int rank() const override { return comm_->rank(); }
  int local_heads() const override { return blocks_[rank()].q_count; }
  int local_kv_heads() const override { return blocks_[rank()].kv_count; }
  absl::Status ScatterHeads(model::SequenceRows rows, T* out, const T* in, int B, int n) override;
  absl::Status GatherHeads(model::SequenceRows rows, T* out, const T* in, int B, int n) override;
  // Both buffers at the largest any call of B x n rows needs.
  absl::Status Reserve(int B, int n) override;

  const std::vector<HeadBlock>& blocks() const { return blocks_; }
  // Bytes of the pack/unpack buffers (the memory plan counts them).
  uint64_t buffer_bytes() const { return send_.bytes() + recv_.bytes(); }

 private:
  UlyssesExchange(comm::Communicator* comm, std::vector<HeadBlock> blocks, int nh, int nkv, int hs,
                  std::chrono::milliseconds timeout, Device* device);
  // Grows `b` to at least n elements.
  absl::Status Fit(Buffer<T>& b, size_t n, const char* what);
  // Row width of all heads, and of rank r's heads.
  int Width(model::SequenceRows rows) const;
  int Width(model::SequenceRows rows, int r) const;
  // (offset in the full row, length) of the column segments of rank r's heads, in local order.
  std::vector<std::pair<int, int>> Segments(model::SequenceRows rows, int r) const;
  absl::Status Exchange(const std::vector<size_t>& send_elems,
                        const std::vector<size_t>& recv_elems);
  size_t Sum(const std::vector<size_t>& v) const;

  comm::Communicator* comm_;
  std::vector<HeadBlock> blocks_;
  int nh_, nkv_, hs_;
  std::chrono::milliseconds timeout_;
  Device* device_;
  Buffer<T> send_, recv_;
};

extern template class UlyssesExchange<float>;
extern template class UlyssesExchange<double>;

}  // namespace tern::sequence
