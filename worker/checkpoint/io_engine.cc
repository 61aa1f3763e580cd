// IoEngine (ring + reusable aligned buffers) and FileReader. FileWriter is in file_writer.cc.
#include "worker/checkpoint/io_engine.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/checkpoint/fs_util.h"
#include "worker/checkpoint/io_util.h"
#include "worker/core/status.h"

namespace tern::ckpt {

const char* IoPathName(IoPath path) {
  switch (path) {
    case IoPath::kUringDirect:
      return "io_uring+O_DIRECT";
    case IoPath::kSyncDirect:
      return "pwrite+O_DIRECT";
    case IoPath::kSyncBuffered:
      return "pwrite";
  }
  return "?";
}

namespace {
std::atomic<bool> g_refuse_uring{false};
std::atomic<bool> g_refuse_direct{false};
}  // namespace

void SetIoRefusalsForTesting(bool refuse_uring, bool refuse_direct) {
  g_refuse_uring = refuse_uring;
  g_refuse_direct = refuse_direct;
}

int OpenFile(const std::string& path, int flags, int mode) {
  if ((flags & O_DIRECT) != 0 && g_refuse_direct) {
    errno = EINVAL;
    return -1;
  }
  return ::open(path.c_str(), flags, mode);
}

void LogFallbackOnce(FallbackReason reason, const std::string& message) {
  static std::atomic<bool> logged[3];
  if (!logged[static_cast<int>(reason)].exchange(true)) spdlog::warn("checkpoint I/O: {}", message);
}

int64_t PwriteFull(int fd, const uint8_t* buf, uint64_t len, uint64_t offset) {
  uint64_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) return -EIO;
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

int64_t PreadFull(int fd, uint8_t* buf, uint64_t len, uint64_t offset) {
  uint64_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -errno;
    if (n == 0) break;  // end of file
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

absl::Status ValidateIoOptions(const IoOptions& o) {
  if (o.block_size == 0 || o.block_size % kAlign != 0 || o.block_size > (1ull << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint I/O block_size ", o.block_size,
                     " must be a positive multiple of 4096 up to 1 GiB --> hint: use 1048576"));
  }
  if (o.queue_depth < 1 || o.queue_depth > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint I/O queue_depth ", o.queue_depth, " must be in [1, 256]"));
  }
  return absl::OkStatus();
}

// ---- IoEngine ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<IoEngine>> IoEngine::Create(const IoOptions& options) {
  TERN_RETURN_IF_ERROR(ValidateIoOptions(options));
  std::unique_ptr<IoEngine> engine(new IoEngine(options));
  TERN_RETURN_IF_ERROR(engine->Init());
  return engine;
}

absl::Status IoEngine::Init() {
  const int nslots = options_.queue_depth + 1;
  const uint64_t total = options_.block_size * static_cast<uint64_t>(nslots);
  void* mem = std::aligned_alloc(kAlign, total);
  if (mem == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint I/O: cannot allocate ", total, " bytes of block buffers"));
  }
  ::madvise(mem, total, MADV_HUGEPAGE);
  std::memset(mem, 0, total);  // pre-touch: page faults happen here, once
  for (int i = 0; i < nslots; ++i) {
    slots_.push_back(static_cast<uint8_t*>(mem) + options_.block_size * i);
  }
  if (!options_.use_uring) return absl::OkStatus();
  auto* ring = new io_uring;
  int rc = g_refuse_uring
               ? -EPERM
               : io_uring_queue_init(static_cast<unsigned>(options_.queue_depth), ring, 0);
  if (rc < 0) {
    delete ring;
    LogFallbackOnce(FallbackReason::kNoUring,
                    absl::StrCat("io_uring refused (", std::strerror(-rc),
                                 "): falling back to synchronous pwrite/pread"));
    return absl::OkStatus();
  }
  ring_ = ring;
  uring_ = true;
  std::vector<iovec> iov(nslots);
  for (int i = 0; i < nslots; ++i) iov[i] = {slots_[i], options_.block_size};
  fixed_buffers_ = io_uring_register_buffers(ring, iov.data(), nslots) == 0;
  pending_.resize(options_.queue_depth);
  for (int i = options_.queue_depth - 1; i >= 0; --i) free_ids_.push_back(i);
  return absl::OkStatus();
}

IoEngine::~IoEngine() {
  if (ring_ != nullptr) {
    auto* ring = static_cast<io_uring*>(ring_);
    while (in_flight_ > 0 && WaitOne().ok()) {
    }
    io_uring_queue_exit(ring);
    delete ring;
  }
  if (!slots_.empty()) std::free(slots_[0]);
}

