// ResolveJob: the model, data, batch and training sections; the ZeRO, checkpoint, elastic and
// resources sections are in sections.cc.
#include <algorithm>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/core/text.h"
#include "worker/spec/job_config.h"
#include "worker/spec/sections.h"

namespace tern::spec {
namespace {

void ResolveModel(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                  Findings& f) {
  c.seq_len = spec.data().has_seq_len() ? spec.data().seq_len() : 1024;
  if (c.seq_len <= 0) f.Error(absl::StrCat("data.seq_len: must be > 0, got ", c.seq_len));
  const std::string& file = spec.model().config_file();
  std::error_code ec;
  if (!o.check_files && !file.empty() && !std::filesystem::exists(file, ec)) {
    return;  // on the workers only: the ranks resolve the model when they start
  }
  auto dims = model::ResolveModelDims(spec.model(), c.seq_len);
  if (!dims.ok()) {
    f.Error(std::string(dims.status().message()));
    return;
  }
  c.dims = *dims;
  c.dims_resolved = true;
  if (c.seq_len > c.dims.max_T)
    f.Error(absl::StrCat("data.seq_len: ", c.seq_len, " exceeds model.max_position_embeddings ",
                         c.dims.max_T));
  if (c.dims.sliding_window > 0 && c.seq_len > c.dims.sliding_window)
    f.Error(absl::StrCat("model.sliding_window: ", c.dims.sliding_window, " < data.seq_len ",
                         c.seq_len, ": sliding-window attention is not implemented",
                         " --> hint: use data.seq_len <= ", c.dims.sliding_window));
}

void ResolveData(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                 Findings& f) {
  std::error_code ec;
  c.data_path = spec.data().path();
  if (c.data_path.empty()) {
    f.Error("data.path: must name a dataset prefix (PREFIX.bin + PREFIX.idx)");
  } else if (o.check_files) {
    for (const char* ext : {".bin", ".idx"}) {
      if (!std::filesystem::exists(c.data_path + ext, ec))
        f.Error(absl::StrCat("data.path: ", c.data_path, ext, " does not exist"));
    }
  }
  c.val_path = spec.data().val_path();
  if (c.val_path.empty() && !c.data_path.empty() &&
      std::filesystem::exists(c.data_path + "_val.idx", ec))
    c.val_path = c.data_path + "_val";
  if (!spec.data().val_path().empty() && o.check_files &&
      !std::filesystem::exists(c.val_path + ".idx", ec))
    f.Error(absl::StrCat("data.val_path: ", c.val_path, ".idx does not exist"));
  if (!spec.data().tokenizer().empty() && spec.data().tokenizer() != "byte")
    f.Error(
        absl::StrCat("data.tokenizer: '", spec.data().tokenizer(), "' is not supported (byte)"));
}

// DeepSpeed's rule: any two of (train_batch_size, micro, accum) determine the third.
void ResolveBatch(const tern::v1::JobSpec& spec, JobConfig& c, Findings& f) {
  const bool has_micro = spec.has_train_micro_batch_size_per_gpu();
  const bool has_accum = spec.has_gradient_accumulation_steps();
  const bool has_tbs = spec.has_train_batch_size();
  bool bad = false;
  auto at_least_one = [&](const char* name, bool has, int64_t v) {
    if (!has || v >= 1) return;
    f.Error(absl::StrCat(name, ": must be >= 1, got ", v));
    bad = true;
  };
  at_least_one("train_micro_batch_size_per_gpu", has_micro, spec.train_micro_batch_size_per_gpu());
  at_least_one("gradient_accumulation_steps", has_accum, spec.gradient_accumulation_steps());
  at_least_one("train_batch_size", has_tbs, spec.train_batch_size());
  if (bad) return;
  const int64_t micro = has_micro ? spec.train_micro_batch_size_per_gpu() : 0;
  int64_t accum = has_accum ? spec.gradient_accumulation_steps() : 0;
  const int64_t tbs = has_tbs ? spec.train_batch_size() : 0;
  int64_t m = micro;
  if (tbs > 0 && m > 0 && accum == 0) {
    accum = tbs / (m * c.dp_size);
  } else if (tbs > 0 && m == 0) {
    if (accum == 0) accum = 1;
    m = tbs / (accum * c.dp_size);
  }
  if (m == 0) m = 1;
  if (accum == 0) accum = 1;
  // The kernels index a micro-batch's tokens with 32-bit ints.
  constexpr int64_t kMaxTokens = std::numeric_limits<int32_t>::max();
  if (m > kMaxTokens / std::max(1, c.seq_len) || accum > kMaxTokens) {
    f.Error(absl::StrCat("train_micro_batch_size_per_gpu: ", m, " sequences x data.seq_len ",
                         c.seq_len, " (gradient_accumulation_steps ", accum,
                         ") is more than 2^31-1 tokens per micro-batch"));
    return;
  }
  c.micro_batch = static_cast<int>(m);
  c.accum = static_cast<int>(accum);
  c.global_batch = m * accum * c.dp_size;
  if (m < 1 || accum < 1 || (tbs > 0 && tbs != c.global_batch))
    f.Error(absl::StrCat(
        "train_batch_size: ", tbs, " != train_micro_batch_size_per_gpu ", m,
        " x gradient_accumulation_steps ", accum, " x data-parallel ranks ", c.dp_size,
        c.sp_size > 1 ? absl::StrCat(" (world / sequence_parallel_size ", c.sp_size, ")")
                      : std::string()));
}

void ResolveTraining(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                     Findings& f) {
  c.train_iters = spec.has_train_iters() ? spec.train_iters() : 0;
  if (!spec.has_train_iters())
    f.Error("train_iters: missing (number of optimizer steps, > 0)");
  else if (c.train_iters <= 0)
    f.Error(absl::StrCat("train_iters: must be > 0, got ", c.train_iters));
  c.eval_interval = spec.has_eval_interval() ? spec.eval_interval() : 0;
  if (c.eval_interval < 0)
    f.Error(absl::StrCat("eval_interval: must be >= 0, got ", c.eval_interval));
  c.eval_iters = spec.has_eval_iters() ? spec.eval_iters() : 8;
  if (c.eval_iters < 0) f.Error(absl::StrCat("eval_iters: must be >= 0, got ", c.eval_iters));
  c.steps_per_print = spec.has_steps_per_print() ? spec.steps_per_print() : 10;
  if (c.steps_per_print <= 0)
    f.Error(absl::StrCat("steps_per_print: must be > 0, got ", c.steps_per_print));
  c.seed = spec.has_seed() ? spec.seed() : 1234;
  c.grad_clip = spec.has_gradient_clipping() ? spec.gradient_clipping() : 0.0f;
  if (!(c.grad_clip >= 0)) f.Error("gradient_clipping: must be >= 0");
  if (!o.cluster && !spec.log_dir().empty())
    f.Warn("log_dir: TensorBoard event files are written by ternd; tern train writes none");

  auto adamw = optim::ResolveAdamW(spec.optimizer());
  if (!adamw.ok()) {
    f.Error(std::string(adamw.status().message()));
  } else {
    c.adamw = *adamw;
    auto sched = optim::LrSchedule::Create(spec.scheduler(), c.adamw.lr,
                                           c.train_iters > 0 ? c.train_iters : 1);
    if (!sched.ok()) f.Error(std::string(sched.status().message()));
  }
  if (spec.optimizer().params().has_torch_adam())
    f.Warn("optimizer.params.torch_adam: Tern has one AdamW implementation; the key has no effect");
  const auto& ac = spec.activation_checkpointing();
  c.activation_checkpointing = ac.enabled();
  if (ac.partition_activations())
    f.Error(
        "activation_checkpointing.partition_activations: needs model parallelism, which Tern "
        "does not have --> hint: remove it");
  if (ac.cpu_checkpointing())
    f.Error(
        "activation_checkpointing.cpu_checkpointing: not supported (checkpoints stay in "
        "memory) --> hint: remove it");
  if (ac.has_number_checkpoints())
    f.Error(
        "activation_checkpointing.number_checkpoints: not supported (every layer is a "
        "checkpoint) --> hint: remove it");
  for (const auto& [set, key] :
       {std::pair{ac.contiguous_memory_optimization(), "contiguous_memory_optimization"},
        std::pair{ac.synchronize_checkpoint_boundary(), "synchronize_checkpoint_boundary"},
        std::pair{ac.profile(), "profile"}}) {
    if (set) f.Warn(absl::StrCat("activation_checkpointing.", key, ": accepted; it has no effect"));
  }
  if ((ac.has_partition_activations() || ac.has_cpu_checkpointing() ||
       ac.has_contiguous_memory_optimization() || ac.has_synchronize_checkpoint_boundary() ||
       ac.has_profile()) &&
      !ac.enabled())
    f.Warn("activation_checkpointing: the section has no effect without \"enabled\": true");
  const auto& fp = spec.sequence_parallel().fpdt();
  if (fp.enabled()) {
    c.fpdt_chunk = fp.has_chunk_size() ? fp.chunk_size() : 4096;
    c.fpdt_offload = fp.has_offload() ? fp.offload() : true;
    if (c.fpdt_chunk < 1)
      f.Error(absl::StrCat("sequence_parallel.fpdt.chunk_size: must be >= 1, got ", c.fpdt_chunk));
  } else if (fp.has_chunk_size() || fp.has_offload()) {
    f.Warn("sequence_parallel.fpdt: the section has no effect without \"enabled\": true");
  }
  if (spec.resources().host_memory_budget() > 0 && !(c.fpdt_chunk > 0 && c.fpdt_offload))
    f.Warn(
        "resources.host_memory_budget: only FPDT's offloaded store uses the host tier; without "
        "sequence_parallel.fpdt (offload on) it has no effect");
  const auto& sp = spec.scheduler().params();
  if (sp.has_last_batch_iteration() && sp.last_batch_iteration() != -1)
    f.Error(absl::StrCat("scheduler.params.last_batch_iteration: ", sp.last_batch_iteration(),
                         " is not supported (the schedule continues from the checkpoint's step)",
                         " --> hint: remove it, or set -1"));
}

}  // namespace

void Findings::Error(std::string message) { errors.push_back(std::move(message)); }
void Findings::Warn(std::string message) { warnings.push_back(std::move(message)); }

absl::StatusOr<JobConfig> ResolveJob(const tern::v1::JobSpec& spec, const ResolveOptions& o) {
  JobConfig c;
  c.spec = spec;
  Findings f;
  // The name is shown in listings and logs: one policy for every name (worker/core/text.h).
  if (auto st = CheckName("name", spec.name(), /*allow_empty=*/true); !st.ok())
    f.Error(std::string(st.message()));
  if (o.cluster && spec.ByteSizeLong() > kMaxClusterSpecBytes)
    f.Error(absl::StrCat("job spec: ", spec.ByteSizeLong(), " bytes (serialized) exceeds ternd's ",
                         kMaxClusterSpecBytes, "-byte limit for a submitted spec"));
  ResolveModel(spec, o, c, f);
  ResolveResources(spec, o, c, f);
  ResolveSequenceParallel(spec, c, f);
  ResolveBatch(spec, c, f);
  ResolveTraining(spec, o, c, f);
  ResolveData(spec, o, c, f);
  ResolveZero(spec, c, f);
  ResolveCheckpoint(spec, o, c, f);
  ResolveElastic(spec, o, c, f);
  if (!f.errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(f.errors, "; "));
  c.warnings = std::move(f.warnings);
  return c;
}

}  // namespace tern::spec
