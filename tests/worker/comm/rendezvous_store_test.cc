// The rendezvous client (tern::comm::Store over RendezvousService) against a real ternd.
#include "worker/comm/rendezvous_store.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "tests/daemon/cluster_harness.h"

namespace tern::comm {
namespace {

using std::chrono::milliseconds;

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

TEST(RendezvousClient, SetGetAddWaitAgainstTernd) {
  tern::testing::Cluster c;
  ASSERT_TRUE(c.StartTernd());
  auto a = ConnectRendezvousStore(c.address(), "j-000001/1", "");
  auto b = ConnectRendezvousStore(c.address(), "j-000001/1", "");
  auto next_round = ConnectRendezvousStore(c.address(), "j-000001/2", "");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok() && next_round.ok());

  // A Get blocks until another rank sets the key.
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    ASSERT_TRUE((*b)->Set("rank0/addr", Bytes("127.0.0.1:5000")).ok());
  });
  auto v = (*a)->Get("rank0/addr", milliseconds(5000));
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, Bytes("127.0.0.1:5000"));
  std::vector<uint8_t> binary = {0, 1, 2, 255, 0};
  ASSERT_TRUE((*a)->Set("blob", binary).ok());
  EXPECT_EQ(*(*b)->Get("blob", milliseconds(100)), binary);

  // Add is atomic across clients.
  std::vector<std::thread> adders;
  for (int t = 0; t < 4; ++t) {
    adders.emplace_back([&, t] {
      auto& s = t % 2 ? *a : *b;
      for (int i = 0; i < 25; ++i) ASSERT_TRUE(s->Add("arrived", 1).ok());
    });
  }
  for (auto& t : adders) t.join();
  EXPECT_EQ(*(*a)->Add("arrived", 0), 100);

  // Wait for several keys; the next round sees none of this round's keys.
  ASSERT_TRUE((*a)->Wait({"rank0/addr", "blob"}, milliseconds(1000)).ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto missing = (*next_round)->Get("rank0/addr", milliseconds(200));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(std::string(missing.status().message()).find("rank0/addr"), std::string::npos);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(180));  // waited, not failed fast
  EXPECT_EQ((*a)->Wait({"nope"}, milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(RendezvousClient, NeedsTheWorkerTokenWhenConfigured) {
  tern::testing::ClusterOptions o;
  o.admin_token = "adm";
  o.worker_token = "wrk";
  tern::testing::Cluster c(o);
  ASSERT_TRUE(c.StartTernd());
  auto anon = ConnectRendezvousStore(c.address(), "j/1", "");
  ASSERT_TRUE(anon.ok());
  EXPECT_EQ((*anon)->Set("k", Bytes("v")).code(), absl::StatusCode::kUnauthenticated);
  auto worker = ConnectRendezvousStore(c.address(), "j/1", "wrk");
  EXPECT_TRUE((*worker)->Set("k", Bytes("v")).ok());
  EXPECT_EQ(*(*worker)->Get("k", milliseconds(100)), Bytes("v"));
}

TEST(RendezvousClient, UnreachableTerndIsAClearError) {
  auto s = ConnectRendezvousStore("127.0.0.1:1", "j/1", "", milliseconds(300));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(s.status().message()).find("127.0.0.1:1"), std::string::npos);
}

}  // namespace
}  // namespace tern::comm
