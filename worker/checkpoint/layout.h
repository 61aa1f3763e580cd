// Names and alignment of the on-disk checkpoint layout (header-only: the spec pipeline checks
// checkpoint.load and checkpoint.writer.block_size against them without linking the I/O engine).
//
//   <dir>/step-000120/rank-00000.bin ...  each rank's shard bytes, kAlign-aligned segments
//   <dir>/step-000120/manifest.json       written last; the commit point
//   <dir>/latest                          names the newest complete step
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tern::ckpt {

// O_DIRECT buffer/offset alignment and the start of every segment in a shard file.
inline constexpr uint64_t kAlign = 4096;

// Bytes per CRC32C block of a segment (manifest version 2): a read fetches at most one block
// beyond each end of its range. 256 KiB keeps that small next to the 1 MiB I/O requests and the
// manifest short (4 checksums per MiB).
inline constexpr uint64_t kChecksumBlock = 256 << 10;

// "step-000120" (at least 6 digits).
inline std::string StepDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%06lld", static_cast<long long>(step));
  return buf;
}

// "rank-00003.bin".
inline std::string RankFileName(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.bin", rank);
  return buf;
}

// Parses "step-000120" -> 120; -1 when `name` is not a step directory name.
inline int64_t ParseStepDirName(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace tern::ckpt
