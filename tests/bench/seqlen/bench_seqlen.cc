// tern-bench-seqlen: the longest sequence a model trains under a device memory budget, for the
// whole-sequence path (Ulysses' per-rank work at sequence-parallel size 1: chunked attention,
// activation checkpointing, no offload) and for FPDT with its store offloaded to the host
// tier. From --start, the sequence doubles until Reserve is refused (RESOURCE_EXHAUSTED: the
// activations do not fit next to the training state) or --max-seq; each length that fits
// trains --steps steps (after one warm-up) and prints one JSON line: step time, tokens/s, MFU,
// and the device and host peaks. A last line compares the two: the longest lengths and their
// ratio, and FPDT's tokens/s over the whole-sequence path's at the lengths both train. --sp P
// runs P sequence-parallel ranks as threads (Ulysses' all-to-all; FPDT over the group), the
// budget per rank. The
// modes run interleaved at each length (--repeats times, medians), as the machine is shared.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "tests/bench/common.h"
#include "tests/bench/model_flags.h"
#include "worker/comm/groups.h"
#include "worker/comm/in_memory_store.h"
#include "worker/core/device.h"
#include "worker/core/timeouts.h"
#include "worker/engine/sgemm_peak.h"
#include "worker/model/config.h"
#include "worker/model/transformer.h"
#include "worker/sequence/slice.h"
#include "worker/sequence/ulysses.h"
#include "worker/zero/state.h"

