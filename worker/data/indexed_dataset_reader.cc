// IndexedDataset: validation of PREFIX.{idx,bin} and token reads from the mappings.
#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/data/dtype_dispatch.h"
#include "worker/data/indexed_dataset.h"

namespace tern::data {
namespace {

template <typename T>
T LoadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string Escaped(const uint8_t* data, size_t n) {
  return absl::CHexEscape(absl::string_view(reinterpret_cast<const char*>(data), n));
}

// Index of the first token of src[0..n) outside [0, vocab), or n.
template <typename T>
uint64_t FirstOutOfVocab(const uint8_t* src, uint64_t n, int64_t vocab) {
  for (uint64_t i = 0; i < n; ++i) {
    int64_t v = static_cast<int64_t>(LoadLe<T>(src + i * sizeof(T)));
    if (v < 0 || v >= vocab) return i;
  }
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<IndexedDataset>> IndexedDataset::Open(const std::string& prefix) {
  std::unique_ptr<IndexedDataset> ds(new IndexedDataset());
  ds->prefix_ = prefix;
  TERN_ASSIGN_OR_RETURN(ds->idx_, MappedFile::Open(IdxPath(prefix), "dataset index"));
  TERN_ASSIGN_OR_RETURN(ds->bin_, MappedFile::Open(BinPath(prefix), "dataset tokens"));
  TERN_RETURN_IF_ERROR(ds->ParseIdx());
  TERN_RETURN_IF_ERROR(ds->CheckSequences());
  return ds;
}

absl::Status IndexedDataset::ParseIdx() {
  const std::string& path = idx_.path();
  const uint8_t* p = idx_.data();
  const size_t size = idx_.size();
  const size_t magic_seen = std::min<size_t>(size, sizeof(kIdxMagic));
  if (magic_seen == 0 || std::memcmp(p, kIdxMagic, magic_seen) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path,
        "' is not a Megatron MMIDIDX index: expected magic \"MMIDIDX\\000\\000\", found \"",
        Escaped(p, magic_seen), "\""));
  }
  if (size < kIdxHeaderBytes) {
    return absl::DataLossError(absl::StrCat("dataset index '", path, "' is truncated: ", size,
                                            " bytes, the header alone needs ", kIdxHeaderBytes));
  }
  const uint64_t version = LoadLe<uint64_t>(p + 9);
  if (version != kIdxVersion) {
    return absl::InvalidArgumentError(absl::StrCat("dataset index '", path,
                                                   "' has unsupported version ", version,
                                                   " (expected ", kIdxVersion, ")"));
  }
  dtype_ = static_cast<DType>(p[17]);
  if (!IsTokenDType(dtype_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset index '", path, "' has dtype code ", static_cast<int>(p[17]), " (",
                     DTypeName(dtype_),
                     "); token dtypes are 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16"));
  }
  item_size_ = DTypeSize(dtype_);
  const uint64_t num_seq = LoadLe<uint64_t>(p + 18);
  const uint64_t num_doc_idx = LoadLe<uint64_t>(p + 26);
  constexpr uint64_t kMaxCount = uint64_t{1} << 56;  // keeps the byte arithmetic below exact
  const uint64_t expected = (num_seq < kMaxCount && num_doc_idx < kMaxCount)
                                ? kIdxHeaderBytes + 12 * num_seq + 8 * num_doc_idx
                                : std::numeric_limits<uint64_t>::max();
  // Megatron's multimodal files append one int8 mode per sequence; accept and ignore them.
  if (size != expected && size != expected + num_seq) {
    return absl::DataLossError(absl::StrCat(
        "dataset index '", path, "' is ", size < expected ? "truncated" : "inconsistent", ": ",
        size, " bytes, but its header counts ", num_seq, " sequences and ", num_doc_idx,
        " doc-index entries, which need ", expected, " bytes"));
  }
  num_sequences_ = static_cast<int64_t>(num_seq);
  num_doc_idx_ = static_cast<int64_t>(num_doc_idx);
  sizes_ = p + kIdxHeaderBytes;
  pointers_ = sizes_ + 4 * num_seq;
  doc_idx_ = pointers_ + 8 * num_seq;
  if (num_doc_idx_ < 1 || document_index(0) != 0 ||
      document_index(num_doc_idx_ - 1) != num_sequences_) {
    return absl::DataLossError(absl::StrCat(
        "dataset index '", path, "' has a malformed doc_idx: it must start at 0 and end at the ",
        "sequence count ", num_seq));
  }
  for (int64_t d = 1; d < num_doc_idx_; ++d) {
    if (document_index(d) < document_index(d - 1)) {
      return absl::DataLossError(
          absl::StrCat("dataset index '", path, "' has a decreasing doc_idx", " at entry ", d));
    }
  }
  return absl::OkStatus();
}

absl::Status IndexedDataset::CheckSequences() {
  const uint64_t bin_size = bin_.size();
  const int64_t first_ptr = num_sequences_ > 0 ? sequence_pointer(0) : 0;
  uint64_t cum = 0;
  for (int64_t i = 0; i < num_sequences_; ++i) {
    const int64_t size = sequence_size(i);
    const int64_t ptr = sequence_pointer(i);
    if (size < 0 || ptr < 0 || ptr % static_cast<int64_t>(item_size_) != 0) {
      return absl::DataLossError(absl::StrCat("dataset index '", idx_.path(), "': sequence ", i,
                                              " has invalid size ", size, " or pointer ", ptr, " (",
                                              DTypeName(dtype_), " tokens)"));
    }
    const uint64_t end = static_cast<uint64_t>(ptr) + static_cast<uint64_t>(size) * item_size_;
    if (static_cast<uint64_t>(ptr) > bin_size || end > bin_size) {
      return absl::DataLossError(absl::StrCat(
          "dataset tokens '", bin_.path(), "' is truncated: ", bin_size, " bytes, but sequence ", i,
          " of '", idx_.path(), "' spans bytes [", ptr, ", ", end, ")"));
    }
    if (static_cast<uint64_t>(ptr - first_ptr) != cum * item_size_) contiguous_ = false;
    cum += static_cast<uint64_t>(size);
  }
  num_tokens_ = cum;
  if (!contiguous_) {
    starts_.resize(num_sequences_ + 1);
    starts_[0] = 0;
    for (int64_t i = 0; i < num_sequences_; ++i) starts_[i + 1] = starts_[i] + sequence_size(i);
  }
  return absl::OkStatus();
}

int32_t IndexedDataset::sequence_size(int64_t i) const {
  TERN_CHECK(i >= 0 && i < num_sequences_) << i << " of " << num_sequences_;
  return LoadLe<int32_t>(sizes_ + 4 * i);
}

int64_t IndexedDataset::sequence_pointer(int64_t i) const {
  TERN_CHECK(i >= 0 && i < num_sequences_) << i << " of " << num_sequences_;
  return LoadLe<int64_t>(pointers_ + 8 * i);
}

int64_t IndexedDataset::document_index(int64_t d) const {
  TERN_CHECK(d >= 0 && d < num_doc_idx_) << d << " of " << num_doc_idx_;
  return LoadLe<int64_t>(doc_idx_ + 8 * d);
}

uint64_t IndexedDataset::sequence_start(int64_t i) const {
  TERN_CHECK(i >= 0 && i <= num_sequences_) << i << " of " << num_sequences_;
  if (!contiguous_) return starts_[i];
  if (i == num_sequences_) return num_tokens_;
  return static_cast<uint64_t>(sequence_pointer(i) - sequence_pointer(0)) / item_size_;
}

void IndexedDataset::CopyTokens(uint64_t byte_offset, uint64_t n, int32_t* out) const {
  const uint8_t* src = bin_.data() + byte_offset;
  internal::DispatchTokenType(dtype_, [&](auto tag) {
    using T = decltype(tag);
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(LoadLe<T>(src + i * sizeof(T)));
    return 0;
  });
}

void IndexedDataset::ReadTokens(uint64_t pos, uint64_t n, int32_t* out) const {
  TERN_CHECK(pos <= num_tokens_ && n <= num_tokens_ - pos)
      << "tokens [" << pos << ", " << pos + n << ") outside " << num_tokens_ << " in "
      << bin_path();
  if (n == 0) return;
  if (contiguous_) {
    CopyTokens(static_cast<uint64_t>(sequence_pointer(0)) + pos * item_size_, n, out);
    return;
  }
  // Last sequence starting at or before pos (empty sequences share their successor's start).
  int64_t seq = std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin() - 1;
  while (n > 0) {
    const uint64_t offset = pos - starts_[seq];
    const uint64_t take = std::min<uint64_t>(n, sequence_size(seq) - offset);
    CopyTokens(static_cast<uint64_t>(sequence_pointer(seq)) + offset * item_size_, take, out);
    out += take;
    pos += take;
    n -= take;
    ++seq;
  }
}

absl::Status IndexedDataset::ValidateVocab(int64_t vocab_size) const {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  if ((dtype_ == DType::kUInt8 && vocab_size >= 256) ||
      (dtype_ == DType::kUInt16 && vocab_size >= 65536)) {
    return absl::OkStatus();  // every value of the dtype is a valid id
  }
  for (int64_t s = 0; s < num_sequences_; ++s) {
    const uint64_t n = static_cast<uint64_t>(sequence_size(s));
    const uint8_t* src = bin_.data() + sequence_pointer(s);
    const uint64_t bad = internal::DispatchTokenType(
        dtype_, [&](auto tag) { return FirstOutOfVocab<decltype(tag)>(src, n, vocab_size); });
    if (bad == n) continue;
    const int64_t value = internal::DispatchTokenType(dtype_, [&](auto tag) {
      using T = decltype(tag);
      return static_cast<int64_t>(LoadLe<T>(src + bad * sizeof(T)));
    });
    return absl::InvalidArgumentError(absl::StrCat(
        "token id ", value, " at token position ", sequence_start(s) + bad, " (sequence ", s,
        ", offset ", bad, ") of '", bin_path(), "' is outside the vocabulary [0, ", vocab_size,
        ") --> hint: the data was tokenized for a different vocabulary; re-run data preparation ",
        "with the model's tokenizer or fix the model's vocab_size"));
  }
  return absl::OkStatus();
}

}  // namespace tern::data
