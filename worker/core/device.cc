#include "worker/core/device.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/core/status.h"

namespace tern {

const char* MemoryTierName(MemoryTier tier) {
  return tier == MemoryTier::kDevice ? "device" : "host";
}

std::string FormatMemory(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

absl::Status Device::Take(size_t bytes, MemoryTier tier, std::string_view what) {
  std::lock_guard<std::mutex> lock(mu_);
  MemoryUsage& u = usage_[int(tier)];
  if (u.budget != 0 && u.current + bytes > u.budget) {
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(what), ": ", FormatMemory(bytes), " more ", MemoryTierName(tier),
                     " memory does not fit: ", FormatMemory(u.current), " in use of the ",
                     FormatMemory(u.budget), " budget (",
                     tier == MemoryTier::kDevice ? "resources.device_memory_budget"
                                                 : "resources.host_memory_budget",
                     ")"));
  }
  u.current += bytes;
  if (u.current > u.peak) u.peak = u.current;
  return absl::OkStatus();
}

void Device::Give(size_t bytes, MemoryTier tier) {
  std::lock_guard<std::mutex> lock(mu_);
  MemoryUsage& u = usage_[int(tier)];
  TERN_CHECK(u.current >= bytes) << "freeing " << bytes << " bytes of " << MemoryTierName(tier)
                                 << " memory with " << u.current << " in use";
  u.current -= bytes;
}

absl::StatusOr<void*> Device::Allocate(size_t bytes, MemoryTier tier, std::string_view what) {
  if (absl::Status s = Take(bytes, tier, what); !s.ok()) return s;
  void* p = RawAllocate(bytes, tier);
  if (p == nullptr) {
    Give(bytes, tier);
    return absl::ResourceExhaustedError(absl::StrCat(std::string(what), ": allocating ",
                                                     FormatMemory(bytes), " of ",
                                                     MemoryTierName(tier), " memory failed"));
  }
  return p;
}

void Device::Free(void* p, size_t bytes, MemoryTier tier) {
  if (p == nullptr) return;
  RawFree(p, tier);
  Give(bytes, tier);
}

absl::Status Device::Charge(size_t bytes, MemoryTier tier, std::string_view what) {
  return Take(bytes, tier, what);
}

void Device::Uncharge(size_t bytes, MemoryTier tier) { Give(bytes, tier); }

void Device::set_budget(MemoryTier tier, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  usage_[int(tier)].budget = bytes;
}

MemoryUsage Device::usage(MemoryTier tier) const {
  std::lock_guard<std::mutex> lock(mu_);
  return usage_[int(tier)];
}

void Device::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& u : usage_) u.peak = u.current;
}

namespace {

// One worker thread running closures in submission order.
class CpuStream final : public Stream {
 public:
  CpuStream() : thread_([this] { Loop(); }) {}
  ~CpuStream() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void CopyAsync(void* dst, const void* src, size_t bytes) override {
    Enqueue([dst, src, bytes] { std::memcpy(dst, src, bytes); });
  }
  void Enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(fn));
      ++submitted_;
    }
    cv_.notify_all();
  }
  uint64_t Record() override {
    std::lock_guard<std::mutex> lock(mu_);
    return submitted_;
  }
  // A waiter runs the pending work itself when the stream's thread has not taken it yet (on a
  // busy host that thread may not be scheduled for a while); work still runs one item at a
  // time, in order.
  void Wait(uint64_t marker) override {
    std::unique_lock<std::mutex> lock(mu_);
    while (done_ < marker) {
      if (!running_ && !queue_.empty()) {
        RunFront(lock);
      } else {
        done_cv_.wait(lock);
      }
    }
  }

 private:
  // Runs the front item with the lock released; one item runs at a time.
  void RunFront(std::unique_lock<std::mutex>& lock) {
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    running_ = true;
    lock.unlock();
    fn();
    lock.lock();
    running_ = false;
    ++done_;
    done_cv_.notify_all();
    cv_.notify_all();
  }
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || (!running_ && !queue_.empty()); });
      if (queue_.empty() && !running_) return;  // stop_ with nothing left
      if (!running_ && !queue_.empty()) RunFront(lock);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0, done_ = 0;
  bool running_ = false;  // an item is running (on the stream's thread or a waiter)
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

void CpuDevice::Copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

void CpuDevice::Fill(void* dst, uint8_t value, size_t bytes) { std::memset(dst, value, bytes); }

std::unique_ptr<Stream> CpuDevice::NewStream() { return std::make_unique<CpuStream>(); }

void* CpuDevice::RawAllocate(size_t bytes, MemoryTier) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  return std::aligned_alloc(64, rounded);
}

void CpuDevice::RawFree(void* p, MemoryTier) { std::free(p); }

Device& DefaultDevice() {
  static CpuDevice* dev = new CpuDevice();  // never destroyed: buffers may outlive main's locals
  return *dev;
}

absl::StatusOr<Charge> Charge::Make(Device& dev, size_t bytes, MemoryTier tier,
                                    std::string_view what) {
  if (absl::Status s = dev.Charge(bytes, tier, what); !s.ok()) return s;
  Charge c;
  c.dev_ = &dev;
  c.bytes_ = bytes;
  c.tier_ = tier;
  return c;
}

Charge& Charge::operator=(Charge&& o) noexcept {
  if (this != &o) {
    reset();
    std::swap(dev_, o.dev_);
    std::swap(bytes_, o.bytes_);
    std::swap(tier_, o.tier_);
  }
  return *this;
}

void Charge::reset() {
  if (dev_ != nullptr && bytes_ > 0) dev_->Uncharge(bytes_, tier_);
  dev_ = nullptr;
  bytes_ = 0;
}

}  // namespace tern
