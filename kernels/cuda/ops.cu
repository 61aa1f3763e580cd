// The fp32 CUDA operation table (cuda_ops.h): elementwise, normalisation, embedding, rope,
// cross-entropy, optimizer and reduction kernels here, GEMMs through cuBLAS, attention in
// attention.cu. Semantics (shapes, = versus +=) are the CPU kernels' (kernels/cpu/ops.h).
// Deterministic except the scatters that accumulate with atomics (embedding_backward, the
// column sums of the norm and bias gradients), whose summation order varies from run to run.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.cuh"

namespace tern::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Rows per block of the column-sum kernels (each block adds its partial sums atomically).
constexpr int kColumnRows = 64;

int GridFor(size_t n) {
  return static_cast<int>(std::min<size_t>((n + kThreads - 1) / kThreads, size_t(1) << 20));
}

// Threads per block for a row kernel over C columns: a multiple of 32, at most 1024.
int RowThreads(int C) { return std::min(1024, std::max(32, (C + 31) / 32 * 32)); }

#define GRID_STRIDE(i, n)                                                 \
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n); \
       i += size_t(gridDim.x) * blockDim.x)

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- Embedding ------------------------------------------------------------------------
__global__ void EmbeddingForwardKernel(float* out, const int32_t* tokens, const float* wte,
                                       const float* wpe, int Tn, int C, const int32_t* pos,
                                       size_t total) {
  GRID_STRIDE(i, total) {
    const size_t n = i / C;
    const int c = static_cast<int>(i % C);
    float v = wte[static_cast<size_t>(tokens[n]) * C + c];
    if (wpe != nullptr) {
      const size_t p = pos != nullptr ? pos[n] : n % Tn;
      v += wpe[p * C + c];
    }
    out[i] = v;
  }
}

__global__ void EmbeddingBackwardKernel(float* dwte, float* dwpe, const float* dout,
                                        const int32_t* tokens, int Tn, int C, const int32_t* pos,
                                        size_t total) {
  GRID_STRIDE(i, total) {
    const size_t n = i / C;
    const int c = static_cast<int>(i % C);
    const float d = dout[i];
    atomicAdd(dwte + static_cast<size_t>(tokens[n]) * C + c, d);
    if (dwpe != nullptr) {
      const size_t p = pos != nullptr ? pos[n] : n % Tn;
      atomicAdd(dwpe + p * C + c, d);
    }
  }
}

// ---- Normalisation (one block per row) -------------------------------------------------
__global__ void LayernormForwardKernel(float* out, float* mean, float* rstd, const float* inp,
                                       const float* weight, const float* bias, int C, float eps) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  float* o = out + row * C;
  float s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
  const float m = BlockReduce(s) / C;
  float v = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) v += (x[c] - m) * (x[c] - m);
  const float r = 1.0f / sqrtf(BlockReduce(v) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = (x[c] - m) * r * weight[c] + bias[c];
  if (threadIdx.x == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

__global__ void LayernormBackwardKernel(float* dinp, const float* dout, const float* inp,
                                        const float* weight, const float* mean, const float* rstd,
                                        int C) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* d = dout + row * C;
  float* di = dinp + row * C;
  const float m = mean[row], r = rstd[row];
  float ds = 0, dx = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float dn = d[c] * weight[c];
    ds += dn;
    dx += dn * (x[c] - m) * r;
  }
  const float dmean = BlockReduce(ds) / C;
  const float dxmean = BlockReduce(dx) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float xhat = (x[c] - m) * r;
    di[c] = (d[c] * weight[c] - dmean - xhat * dxmean) * r;
  }
}

// dweight += sum over rows of dout * xhat (xhat from mean/rstd; mean null: rmsnorm's x * rstd),
// dbias += sum of dout (if non-null). Grid (columns, row chunks).
__global__ void NormColumnsKernel(float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* mean, const float* rstd, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int r0 = blockIdx.y * kColumnRows, r1 = min(N, r0 + kColumnRows);
  float sw = 0, sb = 0;
  for (int r = r0; r < r1; ++r) {
    const size_t i = static_cast<size_t>(r) * C + c;
    const float d = dout[i];
    const float xhat = mean != nullptr ? (inp[i] - mean[r]) * rstd[r] : inp[i] * rstd[r];
    sw += d * xhat;
    sb += d;
  }
  atomicAdd(dweight + c, sw);
  if (dbias != nullptr) atomicAdd(dbias + c, sb);
}