absl::Status IoEngine::Submit(const Request& r) {
  TERN_CHECK(in_flight_ < options_.queue_depth) << "in flight " << in_flight_;
  TERN_CHECK(r.len <= 0xFFFFFFFFull) << r.len;
  if (!uring_) {
    Completion c;
    c.tag = r.tag;
    c.request = r;
    c.result = r.write ? PwriteFull(r.fd, r.buf, r.len, r.offset)
                       : PreadFull(r.fd, r.buf, r.len, r.offset);
    if (!r.write && c.result > 0) bytes_read_ += static_cast<uint64_t>(c.result);
    done_sync_.push_back(c);
    ++in_flight_;
    return absl::OkStatus();
  }
  auto* ring = static_cast<io_uring*>(ring_);
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) return absl::InternalError("checkpoint I/O: io_uring submission queue full");
  const int id = free_ids_.back();
  free_ids_.pop_back();
  pending_[id] = r;
  const auto len = static_cast<unsigned>(r.len);
  if (r.slot >= 0 && fixed_buffers_) {
    if (r.write) {
      io_uring_prep_write_fixed(sqe, r.fd, r.buf, len, r.offset, r.slot);
    } else {
      io_uring_prep_read_fixed(sqe, r.fd, r.buf, len, r.offset, r.slot);
    }
  } else if (r.write) {
    io_uring_prep_write(sqe, r.fd, r.buf, len, r.offset);
  } else {
    io_uring_prep_read(sqe, r.fd, r.buf, len, r.offset);
  }
  io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(id));
  int rc = io_uring_submit(ring);
  if (rc < 0) {
    free_ids_.push_back(id);
    return ErrnoStatus(-rc, "io_uring_submit for", "checkpoint file");
  }
  ++in_flight_;
  return absl::OkStatus();
}

absl::StatusOr<IoEngine::Completion> IoEngine::WaitOne() {
  TERN_CHECK(in_flight_ > 0) << "WaitOne with nothing in flight";
  if (!uring_) {
    Completion c = done_sync_.front();
    done_sync_.erase(done_sync_.begin());
    --in_flight_;
    return c;
  }
  auto* ring = static_cast<io_uring*>(ring_);
  io_uring_cqe* cqe = nullptr;
  int rc;
  do {
    rc = io_uring_wait_cqe(ring, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) return ErrnoStatus(-rc, "io_uring_wait_cqe for", "checkpoint file");
  const int id = static_cast<int>(io_uring_cqe_get_data64(cqe));
  int64_t res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  --in_flight_;
  free_ids_.push_back(id);
  Completion c;
  c.request = pending_[id];
  c.tag = c.request.tag;
  if (c.request.write && res >= 0 && static_cast<uint64_t>(res) < c.request.len) {
    const uint64_t done = static_cast<uint64_t>(res);
    int64_t rest = PwriteFull(c.request.fd, c.request.buf + done, c.request.len - done,
                              c.request.offset + done);
    res = rest < 0 ? rest : static_cast<int64_t>(c.request.len);
  }
  if (!c.request.write && res > 0) bytes_read_ += static_cast<uint64_t>(res);
  c.result = res;
  return c;
}

// ---- FileReader -------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<FileReader>> FileReader::Open(const std::string& path,
                                                             IoEngine* engine,
                                                             const IoOptions& io) {
  std::unique_ptr<FileReader> r(new FileReader());
  r->path_ = path;
  if (engine == nullptr) {
    TERN_ASSIGN_OR_RETURN(r->own_engine_, IoEngine::Create(io));
    engine = r->own_engine_.get();
  }
  r->engine_ = engine;
  r->direct_ = engine->options().use_direct;
  r->fd_ = OpenFile(path, O_RDONLY | O_CLOEXEC | (r->direct_ ? O_DIRECT : 0));
  if (r->fd_ < 0 && r->direct_ && errno == EINVAL) {
    LogFallbackOnce(FallbackReason::kNoDirectRead,
                    absl::StrCat("O_DIRECT refused for reading ", path,
                                 " (EINVAL, e.g. tmpfs): falling back to buffered pread"));
    r->direct_ = false;
    r->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (r->fd_ < 0) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(r->fd_, &st) != 0) return ErrnoStatus(errno, "stat", path);
  r->size_ = static_cast<uint64_t>(st.st_size);
  r->io_path_ = !r->direct_       ? IoPath::kSyncBuffered
                : engine->uring() ? IoPath::kUringDirect
                                  : IoPath::kSyncDirect;
  return r;
}

FileReader::~FileReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status FileReader::ReadAt(uint64_t offset, uint64_t size, void* dst) {
  auto* out = static_cast<uint8_t*>(dst);
  if (!direct_) {
    if (offset + size > size_) {
      return absl::OutOfRangeError(absl::StrCat("read [", offset, ", ", offset + size, ") of ",
                                                path_, ": file has only ", size_, " bytes"));
    }
    int64_t n = PreadFull(fd_, out, size, offset);
    if (n < 0) return ErrnoStatus(static_cast<int>(-n), "read", path_);
    engine_->AddBytesRead(static_cast<uint64_t>(n));
    if (static_cast<uint64_t>(n) != size) {
      return absl::DataLossError(absl::StrCat("short read of ", path_, " at offset ", offset));
    }
    return absl::OkStatus();
  }
  uint64_t done = 0;
  return Stream(offset, size, [&](const uint8_t* p, uint64_t n) {
    std::memcpy(out + done, p, n);
    done += n;
  });
}

