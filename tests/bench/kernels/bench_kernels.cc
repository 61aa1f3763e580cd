// tern-bench-kernels: times every CPU kernel with the shapes of one training step of the
// PyTorch peer benchmark's Llama and GPT-2 models (torch_train_step.py, sizes tiny/small/medium)
// and prints one JSON line per (size, op): minimum and median milliseconds per call, GFLOP/s
// (matmul and attention) or GB/s (elementwise, nominal bytes read + written), and the op's share of
// an estimated step (calls per step x time). Ends each size with the estimated kernel time of a
// whole Llama / GPT-2 step, to compare with PyTorch's measured step time.
//
// Usage: tern-bench-kernels [--threads N] [--sizes tiny,small,medium] [--min-ms 40]
//                           [--clock wall|cpu]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/cpu/attention_tuning.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quantize.h"
#include "kernels/cpu/threads.h"

namespace tern::kernels {
namespace {

struct ModelSize {
  const char* name;
  int dim, layers, seq, batch;
};
constexpr ModelSize kSizes[] = {
    {"tiny", 128, 4, 128, 32}, {"small", 256, 6, 256, 8}, {"medium", 512, 8, 512, 2}};
constexpr int kHeads = 8;
constexpr int kVocab = 256;

double g_min_ms = 40;
// --clock cpu: time by process CPU time / threads instead of wall time. On a machine shared
// with other work this excludes the time our threads were descheduled (single-threaded runs
// become exact; multithreaded ones still count barrier spinning, as wall time would).
bool g_cpu_clock = false;
int g_threads = 1;

double NowMs() {
  if (g_cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6) / g_threads;
  }
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Wall time of fn in ms: one warm-up call, then at least 5 calls and g_min_ms. Returns the
// minimum (robust to other processes on a shared 2-core machine); g_last_median keeps the
// median of the same calls.
double g_last_median = 0;
double TimeMs(const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  double total = 0;
  while (t.size() < 5 || (total < g_min_ms && t.size() < 2000)) {
    const double a = NowMs();
    fn();
    const double ms = NowMs() - a;
    t.push_back(ms);
    total += ms;
  }
  std::sort(t.begin(), t.end());
  g_last_median = t[t.size() / 2];
  return t[0];
}

std::vector<float> Rand(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

struct Report {
  const char* size;
  int threads;
  double llama_ms = 0, gpt2_ms = 0;  // estimated step kernel time

  // flops > 0: report GFLOP/s; else bytes: GB/s. calls_*: calls per training step.
  void Emit(const std::string& op, const std::string& shape, double ms, double flops, double bytes,
            int calls_llama, int calls_gpt2) {
    llama_ms += ms * calls_llama;
    gpt2_ms += ms * calls_gpt2;
    std::printf(
        "{\"bench\": \"kernels\", \"size\": \"%s\", \"threads\": %d, \"op\": \"%s\", "
        "\"shape\": \"%s\", \"ms\": %.4f, \"ms_median\": %.4f",
        size, threads, op.c_str(), shape.c_str(), ms, g_last_median);
    if (flops > 0) std::printf(", \"gflops\": %.1f", flops / ms * 1e-6);
    if (bytes > 0) std::printf(", \"gbps\": %.2f", bytes / ms * 1e-6);
    std::printf(", \"calls_llama\": %d, \"calls_gpt2\": %d}\n", calls_llama, calls_gpt2);
    std::fflush(stdout);
  }
};

// a + b + ... by append (GCC 12 warns falsely (-Wrestrict) on chained std::string operator+).
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (std::string_view p : parts) s.append(p);
  return s;
}

std::string Shape(std::initializer_list<std::pair<const char*, long>> dims) {
  std::string s;
  for (const auto& [k, v] : dims) {
    if (!s.empty()) s.push_back(' ');
    s.append(k).append("=").append(std::to_string(v));
  }
  return s;
}

// One matmul at (N, C, OC): forward and backward (with dinp), bias optional.
void BenchMatmul(Report* r, const char* name, int N, int C, int OC, bool bias, WeightLayout layout,
                 int calls_llama, int calls_gpt2) {
  auto x = Rand(static_cast<size_t>(N) * C, 1), w = Rand(static_cast<size_t>(C) * OC, 2, 0.1f);
  auto b = Rand(OC, 3), dout = Rand(static_cast<size_t>(N) * OC, 4);
  std::vector<float> out(static_cast<size_t>(N) * OC), dx(x.size()), dw(w.size()), db(OC);
  const float* bp = bias ? b.data() : nullptr;
  const double flops = 2.0 * N * C * OC;
  const std::string shape = Shape({{"N", N}, {"C", C}, {"OC", OC}, {"bias", bias}});
  r->Emit(Cat({"matmul_fwd_", name}), shape,
          TimeMs([&] { matmul_forward(out.data(), x.data(), w.data(), bp, N, C, OC, layout); }),
          flops, 0, calls_llama, calls_gpt2);
  r->Emit(Cat({"matmul_bwd_", name}), shape, TimeMs([&] {
            matmul_backward(dx.data(), dw.data(), bias ? db.data() : nullptr, dout.data(), x.data(),
                            w.data(), N, C, OC, layout);
          }),
          2 * flops, 0, calls_llama, calls_gpt2);
}

void BenchAttention(Report* r, int B, int T, int NH, int NKV, int HS, int calls_llama,
                    int calls_gpt2, const std::string& variant) {
  const int QKV = (NH + 2 * NKV) * HS;
  auto qkv = Rand(static_cast<size_t>(B) * T * QKV, 5),
       dout = Rand(static_cast<size_t>(B) * T * NH * HS, 6);
  std::vector<float> out(dout.size()), att(static_cast<size_t>(B) * NH * T * T), dqkv(qkv.size());
  std::vector<float> scratch(attention_scratch_elems(B, T, NH, NKV, HS, NumThreads()));
  // Useful (causal) flops: QK^T and PV over the lower triangle; backward does twice that.
  const double flops = 2.0 * 2.0 * B * NH * (T * (T + 1) / 2.0) * HS;
  const std::string shape = Shape({{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}});
  r->Emit(Cat({"attention_fwd", variant}), shape,
          TimeMs([&] { attention_forward(out.data(), att.data(), qkv.data(), B, T, NH, NKV, HS); }),
          flops, 0, calls_llama, calls_gpt2);
  r->Emit(Cat({"attention_bwd", variant}), shape, TimeMs([&] {
            attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(), B,
                               T, NH, NKV, HS);
          }),
          2 * flops, 0, calls_llama, calls_gpt2);
  if (variant.empty() || variant == "[gqa]") {  // the chunked kernels (the models' path)
    std::vector<float> lse(static_cast<size_t>(B) * NH * T);
    r->Emit(Cat({"chunked_attention_fwd", variant}), shape, TimeMs([&] {
              chunked_attention_forward(out.data(), lse.data(), qkv.data(), B, T, NH, NKV, HS);
            }),
            flops, 0, 0, 0);
    r->Emit(Cat({"chunked_attention_bwd", variant}), shape, TimeMs([&] {
              chunked_attention_backward(dqkv.data(), dout.data(), out.data(), lse.data(),
                                         qkv.data(), B, T, NH, NKV, HS);
            }),
            2 * flops, 0, 0, 0);
  }
}

void BenchAttentionVariants(Report* r, int B, int T, int C) {
  const int HS = C / kHeads;
  auto& tune = detail::MutableAttentionTuning();
  const detail::AttentionTuning saved = tune;
  // parallel: per-head tasks (single-threaded products) or serial heads with multithreaded
  // OpenBLAS; products: SmallGemm micro-kernels or OpenBLAS.
  struct Variant {
    const char* name;
    detail::AttentionParallel parallel;
    bool blas_gemm;
  };
  const Variant variants[] = {{"heads+smallgemm", detail::AttentionParallel::kHeads, false},
                              {"heads+blas", detail::AttentionParallel::kHeads, true},
                              {"serial+mt_blas", detail::AttentionParallel::kBlas, true}};
  for (int block : {32, 64, 128}) {
    if (block > T) continue;
    for (const Variant& var : variants) {
      tune.block_rows = block;
      tune.parallel = var.parallel;
      tune.blas_gemm = var.blas_gemm;
      const std::string v = Cat({"[", var.name, ",block=", std::to_string(block), "]"});
      BenchAttention(r, B, T, kHeads, kHeads, HS, 0, 0, v);
    }
  }
  tune = saved;
  BenchAttention(r, B, T, kHeads, 2, HS, 0, 0, "[gqa]");
}

// Row-wise ops over (N, C): embedding, the norms and the residual add.
void BenchRowwise(Report* r, const ModelSize& s) {
  const int B = s.batch, T = s.seq, C = s.dim, N = B * T, L = s.layers;
  const size_t NC = static_cast<size_t>(N) * C;
  auto x = Rand(NC, 7), w = Rand(C, 8), bias = Rand(C, 9), dout = Rand(NC, 10);
  std::vector<float> out(NC), dx(NC), mean(N), rstd(N), dw(C), db(C);
  const std::string nc = Shape({{"N", N}, {"C", C}});
  // Embedding (llama: no wpe; gpt2: with wpe).
  std::vector<int32_t> tok(N);
  for (int i = 0; i < N; ++i) tok[i] = (i * 131) % kVocab;
  auto wte = Rand(static_cast<size_t>(kVocab) * C, 11), wpe = Rand(static_cast<size_t>(T) * C, 12);
  std::vector<float> dwte(wte.size()), dwpe(wpe.size());
  r->Emit("embedding_fwd", nc, TimeMs([&] {
            embedding_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
          }),
          0, 3.0 * NC * 4, 1, 1);
  r->Emit("embedding_bwd", nc, TimeMs([&] {
            embedding_backward(dwte.data(), dwpe.data(), dout.data(), tok.data(), B, T, C);
          }),
          0, 5.0 * NC * 4, 1, 1);
  r->Emit("rmsnorm_fwd", nc, TimeMs([&] {
            rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
          }),
          0, 2.0 * NC * 4, 2 * L + 1, 0);
  r->Emit("rmsnorm_bwd", nc, TimeMs([&] {
            rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N,
                             C);
          }),
          0, 3.0 * NC * 4, 2 * L + 1, 0);
  r->Emit("layernorm_fwd", nc, TimeMs([&] {
            layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(),
                              N, C, 1e-5f);
          }),
          0, 2.0 * NC * 4, 0, 2 * L + 1);
  r->Emit("layernorm_bwd", nc, TimeMs([&] {
            layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                               mean.data(), rstd.data(), N, C);
          }),
          0, 3.0 * NC * 4, 0, 2 * L + 1);
  r->Emit("residual_fwd", nc,
          TimeMs([&] { residual_forward(out.data(), x.data(), dout.data(), NC); }), 0, 3.0 * NC * 4,
          2 * L, 2 * L);
  r->Emit("residual_bwd", nc,
          TimeMs([&] { residual_backward(dx.data(), out.data(), dout.data(), NC); }), 0,
          5.0 * NC * 4, 2 * L, 2 * L);
}

