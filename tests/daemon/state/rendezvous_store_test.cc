#include "daemon/state/rendezvous_store.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

namespace tern::daemon {
namespace {

using Clock = RendezvousStore::Clock;
using std::chrono::milliseconds;

TEST(RendezvousStore, GetWaitsForSetAndTimesOutNamingTheKey) {
  RendezvousStore store;
  std::promise<absl::StatusOr<std::string>> got;
  store.Get("j1/1", "addr0", Clock::now() + milliseconds(2000),
            [&](absl::StatusOr<std::string> v) { got.set_value(std::move(v)); });
  ASSERT_TRUE(store.Set("j1/1", "addr0", "10.0.0.1:1234").ok());
  auto v = got.get_future().get();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "10.0.0.1:1234");

  std::promise<absl::StatusOr<std::string>> timeout;
  const auto t0 = Clock::now();
  store.Get("j1/1", "never", Clock::now() + milliseconds(100),
            [&](absl::StatusOr<std::string> v) { timeout.set_value(std::move(v)); });
  auto t = timeout.get_future().get();
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(std::string(t.status().message()).find("j1/1/never"), std::string::npos);
  EXPECT_GE(Clock::now() - t0, milliseconds(100));
  EXPECT_LT(Clock::now() - t0, milliseconds(1000));
}

TEST(RendezvousStore, RoundsAreIsolatedAndDropJobClearsThem) {
  RendezvousStore store;
  ASSERT_TRUE(store.Set("j1/1", "k", "round1").ok());
  std::promise<absl::StatusOr<std::string>> r2;
  store.Get("j1/2", "k", Clock::now(), [&](auto v) { r2.set_value(std::move(v)); });
  EXPECT_EQ(r2.get_future().get().status().code(), absl::StatusCode::kDeadlineExceeded);
  std::promise<absl::Status> waiting;
  store.Wait("j1/1", {"k", "other"}, Clock::now() + milliseconds(5000),
             [&](absl::Status s) { waiting.set_value(s); });
  store.DropJob("j1");
  EXPECT_EQ(waiting.get_future().get().code(), absl::StatusCode::kAborted);
  std::promise<absl::StatusOr<std::string>> gone;
  store.Get("j1/1", "k", Clock::now(), [&](auto v) { gone.set_value(std::move(v)); });
  EXPECT_FALSE(gone.get_future().get().ok());
}

TEST(RendezvousStore, AddIsAtomicAcrossThreads) {
  RendezvousStore store;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) ASSERT_TRUE(store.Add("j/1", "count", 1).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(*store.Add("j/1", "count", 0), 800);
  ASSERT_TRUE(store.Set("j/1", "text", "abc").ok());
  EXPECT_EQ(store.Add("j/1", "text", 1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::daemon
