// Structured metrics of a run: per step, per evaluation, and the final summary.
#pragma once

#include <cstdint>
#include <string>

namespace tern::engine {

struct StepMetrics {
  int64_t step = 0;  // 1-based optimizer step just finished
  int64_t total_steps = 0;
  double loss = 0;  // mean training loss over the global batch
  float lr = 0;
  double grad_norm = 0;     // before clipping
  double tokens_per_s = 0;  // global tokens / step wall time
  double step_ms = 0;
  double forward_ms = 0, backward_ms = 0, comm_ms = 0, optimizer_ms = 0, checkpoint_ms = 0;
  // Bytes every rank of the job sent this step, to peers on its own node / on other nodes.
  uint64_t bytes_intra_node = 0, bytes_inter_node = 0;
  double eta_s = 0;
};

struct TrainSummary {
  double tokens_per_s = 0;  // global tokens per step / median step time
  double step_ms_median = 0;
  double mfu = 0;  // model FLOP/s / measured sgemm peak of all ranks' threads
  double peak_rss_mib = 0;
  uint64_t params = 0;
  double final_loss = 0;
  double val_loss = -1;  // -1 when no validation set
  int64_t steps = 0;
  double sgemm_peak_gflops = 0;  // of all ranks
  std::string peak_source;       // "measured", "cached", "flag" or "env" (engine/sgemm_peak.h)
  std::string peak_cache;        // the peak cache file read or written; empty if none
  double model_gflops = 0;       // achieved model GFLOP/s
  uint64_t param_bytes = 0, grad_bytes = 0, optim_bytes = 0;  // this rank's state
  uint64_t gather_pool_bytes = 0;                             // its ZeRO working pool
  // Peaks of this rank's device and host tiers (engine/Device accounting: the training state,
  // activations; FPDT's store in the host tier).
  uint64_t device_peak_bytes = 0, host_peak_bytes = 0;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void OnStep(const StepMetrics& m) = 0;
  virtual void OnEval(int64_t step, double val_loss) = 0;
  virtual void OnSummary(const TrainSummary& s) = 0;
  virtual void OnEvent(const std::string& kind, const std::string& message) {}
};

}  // namespace tern::engine
