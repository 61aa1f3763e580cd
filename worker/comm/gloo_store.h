// Adapter that lets Gloo rendezvous over any tern::comm::Store.
#pragma once

#include <chrono>

#include "gloo/rendezvous/store.h"
#include "worker/comm/store.h"

namespace tern::comm {

// Gloo's store interface throws on failure: a failed or timed-out call becomes a
// gloo::IoException whose message names the key ("timed out" for a deadline). Callers catch it
// at the communicator boundary. `get` waits up to `timeout` for the key. Not owning.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(tern::comm::Store& store, std::chrono::milliseconds timeout)
      : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

 private:
  tern::comm::Store& store_;
  std::chrono::milliseconds timeout_;
};

}  // namespace tern::comm
