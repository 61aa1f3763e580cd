// FastPersist-style file I/O: io_uring with O_DIRECT, 4 KiB-aligned block buffers that are
// allocated once, pre-touched and reused, `queue_depth` requests in flight, and a staging copy
// of the next block overlapping the blocks already in flight. Where io_uring is refused
// (ENOSYS/EPERM) or O_DIRECT is refused (EINVAL on tmpfs) it falls back to pwrite/pread and
// says so in one log line per process and reason.
//
// Threading: an IoEngine and the FileWriter/FileReader using it belong to one thread at a time;
// use one engine per writer thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/checkpoint/layout.h"

namespace tern::ckpt {

inline constexpr uint64_t AlignUp(uint64_t x, uint64_t a = kAlign) { return (x + a - 1) / a * a; }
inline constexpr uint64_t AlignDown(uint64_t x, uint64_t a = kAlign) { return x / a * a; }

struct IoOptions {
  uint64_t block_size = 1 << 20;  // bytes per request; a multiple of 4 KiB, default 1 MiB
  int queue_depth = 8;            // requests in flight, default 8
  bool use_uring = true;          // false: synchronous pwrite/pread
  bool use_direct = true;         // false: page cache (buffered pwrite/pread)
};

// How a file is actually being accessed (after any fallback).
enum class IoPath { kUringDirect, kSyncDirect, kSyncBuffered };
const char* IoPathName(IoPath path);  // "io_uring+O_DIRECT", "pwrite+O_DIRECT", "pwrite"

// The ring and the reusable aligned block buffers ("slots": queue_depth + 1 of block_size).
class IoEngine {
 public:
  static absl::StatusOr<std::unique_ptr<IoEngine>> Create(const IoOptions& options = {});
  ~IoEngine();
  IoEngine(const IoEngine&) = delete;
  IoEngine& operator=(const IoEngine&) = delete;

  const IoOptions& options() const { return options_; }
  bool uring() const { return uring_; }
  int num_slots() const { return static_cast<int>(slots_.size()); }
  uint8_t* slot(int i) const { return slots_[i]; }

  // One request; `slot` is the buffer's slot index or -1 for caller memory.
  struct Request {
    int fd = -1;
    bool write = true;
    uint8_t* buf = nullptr;
    uint64_t len = 0;
    uint64_t offset = 0;
    int slot = -1;
    uint64_t tag = 0;  // returned with the completion
  };
  struct Completion {
    uint64_t tag = 0;
    int64_t result = 0;  // bytes transferred (writes: always len) or -errno
    Request request;     // the request this completes
  };
  // Queues `r` (io_uring) or performs it now (sync mode). Fails only if it cannot be queued.
  absl::Status Submit(const Request& r);
  // Waits for one completion. Short writes are completed with pwrite before returning.
  absl::StatusOr<Completion> WaitOne();
  int in_flight() const { return in_flight_; }
  int max_in_flight() const { return options_.queue_depth; }

  // Bytes read from files through this engine (completed reads, including the O_DIRECT
  // alignment around a requested range, and the buffered fallback): the I/O counter the
  // exact-read tests check.
  uint64_t bytes_read() const { return bytes_read_; }
  void AddBytesRead(uint64_t n) { bytes_read_ += n; }

 private:
  explicit IoEngine(const IoOptions& options) : options_(options) {}
  absl::Status Init();

  IoOptions options_;
  bool uring_ = false;
  bool fixed_buffers_ = false;
  void* ring_ = nullptr;  // struct io_uring*, kept out of this header
  std::vector<uint8_t*> slots_;
  std::vector<Request> pending_;       // by request id (uring mode)
  std::vector<int> free_ids_;          // request ids not in flight
  std::vector<Completion> done_sync_;  // sync mode: completions not yet returned
  int in_flight_ = 0;
  uint64_t bytes_read_ = 0;
};

// Result of one FileWriter::Append.
struct AppendResult {
  uint64_t file_offset = 0;         // where the segment starts; a multiple of 4 KiB
  std::vector<uint32_t> piece_crc;  // CRC32C of each piece (one piece = the whole segment)
};

struct WriterOptions {
  IoOptions io;
  IoEngine* engine = nullptr;  // borrowed engine (reuses its buffers); null: the writer makes one
  uint64_t expected_size = 0;  // bytes to preallocate with fallocate; 0: grow in 256 MiB steps
  bool zero_copy = true;       // write 4 KiB-aligned caller memory directly, without staging
  bool fsync = true;           // Finish() fsyncs the file and its directory
  // Bytes per CRC32C block of a segment (manifest v2: readers verify only the blocks they
  // touch); a positive multiple of 4 KiB. Default kChecksumBlock (256 KiB).
  uint64_t checksum_block = kChecksumBlock;
};

// Streams segments into one file; each segment starts at a 4 KiB-aligned offset (the gap is
// zero padding). Finish() writes the unaligned tail with buffered pwrite, truncates to the
// final size and fsyncs. Dropping an unfinished writer leaves a partial file behind.
class FileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<FileWriter>> Open(const std::string& path,
                                                          const WriterOptions& options = {});
  ~FileWriter();

