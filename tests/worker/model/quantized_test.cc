// Weight-only quantized inference: the model with QuantizedWeights gives the logits of the same
// model whose fp32 matrices are replaced by their dequantized values (so the quantized path
// multiplies by exactly the stored matrices: fused q|k|v stacked from separate entries, GPT-2's
// transposed Conv1D, a tied head), with and without the KV cache, and never reads the fp32 slots
// it replaces. Shapes that are not the model's are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/threads.h"
#include "kernels/cpu/wquant.h"
#include "tests/worker/model/tiny_model.h"
#include "worker/model/config.h"
#include "worker/model/transformer.h"

namespace tern::model {
namespace {

namespace k = tern::kernels;

using Case = testing::ModelCase;

ModelDims Dims(const Case& c) {
  // Hidden 96 is not a multiple of 64: the padded blocks are exercised.
  return testing::ResolvedDims(testing::TinyConfig(c, {70, 96, 4, 136, 16}));
}

class Quantized : public ::testing::TestWithParam<std::tuple<Case, k::WeightFormat>> {};

TEST_P(Quantized, LogitsAreTheDequantizedModelsWithAndWithoutTheCache) {
  k::SetNumThreads(1);
  const auto& [c, format] = GetParam();
  const ModelDims dims = Dims(c);
  Transformer<float> fp(dims), qm(dims);
  const ParamTable& table = fp.params();
  std::vector<float> params(table.total());
  fp.InitParams(params.data(), 5);
  auto q = qm.Quantize(params.data(), format);
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(qm.set_quantized(&*q).ok());
  // The reference: the matrices' slots hold the dequantized values (one entry at a time,
  // through the codec of each part alone).
  std::vector<float> deq = params;
  for (const LinearWeight& w : fp.Linears()) {
    for (const ParamEntry* e : w.entries) {
      const int rows = int(w.transposed ? e->shape[1] : e->shape[0]);
      const auto part =
          k::QuantizeWeights(format, params.data() + e->offset, rows, w.cols,
                             w.transposed ? k::WeightLayout::kInOut : k::WeightLayout::kOutIn);
      std::vector<float> d(size_t(rows) * w.cols);
      k::DequantizeRows(part, 0, rows, d.data());
      float* dst = deq.data() + e->offset;
      for (int r = 0; r < rows; ++r)
        for (int col = 0; col < w.cols; ++col)
          (w.transposed ? dst[size_t(col) * rows + r] : dst[size_t(r) * w.cols + col]) =
              d[size_t(r) * w.cols + col];
    }
  }
  // The quantized model reads a buffer whose matrix slots are NaN: reading one would show.
  std::vector<float> poisoned = params;
  for (const LinearWeight& w : fp.Linears())
    if (!w.tied_head)
      for (const ParamEntry* e : w.entries)
        std::fill(poisoned.begin() + e->offset, poisoned.begin() + e->offset + e->numel,
                  std::numeric_limits<float>::quiet_NaN());
  // A tied model's embeddings stay fp32 while its head is quantized: the reference is the
  // untied model whose lm_head holds the dequantized embeddings.
  ModelDims ref_dims = dims;
  ref_dims.tied = false;
  Transformer<float> ref(ref_dims);
  std::vector<float> ref_params(ref.params().total());
  const ParamEntry& wte = table.entries()[0];
  for (const auto& e : ref.params().entries()) {
    const bool head = dims.tied && e.name == "lm_head.weight";
    const ParamEntry* from = head ? &wte : table.Find(e.name);
    ASSERT_NE(from, nullptr) << e.name;
    const bool embeddings = dims.tied && !head && from->offset == wte.offset;
    const float* src = (embeddings ? params.data() : deq.data()) + from->offset;
    std::copy(src, src + e.numel, ref_params.begin() + e.offset);
  }
  FlatParamSource<float> ref_src(&ref.params(), ref_params.data(), nullptr),
      q_src(&table, poisoned.data(), nullptr);
  const int B = 2, T = 12;
  std::vector<int32_t> tokens(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 7 + 3) % dims.V;
  ref.Forward(ref_src, tokens.data(), nullptr, B, T);
  const std::vector<float> want(ref.logits(), ref.logits() + size_t(B) * T * dims.V);
  qm.Forward(q_src, tokens.data(), nullptr, B, T);
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(qm.logits()[i], want[i], 2e-4) << c.name << " " << k::WeightFormatName(format);
  // The KV cache: a prefill of 5, then one token at a time (the register path of the product).
  auto cache = *qm.NewKvCache(B, T);
  int done = 0;
  for (int step : {5, 1, 1, 1, 1, 1, 1, 1}) {
    std::vector<int32_t> chunk(size_t(B) * step);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < step; ++t) chunk[size_t(b) * step + t] = tokens[size_t(b) * T + done + t];
    qm.ForwardCached(q_src, chunk.data(), B, step, &cache);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < step; ++t)
        for (int v = 0; v < dims.V; ++v)
          ASSERT_NEAR(qm.logits()[(size_t(b) * step + t) * dims.V + v],
                      want[(size_t(b) * T + done + t) * dims.V + v], 2e-4)
              << c.name << " position " << done + t;
    done += step;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, Quantized,
    ::testing::Combine(
        ::testing::Values(Case{"gpt2", "gpt2", 4, true}, Case{"llama_gqa", "llama", 2, false},
                          Case{"llama_tied", "llama", 4, true}, Case{"phi3", "phi3", 4, false}),
        ::testing::Values(k::WeightFormat::kFp6, k::WeightFormat::kInt8, k::WeightFormat::kInt4)),
    [](const auto& info) {
      return std::get<0>(info.param).name + "_" + k::WeightFormatName(std::get<1>(info.param));
    });

TEST(Quantized, CloseToTheFp32Model) {
  // Sanity of the whole path: fp6 logits stay near fp32's, closer than int4's.
  k::SetNumThreads(1);
  const ModelDims dims = Dims({"llama", "llama", 2, false});
  Transformer<float> fp(dims);
  std::vector<float> params(fp.params().total());
  fp.InitParams(params.data(), 8);
  FlatParamSource<float> src(&fp.params(), params.data(), nullptr);
  const int T = 10;
  std::vector<int32_t> tokens(T);
  for (int i = 0; i < T; ++i) tokens[i] = (i * 5 + 1) % dims.V;
  fp.Forward(src, tokens.data(), nullptr, 1, T);
  const std::vector<float> want(fp.logits(), fp.logits() + size_t(T) * dims.V);
  double err[2];
  int i = 0;
  for (k::WeightFormat f : {k::WeightFormat::kFp6, k::WeightFormat::kInt4}) {
    Transformer<float> qm(dims);
    auto q = qm.Quantize(params.data(), f);
    ASSERT_TRUE(qm.set_quantized(&*q).ok());
    qm.Forward(src, tokens.data(), nullptr, 1, T);
    double e = 0, n = 0;
    for (size_t j = 0; j < want.size(); ++j) {
      e += (qm.logits()[j] - want[j]) * (qm.logits()[j] - want[j]);
      n += want[j] * want[j];
    }
    err[i++] = std::sqrt(e / n);
  }
  EXPECT_LT(err[0], 0.15);
  EXPECT_LT(err[0], err[1]);
}

TEST(Quantized, ShapesThatAreNotTheModelsAreRefused) {
  const ModelDims dims = Dims({"llama", "llama", 2, false});
  Transformer<float> a(dims);
  std::vector<float> params(a.params().total());
  a.InitParams(params.data(), 1);
  auto q = a.Quantize(params.data(), k::WeightFormat::kFp6);
  ASSERT_TRUE(q.ok());
  ModelDims wider = dims;
  wider.F = dims.F * 2;
  Transformer<float> b(wider);
  const absl::Status st = b.set_quantized(&*q);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("mlp.gate_proj.weight"), std::string::npos) << st;
  q->layers.pop_back();
  EXPECT_NE(a.set_quantized(&*q).message().find("layers"), std::string::npos);
  Transformer<double> d(dims);
  EXPECT_EQ(d.Quantize(nullptr, k::WeightFormat::kFp6).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tern::model
