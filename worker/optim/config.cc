#include "worker/optim/config.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::optim {

absl::StatusOr<AdamWConfig> ResolveAdamW(const tern::v1::OptimizerConfig& c) {
  std::vector<std::string> errors;
  const std::string& type = c.type();
  if (!type.empty() && type != "AdamW" && type != "adamw" && type != "Adam" && type != "adam")
    errors.push_back(absl::StrCat("optimizer.type: '", type, "' is not supported (use AdamW)"));
  const auto& p = c.params();
  if ((type == "Adam" || type == "adam") && p.has_adam_w_mode() && !p.adam_w_mode())
    errors.push_back(
        "optimizer.params.adam_w_mode: only decoupled weight decay (true) is supported");
  AdamWConfig cfg;
  if (p.has_lr()) cfg.lr = p.lr();
  if (p.betas_size() != 0 && p.betas_size() != 2)
    errors.push_back(
        absl::StrCat("optimizer.params.betas: expected 2 values, got ", p.betas_size()));
  if (p.betas_size() == 2) {
    cfg.beta1 = p.betas(0);
    cfg.beta2 = p.betas(1);
  }
  if (p.has_eps()) cfg.eps = p.eps();
  if (p.has_weight_decay()) cfg.weight_decay = p.weight_decay();
  if (!(cfg.lr >= 0)) errors.push_back("optimizer.params.lr: must be >= 0");
  if (!(cfg.beta1 >= 0 && cfg.beta1 < 1) || !(cfg.beta2 >= 0 && cfg.beta2 < 1))
    errors.push_back("optimizer.params.betas: each must be in [0, 1)");
  if (!(cfg.eps > 0)) errors.push_back("optimizer.params.eps: must be > 0");
  if (!(cfg.weight_decay >= 0)) errors.push_back("optimizer.params.weight_decay: must be >= 0");
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return cfg;
}

absl::StatusOr<LrSchedule> LrSchedule::Create(const tern::v1::SchedulerConfig& c, float base_lr,
                                              int64_t train_iters) {
  LrSchedule s;
  s.type_ = c.type();
  s.base_lr_ = base_lr;
  const auto& p = c.params();
  std::vector<std::string> errors;
  if (!s.type_.empty() && s.type_ != "WarmupLR" && s.type_ != "WarmupDecayLR" &&
      s.type_ != "WarmupCosineLR")
    errors.push_back(absl::StrCat("scheduler.type: '", s.type_,
                                  "' is not one of WarmupLR, WarmupDecayLR, WarmupCosineLR"));
  s.min_lr_ = p.has_warmup_min_lr() ? p.warmup_min_lr() : 0.0f;
  s.max_lr_ = p.has_warmup_max_lr() ? p.warmup_max_lr() : base_lr;
  s.warmup_ = p.has_warmup_num_steps() ? p.warmup_num_steps() : 1000;
  s.total_ = p.has_total_num_steps() ? p.total_num_steps() : train_iters;
  s.warmup_min_ratio_ = p.has_warmup_min_ratio() ? p.warmup_min_ratio() : 0.0f;
  s.cos_min_ratio_ = p.has_cos_min_ratio() ? p.cos_min_ratio() : 1e-4f;
  if (p.warmup_type().empty() || p.warmup_type() == "log") {
    s.log_warmup_ = true;
  } else if (p.warmup_type() == "linear") {
    s.log_warmup_ = false;
  } else {
    errors.push_back(
        absl::StrCat("scheduler.params.warmup_type: '", p.warmup_type(), "' is not log or linear"));
  }
  if (s.warmup_ < 0) errors.push_back("scheduler.params.warmup_num_steps: must be >= 0");
  if ((s.type_ == "WarmupDecayLR" || s.type_ == "WarmupCosineLR") && s.total_ < s.warmup_)
    errors.push_back(absl::StrCat("scheduler.params.total_num_steps: ", s.total_,
                                  " is less than warmup_num_steps ", s.warmup_));
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return s;
}

float LrSchedule::Gamma(int64_t step) const {  // warmup progress in [0, 1]
  if (step >= warmup_) return 1.0f;
  if (log_warmup_)
    return warmup_ <= 1 ? 1.0f : std::log(float(step + 1)) / std::log(float(warmup_));
  return float(step) / float(warmup_);
}

float LrSchedule::At(int64_t step) const {
  if (type_.empty()) return base_lr_;
  if (type_ == "WarmupLR") return min_lr_ + (max_lr_ - min_lr_) * Gamma(step);
  if (type_ == "WarmupDecayLR") {
    if (step < warmup_) return min_lr_ + (max_lr_ - min_lr_) * Gamma(step);
    const float frac =
        total_ > warmup_ ? std::max(0.0f, float(total_ - step) / float(total_ - warmup_)) : 0.0f;
    return min_lr_ + (max_lr_ - min_lr_) * frac;
  }
  // WarmupCosineLR: ratios of the optimizer's lr.
  if (step < warmup_) return base_lr_ * (warmup_min_ratio_ + (1 - warmup_min_ratio_) * Gamma(step));
  const float progress =
      total_ > warmup_ ? std::min(1.0f, float(step - warmup_) / float(total_ - warmup_)) : 1.0f;
  const float ratio =
      cos_min_ratio_ + (1 - cos_min_ratio_) * 0.5f * (1 + std::cos(float(M_PI) * progress));
  return base_lr_ * ratio;
}

}  // namespace tern::optim
