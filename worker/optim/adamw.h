// AdamW on (a shard of) the flat fp32 buffers (settings and LR schedules: config.h).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "worker/core/param_table.h"
#include "worker/optim/config.h"

namespace tern::optim {

// Applies one AdamW step to the elements [lo, lo + n) of the global flat space; `params`,
// `grads`, `m`, `v` point at element `lo`. Weight decay follows each parameter's `decay` flag.
void AdamWStep(const ParamTable& table, const AdamWConfig& cfg, float lr, int64_t step, uint64_t lo,
               uint64_t n, float* params, const float* grads, float* m, float* v,
               const kernels::Ops<float>& ops = kernels::CpuOps<float>());

}  // namespace tern::optim
