// Internal to kernels/cuda: the error check and the launchers shared between the .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace tern::kernels::cuda {

inline void CheckCuda(cudaError_t e, const char* expr, const char* file, int line) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s:%d: %s failed: %s (%s)\n", file, line, expr, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    std::fflush(stderr);
    std::abort();
  }
}

#define TERN_CUDA_CHECK(expr) ::tern::kernels::cuda::CheckCuda((expr), #expr, __FILE__, __LINE__)
#define TERN_CUDA_LAUNCHED() TERN_CUDA_CHECK(cudaGetLastError())

// attention.cu (semantics: kernels/cpu/ops.h). All on the legacy default stream.
void AttentionPairForward(float* out, float* lse, const float* qkv_q, int Tq, int q_offset,
                          const float* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                          int HS);
void AttentionPairBackward(float* dqkv_q, float* dqkv_kv, const float* dout, const float* out,
                           const float* lse, const float* qkv_q, int Tq, int q_offset,
                           const float* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                           int HS);
void AttentionLseMerge(float* out, float* lse, const float* out2, const float* lse2, int B, int Tn,
                       int NH, int HS);

}  // namespace tern::kernels::cuda
