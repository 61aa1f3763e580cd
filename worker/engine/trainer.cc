#include "worker/engine/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/fs_util.h"
#include "worker/core/status.h"
#include "worker/data/data_loader.h"
#include "worker/engine/export.h"
#include "worker/engine/memory_plan.h"
#include "worker/engine/sgemm_peak.h"
#include "worker/sequence/slice.h"

namespace tern::engine {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

double PeakRssMib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

Trainer::Trainer(const tern::spec::JobConfig& config, TrainerOptions options)
    : cfg_(config), opts_(std::move(options)) {}
Trainer::~Trainer() = default;

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const tern::spec::JobConfig& config,
                                                         TrainerOptions options) {
  std::unique_ptr<Trainer> t(new Trainer(config, std::move(options)));
  TERN_RETURN_IF_ERROR(t->Init());
  return t;
}

absl::Status Trainer::Init() {
  kernels::SetNumThreads(opts_.threads);
  TERN_RETURN_IF_ERROR(InitCheckpointing());  // validates the checkpoint config; writes nothing
  // Data first: a bad data file must fail before anything is allocated or written.
  TERN_ASSIGN_OR_RETURN(train_data_,
                        data::DataLoader::Open(cfg_.data_path, cfg_.seq_len, cfg_.seed));
  TERN_RETURN_IF_ERROR(train_data_->dataset().ValidateVocab(cfg_.dims.V));
  if (!cfg_.val_path.empty()) {
    TERN_ASSIGN_OR_RETURN(val_data_,
                          data::DataLoader::Open(cfg_.val_path, cfg_.seq_len, cfg_.seed));
    TERN_RETURN_IF_ERROR(val_data_->dataset().ValidateVocab(cfg_.dims.V));
  }
  // A job that cannot fit is refused with its numbers before the first allocation.
  if (opts_.check_memory)
    TERN_RETURN_IF_ERROR(CheckJobFitsThisHost(cfg_, opts_.threads, opts_.ranks_on_host));
  // Every output location is created and probed before anything is allocated or trained, so a
  // bad path never costs a training run (the trained weights of --save-final included).
  if (ckpt_) TERN_RETURN_IF_ERROR(ckpt::ProbeWritableDir(cfg_.checkpoint.dir, "checkpoint.dir"));
  if (!opts_.save_final_dir.empty() && opts_.rank == 0)
    TERN_RETURN_IF_ERROR(ckpt::ProbeWritableDir(opts_.save_final_dir, "--save-final"));
  TERN_ASSIGN_OR_RETURN(auto sched, optim::LrSchedule::Create(cfg_.spec.scheduler(), cfg_.adamw.lr,
                                                              cfg_.train_iters));
  schedule_ = std::make_unique<optim::LrSchedule>(sched);
  device_ = std::make_unique<CpuDevice>();
  device_->set_budget(MemoryTier::kDevice, cfg_.device_memory_budget);
  device_->set_budget(MemoryTier::kHost, cfg_.host_memory_budget);
  model_ = std::make_unique<model::Transformer<float>>(
      cfg_.dims, model::Backend<float>{device_.get(), &kernels::CpuOps<float>()});
  {  // the initial vector is freed before the activations are allocated (memory_plan.h)
    std::vector<float> init(model_->params().total());
    model_->InitParams(init.data(), cfg_.seed);
    if (!cfg_.checkpoint.init_from.empty()) {
      TERN_ASSIGN_OR_RETURN(init, LoadInitWeights(cfg_.checkpoint.init_from, model_->params()));
    }
    if (opts_.make_state) {
      TERN_ASSIGN_OR_RETURN(state_, opts_.make_state(model_->params(), init));
    } else {
      state_ = zero::CreateLocalState(model_->params(), init);
    }
  }
  {  // parameters, gradients and optimizer states live on the device (ZeRO's own containers),
     // and ZeRO's working pool at the cap it grows to in the first steps (the memory plan's)
    const auto mem = state_->memory();
    TERN_ASSIGN_OR_RETURN(
        state_charge_,
        Charge::Make(*device_, mem.total() + mem.quant_scratch_bytes + mem.hpz_bytes,
                     MemoryTier::kDevice, "training state (parameters, gradients, optimizer)"));
    const uint64_t pool = PlanRankMemory(cfg_, opts_.threads).gather_pool_bytes;
    TERN_ASSIGN_OR_RETURN(pool_charge_, Charge::Make(*device_, pool, MemoryTier::kDevice,
                                                     "ZeRO working pool (gathered units)"));
  }
  model_->set_recompute_layers(cfg_.activation_checkpointing);
  model_->set_fpdt({cfg_.fpdt_chunk, cfg_.fpdt_offload});
  inputs_.resize(size_t(cfg_.micro_batch) * cfg_.seq_len);
  targets_.resize(inputs_.size());
  if (cfg_.sp_size > 1) {
    if (opts_.make_sequence) {
      TERN_ASSIGN_OR_RETURN(sequence_, opts_.make_sequence(device_.get()));
    }
    if (sequence_ == nullptr || sequence_->size() != cfg_.sp_size)
      return absl::FailedPreconditionError(
          absl::StrCat("sequence_parallel_size ", cfg_.sp_size, ": the rank has ",
                       sequence_ ? absl::StrCat("a group of ", sequence_->size()) : "no group"));
    sp_rank_ = sequence_->rank();
    positions_ = cfg_.fpdt_chunk > 0
                     ? sequence::FpdtPositions(cfg_.seq_len, cfg_.sp_size, sp_rank_,
                                               cfg_.fpdt_chunk / cfg_.sp_size)
                     : sequence::ContiguousPositions(cfg_.seq_len, cfg_.sp_size, sp_rank_);
    local_inputs_.resize(size_t(cfg_.micro_batch) * positions_.size());
    local_targets_.resize(local_inputs_.size());
    model_->set_sequence(sequence_.get(), positions_);
  }
  // Each rank holds seq_len / sp_size tokens of every sample.
  TERN_RETURN_IF_ERROR(model_->Reserve(cfg_.micro_batch, cfg_.seq_len / cfg_.sp_size));
  if (ckpt_) {
    TERN_ASSIGN_OR_RETURN(start_step_, ckpt_->Start(*state_, model_->params(), *train_data_));
    start_samples_ = ckpt_->resumed_samples();
  }
  return absl::OkStatus();
}

