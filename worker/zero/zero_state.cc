#include "worker/zero/zero_state.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/quantize.h"
#include "worker/comm/comm_thread.h"
#include "worker/core/status.h"
#include "worker/zero/quantized_collectives.h"

namespace tern::zero {

namespace {

uint64_t RoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b * b; }

}  // namespace

std::vector<UnitLayout> LayoutUnits(const ParamTable& table, int n, uint64_t quant_block,
                                    uint64_t grad_block) {
  if (grad_block == 0 || grad_block > quant_block) grad_block = quant_block;
  std::vector<UnitLayout> out;
  uint64_t padded = 0, shard = 0;
  for (const auto& u : table.units()) {
    UnitLayout l;
    l.offset = u.offset;
    l.numel = u.numel;
    l.chunk = (u.numel + n - 1) / n;
    if (quant_block > 0) {
      l.chunk = l.chunk >= quant_block  ? RoundUp(l.chunk, quant_block)
                : l.chunk >= grad_block ? RoundUp(l.chunk, grad_block)
                                        : RoundUp(l.chunk, 2);
      l.qblock = std::min(quant_block, l.chunk);
      l.gblock = std::min(grad_block, l.chunk);
    }
    l.padded_off = padded;
    l.shard_off = shard;
    padded += l.chunk * n;
    shard += l.chunk;
    out.push_back(l);
  }
  return out;
}

uint64_t QuantBlock(const ZeroOptions& o) {
  return o.stage == 3 && (o.quantized_weights || o.quantized_gradients) ? uint64_t(o.quant_block)
                                                                        : 0;
}

uint64_t GradQuantBlock(const ZeroOptions& o) {
  return QuantBlock(o) > 0 ? uint64_t(o.grad_quant_block) : 0;
}

uint64_t QuantScratchBytes(const std::vector<UnitLayout>& units, const ZeroOptions& o, int n,
                           int ranks_per_node) {
  if (QuantBlock(o) == 0) return 0;
  const int D = ranks_per_node, N = D > 0 ? n / D : 0;
  const bool qgz = o.quantized_gradients && N > 1 && D * N == n;
  uint64_t qw = 0, qg = 0;
  for (const auto& u : units) {
    if (o.quantized_weights) qw = std::max(qw, QuantizedAllGatherScratch(n, u.chunk, u.qblock));
    if (qgz) qg = std::max(qg, QuantizedReduceScatterScratch(n, N, u.chunk, u.gblock));
  }
  return qw + qg;
}

uint64_t HpzBytes(const std::vector<UnitLayout>& units, const ZeroOptions& o, int n,
                  int ranks_per_node) {
  const int D = ranks_per_node, N = D > 0 ? n / D : 0;
  if (o.stage != 3 || o.hpz_partition_size <= 1 || N <= 1 || D * N != n ||
      D != o.hpz_partition_size)
    return 0;
  uint64_t elems = 0;
  for (const auto& u : units)
    if (int64_t(u.numel) >= o.persistence_threshold) elems += u.chunk * uint64_t(N);
  return elems * 4;
}

uint64_t PoolCapacity(const std::vector<UnitLayout>& units, const ZeroOptions& o) {
  if (o.stage == 0) return 0;
  uint64_t cap = 2;           // stage 1: two reduce-scatter outputs in flight
  if (o.stage >= 2) cap = 5;  // + the unit accumulating and the sources of two in flight
  if (o.stage == 3) {
    // The units gathered ahead: at most as many as the smallest units that fill the budget,
    // plus the unit in use and the one whose prefetch crosses the budget.
    std::vector<uint64_t> sizes;
    for (const auto& u : units) sizes.push_back(u.numel);
    std::sort(sizes.begin(), sizes.end());
    int64_t budget = o.prefetch_bucket_size;
    uint64_t ahead = 0;
    for (uint64_t s : sizes) {
      if (budget <= 0) break;
      budget -= int64_t(s);
      ++ahead;
    }
    cap += 2 + ahead;
  }
  return std::min<uint64_t>(cap, 3 * units.size());
}

