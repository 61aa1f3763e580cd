// FileWriter: streams segments through the IoEngine's block buffers (or, for 4 KiB-aligned
// caller memory, straight from it) with io_uring + O_DIRECT; CRC32C per piece on this thread
// while earlier blocks are in flight.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "worker/checkpoint/crc32c.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/io_engine.h"
#include "worker/checkpoint/io_util.h"
#include "worker/core/status.h"

namespace tern::ckpt {
namespace {

constexpr uint64_t kGrowStep = 256ull << 20;  // fallocate step when the final size is unknown
constexpr uint64_t kDirectTag = ~0ull;        // completion tag of a caller-memory request

// Running CRC32C over consecutive pieces of one segment.
class PieceCrc {
 public:
  PieceCrc(const std::vector<uint64_t>& piece_bytes, uint64_t size, std::vector<uint32_t>* out)
      : out_(out) {
    if (piece_bytes.empty()) {
      sizes_.push_back(size);
    } else {
      sizes_ = piece_bytes;
    }
    out_->assign(sizes_.size(), 0);
    Skip();
  }
  void Update(const uint8_t* p, uint64_t n) {
    while (n > 0) {
      const uint64_t take = std::min(n, left_);
      crc_ = Crc32cExtend(crc_, p, take);
      p += take;
      n -= take;
      left_ -= take;
      if (left_ == 0) {
        (*out_)[idx_++] = crc_;
        crc_ = 0;
        Skip();
      }
    }
  }

 private:
  void Skip() {  // moves to the next non-empty piece (empty pieces keep CRC 0)
    while (idx_ < sizes_.size() && sizes_[idx_] == 0) ++idx_;
    left_ = idx_ < sizes_.size() ? sizes_[idx_] : ~0ull;
  }
  std::vector<uint64_t> sizes_;
  std::vector<uint32_t>* out_;
  size_t idx_ = 0;
  uint64_t left_ = 0;
  uint32_t crc_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<FileWriter>> FileWriter::Open(const std::string& path,
                                                             const WriterOptions& options) {
  std::unique_ptr<FileWriter> w(new FileWriter());
  w->path_ = path;
  w->options_ = options;
  if (options.engine == nullptr) {
    TERN_ASSIGN_OR_RETURN(w->own_engine_, IoEngine::Create(options.io));
    w->engine_ = w->own_engine_.get();
  } else {
    w->engine_ = options.engine;
  }
  TERN_CHECK(w->engine_->in_flight() == 0) << "IoEngine shared by two writers";
  w->direct_ = w->engine_->options().use_direct;
  const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  w->fd_ = OpenFile(path, flags | (w->direct_ ? O_DIRECT : 0), 0644);
  if (w->fd_ < 0 && w->direct_ && errno == EINVAL) {
    LogFallbackOnce(FallbackReason::kNoDirectWrite,
                    absl::StrCat("O_DIRECT refused for ", path,
                                 " (EINVAL, e.g. tmpfs): falling back to buffered pwrite"));
    w->direct_ = false;
    w->fd_ = ::open(path.c_str(), flags, 0644);
  }
  if (w->fd_ < 0) return ErrnoStatus(errno, "create", path);
  w->io_path_ = !w->direct_           ? IoPath::kSyncBuffered
                : w->engine_->uring() ? IoPath::kUringDirect
                                      : IoPath::kSyncDirect;
  for (int i = w->engine_->num_slots() - 1; i >= 0; --i) w->free_slots_.push_back(i);
  if (options.expected_size > 0) {
    TERN_RETURN_IF_ERROR(w->Preallocate(options.expected_size));
  }
  return w;
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) {
    while (engine_->in_flight() > 0 && engine_->WaitOne().ok()) {
    }
    ::close(fd_);
  }
}

absl::Status FileWriter::Fail(absl::Status st) {
  if (error_.ok()) error_ = st;
  return st;
}

absl::Status FileWriter::Preallocate(uint64_t end) {
  if (!fallocate_ok_ || end <= allocated_) return absl::OkStatus();
  const uint64_t target =
      options_.expected_size >= end ? AlignUp(options_.expected_size) : AlignUp(end, kGrowStep);
  if (::fallocate(fd_, 0, static_cast<off_t>(allocated_),
                  static_cast<off_t>(target - allocated_)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
      fallocate_ok_ = false;
      return absl::OkStatus();
    }
    return Fail(ErrnoStatus(errno, absl::StrCat("fallocate ", target, " bytes for"), path_));
  }
  allocated_ = target;
  return absl::OkStatus();
}

absl::Status FileWriter::Reap() {
  auto c = engine_->WaitOne();
  if (!c.ok()) return Fail(c.status());
  if (c->tag != kDirectTag) free_slots_.push_back(static_cast<int>(c->tag));
  if (c->result < 0) {
    return Fail(ErrnoStatus(
        static_cast<int>(-c->result),
        absl::StrCat("write ", c->request.len, " bytes at offset ", c->request.offset, " of"),
        path_));
  }
  return absl::OkStatus();
}

absl::Status FileWriter::Drain() {
  while (engine_->in_flight() > 0) TERN_RETURN_IF_ERROR(Reap());
  return absl::OkStatus();
}

absl::Status FileWriter::AcquireSlot() {
  while (free_slots_.empty()) TERN_RETURN_IF_ERROR(Reap());
  cur_ = free_slots_.back();
  free_slots_.pop_back();
  fill_ = 0;
  blk_off_ = logical_;
  return absl::OkStatus();
}

absl::Status FileWriter::SubmitSlot(uint64_t len) {
  while (engine_->in_flight() >= engine_->max_in_flight()) TERN_RETURN_IF_ERROR(Reap());
  IoEngine::Request r{fd_,      true, engine_->slot(cur_),        len,
                      blk_off_, cur_, static_cast<uint64_t>(cur_)};
  cur_ = -1;
  fill_ = 0;
  absl::Status st = engine_->Submit(r);
  if (!st.ok()) {
    free_slots_.push_back(r.slot);
    return Fail(st);
  }
  return absl::OkStatus();
}

absl::StatusOr<AppendResult> FileWriter::Append(const void* data, uint64_t size,
                                                const std::vector<uint64_t>& piece_bytes) {
  if (!error_.ok()) return error_;
  if (finished_ || fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat("Append after Finish on ", path_));
  }
  uint64_t sum = 0;
  for (uint64_t b : piece_bytes) sum += b;
  if (!piece_bytes.empty() && sum != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("pieces of a segment sum to ", sum, " bytes, segment has ", size));
  }
  const uint64_t block = engine_->options().block_size;
  // Align the segment start: zero padding in the current block (or a hole when buffered).
  if (logical_ % kAlign != 0) {
    const uint64_t pad = AlignUp(logical_) - logical_;
    if (cur_ >= 0) {
      std::memset(engine_->slot(cur_) + fill_, 0, pad);
      fill_ += pad;
    }
    logical_ += pad;
    if (cur_ >= 0 && fill_ == block) TERN_RETURN_IF_ERROR(SubmitSlot(block));
  }
  AppendResult result;
  result.file_offset = logical_;
  TERN_RETURN_IF_ERROR(Preallocate(logical_ + size));
  PieceCrc crc(piece_bytes, size, &result.piece_crc);
  const auto* src = static_cast<const uint8_t*>(data);
  if (!direct_) {  // buffered: pwrite straight from the caller's memory
    for (uint64_t pos = 0; pos < size;) {
      const uint64_t n = std::min(block, size - pos);
      int64_t rc = PwriteFull(fd_, src + pos, n, logical_);
      if (rc < 0) {
        return Fail(ErrnoStatus(static_cast<int>(-rc),
                                absl::StrCat("write at offset ", logical_, " of"), path_));
      }
      crc.Update(src + pos, n);
      pos += n;
      logical_ += n;
    }
    return result;
  }
  bool direct_in_flight = false;
  for (uint64_t pos = 0; pos < size;) {
    const uint8_t* p = src + pos;
    const uint64_t rem = size - pos;
    if (cur_ < 0 && options_.zero_copy && reinterpret_cast<uintptr_t>(p) % kAlign == 0 &&
        rem >= kAlign) {
      const uint64_t n = std::min(block, AlignDown(rem));
      while (engine_->in_flight() >= engine_->max_in_flight()) TERN_RETURN_IF_ERROR(Reap());
      IoEngine::Request r{fd_, true, const_cast<uint8_t*>(p), n, logical_, -1, kDirectTag};
      absl::Status st = engine_->Submit(r);
      if (!st.ok()) return Fail(st);
      direct_in_flight = true;
      crc.Update(p, n);  // overlaps the write just submitted
      pos += n;
      logical_ += n;
      continue;
    }
    if (cur_ < 0) TERN_RETURN_IF_ERROR(AcquireSlot());
    const uint64_t n = std::min(block - fill_, rem);
    uint8_t* dst = engine_->slot(cur_) + fill_;
    std::memcpy(dst, p, n);  // staging copy overlaps the blocks in flight
    crc.Update(dst, n);
    fill_ += n;
    pos += n;
    logical_ += n;
    if (fill_ == block) TERN_RETURN_IF_ERROR(SubmitSlot(block));
  }
  if (direct_in_flight) TERN_RETURN_IF_ERROR(Drain());  // caller memory must be released
  return result;
}

