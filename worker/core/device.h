// The compute device as the engine sees it: memory in two tiers with budgets and accounting,
// copies and fills, and streams of asynchronous work. The model and ZeRO allocate through a
// Device; the kernels they run come from an operation table (kernels/backend.h). `CpuDevice`
// is host memory; a CUDA device plugs in behind the same interface.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern {

// kDevice: where kernels read and write (GPU memory; on CPU, the memory the budget models).
// kHost: the offload tier (pinned host memory; on CPU, host memory outside the device budget).
enum class MemoryTier { kDevice = 0, kHost = 1 };
const char* MemoryTierName(MemoryTier tier);

struct MemoryUsage {
  uint64_t current = 0;  // bytes allocated or charged now
  uint64_t peak = 0;     // most bytes at any moment since the last ResetPeak
  uint64_t budget = 0;   // 0 = unlimited
};

// An ordered queue of asynchronous work (copies for offload and prefetch). Work runs in
// submission order; Synchronize waits for everything submitted so far.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual void CopyAsync(void* dst, const void* src, size_t bytes) = 0;
  // Runs `fn` in order with the stream's copies (CPU streams; a GPU stream runs host callbacks).
  virtual void Enqueue(std::function<void()> fn) = 0;
  // A marker of everything submitted so far; Wait(marker) blocks until it has run.
  virtual uint64_t Record() = 0;
  virtual void Wait(uint64_t marker) = 0;
  void Synchronize() { Wait(Record()); }
};

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string_view name() const = 0;

  // `bytes` in `tier`, 64-byte aligned. Past the tier's budget: RESOURCE_EXHAUSTED naming
  // `what`, the size, what is in use and the budget; nothing is allocated.
  absl::StatusOr<void*> Allocate(size_t bytes, MemoryTier tier, std::string_view what);
  void Free(void* p, size_t bytes, MemoryTier tier);
  // Counts `bytes` held elsewhere against `tier` (memory the engine keeps in its own containers
  // on this backend), refused like Allocate; Uncharge gives it back.
  absl::Status Charge(size_t bytes, MemoryTier tier, std::string_view what);
  void Uncharge(size_t bytes, MemoryTier tier);

  virtual void Copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void Fill(void* dst, uint8_t value, size_t bytes) = 0;
  virtual std::unique_ptr<Stream> NewStream() = 0;

  void set_budget(MemoryTier tier, uint64_t bytes);
  MemoryUsage usage(MemoryTier tier) const;
  void ResetPeak();

 protected:
  virtual void* RawAllocate(size_t bytes, MemoryTier tier) = 0;
  virtual void RawFree(void* p, MemoryTier tier) = 0;

 private:
  absl::Status Take(size_t bytes, MemoryTier tier, std::string_view what);
  void Give(size_t bytes, MemoryTier tier);

  mutable std::mutex mu_;
  MemoryUsage usage_[2];
};

// Host memory in both tiers; streams are one worker thread each.
class CpuDevice final : public Device {
 public:
  std::string_view name() const override { return "cpu"; }
  void Copy(void* dst, const void* src, size_t bytes) override;
  void Fill(void* dst, uint8_t value, size_t bytes) override;
  std::unique_ptr<Stream> NewStream() override;

 protected:
  void* RawAllocate(size_t bytes, MemoryTier tier) override;
  void RawFree(void* p, MemoryTier tier) override;
};

// The process's default device: a CpuDevice without budgets (tools and tests that do not
// configure one).
Device& DefaultDevice();

// An owning array of T in one tier of a Device. Move-only; empty when default-constructed.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  static absl::StatusOr<Buffer> Create(Device& dev, size_t n, MemoryTier tier,
                                       std::string_view what) {
    Buffer b;
    if (n == 0) return b;
    auto p = dev.Allocate(n * sizeof(T), tier, what);
    if (!p.ok()) return p.status();
    b.dev_ = &dev;
    b.p_ = static_cast<T*>(*p);
    b.n_ = n;
    b.tier_ = tier;
    return b;
  }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(dev_, o.dev_);
      std::swap(p_, o.p_);
      std::swap(n_, o.n_);
      std::swap(tier_, o.tier_);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  void reset() {
    if (p_ != nullptr) dev_->Free(p_, n_ * sizeof(T), tier_);
    p_ = nullptr;
    n_ = 0;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  size_t bytes() const { return n_ * sizeof(T); }
  MemoryTier tier() const { return tier_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }

 private:
  Device* dev_ = nullptr;
  T* p_ = nullptr;
  size_t n_ = 0;
  MemoryTier tier_ = MemoryTier::kDevice;
};

// Memory charged to a Device for as long as this lives (Device::Charge).
class Charge {
 public:
  Charge() = default;
  static absl::StatusOr<Charge> Make(Device& dev, size_t bytes, MemoryTier tier,
                                     std::string_view what);
  Charge(Charge&& o) noexcept { *this = std::move(o); }
  Charge& operator=(Charge&& o) noexcept;
  ~Charge() { reset(); }
  void reset();
  size_t bytes() const { return bytes_; }

 private:
  Device* dev_ = nullptr;
  size_t bytes_ = 0;
  MemoryTier tier_ = MemoryTier::kDevice;
};

// "12.0 MiB" for messages.
std::string FormatMemory(uint64_t bytes);

}  // namespace tern
