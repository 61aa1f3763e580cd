// The optimizer and learning-rate schedule settings of a job spec (DeepSpeed's `optimizer` and
// `scheduler` sections), resolved and validated. No kernels: the spec pipeline links this.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"

namespace tern::optim {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;
};

absl::StatusOr<AdamWConfig> ResolveAdamW(const tern::v1::OptimizerConfig& config);

// DeepSpeed's WarmupLR, WarmupDecayLR, WarmupCosineLR (or a constant lr when type is empty).
class LrSchedule {
 public:
  static absl::StatusOr<LrSchedule> Create(const tern::v1::SchedulerConfig& config, float base_lr,
                                           int64_t train_iters);
  // Learning rate for 0-based optimizer step `step`.
  float At(int64_t step) const;
  const std::string& type() const { return type_; }

 private:
  float Gamma(int64_t step) const;
  std::string type_;
  float base_lr_ = 0, min_lr_ = 0, max_lr_ = 0, warmup_min_ratio_ = 0, cos_min_ratio_ = 0;
  int64_t warmup_ = 0, total_ = 0;
  bool log_warmup_ = true;
};

}  // namespace tern::optim
