#include "worker/core/text.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tern {
namespace {

// Length of the valid UTF-8 sequence at s[i] (1..4) and its code point, or 0 if invalid.
size_t DecodeUtf8(absl::string_view s, size_t i, char32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n = 0;
  char32_t v = 0, min = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b(k) & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;  // overlong, surrogate
  *cp = v;
  return n;
}

bool Unsafe(char32_t cp) {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) ||           // C0, DEL, C1 controls
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);  // bidi overrides
}

}  // namespace

absl::Status CheckName(absl::string_view field_view, absl::string_view value, bool allow_empty) {
  const std::string field(field_view);
  constexpr char kRule[] =
      "names are 1..128 bytes of printable UTF-8 (no control or bidi-override characters)";
  if (value.empty()) {
    if (allow_empty) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(field, ": must not be empty; ", kRule));
  }
  if (value.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", value.size(), " bytes is too long (at most ", kMaxNameBytes, "); ", kRule));
  }
  for (size_t i = 0; i < value.size();) {
    char32_t cp = 0;
    const size_t n = DecodeUtf8(value, i, &cp);
    if (n == 0 || Unsafe(cp)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": ", n == 0 ? "invalid UTF-8" : "a control character", " at byte ",
                       i, " (\"", Printable(value, 64), "\"); ", kRule));
    }
    i += n;
  }
  return absl::OkStatus();
}

std::string Printable(absl::string_view text, size_t max_bytes) {
  std::string out;
  const bool cut = text.size() > max_bytes;
  size_t i = 0;
  while (i < text.size()) {
    char32_t cp = 0;
    const size_t n = DecodeUtf8(text, i, &cp);
    if (cut && i + std::max<size_t>(n, 1) > max_bytes) break;
    if (n == 0 || Unsafe(cp)) {
      const size_t bytes = n == 0 ? 1 : n;
      for (size_t k = 0; k < bytes; ++k) {
        const unsigned char c = static_cast<unsigned char>(text[i + k]);
        switch (c) {
          case '\n':
            out += "\\n";
            break;
          case '\r':
            out += "\\r";
            break;
          case '\t':
            out += "\\t";
            break;
          default:
            absl::StrAppend(&out, absl::StrFormat("\\x%02x", c));
        }
      }
      i += bytes;
      continue;
    }
    if (cp == '\\') {
      out += "\\\\";
    } else {
      out.append(text.data() + i, n);
    }
    i += n;
  }
  if (cut) out += "...";
  return out;
}

}  // namespace tern
