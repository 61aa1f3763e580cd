// Tokenizers used by data preparation. Only the byte tokenizer exists today.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int32_t vocab_size() const = 0;
  // Appends the tokens of `text` to *out.
  virtual void Encode(std::string_view text, std::vector<int32_t>* out) const = 0;
  // Inverse of Encode for ids in [0, vocab_size); other ids become '?'.
  virtual std::string Decode(std::span<const int32_t> tokens) const = 0;
};

// Token id = byte value (0..255); vocab 256. Lossless for any bytes, including UTF-8.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kVocabSize = 256;
  std::string name() const override { return "byte"; }
  int32_t vocab_size() const override { return kVocabSize; }
  void Encode(std::string_view text, std::vector<int32_t>* out) const override;
  std::string Decode(std::span<const int32_t> tokens) const override;
};

// "byte" -> ByteTokenizer; anything else INVALID_ARGUMENT listing the known names.
absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const std::string& name);

}  // namespace tern::data
