// Stores: InMemoryStore, PrefixStore, TcpStore (threads and a fork()ed process), Gloo adapter.
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "gloo/common/error.h"
#include "gtest/gtest.h"
#include "worker/comm/gloo_store.h"
#include "worker/comm/in_memory_store.h"
#include "worker/comm/prefix_store.h"
#include "worker/comm/tcp_store.h"

namespace tern::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// The same contract for every Store implementation.
void ExerciseStore(Store& store) {
  ASSERT_TRUE(store.Set("a", ToBytes("hello")).ok());
  auto a = store.Get("a", milliseconds(100));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(ToString(*a), "hello");
  // Overwrite, and a binary value with zeros.
  ASSERT_TRUE(store.Set("a", {0, 1, 0, 255}).ok());
  EXPECT_EQ(*store.Get("a", milliseconds(100)), (std::vector<uint8_t>{0, 1, 0, 255}));
  // Missing key: DEADLINE_EXCEEDED naming the key, after about the timeout.
  const auto start = Clock::now();
  auto missing = store.Get("missing-key", milliseconds(150));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("missing-key"), absl::string_view::npos);
  EXPECT_GE(Clock::now() - start, milliseconds(140));
  EXPECT_EQ(store.Wait({"a", "missing-key"}, milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
  // Counters.
  EXPECT_EQ(*store.Add("counter", 5), 5);
  EXPECT_EQ(*store.Add("counter", -2), 3);
  EXPECT_EQ(ToString(*store.Get("counter", milliseconds(10))), "3");
  EXPECT_EQ(store.Add("a", 1).status().code(), absl::StatusCode::kInvalidArgument);
  // Get and Wait block until another thread sets the key.
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    ASSERT_TRUE(store.Set("late", ToBytes("x")).ok());
  });
  EXPECT_TRUE(store.Wait({"a", "late"}, milliseconds(5000)).ok());
  EXPECT_EQ(ToString(*store.Get("late", milliseconds(10))), "x");
  setter.join();
  // Concurrent adds are atomic.
  std::vector<std::thread> adders;
  for (int t = 0; t < 4; ++t) {
    adders.emplace_back([&] {
      for (int i = 0; i < 50; ++i) ASSERT_TRUE(store.Add("sum", 1).ok());
    });
  }
  for (auto& t : adders) t.join();
  EXPECT_EQ(*store.Add("sum", 0), 200);
}

TEST(InMemoryStoreTest, Contract) {
  InMemoryStore store;
  ExerciseStore(store);
}

