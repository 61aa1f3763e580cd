// ZeRO settings: DeepSpeed's zero_optimization keys (sizes in elements), resolved from the job
// spec by the spec pipeline (worker/spec). Header-only; needs only worker/core.
#pragma once

#include <chrono>
#include <cstdint>

#include "worker/core/timeouts.h"

namespace tern::zero {

struct ZeroOptions {
  int stage = 0;                            // 0, 1, 2, 3
  bool overlap_comm = true;                 // reductions/gathers overlap compute
  int64_t reduce_bucket_size = 500000000;   // stage 0: elements per all-reduce bucket
  int64_t prefetch_bucket_size = 50000000;  // stage 3: elements gathered ahead
  int64_t persistence_threshold = 100000;   // stage 3: smaller units stay replicated
  // ZeRO++ (stage 3 only; the spec pipeline refuses them elsewhere).
  bool quantized_weights = false;    // qwZ: forward all-gathers carry int8 blocks + fp32 scales
  bool quantized_gradients = false;  // qgZ: int4 two-hop all-to-all in place of reduce-scatter
  int64_t quant_block = 4096;        // qwZ: elements per weight block (one fp32 scale each)
  // qgZ: elements per gradient block; divides quant_block. Small, like DeepSpeed's groups of
  // about one row: int4 keeps 15 levels, so a block's error follows its largest gradient.
  int64_t grad_quant_block = 256;
  int hpz_partition_size = 1;  // hpZ: > 1 = ranks per node; backward gathers in the node
  // Bound on every collective; the runner sets it from the job's collective timeout.
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
};

}  // namespace tern::zero
