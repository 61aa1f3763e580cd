// PrefixStore: scopes every key of an underlying Store under "<prefix>/" (e.g. "job7/round2/dp0").
#pragma once

#include <string>

#include "worker/comm/store.h"

namespace tern::comm {

// Not owning: `base` must outlive this object. Thread-safe if `base` is.
class PrefixStore : public Store {
 public:
  PrefixStore(std::string prefix, Store& base) : prefix_(std::move(prefix)), base_(base) {}

  absl::Status Set(const std::string& key, const std::vector<uint8_t>& value) override;
  absl::StatusOr<std::vector<uint8_t>> Get(const std::string& key,
                                           std::chrono::milliseconds timeout) override;
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta) override;
  absl::Status Wait(const std::vector<std::string>& keys,
                    std::chrono::milliseconds timeout) override;

  const std::string& prefix() const { return prefix_; }
  // The key as the underlying store sees it.
  std::string Join(const std::string& key) const { return prefix_ + "/" + key; }

 private:
  std::string prefix_;
  Store& base_;
};

}  // namespace tern::comm
