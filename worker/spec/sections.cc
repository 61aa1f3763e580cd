// ResolveJob's sections for the parallel layout and the run's infrastructure: resources,
// zero_optimization, checkpoint, elastic.
#include "worker/spec/sections.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/checkpoint/layout.h"
#include "worker/core/text.h"

namespace tern::spec {

void ResolveResources(const tern::v1::JobSpec& spec, const ResolveOptions& o, JobConfig& c,
                      Findings& f) {
  const auto& r = spec.resources();
  c.nodes = r.has_nodes() ? r.nodes() : 1;
  c.ranks_per_node = r.has_ranks_per_node() ? r.ranks_per_node() : 1;
  c.threads_per_rank = r.has_threads_per_rank() ? r.threads_per_rank() : 0;
  c.device_memory_budget = r.device_memory_budget();
  c.host_memory_budget = r.host_memory_budget();
  if (c.nodes < 1) f.Error(absl::StrCat("resources.nodes: must be >= 1, got ", c.nodes));
  if (c.ranks_per_node < 1)
    f.Error(absl::StrCat("resources.ranks_per_node: must be >= 1, got ", c.ranks_per_node));
  if (r.has_threads_per_rank() && c.threads_per_rank < 1)
    f.Error(absl::StrCat("resources.threads_per_rank: must be >= 1, got ", c.threads_per_rank,
                         " --> hint: leave it unset for cores / ranks on the node"));
  const int64_t world = o.world_size > 0 ? o.world_size : int64_t{c.nodes} * c.ranks_per_node;
  c.dp_size = world >= 1 && world <= (1 << 20) ? static_cast<int>(world) : 1;
}

void ResolveSequenceParallel(const tern::v1::JobSpec& spec, JobConfig& c, Findings& f) {
  if (!spec.has_sequence_parallel_size()) return;
  const int p = spec.sequence_parallel_size();
  if (p < 1) {
    f.Error(absl::StrCat("sequence_parallel_size: must be >= 1, got ", p));
    return;
  }
  const int world = c.dp_size;  // ResolveResources: every rank
  bool ok = true;
  auto bad = [&](std::string m) {
    f.Error(absl::StrCat("sequence_parallel_size: ", p, " ", m));
    ok = false;
  };
  if (world % p != 0)
    bad(absl::StrCat("does not divide the world size ", world,
                     " --> hint: run a multiple of it (tern train --ranks, resources.nodes x "
                     "ranks_per_node)"));
  if (c.seq_len > 0 && c.seq_len % p != 0)
    bad(absl::StrCat("does not divide data.seq_len ", c.seq_len,
                     " (each rank holds seq_len / sequence_parallel_size tokens)"));
  if (c.dims_resolved && c.dims.NKV < p)
    bad(absl::StrCat("exceeds num_key_value_heads ", c.dims.NKV,
                     " (Ulysses splits the attention heads by key/value head: every rank of the "
                     "group needs at least one)"));
  if (p > 1 && spec.elastic().enabled())
    bad("with elastic.enabled: elastic rounds with sequence parallelism are not supported");
  const auto& fp = spec.sequence_parallel().fpdt();
  const int chunk = fp.has_chunk_size() ? fp.chunk_size() : 4096;
  if (p > 1 && fp.enabled() && chunk >= 1 && (chunk % p != 0 || c.seq_len % chunk != 0))
    bad(absl::StrCat("with sequence_parallel.fpdt.chunk_size ", chunk,
                     ": over a sequence-parallel group the chunk (global tokens) must be a "
                     "multiple of the group and divide data.seq_len ",
                     c.seq_len));
  if (!ok) return;
  c.sp_size = p;
  c.dp_size = world / p;
}

void ResolveZero(const tern::v1::JobSpec& spec, JobConfig& c, Findings& f) {
  const auto& z = spec.zero_optimization();
  zero::ZeroOptions& o = c.zero;
  o.stage = z.has_stage() ? z.stage() : 0;
  if (o.stage < 0 || o.stage > 3) {
    f.Error(absl::StrCat("zero_optimization.stage: must be 0, 1, 2 or 3, got ", o.stage));
    o.stage = 0;
  }
  c.zero_stage = o.stage;
  if (z.has_overlap_comm()) o.overlap_comm = z.overlap_comm();
  auto size = [&](const char* name, bool has, int64_t v, int64_t* out, bool positive) {
    if (!has) return;
    if (positive ? v <= 0 : v < 0) {
      f.Error(absl::StrCat("zero_optimization.", name, ": must be ", positive ? "> 0" : ">= 0",
                           ", got ", v));
    } else if (out != nullptr) {
      *out = v;
    }
  };
  size("reduce_bucket_size", z.has_reduce_bucket_size(), z.reduce_bucket_size(),
       &o.reduce_bucket_size, true);
  size("allgather_bucket_size", z.has_allgather_bucket_size(), z.allgather_bucket_size(), nullptr,
       true);
  size("stage3_prefetch_bucket_size", z.has_stage3_prefetch_bucket_size(),
       z.stage3_prefetch_bucket_size(), &o.prefetch_bucket_size, false);
  size("stage3_param_persistence_threshold", z.has_stage3_param_persistence_threshold(),
       z.stage3_param_persistence_threshold(), &o.persistence_threshold, false);
  size("stage3_max_live_parameters", z.has_stage3_max_live_parameters(),
       z.stage3_max_live_parameters(), nullptr, false);
  size("stage3_max_reuse_distance", z.has_stage3_max_reuse_distance(),
       z.stage3_max_reuse_distance(), nullptr, false);

  // Accepted tuning keys without effect (yet): named, never silently dropped.
  const std::string at = absl::StrCat(" at stage ", o.stage);
  if (z.has_reduce_bucket_size() && o.stage >= 1)
    f.Warn("zero_optimization.reduce_bucket_size: no effect" + at +
           " (gradients are reduce-scattered one layer at a time)");
  if (z.has_allgather_bucket_size())
    f.Warn(
        "zero_optimization.allgather_bucket_size: no effect yet (parameters are gathered one "
        "layer at a time)");
  if (o.stage < 3) {
    for (auto [has, name] :
         {std::pair{z.has_stage3_prefetch_bucket_size(), "prefetch_bucket_size"},
          std::pair{z.has_stage3_param_persistence_threshold(), "param_persistence_threshold"}}) {
      if (has) f.Warn(absl::StrCat("zero_optimization.stage3_", name, ": no effect", at));
    }
  }
  if (z.has_stage3_max_live_parameters())
    f.Warn(
        "zero_optimization.stage3_max_live_parameters: no effect yet (the prefetch budget "
        "stage3_prefetch_bucket_size bounds gathered parameters)");
  if (z.has_stage3_max_reuse_distance())
    f.Warn(
        "zero_optimization.stage3_max_reuse_distance: no effect yet (gathered layers are "
        "released after use)");
  if (z.has_contiguous_gradients() && !z.contiguous_gradients())
    f.Warn(
        "zero_optimization.contiguous_gradients: false has no effect (gradients are always "
        "contiguous)");
  if (z.has_reduce_scatter() && !z.reduce_scatter())
    f.Warn(
        "zero_optimization.reduce_scatter: false has no effect (stages 1-3 always "
        "reduce-scatter)");

  // ZeRO++: stage 3 only. hpZ's size must also equal the ranks per node (checked where the
  // groups are built).
  const std::string need3 = absl::StrCat(": needs zero_optimization.stage 3, got ", o.stage);
  if (z.zero_quantized_weights()) {
    if (o.stage != 3) f.Error("zero_optimization.zero_quantized_weights" + need3);
    o.quantized_weights = true;
  }
  if (z.zero_quantized_gradients()) {
    if (o.stage != 3) f.Error("zero_optimization.zero_quantized_gradients" + need3);
    o.quantized_gradients = true;
  }
  const auto block = [&](const char* name, bool has, int64_t b, int64_t* out) {
    if (!has) return;
    if (b < 2 || b > 16384 || b % 2 != 0) {
      f.Error(absl::StrCat("zero_optimization.", name, ": ", b, " must be even and in [2, 16384]"));
    } else {
      *out = b;
    }
    if (!z.zero_quantized_weights() && !z.zero_quantized_gradients())
      f.Warn(
          absl::StrCat("zero_optimization.", name,
                       ": no effect without zero_quantized_weights or zero_quantized_gradients"));
  };
  block("zero_quantization_block", z.has_zero_quantization_block(), z.zero_quantization_block(),
        &o.quant_block);
  block("zero_gradient_quantization_block", z.has_zero_gradient_quantization_block(),
        z.zero_gradient_quantization_block(), &o.grad_quant_block);
  if (o.quant_block % o.grad_quant_block != 0)
    f.Error(absl::StrCat("zero_optimization.zero_gradient_quantization_block: ", o.grad_quant_block,
                         " must divide zero_quantization_block ", o.quant_block));
  if (z.has_zero_hpz_partition_size()) {
    const int h = z.zero_hpz_partition_size();
    if (h < 1) {
      f.Error(absl::StrCat("zero_optimization.zero_hpz_partition_size: must be >= 1, got ", h));
    } else if (h > 1 && o.stage != 3) {
      f.Error(absl::StrCat("zero_optimization.zero_hpz_partition_size: ", h,
                           " needs zero_optimization.stage 3, got ", o.stage));
    } else {
      o.hpz_partition_size = h;
    }
  }
}

void ResolveCheckpoint(const tern::v1::JobSpec& spec, const ResolveOptions& ro, JobConfig& c,
                       Findings& f) {
  const auto& k = spec.checkpoint();
  const auto& w = k.writer();
  CheckpointOptions& o = c.checkpoint;
  o.dir = k.dir();
  if (k.has_interval() && k.interval() < 0)
    f.Error(absl::StrCat("checkpoint.interval: must be >= 0, got ", k.interval()));
  if (k.has_keep_last() && k.keep_last() < 1)
    f.Error(absl::StrCat("checkpoint.keep_last: must be >= 1, got ", k.keep_last()));
  if (w.has_block_size() && (w.block_size() <= 0 || w.block_size() % ckpt::kAlign != 0 ||
                             w.block_size() > (int64_t{1} << 30)))
    f.Error(absl::StrCat("checkpoint.writer.block_size: ", w.block_size(),
                         " must be a multiple of 4096 in [4096, 1 GiB]"));
  if (w.has_queue_depth() && (w.queue_depth() < 1 || w.queue_depth() > 1024))
    f.Error(
        absl::StrCat("checkpoint.writer.queue_depth: ", w.queue_depth(), " must be in [1, 1024]"));
  if (w.has_io_buffer_size() && w.io_buffer_size() < 0)
    f.Error(
        absl::StrCat("checkpoint.writer.io_buffer_size: must be >= 0, got ", w.io_buffer_size()));
  if (!k.load().empty() && k.load() != "latest" && ckpt::ParseStepDirName(k.load()) < 0)
    f.Error(absl::StrCat("checkpoint.load: '", k.load(),
                         "' is neither \"latest\" nor a step name like step-000120"));
  o.init_from = k.init_from();
  if (!o.init_from.empty() && ro.check_files) {
    std::error_code ec;
    const std::filesystem::path d(o.init_from);
    const bool weights = std::filesystem::exists(d / "model.safetensors", ec) ||
                         std::filesystem::exists(d / "model.safetensors.index.json", ec);
    const bool ckpt = std::filesystem::exists(d / "latest", ec) ||
                      std::filesystem::exists(d / "manifest.json", ec);
    if (!weights && !ckpt)
      f.Error(absl::StrCat("checkpoint.init_from: ", Printable(o.init_from),
                           " holds neither model.safetensors, model.safetensors.index.json nor a "
                           "Tern checkpoint"));
  }
  if (o.dir.empty()) {
    const bool any = k.has_interval() || k.has_keep_last() || k.has_async() || k.has_writer() ||
                     !k.load().empty();
    if (any && !ro.default_checkpoint_dir)
      f.Error(
          "checkpoint.dir: must be set when other checkpoint keys are (no checkpoints are "
          "written without it)");
    if (!ro.default_checkpoint_dir) return;
  }
  o.interval = k.has_interval() ? k.interval() : 0;
  o.keep_last = k.has_keep_last() ? k.keep_last() : 2;
  o.async = k.has_async() ? k.async() : true;
  if (w.has_block_size()) o.block_size = static_cast<uint64_t>(w.block_size());
  if (w.has_queue_depth()) o.queue_depth = w.queue_depth();
  o.load = k.load();
  if (w.has_io_buffer_size())
    f.Warn("checkpoint.writer.io_buffer_size: no effect yet (staging holds the whole shard)");
}

std::vector<int> ElasticNodeCounts(const JobConfig& c) {
  std::vector<int> out;
  for (int n = c.elastic.min_nodes; n <= c.elastic.max_nodes; ++n) {
    const int64_t per_step = int64_t(c.micro_batch) * n * c.ranks_per_node;
    if (per_step > 0 && (!c.elastic.keep_global_batch || c.global_batch % per_step == 0))
      out.push_back(n);
  }
  return out;
}

RoundBatch ElasticRoundBatch(const JobConfig& c, int nodes) {
  RoundBatch b;
  b.micro_batch = c.micro_batch;
  const int64_t per_micro = int64_t(c.micro_batch) * nodes * c.ranks_per_node;
  if (c.elastic.keep_global_batch) {
    b.global_batch = c.global_batch;
    b.accum = per_micro > 0 ? static_cast<int>(c.global_batch / per_micro) : c.accum;
  } else {
    b.accum = c.accum;
    b.global_batch = per_micro * c.accum;
  }
  return b;
}

void ResolveElastic(const tern::v1::JobSpec& spec, const ResolveOptions& ro, JobConfig& c,
                    Findings& f) {
  const auto& e = spec.elastic();
  ElasticOptions& o = c.elastic;
  o.enabled = e.has_enabled() && e.enabled();
  o.min_nodes = e.has_min_nodes() ? e.min_nodes() : 1;
  o.max_nodes = e.has_max_nodes() ? e.max_nodes() : c.nodes;
  if (o.min_nodes < 1) f.Error(absl::StrCat("elastic.min_nodes: must be >= 1, got ", o.min_nodes));
  if (o.max_nodes < o.min_nodes)
    f.Error(absl::StrCat("elastic.max_nodes: ", o.max_nodes, " must be >= elastic.min_nodes ",
                         o.min_nodes));
  if (e.has_min_nodes() && o.min_nodes > c.nodes)
    f.Error(absl::StrCat("elastic.min_nodes: ", o.min_nodes, " exceeds resources.nodes ", c.nodes));
  o.max_restarts = e.has_max_restarts() ? e.max_restarts() : 3;
  if (o.max_restarts < 0)
    f.Error(absl::StrCat("elastic.max_restarts: must be >= 0, got ", o.max_restarts));
  if (e.has_keep() && e.keep() != "global_batch" && e.keep() != "micro_batch")
    f.Error(absl::StrCat("elastic.keep: \"", Printable(e.keep()),
                         "\" is not \"global_batch\" or \"micro_batch\""));
  o.keep_global_batch = !e.has_keep() || e.keep() != "micro_batch";
  if (!o.enabled) {
    if (e.has_min_nodes() || e.has_max_nodes() || e.has_max_restarts() || e.has_keep())
      f.Warn("elastic.min_nodes/max_nodes/max_restarts/keep: no effect without elastic.enabled");
    return;
  }
  // Every node count in range must keep the global batch, or the job could resume into a size
  // it cannot train at.
  if (c.micro_batch > 0 && c.dp_size > 0 && c.nodes > 0 && o.keep_global_batch) {
    const std::vector<int> ok = ElasticNodeCounts(c);
    std::vector<int> bad;
    for (int n = o.min_nodes; n <= o.max_nodes; ++n)
      if (std::find(ok.begin(), ok.end(), n) == ok.end()) bad.push_back(n);
    if (!bad.empty())
      f.Error(absl::StrCat(
          "elastic: train_batch_size ", c.global_batch, " with train_micro_batch_size_per_gpu ",
          c.micro_batch, " and ", c.ranks_per_node, " rank(s) per node cannot be kept on ",
          absl::StrJoin(bad, ", "), " node(s) (it must divide into micro batch x ranks)",
          ok.empty() ? std::string()
                     : absl::StrCat("; node counts that work: ", absl::StrJoin(ok, ", ")),
          " --> hint: narrow elastic.min_nodes/max_nodes or pick a train_batch_size divisible "
          "by every size"));
  }
  if (!ro.cluster) {
    f.Warn("elastic.enabled: no effect outside a ternd cluster (tern train has no nodes to lose)");
    return;
  }
  if (c.checkpoint.interval == 0)
    f.Warn(
        "elastic.enabled: checkpoint.interval is 0, so a resume restarts from step 0 --> "
        "hint: checkpoint.interval=1 loses at most one step");
}

}  // namespace tern::spec
