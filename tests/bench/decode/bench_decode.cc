// tern-bench-decode: decode speed of weight-only quantized models against fp32 on this CPU. A
// model of random weights (default: Llama-shaped, 551 M parameters, so decoding is bound by the
// weight bytes each token reads) is quantized in memory to each --formats entry; each format
// then prefills a --prompt-token prompt and decodes --tokens tokens greedily with the KV cache,
// batch --batch. The formats run interleaved (A B C D, --repeats rounds: the machine is shared)
// and each run prints one JSON line: decode tokens/s, ms per token, the matrix bytes one token
// reads and the effective weight bandwidth (those bytes x tokens/s). A last line per format
// gives the medians and the ratios: tokens/s over fp32's, bandwidth over int4's.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "kernels/cpu/threads.h"
#include "kernels/wquant.h"
#include "nlohmann/json.hpp"
#include "tests/bench/common.h"
#include "tests/bench/model_flags.h"
#include "worker/model/config.h"
#include "worker/model/transformer.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace k = tern::kernels;
namespace m = tern::model;

struct Args : tern::bench::ModelFlags {
  Args() {
    vocab = 32000;
    dim = 1536;
    layers = 16;
    heads = 12;
    ffn = 4096;
    tie = 0;
  }
  int prompt = 16, tokens = 32, batch = 1, threads = 2, repeats = 3;
  std::string formats = "fp32,fp6,int8,int4";
};

struct Run {
  double prefill_ms = 0, decode_tokens_per_s = 0, ms_per_token = 0;
};

Run Decode(m::Transformer<float>& model, m::ParamSource<float>& src, const Args& a) {
  const auto& d = model.dims();
  auto cache = *model.NewKvCache(a.batch, a.prompt + a.tokens);
  std::vector<int32_t> prompt(size_t(a.batch) * a.prompt);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 37 + 11) % d.V);
  const auto t0 = Clock::now();
  model.ForwardCached(src, prompt.data(), a.batch, a.prompt, &cache);
  const auto t1 = Clock::now();
  std::vector<int32_t> next(a.batch);
  auto pick = [&](int rows_per_seq) {
    for (int b = 0; b < a.batch; ++b) {
      const float* l = model.logits() + (size_t(b) * rows_per_seq + rows_per_seq - 1) * d.V;
      next[b] = int32_t(std::max_element(l, l + d.V) - l);
    }
  };
  pick(a.prompt);
  for (int t = 0; t < a.tokens; ++t) {
    model.ForwardCached(src, next.data(), a.batch, 1, &cache);
    pick(1);
  }
  const auto t2 = Clock::now();
  Run r;
  r.prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  const double s = std::chrono::duration<double>(t2 - t1).count();
  r.decode_tokens_per_s = a.tokens * a.batch / s;
  r.ms_per_token = s * 1e3 / a.tokens;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"tern-bench-decode: decode tokens/s of fp32 and weight-only quantized models"};
  tern::bench::AddModelFlags(app, a);
  app.add_option("--prompt", a.prompt, "Prompt tokens (prefilled, not timed as decode)");
  app.add_option("--tokens", a.tokens, "Decoded tokens per run");
  app.add_option("--batch", a.batch, "Sequences decoded together");
  app.add_option("--threads", a.threads);
  app.add_option("--repeats", a.repeats, "Interleaved rounds over the formats (medians)");
  app.add_option("--formats", a.formats, "Comma-separated: fp32, fp6, int8, int4");
  CLI11_PARSE(app, argc, argv);
  k::SetNumThreads(a.threads);

  const tern::v1::ModelConfig mc =
      tern::bench::ModelConfigFor(a, std::max(2048, a.prompt + a.tokens));
  auto dims = m::ResolveModelDims(mc, a.prompt + a.tokens);
  if (!dims.ok()) {
    std::fprintf(stderr, "%s\n", std::string(dims.status().message()).c_str());
    return 2;
  }
  m::Transformer<float> base(*dims);
  std::vector<float> params(base.params().total());
  base.InitParams(params.data(), 1);
  uint64_t matrix_weights = 0;
  for (const auto& w : base.Linears()) matrix_weights += uint64_t(w.rows) * w.cols;

  std::vector<std::string> formats = absl::StrSplit(a.formats, ',');
  std::map<std::string, m::QuantizedWeights> quantized;
  std::map<std::string, std::unique_ptr<m::Transformer<float>>> models;
  std::map<std::string, uint64_t> bytes;
  for (const auto& f : formats) {
    models[f] = std::make_unique<m::Transformer<float>>(*dims);
    if (f == "fp32") {
      bytes[f] = matrix_weights * 4;
      continue;
    }
    k::WeightFormat wf;
    if (!k::ParseWeightFormat(f, &wf)) {
      std::fprintf(stderr, "--formats: %s is not fp32, fp6, int8 or int4\n", f.c_str());
      return 2;
    }
    quantized[f] = *base.Quantize(params.data(), wf);
    bytes[f] = quantized[f].bytes();
    const absl::Status st = models[f]->set_quantized(&quantized[f]);
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  m::FlatParamSource<float> src(&base.params(), params.data(), nullptr);
  std::map<std::string, std::vector<double>> tps, bw;
  for (int rep = 0; rep < a.repeats; ++rep) {
    for (const auto& f : formats) {
      const Run r = Decode(*models[f], src, a);
      const double gbs = double(bytes[f]) * (r.decode_tokens_per_s / a.batch) / 1e9;
      tps[f].push_back(r.decode_tokens_per_s);
      bw[f].push_back(gbs);
      std::printf("%s\n", nlohmann::json{{"bench", "decode"},
                                         {"format", f},
                                         {"round", rep},
                                         {"params", base.params().total()},
                                         {"matrix_bytes_per_token", bytes[f]},
                                         {"batch", a.batch},
                                         {"prefill_ms", r.prefill_ms},
                                         {"decode_tokens_per_s", r.decode_tokens_per_s},
                                         {"ms_per_token", r.ms_per_token},
                                         {"weight_gb_per_s", gbs}}
                              .dump()
                              .c_str());
      std::fflush(stdout);
    }
  }
  for (const auto& f : formats) {
    nlohmann::json s = {{"bench", "decode_summary"},
                        {"format", f},
                        {"threads", a.threads},
                        {"params", base.params().total()},
                        {"bits_per_matrix_weight", 8.0 * double(bytes[f]) / double(matrix_weights)},
                        {"decode_tokens_per_s", tern::bench::Median(tps[f])},
                        {"weight_gb_per_s", tern::bench::Median(bw[f])}};
    if (tps.count("fp32"))
      s["tokens_per_s_over_fp32"] = tern::bench::Median(tps[f]) / tern::bench::Median(tps["fp32"]);
    if (bw.count("int4"))
      s["bandwidth_over_int4"] = tern::bench::Median(bw[f]) / tern::bench::Median(bw["int4"]);
    std::printf("%s\n", s.dump().c_str());
  }
  return 0;
}
