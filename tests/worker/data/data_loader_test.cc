#include "worker/data/data_loader.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/worker/data/data_test_util.h"

namespace tern::data {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::ScratchDir;
using testing::WriteDataset;

// Token stream 0, 1, ..., ntokens-1 (token value = stream position, offset by `base`), split
// into documents of 1..37 tokens, so a window's content identifies the window.
void WriteCountingDataset(const std::string& prefix, int32_t ntokens, DType dtype,
                          int32_t base = 0) {
  std::vector<std::vector<int32_t>> docs;
  for (int32_t t = 0, len = 1; t < ntokens; len = len % 37 + 1) {
    std::vector<int32_t> doc;
    for (int32_t k = 0; k < len && t < ntokens; ++k, ++t) doc.push_back(base + t);
    docs.push_back(std::move(doc));
  }
  WriteDataset(prefix, docs, dtype);
}

std::unique_ptr<DataLoader> OpenLoader(const std::string& prefix, int32_t seq_len, uint64_t seed) {
  auto loader = DataLoader::Open(prefix, seq_len, seed);
  EXPECT_TRUE(loader.ok()) << loader.status();
  return loader.ok() ? std::move(*loader) : nullptr;
}

class DataLoaderTest : public ::testing::Test {
 protected:
  static constexpr int32_t kSeqLen = 10;
  void SetUp() override {
    prefix_ = dir_.File("count");
    WriteCountingDataset(prefix_, 1001, DType::kUInt16);  // W = 1000 / 10 = 100 windows
    loader_ = OpenLoader(prefix_, kSeqLen, 1234);
    ASSERT_NE(loader_, nullptr);
  }
  // Row-major rows of a sample range, inputs and targets concatenated per row.
  std::vector<std::vector<int32_t>> Rows(DataLoader& loader, const std::vector<int32_t>& in,
                                         const std::vector<int32_t>& tgt) {
    std::vector<std::vector<int32_t>> rows;
    for (size_t r = 0; r * kSeqLen < in.size(); ++r) {
      std::vector<int32_t> row(in.begin() + r * kSeqLen, in.begin() + (r + 1) * kSeqLen);
      row.insert(row.end(), tgt.begin() + r * kSeqLen, tgt.begin() + (r + 1) * kSeqLen);
      rows.push_back(std::move(row));
    }
    return rows;
  }
  std::vector<std::vector<int32_t>> GlobalBatch(DataLoader& loader, int64_t step, int dp, int b,
                                                int accum) {
    std::vector<std::vector<int32_t>> rows;
    std::vector<int32_t> in(b * kSeqLen), tgt(b * kSeqLen);
    for (int m = 0; m < accum; ++m) {
      for (int r = 0; r < dp; ++r) {
        loader.Batch(step, m, r, dp, b, accum, in.data(), tgt.data());
        for (auto& row : Rows(loader, in, tgt)) rows.push_back(std::move(row));
      }
    }
    return rows;
  }

