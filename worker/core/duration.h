// Parses durations written as "5s", "500ms", "2m" or a bare number of seconds.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tern {

absl::StatusOr<int64_t> ParseDurationMs(const std::string& text);

}  // namespace tern
