// Megatron-LM / DeepSpeed "MMIDIDX" indexed dataset: writer and memory-mapped reader.
//
// PREFIX.bin holds the tokens of every sequence back to back in one dtype. PREFIX.idx is
// (all little-endian, packed, no padding):
//   offset 0   char[9]  magic "MMIDIDX\0\0"
//   offset 9   uint64   version = 1
//   offset 17  uint8    dtype code (DType below)
//   offset 18  uint64   S = sequence count
//   offset 26  uint64   D = document-index count (documents + 1)
//   offset 34  int32    sizes[S]     tokens per sequence
//              int64    pointers[S]  byte offset of each sequence in .bin
//              int64    doc_idx[D]   0, then the sequence count at the end of each document
//              (int8    modes[S]     only in Megatron's multimodal files; ignored)
// This is byte-for-byte what megatron/core/datasets/indexed_dataset.py writes and reads.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/mapped_file.h"

namespace tern::data {

// Megatron's dtype codes.
enum class DType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

inline constexpr char kIdxMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIdxVersion = 1;
inline constexpr size_t kIdxHeaderBytes = 34;  // magic + version + dtype + S + D

// Bytes per element; 0 for an unknown code.
size_t DTypeSize(DType dtype);
// "uint16" etc.; "unknown" for an unknown code.
const char* DTypeName(DType dtype);
// True for the integer token dtypes the reader accepts (uint8, int8, int16, uint16, int32, int64).
bool IsTokenDType(DType dtype);
// Megatron's choice: uint16 when vocab_size < 65500, else int32.
DType DTypeForVocab(int64_t vocab_size);

inline std::string IdxPath(const std::string& prefix) { return prefix + ".idx"; }
inline std::string BinPath(const std::string& prefix) { return prefix + ".bin"; }

// Streams tokens into a .bin file and writes the .idx on Finish(). Mirrors Megatron's
// IndexedDatasetBuilder (add_item / end_document / add_document / finalize). Not thread-safe.
class IndexedDatasetBuilder {
 public:
  // Creates (truncates) bin_path. Errors: INVALID_ARGUMENT for a non-token dtype, or the
  // errno-derived status naming bin_path.
  static absl::StatusOr<std::unique_ptr<IndexedDatasetBuilder>> Create(std::string bin_path,
                                                                       std::string idx_path,
                                                                       DType dtype);
  // Same with PREFIX.bin / PREFIX.idx.
  static absl::StatusOr<std::unique_ptr<IndexedDatasetBuilder>> Create(const std::string& prefix,
                                                                       DType dtype);
  ~IndexedDatasetBuilder();  // Closes the .bin; without Finish() no .idx is written.

  // Appends one sequence. INVALID_ARGUMENT if a token does not fit the dtype (message names
  // the token, its position and the .bin path) or the sequence has more than 2^31-1 tokens.
  absl::Status AddItem(std::span<const int32_t> tokens);
  // Closes the current document (appends the sequence count to doc_idx).
  void EndDocument();
  // AddItem(tokens) then EndDocument(): one sequence per document, like preprocess_data.py.
  absl::Status AddDocument(std::span<const int32_t> tokens);
  // Flushes and fsyncs the .bin, writes and fsyncs the .idx. Call once.
  absl::Status Finish();

  DType dtype() const { return dtype_; }
  int64_t num_sequences() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(doc_idx_.size()) - 1; }
  uint64_t num_tokens() const { return num_tokens_; }
  const std::string& bin_path() const { return bin_path_; }
  const std::string& idx_path() const { return idx_path_; }

 private:
  IndexedDatasetBuilder(std::string bin_path, std::string idx_path, DType dtype, std::FILE* bin);
  absl::Status WriteIdx();

  std::string bin_path_;
  std::string idx_path_;
  DType dtype_;
  std::FILE* bin_ = nullptr;
  std::vector<int32_t> sizes_;
  std::vector<int64_t> doc_idx_{0};
  uint64_t num_tokens_ = 0;
  std::vector<uint8_t> scratch_;  // dtype-converted tokens of the current AddItem
  bool finished_ = false;
};

// Read-only view of PREFIX.{idx,bin}, both memory-mapped. Immutable after Open(), so it is
// safe to share between threads. The "token stream" is every sequence in order (that is, every
// document in order).
class IndexedDataset {
 public:
  // Validates everything except token values (see ValidateVocab):
  //   NOT_FOUND         PREFIX.idx or PREFIX.bin missing (names the file)
  //   INVALID_ARGUMENT  wrong magic (names the file and the bytes found), unsupported version,
  //                     unknown or non-integer dtype code
  //   DATA_LOSS         .idx size inconsistent with its counts (truncated), doc_idx malformed,
  //                     a sequence's bytes outside the .bin (truncated .bin), misaligned pointer
  static absl::StatusOr<std::unique_ptr<IndexedDataset>> Open(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  const std::string& idx_path() const { return idx_.path(); }
  const std::string& bin_path() const { return bin_.path(); }
  DType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  // Documents = doc_idx entries - 1.
  int64_t num_documents() const { return num_doc_idx_ - 1; }
  uint64_t num_tokens() const { return num_tokens_; }

  int32_t sequence_size(int64_t i) const;     // tokens in sequence i
  int64_t sequence_pointer(int64_t i) const;  // byte offset of sequence i in .bin
  int64_t document_index(int64_t d) const;    // doc_idx[d], d in [0, num_documents()]
  uint64_t sequence_start(int64_t i) const;   // position of sequence i in the token stream

  // Copies tokens [pos, pos + n) of the token stream into out[0..n) as int32. Aborts
  // (TERN_CHECK) if the range is outside [0, num_tokens()).
  void ReadTokens(uint64_t pos, uint64_t n, int32_t* out) const;

  // Scans every token; INVALID_ARGUMENT naming the first token id outside [0, vocab_size), its
  // stream position, sequence, offset and the .bin path.
  absl::Status ValidateVocab(int64_t vocab_size) const;

 private:
  IndexedDataset() = default;
  absl::Status ParseIdx();
  absl::Status CheckSequences();
  // Copies n tokens starting at byte offset `byte_offset` of .bin.
  void CopyTokens(uint64_t byte_offset, uint64_t n, int32_t* out) const;

  std::string prefix_;
  MappedFile idx_;
  MappedFile bin_;
  DType dtype_ = DType::kUInt16;
  size_t item_size_ = 0;
  int64_t num_sequences_ = 0;
  int64_t num_doc_idx_ = 0;
  uint64_t num_tokens_ = 0;
  const uint8_t* sizes_ = nullptr;     // int32[S], possibly unaligned: read with memcpy
  const uint8_t* pointers_ = nullptr;  // int64[S]
  const uint8_t* doc_idx_ = nullptr;   // int64[D]
  // True when sequence i starts at pointers[0] + sequence_start(i) * item_size (every file
  // Megatron or Tern writes); otherwise starts_ holds each sequence's stream position.
  bool contiguous_ = true;
  std::vector<uint64_t> starts_;  // S + 1 entries, only when !contiguous_
};

}  // namespace tern::data
