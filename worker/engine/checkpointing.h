// Checkpointing inside the trainer: FastPersist writes of this rank's optimizer state
// (worker/checkpoint/) every `checkpoint.interval` steps and at the end, overlapped with
// training, committed by rank 0; and resuming from a committed checkpoint.
//
// Protocol (every rank runs the same sequence, so the collectives stay matched):
//  - Start(): rank 0 removes incomplete step directories and picks the checkpoint to load
//    (resume) or checks that the directory holds none (fresh run); all ranks agree on the
//    outcome; each rank reads exactly its own segments (at ZeRO stage 0, where every rank holds
//    everything, its 1/N share, then the ranks all-gather the shares), then
//    TrainingState::SyncAfterLoad(). The checkpoint's model must match exactly (every missing,
//    extra or mis-shaped tensor is listed). The data position is the samples consumed, so the
//    resumed run may use another global batch (resumed_samples()).
//  - Save(k) after step k: stages master / exp_avg / exp_avg_sq of this rank's segments (at
//    ZeRO stage 0, where every rank holds everything, each rank stages a 1/N share) and the
//    write continues in the background. Blocking mode (checkpoint.async=false) writes and
//    commits inline.
//  - Poll() after every step while a write is in flight: one float all-reduce says whether
//    every rank's write is done; when so, the RankShardResults are all-gathered (JSON bytes) and
//    rank 0 commits the manifest (world layout + data position, RNG seed, job spec, metrics) on
//    a background thread (async mode; inline when blocking). Save() and Finish() collect a
//    write still in flight the same way (waiting for it); Finish() also waits for the commit.
//  - checkpoint.writer.{block_size, queue_depth} configure the I/O engine; io_buffer_size is
//    accepted but unused: the staging area holds the whole shard (AsyncCheckpointer).
//
// Threading: one trainer thread calls everything. Internal threads: a waiter that only waits for
// the background write (so Poll() can ask whether it finished without blocking) and, on rank 0,
// the committer; events are emitted from the trainer thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/async_checkpointer.h"
#include "worker/core/param_table.h"
#include "worker/engine/metrics.h"
#include "worker/spec/job_config.h"
#include "worker/zero/state.h"

namespace tern::data {
class DataLoader;
}
namespace tern::ckpt {
class Checkpoint;
}

namespace tern::engine {

// All-gathers one byte string per rank (result index = rank). Null = single rank.
using GatherBytesFn =
    std::function<absl::StatusOr<std::vector<std::string>>(const std::string& mine)>;
// Sums doubles across ranks in place. Null = single rank.
using AllReduceSumFn = std::function<absl::Status(double*, int)>;

struct CheckpointingOptions {
  int rank = 0;                 // data-parallel rank: names this rank's file
  int ranks = 1;                // data-parallel ranks (gathers return this many entries)
  GatherBytesFn gather;         // over every rank of the job
  AllReduceSumFn all_reduce;    // over the same ranks
  MetricsSink* sink = nullptr;  // rank 0 emits "checkpoint" and "resume" events
  int64_t round = -1;           // cluster round: claims the root and fences commits; -1 = none
  uint64_t checksum_block = 0;  // bytes per CRC32C block of the files written; 0 = 256 KiB
};

// Returns a status with the same code whose message is prefixed (gathers keep the code).
absl::Status StatusFromJson(const nlohmann::json& j);
nlohmann::json StatusToJson(const absl::Status& st);

// Every rank writes a probe file into `root` and rank 0 checks it sees all of them: a root that
// is not on storage every rank shares fails here, at the start of a round, naming it (not at the
// first resume). The result is the same on every rank. No-op for one rank.
absl::Status CheckSharedRoot(const std::string& root, int rank, int ranks,
                             const GatherBytesFn& gather);

// Splits `total` elements into `parts` near-equal ranges; [begin, end) of part `i`.
std::pair<uint64_t, uint64_t> EvenShare(uint64_t total, int parts, int i);

// The segments a rank writes: its owned segments, or (replicated) its share of them.
std::vector<ckpt::Segment> SegmentsToSave(const std::vector<zero::StateSegment>& owned,
                                          bool replicated, int rank, int ranks);

class Checkpointing {
 public:
  // Validates cfg.spec.checkpoint (dir must be set). INVALID_ARGUMENT names the field.
  static absl::StatusOr<std::unique_ptr<Checkpointing>> Create(const tern::spec::JobConfig& cfg,
                                                               CheckpointingOptions options);
  ~Checkpointing();