namespace {

using comm::CollectiveOptions;
using comm::Work;

std::span<std::byte> Bytes(float* p, uint64_t n) {
  return {reinterpret_cast<std::byte*>(p), n * sizeof(float)};
}
std::span<const std::byte> CBytes(const float* p, uint64_t n) {
  return {reinterpret_cast<const std::byte*>(p), n * sizeof(float)};
}

class ZeroState : public TrainingState, public model::ParamSource<float> {
 public:
  ZeroState(const ParamTable& table, const ZeroOptions& opts, const ZeroGroups& g,
            const ZeroKernels& k)
      : k_(k),
        table_(table),
        opts_(opts),
        comm_(g.data_parallel),
        intra_(g.intra_node),
        inter_(g.inter_node),
        n_(g.data_parallel->size()),
        r_(g.data_parallel->rank()),
        units_(LayoutUnits(table, n_, QuantBlock(opts), GradQuantBlock(opts))) {
    coll_.timeout = opts.timeout;
    for (const auto& u : units_) {
      padded_total_ += u.chunk * n_;
      shard_total_ += u.chunk;
      max_unit_ = std::max(max_unit_, u.chunk * n_);
    }
    pool_cap_ = PoolCapacity(units_, opts_);
    if (opts_.stage == 3 && (QuantBlock(opts_) > 0 || opts_.hpz_partition_size > 1)) {
      // qgZ and hpZ need more than one node and node-major data-parallel ranks; otherwise every
      // unit falls back to the plain reduce-scatter / data-parallel gather (counted).
      const int D = intra_ ? intra_->size() : 0;
      const bool two_level = intra_ && inter_ && inter_->size() > 1 && D * inter_->size() == n_ &&
                             intra_->rank() == r_ % D && inter_->rank() == r_ / D;
      qgz_ = opts_.quantized_gradients && two_level;
      hpz_ = opts_.hpz_partition_size > 1 && two_level && D == opts_.hpz_partition_size;
      const int rpn = two_level ? D : n_;
      quant_scratch_.resize(QuantScratchBytes(units_, opts_, n_, rpn));
      if (hpz_) {
        uint64_t off = 0;
        sec_off_.assign(units_.size(), 0);
        for (size_t i = 0; i < units_.size(); ++i) {
          sec_off_[i] = off;
          if (int64_t(units_[i].numel) >= opts_.persistence_threshold)
            off += units_[i].chunk * inter_->size();
        }
        TERN_CHECK(off * 4 == HpzBytes(units_, opts_, n_, rpn));
        secondary_.assign(off, 0.0f);
        sec_valid_.assign(units_.size(), false);
      }
      // Every collective of this state goes through one ordered thread, so that quantized and
      // plain collectives reach each communicator in the same order on every rank.
      ordered_ = std::make_unique<comm::CommThread>("zero++");
    }
  }

  absl::Status Init(const std::vector<float>& init) {
    const int s = opts_.stage;
    if (s <= 2) {
      full_params_.assign(padded_total_, 0.0f);
      for (const auto& u : units_)
        std::memcpy(&full_params_[u.padded_off], &init[u.offset], u.numel * 4);
    } else {
      master_.assign(shard_total_, 0.0f);
      for (const auto& u : units_)
        std::memcpy(&master_[u.shard_off], &init[u.offset + r_ * u.chunk], u.owned(r_) * 4);
      live_.assign(units_.size(), nullptr);
      pending_gather_.assign(units_.size(), Work());
      for (size_t i = 0; i < units_.size(); ++i) {
        if (int64_t(units_[i].numel) < opts_.persistence_threshold) {
          persistent_.push_back(int(i));
          persistent_bufs_.emplace_back(units_[i].chunk * n_);
          live_[i] = persistent_bufs_.back().data();
          std::memcpy(live_[i], &init[units_[i].offset], units_[i].numel * 4);
        }
      }
    }
    if (s <= 1) full_grads_.assign(padded_total_, 0.0f);
    if (s >= 1) grad_shard_.assign(shard_total_, 0.0f);
    const uint64_t opt_n = s == 0 ? padded_total_ : shard_total_;
    m_.assign(opt_n, 0.0f);
    v_.assign(opt_n, 0.0f);
    unit_grads_.assign(units_.size(), nullptr);
    return absl::OkStatus();
  }

