// Each collective on 1-4 ranks (threads over loopback) against a local computation, async
// overlap, and byte accounting against the documented formulas.
#include <atomic>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/byte_accounting.h"

namespace tern::comm {
namespace {

using testing::AllCreated;
using testing::MakeGroup;
using testing::RunRanks;

const CollectiveOptions kOpts{std::chrono::seconds(10)};

// Small integers: float sums over <= 4 ranks are exact, so results compare with ==.
float Value(int rank, size_t i) {
  return static_cast<float>(rank * 1000 + static_cast<int>(i % 97));
}

std::vector<float> RankData(int rank, size_t count) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = Value(rank, i);
  return v;
}

class CollectivesTest : public ::testing::TestWithParam<int> {
 protected:
  int n() const { return GetParam(); }
  std::vector<std::unique_ptr<Communicator>> Group(GlooOptions options = {}) {
    static std::atomic<int> counter{0};
    options.timeout = std::chrono::seconds(10);
    return MakeGroup(store_, n(), "test" + std::to_string(counter++), options);
  }
  InMemoryStore store_;
};

TEST_P(CollectivesTest, AllReduceSumsEveryElement) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  // 300000 floats = 1.2 MB: more than one 1 MiB Gloo segment per rank.
  for (size_t count : {size_t{1}, size_t{7}, size_t{1000}, size_t{300000}}) {
    RunRanks(n(), [&](int r) {
      std::vector<float> data = RankData(r, count);
      ASSERT_TRUE(comms[r]->AllReduce(data, kOpts).ok());
      for (size_t i = 0; i < count; ++i) {
        float want = 0;
        for (int q = 0; q < n(); ++q) want += Value(q, i);
        ASSERT_EQ(data[i], want) << "rank " << r << " count " << count << " i " << i;
      }
      EXPECT_EQ(comms[r]->stats().bytes(Collective::kAllReduce),
                AllReduceRingBytesSent(n(), r, count * 4, 4));
      (void)comms[r]->TakeStats();
    });
  }
}

TEST_P(CollectivesTest, ReduceScatterRingAndAllToAllMatchLocalSum) {
  for (auto algo : {ReduceScatterAlgorithm::kRing, ReduceScatterAlgorithm::kAllToAll}) {
    GlooOptions options;
    options.reduce_scatter = algo;
    auto comms = Group(options);
    ASSERT_TRUE(AllCreated(comms));
    for (size_t chunk : {size_t{1}, size_t{1000}, size_t{70001}}) {
      RunRanks(n(), [&](int r) {
        const std::vector<float> input = RankData(r, chunk * n());
        std::vector<float> output(chunk, -1.0f);
        ASSERT_TRUE(comms[r]->ReduceScatter(input, output, kOpts).ok());
        for (size_t i = 0; i < chunk; ++i) {
          float want = 0;
          for (int q = 0; q < n(); ++q) want += Value(q, r * chunk + i);
          ASSERT_EQ(output[i], want) << "rank " << r << " chunk " << chunk << " i " << i;
        }
        const CommStats s = comms[r]->TakeStats();
        EXPECT_EQ(s.bytes(Collective::kReduceScatter), uint64_t(n() - 1) * chunk * 4);
        EXPECT_EQ(s.count(Collective::kReduceScatter), 1u);
      });
    }
  }
}

TEST_P(CollectivesTest, AllGatherOutOfPlaceAndInPlace) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  const size_t chunk = 13;  // odd byte count: any element type works
  RunRanks(n(), [&](int r) {
    std::vector<uint8_t> mine(chunk);
    for (size_t i = 0; i < chunk; ++i) mine[i] = static_cast<uint8_t>(r * 31 + i);
    std::vector<uint8_t> out(chunk * n(), 0), in_place(chunk * n(), 0);
    std::copy(mine.begin(), mine.end(), in_place.begin() + r * chunk);
    ASSERT_TRUE(comms[r]
                    ->AllGather(std::as_bytes(std::span<const uint8_t>(mine)),
                                std::as_writable_bytes(std::span<uint8_t>(out)), kOpts)
                    .ok());
    auto my_chunk = std::span<uint8_t>(in_place).subspan(r * chunk, chunk);
    ASSERT_TRUE(comms[r]
                    ->AllGather(std::as_bytes(my_chunk),
                                std::as_writable_bytes(std::span<uint8_t>(in_place)), kOpts)
                    .ok());
    for (int q = 0; q < n(); ++q) {
      for (size_t i = 0; i < chunk; ++i) {
        ASSERT_EQ(out[q * chunk + i], static_cast<uint8_t>(q * 31 + i));
        ASSERT_EQ(in_place[q * chunk + i], static_cast<uint8_t>(q * 31 + i));
      }
    }
    EXPECT_EQ(comms[r]->stats().bytes(Collective::kAllGather), 2 * uint64_t(n() - 1) * chunk);
  });
}

