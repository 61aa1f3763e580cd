// Universal checkpoints across layouts: a checkpoint saved by the trainer's checkpoint protocol
// at 1, 2, 3 and 4 ranks x ZeRO stages 0-3 (real ZeRO states, ranks as threads over Gloo) loads
// into other layouts with the fp32 master weights and both Adam moments bitwise identical, each
// rank reading at most its own ranges plus one checksum block at each end (the I/O engine's
// counter; the plan of `tern ckpt reshard --dry-run`). Also: a model mismatch lists every
// missing, extra and mis-shaped tensor before anything is read.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/core/status.h"
#include "worker/data/data_loader.h"
#include "worker/data/prepare.h"
#include "worker/engine/checkpointing.h"
#include "worker/engine/reshard_plan.h"
#include "worker/model/transformer.h"
#include "worker/zero/state.h"

namespace tern::engine {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kBlock = 4096;

model::ModelDims Dims(int layers) {
  tern::v1::ModelConfig m;
  m.set_model_type("llama");
  m.set_vocab_size(256);
  m.set_hidden_size(32);
  m.set_num_hidden_layers(layers);
  m.set_num_attention_heads(4);
  m.set_num_key_value_heads(2);
  auto d = model::ResolveModelDims(m, 16);
  TERN_CHECK(d.ok()) << d.status();
  return *d;
}

absl::StatusOr<std::vector<std::string>> GatherBytes(comm::Communicator& c,
                                                     const std::string& mine) {
  const int n = c.size();
  comm::CollectiveOptions co;
  uint64_t size = mine.size();
  std::vector<uint64_t> sizes(n);
  TERN_RETURN_IF_ERROR(c.AllGather(std::as_bytes(std::span<const uint64_t>(&size, 1)),
                                   std::as_writable_bytes(std::span<uint64_t>(sizes)), co));
  uint64_t longest = 1;
  for (uint64_t s : sizes) longest = std::max(longest, s);
  std::string padded = mine;
  padded.resize(longest);
  std::vector<char> all(longest * n);
  TERN_RETURN_IF_ERROR(c.AllGather(std::as_bytes(std::span<const char>(padded)),
                                   std::as_writable_bytes(std::span<char>(all)), co));
  std::vector<std::string> out(n);
  for (int r = 0; r < n; ++r) out[r].assign(all.data() + r * longest, sizes[r]);
  return out;
}

class ReshardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / absl::StrCat("tern-reshard-", getpid()));
    fs::create_directories(*dir_);
    std::ofstream(*dir_ / "corpus.txt") << std::string(4000, 'a') << "hello world\n";
    data::PrepareOptions po;
    po.inputs = {(*dir_ / "corpus.txt").string()};
    po.output_prefix = (*dir_ / "corpus").string();
    po.val_fraction = 0;
    ASSERT_TRUE(data::PrepareDataset(po).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  ReshardTest() : model_(Dims(3)) {
    const uint64_t n = model_.params().total();
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto* v : {&master_, &m_, &v_}) {
      v->resize(n);
      for (auto& x : *v) x = u(rng);
    }
  }

  spec::JobConfig Config(int ranks, int stage, const std::string& ckpt, const std::string& load) {
    spec::JobConfig c;
    c.dims = model_.dims();
    c.dims_resolved = true;
    c.dp_size = ranks;
    c.zero_stage = stage;
    c.zero.stage = stage;
    c.micro_batch = 1;
    c.accum = 1;
    c.global_batch = ranks;
    c.seq_len = 8;
    c.train_iters = 10;
    c.checkpoint.dir = ckpt;
    c.checkpoint.async = false;
    c.checkpoint.load = load;
    return c;
  }

  // Runs `ranks` ranks at `stage`; each builds its ZeRO state and calls fn(rank, state, ckpt).
  void Run(int ranks, int stage, const std::string& ckpt, const std::string& load,
           const std::function<void(int, zero::TrainingState&, Checkpointing&,
                                    const data::DataLoader&)>& fn) {
    comm::InMemoryStore store;
    auto comms = comm::testing::MakeGroup(store, ranks, "g");
    ASSERT_TRUE(comm::testing::AllCreated(comms));
    const spec::JobConfig cfg = Config(ranks, stage, ckpt, load);
    comm::testing::RunRanks(ranks, [&](int r) {
      comm::Communicator& c = *comms[r];
      std::vector<float> init(model_.params().total(), 0.0f);
      auto state = zero::CreateZeroState(model_.params(), init, cfg.zero,
                                         zero::ZeroGroups{&c, nullptr, nullptr});
      ASSERT_TRUE(state.ok()) << state.status();
      auto loader = data::DataLoader::Open((*dir_ / "corpus").string(), cfg.seq_len, cfg.seed);
      ASSERT_TRUE(loader.ok()) << loader.status();
      CheckpointingOptions o;
      o.rank = r;
      o.ranks = ranks;
      o.checksum_block = kBlock;
      o.gather = [&c](const std::string& mine) { return GatherBytes(c, mine); };
      o.all_reduce = [&c](double* v, int n) -> absl::Status {
        std::vector<float> f(v, v + n);
        TERN_RETURN_IF_ERROR(c.AllReduce({f.data(), f.size()}, comm::CollectiveOptions{}));
        for (int i = 0; i < n; ++i) v[i] = f[i];
        return absl::OkStatus();
      };
      auto ck = Checkpointing::Create(cfg, std::move(o));
      ASSERT_TRUE(ck.ok()) << ck.status();
      fn(r, **state, **ck, **loader);
    });
  }

  void Save(int ranks, int stage, const std::string& ckpt) {
    fs::create_directories(ckpt);
    Run(ranks, stage, ckpt, "",
        [&](int, zero::TrainingState& st, Checkpointing& ck, const data::DataLoader& loader) {
          auto start = ck.Start(st, model_.params(), loader);
          ASSERT_TRUE(start.ok()) << start.status();
          for (const auto& seg : st.owned_segments()) {
            std::memcpy(seg.master, &master_[seg.global_offset], seg.numel * 4);
            std::memcpy(seg.exp_avg, &m_[seg.global_offset], seg.numel * 4);
            std::memcpy(seg.exp_avg_sq, &v_[seg.global_offset], seg.numel * 4);
          }
          ASSERT_TRUE(ck.Save(4, 4 * uint64_t(ranks), st, model_.params(), loader, {}).ok());
          ASSERT_TRUE(ck.Finish().ok());
        });
  }

  // Loads into (ranks, stage): every rank's state equals the saved one bitwise, and its reads
  // stay within its plan and the exact-read bound.
  void LoadAndCheck(int ranks, int stage, const std::string& ckpt, const std::string& what) {
    auto opened = ckpt::Checkpoint::Open(ckpt);
    ASSERT_TRUE(opened.ok()) << opened.status();
    auto plans = PlanReshard(**opened, ranks, stage);
    ASSERT_TRUE(plans.ok()) << plans.status();
    Run(ranks, stage, ckpt, "latest",
        [&](int r, zero::TrainingState& st, Checkpointing& ck, const data::DataLoader& loader) {
          auto done = ck.Start(st, model_.params(), loader);
          ASSERT_TRUE(done.ok()) << what << ": " << done.status();
          EXPECT_EQ(*done, 4);
          for (const auto& seg : st.owned_segments()) {
            const uint64_t o = seg.global_offset, n = seg.numel * 4;
            ASSERT_EQ(std::memcmp(seg.master, &master_[o], n), 0) << what << " rank " << r;
            ASSERT_EQ(std::memcmp(seg.exp_avg, &m_[o], n), 0) << what << " rank " << r;
            ASSERT_EQ(std::memcmp(seg.exp_avg_sq, &v_[o], n), 0) << what << " rank " << r;
          }
          const RankReadPlan& p = (*plans)[r];
          const uint64_t ends = 3 * p.owned.size() * 2 * kBlock;  // one block at each end
          EXPECT_LE(ck.io_bytes_read(), p.read_bytes + 4096 * p.extents.size()) << what << " " << r;
          EXPECT_LE(ck.io_bytes_read(), p.owned_bytes + ends + 4096 * p.extents.size())
              << what << " rank " << r;
        });
  }

  static fs::path* dir_;
  model::Transformer<float> model_;
  std::vector<float> master_, m_, v_;
};
fs::path* ReshardTest::dir_ = nullptr;

