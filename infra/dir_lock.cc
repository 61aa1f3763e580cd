#include "infra/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace tern::infra {

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

absl::StatusOr<DirLock> DirLock::Acquire(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open lock file ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder(512, '\0');
    const ssize_t n = ::pread(fd, holder.data(), holder.size(), 0);
    ::close(fd);
    if (err != EWOULDBLOCK) {
      return absl::UnavailableError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    }
    holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
    holder = absl::StrReplaceAll(absl::StripAsciiWhitespace(holder), {{"\n", ", "}});
    // Only printable ASCII from the file reaches the message.
    for (char& c : holder) {
      if (c < 0x20 || c > 0x7e) c = '?';
    }
    return absl::AlreadyExistsError(absl::StrCat(
        what, " is in use by another process (", holder.empty() ? "holder unknown" : holder,
        "; lock file ", path, ") --> hint: stop that process, or give this one its own directory"));
  }
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char started[32];
  std::strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
  const std::string text =
      absl::StrCat("pid ", ::getpid(), "\nhost ", host, "\nstarted ", started, "\n");
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot write lock file ", path, ": ", std::strerror(err)));
  }
  return DirLock(fd);
}

}  // namespace tern::infra
