// Internal to kernels/cuda: warp and block reductions.
#pragma once

#include <cuda_runtime.h>

namespace tern::kernels::cuda {

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (kMax: the maximum) over the block, returned to every thread. blockDim.x is a multiple
// of 32, at most 1024. Safe to call repeatedly.
template <typename T, bool kMax = false>
__device__ T BlockReduce(T v) {
  __shared__ T sh[32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if constexpr (kMax) {
    v = WarpMax(v);
  } else {
    v = WarpSum(v);
  }
  __syncthreads();  // a previous call's readers are done with sh
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : (kMax ? T(-INFINITY) : T(0));
    if constexpr (kMax) {
      v = WarpMax(v);
    } else {
      v = WarpSum(v);
    }
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

}  // namespace tern::kernels::cuda