  // Cleans up, then loads when cfg.spec.checkpoint.load is set (resume). Returns the number of
  // steps already done (0 for a fresh run). Errors are the same on every rank; input errors
  // (corrupt or missing file, other model or data) are DATA_LOSS / NOT_FOUND /
  // FAILED_PRECONDITION and nothing has been written.
  absl::StatusOr<int64_t> Start(zero::TrainingState& state, const ParamTable& table,
                                const data::DataLoader& train);
  // True when a checkpoint is due after `steps_done` steps.
  bool Due(int64_t steps_done) const;
  // Collects a finished background write (call after every step; a collective while pending).
  absl::Status Poll();
  // Stages the state after `steps_done` steps (`samples_consumed` training samples so far) and
  // starts writing it.
  absl::Status Save(int64_t steps_done, uint64_t samples_consumed, zero::TrainingState& state,
                    const ParamTable& table, const data::DataLoader& train,
                    const StepMetrics& last);
  // Waits for and commits the write in flight, if any.
  absl::Status Finish();

  const std::string& root() const { return root_; }
  // Training samples the loaded checkpoint had consumed (0 for a fresh run).
  uint64_t resumed_samples() const { return resumed_samples_; }
  // Bytes this rank's I/O engine read while loading (exact reads: its own ranges).
  uint64_t io_bytes_read() const { return io_bytes_read_; }

 private:
  Checkpointing(const tern::spec::JobConfig& cfg, CheckpointingOptions options);
  absl::StatusOr<std::string> PrepareOnLeader(bool resume, int64_t* done_hint);
  absl::Status Load(const std::string& name, zero::TrainingState& state, const ParamTable& table,
                    const data::DataLoader& train, int64_t* steps_done);
  absl::Status LoadReplicated(ckpt::Checkpoint& ck, zero::TrainingState& state);
  absl::Status CheckFreeSteps(int64_t first_done) const;
  absl::Status Agree(const absl::Status& mine);
  absl::Status Collect();  // waits for the write in flight, gathers, commits (rank 0)
  void JoinWaiter();
  // Rank 0: waits for the commit thread (if `wait`, else only when it finished), then reports
  // its result as a "checkpoint" event or an error.
  absl::Status ReapCommit(bool wait);

  tern::spec::JobConfig cfg_;
  CheckpointingOptions opts_;
  std::string root_;
  int64_t interval_ = 0;
  int keep_last_ = 2;
  bool async_ = true;
  ckpt::IoOptions io_;
  std::unique_ptr<ckpt::AsyncCheckpointer> writer_;
  const ParamTable* table_ = nullptr;
  uint64_t resumed_samples_ = 0;
  int64_t saved_global_batch_ = 0;  // 0: not recorded (older checkpoints)
  uint64_t io_bytes_read_ = 0;

  // The write in flight.
  bool pending_ = false;
  int64_t pending_step_ = 0;
  nlohmann::json pending_extra_;
  std::thread waiter_;
  std::atomic<bool> written_{false};
  absl::StatusOr<ckpt::RankShardResult> result_;

  // The commit in flight (rank 0).
  std::thread committer_;
  std::atomic<bool> committed_{false};
  absl::Status commit_status_;
  nlohmann::json commit_event_;  // "checkpoint" event payload, completed by the committer
};

}  // namespace tern::engine
