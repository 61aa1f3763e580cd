#include "worker/comm/prefix_store.h"

namespace tern::comm {

absl::Status PrefixStore::Set(const std::string& key, const std::vector<uint8_t>& value) {
  return base_.Set(Join(key), value);
}

absl::StatusOr<std::vector<uint8_t>> PrefixStore::Get(const std::string& key,
                                                      std::chrono::milliseconds timeout) {
  return base_.Get(Join(key), timeout);
}

absl::StatusOr<int64_t> PrefixStore::Add(const std::string& key, int64_t delta) {
  return base_.Add(Join(key), delta);
}

absl::Status PrefixStore::Wait(const std::vector<std::string>& keys,
                               std::chrono::milliseconds timeout) {
  std::vector<std::string> joined;
  joined.reserve(keys.size());
  for (const auto& key : keys) joined.push_back(Join(key));
  return base_.Wait(joined, timeout);
}

}  // namespace tern::comm
