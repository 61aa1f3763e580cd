// Error handling: absl::Status for environmental failures, TERN_CHECK for bugs.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

// Aborts with a message; used by TERN_CHECK. `values` are streamed after the condition.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* cond) {
    stream_ << file << ":" << line << ": TERN_CHECK(" << cond << ") failed ";
  }
  [[noreturn]] ~CheckFailure() {
    std::fprintf(stderr, "%s\n", stream_.str().c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

inline std::string ToStd(absl::string_view s) { return std::string(s.data(), s.size()); }

}  // namespace tern

// Violated invariant (a bug): abort with the values streamed after it.
#define TERN_CHECK(cond) \
  if (cond) {            \
  } else                 \
    ::tern::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define TERN_STATUS_CONCAT_INNER(a, b) a##b
#define TERN_STATUS_CONCAT(a, b) TERN_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define TERN_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status _tern_status = (expr);        \
    if (!_tern_status.ok()) return _tern_status; \
  } while (0)

// `lhs = value of expr` or return its error status.
#define TERN_ASSIGN_OR_RETURN(lhs, expr) \
  TERN_ASSIGN_OR_RETURN_IMPL(TERN_STATUS_CONCAT(_tern_statusor_, __LINE__), lhs, expr)
#define TERN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