  // ---- ParamSource ------------------------------------------------------------------------
  const float* Acquire(int unit) override {
    if (opts_.stage <= 2) return &full_params_[units_[unit].padded_off];
    // Stage 3: follow the recorded access order to prefetch what comes next.
    if (recording_) {
      trace_.push_back(unit);
    } else if (trace_ok_ && pos_ < trace_.size() && trace_[pos_] == unit) {
      Prefetch(pos_ + 1);
    } else {
      trace_ok_ = false;
    }
    ++pos_;
    StartGather(unit);
    if (pending_gather_[unit].valid()) Check(pending_gather_[unit].Wait());
    return live_[unit];
  }

  void Release(int unit) override {
    if (opts_.stage <= 2 || IsPersistent(unit) || !live_[unit]) return;
    if (pending_gather_[unit].valid() && !pending_gather_[unit].Done()) return;  // prefetched
    if (hpz_ && !sec_valid_[unit] && error_.ok()) {
      // hpZ: keep this node's share of the gathered unit (the forward's weights) for backward.
      const auto& u = units_[unit];
      const uint64_t part = u.chunk * inter_->size();
      std::memcpy(&secondary_[sec_off_[unit]], live_[unit] + uint64_t(intra_->rank()) * part,
                  part * 4);
      sec_valid_[unit] = true;
    }
    ReturnBuffer(live_[unit]);
    live_[unit] = nullptr;
    pending_gather_[unit] = Work();
  }

  float* Grads(int unit) override {
    const auto& u = units_[unit];
    if (opts_.stage <= 1) return &full_grads_[u.padded_off];
    if (!unit_grads_[unit]) {
      unit_grads_[unit] = TakeBuffer();
      std::memset(unit_grads_[unit], 0, u.chunk * n_ * 4);
    }
    return unit_grads_[unit];
  }

  void GradsReady(int unit) override {
    const auto& u = units_[unit];
    if (opts_.stage == 0) {
      if (!last_micro_) return;
      // Buckets of consecutive ready units (backward makes them ready from the top down).
      if (bucket_n_ > 0 && u.padded_off + u.chunk * n_ != bucket_lo_) FlushBucket();
      bucket_lo_ = u.padded_off;
      bucket_n_ += u.chunk * n_;
      if (int64_t(bucket_n_) >= opts_.reduce_bucket_size) FlushBucket();
      return;
    }
    if (opts_.stage == 1 && !last_micro_) return;
    float* src = opts_.stage == 1 ? &full_grads_[u.padded_off] : unit_grads_[unit];
    float* tmp = TakeBuffer();
    Work w = ordered_
                 ? ordered_->Enqueue([this, unit, src, tmp] { return ReduceTask(unit, src, tmp); })
                 : comm_->ReduceScatterAsync({src, u.chunk * n_}, {tmp, u.chunk}, coll_);
    pending_rs_.push_back({w, unit, tmp, opts_.stage >= 2 ? src : nullptr});
    if (opts_.stage >= 2) unit_grads_[unit] = nullptr;
    if (!opts_.overlap_comm) DrainReduceScatters();
  }

  // ---- TrainingState ----------------------------------------------------------------------
  model::ParamSource<float>& source() override { return *this; }

  void BeginMicroStep(bool last) override {
    last_micro_ = last;
    if (opts_.stage == 3) {
      if (trace_.empty() && !trace_done_)
        recording_ = true;
      else if (recording_) {
        recording_ = false;
        trace_done_ = true;
      }
      pos_ = 0;
      trace_ok_ = trace_done_;
    }
    // Stage 2/3: earlier micro-steps' reductions must land before buffers are reused.
    if (!error_.ok()) return;
    DrainReduceScatters();
  }

