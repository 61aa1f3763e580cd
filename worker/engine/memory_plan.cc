#include "worker/engine/memory_plan.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"
#include "worker/model/transformer.h"
#include "worker/sequence/head_split.h"
#include "worker/zero/zero_state.h"

namespace tern::engine {
namespace {

// Elements Transformer::Reserve(B, T) allocates (what activation_bytes() counts).
// `recompute`: activation checkpointing keeps one layer's activations (shared), not L.
uint64_t ActivationElems(const model::ModelDims& d, int B, int T, bool recompute) {
  const uint64_t N = uint64_t(B) * T, C = d.C, F = d.F, V = d.V, QKV = d.QKV();
  const uint64_t A = uint64_t(d.NH) * d.HS, fc = d.is_gpt2() ? F : 2 * F;
  const uint64_t mean = d.is_gpt2() ? N : 0;   // layernorm keeps means, rmsnorm does not
  const uint64_t per_layer = 3 * N * C         // ln1, mid, ln2
                             + 2 * (N + mean)  // ln1/ln2 rstd (+ mean)
                             + N * QKV + uint64_t(B) * d.NH * T  // qkv, attention lse
                             + N * A + N * fc + N * F;
  uint64_t n = uint64_t(d.L + 1) * N * C + uint64_t(recompute ? 1 : d.L) * per_layer;
  const uint64_t rope_sets = d.is_gpt2() ? 0 : d.longrope ? 2 : 1;  // LongRoPE: short and long
  n += N * C + N + mean;                                            // final norm
  n += 3 * N * V + N;                         // logits, probs, dlogits, losses
  n += 4 * N * C;                             // dx, dtmp, dln, proj
  n += N * QKV + N * A + N * fc + N * F;      // dqkv, datty, dfc, dact
  n += rope_sets * uint64_t(d.max_T) * d.HS;  // RoPE cos and sin tables
  return n;
}

// Sequence parallelism over `sp` ranks of n = T / sp tokens each (T = the whole sequence): the
// model's head-sharded q/k/v, output and lse per kept layer and its backward scratch
// (Transformer::ReserveSequence), plus the exchange's pack and unpack buffers at their largest
// (UlyssesExchange). The largest head block (rank 0's) bounds every rank.
uint64_t SequenceElems(const model::ModelDims& d, int B, int T, int sp, bool recompute) {
  if (sp <= 1) return 0;
  auto blocks = sequence::PlanHeadSplit(d.NH, d.NKV, sp);
  if (!blocks.ok()) return 0;  // the spec pipeline refused it
  const uint64_t nh = (*blocks)[0].q_count, nkv = (*blocks)[0].kv_count, hs = d.HS;
  const uint64_t Tg = uint64_t(B) * T, qkv = (nh + 2 * nkv) * hs, att = nh * hs;
  const uint64_t per_layer = Tg * (qkv + att) + uint64_t(B) * nh * T;
  const uint64_t n = uint64_t(B) * (T / sp);
  const uint64_t send = std::max({n * d.QKV(), Tg * qkv, Tg * att, n * uint64_t(d.NH) * hs});
  return uint64_t(recompute ? 1 : d.L) * per_layer + Tg * (qkv + att) + 2 * send;
}

// FPDT (Transformer::ReserveFpdt): the chunk buffers on the device and the store. T is the
// whole sequence; over sp ranks each holds T / sp tokens in local chunks of chunk / sp, and the
// attention buffers hold the largest head block (rank 0's) over the P chunks of a span, plus the
// exchange's pack and unpack buffers for one chunk.
struct FpdtElems {
  uint64_t device = 0, store = 0;
};
FpdtElems FpdtActivationElems(const model::ModelDims& d, int B, int T, int sp, int chunk) {
  const uint64_t P = std::max(1, sp), Tl = T / P;
  uint64_t nh = d.NH, nkv = d.NKV;
  if (P > 1) {
    auto blocks = sequence::PlanHeadSplit(d.NH, d.NKV, int(P));
    if (!blocks.ok()) return {};  // the spec pipeline refused it
    nh = (*blocks)[0].q_count;
    nkv = (*blocks)[0].kv_count;
  }
  const uint64_t c = P > 1 ? chunk / P : std::min<uint64_t>(chunk, Tl), R = uint64_t(B) * c;
  const uint64_t Rh = R * P, N = uint64_t(B) * Tl, Nh = N * P;
  const uint64_t C = d.C, F = d.F, V = d.V, QKV = d.QKV(), A = uint64_t(d.NH) * d.HS;
  const uint64_t QKVh = (nh + 2 * nkv) * d.HS, Ah = nh * d.HS, NHh = nh;
  const uint64_t fc = d.is_gpt2() ? F : 2 * F, mean = d.is_gpt2() ? R : 0;
  const uint64_t rope = d.is_gpt2() ? 0 : uint64_t(d.HS) / 2;
  FpdtElems e;
  e.device = R * (9 * C + QKV + 2 * A + 2 * fc + 2 * F + 3 * V + 1 + 2) + 2 * mean  // local rows
             + Rh * ((P > 1 ? QKVh + Ah : 0) + 4 * QKVh + Ah + 2 * NHh)  // head-sharded rows
             + 2 * Rh * (2 * QKVh + 2 * Ah + NHh)        // the backward's prefetch slots
             + 2 * c * rope                              // rope rows
             + 3 * R * sizeof(int32_t) / sizeof(float);  // tokens, targets, positions
  if (P > 1) e.device += 2 * std::max({R * QKV, Rh * QKVh, Rh * Ah, R * A});  // the exchange
  e.store = uint64_t(d.L + 1) * N * C + Nh * (2 * QKVh + 2 * Ah + NHh) + N * C +
            (P > 1 ? N * A : 0) + 2 * Tl * P * rope;
  return e;
}

}  // namespace

RankMemoryPlan PlanRankMemory(const tern::spec::JobConfig& c, [[maybe_unused]] int threads) {
  RankMemoryPlan p;
  model::Transformer<float> shape(c.dims);  // builds only the parameter table
  const auto& table = shape.params();
  const uint64_t total = table.total();
  p.init_bytes = total * 4;
  if (c.fpdt_chunk > 0) {
    const FpdtElems e =
        FpdtActivationElems(c.dims, c.micro_batch, c.seq_len, c.sp_size, c.fpdt_chunk);
    p.activation_bytes = 4 * (e.device + (c.fpdt_offload ? 0 : e.store));
    p.offload_bytes = c.fpdt_offload ? 4 * e.store : 0;
  } else {  // with sequence parallelism: seq_len / P tokens, plus the head-sharded buffers
    p.activation_bytes =
        (ActivationElems(c.dims, c.micro_batch, c.seq_len / std::max(1, c.sp_size),
                         c.activation_checkpointing) +
         SequenceElems(c.dims, c.micro_batch, c.seq_len, c.sp_size, c.activation_checkpointing)) *
        4;
  }
  const bool staging = !c.checkpoint.dir.empty() && c.checkpoint.async;
  if (c.world_size() <= 1) {  // one rank: nothing partitioned (zero::CreateLocalState)
    p.param_bytes = p.grad_bytes = total * 4;
    p.optim_bytes = 2 * total * 4;
    if (staging) p.checkpoint_staging_bytes = 3 * total * 4;
    return p;
  }
  const int n = c.world_size(), s = c.zero_stage;  // ZeRO partitions over every rank
  zero::ZeroOptions zo = c.zero;
  zo.stage = s;
  auto units = zero::LayoutUnits(table, n, zero::QuantBlock(zo), zero::GradQuantBlock(zo));
  uint64_t padded = 0, shard = 0, max_unit = 0, persistent = 0;
  for (const auto& u : units) {
    padded += u.chunk * n;
    shard += u.chunk;
    max_unit = std::max(max_unit, u.chunk * n);
    if (s == 3 && int64_t(u.numel) < c.zero.persistence_threshold) persistent += u.chunk * n;
  }
  p.param_bytes = 4 * (s <= 2 ? padded : shard + persistent);
  p.grad_bytes = 4 * ((s <= 1 ? padded : 0) + (s >= 1 ? shard : 0));
  p.optim_bytes = 4 * 2 * (s == 0 ? padded : shard);
  // Stage 0 is replicated, so each rank writes a 1/n share of it too.
  if (staging) p.checkpoint_staging_bytes = 3 * shard * 4;
  p.gather_pool_bytes = 4 * max_unit * zero::PoolCapacity(units, zo);
  const int rpn = c.nodes > 1 && c.nodes * c.ranks_per_node == n ? c.ranks_per_node : n;
  p.quant_scratch_bytes = zero::QuantScratchBytes(units, zo, n, rpn);
  p.hpz_bytes = zero::HpzBytes(units, zo, n, rpn);
  return p;
}

absl::StatusOr<HostMemory> ReadHostMemory() {
  HostMemory h;
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  uint64_t kib = 0;
  bool found = false;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemAvailable:") {
      h.available_bytes = kib * 1024;
      h.source = "MemAvailable";
      found = true;
      break;
    }
  }
  if (!found) return absl::UnavailableError("/proc/meminfo has no MemAvailable");
  // cgroup v2: "0::/path" names this process's group.
  std::ifstream self("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(self, line))
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  auto read_u64 = [](const std::string& file, uint64_t* v) {
    std::ifstream in(file);
    std::string text;
    return static_cast<bool>(in >> text) && absl::SimpleAtoi(text, v);
  };
  uint64_t max = 0, current = 0;
  const std::string dir = "/sys/fs/cgroup" + (path == "/" ? std::string() : path);
  if (!path.empty() && read_u64(dir + "/memory.max", &max) &&
      read_u64(dir + "/memory.current", &current)) {
    const uint64_t left = max > current ? max - current : 0;
    if (left < h.available_bytes) {
      h.available_bytes = left;
      h.source = "cgroup memory.max";
    }
  }
  return h;
}