// RoPE and the activations (SwiGLU for llama, GELU for gpt2).
void BenchPositionAndActivations(Report* r, const ModelSize& s) {
  const int B = s.batch, T = s.seq, C = s.dim, N = B * T, L = s.layers, HS = C / kHeads;
  const int F = static_cast<int>(std::ceil(8.0 * C / 3 / 32.0)) * 32;  // llama ffn
  const size_t NC = static_cast<size_t>(N) * C;
  // RoPE on fused qkv (MHA).
  const size_t nqkv = NC * 3;
  auto qkv = Rand(nqkv, 13);
  std::vector<float> cos(static_cast<size_t>(T) * HS / 2), sin(cos.size());
  rope_tables(cos.data(), sin.data(), T, HS, 10000.0f);
  const std::string rs = Shape({{"B", B}, {"T", T}, {"NH", kHeads}, {"HS", HS}});
  r->Emit("rope_fwd", rs, TimeMs([&] {
            rope_forward(qkv.data(), cos.data(), sin.data(), B, T, kHeads, kHeads, HS);
          }),
          0, 4.0 * NC * 4, L, 0);
  r->Emit("rope_bwd", rs, TimeMs([&] {
            rope_backward(qkv.data(), cos.data(), sin.data(), B, T, kHeads, kHeads, HS);
          }),
          0, 4.0 * NC * 4, L, 0);
  // SwiGLU (llama) and GELU (gpt2, 4C).
  const size_t nf = static_cast<size_t>(N) * F;
  auto h = Rand(2 * nf, 14), dh = Rand(nf, 15);
  std::vector<float> hout(nf), dhin(2 * nf);
  const std::string sf = Shape({{"N", N}, {"F", F}});
  r->Emit("swiglu_fwd", sf, TimeMs([&] { swiglu_forward(hout.data(), h.data(), N, F); }), 0,
          3.0 * nf * 4, L, 0);
  r->Emit("swiglu_bwd", sf,
          TimeMs([&] { swiglu_backward(dhin.data(), dh.data(), h.data(), N, F); }), 0, 5.0 * nf * 4,
          L, 0);
  const size_t ng = NC * 4;
  auto g = Rand(ng, 16, 3.0f), dg = Rand(ng, 17);
  std::vector<float> gout(ng), dgin(ng);
  const std::string gs = Shape({{"n", static_cast<long>(ng)}});
  r->Emit("gelu_fwd", gs, TimeMs([&] { gelu_forward(gout.data(), g.data(), ng); }), 0, 2.0 * ng * 4,
          0, L);
  r->Emit("gelu_bwd", gs, TimeMs([&] { gelu_backward(dgin.data(), dg.data(), g.data(), ng); }), 0,
          3.0 * ng * 4, 0, L);
}

