// Unit tests of the trainer's checkpoint helpers: even shares of replicated state, the segments
// a rank writes, statuses carried through gathers, and the shared-root probe.
#include "worker/engine/checkpointing.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <thread>

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

// All-gather of one string per rank among threads (the ranks), reusable round after round.
class ThreadGather {
 public:
  explicit ThreadGather(int n) : n_(n), slots_(n) {}
  absl::StatusOr<std::vector<std::string>> Gather(int rank, const std::string& mine) {
    std::unique_lock<std::mutex> lock(mu_);
    const int gen = generation_;
    slots_[rank] = mine;
    if (++arrived_ == n_) {
      result_ = slots_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
    return result_;
  }

 private:
  const int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> slots_, result_;
  int arrived_ = 0, generation_ = 0;
};

// Each rank's view of the checkpoint root is `roots[rank]` (different directories stand for
// nodes that do not share storage).
std::vector<absl::Status> ProbeFromRanks(const std::vector<std::string>& roots) {
  const int n = int(roots.size());
  ThreadGather g(n);
  std::vector<absl::Status> out(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      out[r] = CheckSharedRoot(roots[r], r, n,
                               [&g, r](const std::string& mine) { return g.Gather(r, mine); });
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST(CheckSharedRootTest, SharedRootPassesAndLeavesNoProbes) {
  const auto root = std::filesystem::temp_directory_path() / "tern-probe-shared";
  std::filesystem::create_directories(root);
  for (const auto& st : ProbeFromRanks({root.string(), root.string(), root.string()}))
    EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(std::filesystem::is_empty(root));
  std::filesystem::remove_all(root);
}

TEST(CheckSharedRootTest, UnsharedRootFailsEveryRankNamingTheRanks) {
  const auto base = std::filesystem::temp_directory_path() / "tern-probe-unshared";
  for (const char* node : {"a", "b"}) std::filesystem::create_directories(base / node);
  const std::string a = (base / "a").string(), b = (base / "b").string();
  const auto sts = ProbeFromRanks({a, a, b, b});
  for (const auto& st : sts) {
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
    EXPECT_NE(std::string(st.message()).find("is not shared by every rank"), std::string::npos)
        << st;
    EXPECT_NE(std::string(st.message()).find("rank(s) 2 ("), std::string::npos) << st;
    EXPECT_NE(std::string(st.message()).find(", 3 ("), std::string::npos) << st;
  }
  // A rank that cannot write at all is named with its error.
  const auto sts2 = ProbeFromRanks({a, (base / "missing" / "dir").string()});
  for (const auto& st : sts2)
    EXPECT_NE(std::string(st.message()).find("ranks cannot write there: rank 1"), std::string::npos)
        << st;
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace tern::engine
