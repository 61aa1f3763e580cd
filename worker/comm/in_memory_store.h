// InMemoryStore: a thread-safe Store for ranks running as threads of one process (tests, benches).
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>

#include "worker/comm/store.h"

namespace tern::comm {

// All methods are thread-safe; Get/Wait block on a condition variable until the key appears.
class InMemoryStore : public Store {
 public:
  absl::Status Set(const std::string& key, const std::vector<uint8_t>& value) override;
  absl::StatusOr<std::vector<uint8_t>> Get(const std::string& key,
                                           std::chrono::milliseconds timeout) override;
  // The integer is stored as its decimal text (as Gloo and torch stores do).
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;

  // Number of keys currently stored (for tests).
  size_t size() const;

  // Wakes every blocked Get/Wait and makes them (and later ones) fail with UNAVAILABLE.
  // Used by TcpStoreServer on shutdown.
  void Shutdown();

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<uint8_t>> data_;
  bool shutdown_ = false;
};

// Shared helpers for store implementations.
std::vector<uint8_t> ToBytes(const std::string& s);
std::string ToString(const std::vector<uint8_t>& bytes);
// Parses the decimal integer a counter key holds; INVALID_ARGUMENT naming the key otherwise.
absl::StatusOr<int64_t> ParseCounter(const std::string& key, const std::vector<uint8_t>& value);

}  // namespace tern::comm
