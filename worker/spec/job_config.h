// The second half of the spec pipeline: defaults and whole-spec validation of a parsed JobSpec,
// producing the resolved options each layer needs. One function, ResolveJob, is called by every
// program that accepts a spec (tern train / rank / describe / submit, ternd's SubmitJob), so they
// all accept and refuse the same specs with the same messages.
//
// Every key the schema accepts either takes effect or is refused by name; a pure tuning hint that
// has no effect yet is accepted and listed in JobConfig::warnings. Pure function, any thread
// (reads model.config_file and, when asked, checks that the data files exist).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tern/v1/job.pb.h"
#include "worker/model/config.h"
#include "worker/optim/config.h"
#include "worker/zero/options.h"

namespace tern::spec {

// checkpoint.* resolved (worker/engine/checkpointing.cc writes and loads with these).
struct CheckpointOptions {
  std::string dir;          // "" = no checkpoints
  int64_t interval = 0;     // steps between checkpoints; 0 = only at the end
  int keep_last = 2;        // complete checkpoints kept
  bool async = true;        // stage then persist in the background
  uint64_t block_size = 0;  // bytes per I/O request; 0 = the I/O engine's default
  int queue_depth = 0;      // requests in flight; 0 = the I/O engine's default
  std::string load;         // "" (fresh run), "latest", "step-NNNNNN" or kLoadLatestIfAny
  std::string init_from;    // initial weights (safetensors or checkpoint directory); "" = none
};

// checkpoint.load as `tern rank --resume-if-any` sets it (never from a spec): the newest
// complete checkpoint when there is one, else a fresh run — what every round of a cluster
// job after the first asks for.
inline constexpr const char* kLoadLatestIfAny = "latest-if-any";

// elastic.* resolved.
struct ElasticOptions {
  bool enabled = false;
  int min_nodes = 1;
  int max_nodes = 1;
  int max_restarts = 3;
  bool keep_global_batch = true;  // elastic.keep: "global_batch" (true) or "micro_batch"
};

// Everything a run needs, with defaults resolved.
struct JobConfig {
  tern::v1::JobSpec spec;
  model::ModelDims dims;
  bool dims_resolved = false;  // false only when model.config_file could not be read and
                               // files were not required (ternd: the file is on the workers)
  optim::AdamWConfig adamw;
  int seq_len = 0;
  int micro_batch = 1;       // train_micro_batch_size_per_gpu
  int accum = 1;             // gradient_accumulation_steps
  int dp_size = 1;           // data-parallel ranks (world / sp_size)
  int sp_size = 1;           // sequence_parallel_size: ranks sharing each sample (Ulysses)
  int64_t global_batch = 1;  // samples per optimizer step = micro x accum x dp
  // Every rank of the job: ZeRO partitions and reduces over all of them, checkpoint shards
  // are one per rank.
  int world_size() const { return dp_size * sp_size; }
  int64_t train_iters = 0;
  int64_t eval_interval = 0;
  int eval_iters = 8;
  int steps_per_print = 10;
  uint64_t seed = 1234;
  float grad_clip = 0;
  bool activation_checkpointing = false;  // activation_checkpointing.enabled: recompute layers
  // sequence_parallel.fpdt: chunk tokens (0 = off) and whether its stores are offloaded.
  int fpdt_chunk = 0;
  bool fpdt_offload = true;
  int zero_stage = 0;
  zero::ZeroOptions zero;
  CheckpointOptions checkpoint;
  ElasticOptions elastic;
  std::string data_path, val_path;
  int nodes = 1, ranks_per_node = 1, threads_per_rank = 0;
  // resources.device_memory_budget / host_memory_budget per rank (0 = unlimited).
  uint64_t device_memory_budget = 0, host_memory_budget = 0;
  // Accepted keys that have no effect yet, one line each naming the key.
  std::vector<std::string> warnings;
};

// The largest spec (serialized JobSpec) ternd accepts; checked when ResolveOptions::cluster.
inline constexpr size_t kMaxClusterSpecBytes = size_t{1} << 20;

// Where the spec is being resolved; decides which checks can be made.
struct ResolveOptions {
  // Data-parallel ranks; 0 = resources.nodes x resources.ranks_per_node.
  int world_size = 0;
  // Check that data.path / data.val_path exist and require model.config_file to be readable.
  // Off for `tern describe` and ternd (the files live on the workers).
  bool check_files = true;
  // The job runs under ternd (log_dir takes effect there; `tern train` has no event files).
  bool cluster = false;
  // ternd fills in checkpoint.dir (<--checkpoint-root>/<job-id>) when the spec has none, so
  // the other checkpoint keys need no dir of their own.
  bool default_checkpoint_dir = false;
};

// The node counts in [elastic.min_nodes, elastic.max_nodes] a round may run on, ascending.
// elastic.keep "global_batch" (default) keeps train_batch_size and the micro batch and changes
// gradient_accumulation_steps: the counts where that works (global % (micro x nodes x
// ranks_per_node) == 0). "micro_batch" keeps micro batch and accumulation: every count.
std::vector<int> ElasticNodeCounts(const JobConfig& config);

// The batch of a round on `nodes` nodes (elastic.keep decides what is kept).
struct RoundBatch {
  int micro_batch = 1;
  int accum = 1;
  int64_t global_batch = 1;
};
RoundBatch ElasticRoundBatch(const JobConfig& config, int nodes);

// Validates the whole spec before anything is allocated; INVALID_ARGUMENT lists every
// offending field at once ("field: problem; field: problem").
absl::StatusOr<JobConfig> ResolveJob(const tern::v1::JobSpec& spec, const ResolveOptions& options);

}  // namespace tern::spec