absl::Status FileReader::Stream(uint64_t offset, uint64_t size,
                                const std::function<void(const uint8_t*, uint64_t)>& sink) {
  if (offset + size > size_) {
    return absl::OutOfRangeError(absl::StrCat("read [", offset, ", ", offset + size, ") of ", path_,
                                              ": file has only ", size_, " bytes"));
  }
  if (size == 0) return absl::OkStatus();
  if (direct_) return StreamDirect(offset, size, sink);
  const uint64_t block = engine_->options().block_size;
  uint8_t* buf = engine_->slot(0);
  TERN_CHECK(engine_->in_flight() == 0) << "engine busy";
  for (uint64_t pos = offset; pos < offset + size;) {
    const uint64_t n = std::min(block, offset + size - pos);
    int64_t got = PreadFull(fd_, buf, n, pos);
    if (got < 0) return ErrnoStatus(static_cast<int>(-got), "read", path_);
    engine_->AddBytesRead(static_cast<uint64_t>(got));
    if (static_cast<uint64_t>(got) != n) {
      return absl::DataLossError(absl::StrCat("short read of ", path_, " at offset ", pos));
    }
    sink(buf, n);
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status FileReader::StreamDirect(uint64_t offset, uint64_t size,
                                      const std::function<void(const uint8_t*, uint64_t)>& sink) {
  IoEngine& e = *engine_;
  TERN_CHECK(e.in_flight() == 0) << "engine busy";
  const uint64_t block = e.options().block_size;
  const uint64_t end = offset + size;
  const uint64_t a0 = AlignDown(offset);
  const uint64_t a1 = AlignUp(end);
  const uint64_t nblocks = (a1 - a0 + block - 1) / block;
  const int nslots = e.num_slots();
  std::vector<int64_t> result(nslots, 0);
  std::vector<char> ready(nslots, 0);
  uint64_t next_submit = 0;
  uint64_t next_consume = 0;
  absl::Status status;
  auto drain = [&]() {
    while (e.in_flight() > 0 && e.WaitOne().ok()) {
    }
  };
  while (next_consume < nblocks) {
    while (next_submit < nblocks && next_submit < next_consume + nslots &&
           e.in_flight() < e.max_in_flight()) {
      const uint64_t boff = a0 + next_submit * block;
      const int s = static_cast<int>(next_submit % nslots);
      IoEngine::Request r{fd_, false, e.slot(s), std::min(block, a1 - boff), boff, s, next_submit};
      status = e.Submit(r);
      if (!status.ok()) break;
      ++next_submit;
    }
    if (!status.ok()) break;
    const int s = static_cast<int>(next_consume % nslots);
    if (!ready[s]) {
      auto c = e.WaitOne();
      if (!c.ok()) {
        status = c.status();
        break;
      }
      const int cs = static_cast<int>(c->tag % nslots);
      ready[cs] = 1;
      result[cs] = c->result;
      continue;
    }
    const uint64_t boff = a0 + next_consume * block;
    const uint64_t len = std::min(block, a1 - boff);
    const uint64_t need = std::min(len, size_ - boff);
    int64_t got = result[s];
    if (got >= 0 && static_cast<uint64_t>(got) < need) {  // rare: finish synchronously
      int64_t more = PreadFull(fd_, e.slot(s) + got, len - got, boff + got);
      if (more > 0) e.AddBytesRead(static_cast<uint64_t>(more));
      got = more < 0 ? more : got + more;
    }
    if (got < 0) {
      status =
          ErrnoStatus(static_cast<int>(-got), absl::StrCat("read at offset ", boff, " of"), path_);
      break;
    }
    if (static_cast<uint64_t>(got) < need) {
      status = absl::DataLossError(absl::StrCat("short read of ", path_, " at offset ", boff));
      break;
    }
    const uint64_t lo = std::max(offset, boff);
    const uint64_t hi = std::min(end, boff + len);
    sink(e.slot(s) + (lo - boff), hi - lo);
    ready[s] = 0;
    ++next_consume;
  }
  drain();
  return status;
}

absl::Status ReadAt(const std::string& path, uint64_t offset, uint64_t size, void* dst,
                    const IoOptions& io) {
  TERN_ASSIGN_OR_RETURN(auto reader, FileReader::Open(path, nullptr, io));
  return reader->ReadAt(offset, size, dst);
}

}  // namespace tern::ckpt
