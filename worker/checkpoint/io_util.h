// Internal helpers shared by io_engine.cc and file_writer.cc (not part of the public API).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/checkpoint/io_engine.h"

namespace tern::ckpt {

enum class FallbackReason { kNoUring = 0, kNoDirectWrite = 1, kNoDirectRead = 2 };
// spdlog::warn once per process and reason.
void LogFallbackOnce(FallbackReason reason, const std::string& message);

// Full-length pwrite/pread with EINTR retry: bytes done (pread stops at EOF) or -errno.
int64_t PwriteFull(int fd, const uint8_t* buf, uint64_t len, uint64_t offset);
int64_t PreadFull(int fd, uint8_t* buf, uint64_t len, uint64_t offset);

absl::Status ValidateIoOptions(const IoOptions& options);

// open(2) that honours SetIoRefusalsForTesting (EINVAL for O_DIRECT when refused).
int OpenFile(const std::string& path, int flags, int mode = 0);

}  // namespace tern::ckpt
