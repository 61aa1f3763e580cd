// Trainer: the step loop of one rank, driven by a resolved JobConfig.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/checkpointing.h"
#include "worker/engine/metrics.h"
#include "worker/engine/rank_control.h"
#include "worker/model/transformer.h"
#include "worker/spec/job_config.h"
#include "worker/zero/state.h"

namespace tern::data {
class DataLoader;
}

namespace tern::engine {

struct TrainerOptions {
  int rank = 0;                 // rank in the job (ZeRO, checkpoint shards); data rank = rank / sp
  int threads = 1;              // compute threads of this rank
  MetricsSink* sink = nullptr;  // receives metrics (rank 0 reports the global values)
  std::string save_final_dir;   // write model.safetensors + config.json at the end
  double peak_gflops = 0;       // sgemm peak per rank for MFU (--peak-gflops); 0 = resolve
  // Refuse to start when ranks_on_host ranks of this job need more memory than the host has
  // (engine/memory_plan.h).
  bool check_memory = true;
  int ranks_on_host = 1;
  int64_t round = -1;  // the cluster round this run is (fences checkpoint commits); -1 = none
  // Builds the partitioned training state; null = single rank, nothing partitioned.
  std::function<absl::StatusOr<std::unique_ptr<zero::TrainingState>>(const ParamTable&,
                                                                     const std::vector<float>&)>
      make_state;
  // Sequence parallelism (config.sp_size > 1): builds the exchange of this rank's group, rank()th
  // of size() consecutive ranks sharing each sample (worker/sequence/ulysses.h), its buffers on
  // the trainer's device.
  std::function<absl::StatusOr<std::unique_ptr<model::SequenceExchange<float>>>(Device*)>
      make_sequence;
  // Sums a few doubles across all ranks of the job (loss, token counts); null = single rank.
  std::function<absl::Status(double*, int)> all_reduce_sum;
  // Bytes all ranks sent this step, by receiver on the same / another node (reset on read;
  // every rank calls it each step); null = none.
  std::function<void(uint64_t* intra, uint64_t* inter)> take_comm_bytes;
  // All-gathers one byte string per rank over every rank of the job (result index = rank):
  // checkpoint shard results and load verdicts. Null = single rank.
  std::function<absl::StatusOr<std::vector<std::string>>(const std::string&)> all_gather_bytes;
  // Orders from the launcher (rank_control.h); null = none. On a "stop" the run checkpoints
  // after the agreed step, reports a "stopped" event and returns OK early
  // (control->stopped_step()).
  RankControl* control = nullptr;
};

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const tern::spec::JobConfig& config,
                                                         TrainerOptions options);
  ~Trainer();
  absl::Status Run();
  // Mean validation loss over eval_iters batches (-1 without a validation set).
  absl::StatusOr<double> Evaluate();
  const TrainSummary& summary() const { return summary_; }
  model::Transformer<float>& model() { return *model_; }
  zero::TrainingState& state() { return *state_; }

 private:
  Trainer(const tern::spec::JobConfig& config, TrainerOptions options);
  absl::Status Init();
  // Orders every rank agreed on after a step (the sums of their pending orders).
  struct StepOrders {
    bool stop = false, checkpoint = false;
  };
  absl::StatusOr<double> TrainStep(int64_t step, StepMetrics* m, StepOrders* orders);
  absl::Status SaveFinal();
  absl::Status InitCheckpointing();
  // Collects a finished write and saves when due (or `now`); returns the stall in ms.
  absl::StatusOr<double> CheckpointStep(int64_t steps_done, const StepMetrics& m, bool now);
  // After an agreed "stop" order: commits the checkpoint of `steps_done` and reports it.
  absl::Status StopOnOrder(int64_t steps_done);
  // The "memory" event: this rank's state and ZeRO working pool; with only_if_changed, skipped when
  // no byte figure changed since the last one (ZeRO++ counters alone do not count as a change).
  void ReportMemory(bool only_if_changed);
  // MFU against the sgemm peak (rank 0, which reports the summary), and the "peak" event.
  void ComputeMfu();

  tern::spec::JobConfig cfg_;
  TrainerOptions opts_;
  // The compute device (budgets from resources.*_memory_budget); outlives what it allocated.
  std::unique_ptr<Device> device_;
  Charge state_charge_;  // the training state's bytes, counted against the device budget
  Charge pool_charge_;   // ZeRO's working pool at its planned cap
  std::unique_ptr<model::SequenceExchange<float>> sequence_;  // outlives model_
  std::unique_ptr<model::Transformer<float>> model_;
  std::unique_ptr<zero::TrainingState> state_;
  std::unique_ptr<data::DataLoader> train_data_, val_data_;
  std::unique_ptr<optim::LrSchedule> schedule_;
  std::vector<int32_t> inputs_, targets_;
  // Sequence parallelism: this rank's tokens of each sample (positions_) and their slices.
  int sp_rank_ = 0;
  std::vector<int32_t> positions_, local_inputs_, local_targets_;
  // Loads micro-batch `micro` of the step starting at sample `first` (eval: batch `eval_index`
  // when >= 0) and returns this rank's share of the loss's token count (1 without sequence
  // parallelism).
  double LoadMicroBatch(uint64_t first, int micro, int64_t eval_index);
  std::array<uint64_t, 6> last_memory_{};  // byte figures of the last memory event
  TrainSummary summary_;
  std::unique_ptr<Checkpointing> ckpt_;  // null without checkpoint.dir
  int64_t start_step_ = 0;               // steps already done (resume)
  uint64_t start_samples_ = 0;           // training samples those steps consumed
  // Samples consumed before `step` (steps since the resume use this run's global batch).
  uint64_t SamplesBefore(int64_t step) const;
};

// Peak resident set size of this process in MiB.
double PeakRssMib();

}  // namespace tern::engine
