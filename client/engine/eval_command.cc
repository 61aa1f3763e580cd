// `tern eval`: what a model costs in quality. Perplexity (nats per token, bits per byte) on a
// Megatron dataset or a text file, and a synthetic long-context retrieval task (a key placed at
// a depth of a context; recall it) reporting accuracy by length and depth.

#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "spdlog/fmt/fmt.h"
#include "worker/core/status.h"
#include "worker/data/data_loader.h"
#include "worker/data/retrieval.h"
#include "worker/engine/export.h"
#include "worker/model/ms_poe.h"
#include "worker/model/transformer.h"

namespace tern::cli {
namespace {

struct EvalArgs {
  std::string model_dir, data, text;
  int seq_len = 0;  // 0 = the model's positions
  int batch = 4;
  int64_t max_windows = 0;  // 0 = all
  bool retrieval = false;
  std::vector<int> lengths;
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  int trials = 5;
  uint64_t seed = 1234;
  int threads = 0;
  bool json = false;
  std::string ms_poe;  // MIN:MAX[:FIRST_LAYER], empty = off
};

int Fail(const absl::Status& st) {
  fmt::print(stderr, "error: {}\n", std::string(st.message()));
  return 2;
}

// Mean cross-entropy over consecutive windows of seq_len + 1 tokens (overlapping by one), in
// order, `batch` windows per forward; at most `max_windows` (0 = all).
absl::StatusOr<nlohmann::json> Perplexity(const EvalArgs& a, model::Transformer<float>& model,
                                          model::ParamSource<float>& src, int seq_len) {
  std::vector<int32_t> tokens;  // the text file's bytes (byte tokenizer)
  std::unique_ptr<data::DataLoader> loader;
  int64_t windows = 0;
  if (!a.text.empty()) {
    std::ifstream in(a.text, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--text ", a.text, ": cannot open"));
    std::stringstream ss;
    ss << in.rdbuf();
    for (unsigned char ch : ss.str()) tokens.push_back(ch);
    windows = tokens.size() > 1 ? int64_t(tokens.size() - 1) / seq_len : 0;
  } else {
    auto l = data::DataLoader::Open(a.data, seq_len, a.seed);
    if (!l.ok()) return l.status();
    loader = std::move(*l);
    TERN_RETURN_IF_ERROR(loader->dataset().ValidateVocab(model.dims().V));
    windows = static_cast<int64_t>(loader->windows_per_epoch());
  }
  if (a.max_windows > 0) windows = std::min(windows, a.max_windows);
  if (windows < 1)
    return absl::InvalidArgumentError(absl::StrCat(
        a.text.empty() ? a.data : a.text, ": fewer than seq_len + 1 = ", seq_len + 1, " tokens"));
  for (int32_t t : tokens)
    if (t >= model.dims().V)
      return absl::InvalidArgumentError(absl::StrCat("--text ", a.text, ": byte ", t,
                                                     " is outside the model's vocabulary of ",
                                                     model.dims().V));
  double nats = 0;
  int64_t counted = 0;
  std::vector<int32_t> in(size_t(a.batch) * seq_len), tg(in.size());
  for (int64_t w0 = 0; w0 < windows; w0 += a.batch) {
    const int b = static_cast<int>(std::min<int64_t>(a.batch, windows - w0));
    for (int r = 0; r < b; ++r) {
      const int64_t w = w0 + r;
      if (loader) {
        loader->EvalBatch(w, 1, in.data() + size_t(r) * seq_len, tg.data() + size_t(r) * seq_len);
      } else {
        for (int t = 0; t < seq_len; ++t) {
          in[size_t(r) * seq_len + t] = tokens[size_t(w) * seq_len + t];
          tg[size_t(r) * seq_len + t] = tokens[size_t(w) * seq_len + t + 1];
        }
      }
    }
    const double mean = model.Forward(src, in.data(), tg.data(), b, seq_len);
    nats += mean * b * seq_len;
    counted += int64_t(b) * seq_len;
  }
  const double per_token = nats / double(counted);
  return nlohmann::json{
      {"task", "perplexity"},
      {"source", a.text.empty() ? a.data : a.text},
      {"windows", windows},
      {"seq_len", seq_len},
      {"tokens", counted},
      {"nats_per_token", per_token},
      {"perplexity", std::exp(per_token)},
      // Tern's tokenizer is bytes: one token per byte.
      {"bits_per_byte", per_token / std::log(2.0)},
      {"weights",
       model.quantized() ? kernels::WeightFormatName(model.quantized()->format) : "fp32"}};
}

// The retrieval task (worker/data/retrieval.h): five-digit keys, filler from its start; the
// answer is five greedy tokens (KV cache), correct when they are the key's digits.
constexpr int kKeyDigits = 5;
const int kMinRetrievalLength = data::MinRetrievalLength(kKeyDigits);

// The context lengths of the retrieval task: --lengths, each within the model's positions, or
// max/4, max/2 and max (those long enough).
absl::StatusOr<std::vector<int>> RetrievalLengths(const EvalArgs& a, int max_T) {
  std::vector<int> out;
  for (int L : a.lengths) {
    if (L < kMinRetrievalLength || L > max_T)
      return absl::InvalidArgumentError(absl::StrCat("--lengths: ", L, " is outside [",
                                                     kMinRetrievalLength, ", ", max_T,
                                                     "] (the needle and question, the model's "
                                                     "positions)"));
    out.push_back(L);
  }
  if (a.lengths.empty())
    for (int L : {max_T / 4, max_T / 2, max_T})
      if (L >= kMinRetrievalLength) out.push_back(L);
  if (out.empty())
    return absl::InvalidArgumentError(absl::StrCat("the model has ", max_T,
                                                   " positions; the retrieval task needs at least ",
                                                   kMinRetrievalLength));
  return out;
}

absl::StatusOr<nlohmann::json> Retrieval(const EvalArgs& a, const std::vector<int>& lengths,
                                         model::Transformer<float>& model,
                                         model::ParamSource<float>& src) {
  const auto& d = model.dims();
  TERN_ASSIGN_OR_RETURN(auto cache, model.NewKvCache(1, d.max_T));
  std::mt19937_64 rng(a.seed);
  nlohmann::json rows = nlohmann::json::array();
  for (int L : lengths) {
    for (double depth : a.depths) {
      int correct = 0;
      for (int trial = 0; trial < a.trials; ++trial) {
        const std::string key = data::RandomKey(kKeyDigits, rng);
        const std::string prompt = data::RetrievalPrompt(key, L, depth);
        std::vector<int32_t> ctx(prompt.begin(), prompt.end());
        cache.len[0] = 0;  // a fresh context
        std::string answer;
        for (int i = 0; i < kKeyDigits; ++i) {
          const int fresh = int(ctx.size()) - cache.len[0];
          model.ForwardCached(src, ctx.data() + cache.len[0], 1, fresh, &cache);
          const float* logits = model.logits() + size_t(fresh - 1) * d.V;
          const int next = int(std::max_element(logits, logits + d.V) - logits);
          answer.push_back(char(next));
          ctx.push_back(next);
        }
        correct += answer == key ? 1 : 0;
      }
      rows.push_back({{"length", L},
                      {"depth", depth},
                      {"trials", a.trials},
                      {"accuracy", double(correct) / a.trials}});
    }
  }
  return nlohmann::json{{"task", "retrieval"}, {"ms_poe", a.ms_poe}, {"rows", rows}};
}

int RunEval(const EvalArgs& a) {
  if (a.model_dir.empty()) return Fail(absl::InvalidArgumentError("--model-dir is required"));
  if (!a.retrieval && a.data.empty() == a.text.empty())
    return Fail(
        absl::InvalidArgumentError("give exactly one of --data and --text (or --retrieval)"));
  std::optional<model::MsPoeOptions> ms_poe;
  if (!a.ms_poe.empty()) {
    auto o = model::ParseMsPoe(a.ms_poe);
    if (!o.ok())
      return Fail(absl::InvalidArgumentError(absl::StrCat("--ms-poe: ", o.status().message())));
    ms_poe = *o;
  }
  auto loaded = engine::LoadModelAny(a.model_dir);
  if (!loaded.ok()) return Fail(loaded.status());
  kernels::SetNumThreads(a.threads > 0 ? a.threads : 1);
  model::Transformer<float> model(loaded->dims);
  if (loaded->quantized) {
    const absl::Status st = model.set_quantized(loaded->quantized.get());
    if (!st.ok()) return Fail(st);
  }
  if (ms_poe) {
    const absl::Status st = model.set_ms_poe(*ms_poe);
    if (!st.ok())
      return Fail(absl::Status(st.code(), absl::StrCat("--ms-poe ", a.ms_poe, ": ", st.message())));
  }
  model::FlatParamSource<float> src(&model.params(), loaded->weights(), nullptr);
  const int seq_len = a.seq_len > 0 ? a.seq_len : loaded->dims.max_T;
  if (seq_len > loaded->dims.max_T)
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--seq-len ", seq_len, " exceeds the model's ", loaded->dims.max_T, " positions")));
  std::vector<int> lengths;
  if (a.retrieval) {
    auto l = RetrievalLengths(a, loaded->dims.max_T);
    if (!l.ok()) return Fail(l.status());
    lengths = *l;
  }
  std::vector<nlohmann::json> results;
  if (!a.data.empty() || !a.text.empty()) {
    auto p = Perplexity(a, model, src, seq_len);
    if (!p.ok()) return Fail(p.status());
    results.push_back(*p);
  }
  if (a.retrieval) {
    auto r = Retrieval(a, lengths, model, src);
    if (!r.ok()) return Fail(r.status());
    results.push_back(*std::move(r));
  }
  for (const auto& r : results) {
    if (a.json) {
      fmt::print("{}\n", r.dump());
    } else if (r["task"] == "perplexity") {
      fmt::print(
          "perplexity on {}: {:.4f} nats/token, perplexity {:.3f}, {:.4f} bits/byte "
          "({} windows of {} tokens, {} weights)\n",
          r["source"].get<std::string>(), r["nats_per_token"].get<double>(),
          r["perplexity"].get<double>(), r["bits_per_byte"].get<double>(),
          r["windows"].get<int64_t>(), r["seq_len"].get<int>(), r["weights"].get<std::string>());
    } else {
      fmt::print("retrieval accuracy (length x depth){}:\n",
                 a.ms_poe.empty() ? "" : absl::StrCat(", Ms-PoE ", a.ms_poe));
      for (const auto& row : r["rows"])
        fmt::print("  length {:5d}  depth {:.2f}  {:.2f}\n", row["length"].get<int>(),
                   row["depth"].get<double>(), row["accuracy"].get<double>());
    }
  }
  return 0;
}

}  // namespace

void AddEvalCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Measure a model: perplexity and long-context retrieval");
  cmd->add_option("--model-dir", a->model_dir,
                  "Weights: a safetensors directory or a checkpoint root / step directory")
      ->required();
  cmd->add_option("--data", a->data, "Megatron dataset PREFIX (its windows in order)");
  cmd->add_option("--text", a->text, "A text file (bytes are tokens)");
  cmd->add_option("--seq-len", a->seq_len, "Window length (default: the model's positions)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", a->batch, "Windows per forward")->check(CLI::Range(1, 4096));
  cmd->add_option("--max-windows", a->max_windows, "Evaluate at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--retrieval", a->retrieval,
                "The synthetic retrieval task: a key at each depth of contexts of each length");
  cmd->add_option("--lengths", a->lengths, "Context lengths (default: max/4, max/2, max)")
      ->delimiter(',');
  cmd->add_option("--depths", a->depths, "Depths of the key in [0, 1]")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--trials", a->trials, "Keys per (length, depth)")->check(CLI::Range(1, 10000));
  cmd->add_option("--seed", a->seed, "Seed of the keys");
  cmd->add_option("--threads", a->threads, "Compute threads (default 1)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--ms-poe", a->ms_poe,
                  "Ms-PoE: RoPE positions divided per head group by ratios spread over "
                  "[MIN, MAX), ordered by each group's measured position sensitivity, from layer "
                  "2 (MIN:MAX:FIRST_LAYER to choose); no fine-tuning (e.g. 1.2:1.8)");
  cmd->add_flag("--json", a->json, "One JSON line per task");
  cmd->callback([a, exit_code] { *exit_code = RunEval(*a); });
}

}  // namespace tern::cli
