// A host emulation of the CUDA subset kernels/cuda uses, for kernels_cuda_emulated_test: the
// .cu files, rewritten by to_host.py (launches become emu::Launch, dynamic shared memory a
// buffer), compile as C++ against this header. Blocks run one at a time, each CUDA thread on its
// own std::thread; __syncthreads and the warp shuffles are barriers; device memory is host
// memory; cuBLAS is a naive loop (cublas_v2.h). It checks the kernels' indexing, masking,
// reductions and warp-level logic on machines without a GPU; it says nothing about speed, and
// races show only where the emulated interleaving exposes them.
// CUDA thread, std::barrier for __syncthreads and per-warp exchanges for shuffles.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
using std::max;
using std::min;
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0, cudaErrorNotReady = 600 };
enum cudaMemcpyKind {
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDefault,
  cudaMemcpyDeviceToDevice
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
inline const char* cudaGetErrorString(cudaError_t) { return "emu"; }
inline const char* cudaGetErrorName(cudaError_t) { return "emu"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
// Memory: host memory, remembered by kind for cudaPointerGetAttributes.
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
  int device = 0;
};
namespace emu {
inline std::mutex g_mem_mu;
inline std::map<const void*, std::pair<size_t, cudaMemoryType>> g_allocs;
inline void* Alloc(size_t n, cudaMemoryType t) {
  void* p = std::malloc(n ? n : 1);
  std::lock_guard<std::mutex> lock(g_mem_mu);
  g_allocs[p] = {n, t};
  return p;
}
inline void Free(void* p) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    g_allocs.erase(p);
  }
  std::free(p);
}
}  // namespace emu
template <typename T>
cudaError_t cudaMalloc(T** p, size_t n) {
  *p = static_cast<T*>(emu::Alloc(n, cudaMemoryTypeDevice));
  return cudaSuccess;
}
template <typename T>
cudaError_t cudaMallocHost(T** p, size_t n) {
  *p = static_cast<T*>(emu::Alloc(n, cudaMemoryTypeHost));
  return cudaSuccess;
}
template <typename T>
cudaError_t cudaMallocAsync(T** p, size_t n, cudaStream_t) {
  return cudaMalloc(p, n);
}
inline cudaError_t cudaFree(void* p) {
  emu::Free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFreeHost(void* p) {
  emu::Free(p);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  emu::Free(p);
  return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  std::lock_guard<std::mutex> lock(emu::g_mem_mu);
  *a = cudaPointerAttributes();
  auto it = emu::g_allocs.upper_bound(p);
  if (it != emu::g_allocs.begin()) {
    --it;
    const auto* base = static_cast<const char*>(it->first);
    if (static_cast<const char*>(p) < base + it->second.first) a->type = it->second.second;
  }
  return cudaSuccess;
}
// Devices, streams and events: one device; work on a stream runs when it is issued.
struct cudaDeviceProp {
  char name[256] = "emulated";
  int major = 9, minor = 0;
};
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorNotReady; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  *p = cudaDeviceProp();
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new int(0);
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete static_cast<int*>(s);
  return cudaSuccess;
}
using cudaHostFn_t = void (*)(void*);
inline cudaError_t cudaLaunchHostFunc(cudaStream_t, cudaHostFn_t fn, void* data) {
  fn(data);
  return cudaSuccess;
}
using cudaEvent_t = int*;
constexpr unsigned cudaEventDisableTiming = 2;
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new int(0);
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  *e = 1;
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  return *e == 1 ? cudaSuccess : cudaErrorNotReady;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* d, int v, size_t n) {
  std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  std::memmove(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k,
                                   cudaStream_t) {
  return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
  std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fdiv_rn(float a, float b) {
  volatile float r = a / b;
  return r;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
template <typename T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
namespace emu {
inline std::vector<float> g_smem(1 << 18);
struct Block {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<double> slots;
};
inline Block* g_block = nullptr;
}  // namespace emu
inline void __syncthreads() { emu::g_block->all->arrive_and_wait(); }
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  const int t = threadIdx.x, w = t / 32, lane = t % 32;
  emu::g_block->slots[t] = static_cast<double>(v);
  emu::g_block->warp[w]->arrive_and_wait();
  T r = static_cast<T>(emu::g_block->slots[w * 32 + (src & 31)]);
  emu::g_block->warp[w]->arrive_and_wait();
  (void)lane;
  return r;
}
inline void __syncwarp() { emu::g_block->warp[threadIdx.x / 32]->arrive_and_wait(); }
template <typename T>
T __shfl_xor_sync(unsigned m, T v, int x) {
  return __shfl_sync(m, v, (threadIdx.x % 32) ^ x);
}
namespace emu {
struct Cfg {
  dim3 grid, block;
  size_t smem = 0;
  Cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), smem(s) {}
};
// One thread per CUDA thread of a block, reused for every block of the grid (blocks run one at
// a time). A thread that returns early drops out of its block's barriers, as an exited CUDA
// thread no longer counts for __syncthreads.
template <typename K, typename... A>
void Launch(Cfg c, K kernel, A... args) {
  const unsigned nt = c.block.x;
  const size_t nblocks = size_t(c.grid.x) * c.grid.y * c.grid.z;
  if (nblocks == 0) return;
  std::vector<Block> blocks(2);
  auto fresh = [&](Block& b) {
    b.all = std::make_unique<std::barrier<>>(nt);
    b.warp.clear();
    for (unsigned w = 0; w < (nt + 31) / 32; ++w)
      b.warp.push_back(std::make_unique<std::barrier<>>(std::min(32u, nt - 32 * w)));
    b.slots.assign(nt, 0);
  };
  size_t current = 0;
  fresh(blocks[0]);
  g_block = &blocks[0];
  auto next = [&]() noexcept {  // runs once per block, when every thread finished it
    ++current;
    if (current < nblocks) {
      fresh(blocks[current % 2]);
      std::fill(g_smem.begin(), g_smem.end(), std::nanf(""));
      g_block = &blocks[current % 2];
    }
  };
  std::fill(g_smem.begin(), g_smem.end(), std::nanf(""));
  std::barrier end(static_cast<std::ptrdiff_t>(nt), next);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < nt; ++t)
    ts.emplace_back([&, t] {
      threadIdx = dim3(t);
      blockDim = c.block;
      gridDim = c.grid;
      for (size_t blk = 0; blk < nblocks; ++blk) {
        Block* b = g_block;
        blockIdx =
            dim3(blk % c.grid.x, (blk / c.grid.x) % c.grid.y, blk / (size_t(c.grid.x) * c.grid.y));
        kernel(args...);
        b->all->arrive_and_drop();
        b->warp[t / 32]->arrive_and_drop();
        end.arrive_and_wait();
      }
    });
  for (auto& t : ts) t.join();
}
}  // namespace emu
