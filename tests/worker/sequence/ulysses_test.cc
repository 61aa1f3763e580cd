// UlyssesExchange over Gloo groups of ranks-as-threads: the scatter/gather round trip, and the
// model with sequence parallelism (P = 2, 4; even and uneven head splits; GQA; GPT-2's learned
// positions; recomputed layers) against the single-rank full-sequence gradients.
#include "worker/sequence/ulysses.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "kernels/cpu/threads.h"
#include "tests/worker/comm/rank_threads.h"
#include "worker/comm/in_memory_store.h"
#include "worker/model/transformer.h"
#include "worker/sequence/slice.h"

namespace tern::sequence {
namespace {

using comm::testing::MakeGroup;
using comm::testing::RunRanks;
using model::SequenceRows;

TEST(UlyssesExchange, ScatterThenGatherIsTheIdentityAndPlacesEveryHead) {
  for (const auto& [P, nh, nkv] : {std::tuple{2, 4, 2}, {4, 6, 6}, {3, 14, 7}}) {
    SCOPED_TRACE(testing::Message() << "P " << P << " nh " << nh << " nkv " << nkv);
    comm::InMemoryStore store;
    auto comms = MakeGroup(store, P, "ulysses");
    ASSERT_TRUE(comm::testing::AllCreated(comms));
    const int B = 2, n = 3, hs = 2, W = (nh + 2 * nkv) * hs;
    // Value of (rank's token t of sequence b, column c): identifies the global token and column.
    auto value = [&](int r, int b, int t, int c) {
      return double((b * P * n + r * n + t) * 1000 + c);
    };
    RunRanks(P, [&](int r) {
      auto ex = UlyssesExchange<double>::Create(comms[r].get(), nh, nkv, hs);
      ASSERT_TRUE(ex.ok()) << ex.status();
      const HeadBlock hb = (*ex)->blocks()[r];
      std::vector<double> in(size_t(B) * n * W);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < n; ++t)
          for (int c = 0; c < W; ++c) in[(size_t(b) * n + t) * W + c] = value(r, b, t, c);
      const int Wl = (hb.q_count + 2 * hb.kv_count) * hs;
      std::vector<double> mid(size_t(B) * P * n * Wl), back(in.size(), -1);
      ASSERT_TRUE((*ex)->ScatterHeads(SequenceRows::kQkv, mid.data(), in.data(), B, n).ok());
      // Every token of the sequence, in order, with this rank's q, k and v columns.
      for (int b = 0; b < B; ++b)
        for (int g = 0; g < P * n; ++g) {
          const double* row = mid.data() + (size_t(b) * P * n + g) * Wl;
          const int base = (b * P * n + g) * 1000;
          EXPECT_EQ(row[0], base + hb.q_begin * hs);
          EXPECT_EQ(row[hb.q_count * hs], base + (nh + hb.kv_begin) * hs);
          EXPECT_EQ(row[Wl - 1], base + (nh + nkv + hb.kv_begin + hb.kv_count) * hs - 1);
        }
      ASSERT_TRUE((*ex)->GatherHeads(SequenceRows::kQkv, back.data(), mid.data(), B, n).ok());
      EXPECT_EQ(back, in);
      // The attention-output rows (query heads only) round trip too.
      const int A = nh * hs, Al = hb.q_count * hs;
      std::vector<double> o(size_t(B) * n * A), om(size_t(B) * P * n * Al), ob(o.size());
      for (size_t i = 0; i < o.size(); ++i) o[i] = double(r * 100000 + int(i));
      ASSERT_TRUE((*ex)->ScatterHeads(SequenceRows::kAttnOut, om.data(), o.data(), B, n).ok());
      ASSERT_TRUE((*ex)->GatherHeads(SequenceRows::kAttnOut, ob.data(), om.data(), B, n).ok());
      EXPECT_EQ(ob, o);
    });
  }
}

// An exchange whose communicator failed: the model finishes the pass and reports the first
// failure (the trainer returns it).
class FailingExchange : public model::SequenceExchange<double> {
 public:
  int size() const override { return 2; }
  int rank() const override { return 0; }
  int local_heads() const override { return 1; }
  int local_kv_heads() const override { return 1; }
  absl::Status ScatterHeads(SequenceRows, double*, const double*, int, int) override {
    return absl::UnavailableError("peer lost");
  }
  absl::Status GatherHeads(SequenceRows, double*, const double*, int, int) override {
    return absl::DeadlineExceededError("later");
  }
};

TEST(SequenceParallelModel, AFailedExchangeIsReportedNotFatal) {
  tern::v1::ModelConfig m;
  m.set_model_type("llama");
  m.set_vocab_size(13);
  m.set_hidden_size(4);
  m.set_num_hidden_layers(1);
  m.set_num_attention_heads(2);
  m.set_intermediate_size(6);
  m.set_max_position_embeddings(8);
  auto dims = model::ResolveModelDims(m, 8);
  ASSERT_TRUE(dims.ok()) << dims.status();
  model::Transformer<double> model(*dims);
  FailingExchange ex;
  model.set_sequence(&ex, ContiguousPositions(8, 2, 0));
  std::vector<double> params(model.params().total()), grads(params.size());
  model.InitParams(params.data(), 1);
  model::FlatParamSource<double> src(&model.params(), params.data(), grads.data());
  std::vector<int32_t> tok(4, 1), tgt(4, 2);
  model.Forward(src, tok.data(), tgt.data(), 1, 4);
  model.Backward(src, 1.0f);
  EXPECT_EQ(model.sequence_status().code(), absl::StatusCode::kUnavailable)
      << model.sequence_status();
}

struct Case {
  std::string type;
  int nh, nkv, P;
  bool recompute;
  int fpdt = 0;                   // FPDT's (global) chunk tokens; 0 = Ulysses over whole sequences
  int longrope_original_max = 0;  // phi-3's LongRoPE from this length on; 0 = plain RoPE
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.type << " nh " << c.nh << " nkv " << c.nkv << " P " << c.P
      << (c.recompute ? " recompute" : "") << (c.fpdt ? " fpdt " : "")
      << (c.fpdt ? std::to_string(c.fpdt) : "")
      << (c.longrope_original_max ? " longrope " + std::to_string(c.longrope_original_max) : "");
}

model::ModelDims Dims(const Case& c, int T) {
  tern::v1::ModelConfig m;
  m.set_model_type(c.type);
  m.set_vocab_size(13);
  m.set_hidden_size(c.nh * 2);
  m.set_num_hidden_layers(2);
  m.set_num_attention_heads(c.nh);
  if (c.type != "gpt2") m.set_num_key_value_heads(c.nkv);
  m.set_intermediate_size(10);
  m.set_max_position_embeddings(T);
  m.set_initializer_range(0.3f);
  if (c.longrope_original_max > 0) {  // head size 2: one factor each
    m.set_original_max_position_embeddings(c.longrope_original_max);
    m.mutable_rope_scaling()->set_type("longrope");
    m.mutable_rope_scaling()->add_short_factor(1.5);
    m.mutable_rope_scaling()->add_long_factor(7.0);
  }
  auto d = model::ResolveModelDims(m, T);
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

class SequenceParallelModel : public ::testing::TestWithParam<Case> {};

TEST_P(SequenceParallelModel, GradientsEqualTheFullSequence) {
  kernels::SetNumThreads(1);
  const Case c = GetParam();
  const int B = 2, T = c.fpdt > 0 ? 24 : 8, P = c.P, n = T / P;
  const model::ModelDims dims = Dims(c, T);
  model::Transformer<double> full(dims);
  const ParamTable& table = full.params();
  std::vector<double> params(table.total()), ref(table.total(), 0.0);
  full.InitParams(params.data(), 5);
  std::mt19937_64 rng(11);
  std::normal_distribution<double> nd(0, 0.2);
  for (const auto& e : table.entries())
    if (!e.decay)
      for (uint64_t i = 0; i < e.numel; ++i) params[e.offset + i] += nd(rng);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int i = 0; i < B * T; ++i) {
    tokens[i] = int32_t(rng() % dims.V);
    targets[i] = i % 5 == 2 ? -1 : int32_t(rng() % dims.V);  // some ignored targets
  }
  model::FlatParamSource<double> fsrc(&table, params.data(), ref.data());
  const double loss = full.Forward(fsrc, tokens.data(), targets.data(), B, T);
  full.Backward(fsrc, 1.0f);
  const int64_t total = CountTargets(targets.data(), B * T);

  comm::InMemoryStore store;
  auto comms = MakeGroup(store, P, "sp");
  ASSERT_TRUE(comm::testing::AllCreated(comms));
  std::vector<std::vector<double>> grads(P, std::vector<double>(table.total(), 0.0));
  std::vector<double> losses(P);
  RunRanks(P, [&](int r) {
    auto ex = UlyssesExchange<double>::Create(comms[r].get(), dims.NH, dims.NKV, dims.HS);
    ASSERT_TRUE(ex.ok()) << ex.status();
    model::Transformer<double> m(dims);
    m.set_recompute_layers(c.recompute);
    m.set_fpdt({c.fpdt, true});
    // FPDT: the round-robin layout, so each local chunk exchanged is a contiguous span.
    const std::vector<int32_t> pos =
        c.fpdt > 0 ? FpdtPositions(T, P, r, c.fpdt / P) : ContiguousPositions(T, P, r);
    m.set_sequence(ex->get(), pos);
    std::vector<int32_t> tok(B * n), tgt(B * n);
    SliceByPositions(tokens.data(), B, T, pos, tok.data());
    SliceByPositions(targets.data(), B, T, pos, tgt.data());
    const int64_t local = CountTargets(tgt.data(), B * n);
    model::FlatParamSource<double> src(&table, params.data(), grads[r].data());
    const double l = m.Forward(src, tok.data(), tgt.data(), B, n);
    // The local mean weighted by the local share: the gradients sum to the full mean's.
    m.Backward(src, float(double(local) / double(total)));
    EXPECT_TRUE(m.sequence_status().ok()) << m.sequence_status();
    losses[r] = l * double(local) / double(total);
  });
  double sum_loss = 0;
  for (double l : losses) sum_loss += l;
  EXPECT_NEAR(sum_loss, loss, 1e-10 * std::abs(loss));
  double max_ref = 0;
  for (double g : ref) max_ref = std::max(max_ref, std::abs(g));
  int bad = 0;
  for (const auto& e : table.entries())
    for (uint64_t i = 0; i < e.numel; ++i) {
      double g = 0;
      for (int r = 0; r < P; ++r) g += grads[r][e.offset + i];
      const double want = ref[e.offset + i];
      if (std::abs(g - want) > 1e-4 * std::max(std::abs(want), 1e-3 * max_ref) && bad++ < 5)
        ADD_FAILURE() << e.name << "[" << i << "]: " << g << " vs " << want;
    }
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, SequenceParallelModel,
    ::testing::Values(Case{"llama", 4, 4, 2, false},   // even split
                      Case{"llama", 6, 6, 4, false},   // uneven: 2, 2, 1, 1 kv heads
                      Case{"llama", 12, 3, 2, false},  // GQA, uneven: 2, 1 kv heads of 4 q heads
                      Case{"llama", 8, 4, 4, true},    // GQA, recomputed layers
                      Case{"gpt2", 4, 4, 2, false},    // learned positions
                      Case{"gpt2", 6, 6, 4, true},
                      // FPDT over the group: 24 tokens in chunks of 4 (2 per rank, 6 chunks)...
                      Case{"llama", 4, 4, 2, false, 4},
                      Case{"llama", 12, 3, 2, false, 6},  // GQA, uneven heads, chunks of 3 each
                      Case{"llama", 8, 4, 4, false, 8},   // P = 4: 2 tokens per rank and chunk
                      Case{"llama", 6, 6, 4, false, 24},  // one chunk: the whole sequence
                      Case{"gpt2", 6, 6, 2, false, 12},
                      // LongRoPE: every rank rotates with the table of the whole sequence (the
                      // long one past original_max, though rank 0's own positions are within it)
                      Case{"phi3", 4, 4, 2, false, 0, 6},
                      Case{"phi3", 8, 4, 4, true, 0, 8},     // the whole sequence fits: short
                      Case{"phi3", 4, 4, 2, false, 4, 16}),  // FPDT over the group, long
    [](const ::testing::TestParamInfo<Case>& i) {
      return i.param.type + "_nh" + std::to_string(i.param.nh) + "_nkv" +
             std::to_string(i.param.nkv) + "_p" + std::to_string(i.param.P) +
             (i.param.recompute ? "_recompute" : "") +
             (i.param.fpdt ? "_fpdt" + std::to_string(i.param.fpdt) : "") +
             (i.param.longrope_original_max
                  ? "_longrope" + std::to_string(i.param.longrope_original_max)
                  : "");
    });

}  // namespace
}  // namespace tern::sequence
