// Training and validation batches from a Megatron indexed dataset, identical for any number of
// data-parallel ranks.
//
// Semantics (fixed: checkpoints and multi-rank runs rely on them):
//  - The token stream is every document of the dataset in order. Window w is stream tokens
//    [w*seq_len, w*seq_len + seq_len + 1); W = (ntokens - 1) / seq_len windows per epoch
//    (windows overlap by the one token that is both the last target and the next first input).
//  - Global sample i belongs to epoch e = i / W and reads window perm_e[i % W], where perm_e
//    = FillPermutation(W, DeriveSeed(seed, e)) (rng.h: Fisher-Yates over std::mt19937_64).
//  - Sample i: inputs = window[0, seq_len), targets = window[1, seq_len + 1).
//  - Optimizer step s, micro step m of `accum`, data-parallel rank r of `dp`, micro batch b:
//    samples s*G + m*(b*dp) + r*b + j for j in [0, b), with global batch G = b*accum*dp.
//    So a step covers samples [s*G, (s+1)*G) whatever the (dp, accum) split of G.
//  - The global batch may change between runs (a resume with another train_batch_size, micro
//    batch or accumulation): the checkpoint stores the samples consumed C, and the first step
//    after the resume covers samples [C, C + G') with the new G' (BatchFrom, FirstSampleFrom):
//    no sample is skipped or repeated.
//  - Validation (EvalBatch) reads windows in order without shuffling.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/indexed_dataset.h"

namespace tern::data {

// Where training is in the data; stored in checkpoints. Resuming with the same dataset,
// seq_len and seed continues exactly at sample `samples_consumed`.
struct DataPosition {
  uint64_t samples_consumed = 0;
  uint64_t seed = 0;
  int32_t seq_len = 0;
  uint64_t ntokens = 0;  // token count of the training dataset (identifies it)

  // {"samples_consumed": u64, "seed": u64, "seq_len": i32, "ntokens": u64}
  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT naming the missing or mistyped field.
  static absl::StatusOr<DataPosition> FromJson(const nlohmann::json& json);
  bool operator==(const DataPosition&) const = default;
};

// Not thread-safe (Sample caches epoch permutations): use one DataLoader per rank thread. The
// underlying IndexedDataset is immutable and may be shared.
class DataLoader {
 public:
  // Opens PREFIX.{idx,bin} (see IndexedDataset::Open for its errors). INVALID_ARGUMENT if
  // seq_len < 1 or the dataset has fewer than seq_len + 1 tokens (names the .bin file).
  static absl::StatusOr<std::unique_ptr<DataLoader>> Open(const std::string& prefix,
                                                          int32_t seq_len, uint64_t seed);
  static absl::StatusOr<std::unique_ptr<DataLoader>> FromDataset(
      std::shared_ptr<const IndexedDataset> dataset, int32_t seq_len, uint64_t seed);

  const IndexedDataset& dataset() const { return *dataset_; }
  std::shared_ptr<const IndexedDataset> shared_dataset() const { return dataset_; }
  int32_t seq_len() const { return seq_len_; }
  uint64_t seed() const { return seed_; }
  uint64_t num_tokens() const { return dataset_->num_tokens(); }
  uint64_t windows_per_epoch() const { return windows_; }

  // Window read by global sample i.
  uint64_t WindowOf(uint64_t i);
  // inputs[0..seq_len) and targets[0..seq_len) of global sample i, as int32 token ids.
  void Sample(uint64_t i, int32_t* inputs, int32_t* targets);
  // `count` consecutive samples from `first`, rows of seq_len (count x seq_len each).
  void Samples(uint64_t first, int64_t count, int32_t* inputs, int32_t* targets);

  // First global sample of (step, micro, dp_rank) (see the file comment).
  static uint64_t FirstSample(int64_t step, int micro, int dp_rank, int dp_size, int micro_batch,
                              int accum);
  // First global sample of (micro, dp_rank) in a step whose first sample is `step_first`.
  static uint64_t FirstSampleFrom(uint64_t step_first, int micro, int dp_rank, int dp_size,
                                  int micro_batch, int accum);
  // This rank's micro batch: micro_batch x seq_len rows of inputs and targets. Arguments out of
  // range (negative step, micro >= accum, dp_rank >= dp_size, non-positive sizes) abort.
  void Batch(int64_t step, int micro, int dp_rank, int dp_size, int micro_batch, int accum,
             int32_t* inputs, int32_t* targets);
  // The same for a step that starts at global sample `step_first`.
  void BatchFrom(uint64_t step_first, int micro, int dp_rank, int dp_size, int micro_batch,
                 int accum, int32_t* inputs, int32_t* targets);

  // Validation batch `index`: rows j in [0, batch) read window (index*batch + j) % W in order.
  void EvalBatch(int64_t index, int batch, int32_t* inputs, int32_t* targets) const;
  // Number of full, non-repeating eval batches: W / batch.
  int64_t NumEvalBatches(int batch) const;

  // Position after `samples_consumed` samples (e.g. (step + 1) * global_batch).
  DataPosition Position(uint64_t samples_consumed) const;
  // FAILED_PRECONDITION if `position` was written for another dataset (token count), seq_len
  // or seed; the message names the field, both values and the .bin path.
  absl::Status CheckResume(const DataPosition& position) const;

 private:
  DataLoader(std::shared_ptr<const IndexedDataset> dataset, int32_t seq_len, uint64_t seed);
  // Permutation entry k of epoch e (computes and caches perm_e).
  uint64_t Permuted(uint64_t epoch, uint64_t k);
  void ReadWindow(uint64_t window, int32_t* inputs, int32_t* targets) const;

  struct EpochPerm {
    uint64_t epoch = 0;
    bool valid = false;
    std::vector<uint32_t> perm32;  // used when W <= 2^32
    std::vector<uint64_t> perm64;  // otherwise
  };

  std::shared_ptr<const IndexedDataset> dataset_;
  int32_t seq_len_;
  uint64_t seed_;
  uint64_t windows_;
  EpochPerm cache_[2];  // two most recent epochs: a batch can straddle an epoch boundary
  int next_slot_ = 0;
};

}  // namespace tern::data
