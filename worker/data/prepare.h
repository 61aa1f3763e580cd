// Text corpus -> Megatron indexed dataset (train + held-out validation split).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/data/indexed_dataset.h"

namespace tern::data {

struct PrepareOptions {
  // Text files, read as raw bytes. A directory expands to ListCorpusFiles(directory).
  std::vector<std::string> inputs;
  // Writes OUTPUT_PREFIX.{bin,idx} (train) and OUTPUT_PREFIX_val.{bin,idx} (validation).
  std::string output_prefix;
  // Empty: one document per input file. Otherwise a line whose text (without "\n" and an
  // optional "\r") equals it ends a document and is itself dropped, e.g. "%" for fortune
  // files. The end of each file also ends a document. Empty documents are dropped.
  std::string doc_separator;
  // Fraction of documents held out for validation: round(n * val_fraction) documents, but at
  // least 1 (when val_fraction > 0 and n >= 2) and at most n - 1. Range [0, 1).
  double val_fraction = 0.01;
  // Seeds the held-out selection (see ValSplitSeed).
  uint64_t seed = 1234;
  // "byte" (vocab 256) is the only tokenizer so far.
  std::string tokenizer = "byte";
};

struct PrepareReport {
  std::string train_prefix;  // == output_prefix
  std::string val_prefix;    // == ValPrefix(output_prefix)
  std::string tokenizer;
  int32_t vocab_size = 0;
  DType dtype = DType::kUInt16;
  std::vector<std::string> input_files;  // after directory expansion, in reading order
  uint64_t input_bytes = 0;
  int64_t separator_lines = 0;  // separator lines removed
  int64_t empty_docs_dropped = 0;
  int64_t train_docs = 0;
  int64_t val_docs = 0;
  uint64_t train_tokens = 0;
  uint64_t val_tokens = 0;
  // Document numbers (0-based, in input order after dropping empties) held out for validation,
  // ascending. Both splits keep the input order of their documents.
  std::vector<int64_t> val_doc_ids;

  nlohmann::json ToJson() const;  // everything above except val_doc_ids
};

// Tokenizes `options.inputs` and writes the train and validation datasets.
// Validates every option and input before writing anything:
//   INVALID_ARGUMENT  unknown tokenizer, no inputs, empty output_prefix, val_fraction outside
//                     [0, 1), an input that is not a file or directory, no non-empty document
//   NOT_FOUND         a missing input (all missing inputs are named) or output directory
// Files are written under temporary names (PREFIX.bin.tmp-PID, ...) and renamed into place
// only after all four are complete and fsynced; on failure the temporaries are removed.
absl::StatusOr<PrepareReport> PrepareDataset(const PrepareOptions& options);

// What WriteSplitDatasets wrote.
struct SplitCounts {
  int64_t train_docs = 0, val_docs = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
};

// Writes documents 0..count-1 (`document(d, &tokens)` fills document d's tokens) to
// PREFIX.{bin,idx}, or to PREFIX_val.{bin,idx} where is_val(d), in order. All four files are
// written under temporary names (PATH.tmp-PID), fsynced, and renamed into place only when all are
// complete; on any error (the document callback's included) the temporaries are removed and
// nothing at PREFIX is touched.
absl::StatusOr<SplitCounts> WriteSplitDatasets(
    const std::string& prefix, DType dtype, int64_t count,
    const std::function<bool(int64_t)>& is_val,
    const std::function<absl::Status(int64_t, std::vector<int32_t>*)>& document);

// NOT_FOUND, naming `what` and the prefix, unless the directory of `prefix` exists.
absl::Status CheckOutputDirectory(const std::string& what, const std::string& prefix);

// OUTPUT_PREFIX + "_val".
inline std::string ValPrefix(const std::string& prefix) { return prefix + "_val"; }

// Seed of the held-out shuffle: a Fisher-Yates permutation of the document numbers with
// std::mt19937_64(ValSplitSeed(seed)) (rng.h); its first n_val entries are held out.
uint64_t ValSplitSeed(uint64_t seed);

// Regular files (symlinks followed) directly in `dir`, sorted by name, skipping hidden files
// and fortune's index companions (*.dat, *.u8). NOT_FOUND / INVALID_ARGUMENT naming `dir`.
absl::StatusOr<std::vector<std::string>> ListCorpusFiles(const std::string& dir);

}  // namespace tern::data
