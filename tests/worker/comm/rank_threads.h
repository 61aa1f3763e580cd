// Test helper: runs N ranks as threads over one InMemoryStore.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/comm/groups.h"
#include "worker/comm/in_memory_store.h"

namespace tern::comm::testing {

// Runs fn(rank) on `n` threads and joins them.
inline void RunRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back([&fn, r] { fn(r); });
  for (auto& t : threads) t.join();
}

// Creates `n` communicators (LocalCommunicator for n == 1) concurrently, one per rank.
inline std::vector<std::unique_ptr<Communicator>> MakeGroup(Store& store, int n,
                                                            const std::string& prefix,
                                                            GlooOptions options = {}) {
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<size_t>(n));
  RunRanks(n, [&](int r) {
    auto comm = CreateCommunicator(store, prefix, r, n, options);
    EXPECT_TRUE(comm.ok()) << comm.status();
    if (comm.ok()) comms[static_cast<size_t>(r)] = std::move(*comm);
  });
  return comms;
}

inline bool AllCreated(const std::vector<std::unique_ptr<Communicator>>& comms) {
  for (const auto& c : comms) {
    if (!c) return false;
  }
  return true;
}

}  // namespace tern::comm::testing
