// Metric printers for `tern train` / `tern rank`: JSON lines (the rank output protocol), or
// the human lines worker/core/run_text.h makes of them.
#pragma once

#include <cstdio>
#include <string>

#include "nlohmann/json.hpp"
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
  // Prints a line a rank wrote with --json: as it is with --json, else its human form (plain
  // text as it is; a step line not due under steps_per_print not at all).
  void Relay(const std::string& line);

 private:
  void Print(const nlohmann::json& j);

  bool json_;
  int every_;
  FILE* out_;
};

}  // namespace tern::cli