absl::Status Trainer::InitCheckpointing() {
  if (cfg_.checkpoint.dir.empty()) return absl::OkStatus();  // the spec refuses load without dir
  CheckpointingOptions co;
  co.rank = opts_.rank;
  co.ranks = cfg_.world_size();
  co.gather = opts_.all_gather_bytes;
  co.all_reduce = opts_.all_reduce_sum;
  co.sink = opts_.sink;
  co.round = opts_.round;
  TERN_ASSIGN_OR_RETURN(ckpt_, Checkpointing::Create(cfg_, std::move(co)));
  return absl::OkStatus();
}

absl::StatusOr<double> Trainer::CheckpointStep(int64_t steps_done, const StepMetrics& m, bool now) {
  if (!ckpt_) return 0.0;
  auto t0 = Clock::now();
  TERN_RETURN_IF_ERROR(ckpt_->Poll());
  if (now || ckpt_->Due(steps_done))
    TERN_RETURN_IF_ERROR(ckpt_->Save(steps_done, SamplesBefore(steps_done), *state_,
                                     model_->params(), *train_data_, m));
  return MsSince(t0);
}

uint64_t Trainer::SamplesBefore(int64_t step) const {
  return start_samples_ + static_cast<uint64_t>(step - start_step_) * cfg_.global_batch;
}

