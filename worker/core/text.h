// Names and untrusted text: the one policy for job and worker names, and the one escaper for
// anything name-like that a CLI prints or a daemon logs (so a name cannot forge a table row,
// a log line or a terminal escape sequence).
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace tern {

// Job names (spec `name`), worker names and worker hosts: at most this many bytes.
inline constexpr size_t kMaxNameBytes = 128;

// OK when `value` is at most kMaxNameBytes of valid UTF-8 with no control character (C0,
// DEL, C1) and no bidirectional-override character (U+202A..U+202E, U+2066..U+2069); empty
// only when `allow_empty`. Otherwise INVALID_ARGUMENT naming `field` and the rule.
absl::Status CheckName(absl::string_view field, absl::string_view value, bool allow_empty);

// `text` safe to print on one line: printable ASCII and valid, non-control UTF-8 pass
// through; '\\' becomes "\\\\", '\n' "\\n", '\r' "\\r", '\t' "\\t", every other control or
// bidi-override character and invalid byte "\\xNN" per byte. Longer than `max_bytes` input
// is cut there (at a character boundary) and ends with "...".
std::string Printable(absl::string_view text, size_t max_bytes = 256);

}  // namespace tern