  absl::StatusOr<double> FinishBackward() override {
    if (recording_) {
      recording_ = false;
      trace_done_ = true;
    }
    if (opts_.stage == 0) FlushBucket();
    for (auto& w : pending_ar_) Check(w.Wait());
    pending_ar_.clear();
    DrainReduceScatters();
    TERN_RETURN_IF_ERROR(error_);
    if (opts_.stage == 0) {
      double sq = 0;
      for (const auto& u : units_) sq += k_.ops->sum_squares(&full_grads_[u.padded_off], u.numel);
      return sq;
    }
    float sq = float(k_.ops->sum_squares(grad_shard_.data(), grad_shard_.size()));
    Fence();
    TERN_RETURN_IF_ERROR(error_);
    TERN_RETURN_IF_ERROR(comm_->AllReduce({&sq, 1}, coll_));
    return double(sq);
  }

  absl::Status OptimizerStep(const optim::AdamWConfig& cfg, float lr, int64_t step,
                             float grad_mult) override {
    TERN_RETURN_IF_ERROR(error_);
    const int s = opts_.stage;
    if (s == 0) {
      for (const auto& u : units_) {
        float* g = &full_grads_[u.padded_off];
        if (grad_mult != 1.0f) k_.ops->scale_inplace(g, grad_mult, u.numel);
        optim::AdamWStep(table_, cfg, lr, step, u.offset, u.numel, &full_params_[u.padded_off], g,
                         &m_[u.padded_off], &v_[u.padded_off], *k_.ops);
      }
      std::fill(full_grads_.begin(), full_grads_.end(), 0.0f);
      return absl::OkStatus();
    }
    if (grad_mult != 1.0f) k_.ops->scale_inplace(grad_shard_.data(), grad_mult, grad_shard_.size());
    for (const auto& u : units_) {
      const uint64_t own = u.owned(r_);
      if (own == 0) continue;
      optim::AdamWStep(table_, cfg, lr, step, u.offset + r_ * u.chunk, own, MasterChunk(u),
                       &grad_shard_[u.shard_off], &m_[u.shard_off], &v_[u.shard_off], *k_.ops);
    }
    std::fill(grad_shard_.begin(), grad_shard_.end(), 0.0f);
    if (s == 1) std::fill(full_grads_.begin(), full_grads_.end(), 0.0f);
    if (s == 3) DropGathered();
    InvalidateSecondary();
    return PublishParams();
  }

  MemoryReport memory() const override {
    MemoryReport m;
    m.param_bytes = (full_params_.size() + master_.size()) * 4;
    for (const auto& b : persistent_bufs_) m.param_bytes += b.size() * 4;
    m.grad_bytes = (full_grads_.size() + grad_shard_.size()) * 4;
    m.optim_bytes = (m_.size() + v_.size()) * 4;
    m.gather_pool_bytes = storage_.size() * max_unit_ * 4;
    m.quant_scratch_bytes = quant_scratch_.size();
    m.hpz_bytes = secondary_.size() * 4;
    return m;
  }

  ZeroPPCounters zeropp_counters() const override {
    ZeroPPCounters c;
    c.quantized_gathers = quantized_gathers_.load();
    c.quantized_reductions = quantized_reductions_.load();
    c.fallback_reductions = fallback_reductions_.load();
    c.hpz_gathers = hpz_gathers_.load();
    c.hpz_fallback_gathers = hpz_fallback_gathers_.load();
    return c;
  }

  absl::Status GatherParams(std::vector<float>* out) override {
    Fence();
    TERN_RETURN_IF_ERROR(error_);
    out->assign(table_.total(), 0.0f);
    std::vector<float> buf(max_unit_);
    for (const auto& u : units_) {
      const float* src;
      if (opts_.stage <= 2) {
        src = &full_params_[u.padded_off];
      } else {
        TERN_RETURN_IF_ERROR(comm_->AllGather(CBytes(&master_[u.shard_off], u.chunk),
                                              Bytes(buf.data(), u.chunk * n_), coll_));
        src = buf.data();
      }
      std::memcpy(out->data() + u.offset, src, u.numel * 4);
    }
    return absl::OkStatus();
  }