// The loss (softmax + cross-entropy over V) and the optimizer over the whole parameter count.
void BenchLossAndOptimizer(Report* r, const ModelSize& s) {
  const int C = s.dim, N = s.batch * s.seq, L = s.layers;
  const int F = static_cast<int>(std::ceil(8.0 * C / 3 / 32.0)) * 32;  // llama ffn
  // Cross-entropy over V.
  const size_t nv = static_cast<size_t>(N) * kVocab;
  auto logits = Rand(nv, 18, 4.0f);
  std::vector<float> probs(nv), losses(N), dlogits(nv);
  std::vector<int32_t> tgt(N);
  for (int i = 0; i < N; ++i) tgt[i] = (i * 37) % kVocab;
  const std::string vs = Shape({{"N", N}, {"V", kVocab}});
  r->Emit("crossentropy_fwd", vs, TimeMs([&] {
            crossentropy_softmax_forward(losses.data(), probs.data(), logits.data(), tgt.data(), N,
                                         kVocab);
          }),
          0, 2.0 * nv * 4, 1, 1);
  r->Emit("crossentropy_bwd", vs, TimeMs([&] {
            crossentropy_softmax_backward(dlogits.data(), 1.0f / N, probs.data(), tgt.data(), N,
                                          kVocab);
          }),
          0, 2.0 * nv * 4, 1, 1);
  // Optimizer over the llama parameter count (gpt2's is within 2%).
  const size_t P = 2ull * kVocab * C + static_cast<size_t>(L) * (4ull * C * C + 3ull * C * F) +
                   (2ull * L + 1) * C;
  auto p = Rand(P, 19), pg = Rand(P, 20);
  std::vector<float> m(P), v(P);
  const std::string ps = Shape({{"n", static_cast<long>(P)}});
  int64_t step = 0;
  r->Emit("adamw", ps, TimeMs([&] {
            adamw_update(p.data(), pg.data(), m.data(), v.data(), P, 1e-3f, 0.9f, 0.95f, 1e-8f,
                         0.1f, ++step);
          }),
          0, 7.0 * P * 4, 1, 1);
  double sink = 0;
  r->Emit("sum_squares", ps, TimeMs([&] { sink += sum_squares(pg.data(), P); }), 0, 1.0 * P * 4, 0,
          0);
  r->Emit("scale_inplace", ps, TimeMs([&] { scale_inplace(pg.data(), 1.0f, P); }), 0, 2.0 * P * 4,
          0, 0);
  if (sink < 0) std::printf("%f\n", sink);
}