absl::Status FileWriter::WriteTail(const uint8_t* data, uint64_t len, uint64_t offset) {
  int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);  // without O_DIRECT
  if (fd < 0) return Fail(ErrnoStatus(errno, "reopen for the tail", path_));
  int64_t rc = PwriteFull(fd, data, len, offset);
  ::close(fd);
  if (rc < 0) {
    return Fail(
        ErrnoStatus(static_cast<int>(-rc), absl::StrCat("write tail at ", offset, " of"), path_));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileWriter::Finish() {
  if (!error_.ok()) return error_;
  if (finished_) return logical_;
  if (cur_ >= 0 && fill_ > 0) {
    const int slot = cur_;
    const uint64_t aligned = AlignDown(fill_);
    const uint64_t tail = fill_ - aligned;
    const uint64_t tail_off = blk_off_ + aligned;
    if (aligned > 0) {
      TERN_RETURN_IF_ERROR(SubmitSlot(aligned));
    } else {
      free_slots_.push_back(cur_);
      cur_ = -1;
      fill_ = 0;
    }
    TERN_RETURN_IF_ERROR(Drain());  // the slot is not reused after this, its tail stays intact
    if (tail > 0) TERN_RETURN_IF_ERROR(WriteTail(engine_->slot(slot) + aligned, tail, tail_off));
  } else if (cur_ >= 0) {
    free_slots_.push_back(cur_);
    cur_ = -1;
  }
  TERN_RETURN_IF_ERROR(Drain());
  if (::ftruncate(fd_, static_cast<off_t>(logical_)) != 0) {
    return Fail(ErrnoStatus(errno, "truncate", path_));
  }
  if (options_.fsync && ::fsync(fd_) != 0) return Fail(ErrnoStatus(errno, "fsync", path_));
  ::close(fd_);
  fd_ = -1;
  finished_ = true;
  if (options_.fsync) {
    std::string dir = std::filesystem::path(path_).parent_path().string();
    TERN_RETURN_IF_ERROR(FsyncDir(dir.empty() ? "." : dir));
  }
  return logical_;
}

}  // namespace tern::ckpt