  std::vector<StateSegment> owned_segments() override {
    std::vector<StateSegment> segs;
    for (const auto& u : units_) {
      if (opts_.stage == 0) {
        segs.push_back(
            {u.offset, u.numel, &full_params_[u.padded_off], &m_[u.padded_off], &v_[u.padded_off]});
      } else if (u.owned(r_) > 0) {
        segs.push_back({u.offset + r_ * u.chunk, u.owned(r_), MasterChunk(u), &m_[u.shard_off],
                        &v_[u.shard_off]});
      }
    }
    return segs;
  }
  bool replicated() const override { return opts_.stage == 0; }
  absl::Status SyncAfterLoad() override {
    InvalidateSecondary();
    return opts_.stage == 0 ? absl::OkStatus() : PublishParams();
  }

 private:
  struct PendingReduce {
    Work work;
    int unit;
    float* out;      // reduce-scatter output, added into grad_shard_
    float* release;  // full-unit gradient buffer to give back (stage 2/3)
  };

  bool IsPersistent(int unit) const {
    return std::find(persistent_.begin(), persistent_.end(), unit) != persistent_.end();
  }
  float* MasterChunk(const UnitLayout& u) {
    return opts_.stage <= 2 ? &full_params_[u.padded_off + r_ * u.chunk] : &master_[u.shard_off];
  }
  void Check(const absl::Status& st) {
    if (!st.ok() && error_.ok()) error_ = st;
  }

  float* TakeBuffer() {
    // At the cap, the oldest reductions give their buffers back first.
    while (pool_.empty() && storage_.size() >= pool_cap_ && !pending_rs_.empty())
      FinishOldestReduceScatter();
    if (pool_.empty()) {
      storage_.emplace_back(max_unit_);
      return storage_.back().data();
    }
    float* b = pool_.back();
    pool_.pop_back();
    return b;
  }
  void ReturnBuffer(float* b) { pool_.push_back(b); }

  void StartGather(int unit) {
    if (live_[unit]) return;  // persistent, gathered, or gather in flight
    const auto& u = units_[unit];
    live_[unit] = TakeBuffer();
    if (ordered_) {
      float* dst = live_[unit];
      const bool secondary = hpz_ && sec_valid_[unit];
      pending_gather_[unit] = ordered_->Enqueue(
          [this, unit, dst, secondary] { return GatherTask(unit, dst, secondary); });
      return;
    }
    pending_gather_[unit] = comm_->AllGatherAsync(CBytes(&master_[u.shard_off], u.chunk),
                                                  Bytes(live_[unit], u.chunk * n_), coll_);
  }

  // ZeRO++ (on the ordered thread): qwZ's int8 all-gather of the unit, or the plain one.
  absl::Status GatherTask(int unit, float* dst, bool secondary) {
    const auto& u = units_[unit];
    if (secondary) {  // hpZ: inside the node, from the secondary copies
      const uint64_t part = u.chunk * inter_->size();
      TERN_RETURN_IF_ERROR(intra_->AllGather(CBytes(&secondary_[sec_off_[unit]], part),
                                             Bytes(dst, u.chunk * n_), coll_));
      hpz_gathers_.fetch_add(1);
      return absl::OkStatus();
    }
    if (opts_.hpz_partition_size > 1 && !hpz_) hpz_fallback_gathers_.fetch_add(1);
    const float* mine = &master_[u.shard_off];
    if (!opts_.quantized_weights)
      return comm_->AllGather(CBytes(mine, u.chunk), Bytes(dst, u.chunk * n_), coll_);
    TERN_RETURN_IF_ERROR(QuantizedAllGather(*comm_, mine, u.chunk, u.qblock, dst,
                                            quant_scratch_.data(), coll_, *k_.quantize));
    quantized_gathers_.fetch_add(1);
    return absl::OkStatus();
  }

  // ZeRO++ (on the ordered thread): qgZ's two-hop int4 reduction of the unit, or the plain
  // reduce-scatter.
  absl::Status ReduceTask(int unit, const float* src, float* out) {
    const auto& u = units_[unit];
    if (!qgz_) {
      if (opts_.quantized_gradients) fallback_reductions_.fetch_add(1);
      return comm_->ReduceScatter({src, u.chunk * n_}, {out, u.chunk}, coll_);
    }
    std::byte* scratch = quant_scratch_.data() + QgzScratchOffset();
    TERN_RETURN_IF_ERROR(QuantizedReduceScatter(*intra_, *inter_, src, u.chunk, u.gblock, out,
                                                scratch, coll_, *k_.quantize));
    quantized_reductions_.fetch_add(1);
    return absl::OkStatus();
  }

