// Read-only memory mapping of a whole file (the data pipeline's only way to read tokens).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tern::data {

// Owns a PROT_READ, MAP_PRIVATE mapping of a regular file. Move-only. An empty file maps to
// data() == nullptr, size() == 0. Thread-safe for concurrent reads.
class MappedFile {
 public:
  // Errors: NOT_FOUND (no such file, message names `what` and the path), PERMISSION_DENIED,
  // INVALID_ARGUMENT (not a regular file), or the errno-derived code of open/fstat/mmap.
  // `what` describes the file in messages, e.g. "dataset index".
  static absl::StatusOr<MappedFile> Open(const std::string& path, const char* what = "file");

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Reset();

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Status for a failed system call on `path`: NOT_FOUND for ENOENT, else the errno's code.
absl::Status FileError(int err, const char* what, const std::string& path, const char* op);

}  // namespace tern::data
