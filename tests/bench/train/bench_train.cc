// tern-bench-train: one training step (forward, cross-entropy, backward, optional clip, AdamW)
// timed like ../shared/peers/torch_train_step.py, with the same flags and JSON fields, plus
// `mfu` against the cblas_sgemm peak measured for the same thread count.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>

#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "worker/engine/trainer.h"
#include "worker/model/transformer.h"
#include "worker/zero/state.h"

namespace {

struct Args {
  std::string arch = "llama";
  int vocab = 256, dim = 256, layers = 4, heads = 8, seq = 256, ffn = 0, tie = -1;
  int batch = 8, steps = 10, warmup = 2, threads = 2;
  float lr = 1e-3f, wd = 0.1f, clip = 0.0f;
  std::string data = "fixed";
  uint64_t seed = 1234;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"tern-bench-train: time a training step (compare with torch_train_step.py)"};
  app.add_option("--arch", a.arch)->check(CLI::IsMember({"llama", "gpt2"}));
  app.add_option("--vocab", a.vocab);
  app.add_option("--dim", a.dim);
  app.add_option("--layers", a.layers);
  app.add_option("--heads", a.heads);
  app.add_option("--seq", a.seq);
  app.add_option("--ffn", a.ffn);
  app.add_option("--tie", a.tie);
  app.add_option("--batch", a.batch);
  app.add_option("--steps", a.steps);
  app.add_option("--warmup", a.warmup);
  app.add_option("--threads", a.threads);
  app.add_option("--lr", a.lr);
  app.add_option("--wd", a.wd);
  app.add_option("--clip", a.clip);
  app.add_option("--data", a.data)->check(CLI::IsMember({"fixed", "random"}));
  app.add_option("--seed", a.seed);
  CLI11_PARSE(app, argc, argv);

  tern::v1::ModelConfig mc;
  mc.set_model_type(a.arch);
  mc.set_vocab_size(a.vocab);
  mc.set_hidden_size(a.dim);
  mc.set_num_hidden_layers(a.layers);
  mc.set_num_attention_heads(a.heads);
  mc.set_max_position_embeddings(a.seq);
  if (a.ffn > 0) mc.set_intermediate_size(a.ffn);
  if (a.tie >= 0) mc.set_tie_word_embeddings(a.tie == 1);
  auto dims = tern::model::ResolveModelDims(mc, a.seq);
  if (!dims.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(dims.status().message()).c_str());
    return 2;
  }
  const double peak = tern::engine::MeasureSgemmPeakGflops(a.threads);
  tern::kernels::SetNumThreads(a.threads);
  tern::model::Transformer<float> model(*dims);
  std::vector<float> init(model.params().total());
  model.InitParams(init.data(), a.seed);
  auto state = tern::zero::CreateLocalState(model.params(), init);
  tern::optim::AdamWConfig adamw{a.lr, 0.9f, 0.95f, 1e-8f, a.wd};

  std::mt19937_64 rng(a.seed + 1);
  const size_t n = size_t(a.batch) * a.seq;
  std::vector<int32_t> window(size_t(a.batch) * (a.seq + 1)), inp(n), tgt(n);
  auto draw = [&] {
    for (auto& t : window) t = int32_t(rng() % a.vocab);
    for (int b = 0; b < a.batch; ++b)
      for (int t = 0; t < a.seq; ++t) {
        inp[size_t(b) * a.seq + t] = window[size_t(b) * (a.seq + 1) + t];
        tgt[size_t(b) * a.seq + t] = window[size_t(b) * (a.seq + 1) + t + 1];
      }
  };
  draw();
  std::vector<double> times, losses;
  for (int step = 0; step < a.warmup + a.steps; ++step) {
    if (a.data == "random") draw();
    auto t0 = std::chrono::steady_clock::now();
    state->BeginMicroStep(true);
    double loss = model.Forward(state->source(), inp.data(), tgt.data(), a.batch, a.seq);
    model.Backward(state->source(), 1.0f);
    double norm = std::sqrt(*state->FinishBackward());
    float mult = (a.clip > 0 && norm > a.clip) ? float(a.clip / (norm + 1e-6)) : 1.0f;
    (void)state->OptimizerStep(adamw, a.lr, step + 1, mult);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    losses.push_back(loss);
    if (step >= a.warmup) times.push_back(dt);
  }
  const double med = Median(times);
  const double tokens = double(n);
  const auto cost = tern::model::EstimateCost(*dims, a.seq);
  const double gflops = cost.flops_per_token * tokens / med / 1e9;
  nlohmann::json out = {{"peer", "tern"},
                        {"arch", a.arch},
                        {"vocab", a.vocab},
                        {"dim", a.dim},
                        {"layers", a.layers},
                        {"heads", a.heads},
                        {"seq", a.seq},
                        {"ffn", dims->F},
                        {"tied", dims->tied},
                        {"batch", a.batch},
                        {"threads", a.threads},
                        {"steps", a.steps},
                        {"warmup", a.warmup},
                        {"data", a.data},
                        {"params", cost.params},
                        {"tokens_per_s", std::round(tokens / med * 10) / 10},
                        {"step_ms_median", med * 1e3},
                        {"step_ms_min", *std::min_element(times.begin(), times.end()) * 1e3},
                        {"step_ms_max", *std::max_element(times.begin(), times.end()) * 1e3},
                        {"est_gflops", gflops},
                        {"sgemm_peak_gflops", peak},
                        {"mfu", gflops / peak},
                        {"peak_rss_mib", tern::engine::PeakRssMib()},
                        {"first_loss", losses.front()},
                        {"final_loss", losses.back()},
                        {"blas", "openblas-openmp"}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
