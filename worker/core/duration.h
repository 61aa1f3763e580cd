// Durations on the command line: "5s", "500ms", "2m" or a bare number of seconds.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tern {

absl::StatusOr<int64_t> ParseDurationMs(const std::string& text);

// The inverse, for flag defaults: "15s" for 15000, "500ms" for 500.
std::string FormatDurationMs(int64_t ms);

}  // namespace tern
