// TrainingState for a single rank: full buffers, no communication.
#include <cstring>

#include "worker/zero/state.h"

namespace tern::zero {
namespace {

class LocalState : public TrainingState {
 public:
  LocalState(const ParamTable& table, const std::vector<float>& init, const ZeroKernels& k)
      : k_(k),
        table_(table),
        params_(init),
        grads_(init.size(), 0.0f),
        m_(init.size(), 0.0f),
        v_(init.size(), 0.0f),
        source_(&table_, params_.data(), grads_.data()) {}

  model::ParamSource<float>& source() override { return source_; }
  void BeginMicroStep(bool) override {}
  absl::StatusOr<double> FinishBackward() override {
    return k_.ops->sum_squares(grads_.data(), grads_.size());
  }
  absl::Status OptimizerStep(const optim::AdamWConfig& cfg, float lr, int64_t step,
                             float grad_mult) override {
    if (grad_mult != 1.0f) k_.ops->scale_inplace(grads_.data(), grad_mult, grads_.size());
    optim::AdamWStep(table_, cfg, lr, step, 0, params_.size(), params_.data(), grads_.data(),
                     m_.data(), v_.data(), *k_.ops);
    std::memset(grads_.data(), 0, grads_.size() * sizeof(float));
    return absl::OkStatus();
  }
  MemoryReport memory() const override {
    return {params_.size() * 4, grads_.size() * 4, (m_.size() + v_.size()) * 4};
  }
  absl::Status GatherParams(std::vector<float>* out) override {
    *out = params_;
    return absl::OkStatus();
  }
  std::vector<StateSegment> owned_segments() override {
    return {{0, params_.size(), params_.data(), m_.data(), v_.data()}};
  }
  bool replicated() const override { return false; }
  absl::Status SyncAfterLoad() override { return absl::OkStatus(); }

 private:
  ZeroKernels k_;
  const ParamTable& table_;
  std::vector<float> params_, grads_, m_, v_;
  model::FlatParamSource<float> source_;
};

}  // namespace

std::unique_ptr<TrainingState> CreateLocalState(const ParamTable& table,
                                                const std::vector<float>& init_params,
                                                const ZeroKernels& kernels) {
  return std::make_unique<LocalState>(table, init_params, kernels);
}

}  // namespace tern::zero
