// DirLock: one process per directory. An exclusive flock(2) on a lock file that holds the
// owner's pid, host and start time; the kernel drops the lock when the process dies, even by
// SIGKILL, so a stale file never blocks a restart.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tern::infra {

class DirLock {
 public:
  DirLock(DirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DirLock& operator=(DirLock&&) = delete;
  ~DirLock();  // unlocks

  // Locks `path` (created if absent) and writes "pid P\nhost H\nstarted T\n" into it.
  // ALREADY_EXISTS naming the holder (pid, host, start time) when another process holds it;
  // UNAVAILABLE when the file cannot be opened. `what` names the directory in messages.
  static absl::StatusOr<DirLock> Acquire(const std::string& path, const std::string& what);

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace tern::infra
