// The CUDA device (worker/core/device.h) and the Status-returning factories of the CUDA backend.
//
// CudaDevice: kDevice is GPU memory from cudaMalloc behind a caching allocator (freed blocks are
// kept by rounded size and reused; the base class's budget accounting counts the bytes asked
// for, exactly as on the CPU device, and the cache is released and the allocation retried when
// cudaMalloc runs out); kHost is pinned host memory (cudaMallocHost), so stream copies to and
// from it are asynchronous. Copy / Fill are cudaMemcpy / cudaMemset, ordered with the kernels
// of kernels/cuda (the legacy default stream). A Stream is a blocking cudaStream_t: CopyAsync is
// cudaMemcpyAsync, Enqueue a host callback (cudaLaunchHostFunc: the callback must not call
// CUDA), Record/Wait an event per marker.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/core/device.h"

namespace tern {

class CudaDevice final : public Device {
 public:
  ~CudaDevice() override;
  std::string_view name() const override { return name_; }
  int ordinal() const { return ordinal_; }

  void Copy(void* dst, const void* src, size_t bytes) override;
  void Fill(void* dst, uint8_t value, size_t bytes) override;
  std::unique_ptr<Stream> NewStream() override;

  // Device memory the caching allocator holds for reuse (freed, not yet returned to CUDA).
  size_t cached_bytes() const;
  // Returns every cached block to CUDA.
  void EmptyCache();

 protected:
  void* RawAllocate(size_t bytes, MemoryTier tier) override;
  void RawFree(void* p, MemoryTier tier) override;

 private:
  friend absl::StatusOr<std::unique_ptr<Device>> CreateCudaDevice(int ordinal);
  CudaDevice(int ordinal, std::string name) : ordinal_(ordinal), name_(std::move(name)) {}
  void EmptyCacheLocked();

  const int ordinal_;
  const std::string name_;
  mutable std::mutex mu_;
  std::unordered_map<void*, size_t> live_;  // device block -> its rounded size
  std::multimap<size_t, void*> cache_;      // rounded size -> free block
  size_t cached_ = 0;
};

// The CUDA device `ordinal`. UNAVAILABLE, with one line saying why, when there is no GPU or no
// usable driver (as on the CPU-only CI machines); INVALID_ARGUMENT for an ordinal past the
// device count.
absl::StatusOr<std::unique_ptr<Device>> CreateCudaDevice(int ordinal);

// The fp32 operation table on the current device (kernels/cuda/cuda_ops.h); UNAVAILABLE when
// cuBLAS cannot start.
absl::StatusOr<std::unique_ptr<kernels::Ops<float>>> CreateCudaOps();

}  // namespace tern
