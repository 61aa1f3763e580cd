// Stage-then-persist checkpointing for one rank (torchtitan's habit, FastPersist's engine):
// Save() copies the segments into a reused, pre-touched, 4 KiB-aligned staging buffer laid out
// exactly like the rank file, returns (the trainer may now mutate its buffers), and a
// background thread writes the file from the staging buffer with zero-copy O_DIRECT.
// The caller gathers Wait()'s RankShardResult across ranks; rank 0 calls CommitManifest.
//
// Threading: Save/Wait are called from one (trainer) thread; the persist runs on an internal
// thread that owns the IoEngine while it runs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/checkpoint/io_engine.h"
#include "worker/checkpoint/shard_writer.h"
#include "worker/core/param_table.h"

namespace tern::ckpt {

struct AsyncOptions {
  bool blocking = false;  // true: Save() stages and persists inline
  WriterOptions writer;   // I/O options (engine is ignored: the checkpointer owns one)
};

class AsyncCheckpointer {
 public:
  explicit AsyncCheckpointer(const AsyncOptions& options = {});
  ~AsyncCheckpointer();  // waits for a persist in flight
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Stages `segments` and starts writing <root>/step-NNNNNN/rank-RRRRR.bin. Waits first if the
  // previous persist is still running; if that one failed and Wait() did not collect it, returns
  // its error instead of starting this save.
  absl::Status Save(const std::string& root, int64_t step, int rank,
                    const std::vector<Segment>& segments, const ParamTable& table);
  // Waits for the last save and returns its result (FAILED_PRECONDITION if none is pending).
  absl::StatusOr<RankShardResult> Wait();
  bool pending() const { return pending_; }

  double last_stage_seconds() const { return stage_seconds_; }
  uint64_t staging_capacity() const { return capacity_; }

 private:
  absl::Status EnsureCapacity(uint64_t bytes);
  void Persist(std::string root, int64_t step, int rank, std::vector<Segment> staged,
               ParamTable table);

  AsyncOptions options_;
  std::unique_ptr<IoEngine> engine_;
  absl::Status engine_status_;
  uint8_t* staging_ = nullptr;  // 4 KiB aligned, pre-touched, reused
  uint64_t capacity_ = 0;
  std::thread thread_;
  bool pending_ = false;
  absl::StatusOr<RankShardResult> result_;  // written by the persist thread before it exits
  double stage_seconds_ = 0;
};

}  // namespace tern::ckpt
