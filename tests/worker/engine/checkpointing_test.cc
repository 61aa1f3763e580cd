// Unit tests of the trainer's checkpoint helpers: even shares of replicated state, the segments
// a rank writes, and statuses carried through gathers.
#include "worker/engine/checkpointing.h"

#include <gtest/gtest.h>

#include <numeric>

namespace tern::engine {
namespace {

TEST(EvenShareTest, CoversEverythingOnceWithSizesWithinOne) {
  for (uint64_t total : {0ull, 1ull, 7ull, 100ull, 1000003ull}) {
    for (int parts : {1, 2, 3, 8}) {
      uint64_t next = 0;
      for (int i = 0; i < parts; ++i) {
        auto [b, e] = EvenShare(total, parts, i);
        EXPECT_EQ(b, next) << total << "/" << parts;
        EXPECT_LE(e - b, total / parts + 1);
        EXPECT_GE(e - b, total / parts);
        next = e;
      }
      EXPECT_EQ(next, total);
    }
  }
}

TEST(SegmentsToSaveTest, OwnedSegmentsBecomeThreeStates) {
  std::vector<float> m(10), a(10), v(10);
  std::vector<zero::StateSegment> owned = {{100, 10, m.data(), a.data(), v.data()}};
  auto segs = SegmentsToSave(owned, /*replicated=*/false, 1, 2);
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].state, "master");
  EXPECT_EQ(segs[1].state, "exp_avg");
  EXPECT_EQ(segs[2].state, "exp_avg_sq");
  EXPECT_EQ(segs[2].data, v.data());
  for (const auto& s : segs) {
    EXPECT_EQ(s.global_offset, 100u);
    EXPECT_EQ(s.numel, 10u);
    EXPECT_EQ(s.dtype, "f32");
  }
}

TEST(SegmentsToSaveTest, ReplicatedStateIsSplitAcrossRanks) {
  // Two segments of 6 and 5 elements (11 in all) split over 3 ranks: 4, 4, 3 elements.
  std::vector<float> m(11), a(11), v(11);
  std::iota(m.begin(), m.end(), 0.0f);
  std::vector<zero::StateSegment> owned = {{0, 6, m.data(), a.data(), v.data()},
                                           {20, 5, m.data() + 6, a.data() + 6, v.data() + 6}};
  std::vector<uint64_t> covered;
  for (int r = 0; r < 3; ++r) {
    uint64_t mine = 0;
    for (const auto& s : SegmentsToSave(owned, /*replicated=*/true, r, 3)) {
      if (s.state != "master") continue;
      mine += s.numel;
      const float* p = static_cast<const float*>(s.data);
      for (uint64_t k = 0; k < s.numel; ++k) {
        const uint64_t g = s.global_offset + k;
        covered.push_back(g);
        EXPECT_EQ(p[k], g < 6 ? float(g) : float(g - 20 + 6));  // data matches its offset
      }
    }
    EXPECT_EQ(mine, r < 2 ? 4u : 3u) << "rank " << r;
  }
  std::vector<uint64_t> want = {0, 1, 2, 3, 4, 5, 20, 21, 22, 23, 24};
  EXPECT_EQ(covered, want);
}

TEST(StatusJsonTest, RoundTripKeepsCodeAndMessage) {
  absl::Status st = absl::DataLossError("rank-00001.bin: crc mismatch");
  absl::Status back = StatusFromJson(StatusToJson(st));
  EXPECT_EQ(back, st);
  EXPECT_TRUE(StatusFromJson(StatusToJson(absl::OkStatus())).ok());
  EXPECT_EQ(StatusFromJson(nlohmann::json::array()).code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace tern::engine
