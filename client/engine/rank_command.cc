// `tern rank`: one rank of a job, started by `tern train --ranks N` (local TCP store) or by
// tern-worker (ternd's RendezvousService). See worker/agent/launch_contract.h.

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/engine/local_launcher.h"
#include "client/engine/output.h"
#include "client/engine/spec_cli.h"
#include "infra/token_file.h"
#include "spdlog/fmt/fmt.h"
#include "worker/comm/rendezvous_store.h"
#include "worker/comm/tcp_store.h"
#include "worker/core/cpu_set.h"
#include "worker/core/status.h"
#include "worker/engine/memory_plan.h"
#include "worker/engine/rank_runner.h"

namespace tern::cli {
namespace {

struct RankArgs {
  std::string spec_file, rendezvous, prefix, token_file, save_final, cpus;
  int rank = 0, world = 1, ranks_per_node = 0, threads = 1, timeout_s = kDefaultCollectiveTimeoutS;
  bool json = false;
  bool resume = false;
  double peak_gflops = 0;
  bool skip_memory_check = false;
  bool resume_if_any = false;
  bool control_stdin = false;
  std::string bind_address = "127.0.0.1";
};

absl::StatusOr<std::unique_ptr<comm::Store>> ConnectStore(const RankArgs& a) {
  if (absl::StartsWith(a.rendezvous, "tcp://")) {
    const std::string hp = a.rendezvous.substr(6);
    const size_t colon = hp.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(hp.substr(colon + 1), &port))
      return absl::InvalidArgumentError(
          absl::StrCat("--rendezvous ", a.rendezvous, ": expected tcp://HOST:PORT"));
    TERN_ASSIGN_OR_RETURN(auto store, comm::TcpStore::Connect(hp.substr(0, colon), port,
                                                              std::chrono::seconds(a.timeout_s)));
    return std::unique_ptr<comm::Store>(std::move(store));
  }
  std::string token;
  if (!a.token_file.empty()) {
    TERN_ASSIGN_OR_RETURN(auto tokens, infra::ReadTokenFile(a.token_file));
    token = tokens.front();
  }
  return comm::ConnectRendezvousStore(a.rendezvous, a.prefix, token);
}

// --cpus: the set the launcher bound this rank to; more threads than its CPUs is refused.
absl::Status CheckThreadsFitCpus(const RankArgs& a) {
  if (a.cpus.empty()) return absl::OkStatus();
  TERN_ASSIGN_OR_RETURN(cpu::CpuList set, cpu::ParseCpuList(a.cpus));
  if (a.threads > static_cast<int>(set.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", a.rank, ": --threads ", a.threads,
                     " (resources.threads_per_rank) is more than the ", set.size(),
                     " CPU(s) the rank is bound to (", cpu::FormatCpuList(set), ")"));
  }
  return absl::OkStatus();
}