  // Writes `size` bytes from `data` as one segment and returns its file offset and the CRC32C of
  // each piece; `piece_bytes` (summing to `size`) cuts the segment into pieces, empty = one.
  // The checksums are computed while the earlier blocks are in flight. `data` may be reused once
  // this returns.
  absl::StatusOr<AppendResult> Append(const void* data, uint64_t size,
                                      const std::vector<uint64_t>& piece_bytes = {});
  // Flushes, writes the tail, truncates to the final size, fsyncs; returns the file size.
  absl::StatusOr<uint64_t> Finish();

  IoPath io_path() const { return io_path_; }
  uint64_t size() const { return logical_; }
  const std::string& path() const { return path_; }

 private:
  FileWriter() = default;
  absl::Status AcquireSlot();
  absl::Status SubmitSlot(uint64_t len);
  absl::Status Reap();
  absl::Status Drain();
  absl::Status Preallocate(uint64_t end);
  absl::Status WriteTail(const uint8_t* data, uint64_t len, uint64_t offset);
  absl::Status Fail(absl::Status st);

  std::string path_;
  WriterOptions options_;
  std::unique_ptr<IoEngine> own_engine_;
  IoEngine* engine_ = nullptr;
  IoPath io_path_ = IoPath::kSyncBuffered;
  int fd_ = -1;
  bool direct_ = false;
  bool finished_ = false;
  absl::Status error_;
  std::vector<int> free_slots_;
  int cur_ = -1;            // slot being filled, -1 none
  uint64_t fill_ = 0;       // bytes in the current slot
  uint64_t blk_off_ = 0;    // file offset of the current slot
  uint64_t logical_ = 0;    // bytes in the file so far (incl. padding)
  uint64_t allocated_ = 0;  // bytes preallocated
  bool fallocate_ok_ = true;
};

// Reads byte ranges; O_DIRECT reads of aligned blocks into the engine's buffers, copied out.
class FileReader {
 public:
  static absl::StatusOr<std::unique_ptr<FileReader>> Open(const std::string& path,
                                                          IoEngine* engine = nullptr,
                                                          const IoOptions& io = {});
  ~FileReader();
  uint64_t size() const { return size_; }
  IoPath io_path() const { return io_path_; }
  const std::string& path() const { return path_; }

  absl::Status ReadAt(uint64_t offset, uint64_t size, void* dst);
  // Delivers [offset, offset + size) in order, in pieces, to `sink`.
  absl::Status Stream(uint64_t offset, uint64_t size,
                      const std::function<void(const uint8_t*, uint64_t)>& sink);

 private:
  FileReader() = default;
  absl::Status StreamDirect(uint64_t offset, uint64_t size,
                            const std::function<void(const uint8_t*, uint64_t)>& sink);

  std::string path_;
  std::unique_ptr<IoEngine> own_engine_;
  IoEngine* engine_ = nullptr;
  IoPath io_path_ = IoPath::kSyncBuffered;
  int fd_ = -1;
  bool direct_ = false;
  uint64_t size_ = 0;
};

// Test-only: makes io_uring setup fail with EPERM and open(O_DIRECT) fail with EINVAL, as on
// old kernels and filesystems without O_DIRECT (tmpfs before Linux 6.6), so the fallbacks run.
void SetIoRefusalsForTesting(bool refuse_uring, bool refuse_direct);

// Reads `size` bytes at `offset` of `path` into `dst` (opens, reads, closes).
absl::Status ReadAt(const std::string& path, uint64_t offset, uint64_t size, void* dst,
                    const IoOptions& io = {});

}  // namespace tern::ckpt