TEST_P(CollectivesTest, AllToAllExchangesChunks) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  const size_t chunk = 5;
  RunRanks(n(), [&](int r) {
    // Element i of chunk j sent by rank r encodes (from r, to j, i).
    std::vector<float> in(chunk * n()), out(chunk * n(), -1.0f);
    for (int j = 0; j < n(); ++j) {
      for (size_t i = 0; i < chunk; ++i) in[j * chunk + i] = float(r * 100 + j * 10 + int(i));
    }
    ASSERT_TRUE(comms[r]
                    ->AllToAll(std::as_bytes(std::span<const float>(in)),
                               std::as_writable_bytes(std::span<float>(out)), kOpts)
                    .ok());
    for (int q = 0; q < n(); ++q) {
      for (size_t i = 0; i < chunk; ++i) {
        ASSERT_EQ(out[q * chunk + i], float(q * 100 + r * 10 + int(i))) << "from " << q;
      }
    }
    EXPECT_EQ(comms[r]->stats().bytes(Collective::kAllToAll), uint64_t(n() - 1) * chunk * 4);
  });
}

TEST_P(CollectivesTest, AllToAllVWithUnevenAndEmptySplits) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  // Rank r sends Count(r, j) floats to rank j; some counts are 0.
  auto count = [](int from, int to) { return static_cast<size_t>((from + 2 * to) % 4); };
  RunRanks(n(), [&](int r) {
    std::vector<size_t> send_bytes(n()), recv_bytes(n());
    std::vector<float> in;
    for (int j = 0; j < n(); ++j) {
      send_bytes[j] = count(r, j) * 4;
      recv_bytes[j] = count(j, r) * 4;
      for (size_t i = 0; i < count(r, j); ++i) in.push_back(float(r * 100 + j * 10 + int(i)));
    }
    std::vector<float> out(std::accumulate(recv_bytes.begin(), recv_bytes.end(), size_t{0}) / 4,
                           -1.0f);
    ASSERT_TRUE(comms[r]
                    ->AllToAllV(std::as_bytes(std::span<const float>(in)), send_bytes,
                                std::as_writable_bytes(std::span<float>(out)), recv_bytes, kOpts)
                    .ok());
    size_t pos = 0;
    for (int q = 0; q < n(); ++q) {
      for (size_t i = 0; i < count(q, r); ++i) {
        ASSERT_EQ(out[pos++], float(q * 100 + r * 10 + int(i))) << "from " << q;
      }
    }
    EXPECT_EQ(comms[r]->stats().bytes(Collective::kAllToAllV), AllToAllVBytesSent(r, send_bytes));
  });
}

TEST_P(CollectivesTest, BroadcastFromEveryRoot) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  const size_t count = 1000;
  for (int root = 0; root < n(); ++root) {
    RunRanks(n(), [&](int r) {
      std::vector<float> data = RankData(r, count);
      ASSERT_TRUE(
          comms[r]->Broadcast(std::as_writable_bytes(std::span<float>(data)), root, kOpts).ok());
      ASSERT_EQ(data, RankData(root, count)) << "rank " << r << " root " << root;
      EXPECT_EQ(comms[r]->TakeStats().bytes(Collective::kBroadcast),
                BroadcastBytesSent(n(), r, root, count * 4));
    });
  }
}

TEST_P(CollectivesTest, BarrierWaitsForTheLastRank) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  const auto start = std::chrono::steady_clock::now();
  const auto last_arrival = std::chrono::milliseconds(100 * (n() - 1));
  RunRanks(n(), [&](int r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * r));
    ASSERT_TRUE(comms[r]->Barrier(kOpts).ok());
    EXPECT_GE(std::chrono::steady_clock::now() - start, last_arrival) << "rank " << r;
  });
}