  // qwZ's scratch comes first in quant_scratch_, qgZ's after it.
  uint64_t QgzScratchOffset() const {
    uint64_t qw = 0;
    if (opts_.quantized_weights)
      for (const auto& u : units_)
        qw = std::max(qw, QuantizedAllGatherScratch(n_, u.chunk, u.qblock));
    return qw;
  }

  // hpZ: the secondary copies are stale once the master chunks change; the next forward
  // gathers from the primary partitions and rebuilds them.
  void InvalidateSecondary() { std::fill(sec_valid_.begin(), sec_valid_.end(), false); }

  // ZeRO++: waits until every collective queued on the ordered thread has finished, before a
  // collective is issued directly.
  void Fence() {
    if (ordered_) Check(ordered_->Enqueue([] { return absl::OkStatus(); }).Wait());
  }

  void Prefetch(size_t from) {
    int64_t budget = opts_.prefetch_bucket_size;
    for (size_t i = from; i < trace_.size(); ++i) {
      const int unit = trace_[i];
      if (pool_.empty() && storage_.size() >= pool_cap_) break;  // no prefetch beyond the cap
      if (!live_[unit]) StartGather(unit);
      budget -= int64_t(units_[unit].numel);
      if (budget <= 0) break;
    }
  }

  void FlushBucket() {
    if (bucket_n_ == 0) return;
    Work w = comm_->AllReduceAsync({&full_grads_[bucket_lo_], bucket_n_}, coll_);
    if (opts_.overlap_comm)
      pending_ar_.push_back(w);
    else
      Check(w.Wait());
    bucket_n_ = 0;
  }

  void DrainReduceScatters() {
    while (!pending_rs_.empty()) FinishOldestReduceScatter();
  }

  void FinishOldestReduceScatter() {
    PendingReduce p = pending_rs_.front();
    pending_rs_.pop_front();
    Check(p.work.Wait());
    const auto& u = units_[p.unit];
    float* dst = &grad_shard_[u.shard_off];
    for (uint64_t i = 0; i < u.chunk; ++i) dst[i] += p.out[i];
    ReturnBuffer(p.out);
    if (p.release) ReturnBuffer(p.release);
  }

  // Stage 3: gathered copies are stale once the master chunks change.
  void DropGathered() {
    for (size_t i = 0; i < units_.size(); ++i) {
      if (!live_[i] || IsPersistent(int(i))) continue;
      if (pending_gather_[i].valid()) Check(pending_gather_[i].Wait());
      ReturnBuffer(live_[i]);
      live_[i] = nullptr;
      pending_gather_[i] = Work();
    }
  }

  // After the optimizer: stage 1/2 all-gather the updated chunks in place; stage 3 refreshes
  // persistent units.
  absl::Status PublishParams() {
    Fence();
    std::vector<Work> works;
    for (size_t i = 0; i < units_.size(); ++i) {
      const auto& u = units_[i];
      if (opts_.stage <= 2) {
        float* full = &full_params_[u.padded_off];
        works.push_back(comm_->AllGatherAsync(CBytes(full + r_ * u.chunk, u.chunk),
                                              Bytes(full, u.chunk * n_), coll_));
      } else if (IsPersistent(int(i))) {
        works.push_back(comm_->AllGatherAsync(CBytes(&master_[u.shard_off], u.chunk),
                                              Bytes(live_[i], u.chunk * n_), coll_));
      }
    }
    for (auto& w : works) Check(w.Wait());
    return error_;
  }

  ZeroKernels k_;
  const ParamTable& table_;
  ZeroOptions opts_;
  comm::Communicator* comm_;
  comm::Communicator* intra_;
  comm::Communicator* inter_;
  const int n_, r_;
  std::vector<UnitLayout> units_;
  CollectiveOptions coll_;
  uint64_t padded_total_ = 0, shard_total_ = 0, max_unit_ = 0, pool_cap_ = 0;
  absl::Status error_;

