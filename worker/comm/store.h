// Rendezvous key-value store (the Gloo store interface): ranks publish and wait for keys.
// Implementations: InMemoryStore (ranks as threads), TcpStore (hosted by `tern train` for its
// local rank processes), and ConnectRendezvousStore()'s (rendezvous_store.h: over ternd's
// RendezvousService, for ranks started by tern-worker).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::comm {

class Store {
 public:
  virtual ~Store() = default;
  virtual absl::Status Set(const std::string& key, const std::vector<uint8_t>& value) = 0;
  // Blocks until the key exists or the timeout passes (DEADLINE_EXCEEDED naming the key).
  virtual absl::StatusOr<std::vector<uint8_t>> Get(const std::string& key,
                                                   std::chrono::milliseconds timeout) = 0;
  // Atomically adds `delta` to the integer stored at key (0 if absent); returns the new value.
  virtual absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) = 0;
  // Blocks until every key exists or the timeout passes.
  virtual absl::Status Wait(const std::vector<std::string>& keys,
                            std::chrono::milliseconds timeout) = 0;
};

}  // namespace tern::comm
