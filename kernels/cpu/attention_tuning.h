// Internal tuning knobs of the attention kernels, exposed for the kernel benchmark
// (tests/bench/kernels) only. Model code leaves them at their defaults.
#pragma once

namespace tern::kernels::detail {

enum class AttentionParallel {
  kAuto,   // per-head OpenMP loop with single-threaded BLAS when there is enough work
  kHeads,  // always the per-head OpenMP loop
  kBlas,   // serial loop over heads, multithreaded BLAS inside each GEMM
};

struct AttentionTuning {
  AttentionParallel parallel = AttentionParallel::kAuto;
  int block_rows = 64;     // query rows per block; key columns past the block's last row skipped
  bool blas_gemm = false;  // OpenBLAS for the per-block products instead of detail::SmallGemm
};

// Process-wide; not thread-safe to change while attention runs.
AttentionTuning& MutableAttentionTuning();

}  // namespace tern::kernels::detail
