// PrometheusText: writes the Prometheus text exposition format (version 0.0.4) that
// ternd's and tern-worker's /metrics endpoints serve: per metric family a "# HELP" and a
// "# TYPE" line, then its samples `name{label="value",...} value`. Names are checked,
// label values and help text escaped as the format requires. Not thread-safe: build one
// per scrape.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tern::infra {

using PromLabels = std::vector<std::pair<std::string, std::string>>;

class PrometheusText {
 public:
  // The content type to serve the text with.
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // Starts a family. `type` is "gauge", "counter" (name ending in _total) or "untyped".
  // A family may have no samples. Starting a family twice is a bug (TERN_CHECK).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  // A sample of the current family. NaN and infinities are written as NaN / +Inf / -Inf.
  void Sample(double value, const PromLabels& labels = {});
  // Family() + Sample() for a family with one unlabelled sample.
  void Single(std::string_view name, std::string_view type, std::string_view help, double value);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

  // Helpers, exposed for tests.
  static bool ValidName(std::string_view name);             // [a-zA-Z_:][a-zA-Z0-9_:]*
  static bool ValidLabelName(std::string_view name);        // [a-zA-Z_][a-zA-Z0-9_]*
  static std::string EscapeLabelValue(std::string_view v);  // \ " and newline
  static std::string FormatValue(double v);

 private:
  std::string out_;
  std::string family_;
  std::vector<std::string> families_;
};

}  // namespace tern::infra
