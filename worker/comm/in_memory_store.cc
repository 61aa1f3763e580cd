#include "worker/comm/in_memory_store.h"

#include <charconv>

#include "absl/strings/str_cat.h"
#include "worker/core/status.h"

namespace tern::comm {

std::vector<uint8_t> ToBytes(const std::string& s) { return {s.begin(), s.end()}; }

std::string ToString(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

absl::StatusOr<int64_t> ParseCounter(const std::string& key, const std::vector<uint8_t>& value) {
  int64_t out = 0;
  const char* begin = reinterpret_cast<const char*>(value.data());
  const char* end = begin + value.size();
  auto [ptr, ec] = std::from_chars(begin, end, out);
  if (value.empty() || ec != std::errc() || ptr != end) {
    return absl::InvalidArgumentError(
        absl::StrCat("store key '", key, "' does not hold a decimal integer (", value.size(),
                     " bytes); --> hint: use a separate key for Add counters"));
  }
  return out;
}

namespace {
absl::Status ShutdownError(const std::string& key) {
  return absl::UnavailableError(
      absl::StrCat("store is shutting down while waiting for key '", key, "'"));
}
}  // namespace

absl::Status InMemoryStore::Set(const std::string& key, const std::vector<uint8_t>& value) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    data_[key] = value;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> InMemoryStore::Get(const std::string& key,
                                                        std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool found =
      cv_.wait_for(lock, timeout, [&] { return shutdown_ || data_.find(key) != data_.end(); });
  if (shutdown_) return ShutdownError(key);
  if (!found) {
    return absl::DeadlineExceededError(
        absl::StrCat("in-memory store: key '", key, "' not set within ", timeout.count(), " ms"));
  }
  return data_.at(key);
}

absl::StatusOr<int64_t> InMemoryStore::Add(const std::string& key, int64_t delta) {
  int64_t value = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = data_.find(key);
    if (it != data_.end()) {
      TERN_ASSIGN_OR_RETURN(value, ParseCounter(key, it->second));
    }
    value += delta;
    data_[key] = ToBytes(std::to_string(value));
  }
  cv_.notify_all();
  return value;
}

absl::Status InMemoryStore::Wait(const std::vector<std::string>& keys,
                                 std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto missing = [&]() -> const std::string* {
    for (const auto& key : keys) {
      if (data_.find(key) == data_.end()) return &key;
    }
    return nullptr;
  };
  const bool all = cv_.wait_for(lock, timeout, [&] { return shutdown_ || missing() == nullptr; });
  if (shutdown_) return ShutdownError(keys.empty() ? "" : keys[0]);
  if (!all) {
    return absl::DeadlineExceededError(absl::StrCat("in-memory store: key '", *missing(),
                                                    "' not set within ", timeout.count(), " ms"));
  }
  return absl::OkStatus();
}

size_t InMemoryStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_.size();
}

void InMemoryStore::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

}  // namespace tern::comm
