// The memory plan against what the engine really allocates: the model's activation buffers
// exactly, the partitioned ZeRO state exactly at every stage, and the gather pool's
// high-water mark bounded; and the host check's refusal.
#include "worker/engine/memory_plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/cpu/threads.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/in_memory_store.h"
#include "worker/core/status.h"
#include "worker/model/transformer.h"
#include "worker/sequence/slice.h"
#include "worker/sequence/ulysses.h"
#include "worker/zero/state.h"

namespace tern::engine {
namespace {

spec::JobConfig Config(const std::string& type, int ranks, int stage, int micro, int seq) {
  tern::v1::ModelConfig m;
  m.set_model_type(type == "phi3_longrope" ? "phi3" : type);
  if (type == "phi3_longrope") {  // two RoPE table sets (head size 8: four factors each)
    m.set_original_max_position_embeddings(8);
    m.mutable_rope_scaling()->set_type("longrope");
    for (double f : {1.0, 1.5, 2.0, 4.0}) m.mutable_rope_scaling()->add_short_factor(f);
    for (double f : {2.0, 4.0, 8.0, 16.0}) m.mutable_rope_scaling()->add_long_factor(f);
  }
  m.set_vocab_size(61);
  m.set_hidden_size(32);
  m.set_num_hidden_layers(3);
  m.set_num_attention_heads(4);
  if (type != "gpt2") m.set_num_key_value_heads(2);
  auto dims = model::ResolveModelDims(m, 16);
  TERN_CHECK(dims.ok()) << dims.status();
  spec::JobConfig c;
  c.dims = *dims;
  c.dims_resolved = true;
  c.dp_size = ranks;
  c.zero_stage = stage;
  c.zero.stage = stage;
  c.zero.prefetch_bucket_size = 3000;
  c.zero.persistence_threshold = 100;  // the norms stay gathered at stage 3
  c.micro_batch = micro;
  c.seq_len = seq;
  return c;
}

TEST(MemoryPlan, ActivationsAreWhatReserveAllocates) {
  for (const char* type : {"gpt2", "llama", "phi3", "phi3_longrope"}) {
    for (int threads : {1, 3}) {
      kernels::SetNumThreads(threads);
      for (bool recompute : {false, true}) {
        auto c = Config(type, 1, 0, 3, 16);
        c.activation_checkpointing = recompute;
        model::Transformer<float> model(c.dims);
        model.set_recompute_layers(recompute);
        ASSERT_TRUE(model.Reserve(c.micro_batch, c.seq_len).ok());
        EXPECT_EQ(PlanRankMemory(c, threads).activation_bytes, model.activation_bytes())
            << type << " threads " << threads << " recompute " << recompute;
      }
    }
  }
  kernels::SetNumThreads(1);
}

// Sequence parallelism: the activations of seq_len / P tokens, the head-sharded buffers and the
// exchange's pack/unpack buffers after a real forward and backward, on the rank with the most
// heads (rank 0; 2 kv heads over 2 ranks here).
TEST(MemoryPlan, SequenceParallelActivationsAreWhatTheRankAllocates) {
  kernels::SetNumThreads(1);
  for (const char* type : {"gpt2", "llama"}) {
    for (int fpdt : {0, 8}) {  // Ulysses, and FPDT in chunks of 8 (4 tokens per rank)
      for (bool recompute : {false, true}) {
        if (fpdt > 0 && recompute) continue;  // FPDT always recomputes
        auto c = Config(type, 1, 0, 2, 16);
        c.sp_size = 2;
        c.activation_checkpointing = recompute;
        c.fpdt_chunk = fpdt;
        comm::InMemoryStore store;
        auto comms = comm::testing::MakeGroup(store, 2, "sp");
        ASSERT_TRUE(comm::testing::AllCreated(comms));
        std::vector<uint64_t> bytes(2), stores(2);
        comm::testing::RunRanks(2, [&](int r) {
          auto ex = sequence::UlyssesExchange<float>::Create(comms[r].get(), c.dims.NH, c.dims.NKV,
                                                             c.dims.HS);
          ASSERT_TRUE(ex.ok()) << ex.status();
          model::Transformer<float> model(c.dims);
          model.set_recompute_layers(recompute);
          model.set_fpdt({fpdt, true});
          std::vector<int32_t> pos = fpdt > 0 ? sequence::FpdtPositions(16, 2, r, fpdt / 2)
                                              : sequence::ContiguousPositions(16, 2, r);
          model.set_sequence(ex->get(), pos);
          std::vector<float> params(model.params().total()), grads(params.size());
          model.InitParams(params.data(), 1);
          model::FlatParamSource<float> src(&model.params(), params.data(), grads.data());
          std::vector<int32_t> tok(2 * 8, 3), tgt(2 * 8, 5);
          model.Forward(src, tok.data(), tgt.data(), 2, 8);
          model.Backward(src, 1.0f);
          EXPECT_TRUE(model.sequence_status().ok()) << model.sequence_status();
          bytes[r] = model.activation_bytes() + (*ex)->buffer_bytes();
          stores[r] = model.fpdt_store_bytes();
        });
        const auto plan = PlanRankMemory(c, 1);
        EXPECT_EQ(plan.activation_bytes, bytes[0])
            << type << " fpdt " << fpdt << " recompute " << recompute;
        EXPECT_EQ(plan.offload_bytes, stores[0]) << type << " fpdt " << fpdt;
        EXPECT_LE(bytes[1], bytes[0]);
      }
    }
  }
}

TEST(MemoryPlan, FpdtChunksAndStoreAreWhatReserveAllocates) {
  for (const char* type : {"gpt2", "llama", "phi3", "phi3_longrope"}) {
    for (int chunk : {4, 5, 16, 64}) {
      for (bool offload : {true, false}) {
        auto c = Config(type, 1, 0, 3, 16);
        c.fpdt_chunk = chunk;
        c.fpdt_offload = offload;
        model::Transformer<float> model(c.dims);
        model.set_fpdt({chunk, offload});
        ASSERT_TRUE(model.Reserve(c.micro_batch, c.seq_len).ok());
        const auto p = PlanRankMemory(c, 1);
        EXPECT_EQ(p.activation_bytes, model.activation_bytes())
            << type << " chunk " << chunk << " offload " << offload;
        EXPECT_EQ(p.offload_bytes, offload ? model.fpdt_store_bytes() : 0)
            << type << " chunk " << chunk;
      }
    }
  }
}

TEST(MemoryPlan, SingleRankStateIsTheLocalState) {
  const auto c = Config("llama", 1, 0, 2, 16);
  model::Transformer<float> model(c.dims);
  std::vector<float> init(model.params().total());
  auto state = zero::CreateLocalState(model.params(), init);
  const auto m = state->memory();
  const auto p = PlanRankMemory(c, 1);
  EXPECT_EQ(p.param_bytes, m.param_bytes);
  EXPECT_EQ(p.grad_bytes, m.grad_bytes);
  EXPECT_EQ(p.optim_bytes, m.optim_bytes);
  EXPECT_EQ(p.init_bytes, init.size() * 4);
  EXPECT_EQ(p.gather_pool_bytes, 0u);
}

// Every rank's state after two real steps: partitioned bytes equal to the plan, the pool's
// high-water mark within it.
TEST(MemoryPlan, ZeroStateMatchesThePlanAtEveryStage) {
  kernels::SetNumThreads(1);
  // "Stage 4" is stage 3 with ZeRO++'s qwZ and qgZ (padded chunks, packed buffers; one node,
  // so qgZ falls back and needs no buffers of its own).
  for (int stage = 0; stage <= 4; ++stage) {
    for (int ranks : {2, 3}) {
      auto c = Config("llama", ranks, std::min(stage, 3), 2, 16);
      if (stage == 4) {
        c.zero.quantized_weights = c.zero.quantized_gradients = true;
        c.zero.quant_block = 64;
        c.zero.grad_quant_block = 32;
      }
      const RankMemoryPlan plan = PlanRankMemory(c, 1);
      comm::InMemoryStore store;
      auto comms = comm::testing::MakeGroup(
          store, ranks, "plan-" + std::to_string(stage) + "-" + std::to_string(ranks));
      ASSERT_TRUE(comm::testing::AllCreated(comms));
      std::vector<zero::MemoryReport> reports(ranks);
      comm::testing::RunRanks(ranks, [&](int r) {
        model::Transformer<float> model(c.dims);
        std::vector<float> init(model.params().total());
        model.InitParams(init.data(), 7);
        auto state =
            zero::CreateZeroState(model.params(), init, c.zero, {.data_parallel = comms[r].get()});
        ASSERT_TRUE(state.ok()) << state.status();
        std::vector<int32_t> tokens(size_t(c.micro_batch) * c.seq_len);
        for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + r) % c.dims.V);
        optim::AdamWConfig adam;
        for (int step = 0; step < 2; ++step) {
          (*state)->BeginMicroStep(true);
          model.Forward((*state)->source(), tokens.data(), tokens.data(), c.micro_batch, c.seq_len);
          model.Backward((*state)->source(), 1.0f);
          ASSERT_TRUE((*state)->FinishBackward().ok());
          ASSERT_TRUE((*state)->OptimizerStep(adam, 1e-3f, step + 1, 1.0f).ok());
        }
        reports[r] = (*state)->memory();
      });
      for (int r = 0; r < ranks; ++r) {
        const auto& m = reports[r];
        const std::string what =
            "stage " + std::to_string(stage) + " ranks " + std::to_string(ranks);
        EXPECT_EQ(plan.param_bytes, m.param_bytes) << what;
        EXPECT_EQ(plan.grad_bytes, m.grad_bytes) << what;
        EXPECT_EQ(plan.optim_bytes, m.optim_bytes) << what;
        EXPECT_EQ(plan.quant_scratch_bytes, m.quant_scratch_bytes) << what;
        if (stage == 4) {
          EXPECT_GT(m.quant_scratch_bytes, 0u) << what;
        }
        EXPECT_LE(m.gather_pool_bytes, plan.gather_pool_bytes) << what;
        if (stage >= 1) {
          EXPECT_GT(m.gather_pool_bytes, 0u) << what;
        }
      }
    }
  }
}