  ScratchDir dir_;
  std::string prefix_;
  std::unique_ptr<DataLoader> loader_;
};

TEST_F(DataLoaderTest, SamplesAreShiftedWindowsAndAnEpochVisitsEachWindowOnce) {
  EXPECT_EQ(loader_->windows_per_epoch(), 100u);
  EXPECT_EQ(loader_->num_tokens(), 1001u);
  std::vector<int32_t> in(kSeqLen), tgt(kSeqLen);
  std::set<uint64_t> seen;
  std::vector<uint64_t> order;
  for (uint64_t i = 0; i < 100; ++i) {
    loader_->Sample(i, in.data(), tgt.data());
    const uint64_t w = loader_->WindowOf(i);
    for (int k = 0; k < kSeqLen; ++k) {
      ASSERT_EQ(in[k], static_cast<int32_t>(w * kSeqLen + k)) << "sample " << i;
      ASSERT_EQ(tgt[k], static_cast<int32_t>(w * kSeqLen + k + 1)) << "sample " << i;
    }
    seen.insert(w);
    order.push_back(w);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(*seen.rbegin(), 99u);  // the last window ends exactly on token 1000
  std::vector<uint64_t> identity(100);
  std::iota(identity.begin(), identity.end(), 0u);
  EXPECT_NE(order, identity);  // shuffled
}

TEST_F(DataLoaderTest, EpochWrapAroundReshuffles) {
  std::vector<uint64_t> e0, e1, e2;
  for (uint64_t i = 0; i < 100; ++i) {
    e0.push_back(loader_->WindowOf(i));
    e1.push_back(loader_->WindowOf(100 + i));
    e2.push_back(loader_->WindowOf(200 + i));
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(e1, e2);
  std::vector<uint64_t> sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted.front(), 0u);
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()) - sorted.begin(), 100);
  // Going back to an old epoch gives the same order again (cache eviction is invisible).
  EXPECT_EQ(loader_->WindowOf(5), e0[5]);
  EXPECT_EQ(loader_->WindowOf(205), e2[5]);
}

TEST_F(DataLoaderTest, DeterministicForASeedAndDifferentForAnother) {
  auto same = OpenLoader(prefix_, kSeqLen, 1234);
  auto other = OpenLoader(prefix_, kSeqLen, 1235);
  std::vector<uint64_t> a, b, c;
  for (uint64_t i = 0; i < 250; ++i) {
    a.push_back(loader_->WindowOf(i));
    b.push_back(same->WindowOf(i));
    c.push_back(other->WindowOf(i));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST_F(DataLoaderTest, DataParallelShardsUnionToTheSingleRankGlobalBatch) {
  constexpr int kGlobal = 12;
  // Step 8 covers samples 96..107 and so straddles the epoch boundary at 100.
  for (int64_t step : {0, 3, 8}) {
    auto single = GlobalBatch(*loader_, step, /*dp=*/1, /*b=*/kGlobal, /*accum=*/1);
    ASSERT_EQ(single.size(), static_cast<size_t>(kGlobal));
    struct Split {
      int dp, b, accum;
    };
    for (Split s : {Split{1, 4, 3}, Split{2, 2, 3}, Split{2, 6, 1}, Split{3, 4, 1}, Split{3, 2, 2},
                    Split{3, 1, 4}}) {
      ASSERT_EQ(s.dp * s.b * s.accum, kGlobal);
      auto rows = GlobalBatch(*loader_, step, s.dp, s.b, s.accum);
      // Same samples in the same global order: micro step major, then rank, then row.
      EXPECT_EQ(rows, single) << "step " << step << " dp " << s.dp << " accum " << s.accum;
    }
  }
  EXPECT_EQ(DataLoader::FirstSample(2, 1, 1, 3, 2, 2), 2u * 12 + 1 * 6 + 1 * 2);
}

TEST_F(DataLoaderTest, ResumeFromPositionGivesIdenticalBatches) {
  constexpr int kB = 3, kAccum = 2, kDp = 2, kGlobal = kB * kAccum * kDp;
  std::vector<std::vector<std::vector<int32_t>>> before;
  for (int64_t step = 0; step < 20; ++step) {
    before.push_back(GlobalBatch(*loader_, step, kDp, kB, kAccum));
  }
  const DataPosition pos = loader_->Position(7 * kGlobal);
  const std::string saved = pos.ToJson().dump();
  EXPECT_EQ(saved, R"({"ntokens":1001,"samples_consumed":84,"seed":1234,"seq_len":10})");

  auto restored = DataPosition::FromJson(nlohmann::json::parse(saved));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(*restored, pos);
  auto resumed = OpenLoader(prefix_, kSeqLen, restored->seed);
  ASSERT_TRUE(resumed->CheckResume(*restored).ok());
  const int64_t first_step = static_cast<int64_t>(restored->samples_consumed / kGlobal);
  for (int64_t step = first_step; step < 20; ++step) {
    EXPECT_EQ(GlobalBatch(*resumed, step, kDp, kB, kAccum), before[step]) << step;
    // Resuming on fewer ranks with the same global batch sees the same data too.
    EXPECT_EQ(GlobalBatch(*resumed, step, 1, kB, kAccum * kDp), before[step]) << step;
  }
}

TEST_F(DataLoaderTest, ResumeRejectsAnotherDatasetSeqLenOrSeed) {
  const DataPosition pos = loader_->Position(50);
  auto other_len = OpenLoader(prefix_, 20, 1234);
  absl::Status s = other_len->CheckResume(pos);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("seq_len 10"), HasSubstr("seq_len 20")));
  auto other_seed = OpenLoader(prefix_, kSeqLen, 7);
  EXPECT_THAT(other_seed->CheckResume(pos).message(), HasSubstr("seed 1234"));

  WriteCountingDataset(dir_.File("bigger"), 1500, DType::kUInt16);
  auto other_data = OpenLoader(dir_.File("bigger"), kSeqLen, 1234);
  s = other_data->CheckResume(pos);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("1001 tokens"), HasSubstr("has 1500"),
                                 HasSubstr(dir_.File("bigger.bin"))));
}

