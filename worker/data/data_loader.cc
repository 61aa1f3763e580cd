#include "worker/data/data_loader.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/data/rng.h"

namespace tern::data {

// ---- DataPosition -------------------------------------------------------------------------

nlohmann::json DataPosition::ToJson() const {
  return nlohmann::json{{"samples_consumed", samples_consumed},
                        {"seed", seed},
                        {"seq_len", seq_len},
                        {"ntokens", ntokens}};
}

absl::StatusOr<DataPosition> DataPosition::FromJson(const nlohmann::json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data position must be a JSON object, got ", json.type_name()));
  }
  auto field = [&](const char* name, uint64_t max, uint64_t* out) -> absl::Status {
    auto it = json.find(name);
    if (it == json.end()) {
      return absl::InvalidArgumentError(absl::StrCat("data position: missing field '", name, "'"));
    }
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data position: field '", name, "' must be a non-negative integer, got ", it->dump()));
    }
    *out = it->get<uint64_t>();
    if (*out > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("data position: field '", name, "' = ", *out, " exceeds ", max));
    }
    return absl::OkStatus();
  };
  constexpr uint64_t kU64 = std::numeric_limits<uint64_t>::max();
  DataPosition pos;
  uint64_t seq_len = 0;
  TERN_RETURN_IF_ERROR(field("samples_consumed", kU64, &pos.samples_consumed));
  TERN_RETURN_IF_ERROR(field("seed", kU64, &pos.seed));
  TERN_RETURN_IF_ERROR(field("seq_len", std::numeric_limits<int32_t>::max(), &seq_len));
  TERN_RETURN_IF_ERROR(field("ntokens", kU64, &pos.ntokens));
  pos.seq_len = static_cast<int32_t>(seq_len);
  return pos;
}

// ---- DataLoader ---------------------------------------------------------------------------

DataLoader::DataLoader(std::shared_ptr<const IndexedDataset> dataset, int32_t seq_len,
                       uint64_t seed)
    : dataset_(std::move(dataset)),
      seq_len_(seq_len),
      seed_(seed),
      windows_((dataset_->num_tokens() - 1) / static_cast<uint64_t>(seq_len)) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Open(const std::string& prefix,
                                                             int32_t seq_len, uint64_t seed) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<IndexedDataset> dataset, IndexedDataset::Open(prefix));
  return FromDataset(std::move(dataset), seq_len, seed);
}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::FromDataset(
    std::shared_ptr<const IndexedDataset> dataset, int32_t seq_len, uint64_t seed) {
  if (seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be >= 1, got ", seq_len));
  }
  const uint64_t ntokens = dataset->num_tokens();
  if (ntokens < static_cast<uint64_t>(seq_len) + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", dataset->bin_path(), "' has ", ntokens,
        " tokens, fewer than seq_len + 1 = ", static_cast<int64_t>(seq_len) + 1,
        " needed for one training window --> hint: use a ", "shorter seq_len or more data"));
  }
  return std::unique_ptr<DataLoader>(new DataLoader(std::move(dataset), seq_len, seed));
}

uint64_t DataLoader::Permuted(uint64_t epoch, uint64_t k) {
  EpochPerm* hit = nullptr;
  for (EpochPerm& slot : cache_) {
    if (slot.valid && slot.epoch == epoch) hit = &slot;
  }
  if (hit == nullptr) {
    hit = &cache_[next_slot_];
    next_slot_ ^= 1;
    hit->epoch = epoch;
    hit->valid = true;
    const uint64_t epoch_seed = DeriveSeed(seed_, epoch);
    if (windows_ <= (uint64_t{1} << 32)) {
      hit->perm64.clear();
      hit->perm64.shrink_to_fit();
      FillPermutation(windows_, epoch_seed, &hit->perm32);
    } else {
      hit->perm32.clear();
      hit->perm32.shrink_to_fit();
      FillPermutation(windows_, epoch_seed, &hit->perm64);
    }
  }
  return hit->perm64.empty() ? hit->perm32[k] : hit->perm64[k];
}

uint64_t DataLoader::WindowOf(uint64_t i) { return Permuted(i / windows_, i % windows_); }

void DataLoader::ReadWindow(uint64_t window, int32_t* inputs, int32_t* targets) const {
  const uint64_t start = window * static_cast<uint64_t>(seq_len_);
  dataset_->ReadTokens(start, seq_len_, inputs);
  dataset_->ReadTokens(start + 1, seq_len_, targets);
}

