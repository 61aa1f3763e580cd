#include "worker/data/tokenizer.h"

#include "absl/strings/str_cat.h"

namespace tern::data {

void ByteTokenizer::Encode(std::string_view text, std::vector<int32_t>* out) const {
  const size_t first = out->size();
  out->resize(first + text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    (*out)[first + i] = static_cast<int32_t>(static_cast<unsigned char>(text[i]));
  }
}

std::string ByteTokenizer::Decode(std::span<const int32_t> tokens) const {
  std::string text(tokens.size(), '?');
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= 0 && tokens[i] < kVocabSize) text[i] = static_cast<char>(tokens[i]);
  }
  return text;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeTokenizer(const std::string& name) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown tokenizer '", name, "' --> hint: known tokenizers: byte"));
}

}  // namespace tern::data