__global__ void BiasColumnsKernel(float* dbias, const float* dout, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int r0 = blockIdx.y * kColumnRows, r1 = min(N, r0 + kColumnRows);
  float sb = 0;
  for (int r = r0; r < r1; ++r) sb += dout[static_cast<size_t>(r) * C + c];
  atomicAdd(dbias + c, sb);
}

__global__ void RmsnormForwardKernel(float* out, float* rstd, const float* inp, const float* weight,
                                     int C, float eps) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  float* o = out + row * C;
  float ss = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) ss += x[c] * x[c];
  const float r = 1.0f / sqrtf(BlockReduce(ss) / C + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = x[c] * r * weight[c];
  if (threadIdx.x == 0) rstd[row] = r;
}

__global__ void RmsnormBackwardKernel(float* dinp, const float* dout, const float* inp,
                                      const float* weight, const float* rstd, int C) {
  const size_t row = blockIdx.x;
  const float* x = inp + row * C;
  const float* d = dout + row * C;
  float* di = dinp + row * C;
  const float r = rstd[row];
  float dot = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dot += d[c] * weight[c] * x[c];
  const float k = r * r * BlockReduce(dot) / C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) di[c] = r * (d[c] * weight[c] - x[c] * k);
}

// ---- Matmul helpers ----------------------------------------------------------------------
__global__ void BroadcastRowsKernel(float* out, const float* bias, int OC, size_t total) {
  GRID_STRIDE(i, total) out[i] = bias[i % OC];
}

// ---- Rope ----------------------------------------------------------------------------------
// With head_table (B, NH+NKV): head h of sequence b reads table head_table[b*(NH+NKV)+h] of
// `rows` rows (rope_forward_heads); else every head reads the one table.
__global__ void RopeKernel(float* qkv, const float* cos, const float* sin, int Tn, int NH, int NKV,
                           int HS, float sign, const int32_t* pos, const int32_t* head_table,
                           int rows, size_t total) {
  const int half = HS / 2, heads = NH + NKV;
  const size_t QKV = static_cast<size_t>(NH + 2 * NKV) * HS;
  GRID_STRIDE(idx, total) {
    const int i = static_cast<int>(idx % half);
    const size_t rest = idx / half;
    const int h = static_cast<int>(rest % heads);
    const size_t n = rest / heads;
    size_t t = pos != nullptr ? pos[n] : n % Tn;
    if (head_table != nullptr)
      t += static_cast<size_t>(head_table[(n / Tn) * heads + h]) * static_cast<size_t>(rows);
    const float c = cos[t * half + i], s = sign * sin[t * half + i];
    float* x1 = qkv + n * QKV + static_cast<size_t>(h) * HS + i;
    float* x2 = x1 + half;
    const float a = *x1, b = *x2;
    *x1 = a * c - b * s;
    *x2 = b * c + a * s;
  }
}

// ---- Activations, residual, optimizer, reductions --------------------------------------------
constexpr float kGeluA = 2 * 0.7978845608028654f;  // 2 sqrt(2/pi)
constexpr float kGeluB = kGeluA * 0.044715f;

__global__ void GeluForwardKernel(float* out, const float* inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    out[i] = x * Sigmoid(x * (kGeluA + kGeluB * x * x));
  }
}

__global__ void GeluBackwardKernel(float* dinp, const float* dout, const float* inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i], x2 = x * x;
    const float s = Sigmoid(x * (kGeluA + kGeluB * x2));
    dinp[i] = dout[i] * (s + x * s * (1.0f - s) * (kGeluA + 3 * kGeluB * x2));
  }
}

__global__ void SwigluForwardKernel(float* out, const float* inp, int F, size_t total) {
  GRID_STRIDE(i, total) {
    const size_t n = i / F, f = i % F;
    const float g = inp[n * 2 * F + f], u = inp[n * 2 * F + F + f];
    out[i] = g * Sigmoid(g) * u;
  }
}

__global__ void SwigluBackwardKernel(float* dinp, const float* dout, const float* inp, int F,
                                     size_t total) {
  GRID_STRIDE(i, total) {
    const size_t n = i / F, f = i % F;
    const float g = inp[n * 2 * F + f], u = inp[n * 2 * F + F + f], d = dout[i];
    const float s = Sigmoid(g), silu = g * s;
    dinp[n * 2 * F + f] = d * u * (s + silu * (1.0f - s));
    dinp[n * 2 * F + F + f] = d * silu;
  }
}

