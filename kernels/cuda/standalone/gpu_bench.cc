// tern-gpu-bench: one training step (forward, backward, AdamW) of a Llama-shaped decoder run
// through the CUDA operation table (kernels/cuda), fp32: RMSNorm, fused q|k|v projection (GQA),
// rope, causal chunked attention, output projection, SwiGLU MLP, untied LM head, cross-entropy.
// Also times one large GEMM and the attention kernels alone. Ends with one JSON line.
//   tern-gpu-bench [--layers 4] [--hidden 2048] [--heads 16] [--kv-heads 8] [--ffn 5632]
//                  [--vocab 32000] [--batch 4] [--seq 1024] [--steps 5]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace {

using tern::kernels::Ops;
using tern::kernels::WeightLayout;
constexpr WeightLayout kL = WeightLayout::kOutIn;

struct Config {
  int L = 4, C = 2048, NH = 16, NKV = 8, F = 5632, V = 32000, B = 4, T = 1024, steps = 5;
};

float* Alloc(size_t n) {
  float* p = nullptr;
  TERN_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(float)));
  return p;
}

void Randomize(float* d, size_t n, float scale, uint32_t seed) {
  std::vector<float> h(n);
  for (float& x : h) {
    seed = seed * 1664525u + 1013904223u;
    x = (static_cast<float>(seed >> 8) / 16777216.0f - 0.5f) * 2 * scale;
  }
  TERN_CUDA_CHECK(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    TERN_CUDA_CHECK(cudaEventCreate(&a));
    TERN_CUDA_CHECK(cudaEventCreate(&b));
  }
  double Ms(const std::function<void()>& fn) {
    TERN_CUDA_CHECK(cudaEventRecord(a, 0));
    fn();
    TERN_CUDA_CHECK(cudaEventRecord(b, 0));
    TERN_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    TERN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    return t;
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  std::map<std::string, int*> flags = {
      {"--layers", &c.L},     {"--hidden", &c.C}, {"--heads", &c.NH},
      {"--kv-heads", &c.NKV}, {"--ffn", &c.F},    {"--vocab", &c.V},
      {"--batch", &c.B},      {"--seq", &c.T},    {"--steps", &c.steps}};
  for (int i = 1; i < argc; ++i) {
    auto it = flags.find(argv[i]);
    if (it == flags.end() || i + 1 >= argc) {
      std::fprintf(stderr, "unknown or incomplete flag %s\n", argv[i]);
      return 2;
    }
    *it->second = std::atoi(argv[++i]);
  }
  std::string error;
  auto ops_ptr = tern::kernels::cuda::NewCudaOps(&error);
  if (ops_ptr == nullptr) {
    std::printf("{\"tool\":\"tern-gpu-bench\",\"error\":\"%s\"}\n", error.c_str());
    return 2;
  }
  const Ops<float>& ops = *ops_ptr;
  const int L = c.L, C = c.C, NH = c.NH, NKV = c.NKV, HS = C / NH, F = c.F, V = c.V, B = c.B,
            T = c.T, N = B * T, QKV = (NH + 2 * NKV) * HS;

  // Parameters in one flat buffer (kOutIn weights, as torch.nn.Linear).
  const size_t per_layer =
      size_t(C) + size_t(QKV) * C + size_t(C) * C + C + size_t(2) * F * C + size_t(C) * F;
  const size_t n_params = size_t(V) * C + L * per_layer + C + size_t(V) * C;
  float *params = Alloc(n_params), *grads = Alloc(n_params), *m = Alloc(n_params),
        *v = Alloc(n_params);
  Randomize(params, n_params, 0.02f, 1);
  TERN_CUDA_CHECK(cudaMemset(m, 0, n_params * 4));
  TERN_CUDA_CHECK(cudaMemset(v, 0, n_params * 4));
  for (size_t i = 0; i < size_t(L); ++i) {  // norm weights 1
    std::vector<float> ones(C, 1.0f);
    float* base = params + size_t(V) * C + i * per_layer;
    TERN_CUDA_CHECK(cudaMemcpy(base, ones.data(), C * 4, cudaMemcpyHostToDevice));
    TERN_CUDA_CHECK(cudaMemcpy(base + C + size_t(QKV) * C + size_t(C) * C, ones.data(), C * 4,
                               cudaMemcpyHostToDevice));
    if (i == 0)
      TERN_CUDA_CHECK(cudaMemcpy(params + size_t(V) * C + L * per_layer, ones.data(), C * 4,
                                 cudaMemcpyHostToDevice));
  }
  struct Layer {
    size_t ln1, wqkv, wo, ln2, wgu, wdown;
  };
  std::vector<Layer> lay(L);
  for (int l = 0; l < L; ++l) {
    size_t o = size_t(V) * C + l * per_layer;
    lay[l].ln1 = o;
    o += C;
    lay[l].wqkv = o;
    o += size_t(QKV) * C;
    lay[l].wo = o;
    o += size_t(C) * C;
    lay[l].ln2 = o;
    o += C;
    lay[l].wgu = o;
    o += size_t(2) * F * C;
    lay[l].wdown = o;
  }
  const size_t wte = 0, lnf = size_t(V) * C + L * per_layer, lm = lnf + C;

  // Activations saved for backward.
  struct Act {
    float *x, *rstd1, *ln1, *qkv, *att, *lse, *r1, *rstd2, *ln2, *gu, *h;
  };
  std::vector<Act> act(L + 1);
  for (int l = 0; l <= L; ++l) {
    act[l].x = Alloc(size_t(N) * C);
    if (l == L) break;
    act[l].rstd1 = Alloc(N);
    act[l].ln1 = Alloc(size_t(N) * C);
    act[l].qkv = Alloc(size_t(N) * QKV);
    act[l].att = Alloc(size_t(N) * C);
    act[l].lse = Alloc(size_t(B) * NH * T);
    act[l].r1 = Alloc(size_t(N) * C);
    act[l].rstd2 = Alloc(N);
    act[l].ln2 = Alloc(size_t(N) * C);
    act[l].gu = Alloc(size_t(N) * 2 * F);
    act[l].h = Alloc(size_t(N) * F);
  }
  float *rstdf = Alloc(N), *lnfo = Alloc(size_t(N) * C), *logits = Alloc(size_t(N) * V),
        *probs = Alloc(size_t(N) * V), *losses = Alloc(N);
  float *dx = Alloc(size_t(N) * C), *dx2 = Alloc(size_t(N) * C), *dln = Alloc(size_t(N) * C),
        *dr1 = Alloc(size_t(N) * C), *datt = Alloc(size_t(N) * C), *dh = Alloc(size_t(N) * F),
        *dgu = Alloc(size_t(N) * 2 * F), *dqkv = Alloc(size_t(N) * QKV);
  float *cosb = Alloc(size_t(T) * HS / 2), *sinb = Alloc(size_t(T) * HS / 2);
  ops.rope_tables(cosb, sinb, T, HS, 10000.0f);
  int32_t *tokens, *targets;
  TERN_CUDA_CHECK(cudaMalloc(&tokens, N * 4));
  TERN_CUDA_CHECK(cudaMalloc(&targets, N * 4));
  {
    std::vector<int32_t> t(N), y(N);
    for (int i = 0; i < N; ++i) {
      t[i] = (i * 7919) % V;
      y[i] = (i * 104729 + 13) % V;
    }
    TERN_CUDA_CHECK(cudaMemcpy(tokens, t.data(), N * 4, cudaMemcpyHostToDevice));
    TERN_CUDA_CHECK(cudaMemcpy(targets, y.data(), N * 4, cudaMemcpyHostToDevice));
  }
  float* P = params;
  float* G = grads;
  float loss = 0;
  int64_t step = 0;

  auto forward = [&] {
    ops.embedding_forward(act[0].x, tokens, P + wte, nullptr, B, T, C);
    for (int l = 0; l < L; ++l) {
      Act& a = act[l];
      const Layer& w = lay[l];
      ops.rmsnorm_forward(a.ln1, a.rstd1, a.x, P + w.ln1, N, C, 1e-5f);
      ops.matmul_forward(a.qkv, a.ln1, P + w.wqkv, nullptr, N, C, QKV, kL);
      ops.rope_forward(a.qkv, cosb, sinb, B, T, NH, NKV, HS);
      ops.chunked_attention_forward(a.att, a.lse, a.qkv, B, T, NH, NKV, HS);
      ops.matmul_forward(dx2, a.att, P + w.wo, nullptr, N, C, C, kL);
      ops.residual_forward(a.r1, a.x, dx2, size_t(N) * C);
      ops.rmsnorm_forward(a.ln2, a.rstd2, a.r1, P + w.ln2, N, C, 1e-5f);
      ops.matmul_forward(a.gu, a.ln2, P + w.wgu, nullptr, N, C, 2 * F, kL);
      ops.swiglu_forward(a.h, a.gu, N, F);
      ops.matmul_forward(dx2, a.h, P + w.wdown, nullptr, N, F, C, kL);
      ops.residual_forward(act[l + 1].x, a.r1, dx2, size_t(N) * C);
    }
    ops.rmsnorm_forward(lnfo, rstdf, act[L].x, P + lnf, N, C, 1e-5f);
    ops.matmul_forward(logits, lnfo, P + lm, nullptr, N, C, V, kL);
    const int count = ops.crossentropy_softmax_forward(losses, probs, logits, targets, N, V);
    std::vector<float> h(N);
    TERN_CUDA_CHECK(cudaMemcpy(h.data(), losses, N * 4, cudaMemcpyDeviceToHost));
    double s = 0;
    for (float x : h) s += x;
    loss = static_cast<float>(s / std::max(count, 1));
    return count;
  };
  auto backward = [&](int count) {
    TERN_CUDA_CHECK(cudaMemsetAsync(G, 0, n_params * 4, 0));
    ops.crossentropy_softmax_backward(logits, 1.0f / count, probs, targets, N, V);  // in place
    ops.matmul_backward(dln, G + lm, nullptr, logits, lnfo, P + lm, N, C, V, kL);
    ops.rmsnorm_backward(dx, G + lnf, dln, act[L].x, P + lnf, rstdf, N, C);
    for (int l = L - 1; l >= 0; --l) {
      Act& a = act[l];
      const Layer& w = lay[l];
      // x_{l+1} = r1 + mlp: dx flows to both.
      ops.matmul_backward(dh, G + w.wdown, nullptr, dx, a.h, P + w.wdown, N, F, C, kL);
      ops.swiglu_backward(dgu, dh, a.gu, N, F);
      ops.matmul_backward(dln, G + w.wgu, nullptr, dgu, a.ln2, P + w.wgu, N, C, 2 * F, kL);
      ops.rmsnorm_backward(dr1, G + w.ln2, dln, a.r1, P + w.ln2, a.rstd2, N, C);
      ops.residual_backward(dr1, nullptr, dx, size_t(N) * C);
      // r1 = x + attn: dr1 flows to both.
      ops.matmul_backward(datt, G + w.wo, nullptr, dr1, a.att, P + w.wo, N, C, C, kL);
      ops.chunked_attention_backward(dqkv, datt, a.att, a.lse, a.qkv, B, T, NH, NKV, HS);
      ops.rope_backward(dqkv, cosb, sinb, B, T, NH, NKV, HS);
      ops.matmul_backward(dln, G + w.wqkv, nullptr, dqkv, a.ln1, P + w.wqkv, N, C, QKV, kL);
      ops.rmsnorm_backward(dx, G + w.ln1, dln, a.x, P + w.ln1, a.rstd1, N, C);
      ops.residual_backward(dx, nullptr, dr1, size_t(N) * C);
    }
    ops.embedding_backward(G + wte, nullptr, dx, tokens, B, T, C);
  };
  auto optimizer = [&] {
    ++step;
    ops.adamw_update(P, G, m, v, n_params, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
  };

  Timer timer;
  int count = forward();  // warm-up step
  backward(count);
  optimizer();
  TERN_CUDA_CHECK(cudaDeviceSynchronize());
  const float loss0 = loss;
  std::vector<double> fwd, bwd, opt, total;
  for (int s = 0; s < c.steps; ++s) {
    const double f = timer.Ms([&] { count = forward(); });
    const double b = timer.Ms([&] { backward(count); });
    const double o = timer.Ms(optimizer);
    fwd.push_back(f);
    bwd.push_back(b);
    opt.push_back(o);
    total.push_back(f + b + o);
  }
  const double step_ms = Median(total);
  const double matmul_params =
      double(L) * (double(C) * QKV + double(C) * C + 2.0 * F * C + double(F) * C) + double(V) * C;
  const double flops = 6.0 * N * matmul_params + 3.0 * 2.0 * B * NH * double(T) * T * HS * L;
  const double tflops = flops / (step_ms / 1e3) / 1e12;

  // Kernels alone: one MLP-sized GEMM and the attention forward/backward of one layer.
  const double gemm_ms =
      Median({timer.Ms([&] {
                ops.matmul_forward(act[0].gu, act[0].ln2, P + lay[0].wgu, nullptr, N, C, 2 * F, kL);
              }),
              timer.Ms([&] {
                ops.matmul_forward(act[0].gu, act[0].ln2, P + lay[0].wgu, nullptr, N, C, 2 * F, kL);
              }),
              timer.Ms([&] {
                ops.matmul_forward(act[0].gu, act[0].ln2, P + lay[0].wgu, nullptr, N, C, 2 * F, kL);
              })});
  const double gemm_tflops = 2.0 * N * C * 2.0 * F / (gemm_ms / 1e3) / 1e12;
  const double att_fwd_ms = timer.Ms([&] {
    ops.chunked_attention_forward(act[0].att, act[0].lse, act[0].qkv, B, T, NH, NKV, HS);
  });
  const double att_bwd_ms = timer.Ms([&] {
    ops.chunked_attention_backward(dqkv, datt, act[0].att, act[0].lse, act[0].qkv, B, T, NH, NKV,
                                   HS);
  });
  const double att_flops = 2.0 * B * NH * double(T) * T * HS;  // causal forward
  cudaDeviceProp prop{};
  TERN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf(
      "{\"tool\":\"tern-gpu-bench\",\"device\":\"%s\",\"dtype\":\"fp32\",\"layers\":%d,"
      "\"hidden\":%d,\"heads\":%d,\"kv_heads\":%d,\"ffn\":%d,\"vocab\":%d,\"batch\":%d,\"seq\":%d,"
      "\"params\":%zu,\"step_ms\":%.3f,\"forward_ms\":%.3f,\"backward_ms\":%.3f,"
      "\"adamw_ms\":%.3f,\"tokens_per_s\":%.1f,\"model_tflops\":%.2f,\"loss_first\":%.4f,"
      "\"loss_last\":%.4f,\"gemm_tflops\":%.2f,\"attention_fwd_ms\":%.3f,"
      "\"attention_bwd_ms\":%.3f,\"attention_fwd_tflops\":%.2f,\"attention_bwd_tflops\":%.2f}\n",
      prop.name, L, C, NH, NKV, F, V, B, T, n_params, step_ms, Median(fwd), Median(bwd),
      Median(opt), N / (step_ms / 1e3), tflops, loss0, loss, gemm_tflops, att_fwd_ms, att_bwd_ms,
      att_flops / (att_fwd_ms / 1e3) / 1e12, 2.5 * att_flops / (att_bwd_ms / 1e3) / 1e12);
  return 0;
}