TEST(MemoryPlan, CheckpointStagingIsOneShareOfMasterAndMoments) {
  auto c = Config("llama", 1, 0, 1, 16);
  EXPECT_EQ(PlanRankMemory(c, 1).checkpoint_staging_bytes, 0u);
  c.checkpoint.dir = "/tmp/x";
  c.checkpoint.async = true;
  const auto p = PlanRankMemory(c, 1);
  EXPECT_EQ(p.checkpoint_staging_bytes, 3 * p.init_bytes);
  c.checkpoint.async = false;
  EXPECT_EQ(PlanRankMemory(c, 1).checkpoint_staging_bytes, 0u);
}

TEST(MemoryPlan, HostCheckRefusesWithTheNumbers) {
  const auto c = Config("llama", 1, 0, 2, 16);
  const auto p = PlanRankMemory(c, 1);
  HostMemory host{p.peak_bytes() * 2, "MemAvailable"};
  EXPECT_TRUE(CheckFitsHost(p, 2, host).ok());
  const absl::Status st = CheckFitsHost(p, 3, host);
  ASSERT_TRUE(absl::IsResourceExhausted(st)) << st;
  const std::string msg(st.message());
  EXPECT_NE(msg.find("3 rank(s)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(FormatBytes(double(p.peak_bytes()))), std::string::npos) << msg;
  EXPECT_NE(msg.find(FormatBytes(double(host.available_bytes))), std::string::npos) << msg;
  EXPECT_NE(msg.find("MemAvailable"), std::string::npos) << msg;
}

TEST(MemoryPlan, ReadsThisHost) {
  auto host = ReadHostMemory();
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_GT(host->available_bytes, 0u);
  EXPECT_FALSE(host->source.empty());
}

TEST(MemoryPlan, FormatsBytes) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(3.0 * 1024 * 1024 * 1024), "3.00 GiB");
}

}  // namespace
}  // namespace tern::engine