__global__ void ResidualForwardKernel(float* out, const float* a, const float* b, size_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void AccumulateKernel(float* da, const float* dout, size_t n) {
  GRID_STRIDE(i, n) da[i] += dout[i];
}

__global__ void ScaleKernel(float* x, float s, size_t n) { GRID_STRIDE(i, n) x[i] *= s; }

__global__ void AdamwKernel(float* params, const float* grads, float* m, float* v, size_t n,
                            float step_size, float bc2_sqrt, float decay, float b1, float b2,
                            float one_b1, float one_b2, float eps) {
  GRID_STRIDE(i, n) {
    const float g = grads[i];
    const float mi = b1 * m[i] + one_b1 * g;
    const float vi = b2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

__global__ void SumSquaresKernel(double* acc, const float* x, size_t n) {
  double s = 0;
  GRID_STRIDE(i, n) {
    const double xi = x[i];
    s += xi * xi;
  }
  s = BlockReduce(s);
  if (threadIdx.x == 0) atomicAdd(acc, s);
}

// ---- Cross-entropy (one block per row) ----------------------------------------------------
__global__ void CrossentropyForwardKernel(float* losses, float* probs, const float* logits,
                                          const int32_t* targets, int V, int* count) {
  const size_t row = blockIdx.x;
  const float* l = logits + row * V;
  float* p = probs + row * V;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, l[v]);
  mx = BlockReduce<float, true>(mx);
  float s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float e = expf(l[v] - mx);
    p[v] = e;
    s += e;
  }
  const float sum = BlockReduce(s);
  const float inv = 1.0f / sum;
  for (int v = threadIdx.x; v < V; v += blockDim.x) p[v] *= inv;
  if (threadIdx.x == 0) {
    const int32_t t = targets[row];
    if (t >= 0) {
      losses[row] = logf(sum) + mx - l[t];
      atomicAdd(count, 1);
    } else {
      losses[row] = 0;
    }
  }
}

__global__ void CrossentropyBackwardKernel(float* dlogits, float dloss, const float* probs,
                                           const int32_t* targets, int V, size_t total) {
  GRID_STRIDE(i, total) {
    const size_t n = i / V;
    const int v = static_cast<int>(i % V);
    const int32_t t = targets[n];
    if (t < 0) {
      dlogits[i] = 0;
    } else {
      dlogits[i] = probs[i] * dloss - (v == t ? dloss : 0.0f);
    }
  }
}

#undef GRID_STRIDE

void CheckCublas(cublasStatus_t s, const char* expr, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s:%d: %s failed: cuBLAS status %d\n", file, line, expr,
                 static_cast<int>(s));
    std::fflush(stderr);
    std::abort();
  }
}
#define TERN_CUBLAS_CHECK(expr) CheckCublas((expr), #expr, __FILE__, __LINE__)