namespace {

using tern::bench::Median;

struct Args : tern::bench::ModelFlags {
  Args() { heads = 4; }
  int batch = 1, start = 512, max_seq = 65536, steps = 2, threads = 2, chunk = 1024;
  double budget_mib = 96, host_budget_mib = 0;
  std::string modes = "ulysses,fpdt";
  double peak_gflops = 0;
  int repeats = 1;
  int sp = 1;
};

struct Result {
  bool fits = false;
  std::string refused;
  double step_ms = 0, tokens_per_s = 0, mfu = 0;
  uint64_t device_peak = 0, host_peak = 0;
};

// One rank's run at sequence length T (the whole sequence; the rank holds T / P tokens). With
// P > 1 every rank calls it on its own thread with its communicator.
Result RunRank(const Args& a, const tern::model::ModelDims& dims, const std::string& mode, int T,
               int P, int r, tern::comm::Communicator* comm) {
  using namespace tern;
  Result res;
  // OpenMP's thread count is per thread: each rank thread sets its own share.
  kernels::SetNumThreads(std::max(1, a.threads / std::max(1, P)));
  CpuDevice dev;
  dev.set_budget(MemoryTier::kDevice, uint64_t(a.budget_mib * 1048576));
  dev.set_budget(MemoryTier::kHost, uint64_t(a.host_budget_mib * 1048576));
  model::Transformer<float> m(dims, model::Backend<float>{&dev, &kernels::CpuOps<float>()});
  if (mode == "fpdt") {
    m.set_fpdt({a.chunk, true});
  } else {
    m.set_recompute_layers(true);
  }
  std::unique_ptr<sequence::UlyssesExchange<float>> ex;
  std::vector<int32_t> pos(size_t(T / P));
  for (int i = 0; i < T / P; ++i) pos[size_t(i)] = i;
  if (P > 1) {
    auto e = sequence::UlyssesExchange<float>::Create(comm, dims.NH, dims.NKV, dims.HS,
                                                      kDefaultCollectiveTimeout, &dev);
    if (!e.ok()) {
      res.refused = std::string(e.status().message());
      return res;
    }
    ex = std::move(*e);
    pos = mode == "fpdt" ? sequence::FpdtPositions(T, P, r, a.chunk / P)
                         : sequence::ContiguousPositions(T, P, r);
    m.set_sequence(ex.get(), pos);
  }
  std::vector<float> init(m.params().total());
  m.InitParams(init.data(), 1234);
  auto state = zero::CreateLocalState(m.params(), init);
  init = {};
  auto charge = Charge::Make(dev, state->memory().total(), MemoryTier::kDevice, "training state");
  if (!charge.ok()) {
    res.refused = std::string(charge.status().message());
    return res;
  }
  const int n = T / P;
  if (absl::Status st = m.Reserve(a.batch, n); !st.ok()) {
    res.refused = std::string(st.message());
    return res;
  }
  res.fits = true;
  std::mt19937_64 rng(7);
  std::vector<int32_t> full(size_t(a.batch) * T), tok(size_t(a.batch) * n), tgt(tok.size());
  for (auto& t : full) t = int32_t(rng() % dims.V);
  sequence::SliceByPositions(full.data(), a.batch, T, pos, tok.data());
  for (size_t i = 0; i < tgt.size(); ++i) tgt[i] = tok[(i + 1) % tgt.size()];
  optim::AdamWConfig opt;
  std::vector<double> ms;
  for (int s = 0; s <= a.steps; ++s) {
    if (comm != nullptr) (void)comm->Barrier(comm::CollectiveOptions{});
    const tern::bench::Stopwatch watch;
    state->BeginMicroStep(true);
    m.Forward(state->source(), tok.data(), tgt.data(), a.batch, n);
    m.Backward(state->source(), 1.0f / P);
    if (!m.sequence_status().ok()) {
      res.fits = false;
      res.refused = std::string(m.sequence_status().message());
      return res;
    }
    auto norm = state->FinishBackward();
    absl::Status st = norm.ok() ? state->OptimizerStep(opt, 1e-4f, s + 1, 1.0f) : norm.status();
    if (!st.ok()) {
      res.fits = false;
      res.refused = std::string(st.message());
      return res;
    }
    if (comm != nullptr) (void)comm->Barrier(comm::CollectiveOptions{});
    if (s > 0) ms.push_back(watch.Ms());
  }
  res.step_ms = Median(ms);
  res.device_peak = dev.usage(MemoryTier::kDevice).peak;
  res.host_peak = dev.usage(MemoryTier::kHost).peak;
  return res;
}

// The whole group's run: P ranks as threads over an in-memory store (Gloo), each with its own
// device and budget; the step time is rank 0's (steps end in a barrier), peaks the largest.
Result RunLength(const Args& a, const tern::model::ModelDims& dims, const std::string& mode, int T,
                 double peak) {
  using namespace tern;
  const int P = a.sp;
  Result r;
  if (P == 1) {
    r = RunRank(a, dims, mode, T, 1, 0, nullptr);
  } else {
    comm::InMemoryStore store;
    std::vector<std::unique_ptr<comm::Communicator>> comms(static_cast<size_t>(P));
    std::vector<Result> rs(static_cast<size_t>(P));
    std::vector<std::thread> th;
    for (int i = 0; i < P; ++i)
      th.emplace_back([&, i] {
        auto c = comm::CreateCommunicator(store, "sp", i, P, {});
        if (!c.ok()) {
          rs[size_t(i)].refused = std::string(c.status().message());
          return;
        }
        comms[size_t(i)] = std::move(*c);
        rs[size_t(i)] = RunRank(a, dims, mode, T, P, i, comms[size_t(i)].get());
      });
    for (auto& t : th) t.join();
    r = rs[0];
    for (const auto& x : rs) {
      r.fits = r.fits && x.fits;
      if (!x.fits && r.refused.empty()) r.refused = x.refused;
      r.device_peak = std::max(r.device_peak, x.device_peak);
      r.host_peak = std::max(r.host_peak, x.host_peak);
    }
  }
  if (!r.fits) return r;
  r.tokens_per_s = double(a.batch) * T / (r.step_ms / 1e3);
  r.mfu = model::EstimateCost(dims, T).flops_per_token * r.tokens_per_s / (peak * 1e9);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"tern-bench-seqlen: the longest trainable sequence under a device budget"};
  tern::bench::AddModelFlags(app, a);
  app.add_option("--batch", a.batch);
  app.add_option("--start", a.start, "First sequence length");
  app.add_option("--max-seq", a.max_seq, "Stop doubling past this length");
  app.add_option("--steps", a.steps, "Timed steps per length (after one warm-up)");
  app.add_option("--threads", a.threads);
  app.add_option("--chunk", a.chunk, "FPDT chunk tokens");
  app.add_option("--budget-mib", a.budget_mib, "Device memory budget per rank (MiB)");
  app.add_option("--host-budget-mib", a.host_budget_mib, "Host tier budget (MiB; 0 = none)");
  app.add_option("--modes", a.modes, "Comma-separated: ulysses, fpdt");
  app.add_option("--peak-gflops", a.peak_gflops, "sgemm peak for MFU (default: measured)");
  app.add_option("--repeats", a.repeats, "Interleaved runs per mode and length (median)");
  app.add_option("--sp", a.sp,
                 "Sequence-parallel ranks (threads; --threads split among them); the budget is "
                 "per rank");
  CLI11_PARSE(app, argc, argv);
  tern::kernels::SetNumThreads(std::max(1, a.threads / std::max(1, a.sp)));
  const double peak = tern::engine::ResolveSgemmPeak(a.threads, a.peak_gflops).gflops;

