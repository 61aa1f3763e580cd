#include "worker/data/indexed_dataset.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/data_test_util.h"

namespace tern::data {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::ReadFile;
using testing::ScratchDir;
using testing::WriteDataset;
using testing::WriteFile;

// Little-endian encoding written out by hand (shifts, not memcpy) for the expected layouts.
void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string IdxBytes(uint8_t code, const std::vector<int32_t>& sizes,
                     const std::vector<int64_t>& pointers, const std::vector<int64_t>& doc_idx) {
  std::string out("MMIDIDX\0\0", 9);
  PutLe(&out, 1, 8);
  out.push_back(static_cast<char>(code));
  PutLe(&out, sizes.size(), 8);
  PutLe(&out, doc_idx.size(), 8);
  for (int32_t s : sizes) PutLe(&out, static_cast<uint32_t>(s), 4);
  for (int64_t p : pointers) PutLe(&out, static_cast<uint64_t>(p), 8);
  for (int64_t d : doc_idx) PutLe(&out, static_cast<uint64_t>(d), 8);
  return out;
}

std::vector<int32_t> AllTokens(const IndexedDataset& ds) {
  std::vector<int32_t> out(ds.num_tokens());
  ds.ReadTokens(0, ds.num_tokens(), out.data());
  return out;
}

TEST(IndexedDatasetTest, IdxBytesMatchHandBuiltMegatronLayout) {
  ScratchDir dir;
  const std::string prefix = dir.File("tiny");
  WriteDataset(prefix, {{1, 2}, {3, 4, 5}}, DType::kUInt16);

  const unsigned char expected[] = {
      'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0,  // offset 0: magic
      1,   0,   0,   0,   0,   0,   0,   0,     // offset 9: version 1
      8,                                        // offset 17: dtype code 8 = uint16
      2,   0,   0,   0,   0,   0,   0,   0,     // offset 18: 2 sequences
      3,   0,   0,   0,   0,   0,   0,   0,     // offset 26: 3 doc_idx entries
      2,   0,   0,   0,   3,   0,   0,   0,     // offset 34: sizes (int32)
      0,   0,   0,   0,   0,   0,   0,   0,     // offset 42: pointers (int64, bytes)
      4,   0,   0,   0,   0,   0,   0,   0,     //
      0,   0,   0,   0,   0,   0,   0,   0,     // offset 58: doc_idx (int64)
      1,   0,   0,   0,   0,   0,   0,   0,     //
      2,   0,   0,   0,   0,   0,   0,   0,     // offset 82: end
  };
  EXPECT_EQ(ReadFile(IdxPath(prefix)),
            std::string(reinterpret_cast<const char*>(expected), sizeof(expected)));
  EXPECT_EQ(ReadFile(BinPath(prefix)), std::string("\x01\0\x02\0\x03\0\x04\0\x05\0", 10));
}

TEST(IndexedDatasetTest, MultiSequenceDocumentsRecordDocIdx) {
  ScratchDir dir;
  const std::string prefix = dir.File("multi");
  auto builder = IndexedDatasetBuilder::Create(prefix, DType::kInt32);
  ASSERT_TRUE(builder.ok()) << builder.status();
  std::vector<int32_t> a = {7}, b = {8, 9}, c = {10, 11, 12};
  ASSERT_TRUE((*builder)->AddItem(a).ok());
  ASSERT_TRUE((*builder)->AddItem(b).ok());
  (*builder)->EndDocument();
  ASSERT_TRUE((*builder)->AddItem(c).ok());
  (*builder)->EndDocument();
  ASSERT_TRUE((*builder)->Finish().ok());
  EXPECT_EQ(ReadFile(IdxPath(prefix)), IdxBytes(4, {1, 2, 3}, {0, 4, 12}, {0, 2, 3}));

  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_sequences(), 3);
  EXPECT_EQ((*ds)->num_documents(), 2);
  EXPECT_EQ((*ds)->document_index(1), 2);
  EXPECT_EQ((*ds)->sequence_start(2), 3u);
  EXPECT_THAT(AllTokens(**ds), ::testing::ElementsAre(7, 8, 9, 10, 11, 12));
}

struct DTypeCase {
  DType dtype;
  std::vector<std::vector<int32_t>> docs;
};

void PrintTo(const DTypeCase& c, std::ostream* os) { *os << DTypeName(c.dtype); }

class IndexedDatasetRoundTripTest : public ::testing::TestWithParam<DTypeCase> {};