absl::Status CheckJobFitsThisHost(const tern::spec::JobConfig& config, int threads,
                                  int ranks_on_host) {
  auto host = ReadHostMemory();
  if (!host.ok()) return absl::OkStatus();  // no /proc/meminfo: nothing to check against
  return CheckFitsHost(PlanRankMemory(config, threads), ranks_on_host, *host);
}

std::string FormatBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (b >= 1024 && i < 5) {
    b /= 1024;
    ++i;
  }
  std::ostringstream os;
  os.precision(i == 0 ? 0 : 2);
  os << std::fixed << b << " " << units[i];
  return os.str();
}

absl::Status CheckFitsHost(const RankMemoryPlan& p, int ranks_on_host, const HostMemory& host) {
  const double need = double(p.peak_bytes()) * std::max(1, ranks_on_host);
  if (need <= double(host.available_bytes)) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "memory: this job needs ", FormatBytes(need), " on this host (", ranks_on_host, " rank(s) x ",
      FormatBytes(double(p.peak_bytes())), ": state ", FormatBytes(double(p.state_bytes())),
      " (checkpoint staging ", FormatBytes(double(p.checkpoint_staging_bytes)), ") + activations ",
      FormatBytes(double(p.activation_bytes)), " + gather pool ",
      FormatBytes(double(p.gather_pool_bytes)), ", initial weights ",
      FormatBytes(double(p.init_bytes)), ") but only ", FormatBytes(double(host.available_bytes)),
      " is available (", host.source,
      ") --> hint: a smaller model or train_micro_batch_size_per_gpu, more ranks with a higher "
      "ZeRO stage, or `tern describe` to plan"));
}

}  // namespace tern::engine