  auto dims = tern::model::ResolveModelDims(tern::bench::ModelConfigFor(a, a.max_seq), a.max_seq);
  if (!dims.ok()) {
    std::fprintf(stderr, "%s\n", std::string(dims.status().message()).c_str());
    return 2;
  }
  std::map<std::string, std::map<int, Result>> all;
  std::vector<std::string> modes;
  for (size_t p = 0; p <= a.modes.size();) {
    const size_t q = std::min(a.modes.find(',', p), a.modes.size());
    modes.push_back(a.modes.substr(p, q - p));
    p = q + 1;
  }
  // Lengths double; at each, the modes still fitting run interleaved (A B A B) --repeats
  // times and report the median.
  std::map<std::string, bool> open;
  for (const auto& m : modes) open[m] = true;
  for (int T = a.start; T <= a.max_seq; T *= 2) {
    std::map<std::string, std::vector<Result>> runs;
    for (int rep = 0; rep < a.repeats; ++rep) {
      for (const std::string& mode : modes) {
        if (!open[mode]) continue;
        Result r = RunLength(a, *dims, mode, T, peak);
        if (!r.fits) {
          open[mode] = false;
          nlohmann::json j = {{"mode", mode}, {"seq", T}, {"fits", false}, {"refused", r.refused}};
          tern::bench::PrintJsonLine(j);
          continue;
        }
        runs[mode].push_back(r);
      }
    }
    for (auto& [mode, rs] : runs) {
      if (!open[mode]) continue;
      std::vector<double> ms;
      for (const auto& r : rs) ms.push_back(r.step_ms);
      Result r = rs.front();
      r.step_ms = Median(ms);
      r.tokens_per_s = double(a.batch) * T / (r.step_ms / 1e3);
      r.mfu = tern::model::EstimateCost(*dims, T).flops_per_token * r.tokens_per_s / (peak * 1e9);
      for (const auto& x : rs) {
        r.device_peak = std::max(r.device_peak, x.device_peak);
        r.host_peak = std::max(r.host_peak, x.host_peak);
      }
      nlohmann::json j = {{"mode", mode},
                          {"seq", T},
                          {"fits", true},
                          {"step_ms", r.step_ms},
                          {"tokens_per_s", r.tokens_per_s},
                          {"mfu", r.mfu},
                          {"device_peak_mib", r.device_peak / 1048576.0},
                          {"host_peak_mib", r.host_peak / 1048576.0},
                          {"repeats", rs.size()}};
      tern::bench::PrintJsonLine(j);
      all[mode][T] = r;
    }
    bool any = false;
    for (const auto& [m, o] : open) any = any || o;
    if (!any) break;
  }
  nlohmann::json s = {{"type", "summary"},
                      {"budget_mib", a.budget_mib},
                      {"model",
                       {{"arch", a.arch},
                        {"dim", a.dim},
                        {"layers", a.layers},
                        {"heads", a.heads},
                        {"vocab", a.vocab}}},
                      {"chunk", a.chunk},
                      {"sequence_parallel_size", a.sp},
                      {"max_seq", a.max_seq},
                      {"sgemm_peak_gflops", peak}};
  for (const auto& [mode, rows] : all)
    s["longest_" + mode] = rows.empty() ? 0 : rows.rbegin()->first;
  if (all.count("ulysses") && all.count("fpdt") && !all["ulysses"].empty()) {
    s["longest_ratio"] = double(all["fpdt"].empty() ? 0 : all["fpdt"].rbegin()->first) /
                         all["ulysses"].rbegin()->first;
    nlohmann::json ratios = nlohmann::json::object();
    for (const auto& [T, u] : all["ulysses"])
      if (all["fpdt"].count(T))
        ratios[std::to_string(T)] = all["fpdt"][T].tokens_per_s / u.tokens_per_s;
    s["fpdt_over_ulysses_tokens_per_s"] = ratios;
  }
  tern::bench::PrintJsonLine(s);
  return 0;
}