void BenchElementwise(Report* r, const ModelSize& s) {
  BenchRowwise(r, s);
  BenchPositionAndActivations(r, s);
  BenchLossAndOptimizer(r, s);
}

void BenchSize(const ModelSize& s, int threads) {
  Report r{s.name, threads};
  const int B = s.batch, T = s.seq, C = s.dim, N = B * T, L = s.layers;
  const int F = static_cast<int>(std::ceil(8.0 * C / 3 / 32.0)) * 32;
  const auto kOI = WeightLayout::kOutIn, kIO = WeightLayout::kInOut;
  // Llama: bias-free nn.Linear layout; gate and up fused into one (C -> 2F) matmul.
  BenchMatmul(&r, "qkv", N, C, 3 * C, false, kOI, L, 0);
  BenchMatmul(&r, "attn_out", N, C, C, false, kOI, L, 0);
  BenchMatmul(&r, "gate_up", N, C, 2 * F, false, kOI, L, 0);
  BenchMatmul(&r, "down", N, F, C, false, kOI, L, 0);
  BenchMatmul(&r, "lm_head", N, C, kVocab, false, kOI, 1, 1);
  // GPT-2: Conv1D layout with biases.
  BenchMatmul(&r, "qkv_bias", N, C, 3 * C, true, kIO, 0, L);
  BenchMatmul(&r, "attn_out_bias", N, C, C, true, kIO, 0, L);
  BenchMatmul(&r, "fc_bias", N, C, 4 * C, true, kIO, 0, L);
  BenchMatmul(&r, "fc_proj_bias", N, 4 * C, C, true, kIO, 0, L);
  BenchAttention(&r, B, T, kHeads, kHeads, C / kHeads, L, L, "");
  BenchElementwise(&r, s);
  std::printf(
      "{\"bench\": \"kernels\", \"size\": \"%s\", \"threads\": %d, \"op\": "
      "\"step_estimate\", \"llama_ms\": %.1f, \"gpt2_ms\": %.1f}\n",
      s.name, threads, r.llama_ms, r.gpt2_ms);
  BenchAttentionVariants(&r, B, T, C);
}

