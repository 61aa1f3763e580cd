// Failure handling: a rank that never joins, a rank that dies mid-run, a rank that never arrives
// at the rendezvous. Nobody hangs, nothing throws, every error names the collective and group.
#include "tests/worker/comm/rank_threads.h"

namespace tern::comm {
namespace {

using std::chrono::milliseconds;
using testing::AllCreated;
using testing::MakeGroup;
using testing::RunRanks;
using Clock = std::chrono::steady_clock;

const CollectiveOptions kShort{std::chrono::seconds(1)};
const CollectiveOptions kLong{std::chrono::seconds(20)};

bool IsPeerFailure(const absl::Status& st) {
  return st.code() == absl::StatusCode::kDeadlineExceeded ||
         st.code() == absl::StatusCode::kUnavailable;
}

bool Mentions(const absl::Status& st, const std::string& text) {
  return st.message().find(text) != absl::string_view::npos;
}

class FailureTest : public ::testing::TestWithParam<int> {
 protected:
  int n() const { return GetParam(); }
  std::vector<std::unique_ptr<Communicator>> Group(const std::string& kind) {
    GlooOptions options;
    options.kind = kind;
    options.timeout = std::chrono::seconds(10);
    return MakeGroup(store_, n(), kind, options);
  }
  InMemoryStore store_;
};

TEST_P(FailureTest, RankThatNeverJoinsMakesOthersFailWithinTimeout) {
  auto comms = Group("absent_rank");
  ASSERT_TRUE(AllCreated(comms));
  const int absent = n() - 1;
  RunRanks(n() - 1, [&](int r) {
    std::vector<float> data(1000, 1.0f);
    const auto start = Clock::now();
    absl::Status st = comms[r]->AllReduce(data, kShort);
    const auto took = Clock::now() - start;
    EXPECT_TRUE(IsPeerFailure(st)) << st;
    EXPECT_TRUE(Mentions(st, "AllReduce")) << st;
    EXPECT_TRUE(Mentions(st, "absent_rank")) << st;
    EXPECT_LT(took, milliseconds(3000)) << "rank " << r;
    // Broken now: the next call fails at once, quoting the first error.
    const auto again = Clock::now();
    absl::Status st2 = comms[r]->Barrier(kLong);
    EXPECT_EQ(st2.code(), absl::StatusCode::kUnavailable) << st2;
    EXPECT_TRUE(Mentions(st2, "broken")) << st2;
    EXPECT_LT(Clock::now() - again, milliseconds(200));
  });
  // The absent rank arrives late: its peers closed their connections, so it fails fast too.
  std::vector<float> data(1000, 1.0f);
  const auto start = Clock::now();
  absl::Status st = comms[absent]->AllReduce(data, kLong);
  EXPECT_TRUE(IsPeerFailure(st)) << st;
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
}

TEST_P(FailureTest, RankThatClosesMidRunMakesPeersFailFast) {
  auto comms = Group("dying_rank");
  ASSERT_TRUE(AllCreated(comms));
  const int dying = n() - 1;
  RunRanks(n(), [&](int r) {
    std::vector<float> data(100000, 1.0f);
    ASSERT_TRUE(comms[r]->AllReduce(data, kLong).ok());  // a healthy step first
    ASSERT_EQ(data[0], float(n()));
    if (r == dying) {
      std::this_thread::sleep_for(milliseconds(100));  // peers are inside the next AllReduce
      static_cast<GlooCommunicator&>(*comms[r]).Close();
      EXPECT_EQ(comms[r]->AllReduce(data, kLong).code(), absl::StatusCode::kCancelled);
      return;
    }
    const auto start = Clock::now();
    absl::Status st = comms[r]->AllReduce(data, kLong);
    // Much sooner than the 20 s timeout: the closed connection is noticed at once.
    EXPECT_LT(Clock::now() - start, milliseconds(5000)) << "rank " << r;
    EXPECT_TRUE(IsPeerFailure(st)) << st;
    EXPECT_TRUE(Mentions(st, "dying_rank")) << st;
  });
}

TEST_P(FailureTest, DestroyedCommunicatorWithQueuedWorkCancelsIt) {
  auto comms = Group("queued");
  ASSERT_TRUE(AllCreated(comms));
  // Rank 0 queues collectives nobody else joins, then is destroyed: the running one ends at its
  // timeout, the queued ones complete with CANCELLED, and the destructor returns.
  std::vector<float> a(10, 1.0f), b(10, 1.0f);
  Work wa = comms[0]->AllReduceAsync(a, kShort);
  Work wb = comms[0]->AllReduceAsync(b, kShort);
  std::this_thread::sleep_for(milliseconds(50));
  const auto start = Clock::now();
  comms[0].reset();
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
  EXPECT_TRUE(IsPeerFailure(wa.Wait())) << wa.Wait();
  EXPECT_EQ(wb.Wait().code(), absl::StatusCode::kCancelled) << wb.Wait();
  // The other ranks see the closed connections.
  RunRanks(n(), [&](int r) {
    if (r == 0) return;
    absl::Status st = comms[r]->Barrier(kLong);
    EXPECT_TRUE(IsPeerFailure(st)) << st;
  });
}

TEST_P(FailureTest, RendezvousWithoutAllRanksTimesOut) {
  GlooOptions options;
  options.kind = "late_group";
  options.timeout = milliseconds(1000);
  RunRanks(n() - 1, [&](int r) {
    const auto start = Clock::now();
    auto comm = GlooCommunicator::Create(store_, "late", r, n(), options);
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
    EXPECT_TRUE(Mentions(comm.status(), "late_group")) << comm.status();
    EXPECT_LT(Clock::now() - start, milliseconds(4000));
  });
}

// n = 2 and 3: a ring where the missing rank is a direct neighbour, and one where it is not.
INSTANTIATE_TEST_SUITE_P(Sizes, FailureTest, ::testing::Values(2, 3),
                         [](const auto& info) { return "n" + std::to_string(info.param); });

TEST(FailureTest, CreateRejectsBadArgumentsListingAll) {
  InMemoryStore store;
  GlooOptions options;
  options.timeout = milliseconds(0);
  auto comm = GlooCommunicator::Create(store, "", 5, 2, options);
  ASSERT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(comm.status(), "rank 5")) << comm.status();
  EXPECT_TRUE(Mentions(comm.status(), "timeout")) << comm.status();
  EXPECT_TRUE(Mentions(comm.status(), "prefix")) << comm.status();
}

}  // namespace
}  // namespace tern::comm
