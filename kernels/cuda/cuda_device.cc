#include "kernels/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include <cstring>
#include <deque>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_ops.h"
#include "worker/core/status.h"

namespace tern {
namespace {

#define TERN_CUDA_OK(expr)                                                                     \
  do {                                                                                         \
    const cudaError_t _tern_e = (expr);                                                        \
    TERN_CHECK(_tern_e == cudaSuccess) << #expr << ": " << cudaGetErrorString(_tern_e) << " (" \
                                       << cudaGetErrorName(_tern_e) << ")";                    \
  } while (0)

// Blocks under 1 MiB are rounded to 512 bytes, larger ones to 2 MiB, so freed blocks are
// reused by allocations of similar size.
size_t RoundSize(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20;
  if (bytes < (size_t(1) << 20)) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

bool IsHostPointer(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // an unregistered pointer is pageable host memory
    return true;
  }
  return a.type == cudaMemoryTypeHost || a.type == cudaMemoryTypeUnregistered;
}

class CudaStream final : public Stream {
 public:
  explicit CudaStream(int ordinal) : ordinal_(ordinal) {
    TERN_CUDA_OK(cudaSetDevice(ordinal_));
    // A blocking stream: ordered with the legacy default stream the kernels run on.
    TERN_CUDA_OK(cudaStreamCreate(&stream_));
  }
  ~CudaStream() override {
    cudaSetDevice(ordinal_);
    cudaStreamSynchronize(stream_);
    for (auto& [marker, ev] : events_) cudaEventDestroy(ev);
    cudaStreamDestroy(stream_);
  }
  void CopyAsync(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    TERN_CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  }
  void Enqueue(std::function<void()> fn) override {
    auto* f = new std::function<void()>(std::move(fn));
    TERN_CUDA_OK(cudaLaunchHostFunc(
        stream_,
        [](void* p) {
          auto* g = static_cast<std::function<void()>*>(p);
          (*g)();
          delete g;
        },
        f));
  }
  uint64_t Record() override {
    cudaEvent_t ev;
    TERN_CUDA_OK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    TERN_CUDA_OK(cudaEventRecord(ev, stream_));
    std::lock_guard<std::mutex> lock(mu_);
    events_.emplace_back(++recorded_, ev);
    return recorded_;
  }
  // Waits on the newest event at or before `marker` (stream order covers the older ones).
  void Wait(uint64_t marker) override {
    std::deque<std::pair<uint64_t, cudaEvent_t>> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (!events_.empty() && events_.front().first <= marker) {
        done.push_back(events_.front());
        events_.pop_front();
      }
    }
    if (done.empty()) return;  // already waited for
    TERN_CUDA_OK(cudaEventSynchronize(done.back().second));
    for (auto& [m, ev] : done) cudaEventDestroy(ev);
  }

 private:
  const int ordinal_;
  cudaStream_t stream_ = nullptr;
  std::mutex mu_;
  std::deque<std::pair<uint64_t, cudaEvent_t>> events_;
  uint64_t recorded_ = 0;
};

}  // namespace

CudaDevice::~CudaDevice() {
  cudaSetDevice(ordinal_);
  cudaDeviceSynchronize();
  std::lock_guard<std::mutex> lock(mu_);
  EmptyCacheLocked();
  for (auto& [p, size] : live_) cudaFree(p);  // leaked buffers: the device goes with them
  live_.clear();
}

void CudaDevice::Copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  TERN_CUDA_OK(cudaSetDevice(ordinal_));
  TERN_CUDA_OK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

void CudaDevice::Fill(void* dst, uint8_t value, size_t bytes) {
  if (bytes == 0) return;
  if (IsHostPointer(dst)) {
    std::memset(dst, value, bytes);
    return;
  }
  TERN_CUDA_OK(cudaSetDevice(ordinal_));
  TERN_CUDA_OK(cudaMemset(dst, value, bytes));
}

std::unique_ptr<Stream> CudaDevice::NewStream() { return std::make_unique<CudaStream>(ordinal_); }

void* CudaDevice::RawAllocate(size_t bytes, MemoryTier tier) {
  if (cudaSetDevice(ordinal_) != cudaSuccess) return nullptr;
  if (tier == MemoryTier::kHost) {
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  const size_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = cache_.find(size); it != cache_.end()) {
    void* p = it->second;
    cache_.erase(it);
    cached_ -= size;
    live_.emplace(p, size);
    return p;
  }
  void* p = nullptr;
  if (cudaMalloc(&p, size) != cudaSuccess) {
    cudaGetLastError();
    EmptyCacheLocked();  // give the cached blocks back and try once more
    if (cudaMalloc(&p, size) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
  }
  live_.emplace(p, size);
  return p;
}

void CudaDevice::RawFree(void* p, MemoryTier tier) {
  if (tier == MemoryTier::kHost) {
    cudaFreeHost(p);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  TERN_CHECK(it != live_.end()) << "freeing a pointer this CudaDevice did not allocate";
  cache_.emplace(it->second, p);
  cached_ += it->second;
  live_.erase(it);
}

size_t CudaDevice::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

void CudaDevice::EmptyCache() {
  std::lock_guard<std::mutex> lock(mu_);
  EmptyCacheLocked();
}

void CudaDevice::EmptyCacheLocked() {
  if (cache_.empty()) return;
  cudaSetDevice(ordinal_);
  cudaDeviceSynchronize();  // a freed block may still be read by queued work
  for (auto& [size, p] : cache_) cudaFree(p);
  cache_.clear();
  cached_ = 0;
}

absl::StatusOr<std::unique_ptr<Device>> CreateCudaDevice(int ordinal) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", cudaGetErrorString(e),
                                               " (", cudaGetErrorName(e), ")"));
  }
  if (count == 0) return absl::UnavailableError("no usable CUDA device: the driver reports none");
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", ordinal, " does not exist (", count, " found)"));
  }
  cudaDeviceProp prop{};
  if (cudaError_t s = cudaSetDevice(ordinal); s == cudaSuccess) {
    cudaGetDeviceProperties(&prop, ordinal);
  } else {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("CUDA device ", ordinal, " unusable: ", cudaGetErrorString(s)));
  }
  return std::unique_ptr<Device>(
      new CudaDevice(ordinal, absl::StrCat("cuda:", ordinal, " (", prop.name, ")")));
}

absl::StatusOr<std::unique_ptr<kernels::Ops<float>>> CreateCudaOps() {
  std::string error;
  auto ops = kernels::cuda::NewCudaOps(&error);
  if (ops == nullptr) return absl::UnavailableError(error);
  return ops;
}

}  // namespace tern
