#include "worker/engine/rank_runner.h"

#include <unistd.h>

#include <algorithm>
#include <span>

#include "kernels/cpu/threads.h"
#include "nlohmann/json.hpp"
#include "worker/comm/groups.h"
#include "worker/comm/topology.h"
#include "worker/core/cpu_set.h"
#include "worker/core/status.h"
#include "worker/engine/trainer.h"
#include "worker/sequence/ulysses.h"
#include "worker/zero/state.h"

namespace tern::engine {
namespace {

// Sink wrapper that forwards only what rank 0 should report.
class RankSink : public MetricsSink {
 public:
  RankSink(MetricsSink* inner, bool leader) : inner_(inner), leader_(leader) {}
  void OnStep(const StepMetrics& m) override {
    if (leader_ && inner_) inner_->OnStep(m);
  }
  void OnEval(int64_t step, double v) override {
    if (leader_ && inner_) inner_->OnEval(step, v);
  }
  void OnSummary(const TrainSummary& s) override {
    if (leader_ && inner_) inner_->OnSummary(s);
  }
  void OnEvent(const std::string& kind, const std::string& msg) override {
    if (inner_) inner_->OnEvent(kind, msg);
  }

 private:
  MetricsSink* inner_;
  bool leader_;
};

// One byte string per rank, in rank order: sizes first, then the strings padded to the longest.
absl::StatusOr<std::vector<std::string>> AllGatherBytes(comm::Communicator& comm,
                                                        const std::string& mine,
                                                        std::chrono::milliseconds timeout) {
  const int n = comm.size();
  comm::CollectiveOptions co;
  co.timeout = timeout;
  uint64_t size = mine.size();
  std::vector<uint64_t> sizes(n);
  TERN_RETURN_IF_ERROR(comm.AllGather(std::as_bytes(std::span<const uint64_t>(&size, 1)),
                                      std::as_writable_bytes(std::span<uint64_t>(sizes)), co));
  const uint64_t longest = std::max<uint64_t>(1, *std::max_element(sizes.begin(), sizes.end()));
  std::string padded = mine;
  padded.resize(longest);
  std::vector<char> all(longest * n);
  TERN_RETURN_IF_ERROR(comm.AllGather(std::as_bytes(std::span<const char>(padded)),
                                      std::as_writable_bytes(std::span<char>(all)), co));
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) out[r].assign(all.data() + r * longest, sizes[r]);
  return out;
}

}  // namespace

std::string PlacementReport(int rank, int threads, const std::string& bound_cpus) {
  auto mask = cpu::ThisProcessAffinity();
  nlohmann::json j = {
      {"rank", rank},
      {"pid", static_cast<int64_t>(::getpid())},
      {"cpus", mask.ok() ? cpu::FormatCpuList(*mask) : std::string(mask.status().message())},
      {"bound", bound_cpus.empty() ? nlohmann::json() : nlohmann::json(bound_cpus)},
      {"threads", threads},
      {"omp_threads", kernels::NumThreads()},
      {"blas_threads", kernels::BlasNumThreads()}};
  return j.dump();
}