absl::Status Trainer::StopOnOrder(int64_t steps_done) {
  auto t0 = Clock::now();
  if (ckpt_) TERN_RETURN_IF_ERROR(ckpt_->Finish());  // the write of steps_done, committed
  opts_.control->set_stopped(steps_done);
  if (opts_.sink && opts_.rank == 0) {
    nlohmann::json j = {{"step", steps_done},
                        {"checkpoint", ckpt_ != nullptr},
                        {"commit_ms", MsSince(t0)},
                        {"reason", opts_.control->reason()}};
    opts_.sink->OnEvent("stopped",
                        j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return absl::OkStatus();
}

double Trainer::LoadMicroBatch(uint64_t first, int micro, int64_t eval_index) {
  if (eval_index >= 0) {
    val_data_->EvalBatch(eval_index, cfg_.micro_batch, inputs_.data(), targets_.data());
  } else {
    // Every rank of a sequence-parallel group loads the same sample (data rank = rank / sp).
    train_data_->BatchFrom(first, micro, opts_.rank / cfg_.sp_size, cfg_.dp_size, cfg_.micro_batch,
                           cfg_.accum, inputs_.data(), targets_.data());
  }
  if (cfg_.sp_size == 1) return 1.0;
  sequence::SliceByPositions(inputs_.data(), cfg_.micro_batch, cfg_.seq_len, positions_,
                             local_inputs_.data());
  sequence::SliceByPositions(targets_.data(), cfg_.micro_batch, cfg_.seq_len, positions_,
                             local_targets_.data());
  // The model's loss is the mean over this rank's targets; weighted by this share, the group's
  // losses (and gradients) sum to the mean over the whole sequence's.
  const int64_t total = sequence::CountTargets(targets_.data(), int64_t(targets_.size()));
  const int64_t local =
      sequence::CountTargets(local_targets_.data(), int64_t(local_targets_.size()));
  return total > 0 ? double(local) / double(total) : 0.0;
}

absl::StatusOr<double> Trainer::TrainStep(int64_t step, StepMetrics* m, StepOrders* orders) {
  double loss_sum = 0;
  const uint64_t first = SamplesBefore(step);
  const bool sp = cfg_.sp_size > 1;
  int32_t* in = sp ? local_inputs_.data() : inputs_.data();
  int32_t* tgt = sp ? local_targets_.data() : targets_.data();
  for (int micro = 0; micro < cfg_.accum; ++micro) {
    const double share = LoadMicroBatch(first, micro, -1);
    const bool last = micro + 1 == cfg_.accum;
    state_->BeginMicroStep(last);
    auto t0 = Clock::now();
    loss_sum += share * model_->Forward(state_->source(), in, tgt, cfg_.micro_batch,
                                        cfg_.seq_len / cfg_.sp_size);
    m->forward_ms += MsSince(t0);
    t0 = Clock::now();
    model_->Backward(state_->source(), float(share / double(cfg_.accum * cfg_.dp_size)));
    m->backward_ms += MsSince(t0);
    TERN_RETURN_IF_ERROR(model_->sequence_status());
  }
  auto t0 = Clock::now();
  TERN_ASSIGN_OR_RETURN(double norm_sq, state_->FinishBackward());
  m->comm_ms += MsSince(t0);
  const double norm = std::sqrt(norm_sq);
  m->grad_norm = norm;
  float mult = 1.0f;
  if (cfg_.grad_clip > 0 && norm > cfg_.grad_clip) mult = float(cfg_.grad_clip / (norm + 1e-6));
  m->lr = schedule_->At(step);
  t0 = Clock::now();
  TERN_RETURN_IF_ERROR(state_->OptimizerStep(cfg_.adamw, m->lr, step + 1, mult));
  m->optimizer_ms += MsSince(t0);
  // The launcher's pending orders ride on the loss all-reduce: every rank sees the same sums,
  // so all of them act after this same step however late each received the order.
  double sums[3] = {loss_sum / cfg_.accum, 0, 0};
  if (opts_.control) {
    sums[1] = opts_.control->stop_requested() ? 1 : 0;
    sums[2] = opts_.control->checkpoint_requested() ? 1 : 0;
  }
  if (opts_.all_reduce_sum) {
    TERN_RETURN_IF_ERROR(opts_.all_reduce_sum(sums, 3));
    sums[0] /= cfg_.dp_size;
  }
  orders->stop = sums[1] > 0;
  orders->checkpoint = sums[2] > 0;
  if (orders->checkpoint && opts_.control) opts_.control->clear_checkpoint();
  return sums[0];
}

absl::StatusOr<double> Trainer::Evaluate() {
  if (!val_data_ || cfg_.eval_iters == 0) return -1.0;
  // Every rank evaluates a disjoint share of the eval batches; the sum is all-reduced.
  double sums[2] = {0, 0};
  // Every rank runs the same number of forwards (ZeRO-3 gathers parameters collectively);
  // a rank past the last batch recomputes one and does not count it.
  const int rounds = (cfg_.eval_iters + cfg_.dp_size - 1) / cfg_.dp_size;
  for (int k = 0; k < rounds; ++k) {
    const int i = opts_.rank / cfg_.sp_size + k * cfg_.dp_size;
    const double share = LoadMicroBatch(0, 0, i % cfg_.eval_iters);
    const bool sp = cfg_.sp_size > 1;
    const double loss =
        model_->Forward(state_->source(), sp ? local_inputs_.data() : inputs_.data(),
                        sp ? local_targets_.data() : targets_.data(), cfg_.micro_batch,
                        cfg_.seq_len / cfg_.sp_size);
    TERN_RETURN_IF_ERROR(model_->sequence_status());
    if (i < cfg_.eval_iters) {  // a sequence-parallel group's shares sum to one batch
      sums[0] += share * loss;
      sums[1] += sp_rank_ == 0 ? 1 : 0;
    }
  }
  if (opts_.all_reduce_sum) TERN_RETURN_IF_ERROR(opts_.all_reduce_sum(sums, 2));
  return sums[1] > 0 ? sums[0] / sums[1] : -1.0;
}

absl::Status Trainer::Run() {
  const auto cost = model::EstimateCost(cfg_.dims, cfg_.seq_len);
  summary_.params = model_->params().total();
  const double tokens_per_step = double(cfg_.global_batch) * cfg_.seq_len;
  std::vector<double> step_ms;
  auto run_start = Clock::now();
  double last_loss = 0;
  for (int64_t step = start_step_; step < cfg_.train_iters; ++step) {
    StepMetrics m;
    m.step = step + 1;
    m.total_steps = cfg_.train_iters;
    auto t0 = Clock::now();
    StepOrders orders;
    TERN_ASSIGN_OR_RETURN(last_loss, TrainStep(step, &m, &orders));
    m.loss = last_loss;
    if (!std::isfinite(m.loss))
      return absl::InternalError(absl::StrCat("step ", m.step, ": loss is ", m.loss,
                                              " --> hint: lower optimizer.params.lr"));
    // The checkpoint stall (staging, or waiting for the previous write) is part of the step.
    TERN_ASSIGN_OR_RETURN(m.checkpoint_ms,
                          CheckpointStep(step + 1, m, orders.stop || orders.checkpoint));
    m.step_ms = MsSince(t0);
    step_ms.push_back(m.step_ms);
    m.tokens_per_s = tokens_per_step / (m.step_ms / 1e3);
    if (opts_.take_comm_bytes) opts_.take_comm_bytes(&m.bytes_intra_node, &m.bytes_inter_node);
    const double elapsed = MsSince(run_start) / 1e3;
    m.eta_s = elapsed / double(step + 1 - start_step_) * double(cfg_.train_iters - step - 1);
    if (opts_.sink) opts_.sink->OnStep(m);
    if (orders.stop && step + 1 < cfg_.train_iters) return StopOnOrder(step + 1);
    // By the second step the ZeRO working pool has reached its high-water mark (stage 3
    // records its access order in the first step and prefetches from the second). After that
    // the report is checked every steps_per_print steps and sent again when a figure changed.
    if (step + 1 == std::min(start_step_ + 2, cfg_.train_iters)) {
      ReportMemory(/*only_if_changed=*/false);
    } else if (step + 1 > start_step_ + 2 && cfg_.steps_per_print > 0 &&
               (step + 1) % cfg_.steps_per_print == 0) {
      ReportMemory(/*only_if_changed=*/true);
    }
    const bool last = step + 1 == cfg_.train_iters;
    if ((cfg_.eval_interval > 0 && (step + 1) % cfg_.eval_interval == 0) || last) {
      TERN_ASSIGN_OR_RETURN(double val, Evaluate());
      if (val >= 0) {
        summary_.val_loss = val;
        if (opts_.sink) opts_.sink->OnEval(step + 1, val);
      }
    }
  }
  if (ckpt_) TERN_RETURN_IF_ERROR(ckpt_->Finish());
  // Steady-state figures skip the first step (allocation and warm-up).
  std::vector<double> timed(step_ms.begin() + (step_ms.size() > 2 ? 1 : 0), step_ms.end());
  summary_.steps = cfg_.train_iters;
  summary_.step_ms_median = Median(timed);
  summary_.tokens_per_s = timed.empty() ? 0.0 : tokens_per_step / (summary_.step_ms_median / 1e3);
  summary_.final_loss = last_loss;
  summary_.model_gflops = cost.flops_per_token * summary_.tokens_per_s / 1e9;
  if (opts_.rank == 0) ComputeMfu();
  summary_.peak_rss_mib = PeakRssMib();
  summary_.device_peak_bytes = device_->usage(MemoryTier::kDevice).peak;
  summary_.host_peak_bytes = device_->usage(MemoryTier::kHost).peak;
  const auto mem = state_->memory();
  summary_.param_bytes = mem.param_bytes;
  summary_.grad_bytes = mem.grad_bytes;
  summary_.optim_bytes = mem.optim_bytes;
  summary_.gather_pool_bytes = mem.gather_pool_bytes;
  if (!opts_.save_final_dir.empty()) TERN_RETURN_IF_ERROR(SaveFinal());
  if (opts_.sink) opts_.sink->OnSummary(summary_);
  return absl::OkStatus();
}

void Trainer::ReportMemory(bool only_if_changed) {
  if (!opts_.sink) return;
  const auto mem = state_->memory();
  const std::array<uint64_t, 6> figures = {mem.param_bytes,         mem.grad_bytes,
                                           mem.optim_bytes,         mem.gather_pool_bytes,
                                           mem.quant_scratch_bytes, mem.hpz_bytes};
  if (only_if_changed && figures == last_memory_) return;
  last_memory_ = figures;
  nlohmann::json j = {{"rank", opts_.rank},
                      {"param_bytes", mem.param_bytes},
                      {"grad_bytes", mem.grad_bytes},
                      {"optim_bytes", mem.optim_bytes},
                      {"gather_pool_bytes", mem.gather_pool_bytes},
                      {"zero_stage", cfg_.zero_stage}};
  if (cfg_.zero.quantized_weights || cfg_.zero.quantized_gradients ||
      cfg_.zero.hpz_partition_size > 1) {
    const auto zpp = state_->zeropp_counters();
    j["quant_scratch_bytes"] = mem.quant_scratch_bytes;
    j["hpz_bytes"] = mem.hpz_bytes;
    j["zeropp_hpz_gathers"] = zpp.hpz_gathers;
    j["zeropp_hpz_fallback_gathers"] = zpp.hpz_fallback_gathers;
    j["zeropp_quantized_gathers"] = zpp.quantized_gathers;
    j["zeropp_quantized_reductions"] = zpp.quantized_reductions;
    j["zeropp_fallback_reductions"] = zpp.fallback_reductions;
  }
  opts_.sink->OnEvent("memory", j.dump());
}

void Trainer::ComputeMfu() {
  const SgemmPeak peak = ResolveSgemmPeak(opts_.threads, opts_.peak_gflops);
  kernels::SetNumThreads(opts_.threads);
  summary_.sgemm_peak_gflops = peak.gflops * cfg_.world_size();
  summary_.peak_source = peak.source;
  summary_.peak_cache = peak.cache;
  summary_.mfu = summary_.model_gflops / summary_.sgemm_peak_gflops;
  if (!opts_.sink) return;
  nlohmann::json j = {{"gflops", peak.gflops},
                      {"threads", opts_.threads},
                      {"ranks", cfg_.world_size()},
                      {"source", peak.source}};
  if (!peak.cache.empty()) j["cache"] = peak.cache;
  opts_.sink->OnEvent("peak", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

absl::Status Trainer::SaveFinal() {
  std::vector<float> params;
  TERN_RETURN_IF_ERROR(state_->GatherParams(&params));
  if (opts_.rank != 0) return absl::OkStatus();
  return SaveModel(opts_.save_final_dir, cfg_.spec.model(), cfg_.dims, model_->params(), params);
}

}  // namespace tern::engine
