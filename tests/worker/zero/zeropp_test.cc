// ZeRO++ over ranks as threads (Gloo on loopback, groups from a Topology of nodes x ranks):
// qgZ gives every rank its reduce-scatter partition within the int4 bound at 2x2 and 3x2, qwZ
// gives every rank the gathered chunks within the int8 bound, and ZeRO-3 training with them
// (or with their fallbacks) stays close to the unquantized run.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/cpu/threads.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/groups.h"
#include "worker/comm/topology.h"
#include "worker/core/status.h"
#include "worker/zero/quantized_collectives.h"
#include "worker/zero/zero_state.h"

namespace tern::zero {
namespace {

using comm::testing::RunRanks;

comm::TopologyConfig Layout(int nodes, int per_node, int rank) {
  comm::TopologyConfig c;
  c.world_size = nodes * per_node;
  c.rank = rank;
  c.nodes = nodes;
  c.ranks_per_node = per_node;
  return c;
}

// Runs fn(rank, groups) on every rank of a nodes x per_node layout.
void WithGroups(int nodes, int per_node, const std::string& prefix,
                const std::function<void(int, comm::CommGroups&)>& fn) {
  comm::InMemoryStore store;
  comm::GlooOptions go;
  go.timeout = std::chrono::seconds(20);
  RunRanks(nodes * per_node, [&](int r) {
    auto topo = comm::Topology::Create(Layout(nodes, per_node, r));
    ASSERT_TRUE(topo.ok()) << topo.status();
    auto groups = comm::CreateCommGroups(store, prefix, *topo, go);
    ASSERT_TRUE(groups.ok()) << groups.status();
    fn(r, *groups);
    ASSERT_TRUE(groups->world->Barrier({}).ok());
  });
}

std::vector<float> Gradient(int rank, size_t n) {
  std::mt19937_64 rng(uint64_t(rank) + 100);
  std::normal_distribution<float> d(0.0f, 1.0f + float(rank));
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

float AbsMax(const float* x, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

class QgzTest : public ::testing::TestWithParam<int> {};

TEST_P(QgzTest, EveryRankGetsItsReduceScatterPartitionWithinTheInt4Bound) {
  const int nodes = GetParam(), D = 2, n = nodes * D;
  const uint64_t chunk = 96, qblock = 32;  // 3 blocks per partition
  std::vector<std::vector<float>> inputs;
  for (int r = 0; r < n; ++r) inputs.push_back(Gradient(r, n * chunk));
  WithGroups(nodes, D, "qgz" + std::to_string(nodes), [&](int r, comm::CommGroups& g) {
    std::vector<std::byte> scratch(QuantizedReduceScatterScratch(n, nodes, chunk, qblock));
    std::vector<float> out(chunk);
    ASSERT_TRUE(QuantizedReduceScatter(*g.intra_node, *g.inter_node, inputs[r].data(), chunk,
                                       qblock, out.data(), scratch.data(), {})
                    .ok());
    // Reference: the fp32 sum of partition r. Bound per block: half a step of every rank's
    // first-hop scale plus half a step of every node sum's second-hop scale (whose absmax is at
    // most the sum of its ranks' absmax plus their first-hop errors).
    for (uint64_t b = 0; b < chunk / qblock; ++b) {
      double bound = 0;
      for (int k = 0; k < nodes; ++k) {
        double node_abs = 0;
        for (int d = 0; d < D; ++d) {
          const float a = AbsMax(&inputs[k * D + d][r * chunk + b * qblock], qblock);
          bound += a / 7 / 2;
          node_abs += a + a / 7 / 2;
        }
        bound += node_abs / 7 / 2;
      }
      for (uint64_t i = b * qblock; i < (b + 1) * qblock; ++i) {
        double want = 0;
        for (int p = 0; p < n; ++p) want += inputs[p][r * chunk + i];
        ASSERT_LE(std::fabs(out[i] - want), bound * (1 + 1e-5)) << "rank " << r << " elem " << i;
      }
    }
    // Bytes by peer: the inter-node hop is the only cross-node traffic, one int4 record to each
    // other node (not n - 1 fp32 chunks).
    auto by_kind = g.TakeStatsByKind();
    EXPECT_EQ(by_kind["inter_node"].cross_node_bytes,
              uint64_t(nodes - 1) * Int4RecordBytes(chunk, qblock));
    EXPECT_EQ(by_kind["intra_node"].cross_node_bytes, 0u);
  });
}

INSTANTIATE_TEST_SUITE_P(Nodes, QgzTest, ::testing::Values(2, 3),
                         [](const auto& info) { return std::to_string(info.param) + "x2"; });

TEST(QwzTest, EveryRankGetsEveryChunkWithinTheInt8Bound) {
  const int n = 3;
  const uint64_t chunk = 64, qblock = 16;
  WithGroups(1, n, "qwz", [&](int r, comm::CommGroups& g) {
    const auto mine = Gradient(r, chunk);
    std::vector<std::byte> scratch(QuantizedAllGatherScratch(n, chunk, qblock));
    std::vector<float> out(n * chunk);
    ASSERT_TRUE(QuantizedAllGather(*g.data_parallel, mine.data(), chunk, qblock, out.data(),
                                   scratch.data(), {})
                    .ok());
    for (int j = 0; j < n; ++j) {
      const auto want = Gradient(j, chunk);
      for (uint64_t b = 0; b < chunk / qblock; ++b) {
        const float half = AbsMax(&want[b * qblock], qblock) / 127 / 2;
        for (uint64_t i = b * qblock; i < (b + 1) * qblock; ++i)
          ASSERT_LE(std::fabs(out[j * chunk + i] - want[i]), half * (1 + 1e-5));
      }
    }
  });
}

TEST(ZeroPPLayout, ChunksArePaddedToTheBlock) {
  ParamTable table;
  table.Add("a", {10000}, true, 0);
  table.Add("b", {50}, false, 1);
  table.Add("c", {2400}, false, 2);
  const auto units = LayoutUnits(table, 4, 1024, 256);
  ASSERT_EQ(units.size(), 3u);
  EXPECT_EQ(units[0].chunk, 3072u);  // ceil(10000 / 4) = 2500 -> 3 weight blocks
  EXPECT_EQ(units[0].qblock, 1024u);
  EXPECT_EQ(units[0].gblock, 256u);
  EXPECT_EQ(units[1].chunk, 14u);  // 13 -> even, one block of each kind
  EXPECT_EQ(units[1].qblock, 14u);
  EXPECT_EQ(units[1].gblock, 14u);
  EXPECT_EQ(units[2].chunk, 768u);  // 600 -> 3 gradient blocks, one weight block
  EXPECT_EQ(units[2].qblock, 768u);
  EXPECT_EQ(units[2].gblock, 256u);
  EXPECT_EQ(LayoutUnits(table, 4)[0].chunk, 2500u);  // no ZeRO++: unpadded
}

// ---- Training ---------------------------------------------------------------------------

model::ModelDims Dims() {
  tern::v1::ModelConfig m;
  m.set_model_type("llama");
  m.set_vocab_size(37);
  m.set_hidden_size(16);
  m.set_num_hidden_layers(2);
  m.set_num_attention_heads(4);
  m.set_num_key_value_heads(2);
  auto d = model::ResolveModelDims(m, 8);
  TERN_CHECK(d.ok());
  return *d;
}

struct TrainResult {
  std::vector<double> losses;
  ZeroPPCounters counters;
  MemoryReport memory;
  uint64_t planned_hpz = 0, planned_scratch = 0;  // what the memory plan's functions say
  uint64_t cross_node_bytes = 0;                  // this rank's, over the whole run
};

// Stage 3 on nodes x per_node ranks, 2 rows per rank, 8 steps; losses averaged over ranks.
std::vector<TrainResult> TrainStage3(int nodes, int per_node, bool qw, bool qg,
                                     const std::string& prefix, int hpz = 1) {
  const int n = nodes * per_node, T = 8, rows = 2, steps = 8;
  std::vector<TrainResult> out(n);
  WithGroups(nodes, per_node, prefix, [&](int r, comm::CommGroups& g) {
    kernels::SetNumThreads(1);
    g.TakeStatsByKind();  // group creation traffic aside
    model::Transformer<float> model(Dims());
    std::vector<float> init(model.params().total());
    model.InitParams(init.data(), 5);
    ZeroOptions zo;
    zo.stage = 3;
    zo.persistence_threshold = 0;
    zo.prefetch_bucket_size = 2000;
    zo.quantized_weights = qw;
    zo.quantized_gradients = qg;
    zo.hpz_partition_size = hpz;
    auto state = CreateZeroState(model.params(), init, zo,
                                 {g.data_parallel.get(), g.intra_node.get(), g.inter_node.get()});
    ASSERT_TRUE(state.ok()) << state.status();
    optim::AdamWConfig cfg{0.01f, 0.9f, 0.95f, 1e-4f, 0.1f};
    std::vector<int32_t> in(rows * T), tgt(rows * T);
    for (int step = 0; step < steps; ++step) {
      std::mt19937_64 rng(uint64_t(step % 2) * 1000 + r);
      for (size_t i = 0; i < in.size(); ++i) {
        in[i] = int32_t(rng() % 37);
        tgt[i] = int32_t(rng() % 37);
      }
      (*state)->BeginMicroStep(true);
      float loss = model.Forward((*state)->source(), in.data(), tgt.data(), rows, T);
      model.Backward((*state)->source(), 1.0f / float(n));
      ASSERT_TRUE((*state)->FinishBackward().ok());
      ASSERT_TRUE((*state)->OptimizerStep(cfg, cfg.lr, step + 1, 1.0f).ok());
      ASSERT_TRUE(g.data_parallel->AllReduce({&loss, 1}, {}).ok());
      out[r].losses.push_back(loss / float(n));
    }
    out[r].counters = (*state)->zeropp_counters();
    out[r].memory = (*state)->memory();
    for (const auto& [kind, stats] : g.TakeStatsByKind())
      out[r].cross_node_bytes += stats.cross_node_bytes;
    const auto units = LayoutUnits(model.params(), n, QuantBlock(zo), GradQuantBlock(zo));
    out[r].planned_hpz = HpzBytes(units, zo, n, per_node);
    out[r].planned_scratch = QuantScratchBytes(units, zo, n, per_node);
  });
  return out;
}

TEST(ZeroPPTraining, QuantizedStage3StaysCloseToStage3At2x2) {
  kernels::SetNumThreads(1);
  const auto plain = TrainStage3(2, 2, false, false, "t-plain");
  const auto zpp = TrainStage3(2, 2, true, true, "t-zpp", 2);
  ASSERT_EQ(plain[0].losses.size(), zpp[0].losses.size());
  EXPECT_LT(plain[0].losses.back(), plain[0].losses.front());
  for (size_t i = 0; i < plain[0].losses.size(); ++i)
    EXPECT_NEAR(zpp[0].losses[i], plain[0].losses[i], 0.02 * plain[0].losses[i]) << "step " << i;
  // Cross-node bytes of the whole job (the tiny model's blocks carry relatively more scales
  // than a real one's: llama-small measures 0.115x on the veth).
  uint64_t plain_cross = 0, zpp_cross = 0;
  for (int r = 0; r < 4; ++r) {
    plain_cross += plain[r].cross_node_bytes;
    zpp_cross += zpp[r].cross_node_bytes;
  }
  EXPECT_GT(plain_cross, 0u);
  EXPECT_LT(double(zpp_cross), 0.3 * double(plain_cross));
  for (const auto& r : zpp) {
    EXPECT_GT(r.counters.quantized_gathers, 0u);
    EXPECT_GT(r.counters.quantized_reductions, 0u);
    EXPECT_EQ(r.counters.fallback_reductions, 0u);
    EXPECT_GT(r.counters.hpz_gathers, 0u);
    EXPECT_EQ(r.counters.hpz_fallback_gathers, 0u);
    // The buffers are what the memory plan counts; hpZ's copy is 1/per_node of the model.
    EXPECT_GT(r.memory.quant_scratch_bytes, 0u);
    EXPECT_EQ(r.memory.quant_scratch_bytes, r.planned_scratch);
    EXPECT_EQ(r.memory.hpz_bytes, r.planned_hpz);
    // (nothing persistent: param_bytes is the owned chunks, the copy is 2 nodes' worth of them)
    EXPECT_EQ(r.memory.hpz_bytes, 2 * r.memory.param_bytes);
  }
}

// hpZ alone: backward gathers the forward's own weights inside the node, so training is
// exactly plain stage 3; its backward gathers never leave the node.
TEST(ZeroPPTraining, HpzMatchesStage3At2x2) {
  kernels::SetNumThreads(1);
  const auto plain = TrainStage3(2, 2, false, false, "h-plain");
  const auto hpz = TrainStage3(2, 2, false, false, "h-hpz", 2);
  for (size_t i = 0; i < plain[0].losses.size(); ++i)
    EXPECT_NEAR(hpz[0].losses[i], plain[0].losses[i], 1e-6 * plain[0].losses[i]) << "step " << i;
  // The backward gathers stay inside the node: a third of plain stage 3's cross-node traffic
  // (forward gather, backward gather, reduce-scatter of equal size) is gone.
  uint64_t plain_cross = 0, hpz_cross = 0;
  for (int r = 0; r < 4; ++r) {
    plain_cross += plain[r].cross_node_bytes;
    hpz_cross += hpz[r].cross_node_bytes;
  }
  EXPECT_LT(double(hpz_cross), 0.75 * double(plain_cross));
  EXPECT_GT(double(hpz_cross), 0.55 * double(plain_cross));
  for (const auto& r : hpz) {
    // One backward gather per non-persistent unit per step (4 units, 8 steps).
    EXPECT_EQ(r.counters.hpz_gathers, 4u * 8);
    EXPECT_EQ(r.counters.hpz_fallback_gathers, 0u);
  }
}

// hpZ on one node has no second level: every gather falls back to the data-parallel one.
TEST(ZeroPPTraining, HpzOnOneNodeFallsBack) {
  kernels::SetNumThreads(1);
  const auto hpz = TrainStage3(1, 2, false, false, "h-one", 2);
  for (const auto& r : hpz) {
    EXPECT_EQ(r.counters.hpz_gathers, 0u);
    EXPECT_GT(r.counters.hpz_fallback_gathers, 0u);
  }
}

// qgZ on one node (no second hop) falls back to the plain reduce-scatter for every unit,
// counted, and trains exactly like plain stage 3.
TEST(ZeroPPTraining, QgzOnOneNodeFallsBackToReduceScatter) {
  kernels::SetNumThreads(1);
  const auto plain = TrainStage3(1, 2, false, false, "f-plain");
  const auto qg = TrainStage3(1, 2, false, true, "f-qgz");
  for (size_t i = 0; i < plain[0].losses.size(); ++i)
    EXPECT_NEAR(qg[0].losses[i], plain[0].losses[i], 1e-5 * plain[0].losses[i]) << "step " << i;
  for (const auto& r : qg) {
    EXPECT_EQ(r.counters.quantized_reductions, 0u);
    EXPECT_GT(r.counters.fallback_reductions, 0u);
  }
}

TEST(ZeroPPOptions, RefusedBelowStage3) {
  model::Transformer<float> model(Dims());
  std::vector<float> init(model.params().total());
  comm::InMemoryStore store;
  auto comms = comm::testing::MakeGroup(store, 1, "refuse");
  ZeroOptions zo;
  zo.stage = 2;
  zo.quantized_gradients = true;
  auto st = CreateZeroState(model.params(), init, zo, {comms[0].get()});
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  zo.stage = 3;
  zo.quant_block = 3;
  st = CreateZeroState(model.params(), init, zo, {comms[0].get()});
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  // hpZ's size must be the ranks per node.
  zo.quant_block = 4096;
  zo.hpz_partition_size = 4;
  st = CreateZeroState(model.params(), init, zo, {comms[0].get(), comms[0].get(), comms[0].get()});
  ASSERT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("zero_hpz_partition_size: 4"), std::string::npos);
}

}  // namespace
}  // namespace tern::zero
