// Ulysses' head split (by kv-head groups, ceil/floor blocks) and the token slicing.
#include "worker/sequence/head_split.h"

#include <gtest/gtest.h>

#include "worker/sequence/slice.h"

namespace tern::sequence {
namespace {

std::vector<int> KvCounts(const std::vector<HeadBlock>& b) {
  std::vector<int> c;
  for (const auto& x : b) c.push_back(x.kv_count);
  return c;
}

TEST(HeadSplit, EvenSplit) {
  auto s = PlanHeadSplit(8, 8, 4);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(KvCounts(*s), (std::vector<int>{2, 2, 2, 2}));
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ((*s)[r].kv_begin, 2 * r);
    EXPECT_EQ((*s)[r].q_begin, 2 * r);
    EXPECT_EQ((*s)[r].q_count, 2);
  }
}

TEST(HeadSplit, UnevenSplitIsCeilThenFloor) {
  auto s = PlanHeadSplit(7, 7, 4);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(KvCounts(*s), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ((*s)[3].kv_begin, 6);
  auto t = PlanHeadSplit(6, 6, 4);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(KvCounts(*t), (std::vector<int>{2, 2, 1, 1}));
}

TEST(HeadSplit, GroupedQueryHeadsTravelWithTheirKvHead) {
  auto s = PlanHeadSplit(12, 3, 2);  // 4 query heads per kv head
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(KvCounts(*s), (std::vector<int>{2, 1}));
  EXPECT_EQ((*s)[0].q_begin, 0);
  EXPECT_EQ((*s)[0].q_count, 8);
  EXPECT_EQ((*s)[1].kv_begin, 2);
  EXPECT_EQ((*s)[1].q_begin, 8);
  EXPECT_EQ((*s)[1].q_count, 4);
}

TEST(HeadSplit, RefusesFewerKvHeadsThanRanks) {
  auto s = PlanHeadSplit(8, 2, 4);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("sequence_parallel_size"), std::string::npos);
  EXPECT_NE(s.status().message().find("num_key_value_heads 2"), std::string::npos);
  EXPECT_FALSE(PlanHeadSplit(6, 4, 2).ok());  // 4 does not divide 6
  EXPECT_FALSE(PlanHeadSplit(4, 4, 0).ok());
}

TEST(Slice, ContiguousPositionsAndSlicing) {
  EXPECT_EQ(ContiguousPositions(8, 4, 2), (std::vector<int32_t>{4, 5}));
  const std::vector<int32_t> full = {0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15};  // B=2, T=6
  std::vector<int32_t> out(4);
  SliceByPositions(full.data(), 2, 6, {5, 1}, out.data());  // any positions, e.g. permuted
  EXPECT_EQ(out, (std::vector<int32_t>{5, 1, 15, 11}));
  const std::vector<int32_t> t = {1, -1, 3, -1};
  EXPECT_EQ(CountTargets(t.data(), 4), 2);
}

}  // namespace
}  // namespace tern::sequence
