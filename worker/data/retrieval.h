// The synthetic long-context retrieval task ("a key placed at depth d of a context of length L;
// recall it"): the prompts `tern eval --retrieval` asks, and training documents in exactly that
// format (`tern data retrieval`), so a model can be taught the task on short contexts and measured
// on long ones.
//
// A context of L tokens (bytes) whose key has k digits:
//   filler cut to `room` bytes, with " The key is KEY. " inserted at round(depth * room),
//   then " What is the key? The key is " and the k key digits:
//   room = L - k - |question| - |needle|.
// The filler is kRetrievalFiller repeated, starting at byte `phase` of it (the eval uses 0).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tern::data {

inline constexpr std::string_view kRetrievalFiller =
    "The grass is green. The sky is blue. The sun is warm. ";
inline constexpr std::string_view kRetrievalQuestion = " What is the key? The key is ";

// " The key is KEY. "
std::string RetrievalNeedle(std::string_view key);
// The shortest context that holds a key of `key_digits` digits: question + needle + answer.
int MinRetrievalLength(int key_digits);
// `digits` uniformly random decimal digits.
std::string RandomKey(int digits, std::mt19937_64& rng);
// Everything before the answer in a context of `length` tokens (see the file comment), so
// |prompt| = length - |key|. Requires length >= MinRetrievalLength(|key|), depth in [0, 1] and
// phase in [0, |kRetrievalFiller|).
std::string RetrievalPrompt(std::string_view key, int length, double depth, int phase = 0);

struct RetrievalDataOptions {
  // Writes OUTPUT_PREFIX.{bin,idx} (train) and OUTPUT_PREFIX_val.{bin,idx} (validation).
  std::string output_prefix;
  // Every document is exactly seq_len tokens, so the data loader's windows [w*seq_len,
  // w*seq_len + seq_len + 1) hold one document each when training uses this seq_len: no other
  // document's key is in view. A document is a context of L tokens (prompt and key), L uniform
  // in [min_length, seq_len]; a context shorter than seq_len is followed by a newline and filler
  // (from its start) up to seq_len tokens, so the question is not always at the window's end.
  int seq_len = 512;
  int min_length = 0;      // 0: seq_len (every context fills its window)
  int64_t docs = 10000;    // training documents
  int64_t val_docs = 100;  // validation documents
  // Key lengths, uniform in [min_key_digits, max_key_digits]. Keys longer than the eval's 5
  // digits give the copy more targets per document, which is what lets a small model find the
  // retrieval circuit at all (see tests/bench/eval/README.md).
  int min_key_digits = 5, max_key_digits = 5;
  uint64_t seed = 1234;
};

struct RetrievalDataReport {
  std::string train_prefix, val_prefix;
  int seq_len = 0, min_length = 0;
  int64_t train_docs = 0, val_docs = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
  nlohmann::json ToJson() const;
};

// Each document: context length uniform in [min_length, seq_len], key length uniform in
// [min, max], depth uniform in [0, 1], filler phase 0 for half the documents and uniform over
// the filler for the other half. Deterministic in `seed`.
// INVALID_ARGUMENT naming the option: min_length too short for max_key_digits or above seq_len, key
// digits outside [1, 1000] or min > max, docs < 1, val_docs < 0, empty output_prefix; NOT_FOUND for
// a missing output directory. Written like `tern data prepare` (temporaries renamed when complete).
absl::StatusOr<RetrievalDataReport> WriteRetrievalDataset(const RetrievalDataOptions& options);

}  // namespace tern::data