TEST_P(IndexedDatasetRoundTripTest, ReadsBackEveryToken) {
  ScratchDir dir;
  const std::string prefix = dir.File("rt");
  const DTypeCase& c = GetParam();
  WriteDataset(prefix, c.docs, c.dtype);
  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->dtype(), c.dtype);
  EXPECT_EQ((*ds)->num_documents(), static_cast<int64_t>(c.docs.size()));
  std::vector<int32_t> flat;
  for (const auto& d : c.docs) flat.insert(flat.end(), d.begin(), d.end());
  EXPECT_EQ((*ds)->num_tokens(), flat.size());
  EXPECT_EQ(AllTokens(**ds), flat);
  // A read straddling the document boundary.
  std::vector<int32_t> mid(3);
  (*ds)->ReadTokens(1, 3, mid.data());
  EXPECT_EQ(mid, std::vector<int32_t>(flat.begin() + 1, flat.begin() + 4));
  EXPECT_EQ(ReadFile(BinPath(prefix)).size(), flat.size() * DTypeSize(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(
    AllTokenDTypes, IndexedDatasetRoundTripTest,
    ::testing::Values(DTypeCase{DType::kUInt8, {{0, 255}, {128, 1, 7}}},
                      DTypeCase{DType::kUInt16, {{0, 65535}, {40000, 1, 7}}},
                      DTypeCase{DType::kInt32, {{-5, 2147483647}, {100000, 1, 7}}},
                      DTypeCase{DType::kInt64, {{-1, 2147483647}, {123456789, 1, 7}}},
                      DTypeCase{DType::kInt8, {{-128, 127}, {0, 1, 7}}},
                      DTypeCase{DType::kInt16, {{-32768, 32767}, {0, 1, 7}}}),
    [](const auto& info) { return std::string(DTypeName(info.param.dtype)); });

TEST(IndexedDatasetTest, DTypeForVocabFollowsMegatron) {
  EXPECT_EQ(DTypeForVocab(256), DType::kUInt16);
  EXPECT_EQ(DTypeForVocab(65499), DType::kUInt16);
  EXPECT_EQ(DTypeForVocab(65500), DType::kInt32);
  EXPECT_EQ(DTypeForVocab(128256), DType::kInt32);
}

TEST(IndexedDatasetTest, BuilderRejectsTokensThatDoNotFitTheDType) {
  ScratchDir dir;
  auto u8 = IndexedDatasetBuilder::Create(dir.File("u8"), DType::kUInt8);
  ASSERT_TRUE(u8.ok());
  std::vector<int32_t> ok = {1, 2}, bad = {3, 300};
  ASSERT_TRUE((*u8)->AddDocument(ok).ok());
  absl::Status s = (*u8)->AddDocument(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("300"), HasSubstr("position 3"), HasSubstr("uint8"),
                                 HasSubstr(dir.File("u8.bin"))));
  auto u16 = IndexedDatasetBuilder::Create(dir.File("u16"), DType::kUInt16);
  ASSERT_TRUE(u16.ok());
  std::vector<int32_t> negative = {-1};
  EXPECT_EQ((*u16)->AddItem(negative).code(), absl::StatusCode::kInvalidArgument);
  auto f32 = IndexedDatasetBuilder::Create(dir.File("f32"), DType::kFloat32);
  EXPECT_EQ(f32.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f32.status().message(), HasSubstr("float32"));
}

TEST(IndexedDatasetTest, EmptyDatasetOpens) {
  ScratchDir dir;
  WriteDataset(dir.File("empty"), {}, DType::kUInt16);
  auto ds = IndexedDataset::Open(dir.File("empty"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_tokens(), 0u);
  EXPECT_EQ((*ds)->num_documents(), 0);
}

TEST(IndexedDatasetTest, NonContiguousPointersAreReadInSequenceOrder) {
  ScratchDir dir;
  const std::string prefix = dir.File("nc");
  // .bin holds sequence 1 ({30,31,32}) before sequence 0 ({10,11}), and one empty sequence.
  std::string bin;
  for (int v : {30, 31, 32, 10, 11}) PutLe(&bin, v, 2);
  WriteFile(BinPath(prefix), bin);
  WriteFile(IdxPath(prefix), IdxBytes(8, {2, 0, 3}, {6, 0, 0}, {0, 2, 3}));
  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT(AllTokens(**ds), ::testing::ElementsAre(10, 11, 30, 31, 32));
  std::vector<int32_t> part(3);
  (*ds)->ReadTokens(1, 3, part.data());
  EXPECT_THAT(part, ::testing::ElementsAre(11, 30, 31));
  EXPECT_EQ((*ds)->sequence_start(2), 2u);
}

TEST(IndexedDatasetTest, MultimodalModesAfterDocIdxAreIgnored) {
  ScratchDir dir;
  const std::string prefix = dir.File("mm");
  std::string bin;
  for (int v : {1, 2, 3}) PutLe(&bin, v, 4);
  WriteFile(BinPath(prefix), bin);
  WriteFile(IdxPath(prefix), IdxBytes(4, {1, 2}, {0, 4}, {0, 2}) + std::string("\0\1", 2));
  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT(AllTokens(**ds), ::testing::ElementsAre(1, 2, 3));
}

// ---- Errors -----------------------------------------------------------------------------------

class IndexedDatasetErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = dir_.File("ds");
    WriteDataset(prefix_, {{1, 2, 3}, {4, 5}}, DType::kUInt16);
    idx_ = ReadFile(IdxPath(prefix_));
    bin_ = ReadFile(BinPath(prefix_));
  }
  absl::Status OpenStatus() { return IndexedDataset::Open(prefix_).status(); }

  ScratchDir dir_;
  std::string prefix_, idx_, bin_;
};

