// Engine-side subcommands: train, describe, generate, data prepare.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/commands.h"
#include "client/engine/local_launcher.h"
#include "client/engine/output.h"
#include "client/engine/spec_cli.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "spdlog/fmt/fmt.h"
#include "worker/core/status.h"
#include "worker/data/prepare.h"
#include "worker/data/retrieval.h"
#include "worker/engine/export.h"
#include "worker/engine/memory_plan.h"
#include "worker/engine/trainer.h"

namespace tern::cli {
namespace {

// Exit codes: 2 = bad input (nothing was written), 1 = failure while running.
int Fail(const absl::Status& st, bool bad_input) {
  fmt::print(stderr, "error: {}\n", std::string(st.message()));
  return bad_input ? 2 : 1;
}

int DefaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

struct TrainArgs {
  std::string spec;
  std::vector<std::string> sets;
  bool json = false;
  int threads = 0;
  std::string save_final;
  int ranks = 1;
  int ranks_per_node = 0;
  int collective_timeout_s = kDefaultCollectiveTimeoutS;
  bool resume = false;
  double peak_gflops = 0;
  bool skip_memory_check = false;
  bool bind_cores = true;
};

int RunTrain(const TrainArgs& a) {
  if (a.ranks < 1) return Fail(absl::InvalidArgumentError("--ranks: must be >= 1"), true);
  const bool launch = a.ranks > 1 || a.ranks_per_node > 0;
  const int per_node = a.ranks_per_node > 0 ? a.ranks_per_node : a.ranks;
  if (launch && a.ranks % per_node != 0)
    return Fail(absl::InvalidArgumentError(absl::StrCat("--ranks-per-node ", per_node,
                                                        " does not divide --ranks ", a.ranks)),
                true);
  spec::ResolveOptions ro;
  ro.world_size = a.ranks;
  auto cfg = LoadResolvedSpec(a.spec, a.sets, ro, [&](tern::v1::JobSpec& s) -> absl::Status {
    if (launch) {
      s.mutable_resources()->set_nodes(a.ranks / per_node);
      s.mutable_resources()->set_ranks_per_node(per_node);
    }
    return absl::OkStatus();
  });
  if (!cfg.ok()) return Fail(cfg.status(), true);
  if (auto st = ApplyResumeFlag(a.resume, &*cfg); !st.ok()) return Fail(st, true);
  // Every rank of a local launch shares this host: all of them must fit before any starts.
  if (launch && !a.skip_memory_check) {
    const int threads = a.threads > 0
                            ? a.threads
                            : (cfg->threads_per_rank > 0 ? cfg->threads_per_rank
                                                         : std::max(1, DefaultThreads() / a.ranks));
    auto st = engine::CheckJobFitsThisHost(*cfg, threads, a.ranks);
    if (!st.ok()) return Fail(st, true);
  }
  if (launch) {
    LaunchOptions lo;
    lo.check_memory = !a.skip_memory_check;
    lo.ranks = a.ranks;
    lo.ranks_per_node = per_node;
    lo.threads_per_rank = a.threads;
    lo.json = a.json;
    lo.save_final = a.save_final;
    lo.collective_timeout_s = a.collective_timeout_s;
    lo.peak_gflops = a.peak_gflops;
    lo.bind_cores = a.bind_cores;
    return LaunchLocalRanks(*cfg, lo);
  }
  ConsoleSink sink(a.json, cfg->steps_per_print);
  engine::TrainerOptions opts;
  opts.threads = a.threads > 0
                     ? a.threads
                     : (cfg->threads_per_rank > 0 ? cfg->threads_per_rank : DefaultThreads());
  opts.sink = &sink;
  opts.save_final_dir = a.save_final;
  opts.peak_gflops = a.peak_gflops;
  opts.check_memory = !a.skip_memory_check;
  auto trainer = engine::Trainer::Create(*cfg, std::move(opts));
  if (!trainer.ok()) return Fail(trainer.status(), IsInputError(trainer.status()));
  absl::Status st = (*trainer)->Run();
  if (!st.ok()) return Fail(st, false);
  return 0;
}

int RunDescribe(const std::string& path, const std::vector<std::string>& sets, int ranks,
                bool json) {
  spec::ResolveOptions ro;
  ro.world_size = ranks;
  ro.check_files = false;
  auto cfg = LoadResolvedSpec(path, sets, ro);
  if (!cfg.ok()) return Fail(cfg.status(), true);
  if (!cfg->dims_resolved)
    return Fail(absl::NotFoundError(absl::StrCat("model.config_file: cannot open ",
                                                 cfg->spec.model().config_file())),
                true);
  const auto& d = cfg->dims;
  const auto cost = model::EstimateCost(d, cfg->seq_len);
  const double P = double(cost.params);
  const int n = cfg->world_size(), stage = cfg->zero_stage;
  // The same plan the Trainer checks before allocating (engine/memory_plan.h).
  const int ranks_on_host = std::max(1, n / std::max(1, cfg->nodes));
  const int threads = cfg->threads_per_rank > 0
                          ? cfg->threads_per_rank
                          : std::max(1, DefaultThreads() / std::max(1, ranks_on_host));
  const engine::RankMemoryPlan plan = engine::PlanRankMemory(*cfg, threads);
  auto host = engine::ReadHostMemory();
  const absl::Status fits =
      host.ok() ? engine::CheckFitsHost(plan, ranks_on_host, *host) : host.status();
  nlohmann::json j = {{"model_type", d.model_type},
                      {"params", cost.params},
                      {"hidden_size", d.C},
                      {"num_hidden_layers", d.L},
                      {"num_attention_heads", d.NH},
                      {"num_key_value_heads", d.NKV},
                      {"intermediate_size", d.F},
                      {"vocab_size", d.V},
                      {"seq_len", cfg->seq_len},
                      {"flops_per_token", cost.flops_per_token},
                      {"weight_bytes", 4 * P},
                      {"grad_bytes", 4 * P},
                      {"adam_state_bytes", 8 * P},
                      {"ranks", n},
                      {"sequence_parallel_size", cfg->sp_size},
                      {"zero_stage", stage},
                      {"per_rank",
                       {{"param_bytes", plan.param_bytes},
                        {"grad_bytes", plan.grad_bytes},
                        {"optim_bytes", plan.optim_bytes},
                        {"checkpoint_staging_bytes", plan.checkpoint_staging_bytes},
                        {"activation_bytes", plan.activation_bytes},
                        {"gather_pool_bytes", plan.gather_pool_bytes},
                        {"quant_scratch_bytes", plan.quant_scratch_bytes},
                        {"hpz_bytes", plan.hpz_bytes},
                        {"init_bytes", plan.init_bytes},
                        {"peak_bytes", plan.peak_bytes()}}},
                      {"host",
                       {{"ranks", ranks_on_host},
                        {"available_bytes", host.ok() ? host->available_bytes : 0},
                        {"fits", fits.ok()}}}};
  if (json) {
    fmt::print("{}\n", j.dump(2));
    return 0;
  }
  auto gib = [](double b) { return b / (1024.0 * 1024 * 1024); };
  fmt::print("model          {} ({} layers, hidden {}, {} heads / {} kv, ffn {}, vocab {}{})\n",
             d.model_type, d.L, d.C, d.NH, d.NKV, d.F, d.V,
             d.longrope ? absl::StrCat(", LongRoPE: long factors past ", d.rope_original_max,
                                       " positions, up to ", d.max_T)
                        : "");
  fmt::print("parameters     {:.3f} B ({})\n", P / 1e9, cost.params);
  fmt::print("FLOPs/token    {:.3f} GFLOP (training, seq {})\n", cost.flops_per_token / 1e9,
             cfg->seq_len);
  fmt::print("weights        {:.2f} GiB fp32\n", gib(4 * P));
  fmt::print("gradients      {:.2f} GiB fp32\n", gib(4 * P));
  fmt::print("Adam state     {:.2f} GiB (exp_avg + exp_avg_sq)\n", gib(8 * P));
  fmt::print(
      "per rank       {:.2f} GiB params + {:.2f} GiB grads + {:.2f} GiB optimizer = {:.2f} GiB "
      "(ZeRO-{}, {} ranks)\n",
      gib(plan.param_bytes), gib(plan.grad_bytes), gib(plan.optim_bytes),
      gib(plan.param_bytes + plan.grad_bytes + plan.optim_bytes), stage, n);
  fmt::print(
      "               + {:.2f} GiB activations (micro-batch {} x {}) + {:.2f} GiB gather pool + "
      "{:.2f} GiB ZeRO++ buffers + {:.2f} GiB hpZ copy + {:.2f} GiB checkpoint staging: peak "
      "{:.2f} GiB\n",
      gib(plan.activation_bytes), cfg->micro_batch, cfg->seq_len / cfg->sp_size,
      gib(plan.gather_pool_bytes), gib(plan.quant_scratch_bytes), gib(plan.hpz_bytes),
      gib(plan.checkpoint_staging_bytes), gib(plan.peak_bytes()));
  if (host.ok()) {
    fmt::print("this host      {} rank(s) need {:.2f} GiB of {:.2f} GiB available ({}): {}\n",
               ranks_on_host, gib(double(plan.peak_bytes()) * ranks_on_host),
               gib(host->available_bytes), host->source, fits.ok() ? "fits" : "does NOT fit");
  }
  return 0;
}

struct GenerateArgs {
  std::string model_dir, checkpoint, prompt;
  std::vector<std::string> more_prompts;  // --prompt given again: one batch
  int max_new_tokens = 200;
  float temperature = 0.8f;
  int top_k = 0;
  float top_p = 1.0f;
  std::vector<std::string> stop;
  bool no_kv_cache = false;
  bool stats = false;
  uint64_t seed = 1234;
  int threads = 0;
  std::string ms_poe;  // MIN:MAX[:FIRST_LAYER], empty = off
};

// The next token from the last position's logits: greedy at temperature 0, else sampled among
// the top_k most likely (0 = all) whose cumulative probability reaches top_p.
int SampleNext(const float* logits, int V, const GenerateArgs& a, std::mt19937_64& rng) {
  if (a.temperature <= 0) return int(std::max_element(logits, logits + V) - logits);
  std::vector<int> idx(V);
  for (int v = 0; v < V; ++v) idx[v] = v;
  const int k = a.top_k > 0 ? std::min(a.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int x, int y) { return logits[x] > logits[y]; });
  const double mx = logits[idx[0]];
  std::vector<double> p(k);
  double sum = 0;
  for (int j = 0; j < k; ++j) sum += p[j] = std::exp((logits[idx[j]] - mx) / a.temperature);
  int keep = k;  // nucleus: the fewest most likely tokens whose mass reaches top_p
  if (a.top_p < 1.0f) {
    double mass = 0;
    for (int j = 0; j < k; ++j) {
      mass += p[j] / sum;
      if (mass >= a.top_p) {
        keep = j + 1;
        break;
      }
    }
    sum = 0;
    for (int j = 0; j < keep; ++j) sum += p[j];
  }
  double r = std::uniform_real_distribution<double>(0, sum)(rng);
  for (int j = 0; j < keep; ++j)
    if ((r -= p[j]) <= 0) return idx[j];
  return idx[keep - 1];
}

bool EndsWithStop(const std::string& text, const std::vector<std::string>& stops) {
  for (const auto& s : stops)
    if (!s.empty() && text.size() >= s.size() &&
        text.compare(text.size() - s.size(), s.size(), s) == 0)
      return true;
  return false;
}

// Several prompts: one KV cache row each (prefilled one by one), then every step decodes one
// token of every row in one batched forward (finished rows decode unused tokens, so every row's
// context grows by one a step, as padded rows do in Hugging Face); each text is printed when all
// are done.
// LongRoPE as transformers' Phi3ForCausalLM generates a batch: its rows are padded to one
// length, the length of the longest context here, and every forward picks one table for the
// whole batch by the largest position. So every call of a row takes the batch's longest
// context as its largest position (the prefills included: a short prompt next to one past
// original_max_position_embeddings rotates with the long factors), and the first time the
// longest context passes original_max_position_embeddings, every row's cache (short-rotated) is
// dropped and its whole context runs again with the long factors. Each step's tokens therefore
// equal a forward without cache over each row's whole context with the table its longest row
// picks.
int RunGenerateBatch(const GenerateArgs& a, const std::vector<std::string>& prompts,
                     model::Transformer<float>& model, model::ParamSource<float>& src) {
  const auto& d = model.dims();
  const int B = static_cast<int>(prompts.size());
  std::vector<std::vector<int32_t>> ctx(B);
  for (int r = 0; r < B; ++r) {
    for (unsigned char ch : prompts[r]) ctx[r].push_back(ch);
    if (ctx[r].empty()) ctx[r].push_back('\n');
    if (static_cast<int>(ctx[r].size()) + a.max_new_tokens > d.max_T)
      return Fail(absl::InvalidArgumentError(absl::StrCat(
                      "prompt ", r + 1, ": ", ctx[r].size(), " tokens + --max-new-tokens ",
                      a.max_new_tokens, " exceed the model's ", d.max_T,
                      " positions (a batch of prompts decodes within the KV cache)")),
                  true);
  }
  std::mt19937_64 rng(a.seed);
  auto cache_or = model.NewKvCache(B, d.max_T);
  if (!cache_or.ok()) return Fail(cache_or.status(), false);
  auto& cache = *cache_or;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<std::string> text(B);
  std::vector<bool> done(B, a.max_new_tokens == 0);
  std::vector<int32_t> next(B);
  // The longest row's context; all rows grow together, so it stays the longest.
  auto longest = [&] {
    size_t n = 0;
    for (const auto& c : ctx) n = std::max(n, c.size());
    return static_cast<int>(n);
  };
  // Runs every row's whole context into its (empty) cache row and samples its next token.
  auto prefill = [&] {
    const int64_t batch_max_pos = longest() - 1;
    for (int r = 0; r < B; ++r) {
      model.ForwardCached(src, ctx[r].data(), 1, static_cast<int>(ctx[r].size()), &cache, r,
                          batch_max_pos);
      if (!done[r])
        next[r] = SampleNext(model.logits() + (ctx[r].size() - 1) * size_t(d.V), d.V, a, rng);
    }
  };
  prefill();  // and each row's first token
  const double first_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  int decoded = 0;
  for (int i = 0; i < a.max_new_tokens; ++i) {
    for (int r = 0; r < B; ++r) {
      if (done[r]) continue;
      text[r].push_back(static_cast<char>(next[r]));
      done[r] = EndsWithStop(text[r], a.stop) || i + 1 == a.max_new_tokens;
    }
    if (std::all_of(done.begin(), done.end(), [](bool x) { return x; })) break;
    for (int r = 0; r < B; ++r) ctx[r].push_back(next[r]);
    ++decoded;
    // LongRoPE: the longest row's cache (n - 1 positions) still short-rotated and its context
    // past original_max: every row again, now with the long factors.
    const int n = longest();
    if (d.longrope && n - 1 <= d.rope_original_max && n > d.rope_original_max) {
      for (int r = 0; r < B; ++r) cache.len[r] = 0;
      prefill();
      continue;
    }
    model.ForwardCached(src, next.data(), B, 1, &cache);  // finished rows decode unused tokens
    for (int r = 0; r < B; ++r)
      if (!done[r]) next[r] = SampleNext(model.logits() + size_t(r) * d.V, d.V, a, rng);
  }
  for (int r = 0; r < B; ++r) fmt::print("{}{}\n", prompts[r], text[r]);
  std::fflush(stdout);
  if (a.stats) {
    const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double decode_ms = total_ms - first_ms;
    fmt::print(stderr,
               "generate: {} prompts, KV cache on; prefill and first tokens after {:.1f} ms; then "
               "{:.1f} tokens/s in batches of {} ({:.2f} ms per step)\n",
               B, first_ms, decoded > 0 ? decoded * B / (decode_ms / 1e3) : 0.0, B,
               decoded > 0 ? decode_ms / decoded : 0.0);
  }
  return 0;
}

int RunGenerate(const GenerateArgs& a) {
  if (a.model_dir.empty() == a.checkpoint.empty())
    return Fail(absl::InvalidArgumentError("give exactly one of --model-dir and --checkpoint"),
                true);
  std::optional<model::MsPoeOptions> ms_poe;
  if (!a.ms_poe.empty()) {
    auto o = model::ParseMsPoe(a.ms_poe);
    if (!o.ok())
      return Fail(absl::InvalidArgumentError(absl::StrCat("--ms-poe: ", o.status().message())),
                  true);
    ms_poe = *o;
  }
  auto loaded = a.checkpoint.empty() ? engine::LoadModelAny(a.model_dir)
                                     : engine::LoadModelFromCheckpoint(a.checkpoint);
  if (!loaded.ok()) return Fail(loaded.status(), true);
  kernels::SetNumThreads(a.threads > 0 ? a.threads : DefaultThreads());
  const auto& d = loaded->dims;
  model::Transformer<float> model(d);
  if (loaded->quantized) {
    const absl::Status st = model.set_quantized(loaded->quantized.get());
    if (!st.ok()) return Fail(st, true);
  }
  model::FlatParamSource<float> src(&model.params(), loaded->weights(), nullptr);
  if (ms_poe) {
    const absl::Status st = model.set_ms_poe(*ms_poe);
    if (!st.ok())
      return Fail(absl::Status(st.code(), absl::StrCat("--ms-poe ", a.ms_poe, ": ", st.message())),
                  true);
  }
  if (!a.more_prompts.empty()) {
    if (a.no_kv_cache)
      return Fail(absl::InvalidArgumentError("several --prompt need the KV cache"), true);
    std::vector<std::string> prompts = {a.prompt};
    prompts.insert(prompts.end(), a.more_prompts.begin(), a.more_prompts.end());
    return RunGenerateBatch(a, prompts, model, src);
  }
  std::vector<int32_t> ctx;
  for (unsigned char ch : a.prompt) ctx.push_back(ch);
  if (ctx.empty()) ctx.push_back('\n');
  const int prompt_tokens = static_cast<int>(ctx.size());
  std::mt19937_64 rng(a.seed);
  fmt::print("{}", a.prompt);
  // With the KV cache: one prefill of the prompt, then one position per token, while the
  // context fits the model's positions; past that (or with --no-kv-cache) every token
  // recomputes the window of the last max_position_embeddings tokens.
  const bool cached = !a.no_kv_cache && prompt_tokens < d.max_T;
  auto cache_or = model.NewKvCache(1, d.max_T);
  if (!cache_or.ok()) return Fail(cache_or.status(), false);
  auto& cache = *cache_or;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  double first_ms = 0;
  std::string text;
  int generated = 0;
  for (int i = 0; i < a.max_new_tokens; ++i) {
    const float* logits = nullptr;
    if (cached && static_cast<int>(ctx.size()) <= d.max_T) {
      // LongRoPE as transformers' Phi3ForCausalLM generates: the first time the context passes
      // original_max_position_embeddings, the cache (rotated with the short factors) is dropped
      // and the whole context runs again, now with the long factors.
      if (d.longrope && cache.len[0] > 0 && cache.len[0] <= d.rope_original_max &&
          static_cast<int>(ctx.size()) > d.rope_original_max)
        cache.len[0] = 0;
      const int fresh = static_cast<int>(ctx.size()) - cache.len[0];  // the prompt, then 1
      model.ForwardCached(src, ctx.data() + cache.len[0], 1, fresh, &cache);
      logits = model.logits() + size_t(fresh - 1) * d.V;
    } else {
      const int n = std::min<int>(ctx.size(), d.max_T);
      model.Forward(src, ctx.data() + ctx.size() - n, nullptr, 1, n);
      logits = model.logits() + size_t(n - 1) * d.V;
    }
    // Ms-PoE: the slots measured on the prompt stay for the whole generation (as a KV cache row
    // keeps them), also where the context is recomputed.
    if (i == 0 && ms_poe) {
      const absl::Status st = model.set_ms_poe_fixed_slots(cache.len[0] > 0 ? cache.ms_poe_slots
                                                                            : model.ms_poe_slots());
      if (!st.ok()) return Fail(st, false);
    }
    const int next = SampleNext(logits, d.V, a, rng);
    if (i == 0) first_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    ctx.push_back(next);
    ++generated;
    text.push_back(static_cast<char>(next));
    std::fputc(next, stdout);
    std::fflush(stdout);
    if (EndsWithStop(text, a.stop)) break;
  }
  fmt::print("\n");
  std::fflush(stdout);  // the text first, then the report on stderr
  if (a.stats) {
    const double total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    const double decode_ms = total_ms - first_ms;
    const int decoded = std::max(0, generated - 1);
    fmt::print(stderr,
               "generate: {} prompt token(s), {} generated, KV cache {}; first token after "
               "{:.1f} ms; then {:.1f} tokens/s ({:.2f} ms/token)\n",
               prompt_tokens, generated, cached ? "on" : "off", first_ms,
               decoded > 0 ? decoded / (decode_ms / 1e3) : 0.0,
               decoded > 0 ? decode_ms / decoded : 0.0);
  }
  return 0;
}

}  // namespace

