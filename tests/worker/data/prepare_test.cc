#include "worker/data/prepare.h"

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/data_test_util.h"
#include "worker/data/tokenizer.h"

namespace tern::data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ReadFile;
using testing::ScratchDir;
using testing::WriteDataset;
using testing::WriteFile;

// Documents of a dataset, decoded as bytes.
std::vector<std::string> Docs(const std::string& prefix) {
  auto ds = IndexedDataset::Open(prefix);
  EXPECT_TRUE(ds.ok()) << ds.status();
  if (!ds.ok()) return {};
  std::vector<std::string> docs;
  ByteTokenizer tok;
  for (int64_t d = 0; d < (*ds)->num_documents(); ++d) {
    uint64_t begin = (*ds)->sequence_start((*ds)->document_index(d));
    uint64_t end = (*ds)->sequence_start((*ds)->document_index(d + 1));
    std::vector<int32_t> tokens(end - begin);
    (*ds)->ReadTokens(begin, end - begin, tokens.data());
    docs.push_back(tok.Decode(tokens));
  }
  return docs;
}

// A synthetic fortune file: `n` fortunes separated by "%" lines, with some noise that must be
// handled (a leading separator, doubled separators = empty documents, a "%" inside a line).
struct Fortunes {
  std::string text;
  std::vector<std::string> docs;
  int separators = 0;
};

Fortunes MakeFortunes(int n, const std::string& tag) {
  Fortunes f;
  f.text = "%\n";
  f.separators = 1;
  for (int i = 0; i < n; ++i) {
    std::string doc = absl::StrCat(tag, " fortune #", i, "\n  100% sure, line two.\n");
    if (i % 7 == 3) doc += "\xc3\xa9t\xc3\xa9 -- a UTF-8 line\n";
    f.docs.push_back(doc);
    f.text += doc;
    if (i + 1 < n) {
      f.text += (i % 10 == 5) ? "%\n%\n" : "%\n";  // doubled: one empty document dropped
      f.separators += (i % 10 == 5) ? 2 : 1;
    }
  }
  return f;  // no trailing separator: the end of the file ends the last fortune
}

TEST(PrepareDatasetTest, FortuneFileSplitsHoldsOutShuffledDocsAndIsDeterministic) {
  ScratchDir dir;
  Fortunes a = MakeFortunes(150, "alpha"), b = MakeFortunes(50, "beta");
  WriteFile(dir.File("alpha"), a.text);
  WriteFile(dir.File("beta"), b.text);
  PrepareOptions options;
  options.inputs = {dir.File("alpha"), dir.File("beta")};
  options.output_prefix = dir.File("out");
  options.doc_separator = "%";
  options.val_fraction = 0.05;
  auto report = PrepareDataset(options);
  ASSERT_TRUE(report.ok()) << report.status();

  std::vector<std::string> all = a.docs;
  all.insert(all.end(), b.docs.begin(), b.docs.end());
  const int64_t n = 200;
  EXPECT_EQ(report->train_docs + report->val_docs, n);
  EXPECT_EQ(report->val_docs, std::llround(n * 0.05));
  EXPECT_EQ(report->separator_lines, a.separators + b.separators);
  EXPECT_EQ(report->empty_docs_dropped, 1 + 15 + 1 + 5);  // leading "%" + doubled ones
  EXPECT_EQ(report->input_bytes, a.text.size() + b.text.size());
  EXPECT_EQ(report->train_tokens + report->val_tokens,
            report->input_bytes - 2 * static_cast<uint64_t>(report->separator_lines));
  EXPECT_EQ(report->dtype, DType::kUInt16);
  EXPECT_EQ(report->val_prefix, dir.File("out_val"));

  // Held-out documents are spread over the corpus, not the tail.
  ASSERT_EQ(report->val_doc_ids.size(), 10u);
  EXPECT_LT(report->val_doc_ids.front(), n - 10);
  // Both splits hold exactly the expected documents, in input order.
  std::vector<std::string> want_train, want_val;
  std::set<int64_t> val_ids(report->val_doc_ids.begin(), report->val_doc_ids.end());
  for (int64_t d = 0; d < n; ++d) (val_ids.count(d) ? want_val : want_train).push_back(all[d]);
  EXPECT_EQ(Docs(options.output_prefix), want_train);
  EXPECT_EQ(Docs(ValPrefix(options.output_prefix)), want_val);
  EXPECT_THAT(dir.List(),
              ElementsAre("alpha", "beta", "out.bin", "out.idx", "out_val.bin", "out_val.idx"));

  // Same seed: byte-identical output. Another seed: another held-out set.
  options.output_prefix = dir.File("again");
  auto again = PrepareDataset(options);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->val_doc_ids, report->val_doc_ids);
  EXPECT_EQ(ReadFile(dir.File("again.idx")), ReadFile(dir.File("out.idx")));
  EXPECT_EQ(ReadFile(dir.File("again_val.bin")), ReadFile(dir.File("out_val.bin")));
  options.output_prefix = dir.File("other");
  options.seed = 99;
  auto other = PrepareDataset(options);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->val_docs, 10);
  EXPECT_NE(other->val_doc_ids, report->val_doc_ids);
}

