// CPU kernels: forward/backward pairs over raw pointers (see kernels/README.md for the shape
// letters and the accumulate/assign convention). Instantiated for float and double.
// Every *_backward takes: outputs (d-gradients, scratch), the upstream gradient (dout), inputs
// and saved activations, shape ints (kernels/README.md, "Backward argument order").
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace tern::kernels {

// ---- Embedding -------------------------------------------------------------------------
// out (B,T,C) = wte[tokens[b,t]] + wpe[p] (wpe may be null: no learned positions), p = t, or
// pos[b*T + t] when pos (B,T) is given (a sequence shard, a permuted chunk, a KV cache).
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int Tn,
                       int C, const int32_t* pos = nullptr);
// dwte (V,C) += scatter of dout; dwpe (max positions,C) += per position (if non-null).
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B, int Tn,
                        int C, const int32_t* pos = nullptr);

// ---- Normalisation ---------------------------------------------------------------------
// out (N,C) = (inp - mean) * rstd * weight + bias; saves mean (N), rstd (N).
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int N, int C, float eps);
// dinp = ; dweight += ; dbias +=
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int N, int C);
// out (N,C) = inp * rstd * weight, rstd = 1/sqrt(mean(inp^2) + eps); saves rstd (N).
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, int N, int C, float eps);
template <typename T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, int N, int C);

// ---- Matmul (BLAS) ---------------------------------------------------------------------
// WeightLayout (kernels/backend.h): kOutIn is torch.nn.Linear's (OC,C); kInOut is Conv1D's.
// out (N,OC) = inp (N,C) @ W + bias (OC) (bias may be null).
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC,
                    WeightLayout layout);
// dinp (N,C) = dout @ W^T (skipped if dinp null); dweight += ; dbias += (if non-null).
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int N, int C, int OC, WeightLayout layout);

// ---- Rotary position embedding (HF Llama "rotate_half" convention) ----------------------
// cos, sin (T, HS/2): angle(t, i) = t * theta^(-2i/HS).
template <typename T>
void rope_tables(T* cos, T* sin, int Tn, int HS, float theta);
// In place on the q and k heads of qkv (B,T,QKV): x[i], x[i+HS/2] rotated by angle(p,i), p the
// token's position: pos[b*T + t] when pos (B,T) is given (a permuted or offset chunk, a KV
// cache; the tables must cover it), else t. v heads are untouched.
template <typename T>
void rope_forward(T* qkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                  const int32_t* pos = nullptr);
// In place on dqkv: applies the inverse rotation to the q and k parts.
template <typename T>
void rope_backward(T* dqkv, const T* cos, const T* sin, int B, int Tn, int NH, int NKV, int HS,
                   const int32_t* pos = nullptr);
// rope_forward with a table per head (Ms-PoE's per-head position scaling): the cos/sin tables
// are `tables` stacked (rows, HS/2) tables, table k's row p at (k * rows + p) * HS/2; head h of
// sequence b (q heads 0..NH-1, then the NKV k heads) rotates with table head_table[b*(NH+NKV)+h]
// (head_table (B, NH+NKV), each in [0, tables)). Same positions as rope_forward; rows must cover
// them. With every head on a table equal to rope_forward's, the result is bit-identical to it.
template <typename T>
void rope_forward_heads(T* qkv, const T* cos, const T* sin, int rows, const int32_t* head_table,
                        int B, int Tn, int NH, int NKV, int HS, const int32_t* pos = nullptr);

// ---- Causal self-attention with grouped-query heads -------------------------------------
// qkv (B,T,QKV): per token NH query heads, then NKV key heads, then NKV value heads.
// Query head h uses kv head h / (NH/NKV). Scale 1/sqrt(HS).
// out (B,T,NH*HS); att (B,NH,T,T) saves the softmax probabilities (entries above the
// diagonal are left unspecified).
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int B, int Tn, int NH, int NKV, int HS);
// dqkv (B,T,QKV) = ; scratch must hold attention_scratch_elems(...) elements (split per
// thread; pass NumThreads()). The size covers at least omp_get_num_procs() threads and the
// backward never uses more threads than that, so raising the thread count later is safe.
template <typename T>
void attention_backward(T* dqkv, T* scratch, const T* dout, const T* qkv, const T* att, int B,
                        int Tn, int NH, int NKV, int HS);
size_t attention_scratch_elems(int B, int Tn, int NH, int NKV, int HS, int threads);