void AddCkptCommands(CLI::App& app, int* exit_code);  // ckpt_commands.cc
void AddEvalCommand(CLI::App& app, int* exit_code);   // eval_command.cc

void AddEngineCommands(CLI::App& app, int* exit_code) {
  AddCkptCommands(app, exit_code);
  AddEvalCommand(app, exit_code);
  auto targs = std::make_shared<TrainArgs>();
  auto* train = app.add_subcommand("train", "Run a job in this process (no daemon)");
  train->add_option("spec", targs->spec, "Job spec JSON file")->required();
  train->add_option("--set", targs->sets, "Override a spec field: key.path=value")->take_all();
  train->add_flag("--json", targs->json, "One JSON object per line");
  train
      ->add_option(
          "--threads", targs->threads,
          "Compute threads (default: all cores; per rank with --ranks: the size of its CPU set)")
      ->check(CLI::Range(1, 4096));
  train->add_option("--save-final", targs->save_final,
                    "Write config.json + model.safetensors here");
  train->add_option("--ranks", targs->ranks, "Data-parallel rank processes on this machine")
      ->check(CLI::Range(1, 1024));
  train
      ->add_option("--ranks-per-node", targs->ranks_per_node,
                   "Ranks per (simulated) node; --ranks 4 --ranks-per-node 2 forms two nodes")
      ->check(CLI::Range(1, 1024));
  train->add_flag("--bind-cores,!--no-bind-cores", targs->bind_cores,
                  "With --ranks: split this process's CPUs into one disjoint set per rank and "
                  "bind each rank to its set, threads = the set's size (default on)");
  train
      ->add_option("--collective-timeout-s", targs->collective_timeout_s,
                   "Seconds a collective may wait for a peer before failing")
      ->check(CLI::Range(1, 86400));
  train
      ->add_option("--peak-gflops", targs->peak_gflops,
                   "sgemm GFLOP/s of one rank for MFU (default: $TERN_PEAK_GFLOPS, else "
                   "measured once per host and cached)")
      ->check(CLI::PositiveNumber);
  train->add_flag("--resume", targs->resume,
                  "Continue from checkpoint.load (default: the newest complete checkpoint)");
  train->add_flag("--skip-memory-check", targs->skip_memory_check,
                  "Start even when the memory plan (tern describe) exceeds what this host has "
                  "available");
  train->callback([targs, exit_code] { *exit_code = RunTrain(*targs); });

  auto dspec = std::make_shared<std::string>();
  auto dsets = std::make_shared<std::vector<std::string>>();
  auto dranks = std::make_shared<int>(0);
  auto djson = std::make_shared<bool>(false);
  auto* describe = app.add_subcommand("describe", "Report a job's model size, FLOPs and memory");
  describe->add_option("spec", *dspec, "Job spec JSON file")->required();
  describe->add_option("--set", *dsets, "Override a spec field: key.path=value")->take_all();
  describe->add_option("--ranks", *dranks, "Data-parallel ranks (default: resources)")
      ->check(CLI::Range(1, 1 << 20));
  describe->add_flag("--json", *djson, "Print JSON");
  describe->callback([=] { *exit_code = RunDescribe(*dspec, *dsets, *dranks, *djson); });

  auto gargs = std::make_shared<GenerateArgs>();
  auto* gen = app.add_subcommand("generate", "Sample text from a trained model");
  gen->add_option("--model-dir", gargs->model_dir,
                  "Weights: a safetensors directory (--save-final, tern ckpt export, Hugging "
                  "Face) or a checkpoint root / step directory");
  gen->add_option("--checkpoint", gargs->checkpoint, "Checkpoint root (loads its latest step)");
  gen->add_option("--prompt", gargs->prompt, "Prompt text");
  gen->add_option("--and-prompt", gargs->more_prompts,
                  "Another prompt decoded in the same batch (repeatable; with the KV cache)");
  gen->add_option("--max-new-tokens", gargs->max_new_tokens, "Tokens to generate")
      ->check(CLI::Range(0, 1 << 24));
  gen->add_option("--temperature", gargs->temperature, "Sampling temperature (0 = greedy)")
      ->check(CLI::Range(0.0f, 100.0f));
  gen->add_option("--top-k", gargs->top_k, "Sample among the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", gargs->top_p,
                  "Sample among the most likely tokens whose probability reaches p (1 = all)")
      ->check(CLI::Range(0.0f, 1.0f));
  gen->add_option("--stop", gargs->stop, "Stop after generating this text (repeatable)");
  gen->add_flag("--no-kv-cache", gargs->no_kv_cache,
                "Recompute the whole context for every token instead of caching keys/values");
  gen->add_flag("--stats", gargs->stats,
                "Print the time to the first token and the decode rate on stderr");
  gen->add_option("--seed", gargs->seed, "Sampling seed");
  gen->add_option("--threads", gargs->threads, "Compute threads")->check(CLI::Range(1, 4096));
  gen->add_option("--ms-poe", gargs->ms_poe,
                  "Ms-PoE: RoPE positions divided per head group by ratios spread over "
                  "[MIN, MAX), ordered by each group's measured position sensitivity on the "
                  "prompt, from layer 2 (MIN:MAX:FIRST_LAYER to choose); no fine-tuning");
  gen->callback([gargs, exit_code] { *exit_code = RunGenerate(*gargs); });

  auto* data = app.add_subcommand("data", "Prepare datasets");
  data->require_subcommand(1);
  auto popts = std::make_shared<data::PrepareOptions>();
  auto* prep = data->add_subcommand("prepare", "Tokenize text into a Megatron indexed dataset");
  prep->add_option("--tokenizer", popts->tokenizer, "Tokenizer (byte)");
  prep->add_option("--input", popts->inputs, "Input text files")->required()->take_all();
  prep->add_option("--output", popts->output_prefix, "Output prefix (PREFIX.bin/.idx, PREFIX_val)")
      ->required();
  prep->add_option("--doc-separator", popts->doc_separator, "A line equal to this ends a document");
  prep->add_option("--val-fraction", popts->val_fraction, "Fraction of documents held out");
  prep->add_option("--seed", popts->seed, "Seed of the validation split");
  prep->callback([popts, exit_code] {
    auto report = data::PrepareDataset(*popts);
    if (!report.ok()) {
      *exit_code = Fail(report.status(), true);
      return;
    }
    fmt::print("{}\n", report->ToJson().dump());
    *exit_code = 0;
  });

  auto ropts = std::make_shared<data::RetrievalDataOptions>();
  auto key_digits = std::make_shared<std::string>("5");
  auto* ret = data->add_subcommand(
      "retrieval", "Write training data for `tern eval --retrieval`'s task, in its exact format");
  ret->add_option("--output", ropts->output_prefix, "Output prefix (PREFIX.bin/.idx, PREFIX_val)")
      ->required();
  ret->add_option("--seq-len", ropts->seq_len,
                  "Tokens per document (train with this data.seq_len: one document per window)")
      ->required();
  ret->add_option("--min-length", ropts->min_length,
                  "Shortest context (default --seq-len); lengths are uniform up to --seq-len, a "
                  "shorter context followed by a newline and filler");
  ret->add_option("--docs", ropts->docs, "Training documents");
  ret->add_option("--val-docs", ropts->val_docs, "Validation documents");
  ret->add_option("--key-digits", *key_digits,
                  "Key length N, or MIN:MAX uniform (longer keys: more copy targets per document)");
  ret->add_option("--seed", ropts->seed, "Seed of the keys, depths and filler phases");
  ret->callback([ropts, key_digits, exit_code] {
    const std::vector<std::string> parts = absl::StrSplit(*key_digits, ':');
    if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &ropts->min_key_digits) ||
        !absl::SimpleAtoi(parts.back(), &ropts->max_key_digits)) {
      *exit_code = Fail(absl::InvalidArgumentError(
                            absl::StrCat("--key-digits: '", *key_digits, "' is not N or MIN:MAX")),
                        true);
      return;
    }
    auto report = data::WriteRetrievalDataset(*ropts);
    if (!report.ok()) {
      *exit_code = Fail(report.status(), true);
      return;
    }
    fmt::print("{}\n", report->ToJson().dump());
    *exit_code = 0;
  });
}

}  // namespace tern::cli