class CudaOpsF32 final : public Ops<float> {
 public:
  CudaOpsF32(cublasHandle_t handle, int* count, double* acc)
      : handle_(handle), count_(count), acc_(acc) {}
  ~CudaOpsF32() override {
    cublasDestroy(handle_);
    cudaFree(count_);
    cudaFree(acc_);
  }
  const char* name() const override { return "cuda"; }

  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                         int B, int Tn, int C, const int32_t* pos) const override {
    const size_t total = static_cast<size_t>(B) * Tn * C;
    if (total == 0) return;
    EmbeddingForwardKernel<<<GridFor(total), kThreads>>>(out, tokens, wte, wpe, Tn, C, pos, total);
    TERN_CUDA_LAUNCHED();
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                          int Tn, int C, const int32_t* pos) const override {
    const size_t total = static_cast<size_t>(B) * Tn * C;
    if (total == 0) return;
    EmbeddingBackwardKernel<<<GridFor(total), kThreads>>>(dwte, dwpe, dout, tokens, Tn, C, pos,
                                                          total);
    TERN_CUDA_LAUNCHED();
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C,
                         float eps) const override {
    if (N == 0) return;
    LayernormForwardKernel<<<N, RowThreads(C)>>>(out, mean, rstd, inp, weight, bias, C, eps);
    TERN_CUDA_LAUNCHED();
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) const override {
    if (N == 0) return;
    LayernormBackwardKernel<<<N, RowThreads(C)>>>(dinp, dout, inp, weight, mean, rstd, C);
    TERN_CUDA_LAUNCHED();
    NormColumns(dweight, dbias, dout, inp, mean, rstd, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                       float eps) const override {
    if (N == 0) return;
    RmsnormForwardKernel<<<N, RowThreads(C)>>>(out, rstd, inp, weight, C, eps);
    TERN_CUDA_LAUNCHED();
  }
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                        const float* weight, const float* rstd, int N, int C) const override {
    if (N == 0) return;
    RmsnormBackwardKernel<<<N, RowThreads(C)>>>(dinp, dout, inp, weight, rstd, C);
    TERN_CUDA_LAUNCHED();
    NormColumns(dweight, nullptr, dout, inp, nullptr, rstd, N, C);
  }

  // kOutIn: W (OC,C), out = inp @ W^T.  kInOut: W (C,OC), out = inp @ W.
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int C, int OC, WeightLayout layout) const override {
    float beta = 0;
    if (bias != nullptr) {
      const size_t total = static_cast<size_t>(N) * OC;
      if (total > 0) {
        BroadcastRowsKernel<<<GridFor(total), kThreads>>>(out, bias, OC, total);
        TERN_CUDA_LAUNCHED();
      }
      beta = 1;
    }
    if (layout == WeightLayout::kOutIn) {
      Gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
    } else {
      Gemm(false, false, N, OC, C, 1.0f, inp, C, weight, OC, beta, out, OC);
    }
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC,
                       WeightLayout layout) const override {
    if (layout == WeightLayout::kOutIn) {
      if (dinp != nullptr) Gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 0.0f, dinp, C);
      Gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    } else {
      if (dinp != nullptr) Gemm(false, true, N, C, OC, 1.0f, dout, OC, weight, OC, 0.0f, dinp, C);
      Gemm(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
    }
    if (dbias != nullptr && N > 0 && OC > 0) {
      const dim3 grid((OC + kThreads - 1) / kThreads, (N + kColumnRows - 1) / kColumnRows);
      BiasColumnsKernel<<<grid, kThreads>>>(dbias, dout, N, OC);
      TERN_CUDA_LAUNCHED();
    }
  }

  // The tables are computed on the host in double (as the CPU kernel does) and copied.
  void rope_tables(float* cos, float* sin, int Tn, int HS, float theta) const override {
    const int half = HS / 2;
    std::vector<float> c(static_cast<size_t>(Tn) * half), s(c.size());
    for (int i = 0; i < half; ++i) {
      const double inv_freq = 1.0 / std::pow(static_cast<double>(theta), 2.0 * i / HS);
      for (int t = 0; t < Tn; ++t) {
        const double a = t * inv_freq;
        c[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(a));
        s[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(a));
      }
    }
    if (c.empty()) return;
    TERN_CUDA_CHECK(cudaMemcpy(cos, c.data(), c.size() * sizeof(float), cudaMemcpyHostToDevice));
    TERN_CUDA_CHECK(cudaMemcpy(sin, s.data(), s.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  void rope_forward(float* qkv, const float* cos, const float* sin, int B, int Tn, int NH, int NKV,
                    int HS, const int32_t* pos) const override {
    Rope(qkv, cos, sin, B, Tn, NH, NKV, HS, 1.0f, pos);
  }
  void rope_backward(float* dqkv, const float* cos, const float* sin, int B, int Tn, int NH,
                     int NKV, int HS, const int32_t* pos) const override {
    Rope(dqkv, cos, sin, B, Tn, NH, NKV, HS, -1.0f, pos);
  }
  void rope_forward_heads(float* qkv, const float* cos, const float* sin, int rows,
                          const int32_t* head_table, int B, int Tn, int NH, int NKV, int HS,
                          const int32_t* pos) const override {
    Rope(qkv, cos, sin, B, Tn, NH, NKV, HS, 1.0f, pos, head_table, rows);
  }

  void chunked_attention_forward(float* out, float* lse, const float* qkv, int B, int Tn, int NH,
                                 int NKV, int HS) const override {
    AttentionPairForward(out, lse, qkv, Tn, 0, qkv, Tn, 0, B, NH, NKV, HS);
  }
  void chunked_attention_backward(float* dqkv, const float* dout, const float* out,
                                  const float* lse, const float* qkv, int B, int Tn, int NH,
                                  int NKV, int HS) const override {
    const size_t n = static_cast<size_t>(B) * Tn * (NH + 2 * NKV) * HS;
    if (n == 0) return;
    TERN_CUDA_CHECK(cudaMemsetAsync(dqkv, 0, n * sizeof(float), 0));
    AttentionPairBackward(dqkv, dqkv, dout, out, lse, qkv, Tn, 0, qkv, Tn, 0, B, NH, NKV, HS);
  }
  void chunked_attention_pair_forward(float* out, float* lse, const float* qkv_q, int Tq,
                                      int q_offset, const float* qkv_kv, int Tk, int k_offset,
                                      int B, int NH, int NKV, int HS) const override {
    AttentionPairForward(out, lse, qkv_q, Tq, q_offset, qkv_kv, Tk, k_offset, B, NH, NKV, HS);
  }
  void attention_lse_merge(float* out, float* lse, const float* out2, const float* lse2, int B,
                           int Tn, int NH, int HS) const override {
    AttentionLseMerge(out, lse, out2, lse2, B, Tn, NH, HS);
  }
  void chunked_attention_pair_backward(float* dqkv_q, float* dqkv_kv, const float* dout,
                                       const float* out, const float* lse, const float* qkv_q,
                                       int Tq, int q_offset, const float* qkv_kv, int Tk,
                                       int k_offset, int B, int NH, int NKV,
                                       int HS) const override {
    AttentionPairBackward(dqkv_q, dqkv_kv, dout, out, lse, qkv_q, Tq, q_offset, qkv_kv, Tk,
                          k_offset, B, NH, NKV, HS);
  }

  void gelu_forward(float* out, const float* inp, size_t n) const override {
    if (n == 0) return;
    GeluForwardKernel<<<GridFor(n), kThreads>>>(out, inp, n);
    TERN_CUDA_LAUNCHED();
  }
  void gelu_backward(float* dinp, const float* dout, const float* inp, size_t n) const override {
    if (n == 0) return;
    GeluBackwardKernel<<<GridFor(n), kThreads>>>(dinp, dout, inp, n);
    TERN_CUDA_LAUNCHED();
  }
  void swiglu_forward(float* out, const float* inp, int N, int F) const override {
    const size_t total = static_cast<size_t>(N) * F;
    if (total == 0) return;
    SwigluForwardKernel<<<GridFor(total), kThreads>>>(out, inp, F, total);
    TERN_CUDA_LAUNCHED();
  }
  void swiglu_backward(float* dinp, const float* dout, const float* inp, int N,
                       int F) const override {
    const size_t total = static_cast<size_t>(N) * F;
    if (total == 0) return;
    SwigluBackwardKernel<<<GridFor(total), kThreads>>>(dinp, dout, inp, F, total);
    TERN_CUDA_LAUNCHED();
  }
  void residual_forward(float* out, const float* a, const float* b, size_t n) const override {
    if (n == 0) return;
    ResidualForwardKernel<<<GridFor(n), kThreads>>>(out, a, b, n);
    TERN_CUDA_LAUNCHED();
  }
  void residual_backward(float* da, float* db, const float* dout, size_t n) const override {
    if (n == 0) return;
    if (da != nullptr) {
      AccumulateKernel<<<GridFor(n), kThreads>>>(da, dout, n);
      TERN_CUDA_LAUNCHED();
    }
    if (db != nullptr) {
      AccumulateKernel<<<GridFor(n), kThreads>>>(db, dout, n);
      TERN_CUDA_LAUNCHED();
    }
  }
  int crossentropy_softmax_forward(float* losses, float* probs, const float* logits,
                                   const int32_t* targets, int N, int V) const override {
    if (N == 0) return 0;
    std::lock_guard<std::mutex> lock(mu_);
    TERN_CUDA_CHECK(cudaMemsetAsync(count_, 0, sizeof(int), 0));
    CrossentropyForwardKernel<<<N, RowThreads(V)>>>(losses, probs, logits, targets, V, count_);
    TERN_CUDA_LAUNCHED();
    int count = 0;
    TERN_CUDA_CHECK(cudaMemcpy(&count, count_, sizeof(int), cudaMemcpyDeviceToHost));
    return count;
  }
  void crossentropy_softmax_backward(float* dlogits, float dloss, const float* probs,
                                     const int32_t* targets, int N, int V) const override {
    const size_t total = static_cast<size_t>(N) * V;
    if (total == 0) return;
    CrossentropyBackwardKernel<<<GridFor(total), kThreads>>>(dlogits, dloss, probs, targets, V,
                                                             total);
    TERN_CUDA_LAUNCHED();
  }
  // torch.optim.AdamW's formula; the constants in double on the host, as the CPU kernel.
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay,
                    int64_t step) const override {
    if (n == 0) return;
    const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
    AdamwKernel<<<GridFor(n), kThreads>>>(
        params, grads, m, v, n, static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
        static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay), beta1, beta2,
        static_cast<float>(1.0 - beta1), static_cast<float>(1.0 - beta2), eps);
    TERN_CUDA_LAUNCHED();
  }
  double sum_squares(const float* x, size_t n) const override {
    if (n == 0) return 0;
    std::lock_guard<std::mutex> lock(mu_);
    TERN_CUDA_CHECK(cudaMemsetAsync(acc_, 0, sizeof(double), 0));
    SumSquaresKernel<<<std::min(GridFor(n), 1024), kThreads>>>(acc_, x, n);
    TERN_CUDA_LAUNCHED();
    double acc = 0;
    TERN_CUDA_CHECK(cudaMemcpy(&acc, acc_, sizeof(double), cudaMemcpyDeviceToHost));
    return acc;
  }
  void scale_inplace(float* x, float s, size_t n) const override {
    if (n == 0) return;
    ScaleKernel<<<GridFor(n), kThreads>>>(x, s, n);
    TERN_CUDA_LAUNCHED();
  }

 private:
  // Row-major C (M,N) = alpha op(A) op(B) + beta C, as kernels/cpu/gemm.h. cuBLAS is
  // column-major: the row-major C is its C^T = op(B)^T op(A)^T, so B goes first.
  void Gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
            const float* B, int ldb, float beta, float* C, int ldc) const {
    if (M == 0 || N == 0) return;
    TERN_CUBLAS_CHECK(cublasSgemm(handle_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                                  &beta, C, ldc));
  }
  void NormColumns(float* dweight, float* dbias, const float* dout, const float* inp,
                   const float* mean, const float* rstd, int N, int C) const {
    const dim3 grid((C + kThreads - 1) / kThreads, (N + kColumnRows - 1) / kColumnRows);
    NormColumnsKernel<<<grid, kThreads>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
    TERN_CUDA_LAUNCHED();
  }
  void Rope(float* qkv, const float* cos, const float* sin, int B, int Tn, int NH, int NKV, int HS,
            float sign, const int32_t* pos, const int32_t* head_table = nullptr,
            int rows = 0) const {
    const size_t total = static_cast<size_t>(B) * Tn * (NH + NKV) * (HS / 2);
    if (total == 0) return;
    RopeKernel<<<GridFor(total), kThreads>>>(qkv, cos, sin, Tn, NH, NKV, HS, sign, pos, head_table,
                                             rows, total);
    TERN_CUDA_LAUNCHED();
  }

  cublasHandle_t handle_;
  int* count_;             // crossentropy_softmax_forward's counter (device)
  double* acc_;            // sum_squares's accumulator (device)
  mutable std::mutex mu_;  // guards count_ and acc_
};

}  // namespace

std::unique_ptr<Ops<float>> NewCudaOps(std::string* error) {
  int* count = nullptr;
  double* acc = nullptr;
  cudaError_t e = cudaMalloc(&count, sizeof(int));
  if (e == cudaSuccess) e = cudaMalloc(&acc, sizeof(double));
  if (e != cudaSuccess) {
    cudaFree(count);
    cudaGetLastError();
    if (error != nullptr) *error = std::string("CUDA: ") + cudaGetErrorString(e);
    return nullptr;
  }
  cublasHandle_t handle = nullptr;
  const cublasStatus_t s = cublasCreate(&handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cudaFree(count);
    cudaFree(acc);
    if (error != nullptr)
      *error = "cuBLAS: cublasCreate failed with status " + std::to_string(static_cast<int>(s));
    return nullptr;
  }
  // Plain fp32 GEMMs (no TF32), so the table matches the CPU's fp32 results.
  cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);
  cublasSetStream(handle, 0);
  return std::make_unique<CudaOpsF32>(handle, count, acc);
}

}  // namespace tern::kernels::cuda
