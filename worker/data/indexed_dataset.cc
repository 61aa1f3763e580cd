#include "worker/data/indexed_dataset.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"
#include "worker/data/dtype_dispatch.h"

namespace tern::data {

static_assert(std::endian::native == std::endian::little,
              "the MMIDIDX format is little-endian; big-endian hosts are not supported");

namespace {

// Writes tokens as T into dst, checking each fits T.
template <typename T>
absl::Status EncodeTokens(std::span<const int32_t> tokens, DType dtype, uint8_t* dst,
                          const std::string& bin, uint64_t first_pos) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    int64_t v = tokens[i];
    if (v < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        v > static_cast<int64_t>(std::numeric_limits<T>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", v, " at token position ",
                                                     first_pos + i, " does not fit the ",
                                                     DTypeName(dtype), " dtype of '", bin, "'"));
    }
    T t = static_cast<T>(v);
    std::memcpy(dst + i * sizeof(T), &t, sizeof(T));
  }
  return absl::OkStatus();
}

absl::Status WriteAll(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes == 0) return absl::OkStatus();
  if (std::fwrite(data, 1, bytes, f) != bytes)
    return FileError(errno, "file", path, "cannot write");
  return absl::OkStatus();
}

// fflush + fsync + fclose; *f is null afterwards.
absl::Status CloseSynced(std::FILE** f, const std::string& path) {
  absl::Status status;
  if (std::fflush(*f) != 0 || ::fsync(::fileno(*f)) != 0) {
    status = FileError(errno, "file", path, "cannot flush");
  }
  if (std::fclose(*f) != 0 && status.ok()) status = FileError(errno, "file", path, "cannot close");
  *f = nullptr;
  return status;
}

}  // namespace

// ---- DType ------------------------------------------------------------------------------

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kUInt8:
    case DType::kInt8:
      return 1;
    case DType::kInt16:
    case DType::kUInt16:
      return 2;
    case DType::kInt32:
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
    case DType::kFloat64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kUInt8:
      return "uint8";
    case DType::kInt8:
      return "int8";
    case DType::kInt16:
      return "int16";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat32:
      return "float32";
    case DType::kUInt16:
      return "uint16";
  }
  return "unknown";
}

bool IsTokenDType(DType dtype) {
  return DTypeSize(dtype) != 0 && dtype != DType::kFloat32 && dtype != DType::kFloat64;
}

DType DTypeForVocab(int64_t vocab_size) {
  return vocab_size < 65500 ? DType::kUInt16 : DType::kInt32;
}

// ---- IndexedDatasetBuilder -----------------------------------------------------------------

IndexedDatasetBuilder::IndexedDatasetBuilder(std::string bin_path, std::string idx_path,
                                             DType dtype, std::FILE* bin)
    : bin_path_(std::move(bin_path)), idx_path_(std::move(idx_path)), dtype_(dtype), bin_(bin) {}

absl::StatusOr<std::unique_ptr<IndexedDatasetBuilder>> IndexedDatasetBuilder::Create(
    std::string bin_path, std::string idx_path, DType dtype) {
  if (!IsTokenDType(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write '", bin_path, "': dtype code ",
                                                   static_cast<int>(dtype), " (", DTypeName(dtype),
                                                   ") is not an integer token dtype"));
  }
  std::FILE* bin = std::fopen(bin_path.c_str(), "wb");
  if (bin == nullptr) return FileError(errno, "dataset tokens", bin_path, "cannot create");
  return std::unique_ptr<IndexedDatasetBuilder>(
      new IndexedDatasetBuilder(std::move(bin_path), std::move(idx_path), dtype, bin));
}

absl::StatusOr<std::unique_ptr<IndexedDatasetBuilder>> IndexedDatasetBuilder::Create(
    const std::string& prefix, DType dtype) {
  return Create(BinPath(prefix), IdxPath(prefix), dtype);
}

IndexedDatasetBuilder::~IndexedDatasetBuilder() {
  if (bin_ != nullptr) std::fclose(bin_);
}

absl::Status IndexedDatasetBuilder::AddItem(std::span<const int32_t> tokens) {
  TERN_CHECK(!finished_) << "AddItem after Finish on " << bin_path_;
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("sequence of ", tokens.size(),
                                                   " tokens is too long for '", idx_path_,
                                                   "' (int32 sizes); split the document"));
  }
  scratch_.resize(tokens.size() * DTypeSize(dtype_));
  absl::Status status = internal::DispatchTokenType(dtype_, [&](auto tag) {
    return EncodeTokens<decltype(tag)>(tokens, dtype_, scratch_.data(), bin_path_, num_tokens_);
  });
  TERN_RETURN_IF_ERROR(status);
  TERN_RETURN_IF_ERROR(WriteAll(bin_, scratch_.data(), scratch_.size(), bin_path_));
  sizes_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += tokens.size();
  return absl::OkStatus();
}

void IndexedDatasetBuilder::EndDocument() { doc_idx_.push_back(num_sequences()); }

absl::Status IndexedDatasetBuilder::AddDocument(std::span<const int32_t> tokens) {
  TERN_RETURN_IF_ERROR(AddItem(tokens));
  EndDocument();
  return absl::OkStatus();
}

absl::Status IndexedDatasetBuilder::Finish() {
  TERN_CHECK(!finished_) << "Finish called twice on " << bin_path_;
  finished_ = true;
  TERN_RETURN_IF_ERROR(CloseSynced(&bin_, bin_path_));
  return WriteIdx();
}

absl::Status IndexedDatasetBuilder::WriteIdx() {
  std::FILE* idx = std::fopen(idx_path_.c_str(), "wb");
  if (idx == nullptr) return FileError(errno, "dataset index", idx_path_, "cannot create");
  uint8_t header[kIdxHeaderBytes];
  const uint64_t num_seq = sizes_.size();
  const uint64_t num_doc_idx = doc_idx_.size();
  std::memcpy(header, kIdxMagic, 9);
  std::memcpy(header + 9, &kIdxVersion, 8);
  header[17] = static_cast<uint8_t>(dtype_);
  std::memcpy(header + 18, &num_seq, 8);
  std::memcpy(header + 26, &num_doc_idx, 8);
  std::vector<int64_t> pointers(num_seq);
  int64_t ptr = 0;
  for (uint64_t i = 0; i < num_seq; ++i) {
    pointers[i] = ptr;
    ptr += static_cast<int64_t>(sizes_[i]) * static_cast<int64_t>(DTypeSize(dtype_));
  }
  absl::Status status = WriteAll(idx, header, sizeof(header), idx_path_);
  if (status.ok()) status = WriteAll(idx, sizes_.data(), num_seq * 4, idx_path_);
  if (status.ok()) status = WriteAll(idx, pointers.data(), num_seq * 8, idx_path_);
  if (status.ok()) status = WriteAll(idx, doc_idx_.data(), num_doc_idx * 8, idx_path_);
  absl::Status closed = CloseSynced(&idx, idx_path_);
  return status.ok() ? closed : status;
}

}  // namespace tern::data
