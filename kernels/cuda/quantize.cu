// ZeRO++'s block quantizers on the GPU, the byte formats of kernels/cpu/quantize.cc: the same
// float operations in the same order with explicit rounding intrinsics, rintf for round half to
// even, so quantize / dequantize give the CPU's bytes and values exactly. The accumulating paths
// (dequantize_int4_add, the sums of dequant_sum_requant_int4) use a fused multiply-add, as the
// CPU build does where it contracts x * s + y (GCC's default with -march=native on FMA hardware);
// a CPU build that does not contract differs there by rounding only. One thread block per
// quantization block for the quantizers (absmax, then the codes); the dequantizers are elementwise.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"

namespace tern::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int Code(float x, float inv, float qmax) {
  float v = rintf(__fmul_rn(x, inv));
  v = fminf(fmaxf(v, -qmax), qmax);
  return static_cast<int>(v);
}

__device__ __forceinline__ float BlockAbsMax(const float* x, size_t n) {
  float m = 0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, fabsf(x[i]));
  return BlockReduce<float, true>(m);
}

__global__ void QuantizeInt8Kernel(int8_t* q, float* scales, const float* x, size_t block) {
  const size_t b = blockIdx.x;
  const float* xb = x + b * block;
  const float amax = BlockAbsMax(xb, block);
  const float inv = amax > 0 ? __fdiv_rn(127.0f, amax) : 0.0f;
  for (size_t i = threadIdx.x; i < block; i += blockDim.x)
    q[b * block + i] = static_cast<int8_t>(Code(xb[i], inv, 127.0f));
  if (threadIdx.x == 0) scales[b] = amax > 0 ? __fdiv_rn(amax, 127.0f) : 1.0f;
}

__global__ void QuantizeInt4Kernel(uint8_t* q, float* scales, const float* x, size_t block) {
  const size_t b = blockIdx.x;
  const float* xb = x + b * block;
  const float amax = BlockAbsMax(xb, block);
  const float inv = amax > 0 ? __fdiv_rn(7.0f, amax) : 0.0f;
  for (size_t i = threadIdx.x; i < block / 2; i += blockDim.x) {
    const int lo = Code(xb[2 * i], inv, 7.0f), hi = Code(xb[2 * i + 1], inv, 7.0f);
    q[b * block / 2 + i] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
  }
  if (threadIdx.x == 0) scales[b] = amax > 0 ? __fdiv_rn(amax, 7.0f) : 1.0f;
}

__global__ void DequantizeInt8Kernel(float* out, const int8_t* q, const float* scales, size_t n,
                                     size_t block) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    out[i] = __fmul_rn(static_cast<float>(q[i]), scales[i / block]);
}

__device__ __forceinline__ void Nibbles(uint8_t byte, float* lo, float* hi) {
  *lo = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(byte << 4)) >> 4);
  *hi = static_cast<float>(static_cast<int8_t>(byte) >> 4);
}

template <bool kAdd>
__global__ void DequantizeInt4Kernel(float* out, const uint8_t* q, const float* scales,
                                     size_t nbytes, size_t block) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < nbytes;
       i += size_t(gridDim.x) * blockDim.x) {
    const float s = scales[2 * i / block];
    float lo, hi;
    Nibbles(q[i], &lo, &hi);
    if constexpr (kAdd) {
      out[2 * i] = __fmaf_rn(lo, s, out[2 * i]);
      out[2 * i + 1] = __fmaf_rn(hi, s, out[2 * i + 1]);
    } else {
      out[2 * i] = __fmul_rn(lo, s);
      out[2 * i + 1] = __fmul_rn(hi, s);
    }
  }
}

// The sum over the m inputs of element pair i (byte i of the block), in input order as the CPU.
__device__ __forceinline__ void PairSum(const uint8_t* const* q_in, const float* const* s_in, int m,
                                        size_t b, size_t block, size_t i, float* lo, float* hi) {
  const size_t byte = b * block / 2 + i;
  float l, h;
  Nibbles(q_in[0][byte], &l, &h);
  float s = s_in[0][b];
  *lo = __fmul_rn(l, s);
  *hi = __fmul_rn(h, s);
  for (int j = 1; j < m; ++j) {
    Nibbles(q_in[j][byte], &l, &h);
    s = s_in[j][b];
    *lo = __fmaf_rn(l, s, *lo);
    *hi = __fmaf_rn(h, s, *hi);
  }
}

