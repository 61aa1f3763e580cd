#include "worker/comm/gloo_store.h"

#include "gloo/common/error.h"

namespace tern::comm {
namespace {

[[noreturn]] void Throw(const absl::Status& status) {
  // Keep "timed out" in the text so the communicator maps it to DEADLINE_EXCEEDED.
  std::string text(status.message());
  if (status.code() == absl::StatusCode::kDeadlineExceeded) text = "rendezvous timed out: " + text;
  throw gloo::IoException("rendezvous store: " + text);
}

}  // namespace

void GlooStoreAdapter::set(const std::string& key, const std::vector<char>& data) {
  absl::Status st = store_.Set(key, std::vector<uint8_t>(data.begin(), data.end()));
  if (!st.ok()) Throw(st);
}

std::vector<char> GlooStoreAdapter::get(const std::string& key) {
  auto value = store_.Get(key, timeout_);
  if (!value.ok()) Throw(value.status());
  return std::vector<char>(value->begin(), value->end());
}

void GlooStoreAdapter::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  absl::Status st = store_.Wait(keys, timeout);
  if (!st.ok()) Throw(st);
}

}  // namespace tern::comm