// Chunked causal attention (online softmax over 64-key blocks; memory linear in T, no (T, T)
// matrix): the same result as attention_forward, keeping per row only the log-sum-exp of its
// scaled scores. out (B,T,NH*HS) =; lse (B,NH,T) =.
template <typename T>
void chunked_attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int NH, int NKV,
                               int HS);
// dqkv (B,T,QKV) = from dout (B,T,NH*HS) and the forward's out and lse (recomputing the
// probabilities per block).
template <typename T>
void chunked_attention_backward(T* dqkv, const T* dout, const T* out, const T* lse, const T* qkv,
                                int B, int Tn, int NH, int NKV, int HS);
// Chunk pairs (FPDT, a KV cache): queries of qkv_q (B,Tq,QKV) at positions q_offset + i attend
// to the keys/values of qkv_kv (B,Tk,QKV) at positions k_offset + j, key j visible to query i
// when k_offset + j <= q_offset + i. out (B,Tq,NH*HS) =; lse (B,NH,Tq) = (-inf, and out 0, for
// a row that sees no key of the pair). The parts of one query chunk over several key chunks
// combine with attention_lse_merge.
template <typename T>
void chunked_attention_pair_forward(T* out, T* lse, const T* qkv_q, int Tq, int q_offset,
                                    const T* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                                    int HS);
// (out, lse) := the attention over the keys of both parts, from (out, lse) and (out2, lse2) over
// two disjoint key sets of the same queries. Shapes as chunked_attention_forward's (T = Tq).
template <typename T>
void attention_lse_merge(T* out, T* lse, const T* out2, const T* lse2, int B, int Tn, int NH,
                         int HS);
// Backward of one chunk pair given the query chunk's final out and lse (over all its key
// chunks): dQ of the query chunk accumulates into dqkv_q (B,Tq,QKV), dK and dV of the key chunk
// into dqkv_kv (B,Tk,QKV) (+=, so a chunk's gradient sums over its pairs).
template <typename T>
void chunked_attention_pair_backward(T* dqkv_q, T* dqkv_kv, const T* dout, const T* out,
                                     const T* lse, const T* qkv_q, int Tq, int q_offset,
                                     const T* qkv_kv, int Tk, int k_offset, int B, int NH, int NKV,
                                     int HS);

// ---- Activations -----------------------------------------------------------------------
// GELU, tanh approximation (HF "gelu_new"). out (N) = gelu(inp).
template <typename T>
void gelu_forward(T* out, const T* inp, size_t n);
template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, size_t n);
// SwiGLU: inp (N, 2F) holds [gate | up] per row; out (N,F) = silu(gate) * up.
template <typename T>
void swiglu_forward(T* out, const T* inp, int N, int F);
template <typename T>
void swiglu_backward(T* dinp, const T* dout, const T* inp, int N, int F);

// ---- Residual --------------------------------------------------------------------------
// out = a + b.
template <typename T>
void residual_forward(T* out, const T* a, const T* b, size_t n);
// ACCUMULATES: da += dout; db += dout (either may be null).
template <typename T>
void residual_backward(T* da, T* db, const T* dout, size_t n);

// ---- Fused softmax + cross-entropy -----------------------------------------------------
// logits (N,V); targets (N), entries < 0 are ignored (loss 0). losses (N) = -log p[target];
// probs (N,V) = softmax(logits). Returns the number of counted (non-ignored) rows.
template <typename T>
int crossentropy_softmax_forward(T* losses, T* probs, const T* logits, const int32_t* targets,
                                 int N, int V);
// dlogits (N,V) = (probs - onehot(target)) * dloss for counted rows, 0 for ignored rows.
// dloss is the gradient of the total loss w.r.t. each row's loss (e.g. 1/count for a mean).
template <typename T>
void crossentropy_softmax_backward(T* dlogits, float dloss, const T* probs, const int32_t* targets,
                                   int N, int V);

// ---- Optimizer -------------------------------------------------------------------------
// AdamW with bias correction over n elements; `step` is 1-based. weight_decay is decoupled:
// p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p).
template <typename T>
void adamw_update(T* params, const T* grads, T* m, T* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step);
// Sum of squares (accumulated in double) of x[0..n).
template <typename T>
double sum_squares(const T* x, size_t n);
// x *= s.
template <typename T>
void scale_inplace(T* x, float s, size_t n);

}  // namespace tern::kernels
