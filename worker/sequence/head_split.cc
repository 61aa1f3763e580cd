#include "worker/sequence/head_split.h"

#include "absl/strings/str_cat.h"

namespace tern::sequence {

absl::StatusOr<std::vector<HeadBlock>> PlanHeadSplit(int nh, int nkv, int ranks) {
  if (nh < 1 || nkv < 1 || ranks < 1)
    return absl::InvalidArgumentError(absl::StrCat("head split: num_attention_heads ", nh,
                                                   ", num_key_value_heads ", nkv,
                                                   ", sequence_parallel_size ", ranks));
  if (nh % nkv != 0)
    return absl::InvalidArgumentError(absl::StrCat("head split: num_key_value_heads ", nkv,
                                                   " does not divide num_attention_heads ", nh));
  if (nkv < ranks)
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence_parallel_size: ", ranks, " > num_key_value_heads ", nkv,
        " (Ulysses splits the heads by key/value head: every rank needs at least one)"));
  const int group = nh / nkv, base = nkv / ranks, extra = nkv % ranks;
  std::vector<HeadBlock> out(static_cast<size_t>(ranks));
  int kv = 0;
  for (int r = 0; r < ranks; ++r) {
    HeadBlock& b = out[static_cast<size_t>(r)];
    b.kv_begin = kv;
    b.kv_count = base + (r < extra ? 1 : 0);
    b.q_begin = kv * group;
    b.q_count = b.kv_count * group;
    kv += b.kv_count;
  }
  return out;
}

}  // namespace tern::sequence