TEST(DataPositionTest, FromJsonNamesTheBadField) {
  auto missing =
      DataPosition::FromJson(nlohmann::json{{"seed", 1}, {"seq_len", 8}, {"ntokens", 9}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("samples_consumed"));
  auto negative = DataPosition::FromJson(
      nlohmann::json{{"samples_consumed", -1}, {"seed", 1}, {"seq_len", 8}, {"ntokens", 9}});
  EXPECT_THAT(negative.status().message(), HasSubstr("samples_consumed"));
  auto wrong_type = DataPosition::FromJson(
      nlohmann::json{{"samples_consumed", 1}, {"seed", "x"}, {"seq_len", 8}, {"ntokens", 9}});
  EXPECT_THAT(wrong_type.status().message(), HasSubstr("'seed'"));
  auto too_long = DataPosition::FromJson(nlohmann::json{
      {"samples_consumed", 1}, {"seed", 1}, {"seq_len", 1ull << 40}, {"ntokens", 9}});
  EXPECT_THAT(too_long.status().message(), HasSubstr("seq_len"));
  EXPECT_FALSE(DataPosition::FromJson(nlohmann::json::array()).ok());
  DataPosition big{~0ull, ~0ull - 1, 4096, 1ull << 40};
  auto round = DataPosition::FromJson(nlohmann::json::parse(big.ToJson().dump()));
  ASSERT_TRUE(round.ok());
  EXPECT_EQ(*round, big);
}

TEST_F(DataLoaderTest, EvalBatchesAreSequentialWindows) {
  std::vector<int32_t> in(4 * kSeqLen), tgt(4 * kSeqLen);
  loader_->EvalBatch(2, 4, in.data(), tgt.data());  // windows 8, 9, 10, 11
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(in[j * kSeqLen], (8 + j) * kSeqLen);
    EXPECT_EQ(tgt[j * kSeqLen + kSeqLen - 1], (8 + j) * kSeqLen + kSeqLen);
  }
  loader_->EvalBatch(24, 4, in.data(), tgt.data());  // windows 96..99
  EXPECT_EQ(in[3 * kSeqLen], 990);
  loader_->EvalBatch(33, 3, in.data(), tgt.data());  // windows 99, 0, 1 (wraps)
  EXPECT_EQ(in[0], 990);
  EXPECT_EQ(in[kSeqLen], 0);
  EXPECT_EQ(in[2 * kSeqLen], 10);
  EXPECT_EQ(loader_->NumEvalBatches(8), 12);
}

