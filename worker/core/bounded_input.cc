#include "worker/core/bounded_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tern {

absl::StatusOr<std::string> ReadBoundedFile(const std::string& path, const std::string& what,
                                            size_t limit) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below refuses it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return absl::NotFoundError(
        absl::StrCat(what, " ", path, ": cannot open (", std::strerror(errno), ")"));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > limit) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", path, ": ", st.st_size, " bytes, more than the ", limit, " it may have"));
  }
  std::string out;
  out.resize(std::min<size_t>(limit + 1, static_cast<size_t>(st.st_size) + 1));
  size_t got = 0;
  while (true) {
    if (got == out.size()) {
      if (out.size() > limit) break;
      out.resize(std::min(limit + 1, out.size() * 2));
    }
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return absl::DataLossError(
          absl::StrCat(what, " ", path, ": read failed (", std::strerror(err), ")"));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > limit)
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, ": more than the ", limit, " bytes it may have"));
  out.resize(got);
  return out;
}

int JsonNestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  return deepest;
}

absl::StatusOr<nlohmann::json> ParseJsonBounded(std::string_view text, const std::string& source,
                                                int max_depth) {
  if (JsonNestingDepth(text) > max_depth)
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": JSON nested deeper than ", max_depth, " levels"));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // The parser quotes what it last read, which may be any bytes: keep the message printable.
    std::string what;
    for (unsigned char c : std::string_view(e.what())) {
      if (c >= 0x20 && c < 0x7f) {
        what.push_back(char(c));
      } else {
        absl::StrAppend(&what, "\\x", absl::Hex(c, absl::kZeroPad2));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(source, ": malformed JSON: ", what));
  }
}

}  // namespace tern
