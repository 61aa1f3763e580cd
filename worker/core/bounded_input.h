// Reading input Tern does not control — spec files, Hugging Face config.json, checkpoint
// manifests, safetensors headers, lines a rank prints, replies from ternd — without letting it
// crash or stall the reader: files must be regular and at most a given size (a device file,
// a FIFO or a huge file is refused before a byte is read), and JSON must nest at most a given
// depth (deep nesting otherwise overflows the stack of recursive consumers). Pure functions,
// any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tern {

// Deepest nesting accepted by ParseJsonBounded unless told otherwise.
inline constexpr int kMaxJsonDepth = 64;

// The whole of `path`, a regular file of at most `limit` bytes. NOT_FOUND when it cannot be
// opened; INVALID_ARGUMENT naming `what` and the path when it is not a regular file or is too
// large (checked before reading and again while reading, for a file that grows).
absl::StatusOr<std::string> ReadBoundedFile(const std::string& path, const std::string& what,
                                            size_t limit);

// Deepest [ / { nesting of JSON text (strings skipped); never recurses.
int JsonNestingDepth(std::string_view text);

// Parses JSON text nested at most `max_depth` deep. INVALID_ARGUMENT naming `source` when the
// text is malformed or too deep. Invalid UTF-8 inside strings is kept as it is (dump with
// error_handler_t::replace to print it).
absl::StatusOr<nlohmann::json> ParseJsonBounded(std::string_view text, const std::string& source,
                                                int max_depth = kMaxJsonDepth);

}  // namespace tern
