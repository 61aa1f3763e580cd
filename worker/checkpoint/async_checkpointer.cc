#include "worker/checkpoint/async_checkpointer.h"

#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"

namespace tern::ckpt {

AsyncCheckpointer::AsyncCheckpointer(const AsyncOptions& options)
    : options_(options), result_(absl::FailedPreconditionError("no checkpoint pending")) {
  auto e = IoEngine::Create(options.writer.io);
  if (e.ok()) {
    engine_ = std::move(*e);
  } else {
    engine_status_ = e.status();
  }
}

AsyncCheckpointer::~AsyncCheckpointer() {
  if (thread_.joinable()) thread_.join();
  std::free(staging_);
}

absl::Status AsyncCheckpointer::EnsureCapacity(uint64_t bytes) {
  if (bytes <= capacity_) return absl::OkStatus();
  std::free(staging_);
  staging_ = nullptr;
  capacity_ = 0;
  const uint64_t cap = AlignUp(bytes, 2ull << 20);
  void* mem = std::aligned_alloc(kAlign, cap);
  if (mem == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("checkpoint staging: cannot allocate ", cap, " bytes"));
  }
  ::madvise(mem, cap, MADV_HUGEPAGE);
  std::memset(mem, 0, cap);  // pre-touch once; later saves reuse the pages
  staging_ = static_cast<uint8_t*>(mem);
  capacity_ = cap;
  return absl::OkStatus();
}

absl::Status AsyncCheckpointer::Save(const std::string& root, int64_t step, int rank,
                                     const std::vector<Segment>& segments,
                                     const ParamTable& table) {
  TERN_RETURN_IF_ERROR(engine_status_);
  if (pending_) {
    if (thread_.joinable()) thread_.join();
    pending_ = false;
    if (!result_.ok()) {
      absl::Status prev = result_.status();
      result_ = absl::FailedPreconditionError("no checkpoint pending");
      return absl::Status(prev.code(),
                          absl::StrCat("previous checkpoint failed: ", prev.message()));
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t total = 0;
  TERN_ASSIGN_OR_RETURN(std::vector<uint64_t> offsets, SegmentFileOffsets(segments, &total));
  TERN_RETURN_IF_ERROR(EnsureCapacity(total));
  std::vector<Segment> staged = segments;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", i, " of state '", segments[i].state, "' has no data"));
    }
    const uint64_t bytes = segments[i].numel * DtypeBytes(segments[i].dtype);
    std::memcpy(staging_ + offsets[i], segments[i].data, bytes);
    staged[i].data = staging_ + offsets[i];
  }
  stage_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  pending_ = true;
  if (options_.blocking) {
    Persist(root, step, rank, std::move(staged), table);
    return result_.status();
  }
  thread_ =
      std::thread(&AsyncCheckpointer::Persist, this, root, step, rank, std::move(staged), table);
  return absl::OkStatus();
}

void AsyncCheckpointer::Persist(std::string root, int64_t step, int rank,
                                std::vector<Segment> staged, ParamTable table) {
  WriterOptions w = options_.writer;
  w.engine = engine_.get();
  w.zero_copy = true;
  result_ = WriteRankShard(root, step, rank, staged, table, w);
}

absl::StatusOr<RankShardResult> AsyncCheckpointer::Wait() {
  if (!pending_) return absl::FailedPreconditionError("no checkpoint pending");
  if (thread_.joinable()) thread_.join();
  pending_ = false;
  absl::StatusOr<RankShardResult> out = std::move(result_);
  result_ = absl::FailedPreconditionError("no checkpoint pending");
  return out;
}

}  // namespace tern::ckpt
