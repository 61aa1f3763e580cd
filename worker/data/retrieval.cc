#include "worker/data/retrieval.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/core/status.h"
#include "worker/data/indexed_dataset.h"
#include "worker/data/prepare.h"

namespace tern::data {

std::string RetrievalNeedle(std::string_view key) {
  return " The key is " + std::string(key) + ". ";
}

int MinRetrievalLength(int key_digits) {
  return int(kRetrievalQuestion.size()) + int(RetrievalNeedle("").size()) + 2 * key_digits;
}

std::string RandomKey(int digits, std::mt19937_64& rng) {
  std::string key;
  for (int i = 0; i < digits; ++i) key.push_back(char('0' + rng() % 10));
  return key;
}

std::string RetrievalPrompt(std::string_view key, int length, double depth, int phase) {
  const std::string needle = RetrievalNeedle(key);
  const int room = length - int(key.size()) - int(kRetrievalQuestion.size()) - int(needle.size());
  std::string hay;
  while (int(hay.size()) < room + phase) hay += kRetrievalFiller;
  hay = hay.substr(size_t(phase), size_t(std::max(room, 0)));
  const size_t at = static_cast<size_t>(std::lround(depth * room));
  return hay.substr(0, at) + needle + hay.substr(at) + std::string(kRetrievalQuestion);
}

nlohmann::json RetrievalDataReport::ToJson() const {
  return nlohmann::json{{"train_prefix", train_prefix}, {"val_prefix", val_prefix},
                        {"seq_len", seq_len},           {"min_length", min_length},
                        {"train_docs", train_docs},     {"val_docs", val_docs},
                        {"train_tokens", train_tokens}, {"val_tokens", val_tokens}};
}

absl::StatusOr<RetrievalDataReport> WriteRetrievalDataset(const RetrievalDataOptions& o) {
  const auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("data retrieval: ", parts...));
  };
  if (o.output_prefix.empty()) return bad("output_prefix is empty");
  if (o.min_key_digits < 1 || o.max_key_digits > 1000 || o.min_key_digits > o.max_key_digits)
    return bad("key digits ", o.min_key_digits, ":", o.max_key_digits,
               " must satisfy 1 <= MIN <= MAX <= 1000");
  const int min_length = o.min_length == 0 ? o.seq_len : o.min_length;
  if (min_length > o.seq_len) return bad("min_length ", min_length, " exceeds seq_len ", o.seq_len);
  if (min_length < MinRetrievalLength(o.max_key_digits))
    return bad(o.min_length == 0 ? "seq_len " : "min_length ", min_length,
               " is too short: a key of ", o.max_key_digits, " digits needs a context of ",
               MinRetrievalLength(o.max_key_digits), " tokens");
  if (o.docs < 1) return bad("docs must be at least 1, got ", o.docs);
  if (o.val_docs < 0) return bad("val_docs must be at least 0, got ", o.val_docs);
  TERN_RETURN_IF_ERROR(CheckOutputDirectory("data retrieval", o.output_prefix));

  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> digits(o.min_key_digits, o.max_key_digits);
  std::uniform_real_distribution<double> depth(0.0, 1.0);
  std::uniform_int_distribution<int> phase(0, int(kRetrievalFiller.size()) - 1);
  std::uniform_int_distribution<int> length(min_length, o.seq_len);
  std::string tail = "\n";  // what follows a short context: a newline, filler from its start
  while (int(tail.size()) < o.seq_len) tail += kRetrievalFiller;
  const int64_t total = o.docs + o.val_docs;
  // Validation documents come last, so the training set of a seed does not depend on val_docs.
  TERN_ASSIGN_OR_RETURN(
      SplitCounts counts,
      WriteSplitDatasets(
          o.output_prefix, DType::kUInt16, total, [&](int64_t d) { return d >= o.docs; },
          [&](int64_t, std::vector<int32_t>* tokens) {
            const int L = length(rng);
            const std::string key = RandomKey(digits(rng), rng);
            const double at = depth(rng);
            const int ph = rng() % 2 == 0 ? 0 : phase(rng);
            const std::string doc =
                RetrievalPrompt(key, L, at, ph) + key + tail.substr(0, size_t(o.seq_len - L));
            tokens->assign(doc.begin(), doc.end());
            for (auto& t : *tokens) t = static_cast<uint8_t>(t);
            return absl::OkStatus();
          }));
  RetrievalDataReport r;
  r.train_prefix = o.output_prefix;
  r.val_prefix = ValPrefix(o.output_prefix);
  r.seq_len = o.seq_len;
  r.min_length = min_length;
  r.train_docs = counts.train_docs;
  r.val_docs = counts.val_docs;
  r.train_tokens = counts.train_tokens;
  r.val_tokens = counts.val_tokens;
  spdlog::info("retrieval data {}: {} train docs, {} val docs of {} tokens (contexts of {}..{})",
               r.train_prefix, r.train_docs, r.val_docs, r.seq_len, r.min_length, r.seq_len);
  return r;
}

}  // namespace tern::data