TEST(InMemoryStoreTest, ShutdownWakesWaiters) {
  InMemoryStore store;
  std::thread waiter([&] {
    EXPECT_EQ(store.Get("never", milliseconds(10000)).status().code(),
              absl::StatusCode::kUnavailable);
  });
  std::this_thread::sleep_for(milliseconds(50));
  const auto start = Clock::now();
  store.Shutdown();
  waiter.join();
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

TEST(PrefixStoreTest, ScopesKeys) {
  InMemoryStore base;
  PrefixStore round1("job/round1", base), round2("job/round2", base);
  ExerciseStore(round1);
  ASSERT_TRUE(round2.Set("a", ToBytes("two")).ok());
  EXPECT_EQ(ToString(*base.Get("job/round2/a", milliseconds(10))), "two");
  EXPECT_EQ(ToString(*round1.Get("late", milliseconds(10))), "x");
  EXPECT_EQ(round2.Get("late", milliseconds(10)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(*round2.Add("counter", 1), 1);  // separate from round1's counter (3)
}

TEST(TcpStoreTest, ContractAcrossThreads) {
  auto server = TcpStoreServer::Start(0);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  auto client = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(client.ok()) << client.status();
  ExerciseStore(**client);
  // A second client sees the first one's keys; a blocked Get on one connection does not
  // stall the other.
  auto other = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(other.ok());
  std::thread blocked([&] { EXPECT_TRUE((*client)->Get("from-other", milliseconds(5000)).ok()); });
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE((*other)->Set("from-other", ToBytes("v")).ok());
  blocked.join();
  EXPECT_EQ(*(*other)->Add("counter", 0), 3);
  // Concurrent callers (the blocked Get above, the adders) got connections of their own.
  EXPECT_GE((*server)->connections_accepted(), 3);
}

TEST(TcpStoreTest, ClientRetriesUntilServerStarts) {
  // Reserve a free port, release it, and start the server there a little later.
  int port = 0;
  {
    auto probe = TcpStoreServer::Start(0);
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(milliseconds(200));
    auto s = TcpStoreServer::Start(port);
    ASSERT_TRUE(s.ok()) << s.status();
    server = std::move(*s);
  });
  auto client = TcpStore::Connect("127.0.0.1", port, milliseconds(5000));
  starter.join();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Set("k", ToBytes("v")).ok());
}

TEST(TcpStoreTest, ConnectTimesOutWithClearError) {
  int port = 0;
  {
    auto probe = TcpStoreServer::Start(0);
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  const auto start = Clock::now();
  auto client = TcpStore::Connect("127.0.0.1", port, milliseconds(300));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(client.status().message().find(std::to_string(port)), absl::string_view::npos);
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

TEST(TcpStoreTest, StopFailsBlockedRequestsAndLaterCalls) {
  auto server = TcpStoreServer::Start(0);
  ASSERT_TRUE(server.ok());
  auto client = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(client.ok());
  std::thread blocked([&] {
    auto v = (*client)->Get("never", milliseconds(20000));
    EXPECT_EQ(v.status().code(), absl::StatusCode::kUnavailable) << v.status();
  });
  std::this_thread::sleep_for(milliseconds(100));
  const auto start = Clock::now();
  (*server)->Stop();
  blocked.join();
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
  EXPECT_EQ((*client)->Set("k", ToBytes("v")).code(), absl::StatusCode::kUnavailable);
}

TEST(TcpStoreTest, ForkedChildProcessRendezvous) {
  // Fork before any thread exists in this test; the parent sends the port through a pipe.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[1]);
    int port = 0;
    if (::read(pipe_fds[0], &port, sizeof(port)) != sizeof(port)) ::_exit(10);
    auto store = TcpStore::Connect("127.0.0.1", port, milliseconds(5000));
    if (!store.ok()) ::_exit(11);
    auto from_parent = (*store)->Get("parent", milliseconds(5000));
    if (!from_parent.ok() || ToString(*from_parent) != "hello child") ::_exit(12);
    if (!(*store)->Set("child", ToBytes("hello parent")).ok()) ::_exit(13);
    auto n = (*store)->Add("arrived", 1);
    if (!n.ok()) ::_exit(14);
    ::_exit(0);
  }
  ::close(pipe_fds[0]);
  auto server = TcpStoreServer::Start(0);
  ASSERT_TRUE(server.ok());
  auto store = TcpStore::Connect("127.0.0.1", (*server)->port(), milliseconds(2000));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Set("parent", ToBytes("hello child")).ok());
  const int port = (*server)->port();
  ASSERT_EQ(::write(pipe_fds[1], &port, sizeof(port)), static_cast<ssize_t>(sizeof(port)));
  ::close(pipe_fds[1]);
  auto reply = (*store)->Get("child", milliseconds(10000));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(ToString(*reply), "hello parent");
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(*(*store)->Add("arrived", 1), 2);
}

TEST(GlooStoreAdapterTest, ForwardsAndThrowsOnTimeout) {
  InMemoryStore store;
  GlooStoreAdapter adapter(store, milliseconds(100));
  adapter.set("k", {'a', 'b'});
  EXPECT_EQ(adapter.get("k"), (std::vector<char>{'a', 'b'}));
  adapter.wait({"k"}, milliseconds(10));
  try {
    adapter.get("absent");
    FAIL() << "expected an exception";
  } catch (const gloo::IoException& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("absent"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tern::comm
