#include "worker/core/duration.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tern {

absl::StatusOr<int64_t> ParseDurationMs(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  const std::string unit(end ? end : "");
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  if (unit == "ms") scale = 1;
  if (unit == "m") scale = 60000;
  if (end == text.c_str() || scale == 0 || !(v >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration \"", text, "\" (use e.g. 5s, 500ms, 2m)"));
  }
  return static_cast<int64_t>(v * scale);
}

std::string FormatDurationMs(int64_t ms) {
  return ms % 1000 == 0 ? absl::StrCat(ms / 1000, "s") : absl::StrCat(ms, "ms");
}

}  // namespace tern