TEST(PrepareDatasetTest, ValCountRules) {
  ScratchDir dir;
  auto run = [&](int docs, double fraction) -> int64_t {
    std::string text;
    for (int i = 0; i < docs; ++i) text += absl::StrCat(i ? "%\n" : "", "doc ", i, "\n");
    WriteFile(dir.File("in"), text);
    PrepareOptions options;
    options.inputs = {dir.File("in")};
    options.output_prefix = dir.File("o");
    options.doc_separator = "%";
    options.val_fraction = fraction;
    auto report = PrepareDataset(options);
    EXPECT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->train_docs + report->val_docs, docs);
    return report->val_docs;
  };
  EXPECT_EQ(run(250, 0.01), 3);  // round(2.5) = 3
  EXPECT_EQ(run(30, 0.01), 1);   // at least one
  EXPECT_EQ(run(2, 0.01), 1);
  EXPECT_EQ(run(1, 0.5), 0);  // never the only document
  EXPECT_EQ(run(10, 0.0), 0);
  EXPECT_EQ(run(4, 0.99), 3);  // at least one training document
}

TEST(PrepareDatasetTest, NoSeparatorMeansOneDocumentPerFileAndCrLfSeparators) {
  ScratchDir dir;
  WriteFile(dir.File("a.txt"), "first file\n%\nstill first\n");
  WriteFile(dir.File("b.txt"), "");
  WriteFile(dir.File("c.txt"), "third");
  PrepareOptions options;
  options.inputs = {dir.File("a.txt"), dir.File("b.txt"), dir.File("c.txt")};
  options.output_prefix = dir.File("whole");
  options.val_fraction = 0;
  auto report = PrepareDataset(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->empty_docs_dropped, 1);
  EXPECT_THAT(Docs(dir.File("whole")), ElementsAre("first file\n%\nstill first\n", "third"));
  EXPECT_THAT(Docs(dir.File("whole_val")), ElementsAre());

  WriteFile(dir.File("crlf"), "one\r\n%\r\ntwo\r\n%%\r\n");
  options.inputs = {dir.File("crlf")};
  options.output_prefix = dir.File("crlf_out");
  options.doc_separator = "%";
  report = PrepareDataset(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(Docs(dir.File("crlf_out")), ElementsAre("one\r\n", "two\r\n%%\r\n"));
}

TEST(PrepareDatasetTest, DirectoryInputSkipsFortuneIndexFiles) {
  ScratchDir dir;
  std::filesystem::create_directory(dir.File("corpus"));
  WriteFile(dir.File("corpus/b"), "bee\n%\nbuzz\n");
  WriteFile(dir.File("corpus/a"), "ant\n");
  WriteFile(dir.File("corpus/a.dat"), "binary index");
  std::filesystem::create_symlink("a", dir.File("corpus/a.u8"));
  WriteFile(dir.File("corpus/.hidden"), "no");
  auto files = ListCorpusFiles(dir.File("corpus"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, ElementsAre(dir.File("corpus/a"), dir.File("corpus/b")));
  EXPECT_EQ(ListCorpusFiles(dir.File("nope")).status().code(), absl::StatusCode::kNotFound);

  PrepareOptions options;
  options.inputs = {dir.File("corpus")};
  options.output_prefix = dir.File("d");
  options.doc_separator = "%";
  options.val_fraction = 0;
  auto report = PrepareDataset(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(Docs(dir.File("d")), ElementsAre("ant\n", "bee\n", "buzz\n"));
}

TEST(PrepareDatasetTest, InvalidInputsFailBeforeWritingAnything) {
  ScratchDir dir;
  WriteFile(dir.File("good"), "x\n%\ny\n");
  // An existing dataset at the output prefix must survive a failed run untouched.
  WriteDataset(dir.File("out"), {{1, 2, 3}}, DType::kUInt16);
  const std::string old_idx = ReadFile(dir.File("out.idx"));
  const std::vector<std::string> before = dir.List();

  PrepareOptions options;
  options.inputs = {dir.File("good"), dir.File("missing1"), dir.File("missing2")};
  options.output_prefix = dir.File("out");
  absl::StatusOr<PrepareReport> r = PrepareDataset(options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(),
              AllOf(HasSubstr(dir.File("missing1")), HasSubstr(dir.File("missing2"))));

  options.inputs = {dir.File("good")};
  options.tokenizer = "gpt2";
  r = PrepareDataset(options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), AllOf(HasSubstr("gpt2"), HasSubstr("byte")));

  options.tokenizer = "byte";
  options.val_fraction = 1.0;
  EXPECT_EQ(PrepareDataset(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.val_fraction = 0.01;
  options.output_prefix = dir.File("no_such_dir/out");
  r = PrepareDataset(options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("no_such_dir"));
  options.output_prefix = dir.File("out");
  options.inputs = {};
  EXPECT_EQ(PrepareDataset(options).status().code(), absl::StatusCode::kInvalidArgument);
  WriteFile(dir.File("blank"), "%\n%\n");
  options.inputs = {dir.File("blank")};
  options.doc_separator = "%";
  r = PrepareDataset(options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("no non-empty documents"));

  // Only the input written above is new: no outputs, no temporaries.
  std::vector<std::string> expected = before;
  expected.push_back("blank");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(dir.List(), expected);
  EXPECT_EQ(ReadFile(dir.File("out.idx")), old_idx);
  EXPECT_FALSE(std::filesystem::exists(dir.File("out_val.idx")));
}

TEST(ByteTokenizerTest, RoundTripsEveryByte) {
  auto tok = MakeTokenizer("byte");
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->vocab_size(), 256);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::vector<int32_t> ids = {-1};
  (*tok)->Encode(all, &ids);  // appends
  ASSERT_EQ(ids.size(), 257u);
  EXPECT_EQ(ids[0], -1);
  EXPECT_EQ(ids[1 + 200], 200);
  EXPECT_EQ((*tok)->Decode(std::span<const int32_t>(ids).subspan(1)), all);
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{104, 300, 105}), "h?i");
}

}  // namespace
}  // namespace tern::data