// One thread block per quantization block: the sums twice (absmax pass, then the codes), so
// no block-sized buffer is needed.
__global__ void DequantSumRequantKernel(uint8_t* q, float* scales, const uint8_t* const* q_in,
                                        const float* const* s_in, int m, size_t block) {
  const size_t b = blockIdx.x;
  float amax = 0;
  for (size_t i = threadIdx.x; i < block / 2; i += blockDim.x) {
    float lo, hi;
    PairSum(q_in, s_in, m, b, block, i, &lo, &hi);
    amax = fmaxf(amax, fmaxf(fabsf(lo), fabsf(hi)));
  }
  amax = BlockReduce<float, true>(amax);
  const float inv = amax > 0 ? __fdiv_rn(7.0f, amax) : 0.0f;
  for (size_t i = threadIdx.x; i < block / 2; i += blockDim.x) {
    float lo, hi;
    PairSum(q_in, s_in, m, b, block, i, &lo, &hi);
    const int cl = Code(lo, inv, 7.0f), ch = Code(hi, inv, 7.0f);
    q[b * block / 2 + i] = static_cast<uint8_t>((cl & 0x0F) | ((ch & 0x0F) << 4));
  }
  __syncthreads();  // every thread has read the input scales (scales may be one of them)
  if (threadIdx.x == 0) scales[b] = amax > 0 ? __fdiv_rn(amax, 7.0f) : 1.0f;
}

int Grid(size_t n) {
  return static_cast<int>(std::min<size_t>((n + kThreads - 1) / kThreads, size_t(1) << 20));
}

class CudaQuantizeOpsImpl final : public QuantizeOps {
 public:
  void quantize_int8(int8_t* q, float* scales, const float* x, size_t n,
                     size_t block) const override {
    if (n == 0) return;
    QuantizeInt8Kernel<<<static_cast<unsigned>(n / block), kThreads>>>(q, scales, x, block);
    TERN_CUDA_LAUNCHED();
  }
  void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n,
                       size_t block) const override {
    if (n == 0) return;
    DequantizeInt8Kernel<<<Grid(n), kThreads>>>(out, q, scales, n, block);
    TERN_CUDA_LAUNCHED();
  }
  void quantize_int4(uint8_t* q, float* scales, const float* x, size_t n,
                     size_t block) const override {
    if (n == 0) return;
    QuantizeInt4Kernel<<<static_cast<unsigned>(n / block), kThreads>>>(q, scales, x, block);
    TERN_CUDA_LAUNCHED();
  }
  void dequantize_int4(float* out, const uint8_t* q, const float* scales, size_t n,
                       size_t block) const override {
    if (n == 0) return;
    DequantizeInt4Kernel<false><<<Grid(n / 2), kThreads>>>(out, q, scales, n / 2, block);
    TERN_CUDA_LAUNCHED();
  }
  void dequantize_int4_add(float* out, const uint8_t* q, const float* scales, size_t n,
                           size_t block) const override {
    if (n == 0) return;
    DequantizeInt4Kernel<true><<<Grid(n / 2), kThreads>>>(out, q, scales, n / 2, block);
    TERN_CUDA_LAUNCHED();
  }
  // q_in and s_in are host arrays of device pointers: copied to stream-ordered scratch.
  void dequant_sum_requant_int4(uint8_t* q, float* scales, const uint8_t* const* q_in,
                                const float* const* s_in, int m, size_t n,
                                size_t block) const override {
    if (n == 0 || m <= 0) return;
    std::vector<const void*> ptrs(2 * static_cast<size_t>(m));
    for (int j = 0; j < m; ++j) {
      ptrs[j] = q_in[j];
      ptrs[m + j] = s_in[j];
    }
    void* dev = nullptr;
    const size_t bytes = ptrs.size() * sizeof(void*);
    TERN_CUDA_CHECK(cudaMallocAsync(&dev, bytes, 0));
    TERN_CUDA_CHECK(cudaMemcpyAsync(dev, ptrs.data(), bytes, cudaMemcpyHostToDevice, 0));
    auto* dq = static_cast<const uint8_t* const*>(dev);
    auto* ds = reinterpret_cast<const float* const*>(static_cast<const void* const*>(dev) + m);
    DequantSumRequantKernel<<<static_cast<unsigned>(n / block), kThreads>>>(q, scales, dq, ds, m,
                                                                            block);
    TERN_CUDA_LAUNCHED();
    // The host array must outlive the copy: wait for it before `ptrs` goes.
    TERN_CUDA_CHECK(cudaStreamSynchronize(0));
    TERN_CUDA_CHECK(cudaFreeAsync(dev, 0));
  }
};

}  // namespace

const QuantizeOps& CudaQuantizeOps() {
  static const CudaQuantizeOpsImpl ops;
  return ops;
}

}  // namespace tern::kernels::cuda