TEST_F(IndexedDatasetErrorTest, MissingIdxIsNotFoundNamingTheFile) {
  std::filesystem::remove(IdxPath(prefix_));
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(IdxPath(prefix_)));
}

TEST_F(IndexedDatasetErrorTest, MissingBinIsNotFoundNamingTheFile) {
  std::filesystem::remove(BinPath(prefix_));
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(BinPath(prefix_)));
}

TEST_F(IndexedDatasetErrorTest, WrongMagicNamesFileAndBytesFound) {
  std::string bad = idx_;
  bad.replace(0, 7, "TNTIDX!");
  WriteFile(IdxPath(prefix_), bad);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(IdxPath(prefix_)), HasSubstr("MMIDIDX"),
                                 HasSubstr("found \"TNTIDX!")));
}

TEST_F(IndexedDatasetErrorTest, EmptyIdxIsBadMagic) {
  WriteFile(IdxPath(prefix_), "");
  EXPECT_EQ(OpenStatus().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(IndexedDatasetErrorTest, UnsupportedVersion) {
  std::string bad = idx_;
  bad[9] = 2;
  WriteFile(IdxPath(prefix_), bad);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("version 2"), HasSubstr(IdxPath(prefix_))));
}

TEST_F(IndexedDatasetErrorTest, FloatAndUnknownDTypeCodes) {
  for (int code : {6, 7, 0, 9}) {
    std::string bad = idx_;
    bad[17] = static_cast<char>(code);
    WriteFile(IdxPath(prefix_), bad);
    absl::Status s = OpenStatus();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << code;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("dtype code " + std::to_string(code)),
                                   HasSubstr(IdxPath(prefix_))));
  }
}

TEST_F(IndexedDatasetErrorTest, TruncatedIdxIsDataLoss) {
  for (size_t cut : {size_t{8}, size_t{1}, idx_.size() - 20}) {
    WriteFile(IdxPath(prefix_), idx_.substr(0, idx_.size() - cut));
    absl::Status s = OpenStatus();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << cut;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("truncated"), HasSubstr(IdxPath(prefix_))));
  }
}

TEST_F(IndexedDatasetErrorTest, TruncatedBinIsDataLoss) {
  WriteFile(BinPath(prefix_), bin_.substr(0, bin_.size() - 2));
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("truncated"), HasSubstr(BinPath(prefix_)), HasSubstr("sequence 1")));
}

TEST_F(IndexedDatasetErrorTest, MalformedDocIdxIsDataLoss) {
  std::string bad = idx_;
  bad[bad.size() - 8] = 7;  // last doc_idx entry != sequence count
  WriteFile(IdxPath(prefix_), bad);
  absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("doc_idx"), HasSubstr(IdxPath(prefix_))));
}

TEST(IndexedDatasetVocabTest, ReportsFirstTokenOutsideVocab) {
  ScratchDir dir;
  const std::string prefix = dir.File("v");
  WriteDataset(prefix, {{1, 2, 3}, {4, 300, 5, 400}}, DType::kInt32);
  auto ds = IndexedDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status();
  absl::Status s = (*ds)->ValidateVocab(256);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("token id 300"), HasSubstr("position 4"),
                                 HasSubstr("sequence 1, offset 1"), HasSubstr(BinPath(prefix)),
                                 HasSubstr("[0, 256)")));
  EXPECT_THAT((*ds)->ValidateVocab(301).message(), HasSubstr("token id 400"));
  EXPECT_TRUE((*ds)->ValidateVocab(401).ok());

  WriteDataset(dir.File("neg"), {{1, -3}}, DType::kInt32);
  auto neg = IndexedDataset::Open(dir.File("neg"));
  ASSERT_TRUE(neg.ok());
  EXPECT_THAT((*neg)->ValidateVocab(256).message(), HasSubstr("token id -3"));

  WriteDataset(dir.File("u16"), {{1, 255, 256}}, DType::kUInt16);
  auto u16 = IndexedDataset::Open(dir.File("u16"));
  ASSERT_TRUE(u16.ok());
  EXPECT_THAT((*u16)->ValidateVocab(256).message(), HasSubstr("token id 256 at token position 2"));
  EXPECT_TRUE((*u16)->ValidateVocab(65536).ok());
}

}  // namespace
}  // namespace tern::data
