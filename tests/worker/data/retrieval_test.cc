// The retrieval task's prompts and `tern data retrieval`'s training documents: the format pinned
// by hand, every document exactly seq_len tokens holding one self-consistent episode (so each
// data-loader window is one document), the distributions the options promise, determinism, and
// refusals that write nothing.
#include "worker/data/retrieval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "tests/worker/data/data_test_util.h"
#include "worker/data/data_loader.h"
#include "worker/data/indexed_dataset.h"

namespace tern::data {
namespace {

using testing::ReadFile;
using testing::ScratchDir;

TEST(RetrievalPromptTest, PinnedByHand) {
  // room = 80 - 5 - 29 - 19 = 27 filler bytes, the needle at round(0.5 * 27) = 14.
  EXPECT_EQ(RetrievalPrompt("12345", 80, 0.5),
            "The grass is g The key is 12345. reen. The sky What is the key? The key is ");
  EXPECT_EQ(RetrievalPrompt("12345", 80, 0.0),
            " The key is 12345. The grass is green. The sky What is the key? The key is ");
  // room = 60 - 1 - 29 - 15 = 15 bytes of filler from phase 4 ("grass"), the needle after them.
  EXPECT_EQ(RetrievalPrompt("7", 60, 1.0, 4),
            "grass is green. The key is 7.  What is the key? The key is ");
  EXPECT_EQ(MinRetrievalLength(5), 53);
  EXPECT_EQ(RetrievalPrompt("12345", 53, 0.3), " The key is 12345.  What is the key? The key is ");
}

TEST(RetrievalPromptTest, LengthNeedleAndFillerForAnyShape) {
  const std::string filler(kRetrievalFiller);
  std::string repeated;
  while (repeated.size() < 4000) repeated += filler;
  for (int digits : {1, 5, 17})
    for (int L : {MinRetrievalLength(digits), 100, 513, 2048})
      for (double depth : {0.0, 0.1, 0.5, 0.999, 1.0})
        for (int phase : {0, 1, 30, int(filler.size()) - 1}) {
          const std::string key(size_t(digits), '3');
          const std::string p = RetrievalPrompt(key, L, depth, phase);
          ASSERT_EQ(int(p.size() + key.size()), L) << digits << " " << L;
          const std::string needle = RetrievalNeedle(key);
          const int room = L - digits - int(kRetrievalQuestion.size()) - int(needle.size());
          const size_t at = size_t(std::lround(depth * room));
          ASSERT_EQ(p.substr(at, needle.size()), needle);
          std::string hay = p.substr(0, at) + p.substr(at + needle.size());
          ASSERT_TRUE(hay.ends_with(kRetrievalQuestion));
          hay.resize(hay.size() - kRetrievalQuestion.size());
          EXPECT_EQ(hay, repeated.substr(size_t(phase), size_t(room)));
        }
}

// Checks one document's shape: a context of L tokens in [min_length, seq_len] that is exactly the
// eval's prompt for its key, depth and filler phase, then (when L < seq_len) a newline and filler.
void CheckDocument(const std::vector<int32_t>& tokens, int seq_len, int min_length, int min_digits,
                   int max_digits, std::string* key, size_t* needle_at, int* phase, int* length) {
  ASSERT_EQ(int(tokens.size()), seq_len);
  const std::string doc(tokens.begin(), tokens.end());
  const std::string context = doc.substr(0, doc.find('\n'));
  *length = int(context.size());
  ASSERT_GE(*length, min_length) << doc;
  if (*length < seq_len) {
    std::string tail = "\n";
    while (tail.size() < doc.size()) tail += kRetrievalFiller;
    EXPECT_EQ(doc.substr(context.size()), tail.substr(0, doc.size() - context.size()));
  }
  const size_t q = context.rfind(kRetrievalQuestion);
  ASSERT_NE(q, std::string::npos) << doc;
  *key = context.substr(q + kRetrievalQuestion.size());
  ASSERT_GE(int(key->size()), min_digits) << doc;
  ASSERT_LE(int(key->size()), max_digits) << doc;
  for (char c : *key) ASSERT_TRUE(c >= '0' && c <= '9') << doc;
  *needle_at = context.find(RetrievalNeedle(*key));
  ASSERT_NE(*needle_at, std::string::npos) << doc;
  const int room = *length - int(key->size()) - int(kRetrievalQuestion.size()) -
                   int(RetrievalNeedle(*key).size());
  const std::string filler(kRetrievalFiller);
  *phase = -1;
  for (int ph = 0; ph < int(filler.size()) && *phase < 0; ++ph)
    if (RetrievalPrompt(*key, *length, double(*needle_at) / room, ph) + *key == context)
      *phase = ph;
  ASSERT_GE(*phase, 0) << doc;
}

TEST(RetrievalDataTest, OneEpisodePerWindowWithTheRequestedKeys) {
  ScratchDir dir;
  RetrievalDataOptions o;
  o.output_prefix = dir.File("ret");
  o.seq_len = 96;
  o.min_length = 70;
  o.docs = 300;
  o.val_docs = 7;
  o.min_key_digits = 3;
  o.max_key_digits = 9;
  o.seed = 5;
  auto report = WriteRetrievalDataset(o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->train_docs, 300);
  EXPECT_EQ(report->val_docs, 7);
  EXPECT_EQ(report->train_tokens, 300u * 96);
  EXPECT_EQ(report->val_tokens, 7u * 96);
  EXPECT_EQ(dir.List(),
            (std::vector<std::string>{"ret.bin", "ret.idx", "ret_val.bin", "ret_val.idx"}));

  auto ds = IndexedDataset::Open(o.output_prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  std::set<size_t> lengths, needles;
  std::set<int> contexts;
  int phase0 = 0;
  std::vector<int32_t> tokens;
  for (int64_t d = 0; d < (*ds)->num_sequences(); ++d) {
    tokens.resize(size_t((*ds)->sequence_size(d)));
    (*ds)->ReadTokens((*ds)->sequence_start(d), tokens.size(), tokens.data());
    std::string key;
    size_t at = 0;
    int phase = 0, length = 0;
    CheckDocument(tokens, o.seq_len, 70, 3, 9, &key, &at, &phase, &length);
    if (::testing::Test::HasFatalFailure()) return;
    lengths.insert(key.size());
    needles.insert(at);
    phase0 += phase == 0;
    contexts.insert(length);
  }
  EXPECT_EQ(contexts.size(), 27u) << "every context length 70..96 occurs";
  EXPECT_EQ(lengths.size(), 7u) << "every key length 3..9 occurs";
  EXPECT_GT(needles.size(), 30u) << "depths spread over the context";
  EXPECT_GT(phase0, 100);  // about half start the filler at its beginning...
  EXPECT_LT(phase0, 200);  // ...the others elsewhere

  // With data.seq_len = seq_len every training window is exactly one document (plus the next
  // document's first token as the last target).
  auto loader = DataLoader::Open(o.output_prefix, o.seq_len, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  std::vector<int32_t> in(o.seq_len), tgt(o.seq_len), doc;
  for (uint64_t i = 0; i < 20; ++i) {
    (*loader)->Sample(i, in.data(), tgt.data());
    const int64_t w = int64_t((*loader)->WindowOf(i));  // document w, whole
    doc.resize(size_t((*ds)->sequence_size(w)));
    (*ds)->ReadTokens((*ds)->sequence_start(w), doc.size(), doc.data());
    EXPECT_EQ(in, doc) << "sample " << i;
  }

  // Deterministic in the seed; the training documents do not depend on val_docs.
  ScratchDir dir2;
  RetrievalDataOptions o2 = o;
  o2.output_prefix = dir2.File("ret");
  o2.val_docs = 0;
  ASSERT_TRUE(WriteRetrievalDataset(o2).ok());
  EXPECT_EQ(ReadFile(dir2.File("ret.bin")), ReadFile(dir.File("ret.bin")));
  o2.seed = 6;
  ASSERT_TRUE(WriteRetrievalDataset(o2).ok());
  EXPECT_NE(ReadFile(dir2.File("ret.bin")), ReadFile(dir.File("ret.bin")));
}

TEST(RetrievalDataTest, RefusesBadOptionsByNameAndWritesNothing) {
  ScratchDir dir;
  RetrievalDataOptions good;
  good.output_prefix = dir.File("ret");
  good.seq_len = 64;
  good.docs = 4;
  struct Case {
    std::function<void(RetrievalDataOptions&)> change;
    absl::StatusCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.seq_len = 52; }, absl::StatusCode::kInvalidArgument,
       "seq_len 52 is too short: a key of 5 digits needs a context of 53"},
      {[](auto& o) { o.min_length = 40; }, absl::StatusCode::kInvalidArgument,
       "min_length 40 is too short"},
      {[](auto& o) { o.min_length = 65; }, absl::StatusCode::kInvalidArgument,
       "min_length 65 exceeds seq_len 64"},
      {[](auto& o) { o.max_key_digits = 11; }, absl::StatusCode::kInvalidArgument,
       "seq_len 64 is too short: a key of 11 digits"},
      {[](auto& o) { o.min_key_digits = 0; }, absl::StatusCode::kInvalidArgument, "key digits 0:5"},
      {[](auto& o) { o.min_key_digits = 7; }, absl::StatusCode::kInvalidArgument, "key digits 7:5"},
      {[](auto& o) { o.docs = 0; }, absl::StatusCode::kInvalidArgument, "docs must be at least 1"},
      {[](auto& o) { o.val_docs = -1; }, absl::StatusCode::kInvalidArgument, "val_docs"},
      {[](auto& o) { o.output_prefix = ""; }, absl::StatusCode::kInvalidArgument,
       "output_prefix is empty"},
      {[&](auto& o) { o.output_prefix = dir.File("missing/ret"); }, absl::StatusCode::kNotFound,
       "output directory"},
  };
  for (const Case& c : cases) {
    RetrievalDataOptions o = good;
    c.change(o);
    auto r = WriteRetrievalDataset(o);
    ASSERT_FALSE(r.ok()) << c.says;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status();
  }
  EXPECT_TRUE(dir.List().empty());
  // The shortest seq_len that fits is accepted.
  good.seq_len = 53;
  EXPECT_TRUE(WriteRetrievalDataset(good).ok());
}

}  // namespace
}  // namespace tern::data
