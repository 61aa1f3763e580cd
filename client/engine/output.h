// Metric printers for `tern train` / `tern rank`: human progress lines or JSON lines.
#pragma once

#include <cstdio>
#include <string>

#include "worker/engine/metrics.h"

namespace tern::cli {

class ConsoleSink : public engine::MetricsSink {
 public:
  ConsoleSink(bool json, int steps_per_print, FILE* out = stdout)
      : json_(json), every_(steps_per_print), out_(out) {}
  void OnStep(const engine::StepMetrics& m) override;
  void OnEval(int64_t step, double val_loss) override;
  void OnSummary(const engine::TrainSummary& s) override;
  void OnEvent(const std::string& kind, const std::string& message) override;

 private:
  bool json_;
  int every_;
  FILE* out_;
};

std::string FormatDuration(double seconds);

}  // namespace tern::cli