  std::vector<float> full_params_;  // stages 0-2, padded layout
  std::vector<float> full_grads_;   // stages 0-1, padded layout
  std::vector<float> master_;       // stage 3: owned chunks
  std::vector<float> grad_shard_;   // stages 1-3: owned gradient chunks
  std::vector<float> m_, v_;        // AdamW moments (padded full at stage 0, else shard)

  // Working buffers of max_unit_ floats (gathered params, unit gradients, reduce outputs).
  std::deque<std::vector<float>> storage_;
  std::vector<float*> pool_;
  std::vector<float*> live_;  // stage 3: gathered unit params (or null)
  std::vector<Work> pending_gather_;
  std::vector<int> persistent_;
  std::deque<std::vector<float>> persistent_bufs_;
  std::vector<float*> unit_grads_;  // stages 2-3: full-unit gradient buffers
  std::deque<PendingReduce> pending_rs_;
  std::vector<Work> pending_ar_;
  uint64_t bucket_lo_ = 0, bucket_n_ = 0;
  bool last_micro_ = true;
  // Stage 3 access trace (recorded during the first micro-step).
  std::vector<int> trace_;
  bool recording_ = false, trace_done_ = false, trace_ok_ = false;
  size_t pos_ = 0;
  // ZeRO++.
  bool qgz_ = false;                      // qgZ's layout holds (else plain reduce-scatter)
  std::vector<std::byte> quant_scratch_;  // packed records (qwZ's, then qgZ's)
  std::atomic<uint64_t> quantized_gathers_{0}, quantized_reductions_{0}, fallback_reductions_{0};
  std::atomic<uint64_t> hpz_gathers_{0}, hpz_fallback_gathers_{0};
  // hpZ: this rank's share (chunk x nodes elements) of every non-persistent unit over the
  // node-local group, at sec_off_[unit]; valid from the unit's first release after an
  // optimizer step.
  bool hpz_ = false;
  std::vector<float> secondary_;
  std::vector<uint64_t> sec_off_;
  std::vector<bool> sec_valid_;
  // Last: destroyed first, so no task outlives the buffers it uses.
  std::unique_ptr<comm::CommThread> ordered_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TrainingState>> CreateZeroState(const ParamTable& table,
                                                               const std::vector<float>& init,
                                                               const ZeroOptions& options,
                                                               const ZeroGroups& groups,
                                                               const ZeroKernels& kernels) {
  if (options.stage < 0 || options.stage > 3)
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.stage: must be 0..3, got ", options.stage));
  if ((options.quantized_weights || options.quantized_gradients ||
       options.hpz_partition_size > 1) &&
      options.stage != 3)
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.zero_quantized_weights / zero_quantized_gradients / "
                     "zero_hpz_partition_size: need stage 3, got ",
                     options.stage));
  if (options.hpz_partition_size < 1 ||
      (options.hpz_partition_size > 1 && groups.intra_node != nullptr &&
       options.hpz_partition_size != groups.intra_node->size()))
    return absl::InvalidArgumentError(
        absl::StrCat("zero_optimization.zero_hpz_partition_size: ", options.hpz_partition_size,
                     " must be 1 or the data-parallel ranks per node (",
                     groups.intra_node ? groups.intra_node->size() : 1, ")"));
  if (QuantBlock(options) > 0) {
    const auto bad = [](int64_t b) {
      return b < 2 || b % 2 != 0 || uint64_t(b) > kernels::kMaxQuantBlock;
    };
    if (bad(options.quant_block) || bad(options.grad_quant_block) ||
        options.quant_block % options.grad_quant_block != 0)
      return absl::InvalidArgumentError(
          absl::StrCat("zero_optimization.zero_quantization_block (", options.quant_block,
                       ") and zero_gradient_quantization_block (", options.grad_quant_block,
                       "): must be even, in [2, ", kernels::kMaxQuantBlock,
                       "], and the gradient block must divide the weight block"));
  }
  TERN_CHECK(groups.data_parallel != nullptr);
  TERN_CHECK(init.size() == table.total());
  auto state = std::make_unique<ZeroState>(table, options, groups, kernels);
  TERN_RETURN_IF_ERROR(state->Init(init));
  return state;
}

}  // namespace tern::zero
