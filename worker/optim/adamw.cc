#include "worker/optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::optim {

void AdamWStep(const ParamTable& table, const AdamWConfig& cfg, float lr, int64_t step, uint64_t lo,
               uint64_t n, float* params, const float* grads, float* m, float* v,
               const kernels::Ops<float>& ops) {
  const uint64_t hi = lo + n;
  // Walk the parameters overlapping [lo, hi), merging neighbours with the same decay flag.
  const auto& entries = table.entries();
  auto it = std::upper_bound(entries.begin(), entries.end(), lo,
                             [](uint64_t x, const ParamEntry& e) { return x < e.offset; });
  if (it != entries.begin()) --it;
  uint64_t run_lo = lo;
  while (run_lo < hi && it != entries.end()) {
    const bool decay = it->decay;
    uint64_t run_hi = std::min(hi, it->offset + it->numel);
    while (run_hi < hi && std::next(it) != entries.end() && std::next(it)->decay == decay) {
      ++it;
      run_hi = std::min(hi, it->offset + it->numel);
    }
    const uint64_t off = run_lo - lo;
    ops.adamw_update(params + off, grads + off, m + off, v + off, run_hi - run_lo, lr, cfg.beta1,
                     cfg.beta2, cfg.eps, decay ? cfg.weight_decay : 0.0f, step);
    run_lo = run_hi;
    ++it;
  }
}

}  // namespace tern::optim
