// Small POSIX helpers for the checkpoint layer: errno -> Status, durable small-file writes
// (temp + fsync + rename + fsync(dir)), directory fsync, naming, and test-only fault points.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/checkpoint/layout.h"

namespace tern::ckpt {

// A Status for a failed syscall: code from errno (ENOENT -> NOT_FOUND, ENOSPC ->
// RESOURCE_EXHAUSTED, EACCES/EPERM -> PERMISSION_DENIED, else INTERNAL/UNAVAILABLE), message
// "<what> <path>: <strerror>".
absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path);

// fsync() of a directory, so a create/rename inside it is durable.
absl::Status FsyncDir(const std::string& dir);

// Creates `dir` and its parents (existing is fine).
absl::Status MakeDirs(const std::string& dir);

// Creates `dir` (and parents) and proves a file can be created in it (then removes it), so an
// output location fails before any work is done. `what` names it in the message
// ("checkpoint.dir", "--save-final"). FAILED_PRECONDITION naming the path and the reason.
absl::Status ProbeWritableDir(const std::string& dir, const std::string& what);

// Writes `content` to `path` durably and atomically: `path`.tmp, fsync, [fault point
// `fault_before_rename`], rename over `path`, fsync the parent directory.
absl::Status WriteFileAtomic(const std::string& path, const std::string& content,
                             const char* fault_before_rename = nullptr);

// Reads a whole regular file of at most `limit` bytes (a manifest, `latest`); DATA_LOSS for
// anything else (a device, a FIFO, a file too large).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t limit = size_t{1} << 30);

// Test-only crash injection. When the environment variable TERN_CKPT_FAULT (or the value set
// by SetFaultPointForTesting) equals `point`, the process kills itself with SIGKILL right
// here. Points: after_shard_write, before_manifest_rename, after_manifest_rename_before_latest.
// `point@N` fires at the N-th pass only; a `:hang` suffix blocks the calling thread forever
// instead (a node that dies in the middle of a write is then killed by the test).
void MaybeFault(const char* point);
void SetFaultPointForTesting(const std::string& point);

}  // namespace tern::ckpt
