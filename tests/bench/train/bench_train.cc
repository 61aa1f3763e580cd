// tern-bench-train: one training step (forward, cross-entropy, backward, optional clip, AdamW)
// timed like the PyTorch peer torch_train_step.py, with the same flags and JSON fields, plus
// `mfu` against the cblas_sgemm peak measured for the same thread count.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <span>
#include <vector>

#include "kernels/cpu/peak.h"
#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "tests/bench/common.h"
#include "tests/bench/model_flags.h"
#include "worker/comm/groups.h"
#include "worker/comm/tcp_store.h"
#include "worker/comm/topology.h"
#include "worker/engine/trainer.h"
#include "worker/model/transformer.h"
#include "worker/zero/state.h"

namespace {

struct Args : tern::bench::ModelFlags {
  int seq = 256;
  int batch = 8, steps = 10, warmup = 2, threads = 2;
  float lr = 1e-3f, wd = 0.1f, clip = 0.0f;
  std::string data = "fixed";
  uint64_t seed = 1234;
  int ranks = 1;
  int ranks_per_node = 0;
  int zero_stage = 0;
};

// Token batches (batch, seq): inputs and next-token targets cut from random windows, drawn
// once (--data fixed) or again before every step (--data random). Each rank draws its own.
class TokenBatches {
 public:
  TokenBatches(const Args& a, int rank)
      : a_(a),
        rng_(a.seed + 1 + uint64_t(rank) * 7919),
        window_(size_t(a.batch) * (a.seq + 1)),
        inp_(size_t(a.batch) * a.seq),
        tgt_(size_t(a.batch) * a.seq) {
    Draw();
  }
  void Draw() {
    for (auto& t : window_) t = int32_t(rng_() % a_.vocab);
    for (int b = 0; b < a_.batch; ++b)
      for (int t = 0; t < a_.seq; ++t) {
        inp_[size_t(b) * a_.seq + t] = window_[size_t(b) * (a_.seq + 1) + t];
        tgt_[size_t(b) * a_.seq + t] = window_[size_t(b) * (a_.seq + 1) + t + 1];
      }
  }
  const int32_t* inputs() const { return inp_.data(); }
  const int32_t* targets() const { return tgt_.data(); }