void BenchPeak(int threads) {
  const int n = 1024;
  auto a = Rand(n * n, 21), b = Rand(n * n, 22);
  std::vector<float> c(n * n);
  const double ms = TimeMs(
      [&] { gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n); });
  std::printf(
      "{\"bench\": \"kernels\", \"threads\": %d, \"op\": \"sgemm_1024\", \"ms\": %.3f, "
      "\"gflops\": %.1f}\n",
      threads, ms, 2.0 * n * n * n / ms * 1e-6);
}

// ZeRO++'s quantization kernels (single-threaded by design) on 16M floats (64 MiB, past the
// caches), next to a plain memcpy of the same fp32 buffer measured in the same run. GB/s are
// nominal bytes read + written; "fp32_gbps" is the fp32 side alone (bytes of floats quantized
// or produced per second), the figure to compare with the link a collective saves.
void BenchQuantize() {
  const size_t n = size_t{1} << 24, block = 4096, nb = n / block;
  auto x = Rand(n, 23), y = Rand(n, 24);
  std::vector<float> out(n), scales(nb), scales2(nb), scales3(nb);
  std::vector<int8_t> q8(n);
  std::vector<uint8_t> q4(n / 2), q4b(n / 2), q4c(n / 2);
  auto emit = [&](const char* op, double ms, double bytes, double fp32_bytes) {
    std::printf(
        "{\"bench\": \"kernels\", \"op\": \"%s\", \"n\": %zu, \"block\": %zu, \"threads\": 1, "
        "\"ms\": %.3f, \"ms_median\": %.3f, \"gbps\": %.2f, \"fp32_gbps\": %.2f}\n",
        op, n, block, ms, g_last_median, bytes / ms * 1e-6, fp32_bytes / ms * 1e-6);
    std::fflush(stdout);
  };
  const double f = 4.0 * n, s4 = 4.0 * nb;
  emit("memcpy", TimeMs([&] { std::memcpy(out.data(), x.data(), n * 4); }), 2 * f, f);
  emit("quantize_int8",
       TimeMs([&] { quantize_int8(q8.data(), scales.data(), x.data(), n, block); }), f + n + s4, f);
  emit("dequantize_int8",
       TimeMs([&] { dequantize_int8(out.data(), q8.data(), scales.data(), n, block); }), n + s4 + f,
       f);
  emit("quantize_int4",
       TimeMs([&] { quantize_int4(q4.data(), scales.data(), x.data(), n, block); }), f + n / 2 + s4,
       f);
  emit("dequantize_int4",
       TimeMs([&] { dequantize_int4(out.data(), q4.data(), scales.data(), n, block); }),
       n / 2 + s4 + f, f);
  quantize_int4(q4b.data(), scales2.data(), y.data(), n, block);
  const uint8_t* qin[2] = {q4.data(), q4b.data()};
  const float* sin[2] = {scales.data(), scales2.data()};
  emit("dequant_sum_requant_int4_x2",
       TimeMs([&] { dequant_sum_requant_int4(q4c.data(), scales3.data(), qin, sin, 2, n, block); }),
       3 * (n / 2 + s4), 2 * f);
}

}  // namespace
}  // namespace tern::kernels

int main(int argc, char** argv) {
  int threads = tern::kernels::NumThreads();
  std::string sizes = "tiny,small,medium";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--sizes"))
      sizes = argv[i + 1];
    else if (!std::strcmp(argv[i], "--min-ms"))
      tern::kernels::g_min_ms = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--clock"))
      tern::kernels::g_cpu_clock = !std::strcmp(argv[i + 1], "cpu");
    else {
      std::fprintf(stderr,
                   "unknown flag %s\nusage: %s [--threads N] [--sizes tiny,small,medium] "
                   "[--min-ms 40] [--clock wall|cpu]\n",
                   argv[i], argv[0]);
      return 2;
    }
  }
  tern::kernels::SetNumThreads(threads);
  tern::kernels::g_threads = threads;
  tern::kernels::BenchPeak(threads);
  tern::kernels::BenchQuantize();
  for (const auto& s : tern::kernels::kSizes) {
    if (tern::kernels::Cat({",", sizes, ","}).find(tern::kernels::Cat({",", s.name, ","})) !=
        std::string::npos) {
      tern::kernels::BenchSize(s, threads);
    }
  }
  return 0;
}
