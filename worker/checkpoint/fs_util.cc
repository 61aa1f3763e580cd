#include "worker/checkpoint/fs_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace tern::ckpt {
namespace {

std::mutex g_fault_mu;
std::string g_fault_point;  // guarded by g_fault_mu

absl::Status WriteAll(int fd, const std::string& content, const std::string& path) {
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "write", path);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path) {
  std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    case EIO:
      return absl::DataLossError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open directory", dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus(err, "fsync directory", dir);
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoStatus(ec.value(), "create directory", dir);
  return absl::OkStatus();
}

absl::Status ProbeWritableDir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  const std::filesystem::path p(dir);
  if (std::filesystem::exists(p, ec) && !std::filesystem::is_directory(p, ec))
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", dir, ": exists and is not a directory"));
  std::filesystem::create_directories(p, ec);
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", dir, ": cannot create: ", ec.message()));
  const std::string probe = (p / ".tern-write-probe").string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", dir, ": cannot write: ", std::strerror(errno)));
  ::close(fd);
  ::unlink(probe.c_str());
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& content,
                             const char* fault_before_rename) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create", tmp);
  absl::Status st = WriteAll(fd, content, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoStatus(errno, "fsync", tmp);
  ::close(fd);
  if (!st.ok()) return st;
  if (fault_before_rename != nullptr) MaybeFault(fault_before_rename);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus(errno, "rename to", path);
  return FsyncDir(std::filesystem::path(path).parent_path().string());
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t limit) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || uint64_t(st.st_size) > limit) {
    ::close(fd);
    return absl::DataLossError(
        absl::StrCat(path, ": not a regular file of at most ", limit, " bytes"));
  }
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoStatus(err, "read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) {
      ::close(fd);
      return absl::DataLossError(absl::StrCat(path, ": more than ", limit, " bytes"));
    }
  }
  ::close(fd);
  return out;
}

void SetFaultPointForTesting(const std::string& point) {
  std::lock_guard<std::mutex> lock(g_fault_mu);
  g_fault_point = point;
}

void MaybeFault(const char* point) {
  std::string active;
  {
    std::lock_guard<std::mutex> lock(g_fault_mu);
    active = g_fault_point;
  }
  if (active.empty()) {
    const char* env = std::getenv("TERN_CKPT_FAULT");
    if (env != nullptr) active = env;
  }
  if (active.empty()) return;
  // POINT[@N][:hang]: at the N-th pass (default the first); hang instead of dying.
  bool hang = false;
  if (active.size() > 5 && active.compare(active.size() - 5, 5, ":hang") == 0) {
    hang = true;
    active.resize(active.size() - 5);
  }
  int nth = 1;
  if (const size_t at = active.find('@'); at != std::string::npos) {
    nth = std::max(1, std::atoi(active.c_str() + at + 1));
    active.resize(at);
  }
  if (active != point) return;
  static std::atomic<int> passes{0};
  if (++passes != nth) return;
  std::fprintf(stderr, "TERN_CKPT_FAULT=%s: %s process %d\n", point, hang ? "hanging" : "killing",
               ::getpid());
  std::fflush(stderr);
  if (hang) {
    for (;;) ::pause();
  }
  ::raise(SIGKILL);
  ::_exit(137);
}

}  // namespace tern::ckpt