TEST_P(CollectivesTest, AsyncCollectivesOverlapWithComputeAndRunInOrder) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  const size_t count = 200000;
  RunRanks(n(), [&](int r) {
    std::vector<float> a = RankData(r, count), b = RankData(r + 1, count);
    std::vector<float> gathered(4 * n());
    const std::vector<float> mine{float(r), float(r), float(r), float(r)};
    Work wa = comms[r]->AllReduceAsync(a, kOpts);
    Work wb = comms[r]->AllReduceAsync(b, kOpts);
    Work wc = comms[r]->AllGatherAsync(std::as_bytes(std::span<const float>(mine)),
                                       std::as_writable_bytes(std::span<float>(gathered)), kOpts);
    // "Compute" on this thread while the communication thread works.
    double acc = 0;
    for (int i = 0; i < 1000000; ++i) acc += std::sqrt(double(i));
    EXPECT_GT(acc, 0);
    ASSERT_TRUE(wc.Wait().ok());  // waiting out of order is fine
    EXPECT_TRUE(wa.Done());       // FIFO: a and b finished before c
    EXPECT_TRUE(wb.Done());
    ASSERT_TRUE(wa.Wait().ok());
    ASSERT_TRUE(wb.Wait().ok());
    for (size_t i = 0; i < count; i += 997) {
      float want_a = 0, want_b = 0;
      for (int q = 0; q < n(); ++q) {
        want_a += Value(q, i);
        want_b += Value(q + 1, i);
      }
      ASSERT_EQ(a[i], want_a);
      ASSERT_EQ(b[i], want_b);
    }
    for (int q = 0; q < n(); ++q) ASSERT_EQ(gathered[4 * q], float(q));
    const CommStats s = comms[r]->stats();
    EXPECT_EQ(s.count(Collective::kAllReduce), 2u);
    EXPECT_EQ(s.count(Collective::kAllGather), 1u);
  });
}

TEST_P(CollectivesTest, TwoGroupsRunConcurrently) {
  auto g1 = Group();
  auto g2 = Group();
  ASSERT_TRUE(AllCreated(g1));
  ASSERT_TRUE(AllCreated(g2));
  RunRanks(n(), [&](int r) {
    std::vector<float> a = RankData(r, 50000), b = RankData(r, 50000);
    Work w1 = g1[r]->AllReduceAsync(a, kOpts);
    Work w2 = g2[r]->AllReduceAsync(b, kOpts);
    ASSERT_TRUE(w1.Wait().ok());
    ASSERT_TRUE(w2.Wait().ok());
    EXPECT_EQ(a, b);
  });
}

TEST_P(CollectivesTest, InvalidArgumentsFailWithoutCommunicating) {
  auto comms = Group();
  ASSERT_TRUE(AllCreated(comms));
  Communicator& c = *comms[0];
  std::vector<float> in(3 * n() + 1), out(3);
  absl::Status st = c.ReduceScatter(in, out, kOpts);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("ReduceScatter"), absl::string_view::npos) << st;
  st = c.AllReduce(out, CollectiveOptions{std::chrono::milliseconds(0)});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  st = c.Broadcast(std::as_writable_bytes(std::span<float>(out)), n(), kOpts);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  std::vector<size_t> wrong(n() + 1, 0);
  st = c.AllToAllV({}, wrong, {}, wrong, kOpts);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("send_bytes has"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("recv_bytes has"), absl::string_view::npos) << st;
  EXPECT_EQ(c.stats().total_calls(), 0u);
  // The group still works afterwards.
  RunRanks(n(), [&](int r) { EXPECT_TRUE(comms[r]->Barrier(kOpts).ok()); });
}

INSTANTIATE_TEST_SUITE_P(Sizes, CollectivesTest, ::testing::Values(1, 2, 3, 4),
                         [](const auto& info) { return absl::StrCat("n", info.param); });

TEST(ByteAccountingTest, FormulasMatchTheTextbookVolumes) {
  for (int n : {2, 3, 4, 8}) {
    const uint64_t b = uint64_t(n) * 2 * (1 << 20);  // splits evenly into 1 MiB segments
    uint64_t broadcast_total = 0;
    for (int r = 0; r < n; ++r) {
      EXPECT_EQ(AllReduceRingBytesSent(n, r, b, 4), 2 * (n - 1) * b / n) << "n=" << n;
      broadcast_total += BroadcastBytesSent(n, r, /*root=*/1 % n, 1000);
    }
    EXPECT_EQ(broadcast_total, uint64_t(n - 1) * 1000) << "every non-root receives once";
    EXPECT_EQ(ReduceScatterBytesSent(n, b), (n - 1) * b / n);
    EXPECT_EQ(AllGatherBytesSent(n, 100), uint64_t(n - 1) * 100);
  }
  // 4-rank binomial tree rooted at 0: round 0 sends 0->1, round 1 sends 0->2 and 1->3.
  EXPECT_EQ(BroadcastChildren(4, 0, 0), 2);
  EXPECT_EQ(BroadcastChildren(4, 1, 0), 1);
  EXPECT_EQ(BroadcastChildren(4, 2, 0), 0);
  EXPECT_EQ(BroadcastChildren(4, 3, 0), 0);
  EXPECT_EQ(BroadcastChildren(4, 3, 2), 1);  // virtual rank 1 when rooted at 2
  EXPECT_EQ(AllReduceRingBytesSent(1, 0, 1000, 4), 0u);
}

}  // namespace
}  // namespace tern::comm
