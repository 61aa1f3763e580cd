// The CPU operation table: each entry forwards to the kernel of the same name.
#include "kernels/cpu/cpu_ops.h"

#include "kernels/cpu/ops.h"
#include "kernels/cpu/quantize.h"

namespace tern::kernels {

namespace {

template <typename T>
class CpuOpsImpl final : public Ops<T> {
 public:
  const char* name() const override { return "cpu"; }
  void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int Tn,
                         int C, const int32_t* pos) const override {
    kernels::embedding_forward(out, tokens, wte, wpe, B, Tn, C, pos);
  }
  void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B, int Tn,
                          int C, const int32_t* pos) const override {
    kernels::embedding_backward(dwte, dwpe, dout, tokens, B, Tn, C, pos);
  }
  void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                         int N, int C, float eps) const override {
    kernels::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
  }
  void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp,
                          const T* weight, const T* mean, const T* rstd, int N,
                          int C) const override {
    kernels::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C,
                       float eps) const override {
    kernels::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
  }
  void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                        const T* rstd, int N, int C) const override {
    kernels::rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
  }
  void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC,
                      WeightLayout layout) const override {
    kernels::matmul_forward(out, inp, weight, bias, N, C, OC, layout);
  }
  void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                       int N, int C, int OC, WeightLayout layout) const override {
    kernels::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC, layout);
  }
  void rope_tables(T* cos, T* sin, int Tn, int HS, float theta) const override {
    kernels::rope_tables(cos, sin, Tn, HS, theta);
  }
  void rope_forward(T* qkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                    const int32_t* pos) const override {
    kernels::rope_forward(qkv, cos, sin, B, Tn, NH, NKV, HS, pos);
  }
  void rope_backward(T* dqkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                     const int32_t* pos) const override {
    kernels::rope_backward(dqkv, cos, sin, B, Tn, NH, NKV, HS, pos);
  }
  void rope_forward_heads(T* qkv, const T* cos, const T* sin, int rows, const int32_t* head_table,
                          int B, int Tn, int NH, int NKV, int HS,
                          const int32_t* pos) const override {
    kernels::rope_forward_heads(qkv, cos, sin, rows, head_table, B, Tn, NH, NKV, HS, pos);
  }
  void chunked_attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int NH, int NKV,
                                 int HS) const override {
    kernels::chunked_attention_forward(out, lse, qkv, B, Tn, NH, NKV, HS);
  }
  void chunked_attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                                  int B, int Tn, int NH, int NKV, int HS) const override {
    kernels::chunked_attention_backward(dqkv, dout, out, lse, qkv, B, Tn, NH, NKV, HS);
  }
  void chunked_attention_pair_forward(T* out, T* lse, const T* qkv_q, int Tq, int q_offset,
                                      const T* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                                      int HS) const override {
    kernels::chunked_attention_pair_forward(out, lse, qkv_q, Tq, q_offset, qkv_kv, Tk, k_offset, B,
                                            NH, NKV, HS);
  }
  void attention_lse_merge(T* out, T* lse, const T* out2, const T* lse2, int B, int Tn, int NH,
                           int HS) const override {
    kernels::attention_lse_merge(out, lse, out2, lse2, B, Tn, NH, HS);
  }
  void chunked_attention_pair_backward(T* dqkv_q, T* dqkv_kv, const T* dout, const T* out,
                                       const T* lse, const T* qkv_q, int Tq, int q_offset,
                                       const T* qkv_kv, int Tk, int k_offset, int B, int NH,
                                       int NKV, int HS) const override {
    kernels::chunked_attention_pair_backward(dqkv_q, dqkv_kv, dout, out, lse, qkv_q, Tq, q_offset,
                                             qkv_kv, Tk, k_offset, B, NH, NKV, HS);
  }
  void gelu_forward(T* out, const T* inp, size_t n) const override {
    kernels::gelu_forward(out, inp, n);
  }
  void gelu_backward(T* dinp, const T* dout, const T* inp, size_t n) const override {
    kernels::gelu_backward(dinp, dout, inp, n);
  }
  void swiglu_forward(T* out, const T* inp, int N, int F) const override {
    kernels::swiglu_forward(out, inp, N, F);
  }
  void swiglu_backward(T* dinp, const T* dout, const T* inp, int N, int F) const override {
    kernels::swiglu_backward(dinp, dout, inp, N, F);
  }
  void residual_forward(T* out, const T* a, const T* b, size_t n) const override {
    kernels::residual_forward(out, a, b, n);
  }
  void residual_backward(T* da, T* db, const T* dout, size_t n) const override {
    kernels::residual_backward(da, db, dout, n);
  }
  int crossentropy_softmax_forward(T* losses, T* probs, const T* logits, const int32_t* targets,
                                   int N, int V) const override {
    return kernels::crossentropy_softmax_forward(losses, probs, logits, targets, N, V);
  }
  void crossentropy_softmax_backward(T* dlogits, float dloss, const T* probs,
                                     const int32_t* targets, int N, int V) const override {
    kernels::crossentropy_softmax_backward(dlogits, dloss, probs, targets, N, V);
  }
  void adamw_update(T* params, const T* grads, T* m, T* v, size_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, int64_t step) const override {
    kernels::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, step);
  }
  double sum_squares(const T* x, size_t n) const override { return kernels::sum_squares(x, n); }
  void scale_inplace(T* x, float s, size_t n) const override { kernels::scale_inplace(x, s, n); }
};

class CpuQuantizeOpsImpl final : public QuantizeOps {
 public:
  void quantize_int8(int8_t* q, float* scales, const float* x, size_t n,
                     size_t block) const override {
    kernels::quantize_int8(q, scales, x, n, block);
  }
  void dequantize_int8(float* out, const int8_t* q, const float* scales, size_t n,
                       size_t block) const override {
    kernels::dequantize_int8(out, q, scales, n, block);
  }
  void quantize_int4(uint8_t* q, float* scales, const float* x, size_t n,
                     size_t block) const override {
    kernels::quantize_int4(q, scales, x, n, block);
  }
  void dequantize_int4(float* out, const uint8_t* q, const float* scales, size_t n,
                       size_t block) const override {
    kernels::dequantize_int4(out, q, scales, n, block);
  }
  void dequantize_int4_add(float* out, const uint8_t* q, const float* scales, size_t n,
                           size_t block) const override {
    kernels::dequantize_int4_add(out, q, scales, n, block);
  }
  void dequant_sum_requant_int4(uint8_t* q, float* scales, const uint8_t* const* q_in,
                                const float* const* s_in, int m, size_t n,
                                size_t block) const override {
    kernels::dequant_sum_requant_int4(q, scales, q_in, s_in, m, n, block);
  }
};

}  // namespace

template <typename T>
const Ops<T>& CpuOps() {
  static const CpuOpsImpl<T> ops;
  return ops;
}
template const Ops<float>& CpuOps<float>();
template const Ops<double>& CpuOps<double>();

const QuantizeOps& CpuQuantizeOps() {
  static const CpuQuantizeOpsImpl ops;
  return ops;
}

}  // namespace tern::kernels
