// ZeRO stages 0-3 with 2, 3 and 4 ranks (threads over an in-memory store, Gloo on loopback)
// must reproduce the single-rank run with the same global batch.
#include "worker/zero/zero_state.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "kernels/cpu/threads.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/in_memory_store.h"
#include "worker/core/status.h"

namespace tern::zero {
namespace {

constexpr int kSteps = 10;
constexpr int kRowsPerRank = 2;

model::ModelDims Dims(bool tied) {
  tern::v1::ModelConfig m;
  m.set_model_type("llama");
  m.set_vocab_size(37);
  m.set_hidden_size(16);
  m.set_num_hidden_layers(3);
  m.set_num_attention_heads(4);
  m.set_num_key_value_heads(2);
  m.set_tie_word_embeddings(tied);
  auto d = model::ResolveModelDims(m, 8);
  TERN_CHECK(d.ok());
  return *d;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<float> params;
  MemoryReport memory;
};

// Tokens of global step s: 12 rows (lcm of 2, 3, 4 ranks x 2 rows... sliced per rank).
void Batch(int step, int row0, int rows, int T, int V, std::vector<int32_t>* in,
           std::vector<int32_t>* tgt) {
  in->resize(size_t(rows) * T);
  tgt->resize(in->size());
  for (int r = 0; r < rows; ++r) {
    std::mt19937_64 rng(uint64_t(step % 2) * 1000 + row0 + r);  // two alternating batches
    for (int t = 0; t < T; ++t) {
      (*in)[size_t(r) * T + t] = int32_t(rng() % V);
      (*tgt)[size_t(r) * T + t] = int32_t(rng() % V);
    }
  }
}

// One rank: `accum` micro-steps of kRowsPerRank rows each per step.
RunResult Train(TrainingState* state, model::Transformer<float>& model, int rank, int ranks,
                int accum, comm::Communicator* comm) {
  const int T = 8, V = model.dims().V;
  optim::AdamWConfig cfg{
      0.01f, 0.9f, 0.95f, 1e-4f,
      0.1f};  // eps keeps Adam from amplifying rounding noise in near-zero gradients
  RunResult out;
  std::vector<int32_t> in, tgt;
  for (int step = 0; step < kSteps; ++step) {
    double loss = 0;
    for (int micro = 0; micro < accum; ++micro) {
      // Global rows of this step: micro-major, then rank, matching the data loader's order.
      const int row0 = micro * ranks * kRowsPerRank + rank * kRowsPerRank;
      Batch(step, row0, kRowsPerRank, T, V, &in, &tgt);
      state->BeginMicroStep(micro + 1 == accum);
      loss += model.Forward(state->source(), in.data(), tgt.data(), kRowsPerRank, T);
      model.Backward(state->source(), 1.0f / float(accum * ranks));
    }
    auto sq = state->FinishBackward();
    EXPECT_TRUE(sq.ok()) << sq.status();
    const double norm = std::sqrt(*sq);
    const float mult = norm > 0.5 ? float(0.5 / norm) : 1.0f;  // clipping engaged
    EXPECT_TRUE(state->OptimizerStep(cfg, cfg.lr, step + 1, mult).ok());
    float l = float(loss / accum);
    if (comm) {
      EXPECT_TRUE(comm->AllReduce({&l, 1}, {}).ok());
      l /= float(ranks);
    }
    out.losses.push_back(l);
  }
  EXPECT_TRUE(state->GatherParams(&out.params).ok());
  out.memory = state->memory();
  return out;
}

// Single rank, one micro-step holding all ranks x accum rows (the reference).
RunResult Reference(bool tied, int ranks, int accum) {
  const auto dims = Dims(tied);
  model::Transformer<float> model(dims);
  std::vector<float> init(model.params().total());
  model.InitParams(init.data(), 5);
  auto state = CreateLocalState(model.params(), init);
  const int T = 8, rows = ranks * accum * kRowsPerRank;
  optim::AdamWConfig cfg{
      0.01f, 0.9f, 0.95f, 1e-4f,
      0.1f};  // eps keeps Adam from amplifying rounding noise in near-zero gradients
  RunResult out;
  std::vector<int32_t> in, tgt;
  for (int step = 0; step < kSteps; ++step) {
    Batch(step, 0, rows, T, dims.V, &in, &tgt);
    state->BeginMicroStep(true);
    out.losses.push_back(model.Forward(state->source(), in.data(), tgt.data(), rows, T));
    model.Backward(state->source(), 1.0f);
    const double norm = std::sqrt(*state->FinishBackward());
    const float mult = norm > 0.5 ? float(0.5 / norm) : 1.0f;
    EXPECT_TRUE(state->OptimizerStep(cfg, cfg.lr, step + 1, mult).ok());
  }
  EXPECT_TRUE(state->GatherParams(&out.params).ok());
  out.memory = state->memory();
  return out;
}

std::vector<RunResult> RunZero(bool tied, int ranks, int stage, int accum, int64_t persist = 0) {
  comm::InMemoryStore store;
  std::vector<RunResult> results(ranks);
  std::vector<std::thread> threads;
  const std::string prefix = "zero-" + std::to_string(stage) + "-" + std::to_string(ranks);
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      kernels::SetNumThreads(1);
      comm::GlooOptions go;
      go.kind = "data_parallel";
      go.timeout = std::chrono::milliseconds(20000);
      auto comm = comm::GlooCommunicator::Create(store, prefix, r, ranks, go);
      ASSERT_TRUE(comm.ok()) << comm.status();
      model::Transformer<float> model(Dims(tied));
      std::vector<float> init(model.params().total());
      model.InitParams(init.data(), 5);
      ZeroOptions zo;
      zo.stage = stage;
      zo.reduce_bucket_size = 3000;  // several buckets at stage 0
      zo.persistence_threshold = persist;
      zo.prefetch_bucket_size = 2000;
      auto state = CreateZeroState(model.params(), init, zo, {.data_parallel = comm->get()});
      ASSERT_TRUE(state.ok()) << state.status();
      results[r] = Train(state->get(), model, r, ranks, accum, comm->get());
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

// Losses per step within 1e-5 relative; parameters within 1e-5 relative per tensor
// (max |difference| / max |value| over each named parameter).
void ExpectClose(const ParamTable& table, const RunResult& ref, const RunResult& got,
                 const std::string& what) {
  ASSERT_EQ(ref.losses.size(), got.losses.size());
  for (size_t i = 0; i < ref.losses.size(); ++i)
    EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-5 * std::abs(ref.losses[i]))
        << what << " step " << i;
  ASSERT_EQ(ref.params.size(), got.params.size());
  for (const auto& e : table.entries()) {
    double max_diff = 0, max_abs = 0;
    for (uint64_t i = e.offset; i < e.offset + e.numel; ++i) {
      max_diff = std::max(max_diff, std::abs(double(got.params[i]) - ref.params[i]));
      max_abs = std::max(max_abs, std::abs(double(ref.params[i])));
    }
    EXPECT_LT(max_diff / max_abs, 1e-5) << what << " " << e.name;
  }
}

struct Case {
  int stage, ranks, accum;
  bool tied;
};

class ZeroMatchesSingleRank : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroMatchesSingleRank, LossesAndParams) {
  kernels::SetNumThreads(1);
  const Case c = GetParam();
  const RunResult ref = Reference(c.tied, c.ranks, c.accum);
  EXPECT_LT(ref.losses.back(), ref.losses.front());
  const auto results = RunZero(c.tied, c.ranks, c.stage, c.accum);
  model::Transformer<float> shape(Dims(c.tied));
  for (int r = 0; r < c.ranks; ++r)
    ExpectClose(shape.params(), ref, results[r], "rank " + std::to_string(r));
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroMatchesSingleRank,
                         ::testing::Values(Case{0, 2, 1, false}, Case{0, 3, 1, true},
                                           Case{0, 4, 2, false}, Case{1, 2, 1, true},
                                           Case{1, 3, 2, false}, Case{1, 4, 1, false},
                                           Case{2, 2, 2, false}, Case{2, 3, 1, true},
                                           Case{2, 4, 1, false}, Case{3, 2, 1, true},
                                           Case{3, 3, 2, false}, Case{3, 4, 1, true}),
                         [](const auto& info) {
                           const Case& c = info.param;
                           return "stage" + std::to_string(c.stage) + "_ranks" +
                                  std::to_string(c.ranks) + "_accum" + std::to_string(c.accum) +
                                  (c.tied ? "_tied" : "");
                         });

TEST(ZeroMemory, Stage3HoldsAboutOneNthOfStage0) {
  kernels::SetNumThreads(1);
  const int n = 4;
  const auto s0 = RunZero(false, n, 0, 1);
  const auto s3 = RunZero(false, n, 3, 1);
  const auto s1 = RunZero(false, n, 1, 1);
  const auto s2 = RunZero(false, n, 2, 1);
  const double full = double(s0[0].memory.total());
  // Stage 0 holds 16 bytes/param (params 4, grads 4, AdamW 8). Stage 1 shards AdamW (and keeps
  // an owned gradient chunk next to the full gradients), stage 2 also the gradients, stage 3 all.
  EXPECT_NEAR(s1[0].memory.total() / full, (4 + 4 + 4.0 / n + 8.0 / n) / 16, 0.02);
  EXPECT_NEAR(s2[0].memory.total() / full, (4 + 12.0 / n) / 16, 0.02);
  EXPECT_NEAR(s3[0].memory.total() / full, 1.0 / n, 0.02);
  // Units under the persistence threshold stay gathered on every rank (next to the owned
  // master chunk): with every unit persistent that is the full model plus 1/n.
  const auto s3p = RunZero(false, n, 3, 1, /*persist=*/1000000);
  EXPECT_NEAR(double(s3p[0].memory.param_bytes), s0[0].memory.param_bytes * (1 + 1.0 / n),
              64 * 4 * n);
}

// The working pool (buffers of the largest padded unit) is reported next to the partitioned
// state: none at stage 0, whole buffers at stages 1-3, and at stage 3 at least the gathered
// unit plus its gradient, which backward holds at the same time.
TEST(ZeroMemory, ReportsTheGatherPool) {
  kernels::SetNumThreads(1);
  const int n = 4;
  model::Transformer<float> model(Dims(false));
  const auto units = LayoutUnits(model.params(), n);
  uint64_t max_unit = 0;
  for (const auto& u : units) max_unit = std::max(max_unit, u.chunk * n);
  const uint64_t buffer = max_unit * sizeof(float);
  for (const auto& r : RunZero(false, n, 0, 1)) EXPECT_EQ(r.memory.gather_pool_bytes, 0u);
  for (int stage : {1, 2, 3}) {
    const auto results = RunZero(false, n, stage, 1);
    for (const auto& r : results) {
      const uint64_t pool = r.memory.gather_pool_bytes;
      EXPECT_EQ(pool % buffer, 0u) << "stage " << stage;
      EXPECT_GE(pool, (stage == 3 ? 2 : 1) * buffer) << "stage " << stage;
      // At most a gathered copy, a gradient and a reduce output per unit.
      EXPECT_LE(pool, 3 * units.size() * buffer) << "stage " << stage;
    }
  }
}

}  // namespace
}  // namespace tern::zero