absl::Status RunRank(const tern::spec::JobConfig& config, comm::Store& store,
                     const RankOptions& o) {
  comm::TopologyConfig tc;
  tc.world_size = o.world_size;
  tc.rank = o.rank;
  tc.ranks_per_node = o.ranks_per_node;
  tc.nodes = o.ranks_per_node > 0 ? o.world_size / o.ranks_per_node : 0;
  tc.sequence_parallel = config.sp_size;
  TERN_RETURN_IF_ERROR(comm::Topology::Validate(tc));
  TERN_ASSIGN_OR_RETURN(comm::Topology topo, comm::Topology::Create(tc));
  comm::GlooOptions go;
  go.timeout = o.collective_timeout;
  go.hostname = o.bind_address;
  TERN_ASSIGN_OR_RETURN(comm::CommGroups groups, comm::CreateCommGroups(store, o.prefix, topo, go));
  // ZeRO partitions and reduces over every rank, sequence-parallel ones included (DeepSpeed's
  // sequence-data-parallel group): with sequence parallelism that is the world, and the
  // node-local and cross-node groups are the world's.
  comm::Communicator* dp =
      topo.sequence_parallel() > 1 ? groups.world.get() : groups.data_parallel.get();
  zero::ZeroGroups zg;
  zg.data_parallel = dp;
  zg.intra_node = groups.intra_node.get();
  zg.inter_node = groups.inter_node.get();

  RankSink sink(o.sink, o.rank == 0);
  TrainerOptions topts;
  topts.rank = topo.rank();
  if (topo.sequence_parallel() > 1) {
    topts.make_sequence =
        [sp = groups.sequence_parallel.get(), &config,
         &o](Device* device) -> absl::StatusOr<std::unique_ptr<model::SequenceExchange<float>>> {
      TERN_ASSIGN_OR_RETURN(auto ex, sequence::UlyssesExchange<float>::Create(
                                         sp, config.dims.NH, config.dims.NKV, config.dims.HS,
                                         o.collective_timeout, device));
      return std::unique_ptr<model::SequenceExchange<float>>(std::move(ex));
    };
  }
  topts.threads = o.threads;
  topts.sink = &sink;
  topts.save_final_dir = o.save_final_dir;
  topts.peak_gflops = o.peak_gflops;
  topts.check_memory = o.check_memory;
  topts.ranks_on_host = o.ranks_per_node;
  topts.round = o.round;
  topts.control = o.control;
  zero::ZeroOptions zo = config.zero;
  zo.timeout = o.collective_timeout;
  topts.make_state = [zg, zo](const ParamTable& table, const std::vector<float>& init) {
    return zero::CreateZeroState(table, init, zo, zg);
  };
  topts.all_reduce_sum = [dp, &o](double* values, int n) -> absl::Status {
    std::vector<float> f(values, values + n);
    comm::CollectiveOptions co;
    co.timeout = o.collective_timeout;
    TERN_RETURN_IF_ERROR(dp->AllReduce({f.data(), f.size()}, co));
    for (int i = 0; i < n; ++i) values[i] = f[i];
    return absl::OkStatus();
  };
  // Every byte by its receiver: on this node or on another (whatever group sent it), summed
  // over the job's ranks (one rank's share depends on where it sits in the rings).
  topts.take_comm_bytes = [&groups, &o](uint64_t* intra, uint64_t* inter) {
    uint64_t mine[2] = {0, 0};
    for (const auto& [kind, stats] : groups.TakeStatsByKind()) {
      mine[0] += stats.total_bytes() - stats.cross_node_bytes;
      mine[1] += stats.cross_node_bytes;
    }
    *intra = mine[0];
    *inter = mine[1];
    const int n = groups.world->size();
    std::vector<uint64_t> all(2 * size_t(n));
    comm::CollectiveOptions co;
    co.timeout = o.collective_timeout;
    if (!groups.world
             ->AllGather(std::as_bytes(std::span<const uint64_t>(mine, 2)),
                         std::as_writable_bytes(std::span<uint64_t>(all)), co)
             .ok())
      return;  // this rank's own bytes; the failure surfaces at the next collective
    *intra = *inter = 0;
    for (int r = 0; r < n; ++r) {
      *intra += all[2 * size_t(r)];
      *inter += all[2 * size_t(r) + 1];
    }
  };
  topts.all_gather_bytes = [world = groups.world.get(), &o](const std::string& mine) {
    return AllGatherBytes(*world, mine, o.collective_timeout);
  };
  TERN_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(config, std::move(topts)));
  // After Create: the trainer has set the OpenMP / OpenBLAS thread counts.
  sink.OnEvent("placement", PlacementReport(o.rank, o.threads, o.bound_cpus));
  TERN_RETURN_IF_ERROR(trainer->Run());
  // Leave together so no rank tears down connections while a peer still reads.
  comm::CollectiveOptions co;
  co.timeout = o.collective_timeout;
  return groups.world->Barrier(co);
}

}  // namespace tern::engine