 private:
  const Args& a_;
  std::mt19937_64 rng_;
  std::vector<int32_t> window_, inp_, tgt_;
};

// What the steps measured: every step's loss, the timed (post-warm-up) steps' seconds and
// their collective bytes by kind.
struct StepStats {
  std::vector<double> times, losses;
  std::map<std::string, uint64_t> bytes;
};

// Runs warmup + steps training steps (forward, backward, optional clip, AdamW), timing each.
StepStats RunSteps(const Args& a, int rank, tern::model::Transformer<float>* model,
                   tern::zero::TrainingState* state, tern::comm::Communicator* dp,
                   tern::comm::CommGroups* groups) {
  tern::optim::AdamWConfig adamw{a.lr, 0.9f, 0.95f, 1e-8f, a.wd};
  TokenBatches batches(a, rank);
  StepStats s;
  for (int step = 0; step < a.warmup + a.steps; ++step) {
    if (a.data == "random") batches.Draw();
    const tern::bench::Stopwatch watch;
    state->BeginMicroStep(true);
    double loss =
        model->Forward(state->source(), batches.inputs(), batches.targets(), a.batch, a.seq);
    model->Backward(state->source(), 1.0f);
    double norm = std::sqrt(*state->FinishBackward());
    float mult = (a.clip > 0 && norm > a.clip) ? float(a.clip / (norm + 1e-6)) : 1.0f;
    (void)state->OptimizerStep(adamw, a.lr, step + 1, mult);
    if (dp != nullptr) {
      float l = float(loss);
      (void)dp->AllReduce({&l, 1}, {});
      loss = l / a.ranks;
      if (step >= a.warmup) {
        for (const auto& [kind, stats] : groups->TakeStatsByKind())
          s.bytes[kind] += stats.total_bytes();
      } else {
        groups->TakeStatsByKind();
      }
    }
    const double dt = watch.Seconds();
    s.losses.push_back(loss);
    if (step >= a.warmup) s.times.push_back(dt);
  }
  return s;
}

// The JSON line's fields for one rank's run (throughput over all ranks).
nlohmann::json Report(const Args& a, const tern::model::ModelDims& dims, double peak,
                      const StepStats& s) {
  const double med = tern::bench::Median(s.times);
  const double tokens = double(a.batch) * a.seq * a.ranks;
  const auto cost = tern::model::EstimateCost(dims, a.seq);
  const double gflops = cost.flops_per_token * tokens / med / 1e9;
  const double all_peak = peak * a.ranks;  // every rank measured its own threads' sgemm peak
  return {{"peer", "tern"},
          {"arch", a.arch},
          {"vocab", a.vocab},
          {"dim", a.dim},
          {"layers", a.layers},
          {"heads", a.heads},
          {"seq", a.seq},
          {"ffn", dims.F},
          {"tied", dims.tied},
          {"batch", a.batch},
          {"threads", a.threads},
          {"steps", a.steps},
          {"warmup", a.warmup},
          {"data", a.data},
          {"params", cost.params},
          {"tokens_per_s", std::round(tokens / med * 10) / 10},
          {"step_ms_median", med * 1e3},
          {"step_ms_min", *std::min_element(s.times.begin(), s.times.end()) * 1e3},
          {"step_ms_max", *std::max_element(s.times.begin(), s.times.end()) * 1e3},
          {"est_gflops", gflops},
          {"sgemm_peak_gflops", peak},
          {"mfu", gflops / all_peak},
          {"peak_rss_mib", tern::engine::PeakRssMib()},
          {"first_loss", s.losses.front()},
          {"final_loss", s.losses.back()},
          {"blas", "openblas-openmp"}};
}

// Adds the data-parallel fields: layout, collective bytes per step (intra/inter node), rank 0's
// state bytes and every rank's peak RSS (an all-gather: every rank must call this).
void AddDataParallelReport(const Args& a, std::map<std::string, uint64_t> bytes,
                           const tern::zero::TrainingState& state, tern::comm::Communicator* dp,
                           nlohmann::json* out) {
  (*out)["world"] = a.ranks;
  (*out)["ranks_per_node"] = a.ranks_per_node > 0 ? a.ranks_per_node : a.ranks;
  (*out)["zero_stage"] = a.zero_stage;
  (*out)["mode"] = "zero" + std::to_string(a.zero_stage);
  (*out)["batch_per_rank"] = a.batch;
  (*out)["threads_per_rank"] = a.threads;
  for (const auto& [kind, b] : bytes) (*out)["bytes_per_step"][kind] = b / a.steps;
  // The data-parallel group crosses nodes unless every rank shares one node.
  const bool cross = a.ranks_per_node > 0 && a.ranks_per_node < a.ranks;
  uint64_t intra = bytes["intra_node"], inter = bytes["inter_node"];
  (cross ? inter : intra) += bytes["data_parallel"] + bytes["world"];
  (*out)["bytes_intra_node_per_step"] = intra / a.steps;
  (*out)["bytes_inter_node_per_step"] = inter / a.steps;
  const auto mem = state.memory();
  (*out)["rank0_state_bytes"] = {
      {"params", mem.param_bytes}, {"grads", mem.grad_bytes}, {"optimizer", mem.optim_bytes}};
  // Peak RSS of every rank (all-gathered), like the peer's peak_rss_mib_per_rank.
  std::vector<float> rss(a.ranks, 0.0f);
  float mine = float(tern::engine::PeakRssMib());
  (void)dp->AllGather(std::as_bytes(std::span<float>(&mine, 1)),
                      std::as_writable_bytes(std::span<float>(rss)), {});
  (*out)["peak_rss_mib_per_rank"] = rss;
}

// One rank's benchmark (dp null: a single process without ZeRO). Rank 0 prints the JSON line.
int RunOne(const Args& a, int rank, tern::comm::Communicator* dp, tern::comm::CommGroups* groups) {
  auto dims = tern::model::ResolveModelDims(tern::bench::ModelConfigFor(a, a.seq), a.seq);
  if (!dims.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(dims.status().message()).c_str());
    return 2;
  }
  const double peak = tern::kernels::MeasureSgemmPeakGflops(a.threads);
  tern::kernels::SetNumThreads(a.threads);
  tern::model::Transformer<float> model(*dims);
  std::vector<float> init(model.params().total());
  model.InitParams(init.data(), a.seed);
  std::unique_ptr<tern::zero::TrainingState> state;
  if (dp == nullptr) {
    state = tern::zero::CreateLocalState(model.params(), init);
  } else {
    tern::zero::ZeroOptions zo;
    zo.stage = a.zero_stage;
    tern::zero::ZeroGroups zg;
    zg.data_parallel = dp;
    auto st = tern::zero::CreateZeroState(model.params(), init, zo, zg);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(st.status().message()).c_str());
      return 1;
    }
    state = std::move(*st);
  }
  const StepStats stats = RunSteps(a, rank, &model, state.get(), dp, groups);
  nlohmann::json out = Report(a, *dims, peak, stats);
  if (dp != nullptr) {
    AddDataParallelReport(a, stats.bytes, *state, dp, &out);
    if (rank != 0) return 0;
  }
  tern::bench::PrintJsonLine(out);
  return 0;
}

