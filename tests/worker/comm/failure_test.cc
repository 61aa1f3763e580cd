// Failure handling: a rank that never joins, a rank that dies mid-run, a rank that never arrives
// at the rendezvous. Nobody hangs, nothing throws, every error names the collective and group.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/tcp_store.h"

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

TEST_P(FailureTest, SendingToAClosedPeerFailsInsteadOfRaisingSigpipe) {
  auto comms = Group("closed_peer");
  ASSERT_TRUE(AllCreated(comms));
  struct sigaction current {};
  ASSERT_EQ(::sigaction(SIGPIPE, nullptr, &current), 0);
  EXPECT_EQ(current.sa_handler, SIG_IGN);
  // Every peer of rank 0 closes; rank 0 then pushes 32 MiB at them, more than the socket
  // buffers hold, so its writes hit closed connections.
  for (int r = 1; r < n(); ++r) static_cast<GlooCommunicator&>(*comms[r]).Close();
  std::vector<float> data(8 << 20, 1.0f);
  absl::Status st = comms[0]->Broadcast(std::as_writable_bytes(std::span<float>(data)), 0, kLong);
  EXPECT_TRUE(IsPeerFailure(st)) << st;
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

// A peer PROCESS killed (SIGKILL) in the middle of a 64 MiB all-reduce: this rank gets an error
// status within its timeout and survives (no SIGPIPE death, no escaping exception).
TEST(FailureTest, PeerProcessKilledMidCollective) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();  // before this test starts any thread
  ASSERT_GE(pid, 0);
  const size_t count = 16 << 20;  // 64 MiB of floats
  if (pid == 0) {
    ::close(pipe_fds[1]);
    int port = 0;
    if (::read(pipe_fds[0], &port, sizeof(port)) != sizeof(port)) ::_exit(10);
    auto store = TcpStore::Connect("127.0.0.1", port, milliseconds(5000));
    if (!store.ok()) ::_exit(11);
    GlooOptions options;
    options.timeout = milliseconds(10000);
    auto comm = GlooCommunicator::Create(**store, "killed", 1, 2, options);
    if (!comm.ok()) ::_exit(12);
    std::vector<float> data(count, 1.0f);
    for (int i = 0; i < 1000; ++i) (void)(*comm)->AllReduce(data, kLong);  // killed in here
    ::_exit(13);
  }
  ::close(pipe_fds[0]);
  auto server = TcpStoreServer::Start(0);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  ASSERT_EQ(::write(pipe_fds[1], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  ::close(pipe_fds[1]);
  auto store = TcpStore::Connect("127.0.0.1", port, milliseconds(5000));
  ASSERT_TRUE(store.ok());
  GlooOptions options;
  options.kind = "cross_process";
  options.timeout = milliseconds(10000);
  auto comm = GlooCommunicator::Create(**store, "killed", 0, 2, options);
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::vector<float> data(count, 1.0f);
  ASSERT_TRUE((*comm)->AllReduce(data, kLong).ok());  // both processes healthy
  EXPECT_EQ(data[123], 2.0f);
  Work work = (*comm)->AllReduceAsync(data, kLong);
  std::this_thread::sleep_for(milliseconds(20));  // mid-transfer
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status));
  const auto start = Clock::now();
  absl::Status st = work.Wait();
  for (int i = 0; st.ok() && i < 10; ++i) st = (*comm)->AllReduce(data, kLong);
  EXPECT_TRUE(IsPeerFailure(st)) << st;
  EXPECT_TRUE(Mentions(st, "cross_process")) << st;
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
}

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