void DataLoader::Sample(uint64_t i, int32_t* inputs, int32_t* targets) {
  ReadWindow(WindowOf(i), inputs, targets);
}

void DataLoader::Samples(uint64_t first, int64_t count, int32_t* inputs, int32_t* targets) {
  TERN_CHECK(count >= 0) << count;
  for (int64_t j = 0; j < count; ++j) {
    Sample(first + j, inputs + j * seq_len_, targets + j * seq_len_);
  }
}

uint64_t DataLoader::FirstSample(int64_t step, int micro, int dp_rank, int dp_size, int micro_batch,
                                 int accum) {
  TERN_CHECK(step >= 0 && micro_batch > 0 && accum > 0 && dp_size > 0)
      << "step " << step << " micro_batch " << micro_batch << " accum " << accum << " dp "
      << dp_size;
  const uint64_t global_batch = static_cast<uint64_t>(micro_batch) * static_cast<uint64_t>(accum) *
                                static_cast<uint64_t>(dp_size);
  return FirstSampleFrom(static_cast<uint64_t>(step) * global_batch, micro, dp_rank, dp_size,
                         micro_batch, accum);
}

uint64_t DataLoader::FirstSampleFrom(uint64_t step_first, int micro, int dp_rank, int dp_size,
                                     int micro_batch, int accum) {
  TERN_CHECK(micro_batch > 0 && accum > 0 && dp_size > 0)
      << "micro_batch " << micro_batch << " accum " << accum << " dp " << dp_size;
  TERN_CHECK(micro >= 0 && micro < accum) << "micro " << micro << " of " << accum;
  TERN_CHECK(dp_rank >= 0 && dp_rank < dp_size) << "dp_rank " << dp_rank << " of " << dp_size;
  const uint64_t b = static_cast<uint64_t>(micro_batch);
  const uint64_t dp = static_cast<uint64_t>(dp_size);
  return step_first + static_cast<uint64_t>(micro) * b * dp + static_cast<uint64_t>(dp_rank) * b;
}

void DataLoader::Batch(int64_t step, int micro, int dp_rank, int dp_size, int micro_batch,
                       int accum, int32_t* inputs, int32_t* targets) {
  Samples(FirstSample(step, micro, dp_rank, dp_size, micro_batch, accum), micro_batch, inputs,
          targets);
}

void DataLoader::BatchFrom(uint64_t step_first, int micro, int dp_rank, int dp_size,
                           int micro_batch, int accum, int32_t* inputs, int32_t* targets) {
  Samples(FirstSampleFrom(step_first, micro, dp_rank, dp_size, micro_batch, accum), micro_batch,
          inputs, targets);
}

void DataLoader::EvalBatch(int64_t index, int batch, int32_t* inputs, int32_t* targets) const {
  TERN_CHECK(index >= 0 && batch > 0) << "index " << index << " batch " << batch;
  for (int j = 0; j < batch; ++j) {
    const uint64_t window = (static_cast<uint64_t>(index) * batch + j) % windows_;
    ReadWindow(window, inputs + static_cast<int64_t>(j) * seq_len_,
               targets + static_cast<int64_t>(j) * seq_len_);
  }
}

int64_t DataLoader::NumEvalBatches(int batch) const {
  TERN_CHECK(batch > 0) << batch;
  return static_cast<int64_t>(windows_ / static_cast<uint64_t>(batch));
}

DataPosition DataLoader::Position(uint64_t samples_consumed) const {
  return DataPosition{samples_consumed, seed_, seq_len_, num_tokens()};
}

absl::Status DataLoader::CheckResume(const DataPosition& position) const {
  if (position.ntokens != num_tokens()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume: the checkpoint's data position is for a dataset of ",
                     position.ntokens, " tokens, but '", dataset_->bin_path(), "' has ",
                     num_tokens(), " --> hint: resume with the dataset the job was started with"));
  }
  if (position.seq_len != seq_len_) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resume on '", dataset_->bin_path(),
                     "': the checkpoint's data position has seq_len ", position.seq_len,
                     " but the job uses seq_len ", seq_len_));
  }
  if (position.seed != seed_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume on '", dataset_->bin_path(), "': the checkpoint's data position has seed ",
        position.seed, " but the job uses data seed ", seed_));
  }
  return absl::OkStatus();
}

}  // namespace tern::data
