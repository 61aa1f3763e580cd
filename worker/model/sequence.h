// Sequence parallelism as the model sees it: the exchange of attention rows between the ranks
// of a sequence-parallel group. The model never calls a communicator; it calls this interface
// (worker/sequence/ implements it: UlyssesExchange, DeepSpeed-Ulysses' all-to-all).
//
// Each rank of a group of size() ranks holds n tokens of every sequence (all heads); attention
// needs every token of the sequence for some heads. ScatterHeads turns (B, n, W) rows of all
// heads into (B, size() * n, W_local) rows of this rank's heads, the n-token blocks in group rank
// order; GatherHeads is its inverse. n is only the row count of the call: nothing is stored
// about the whole sequence, so a caller may exchange a chunk of its local tokens at a time (FPDT:
// chunk k of every rank gives the P chunks k of the group, in group rank order; with FPDT's
// layout, rank r holding global chunks k * P + r, that is the contiguous span of chunks
// k * P .. k * P + P - 1).
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace tern::model {

// The two row formats exchanged.
enum class SequenceRows {
  // The fused q|k|v rows: [q heads | k heads | v heads] x head size. The local rows have the
  // same format with this rank's counts (local_heads(), local_kv_heads()), so the attention
  // kernels run on them unchanged.
  kQkv,
  // The attention output (and its gradient): query heads x head size.
  kAttnOut,
};

template <typename T>
class SequenceExchange {
 public:
  virtual ~SequenceExchange() = default;
  virtual int size() const = 0;
  virtual int rank() const = 0;
  // Query heads and key/value heads this rank attends over (a block of whole kv-head groups,
  // each kv head with its query heads).
  virtual int local_heads() const = 0;
  virtual int local_kv_heads() const = 0;
  // Sizes the exchange's own buffers for calls of up to B x n rows, so a budget is met up front
  // (the model calls it from Reserve; without it the calls grow them). RESOURCE_EXHAUSTED past
  // the device budget.
  virtual absl::Status Reserve(int B, int n) { return absl::OkStatus(); }
  // in (B, n, W) of all heads -> out (B, size() * n, W_local) of this rank's heads, token block
  // j from group rank j. Every rank of the group calls it with the same B and n.
  virtual absl::Status ScatterHeads(SequenceRows rows, T* out, const T* in, int B, int n) = 0;
  // The inverse: in (B, size() * n, W_local) -> out (B, n, W), this rank's token block of every
  // rank's heads (out is written, not accumulated).
  virtual absl::Status GatherHeads(SequenceRows rows, T* out, const T* in, int B, int n) = 0;
};

}  // namespace tern::model
