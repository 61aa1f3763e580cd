#include "worker/model/transformer.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/threads.h"
#include "worker/core/status.h"

namespace tern::model {

namespace k = tern::kernels;
using k::WeightLayout;

template <typename T>
Transformer<T>::Transformer(const ModelDims& dims) : dims_(dims) {
  BuildTable();
}

template <typename T>
void Transformer<T>::BuildTable() {
  const auto& d = dims_;
  const int64_t C = d.C, V = d.V, F = d.F, QKV = d.QKV(), A = d.NH * d.HS;
  const int head_unit = d.L + 1;
  if (d.is_gpt2()) {
    wte_off_ = table_.Add("transformer.wte.weight", {V, C}, true, 0);
    wpe_off_ = table_.Add("transformer.wpe.weight", {d.max_T, C}, true, 0);
  } else {
    wte_off_ = table_.Add("model.embed_tokens.weight", {V, C}, true, 0);
  }
  for (int l = 0; l < d.L; ++l) {
    const int u = l + 1;
    uint64_t base;
    LayerOffsets o{};
    if (d.is_gpt2()) {
      const std::string p = absl::StrCat("transformer.h.", l, ".");
      base = o.ln1_w = table_.Add(p + "ln_1.weight", {C}, false, u);
      o.ln1_b = table_.Add(p + "ln_1.bias", {C}, false, u);
      o.qkv_w = table_.Add(p + "attn.c_attn.weight", {C, QKV}, true, u);
      o.qkv_b = table_.Add(p + "attn.c_attn.bias", {QKV}, false, u);
      o.o_w = table_.Add(p + "attn.c_proj.weight", {A, C}, true, u);
      o.o_b = table_.Add(p + "attn.c_proj.bias", {C}, false, u);
      o.ln2_w = table_.Add(p + "ln_2.weight", {C}, false, u);
      o.ln2_b = table_.Add(p + "ln_2.bias", {C}, false, u);
      o.fc_w = table_.Add(p + "mlp.c_fc.weight", {C, F}, true, u);
      o.fc_b = table_.Add(p + "mlp.c_fc.bias", {F}, false, u);
      o.proj_w = table_.Add(p + "mlp.c_proj.weight", {F, C}, true, u);
      o.proj_b = table_.Add(p + "mlp.c_proj.bias", {C}, false, u);
    } else {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      base = o.ln1_w = table_.Add(p + "input_layernorm.weight", {C}, false, u);
      // q|k|v (and gate|up) are adjacent in the flat buffer, so each pair is one fused GEMM;
      // phi-3 names the fused tensors directly.
      if (d.arch == Arch::kPhi3) {
        o.qkv_w = table_.Add(p + "self_attn.qkv_proj.weight", {QKV, C}, true, u);
      } else {
        o.qkv_w = table_.Add(p + "self_attn.q_proj.weight", {A, C}, true, u);
        table_.Add(p + "self_attn.k_proj.weight", {int64_t{d.NKV} * d.HS, C}, true, u);
        table_.Add(p + "self_attn.v_proj.weight", {int64_t{d.NKV} * d.HS, C}, true, u);
      }
      o.o_w = table_.Add(p + "self_attn.o_proj.weight", {C, A}, true, u);
      o.ln2_w = table_.Add(p + "post_attention_layernorm.weight", {C}, false, u);
      if (d.arch == Arch::kPhi3) {
        o.fc_w = table_.Add(p + "mlp.gate_up_proj.weight", {2 * F, C}, true, u);
      } else {
        o.fc_w = table_.Add(p + "mlp.gate_proj.weight", {F, C}, true, u);
        table_.Add(p + "mlp.up_proj.weight", {F, C}, true, u);
      }
      o.proj_w = table_.Add(p + "mlp.down_proj.weight", {C, F}, true, u);
    }
    // Store offsets relative to the unit start (every block has the same layout).
    auto rel = [base](uint64_t& x) { x -= base; };
    if (l == 0) {
      lo_ = o;
      for (uint64_t* x : {&lo_.ln1_w, &lo_.ln1_b, &lo_.qkv_w, &lo_.qkv_b, &lo_.o_w, &lo_.o_b,
                          &lo_.ln2_w, &lo_.ln2_b, &lo_.fc_w, &lo_.fc_b, &lo_.proj_w, &lo_.proj_b})
        rel(*x);
    }
  }
  const uint64_t head_base = d.is_gpt2()
                                 ? table_.Add("transformer.ln_f.weight", {C}, false, head_unit)
                                 : table_.Add("model.norm.weight", {C}, false, head_unit);
  lnf_w_off_ = 0;
  if (d.is_gpt2())
    lnf_b_off_ = table_.Add("transformer.ln_f.bias", {C}, false, head_unit) - head_base;
  if (!d.tied) head_off_ = table_.Add("lm_head.weight", {V, C}, true, head_unit) - head_base;
}

namespace {

// splitmix64: seeds one independent stream per parameter.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

template <typename T>
void Transformer<T>::InitParams(T* params, uint64_t seed) const {
  const double resid_std = dims_.init_std / std::sqrt(2.0 * dims_.L);
  const auto& entries = table_.entries();
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < entries.size(); ++i) {
    const ParamEntry& e = entries[i];
    T* p = params + e.offset;
    const bool is_norm = !e.decay && e.shape.size() == 1 &&
                         (absl::StrContains(e.name, "norm") || absl::StrContains(e.name, "ln_"));
    if (is_norm && absl::EndsWith(e.name, ".weight")) {
      for (uint64_t j = 0; j < e.numel; ++j) p[j] = T(1);
      continue;
    }
    if (!e.decay) {
      std::memset(p, 0, e.numel * sizeof(T));
      continue;
    }
    double std = dims_.init_std;
    if (dims_.is_gpt2() && absl::EndsWith(e.name, "c_proj.weight")) std = resid_std;
    std::mt19937_64 rng(Mix(seed ^ Mix(i + 1)));
    const double two_pi = 6.283185307179586;
    for (uint64_t j = 0; j < e.numel; j += 2) {  // Box-Muller, two normals per draw
      double u1 = ((rng() >> 11) + 1.0) * 0x1.0p-53;
      double u2 = (rng() >> 11) * 0x1.0p-53;
      double r = std::sqrt(-2.0 * std::log(u1));
      p[j] = static_cast<T>(std * r * std::cos(two_pi * u2));
      if (j + 1 < e.numel) p[j + 1] = static_cast<T>(std * r * std::sin(two_pi * u2));
    }
  }
}

template <typename T>
void Transformer<T>::Reserve(int B, int Tn) {
  TERN_CHECK(Tn <= dims_.max_T) << "sequence " << Tn << " > max_position_embeddings "
                                << dims_.max_T;
  if (B == B_ && Tn == T_) return;
  B_ = B;
  T_ = Tn;
  const auto& d = dims_;
  const size_t N = size_t(B) * Tn, C = d.C, F = d.F, A = size_t(d.NH) * d.HS;
  const size_t fc = d.is_gpt2() ? F : 2 * F;
  resid_.assign(d.L + 1, std::vector<T>(N * C));
  acts_.assign(recompute_ ? 1 : d.L, LayerActs{});  // recompute: one shared set
  const bool ln = d.is_gpt2();
  for (auto& a : acts_) {
    a.ln1.resize(N * C);
    a.ln1_rstd.resize(N);
    if (ln) a.ln1_mean.resize(N);
    a.qkv.resize(N * d.QKV());
    a.lse.resize(size_t(B) * d.NH * Tn);
    a.atty.resize(N * A);
    a.mid.resize(N * C);
    a.ln2.resize(N * C);
    a.ln2_rstd.resize(N);
    if (ln) a.ln2_mean.resize(N);
    a.fc.resize(N * fc);
    a.act.resize(N * F);
  }
  lnf_.resize(N * C);
  lnf_rstd_.resize(N);
  if (ln) lnf_mean_.resize(N);
  logits_.resize(N * d.V);
  probs_.resize(N * d.V);
  losses_.resize(N);
  dx_.resize(N * C);
  dtmp_.resize(N * C);
  dln_.resize(N * C);
  proj_.resize(N * C);
  dqkv_.resize(N * d.QKV());
  datty_.resize(N * A);
  dfc_.resize(N * fc);
  dact_.resize(N * F);
  dlogits_.resize(N * d.V);
  if (!d.is_gpt2() && rope_cos_.empty()) {  // every position (a KV cache reaches past Tn)
    rope_cos_.resize(size_t(d.max_T) * d.HS / 2);
    rope_sin_.resize(size_t(d.max_T) * d.HS / 2);
    k::rope_tables(rope_cos_.data(), rope_sin_.data(), d.max_T, d.HS, d.rope_theta);
  }
  ReserveSequence(B, Tn);  // sequence parallelism (transformer_sequence.cc)
}

template <typename T>
uint64_t Transformer<T>::activation_bytes() const {
  uint64_t n = 0;
  auto add = [&n](const std::vector<T>& v) { n += v.size(); };
  for (const auto& r : resid_) add(r);
  for (const auto& a : acts_) {
    for (const auto* v : {&a.ln1, &a.ln1_mean, &a.ln1_rstd, &a.qkv, &a.lse, &a.atty, &a.mid, &a.ln2,
                          &a.ln2_mean, &a.ln2_rstd, &a.fc, &a.act})
      add(*v);
  }
  for (const auto* v : {&lnf_, &lnf_mean_, &lnf_rstd_, &logits_, &probs_, &losses_, &dx_, &dtmp_,
                        &dln_, &proj_, &dqkv_, &datty_, &dfc_, &dact_, &dlogits_})
    add(*v);
  n += SequenceElems();
  return n * sizeof(T);
}

template <typename T>
void Transformer<T>::NormForward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b,
                                 int N) {
  if (dims_.is_gpt2()) {
    k::layernorm_forward(out, mean, rstd, inp, w, b, N, dims_.C, dims_.norm_eps);
  } else {
    k::rmsnorm_forward(out, rstd, inp, w, N, dims_.C, dims_.norm_eps);
  }
}

template <typename T>
void Transformer<T>::NormBackward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w,
                                  const T* mean, const T* rstd, int N) {
  if (dims_.is_gpt2()) {
    k::layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, dims_.C);
  } else {
    k::rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, dims_.C);
  }
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace tern::model