// --ranks N: N processes (forked before any thread exists), rendezvous over a TCP store hosted
// by the parent, ZeRO over Gloo on loopback. Rank 0 prints the JSON line.
int RunRanks(const Args& a) {
  std::vector<int> port_pipes;
  std::vector<pid_t> pids;
  for (int r = 0; r < a.ranks; ++r) {
    int fds[2];
    if (pipe(fds) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      close(fds[1]);
      int port = 0;
      if (read(fds[0], &port, sizeof(port)) != sizeof(port)) _exit(1);
      auto store = tern::comm::TcpStore::Connect("127.0.0.1", port, std::chrono::seconds(30));
      if (!store.ok()) _exit(1);
      tern::comm::TopologyConfig tc;
      tc.world_size = a.ranks;
      tc.rank = r;
      tc.ranks_per_node = a.ranks_per_node > 0 ? a.ranks_per_node : a.ranks;
      tc.nodes = a.ranks / tc.ranks_per_node;
      auto topo = tern::comm::Topology::Create(tc);
      if (!topo.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(topo.status().message()).c_str());
        _exit(2);
      }
      auto groups = tern::comm::CreateCommGroups(**store, "bench", *topo, {});
      if (!groups.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(groups.status().message()).c_str());
        _exit(1);
      }
      _exit(RunOne(a, r, groups->data_parallel.get(), &*groups));
    }
    close(fds[0]);
    port_pipes.push_back(fds[1]);
    pids.push_back(pid);
  }
  auto server = tern::comm::TcpStoreServer::Start(0, "127.0.0.1");
  if (!server.ok()) return 1;
  int port = (*server)->port();
  for (int fd : port_pipes) {
    if (write(fd, &port, sizeof(port)) != sizeof(port)) return 1;
    close(fd);
  }
  int rc = 0;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"tern-bench-train: time a training step (compare with torch_train_step.py)"};
  tern::bench::AddModelFlags(app, a);
  app.add_option("--seq", a.seq);
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
  app.add_option("--ranks", a.ranks,
                 "Data-parallel rank processes (batch and threads are per rank)");
  app.add_option("--ranks-per-node", a.ranks_per_node, "Ranks per simulated node (default: all)");
  app.add_option("--zero-stage", a.zero_stage, "ZeRO stage 0-3 (with --ranks > 1)");
  CLI11_PARSE(app, argc, argv);
  if (a.ranks > 1) return RunRanks(a);

  return RunOne(a, 0, nullptr, nullptr);
}
