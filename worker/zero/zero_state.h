// ZeRO stages 0-3 (DeepSpeed semantics) over a data-parallel Communicator.
//
// Partitioning is per ParamUnit (embeddings, each block, head): unit u of numel e is padded to
// n * c elements (c = ceil(e / n)) and rank r owns chunk r, i.e. global elements
// [u.offset + r*c, u.offset + min((r+1)*c, e)).
//   stage 0: parameters, gradients and AdamW state replicated; gradients all-reduced in buckets
//            of consecutive ready units during the last micro-step's backward.
//   stage 1: AdamW state partitioned; full gradients accumulate over micro-steps and are
//            reduce-scattered per unit during the last backward; updated chunks all-gathered.
//   stage 2: + gradients partitioned: every micro-step reduce-scatters each unit's gradient as
//            soon as it is ready and accumulates the owned chunk.
//   stage 3: + parameters partitioned: a unit is all-gathered just before use and released
//            after; the next unit(s) in the recorded access order are prefetched on the
//            communication thread while this one computes. Units smaller than
//            persistence_threshold stay gathered.
// Threading: all methods are called from the training thread; collectives run on the
// communicator's own thread and are waited for here.
#pragma once

#include <memory>
#include <vector>

#include "worker/comm/comm.h"
#include "worker/zero/state.h"

namespace tern::zero {

struct UnitLayout {
  uint64_t offset = 0;      // global element offset of the unit
  uint64_t numel = 0;       // real elements
  uint64_t chunk = 0;       // c = ceil(numel / n)
  uint64_t padded_off = 0;  // offset in padded full buffers (sum of n*c before it)
  uint64_t shard_off = 0;   // offset in shard buffers (sum of c before it)
  uint64_t qblock = 0;      // ZeRO++ qwZ: weight quantization block (divides chunk; 0 = off)
  uint64_t gblock = 0;      // ZeRO++ qgZ: gradient quantization block (divides chunk; 0 = off)
  // Real elements of rank r's chunk.
  uint64_t owned(int r) const {
    const uint64_t lo = uint64_t(r) * chunk;
    return lo >= numel ? 0 : std::min(chunk, numel - lo);
  }
};

// With quant_block > 0 (ZeRO++), chunks are padded so that both quantization blocks divide them
// (every rank's chunk quantizes alone; no block straddles two ranks): a chunk of at least
// quant_block elements is rounded up to a multiple of it, a smaller one to a multiple of
// grad_block (which divides quant_block; 0 = quant_block), a still smaller one to an even count
// and quantized as one block.
std::vector<UnitLayout> LayoutUnits(const ParamTable& table, int n, uint64_t quant_block = 0,
                                    uint64_t grad_block = 0);

// The quantization block LayoutUnits needs for these options: options.quant_block when a
// ZeRO++ quantized collective is on at stage 3, else 0.
uint64_t QuantBlock(const ZeroOptions& options);
// The gradient (qgZ) block LayoutUnits needs: options.grad_quant_block when QuantBlock > 0.
uint64_t GradQuantBlock(const ZeroOptions& options);

// Bytes of hpZ's secondary copies (MemoryReport's hpz_bytes): chunk x nodes elements of every
// non-persistent unit, when hpZ is on and there is more than one node.
uint64_t HpzBytes(const std::vector<UnitLayout>& units, const ZeroOptions& options, int n,
                  int ranks_per_node);

// Bytes of the packed buffers one rank's ZeRO++ collectives use (MemoryReport's
// quant_scratch_bytes), for data-parallel size n split into nodes of ranks_per_node.
uint64_t QuantScratchBytes(const std::vector<UnitLayout>& units, const ZeroOptions& options, int n,
                           int ranks_per_node);

// Full-unit buffers (of the largest padded unit each) the working pool of stages 1-3 may hold:
// reduce-scatter outputs in flight (stage 1), plus the unit gradient being accumulated and the
// unit gradients being reduced (stage 2), plus the gathered units within prefetch_bucket_size
// ahead (stage 3). Reaching it, the state waits for the oldest reduce-scatter to finish and
// does not prefetch further; only a unit the model needs right now can go beyond it.
uint64_t PoolCapacity(const std::vector<UnitLayout>& units, const ZeroOptions& options);

}  // namespace tern::zero