TEST_F(ReshardTest, EveryLayoutLoadsIntoOthersBitwise) {
  for (int ranks = 1; ranks <= 4; ++ranks) {
    for (int stage = 0; stage <= 3; ++stage) {
      const std::string ckpt = (*dir_ / absl::StrCat("r", ranks, "s", stage)).string();
      Save(ranks, stage, ckpt);
      // Two other layouts each (the first map is a bijection: every layout is also a target).
      const int targets[2][2] = {{ranks % 4 + 1, (stage + 1) % 4},
                                 {(ranks + 1) % 4 + 1, (stage + 2) % 4}};
      for (const auto& t : targets) {
        LoadAndCheck(t[0], t[1], ckpt,
                     absl::StrCat("saved ", ranks, "x", stage, " loaded ", t[0], "x", t[1]));
      }
    }
  }
}

TEST_F(ReshardTest, AnotherModelIsRefusedListingEveryDifference) {
  const std::string ckpt = (*dir_ / "mismatch").string();
  Save(1, 0, ckpt);
  model::Transformer<float> other(Dims(2));  // one layer fewer
  comm::InMemoryStore store;
  auto comms = comm::testing::MakeGroup(store, 1, "g");
  spec::JobConfig cfg = Config(1, 0, ckpt, "latest");
  cfg.dims = other.dims();
  std::vector<float> init(other.params().total(), 0.0f);
  auto state = zero::CreateZeroState(other.params(), init, cfg.zero,
                                     zero::ZeroGroups{comms[0].get(), nullptr, nullptr});
  ASSERT_TRUE(state.ok());
  auto loader = data::DataLoader::Open((*dir_ / "corpus").string(), cfg.seq_len, cfg.seed);
  ASSERT_TRUE(loader.ok());
  auto ck = Checkpointing::Create(cfg, CheckpointingOptions{});
  ASSERT_TRUE(ck.ok());
  auto st = (*ck)->Start(**state, other.params(), **loader);
  ASSERT_EQ(st.status().code(), absl::StatusCode::kFailedPrecondition) << st.status();
  const std::string msg(st.status().message());
  // Layer 2 has 9 tensors in a llama block: all of them are extra in the checkpoint.
  EXPECT_NE(msg.find("extra (9)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.2.self_attn.q_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.2.mlp.down_proj.weight"), std::string::npos) << msg;
  EXPECT_EQ((*state)->owned_segments()[0].master[0], 0.0f);  // nothing was loaded
}

}  // namespace
}  // namespace tern::engine