int RunRankCommand(const RankArgs& a) {
  if (auto st = CheckThreadsFitCpus(a); !st.ok()) {
    fmt::print(stderr, "error: {}\n", std::string(st.message()));
    return 2;
  }
  // --resume loads checkpoint.load ("latest" unless set); without it nothing is loaded.
  spec::ResolveOptions resolve;
  resolve.world_size = a.world;
  resolve.cluster = !absl::StartsWith(a.rendezvous, "tcp://");
  auto cfg = LoadResolvedSpec(a.spec_file, {}, resolve);
  absl::Status resume = cfg.ok() ? ApplyResumeFlag(a.resume, &*cfg, a.resume_if_any) : cfg.status();
  if (!resume.ok()) {
    fmt::print(stderr, "error: {}\n", std::string(resume.message()));
    return 2;
  }
  // This node's ranks must fit before any of them joins the rendezvous.
  const int on_node = a.ranks_per_node > 0 ? a.ranks_per_node : a.world;
  if (!a.skip_memory_check) {
    absl::Status fits = engine::CheckJobFitsThisHost(*cfg, a.threads, on_node);
    if (!fits.ok()) {
      fmt::print(stderr, "error: rank {}: {}\n", a.rank, std::string(fits.message()));
      return 2;
    }
  }
  auto store = ConnectStore(a);
  if (!store.ok()) {
    fmt::print(stderr, "error: rank {}: rendezvous: {}\n", a.rank,
               std::string(store.status().message()));
    return 1;
  }
  ConsoleSink sink(a.json, cfg->steps_per_print);
  engine::RankOptions ro;
  ro.rank = a.rank;
  ro.world_size = a.world;
  ro.ranks_per_node = a.ranks_per_node > 0 ? a.ranks_per_node : a.world;
  ro.threads = a.threads;
  // The ternd store is already scoped by job and round; the TCP store is shared.
  ro.prefix = absl::StartsWith(a.rendezvous, "tcp://") ? a.prefix : "ranks";
  // Under ternd the prefix is "<job>/<round>": the round fences checkpoint commits.
  if (!absl::StartsWith(a.rendezvous, "tcp://")) {
    const size_t slash = a.prefix.rfind('/');
    int64_t round = -1;
    if (slash != std::string::npos && absl::SimpleAtoi(a.prefix.substr(slash + 1), &round))
      ro.round = round;
  }
  ro.collective_timeout = std::chrono::seconds(a.timeout_s);
  ro.sink = &sink;
  ro.save_final_dir = a.save_final;
  ro.peak_gflops = a.peak_gflops;
  ro.check_memory = false;  // checked above
  ro.bind_address = a.bind_address;
  ro.bound_cpus = a.cpus;
  // The launcher's orders arrive on stdin; the reader thread outlives this function.
  static engine::RankControl* control = nullptr;
  if (a.control_stdin) {
    control = new engine::RankControl(ro.round);
    control->StartReader(0);
    control->InstallSigtermAsStop();
    ro.control = control;
  }
  absl::Status st = engine::RunRank(*cfg, **store, ro);
  if (!st.ok()) {
    fmt::print(stderr, "error: rank {}: {}\n", a.rank, std::string(st.message()));
    return IsInputError(st) ? 2 : 1;  // a bad checkpoint is bad input, like a bad spec
  }
  if (control && control->stopped_step() >= 0) {
    fmt::print(stderr, "rank {}: stopped on order after step {} (checkpoint committed): {}\n",
               a.rank, control->stopped_step(), control->reason());
    return engine::kExitStoppedOnOrder;
  }
  return 0;
}

}  // namespace

void AddRankCommand(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<RankArgs>();
  auto* cmd = app.add_subcommand("rank", "Run one rank of a job (started by launchers)");
  cmd->add_option("--spec-file", a->spec_file, "Job spec JSON")->required();
  cmd->add_option("--rank", a->rank, "Global rank")->required();
  cmd->add_option("--world-size", a->world, "Number of ranks")
      ->required()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--ranks-per-node", a->ranks_per_node, "Ranks per node (default: world size)");
  cmd->add_option("--rendezvous", a->rendezvous, "tcp://HOST:PORT (local store) or ternd address")
      ->required();
  cmd->add_option("--rendezvous-prefix", a->prefix, "Key prefix of this job round");
  cmd->add_option("--threads", a->threads, "Compute threads")->check(CLI::Range(1, 4096));
  cmd->add_option("--cpus", a->cpus,
                  "The CPU set (cpulist) the launcher bound this rank to: reported, and "
                  "--threads above its size is refused");
  cmd->add_option("--token-file", a->token_file, "Worker token for ternd");
  cmd->add_option("--save-final", a->save_final, "Write the final model here (rank 0)");
  cmd->add_option("--collective-timeout-s", a->timeout_s, "Collective and rendezvous timeout");
  cmd->add_flag("--json", a->json, "JSON lines on stdout");
  cmd->add_option("--peak-gflops", a->peak_gflops, "sgemm GFLOP/s of this rank for MFU");
  cmd->add_flag("--resume", a->resume, "Continue from checkpoint.load (default: latest)");
  cmd->add_option("--bind-address", a->bind_address,
                  "Address this rank's collectives listen on (peers on other hosts connect)")
      ->capture_default_str();
  cmd->add_flag("--resume-if-any", a->resume_if_any,
                "Continue from the newest complete checkpoint when there is one (rounds after "
                "the first of a cluster job)");
  cmd->add_flag("--control-stdin", a->control_stdin,
                "Read the launcher's orders (JSON lines: stop, checkpoint, abort) from stdin; a "
                "rank that stops on an order exits 75 after committing its checkpoint");
  cmd->add_flag("--skip-memory-check", a->skip_memory_check,
                "Start even when this node's ranks need more memory than it has available");
  cmd->callback([a, exit_code] { *exit_code = RunRankCommand(*a); });
}

}  // namespace tern::cli