TEST(DataLoaderOpenTest, SeqLenTooLongNamesTheFileAndCounts) {
  ScratchDir dir;
  WriteCountingDataset(dir.File("small"), 64, DType::kUInt16);
  EXPECT_TRUE(DataLoader::Open(dir.File("small"), 63, 1).ok());
  auto loader = DataLoader::Open(dir.File("small"), 64, 1);
  EXPECT_EQ(loader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(loader.status().message(),
              AllOf(HasSubstr(dir.File("small.bin")), HasSubstr("64 tokens"), HasSubstr("65")));
  EXPECT_EQ(DataLoader::Open(dir.File("small"), 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DataLoader::Open(dir.File("absent"), 8, 1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DataLoaderOpenTest, EpochZeroOrderIsPinned) {
  // Window order of epoch e is FillPermutation(W, DeriveSeed(seed, e)); see rng_test.cc.
  ScratchDir dir;
  WriteCountingDataset(dir.File("w10"), 101, DType::kUInt16);
  auto loader = OpenLoader(dir.File("w10"), 10, 1234);
  ASSERT_NE(loader, nullptr);
  std::vector<uint64_t> order;
  for (uint64_t i = 0; i < 10; ++i) order.push_back(loader->WindowOf(i));
  EXPECT_EQ(order, (std::vector<uint64_t>{4, 9, 6, 3, 0, 1, 8, 5, 2, 7}));
}

TEST(DataLoaderOpenTest, ConvertsEveryTokenDTypeToInt32) {
  ScratchDir dir;
  for (DType dtype : {DType::kUInt8, DType::kUInt16, DType::kInt32, DType::kInt64}) {
    const int32_t base = dtype == DType::kUInt8 ? 0 : (dtype == DType::kUInt16 ? 60000 : 1 << 24);
    const std::string prefix = dir.File(DTypeName(dtype));
    WriteCountingDataset(prefix, 200, dtype, base);
    auto loader = OpenLoader(prefix, 16, 5);
    ASSERT_NE(loader, nullptr);
    std::vector<int32_t> in(16), tgt(16);
    loader->Sample(3, in.data(), tgt.data());
    const int32_t w = static_cast<int32_t>(loader->WindowOf(3));
    EXPECT_EQ(in[0], base + w * 16) << DTypeName(dtype);
    EXPECT_EQ(tgt[15], base + w * 16 + 16) << DTypeName(dtype);
  }
}

// A run whose global batch changes at resumes (elastic rounds change the accumulation, a user
// the micro batch): every sample is read exactly once, in order of steps.
TEST(DataLoaderBatchChangeTest, StepsWithChangingGlobalBatchesTileTheSamples) {
  struct Layout {
    int steps, dp, b, accum;
  };
  const Layout runs[] = {{3, 2, 2, 1}, {2, 3, 1, 2}, {1, 1, 4, 3}, {2, 4, 2, 2}};
  std::vector<int> seen(200, 0);
  uint64_t consumed = 0;  // what the checkpoint stores between runs
  for (const Layout& l : runs) {
    for (int s = 0; s < l.steps; ++s) {
      for (int m = 0; m < l.accum; ++m) {
        for (int r = 0; r < l.dp; ++r) {
          const uint64_t first = DataLoader::FirstSampleFrom(consumed, m, r, l.dp, l.b, l.accum);
          for (int j = 0; j < l.b; ++j) ++seen.at(first + j);
        }
      }
      consumed += uint64_t(l.dp) * l.b * l.accum;
    }
  }
  EXPECT_EQ(consumed, 3u * 4 + 2 * 6 + 1 * 12 + 2 * 16);
  for (uint64_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i < consumed ? 1 : 0) << i;
  // With an unchanged batch it is the step-based rule.
  EXPECT_EQ(DataLoader::FirstSampleFrom(2 * 12, 1, 1, 3, 2, 2),
            DataLoader::FirstSample(2, 1, 1, 3, 2, 2));
}

}  // namespace
}  // namespace tern::data
