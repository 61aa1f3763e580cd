#include "worker/engine/reshard_plan.h"

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/engine/checkpointing.h"
#include "worker/zero/zero_state.h"

namespace tern::engine {

std::vector<std::pair<uint64_t, uint64_t>> OwnedRanges(const ParamTable& table, int ranks,
                                                       int zero_stage, int rank) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (zero_stage == 0) {  // replicated: this rank's share of the whole, then all-gathered
    const auto [b, e] = EvenShare(table.total(), ranks, rank);
    if (b < e) out.push_back({b, e});
    return out;
  }
  for (const auto& u : zero::LayoutUnits(table, ranks)) {
    const uint64_t n = u.owned(rank);
    if (n == 0) continue;
    const uint64_t b = u.offset + uint64_t(rank) * u.chunk;
    if (!out.empty() && out.back().second == b) {
      out.back().second = b + n;  // consecutive units: one range
    } else {
      out.push_back({b, b + n});
    }
  }
  return out;
}

absl::StatusOr<std::vector<RankReadPlan>> PlanReshard(const ckpt::Checkpoint& ck, int ranks,
                                                      int zero_stage) {
  if (ranks < 1 || zero_stage < 0 || zero_stage > 3) {
    return absl::InvalidArgumentError(absl::StrCat("reshard to ", ranks, " ranks at ZeRO stage ",
                                                   zero_stage,
                                                   ": ranks must be >= 1 and the stage 0-3"));
  }
  std::vector<RankReadPlan> plans;
  for (int r = 0; r < ranks; ++r) {
    RankReadPlan p;
    p.rank = r;
    p.owned = OwnedRanges(ck.params(), ranks, zero_stage, r);
    for (const char* state : {"master", "exp_avg", "exp_avg_sq"}) {
      for (const auto& [b, e] : p.owned) {
        TERN_ASSIGN_OR_RETURN(auto extents, ck.PlanRead(state, b, e - b));
        for (const auto& x : extents) {
          p.owned_bytes += x.wanted;
          p.read_bytes += x.bytes;
          auto& v = p.extents;
          if (!v.empty() && v.back().file == x.file &&
              v.back().offset + v.back().bytes == x.offset) {
            v.back().bytes += x.bytes;
            v.back().wanted += x.wanted;
          } else {
            v.push_back(x);
          }
        }
      }
    }
    plans.push_back(std::move(p));
  }
  return plans;
}

}  // namespace tern::engine
