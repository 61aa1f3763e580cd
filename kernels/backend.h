// The operation table: the kernels the model, the optimizer and ZeRO run, as one narrow
// interface a compute backend implements (kernels/cpu/cpu_ops.h forwards to kernels/cpu; a CUDA
// backend implements the same table). Pointers are to the backend's memory (Device, worker/core).
// Shapes and the accumulate/assign convention are the CPU kernels' (kernels/cpu/ops.h,
// kernels/README.md).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tern::kernels {

// Weight layouts: kOutIn is torch.nn.Linear's (OC,C); kInOut is HF GPT-2 Conv1D's (C,OC).
enum class WeightLayout { kOutIn, kInOut };

template <typename T>
class Ops {
 public:
  virtual ~Ops() = default;
  virtual const char* name() const = 0;

  virtual void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B,
                                 int Tn, int C, const int32_t* pos = nullptr) const = 0;
  virtual void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B,
                                  int Tn, int C, const int32_t* pos = nullptr) const = 0;
  virtual void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight,
                                 const T* bias, int N, int C, float eps) const = 0;
  virtual void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                                  const T* weight, const T* mean, const T* rstd, int N,
                                  int C) const = 0;
  virtual void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C,
                               float eps) const = 0;
  virtual void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                                const T* rstd, int N, int C) const = 0;
  virtual void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C,
                              int OC, WeightLayout layout) const = 0;
  virtual void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                               const T* weight, int N, int C, int OC,
                               WeightLayout layout) const = 0;
  virtual void rope_tables(T* cos, T* sin, int Tn, int HS, float theta) const = 0;
  virtual void rope_forward(T* qkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV,
                            int HS, const int32_t* pos = nullptr) const = 0;
  virtual void rope_backward(T* dqkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV,
                             int HS, const int32_t* pos = nullptr) const = 0;
  virtual void rope_forward_heads(T* qkv, const T* cos, const T* sin, int rows,
                                  const int32_t* head_table, int B, int Tn, int NH, int NKV, int HS,
                                  const int32_t* pos = nullptr) const = 0;
  virtual void chunked_attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int NH,
                                         int NKV, int HS) const = 0;
  virtual void chunked_attention_backward(T* dqkv, const T* dout, const T* out, const T* lse,
                                          const T* qkv, int B, int Tn, int NH, int NKV,
                                          int HS) const = 0;
  virtual void chunked_attention_pair_forward(T* out, T* lse, const T* qkv_q, int Tq, int q_offset,
                                              const T* qkv_kv, int Tk, int k_offset, int B, int NH,
                                              int NKV, int HS) const = 0;
  virtual void attention_lse_merge(T* out, T* lse, const T* out2, const T* lse2, int B, int Tn,
                                   int NH, int HS) const = 0;
  virtual void chunked_attention_pair_backward(T* dqkv_q, T* dqkv_kv, const T* dout, const T* out,
                                               const T* lse, const T* qkv_q, int Tq, int q_offset,
                                               const T* qkv_kv, int Tk, int k_offset, int B, int NH,
                                               int NKV, int HS) const = 0;
  virtual void gelu_forward(T* out, const T* inp, size_t n) const = 0;
  virtual void gelu_backward(T* dinp, const T* dout, const T* inp, size_t n) const = 0;
  virtual void swiglu_forward(T* out, const T* inp, int N, int F) const = 0;
  virtual void swiglu_backward(T* dinp, const T* dout, const T* inp, int N, int F) const = 0;
  virtual void residual_forward(T* out, const T* a, const T* b, size_t n) const = 0;
  virtual void residual_backward(T* da, T* db, const T* dout, size_t n) const = 0;
  virtual int crossentropy_softmax_forward(T* losses, T* probs, const T* logits,
                                           const int32_t* targets, int N, int V) const = 0;
  virtual void crossentropy_softmax_backward(T* dlogits, float dloss, const T* probs,
                                             const int32_t* targets, int N, int V) const = 0;
  virtual void adamw_update(T* params, const T* grads, T* m, T* v, size_t n, float lr, float beta1,
                            float beta2, float eps, float weight_decay, int64_t step) const = 0;
  virtual double sum_squares(const T* x, size_t n) const = 0;
  virtual void scale_inplace(T* x, float s, size_t n) const = 0;
};

// ZeRO++'s block quantization (kernels/cpu/quantize.h for the formats).
class QuantizeOps {
 public:
  virtual ~QuantizeOps() = default;
  virtual void quantize_int8(int8_t* q, float* scales, const float* x, size_t n,
                             size_t block) const = 0;
  virtual void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n,
                               size_t block) const = 0;
  virtual void quantize_int4(uint8_t* q, float* scales, const float* x, size_t n,
                             size_t block) const = 0;
  virtual void dequantize_int4(float* out, const uint8_t* q, const float* scales, size_t n,
                               size_t block) const = 0;
  virtual void dequantize_int4_add(float* out, const uint8_t* q, const float* scales, size_t n,
                                   size_t block) const = 0;
  virtual void dequant_sum_requant_int4(uint8_t* q, float* scales, const uint8_t* const* q_in,
                                        const float* const* s_in, int m, size_t n,
                                        size_t block) const = 0;
};

}  // namespace tern::kernels
