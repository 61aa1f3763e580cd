// Ulysses' split of the attention heads over the ranks of a sequence-parallel group: by
// key/value-head groups, each kv head with its NH/NKV query heads, in ceil/floor blocks in rank
// order (7 kv heads over 4 ranks: 2, 2, 2, 1). Every rank's rows keep the model's q|k|v format
// with its local counts. Pure; unit-tested on its own.
#pragma once

#include <vector>

#include "absl/status/statusor.h"

namespace tern::sequence {

struct HeadBlock {
  int kv_begin = 0;  // first kv head
  int kv_count = 0;  // kv heads
  int q_begin = 0;   // first query head (kv_begin x NH/NKV)
  int q_count = 0;   // query heads (kv_count x NH/NKV)
};

// One block per rank of a group of `ranks`. INVALID_ARGUMENT when nkv < ranks (some rank would
// have no head; the message names sequence_parallel_size and num_key_value_heads), when nkv
// does not divide nh, or for non-positive counts.
absl::StatusOr<std::vector<HeadBlock>> PlanHeadSplit(int nh, int nkv, int ranks);

}  // namespace tern::sequence
